//! The audit trail over HTTP: verify, query, one task's evidence, export.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mandate_audit::SealedEvent;
use mandate_core::Role;
use mandate_proto::admin::{AuditEventsResponse, AuditVerifyResponse};
use mandate_store::AuditQuery;
use serde::Deserialize;

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;

const AUDITORS: &[Role] = &[Role::Auditor];
const PAGE: usize = 5000;

/// Walks the whole chain and every checkpoint.
pub async fn verify(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<AuditVerifyResponse>, ApiError> {
    auth::require(&state, &headers, AUDITORS, "verify the audit trail").await?;
    Ok(Json(crate::verify::verify_trail(state.store.as_ref(), &state.keys.all_public_keys()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    kind: Option<String>,
    agent: Option<String>,
    task: Option<String>,
    since_ms: Option<i64>,
    after: Option<u64>,
    limit: Option<usize>,
}

pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Json<AuditEventsResponse>, ApiError> {
    auth::require(&state, &headers, AUDITORS, "read the audit trail").await?;
    let query = AuditQuery {
        kind: q.kind,
        agent: q.agent,
        task: q.task,
        since_ms: q.since_ms,
        after_seq: q.after,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let events = state.store.query_audit(&query).await?;
    Ok(Json(AuditEventsResponse { events: events.iter().map(SealedEvent::to_json).collect() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrailQuery {
    task: String,
}

/// One task's evidence chain, in order: the task and every task delegated from it.
pub async fn trail(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TrailQuery>,
) -> Result<Json<AuditEventsResponse>, ApiError> {
    auth::require(&state, &headers, AUDITORS, "read the audit trail").await?;
    if state.store.get_task(&q.task).await?.is_none() {
        return Err(ApiError::not_found("task", &q.task));
    }
    let mut ids = vec![q.task.clone()];
    ids.extend(state.store.descendant_task_ids(&q.task).await?);
    let events = state.store.audit_for_tasks(&ids).await?;
    Ok(Json(AuditEventsResponse { events: events.iter().map(SealedEvent::to_json).collect() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    format: Option<String>,
}

/// The whole trail as JSON lines, Mandate's own shape (`jsonl`) or OCSF (`ocsf`).
pub async fn export(State(state): State<Arc<AppState>>, headers: HeaderMap, Query(q): Query<ExportQuery>) -> Result<Response, ApiError> {
    auth::require(&state, &headers, AUDITORS, "export the audit trail").await?;
    let ocsf = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => false,
        "ocsf" => true,
        other => return Err(ApiError::invalid(format!("format `{}` is not one of `jsonl`, `ocsf`", crate::error::short(other)))),
    };
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let page = state.store.read_audit(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            let v = if ocsf { mandate_audit::to_ocsf(e) } else { e.to_json() };
            serde_json::to_writer(&mut out, &v).map_err(ApiError::internal)?;
            out.push(b'\n');
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-ndjson")], Body::from(out)).into_response())
}

pub async fn checkpoints(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    auth::require(&state, &headers, AUDITORS, "read audit checkpoints").await?;
    let cps = state.store.list_checkpoints().await?;
    Ok(Json(serde_json::json!({
        "checkpoints": cps.iter().map(|c| serde_json::json!({ "seq": c.seq, "hash": c.hash, "ts_ms": c.ts_ms, "kid": c.kid, "signature": c.signature })).collect::<Vec<_>>()
    })))
}
