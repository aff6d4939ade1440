//! `/v1/approvals`: the queue of calls waiting for a person, and their yes or no.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use mandate_core::{Approval, ApprovalStatus, Role};
use serde::{Deserialize, Serialize};

use crate::approvals;
use crate::auth;
use crate::error::ApiError;
use crate::extract::optional_json;
use crate::state::AppState;
use crate::webhook::Delivery;

/// Who may read approvals: approvers, auditors, and the enforcement points that wait on them.
const READERS: &[Role] = &[Role::Approver, Role::Auditor, Role::Pep];

/// An approval as the API shows it: the record, and what became of its announcement.
#[derive(Debug, Serialize)]
pub struct ApprovalView {
    #[serde(flatten)]
    pub approval: Approval,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Delivery>,
}

fn view(state: &AppState, approval: Approval) -> ApprovalView {
    let notification = state.approvals.webhook.delivery(&approval.id);
    ApprovalView { approval, notification }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (the default), `approved`, `denied`, `expired`, `used`, or `all`.
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/approvals?status=pending`: newest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<ApprovalView>>, ApiError> {
    auth::require(&state, &headers, READERS, "list approvals").await?;
    let status = match q.status.as_deref().unwrap_or("pending") {
        "all" => None,
        s => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "status `{}` is not one of `pending`, `approved`, `denied`, `expired`, `used`, `all`",
                crate::error::short(s)
            ))
        })?),
    };
    let list = approvals::list(&state, status, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    Ok(Json(list.into_iter().map(|a| view(&state, a)).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// Wait up to this many seconds (at most 30) for the approval to be decided.
    wait: Option<u64>,
}

/// `GET /v1/approvals/{id}[?wait=SECONDS]`: one approval; with `wait`, answers once it is no
/// longer pending or the wait is over (a long poll for enforcement points holding a call).
pub async fn get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<GetQuery>,
) -> Result<Json<ApprovalView>, ApiError> {
    auth::require(&state, &headers, READERS, "read approvals").await?;
    let a = match q.wait {
        Some(secs) if secs > 0 => approvals::wait(&state, &id, Duration::from_secs(secs)).await?,
        _ => approvals::get(&state, &id).await?,
    };
    Ok(Json(view(&state, a)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    #[serde(default)]
    comment: Option<String>,
}

/// `POST /v1/approvals/{id}/approve` `{"comment": "…"}`.
pub async fn approve(
    state: State<Arc<AppState>>,
    headers: HeaderMap,
    id: Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalView>, ApiError> {
    decide(state, headers, id, body, true).await
}

/// `POST /v1/approvals/{id}/deny` `{"comment": "…"}`.
pub async fn deny(state: State<Arc<AppState>>, headers: HeaderMap, id: Path<String>, body: Bytes) -> Result<Json<ApprovalView>, ApiError> {
    decide(state, headers, id, body, false).await
}

async fn decide(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
    approve: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    let caller = auth::require(&state, &headers, &[Role::Approver], "decide approvals").await?;
    let body: DecideBody = optional_json(&body)?;
    let a = approvals::decide(&state, &id, approve, &caller, body.comment.as_deref().unwrap_or("")).await?;
    Ok(Json(view(&state, a)))
}
