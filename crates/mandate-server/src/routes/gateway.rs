//! What an enforcement gateway running apart from the control plane needs besides decisions:
//! the revocation feed as Server-Sent Events, and intake of the evidence it recorded. (Sealed
//! secrets are with the other secret routes.)

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_channel::mpsc;
use mandate_audit::{NewEvent, kinds};
use mandate_core::Role;
use mandate_proto::gateway::{
    EVENT_HELLO, EVENT_RESET, EVENT_REVOCATION, EvidenceRequest, EvidenceResponse, FeedPosition, MAX_EVIDENCE_EVENTS, RevocationEntry,
};

use crate::auth;
use crate::error::{ApiError, short};
use crate::extract::ApiJson;
use crate::metrics::Metrics;
use crate::receipts::Receipts;
use crate::revocations::FeedItem;
use crate::state::AppState;

/// Longest agent name or task id an evidence event may name.
const MAX_NAME: usize = 256;

/// `GET /v1/revocations`: `hello`, then every held entry after the resume point, then live
/// entries as they are published; `reset` where entries were lost; a comment every keep-alive
/// interval. The resume point is `Last-Event-ID`, else `?after=N`, else the head.
pub async fn revocations(State(state): State<Arc<AppState>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    auth::require(&state, &headers, &[Role::Pep], "follow revocations").await?;
    let after = resume_point(&headers, query.as_deref())?;
    let mut sub = state.revocations().follow(after);
    let keepalive = state.settings.revocation_keepalive;
    let connected = Connected::new(state.metrics.clone());
    // The stream is fed by a task of its own, which ends when the client goes away (the next
    // send fails, at the latest at the next keep-alive) or the feed is closed on shutdown.
    let (mut tx, rx) = mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let _connected = connected;
        if !send(&mut tx, position(EVENT_HELLO, sub.start())).await {
            return;
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                item = sub.next() => match item {
                    Some(FeedItem::Entry(entry)) => revocation(&entry),
                    Some(FeedItem::Reset(at)) => position(EVENT_RESET, &at),
                    None => break,
                },
                _ = tick.tick() => Event::default().comment("keep-alive"),
            };
            if !send(&mut tx, event).await {
                break;
            }
        }
    });
    let mut resp = Sse::new(rx).into_response();
    // Proxies must pass each event on as it comes.
    resp.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// `POST /v1/evidence`: `tool.call` and `secret.echo_redacted` events a remote gateway recorded, made durable before the
