//! What a person can do from the console. Each action goes through [`super::guard_post`]
//! (origin, session, CSRF token, role) and then through the same server function the API
//! uses, with the person's token as the actor. A refused or failed action changes nothing and
//! says why on an error page; a done one redirects to the page it came from with a message.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::TaskStatus;

use super::view::seg;
use super::{error_page, guard_post};
use crate::error::ApiError;
use crate::state::AppState;
use crate::tasks;

/// `POST /console/agents/{name}/disable`: the kill switch (admin).
pub async fn disable_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let (v, _) = match guard_post(&state, &headers, &uri, &body, &[], "disable agents").await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    match tasks::disable_agent(&state, &name, &v.actor()).await {
        Ok(revoked) => {
            let n = revoked.len();
            let tasks = if n == 1 { "1 task".to_owned() } else { format!("{n} tasks") };
            state.console.set_flash(&v.hash, format!("Agent `{name}` is disabled; {tasks} revoked."));
            Redirect::to(&format!("/console/agents/{}", seg(&name))).into_response()
        }
        Err(e) => error_page(Some(&v), &e),
    }
}

/// `POST /console/tasks/{id}/revoke`: ends the task and every task delegated from it (admin).
pub async fn revoke_task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (v, form) = match guard_post(&state, &headers, &uri, &body, &[], "revoke tasks").await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let reason = match form.get("reason").trim() {
        "" => "revoked from the console",
        r if r.len() > 512 => return error_page(Some(&v), &ApiError::invalid("the reason may be at most 512 bytes")),
        r => r,
    };
    let task = match state.store.get_task(&id).await {
        Ok(Some(t)) => t,
        Ok(None) => return error_page(Some(&v), &ApiError::not_found("task", &id)),
        Err(e) => return error_page(Some(&v), &e.into()),
    };
    if task.status != TaskStatus::Live {
        let e = ApiError::coded(
            StatusCode::CONFLICT,
            "task_not_live",
            format!("task `{id}` has already ended ({}); nothing was changed", task.status.as_str()),
        );
        return error_page(Some(&v), &e);
    }
    match tasks::end_task(&state, &id, TaskStatus::Revoked, &v.actor(), reason).await {
        Ok(ended) => {
            let others = ended.iter().filter(|t| **t != id).count();
            let msg = match others {
                0 => "Task revoked.".to_owned(),
                1 => "Task revoked, and 1 task delegated from it.".to_owned(),
                n => format!("Task revoked, and {n} tasks delegated from it."),
            };
            state.console.set_flash(&v.hash, msg);
            Redirect::to(&format!("/console/tasks/{}", seg(&id))).into_response()
        }
        Err(e) => error_page(Some(&v), &e),
    }
}
