//! The AuthZEN decision API. A deny is a 200 with `decision: false`; 400 is for requests
//! missing what the spec requires; `X-Request-ID` is echoed by the router's layer.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_core::Role;
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse, EvaluationsRequest, EvaluationsResponse, EvaluationsSemantic};
use serde_json::Map;

use crate::auth;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::pipeline::{self, Verdict};
use crate::routes::request_id;
use crate::state::AppState;

/// `POST /access/v1/evaluation`.
pub async fn evaluation(State(state): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<EvaluationRequest>) -> Response {
    let caller = match auth::require(&state, &headers, &[Role::Pep], "ask for decisions").await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let started = Instant::now();
    let checked = match pipeline::check(&req) {
        Ok(c) => c,
        Err(message) => return ApiError::coded(StatusCode::BAD_REQUEST, "invalid_request", message).into_response(),
    };
    let verdict = pipeline::decide(&state, &checked);
    let rid = request_id(&headers);
    let resp = finish(&state, vec![verdict], &caller.actor(), rid.as_deref()).await.into_iter().next();
    let resp = resp.unwrap_or_else(|| pipeline::item_error(500, "internal error"));
    state.metrics.decision(resp.decision, reason_of(&resp), started.elapsed().as_secs_f64());
    Json(resp).into_response()
}

/// `POST /access/v1/evaluations`: the batch, with AuthZEN's three semantics.
pub async fn evaluations(State(state): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<EvaluationsRequest>) -> Response {
    let caller = match auth::require(&state, &headers, &[Role::Pep], "ask for decisions").await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let semantic = match req.options.as_ref().and_then(|o| o.evaluations_semantic.as_deref()) {
        None => EvaluationsSemantic::ExecuteAll,
        Some(s) => match EvaluationsSemantic::parse(s) {
            Some(sem) => sem,
            None => {
                return ApiError::invalid(format!(
                    "`options.evaluations_semantic` `{}` is not one of `execute_all`, `deny_on_first_deny`, `permit_on_first_permit`",
                    crate::error::short(s)
                ))
                .into_response();
            }
        },
    };
    let items = match req.evaluations.as_deref() {
        // An empty or absent batch behaves as a single evaluation of the defaults.
        None | Some([]) => vec![EvaluationRequest::default()],
        Some(items) => items.to_vec(),
    };
    if items.len() > 1000 {
        return ApiError::invalid("a batch may hold at most 1000 evaluations").into_response();
    }
    let started = Instant::now();
    let mut slots: Vec<Option<EvaluationResponse>> = Vec::with_capacity(items.len());
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    for item in &items {
        let merged = merge(&req, item);
        match pipeline::check(&merged) {
            Err(message) => {
                if items.len() == 1 && req.evaluations.as_deref().is_none_or(<[_]>::is_empty) {
                    return ApiError::coded(StatusCode::BAD_REQUEST, "invalid_request", message).into_response();
                }
                slots.push(Some(pipeline::item_error(400, &message)));
            }
            Ok(checked) => {
                let v = pipeline::decide(&state, &checked);
                let stop = match semantic {
                    EvaluationsSemantic::ExecuteAll => false,
                    EvaluationsSemantic::DenyOnFirstDeny => !v.allowed,
                    EvaluationsSemantic::PermitOnFirstPermit => v.allowed,
                };
                positions.push(slots.len());
                slots.push(None);
                verdicts.push(v);
                if stop {
                    break;
                }
            }
        }
        if semantic == EvaluationsSemantic::DenyOnFirstDeny && slots.last().is_some_and(|s| s.as_ref().is_some_and(|r| !r.decision)) {
            break;
        }
    }
    let rid = request_id(&headers);
    let responses = finish(&state, verdicts, &caller.actor(), rid.as_deref()).await;
    for (pos, resp) in positions.into_iter().zip(responses) {
        if let Some(slot) = slots.get_mut(pos) {
            state.metrics.decision(resp.decision, reason_of(&resp), started.elapsed().as_secs_f64());
            *slot = Some(resp);
        }
    }
    let evaluations = slots.into_iter().map(|s| s.unwrap_or_else(|| pipeline::item_error(500, "internal error"))).collect();
    Json(EvaluationsResponse { evaluations }).into_response()
}

/// Step 5 and 6: make the decisions durable, then answer. If the trail cannot take them,
/// every decision becomes a deny: nothing is allowed that is not recorded.
async fn finish(state: &AppState, verdicts: Vec<Verdict>, actor: &str, request_id: Option<&str>) -> Vec<EvaluationResponse> {
    let events = verdicts.iter().map(|v| v.event(state, actor, request_id)).collect();
    match state.audit.record_all(events).await {
        Ok(_) => verdicts.iter().map(Verdict::response).collect(),
        Err(_) => verdicts
            .into_iter()
            .map(|mut v| {
                v.allowed = false;
                v.reason = "audit_unavailable".into();
                v.response()
            })
            .collect(),
    }
}

/// Batch defaults: an item's own members win over the top-level ones.
fn merge(req: &EvaluationsRequest, item: &EvaluationRequest) -> EvaluationRequest {
    let context = match (&req.context, &item.context) {
        (Some(base), Some(own)) => {
            let mut m: Map<String, serde_json::Value> = base.clone();
            m.extend(own.clone());
            Some(m)
        }
        (base, own) => own.clone().or_else(|| base.clone()),
    };
    EvaluationRequest {
        subject: item.subject.clone().or_else(|| req.subject.clone()),
        action: item.action.clone().or_else(|| req.action.clone()),
        resource: item.resource.clone().or_else(|| req.resource.clone()),
        context,
    }
}

fn reason_of(resp: &EvaluationResponse) -> &str {
    resp.context.as_ref().and_then(|c| c.get("reason")).and_then(|r| r.as_str()).unwrap_or("")
}