/// answer. The actor of each is the submitting token.
///
/// An event naming a decision (`details.decision_id`) must carry the receipt that decision was
/// answered with to this token, for the event's task and agent; one that does not refuses the
/// whole batch (`403 evidence_not_bound`, nothing recorded): an honest gateway never sends
/// one, so a batch holding one is not to be trusted in part. An event naming no decision (the
/// gateway's own refusals before any, such as `route_not_configured`) is recorded outside any
/// task's trail: its task and agent, as claimed, go to `details.claimed_task` and
/// `details.claimed_agent`.
pub async fn evidence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EvidenceRequest>,
) -> Result<Json<EvidenceResponse>, ApiError> {
    let caller = auth::require_only(&state, &headers, &[Role::Pep], "submit evidence").await?;
    if req.events.len() > MAX_EVIDENCE_EVENTS {
        return Err(ApiError::invalid(format!("a request may carry at most {MAX_EVIDENCE_EVENTS} events, not {}", req.events.len())));
    }
    let actor = caller.actor();
    let receipts = Receipts::new(&state.master_key);
    let mut events = Vec::with_capacity(req.events.len());
    for (i, e) in req.events.into_iter().enumerate() {
        if e.kind != kinds::TOOL_CALL && e.kind != kinds::SECRET_ECHO_REDACTED {
            return Err(ApiError::invalid(format!(
                "`events[{i}].kind` `{}` may not be submitted: only `{}` and `{}` events may",
                short(&e.kind),
                kinds::TOOL_CALL,
                kinds::SECRET_ECHO_REDACTED
            )));
        }
        if !e.details.is_object() {
            return Err(ApiError::invalid(format!("`events[{i}].details` must be an object")));
        }
        for (field, value) in [("agent", &e.agent), ("task", &e.task)] {
            if value.as_ref().is_some_and(|v| v.is_empty() || v.len() > MAX_NAME) {
                return Err(ApiError::invalid(format!("`events[{i}].{field}` must be 1 to {MAX_NAME} bytes")));
            }
        }
        let (mut agent, mut task, mut details) = (e.agent, e.task, e.details);
        match (details.get("decision_id"), &e.receipt) {
            (Some(serde_json::Value::String(decision)), Some(receipt))
                if receipts.verify(receipt, &caller.token_id, decision, task.as_deref(), agent.as_deref()) => {}
            (None, None) => {
                if let serde_json::Value::Object(m) = &mut details {
                    if let Some(t) = task.take() {
                        m.insert("claimed_task".into(), serde_json::Value::String(t));
                    }
                    if let Some(a) = agent.take() {
                        m.insert("claimed_agent".into(), serde_json::Value::String(a));
                    }
                }
            }
            _ => {
                return Err(ApiError::coded(
                    StatusCode::FORBIDDEN,
                    "evidence_not_bound",
                    format!(
                        "`events[{i}]` is not bound to a decision this token obtained for its task and agent (its `receipt` does not verify); nothing was recorded"
                    ),
                ));
            }
        }
        events.push(NewEvent { ts_ms: e.ts_ms, kind: e.kind, actor: actor.clone(), agent, task, details });
    }
    let echoes: Vec<String> = events
        .iter()
        .filter(|e| e.kind == kinds::SECRET_ECHO_REDACTED)
        .map(|e| e.details.get("upstream").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned())
        .collect();
    let seqs = state.audit.record_all(events).await.map_err(|_| {
        ApiError::coded(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", "the audit trail is unavailable; nothing was recorded")
    })?;
    for upstream in echoes {
        state.metrics.secret_echo_redacted(&upstream);
    }
    Ok(Json(EvidenceResponse { recorded: seqs.len(), seqs }))
}

/// `Last-Event-ID` (what an SSE client sends when it reconnects), else `?after=N`.
fn resume_point(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let mut after = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "after" => after = Some(sequence_number("after", &value)?),
            other => return Err(ApiError::invalid(format!("unknown query parameter `{}`", short(other)))),
        }
    }
    if let Some(value) = headers.get("last-event-id") {
        let text = value.to_str().map_err(|_| ApiError::invalid("`Last-Event-ID` is not a sequence number"))?.trim();
        if !text.is_empty() {
            return sequence_number("Last-Event-ID", text).map(Some);
        }
    }
    Ok(after)
}

fn sequence_number(what: &str, text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::invalid(format!("`{what}` `{}` is not a sequence number", short(text))))
}

fn position(name: &str, at: &FeedPosition) -> Event {
    Event::default().event(name).data(serde_json::to_string(at).unwrap_or_default())
}

fn revocation(entry: &RevocationEntry) -> Event {
    Event::default().event(EVENT_REVOCATION).id(entry.seq.to_string()).data(serde_json::to_string(entry).unwrap_or_default())
}

/// Waits for room, then queues; false once the client has gone.
async fn send(tx: &mut mpsc::Sender<Result<Event, Infallible>>, event: Event) -> bool {
    std::future::poll_fn(|cx| tx.poll_ready(cx)).await.is_ok() && tx.start_send(Ok(event)).is_ok()
}

/// Counts a connected subscriber for as long as it lives.
struct Connected(Arc<Metrics>);

impl Connected {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.revocation_subscriber(true);
        Connected(metrics)
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.revocation_subscriber(false);
    }
}
