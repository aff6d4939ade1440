//! The AuthZEN decision API. A deny is a 200 with `decision: false`; 400 is for requests
//! missing what the spec requires; `X-Request-ID` is echoed by the router's layer.

use std::sync::Arc;

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
use crate::receipts::Receipts;
use crate::routes::request_id;
use crate::state::AppState;

/// `POST /access/v1/evaluation`.
pub async fn evaluation(State(state): State<Arc<AppState>>, headers: HeaderMap, ApiJson(req): ApiJson<EvaluationRequest>) -> Response {
    let caller = match auth::require(&state, &headers, &[Role::Pep], "ask for decisions").await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let rid = request_id(&headers);
    let decided = pipeline::decide_requests(&state, vec![pipeline::parse(&state, req)], &caller.actor(), rid.as_deref(), |_| false).await;
    let receipts = receipts_for(&state, &caller);
    match decided.into_iter().next() {
        Some(Ok(verdict)) => Json(answer(&verdict, receipts.as_ref(), &caller)).into_response(),
        Some(Err(message)) => ApiError::coded(StatusCode::BAD_REQUEST, "invalid_request", message).into_response(),
        None => Json(pipeline::item_error(500, "internal error")).into_response(),
    }
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
    // An empty or absent batch behaves as a single evaluation of the defaults.
    let implicit = req.evaluations.as_deref().is_none_or(<[_]>::is_empty);
    let merged: Vec<EvaluationRequest> = match req.evaluations.as_deref() {
        None | Some([]) => vec![merge(&req, &EvaluationRequest::default())],
        Some(items) if items.len() > 1000 => {
            return ApiError::invalid("a batch may hold at most 1000 evaluations").into_response();
        }
        Some(items) => items.iter().map(|item| merge(&req, item)).collect(),
    };
    let stop = |r: Result<&Verdict, &str>| match (semantic, r) {
        (EvaluationsSemantic::ExecuteAll, _) => false,
        // An item that cannot be decided is not a permit: it stops a deny-on-first-deny batch.
        (EvaluationsSemantic::DenyOnFirstDeny, r) => !r.is_ok_and(Verdict::allowed),
        (EvaluationsSemantic::PermitOnFirstPermit, r) => r.is_ok_and(Verdict::allowed),
    };
    let rid = request_id(&headers);
    let parsed = merged.into_iter().map(|r| pipeline::parse(&state, r)).collect();
    let decided = pipeline::decide_requests(&state, parsed, &caller.actor(), rid.as_deref(), stop).await;
    if implicit && let [Err(message)] = decided.as_slice() {
        return ApiError::coded(StatusCode::BAD_REQUEST, "invalid_request", message.clone()).into_response();
    }
    let receipts = receipts_for(&state, &caller);
    let evaluations = decided
        .into_iter()
        .map(|r| match r {
            Ok(verdict) => answer(&verdict, receipts.as_ref(), &caller),
            Err(message) => pipeline::item_error(400, &message),
        })
        .collect();
    Json(EvaluationsResponse { evaluations }).into_response()
}

/// A `pep` token's decisions carry evidence receipts (see [`crate::receipts`]); others do not.
fn receipts_for(state: &AppState, caller: &auth::Caller) -> Option<Receipts> {
    (caller.role == Role::Pep).then(|| Receipts::new(&state.master_key))
}

fn answer(verdict: &Verdict, receipts: Option<&Receipts>, caller: &auth::Caller) -> EvaluationResponse {
    let mut response = verdict.response();
    if let (Some(r), Some(serde_json::Value::Object(ctx))) = (receipts, response.context.as_mut()) {
        let receipt = r.make(&caller.token_id, &verdict.decision_id, verdict.task_id(), verdict.agent());
        ctx.insert("receipt".into(), serde_json::Value::String(receipt));
    }
    response
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
