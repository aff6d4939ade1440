//! `/mcp/{name}`: the MCP endpoint clients talk to. The order of checks, top to bottom:
//!
//! 1. the upstream exists, the `Origin` is acceptable, the body fits and is one message;
//! 2. the bearer is a mandate that verifies, whose task is live and agent active;
//! 3. the client's revision: `initialize` opens a session (2025-11-25); a request carrying
//!    2026-07-28 in `MCP-Protocol-Version` or `_meta` is stateless (its routing headers must
//!    agree with the body); anything else needs a session of the same task;
//! 4. the method: lists are filtered by one batch decision; calls, reads, prompt fetches,
//!    completions, subscriptions and task requests are decided one by one; pings and log
//!    levels pass, and the notifications MCP defines for clients (a cancel under the
//!    upstream's id of the request); any other method or notification is refused.
//!
//! What the upstream sends while a request is on its way (progress, log messages, requests of
//! its own) reaches the client on that request's stream ([`relay::respond`]); what it says
//! outside any request reaches the client's `GET` stream ([`relay::Outbox`]). Each of those
//! messages is translated (ids, progress tokens), decided where it asks something of the
//! client (sampling, elicitation, roots), and scrubbed of the injected secret first.
//!
//! Nothing reaches the upstream that was not allowed, and the agent's mandate never does.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use mandate_core::Classification;
use mandate_core::canonical::{Canonical, Limits};
use mandate_policy::ActionKind;
use mandate_token::VerifiedMandate;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, LEGACY, META_CLIENT_CAPS, META_CLIENT_INFO, META_SERVER_INFO, Message, STATELESS, SUPPORTED, code};
use super::relay::{self, ServerRequest, Within};
use super::upstream::{ClientIdentity, Link, McpUpstream, Reply, SIDE_CAPACITY, UpstreamError, event_end, sse_data, stateless_meta};
use super::uri::{self, UriError};
use crate::authz::{self, Ask, CallRecord, EchoRecord, Outcome};
use crate::config::{ToolPolicy, is_reserved_tool_name};
use crate::control::Refusal;
use crate::gateway::{Gateway, Injected, Session, now_ms, shared_key};
use crate::scrub::Found;

/// Methods that pass without a decision (after the mandate check).
const PASS: [&str; 2] = ["ping", "logging/setLevel"];
/// Methods decided one call at a time.
const DECIDED: [&str; 5] = ["tools/call", "prompts/get", "resources/read", "completion/complete", "resources/subscribe"];
/// The requests an upstream may send a client, with the action each is decided as
/// (`UPSTREAM.` and this): the server asks the client's model, its user, or for its roots.
/// `ping` passes; anything else is answered with an error and never reaches the client.
pub const SERVER_REQUESTS: [(&str, &str); 3] =
    [("sampling/createMessage", "sampling.createMessage"), ("elicitation/create", "elicitation.create"), ("roots/list", "roots.list")];

/// How long a request's upstream may stay silent while one of its questions to the client
/// (sampling, elicitation) waits for an answer: a person may be typing it.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// The state of one request on its way through. It owns what it needs, so a request whose
/// answer streams can outlive the handler that began it.
#[derive(Clone)]
struct Call {
    gw: Arc<Gateway>,
    upstream: Arc<McpUpstream>,
    token: String,
    mandate: Arc<VerifiedMandate>,
    stateless: bool,
    accepts_json: bool,
    request_id: Option<String>,
    /// The client's stream of this request, for what the upstream sends before its answer
    /// (`None`: the client takes only JSON, or this is not a request).
    side: Option<mpsc::UnboundedSender<Value>>,
}

pub async fn post(State(gw): State<Arc<Gateway>>, Path(name): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let upstream = match upstream_for(&gw, &name, &headers) {
        Ok(u) => u,
        Err(resp) => return *resp,
    };
    let body = match axum::body::to_bytes(body, gw.cfg.max_message_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return http_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Value::Null,
                code::INVALID_REQUEST,
                &format!("the message is larger than {} bytes", gw.cfg.max_message_bytes),
                None,
            );
        }
    };
    let message = match Message::parse(&body) {
        Ok(m) => m,
        Err(e) => return http_error(StatusCode::BAD_REQUEST, &e.id, e.code, &e.message, None),
    };
    let id = match &message {
        Message::Request { id, .. } => id.clone(),
        _ => Value::Null,
    };
    let (token, mandate, refusal) = match authenticate(&gw, &headers, &name).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let stateless = is_stateless(&headers, &message);
    let mut call = Call {
        gw: gw.clone(),
        upstream,
        token,
        mandate,
        stateless,
        accepts_json: accepts_json(&headers),
        request_id: headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned),
        side: None,
    };
    if stateless && let Some(resp) = check_routing_headers(&headers, &message) {
        return resp;
    }
    if let Some(r) = refusal {
        return match message {
            // Decided anyway, so the refused call is in the trail with its decision.
            Message::Request { id, method, params } if DECIDED.contains(&method.as_str()) => {
                call.refused_call(&id, &method, params, &r).await
            }
            _ => refusal_response(&headers, &id, &r),
        };
    }
    // A request whose client takes an event stream: the upstream may say things before its
    // answer, and they go to the client on this request's stream.
    if matches!(message, Message::Request { .. }) && accepts_sse(&headers) {
        let (tx, rx) = mpsc::unbounded_channel();
        call.side = Some(tx);
        // In a session, the client may resume the stream (`GET` with `Last-Event-ID`): the
        // request runs to its end even if the client loses the stream. A stateless client's
        // closing of the stream is its cancel.
        let session = match &message {
            Message::Request { method, .. } if !stateless && method != "initialize" => session_of(&call, &headers, &id).ok(),
            _ => None,
        };
        return match session {
            Some(s) => relay::respond_resumable(call.dispatch(headers, message), rx, s.streams.clone()).await,
            None => relay::respond(call.dispatch(headers, message), rx).await,
        };
    }
    call.dispatch(headers, message).await
}

/// `GET /mcp/{name}`: the session's stream of server messages (2025-11-25): what a process
/// says outside any request, or the upstream's own stream, relayed; every event has an id of
/// the gateway's, and a client that reconnects with `Last-Event-ID` gets what it missed. 405
/// where the upstream has no stream to offer; ends when the session does.
pub async fn get(State(gw): State<Arc<Gateway>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let upstream = match upstream_for(&gw, &name, &headers) {
        Ok(u) => u,
        Err(resp) => return *resp,
    };
    let (token, mandate) = match authenticate(&gw, &headers, &name).await {
        Ok((t, m, None)) => (t, m),
        Ok((_, _, Some(r))) => return refusal_response(&headers, &Value::Null, &r),
        Err(resp) => return resp,
    };
    let call = Call { gw: gw.clone(), upstream, token, mandate, stateless: false, accepts_json: false, request_id: None, side: None };
    let session = match session_of(&call, &headers, &Value::Null) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    // The rest of a request's stream the client lost.
    if let Some(rest) = last.and_then(|l| session.streams.resume(l)) {
        return relay::sse(rest.take_until(session.ended.clone().cancelled_owned()));
    }
    match &session.link {
        Link::Stateless => return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST, DELETE")]).into_response(),
        Link::Legacy { .. } if !session.upstream_stream.swap(true, Ordering::SeqCst) => {
            // The upstream's stream, opened once for the session and kept open by the pump.
            if let Err(resp) = call.open_upstream_stream(&session).await {
                session.upstream_stream.store(false, Ordering::SeqCst);
                return resp;
            }
        }
        _ => {}
    }
    let (replay, live) = session.outbox.subscribe(last);
    let ended = session.ended.clone();
    let live = tokio_stream_of(live);
    let stream = futures_util::stream::iter(replay.into_iter().map(Ok::<_, std::io::Error>))
        // A comment first, so the client knows the stream is open before any message.
        .chain(futures_util::stream::once(async { Ok(Bytes::from_static(b": open\n\n")) }))
        .chain(live.map(Ok))
        .take_until(ended.cancelled_owned());
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The live events of an outbox, as a stream; a client too slow to keep up misses the
/// events it lagged behind on (it can reconnect with `Last-Event-ID` to get those kept).
fn tokio_stream_of(rx: tokio::sync::broadcast::Receiver<(u64, Bytes)>) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((_, ev)) => return Some((ev, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// `DELETE /mcp/{name}`: ends the session.
pub async fn delete(State(gw): State<Arc<Gateway>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(upstream) = gw.mcp.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Ending a session needs a mandate that verifies, even for a revoked task.
    let (token, mandate) = match authenticate(&gw, &headers, &name).await {
        Ok((t, m, _)) => (t, m),
        Err(resp) => return resp,
    };
    let call = Call { gw: gw.clone(), upstream, token, mandate, stateless: false, accepts_json: true, request_id: None, side: None };
    let session = match session_of(&call, &headers, &Value::Null) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Some(s) = gw.sessions.remove(&session.id) {
        gw.end_session(s).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

impl Call {
    /// After the mandate check: the message, by revision and method.
    async fn dispatch(self, headers: HeaderMap, message: Message) -> Response {
        if self.stateless {
            return self.stateless(message).await;
        }
        match message {
            Message::Request { id, method, params } if method == "initialize" => self.initialize(&id, params).await,
            message => {
                let id = match &message {
                    Message::Request { id, .. } => id.clone(),
                    _ => Value::Null,
                };
                let session = match session_of(&self, &headers, &id) {
                    Ok(s) => s,
                    Err(resp) => return resp,
                };
                session.touch();
                self.in_session(&session, message).await
            }
        }
    }

    /// `initialize`: opens a session and its upstream link.
    async fn initialize(&self, id: &Value, params: Option<Map<String, Value>>) -> Response {
        let p = params.unwrap_or_default();
        let client = ClientIdentity {
            info: p.get("clientInfo").cloned().unwrap_or_else(|| ClientIdentity::default().info),
            capabilities: relayed_client_capabilities(p.get("capabilities").unwrap_or(&Value::Null)),
        };
        let asked = p.get("protocolVersion").and_then(Value::as_str).unwrap_or(LEGACY);
        // The session revisions; a client asking for a newer one gets the newest with sessions.
        let protocol = if SUPPORTED.contains(&asked) && asked != STATELESS { asked } else { LEGACY }.to_owned();
        let inject = match self.injection().await {
            Ok(i) => i,
            Err(code) => {
                return self.answer(jsonrpc::error(
                    id,
                    code::UPSTREAM_ERROR,
                    "the upstream's credential is not available",
                    Some(json!({"reason": code})),
                ));
            }
        };
        let opened = self.upstream.open(&client, inject.as_ref().map(|i| &i.header)).await;
        let (link, described) = match self.scrub_opened(inject.as_ref(), "initialize", opened) {
            Ok(l) => l,
            Err(e) => return self.answer(upstream_error(id, &e)),
        };
        let session = self.new_session(random_id(), client, protocol.clone(), link, described.clone());
        self.gw.sessions.insert(session.clone());
        let result = as_initialize_result(&described, &protocol);
        let mut resp = self.answer(jsonrpc::result(id, result));
        if let Ok(v) = HeaderValue::from_str(&session.id) {
            resp.headers_mut().insert("mcp-session-id", v);
        }
        resp
    }

    /// A message inside a 2025-11-25 session.
    async fn in_session(&self, session: &Arc<Session>, message: Message) -> Response {
        match message {
            Message::Request { id, method, params } => self.request(session, &id, &method, params).await,
            Message::Notification { method, params } => self.notification(session, &method, params).await,
            Message::Response(v) => self.client_answer(session, v).await,
        }
    }

    /// The client's answer to a request of the upstream's: only to one the gateway relayed
    /// and is still waiting, under the upstream's own id, and recorded with the call it
    /// happened in (digests of the request and the answer, not their contents).
    async fn client_answer(&self, session: &Arc<Session>, mut answer: Value) -> Response {
        let Some(asked) = answer.get("id").and_then(|id| session.server_requests.take(id)) else {
            return http_error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                code::INVALID_REQUEST,
                "no request of the server's is waiting for this answer",
                Some(json!({"reason": "unknown_server_request"})),
            );
        };
        let answer_sha256 = mandate_core::canonical::digest(&answer);
        let result = if answer.get("error").is_some() { "jsonrpc_error" } else { "ok" };
        if let Value::Object(m) = &mut answer {
            m.insert("id".into(), asked.upstream_id.clone());
        }
        let sent = self.reply_upstream(session, &answer).await;
        let outcome =
            Outcome { allowed: true, reason: "allowed".into(), decision_id: asked.decision_id.clone(), ..Outcome::refused("allowed") };
        let result = if sent { result } else { "upstream_unreachable" };
        self.gw.control.record(self.server_request_event(
            &asked.method,
            asked.within.as_ref(),
            &outcome,
            sent,
            result,
            &asked.params_sha256,
            Some(&answer_sha256),
            asked.asked,
        ));
        StatusCode::ACCEPTED.into_response()
    }

    /// Sends a message (an answer to the upstream's request) up the session's link.
    async fn reply_upstream(&self, session: &Session, message: &Value) -> bool {
        match &session.link {
            Link::Stdio(p) => p.write(message).await.is_ok(),
            Link::Legacy { .. } => {
                let inject = self.injection().await.ok().flatten();
                self.upstream.forward_raw(&session.link, "response", message, inject.as_ref().map(|i| &i.header)).await.is_ok()
            }
            // A stateless upstream asks through its results (`input_required`), never apart.
            Link::Stateless => false,
        }
    }

    /// One message the upstream sent the client (during a request, or on the session's
    /// stream): scrubbed of the injected secret, its ids and tokens translated, a request of
    /// the upstream's decided; then delivered where it belongs, or dropped.
    async fn outbound(&self, session: &Arc<Session>, mut message: Value, r: &Relayed<'_>) {
        let method = message.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
        if let Some(i) = r.inject {
            let mut found = Found::default();
            i.scrubber.value(&mut message, &mut found);
            let about = About {
                tool: r.within.as_ref().map(|w| w.tool.as_str()),
                decision_id: r.within.as_ref().and_then(|w| w.decision_id.as_deref()),
                receipt: None,
            };
            self.echo(i, &method, &about, "stream", &found);
        }
        if let Some(id) = message.get("id").cloned() {
            return self.server_request(session, id, &method, message, r).await;
        }
        let params = message.get_mut("params").and_then(Value::as_object_mut);
        match method.as_str() {
            "notifications/progress" => {
                // Only the progress of this request, under the token the client gave it.
                let (Some((ours, theirs)), Some(p)) = (r.progress, params) else { return };
                if p.get("progressToken") != Some(ours) {
                    return;
                }
                p.insert("progressToken".into(), theirs.clone());
            }
            "notifications/cancelled" => {
                // The upstream gives up a request of its own: named as the client knows it.
                let Some(p) = params else { return };
                let Some(client_id) = p.get("requestId").and_then(|id| session.server_requests.client_id_of(id)) else { return };
                session.server_requests.take(&client_id);
                p.insert("requestId".into(), client_id);
            }
            "notifications/resources/updated" => {
                let uri = params.and_then(|p| p.get("uri")).and_then(Value::as_str).and_then(|u| uri::normalize(u).ok());
                let Some(uri) = uri else { return };
                if !self.may_still_read(session, &uri).await {
                    return;
                }
            }
            _ => {}
        }
        self.deliver(session, message, r);
    }

    fn deliver(&self, session: &Session, message: Value, r: &Relayed<'_>) -> bool {
        match r.to {
            To::Request(Some(tx)) => tx.send(message).is_ok(),
            // A client that takes only JSON for this request: its session's stream.
            To::Request(None) | To::Session if session.client_protocol != STATELESS => {
                session.outbox.push(&message);
                true
            }
            _ => false,
        }
    }

    /// An update of a subscribed resource reaches the client only while its task may still
    /// read the resource: decided again, as a read, for every update.
    async fn may_still_read(&self, session: &Session, uri: &str) -> bool {
        if !session.subscriptions.lock().contains(uri) {
            return false;
        }
        let target = Target::of(&self.upstream, "resources/read", uri);
        let environment = self.environment();
        let answers = self.gw.control.decide(&[self.ask(&target, None)], environment.as_deref(), None).await;
        answers.first().is_some_and(|o| o.allowed)
    }

    /// A request of the upstream's to the client: `ping` passes; sampling, elicitation and
    /// roots are decided as `UPSTREAM.sampling.createMessage`, `UPSTREAM.elicitation.create`
    /// and `UPSTREAM.roots.list` (the task's intent must list them; policy sees the request's
    /// params as `context.arguments`); anything else, or a refusal, is answered with an error
    /// and never reaches the client. An allowed one goes to the client under an id of the
    /// gateway's.
    async fn server_request(&self, session: &Arc<Session>, upstream_id: Value, method: &str, mut message: Value, r: &Relayed<'_>) {
        let started = Instant::now();
        let refuse = |code: i64, text: &str, data: Option<Value>| jsonrpc::error(&upstream_id, code, text, data);
        // A 2026-07-28 client takes no requests from a server (it is asked through results,
        // `input_required`), and has no session stream: the upstream hears so at once.
        let reachable = session.client_protocol != STATELESS;
        if !reachable {
            let e = refuse(code::METHOD_NOT_FOUND, "the client has no stream open to take this request", None);
            self.reply_upstream(session, &e).await;
            return;
        }
        let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
        let params_sha256 = mandate_core::canonical::digest(&params);
        let decision_id = if method == "ping" {
            None
        } else {
            if !SERVER_REQUESTS.iter().any(|(m, _)| *m == method) {
                let text = format!("`{}` is not a request the gateway relays to clients", mandate_core::clip(method));
                self.reply_upstream(session, &refuse(code::METHOD_NOT_FOUND, &text, None)).await;
                return;
            }
            let target = Target::of(&self.upstream, method, r.within.as_ref().map_or("", |w| w.tool.as_str()));
            let outcome = match Canonical::new(&params, Limits::ARGUMENTS) {
                Ok(c) => {
                    let arguments = c.into_value();
                    let environment = self.environment();
                    self.gw
                        .decide_one(&self.ask(&target, Some(&arguments)), environment.as_deref(), self.request_id.as_deref(), false)
                        .await
                }
                Err(e) => Outcome::refused(e.code()),
            };
            if !outcome.allowed {
                self.gw.control.record(self.server_request_event(
                    method,
                    r.within.as_ref(),
                    &outcome,
                    false,
                    "denied",
                    &params_sha256,
                    None,
                    started,
                ));
                let e = refuse(code::DENIED, &outcome.message(), Some(outcome.error_data()));
                self.reply_upstream(session, &e).await;
                return;
            }
            outcome.decision_id
        };
        let asked = ServerRequest {
            upstream_id: upstream_id.clone(),
            method: method.to_owned(),
            params_sha256,
            asked: started,
            within: r.within.clone(),
            decision_id,
        };
        let client_id = session.server_requests.open(asked);
        if let Value::Object(m) = &mut message {
            m.insert("id".into(), client_id.clone());
        }
        if !self.deliver(session, message, r) {
            session.server_requests.take(&client_id);
            let e = refuse(code::METHOD_NOT_FOUND, "the client's stream closed before it could take this request", None);
            self.reply_upstream(session, &e).await;
        }
    }

    /// The evidence of a request of the upstream's to the client: a `tool.call` event of the
    /// request's method, tied to the call it happened in, with the digests of what was asked
    /// and answered.
    #[allow(clippy::too_many_arguments)]
    fn server_request_event(
        &self,
        method: &str,
        within: Option<&Within>,
        outcome: &Outcome,
        forwarded: bool,
        result: &str,
        params_sha256: &str,
        answer_sha256: Option<&str>,
        started: Instant,
    ) -> mandate_audit::NewEvent {
        let target = Target::of(&self.upstream, method, within.map_or("", |w| w.tool.as_str()));
        let mut event = CallRecord {
            mandate: Some(&self.mandate),
            upstream: &self.upstream.cfg.name,
            protocol: "mcp",
            method,
            tool: within.map_or("", |w| w.tool.as_str()),
            action: &target.action,
            kind: target.kind,
            outcome,
            forwarded,
            result,
            status: None,
            arguments: None,
            log_arguments: false,
            redact: &[],
            latency_us: started.elapsed().as_micros() as u64,
            response_bytes: 0,
            secret: None,
            request_id: self.request_id.as_deref(),
            request_sha256: None,
        }
        .event(now_ms());
        if let Value::Object(d) = &mut event.details {
            d.insert("arguments_sha256".into(), json!(params_sha256));
            if let Some(a) = answer_sha256 {
                d.insert("answer_sha256".into(), json!(a));
            }
            if let Some(id) = within.and_then(|w| w.decision_id.as_deref()) {
                d.insert("within_decision_id".into(), json!(id));
            }
        }
        event
    }

    /// A stateless (2026-07-28) message: the task's shared link carries it.
    async fn stateless(&self, message: Message) -> Response {
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            // 2026-07-28 defines one client notification, `notifications/cancelled`, and not
            // over HTTP (closing the request's stream cancels it): nothing is relayed.
            Message::Notification { method, .. } if client_notification(STATELESS, &method) => {
                return StatusCode::ACCEPTED.into_response();
            }
            Message::Notification { method, .. } => return notification_not_allowed(&method),
            // Stateless responses have nothing to attach to upstream.
            Message::Response(_) => return StatusCode::ACCEPTED.into_response(),
        };
        let client = ClientIdentity {
            info: params
                .as_ref()
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get(META_CLIENT_INFO))
                .cloned()
                .unwrap_or_else(|| ClientIdentity::default().info),
            capabilities: params
                .as_ref()
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get(META_CLIENT_CAPS))
                .map(relayed_client_capabilities)
                .unwrap_or_else(|| json!({})),
        };
        if method == "initialize" {
            return self.answer(jsonrpc::error(
                &id,
                code::INVALID_REQUEST,
                "`initialize` does not exist in 2026-07-28; use `server/discover`",
                None,
            ));
        }
        if DECIDED.contains(&method.as_str()) {
            // Decided before the upstream is even contacted: a refused call opens nothing.
            return self.decided(CallLink::Shared(client), &id, &method, params).await;
        }
        let session = match self.shared_link(client).await {
            Ok(s) => s,
            Err(e) => return self.answer(upstream_error(&id, &e)),
        };
        session.touch();
        if method == "server/discover" {
            return self.answer(jsonrpc::result(&id, as_discover_result(&session.described)));
        }
        self.request(&session, &id, &method, params).await
    }

    async fn shared_link(&self, client: ClientIdentity) -> Result<Arc<Session>, UpstreamError> {
        let key = shared_key(&self.upstream.cfg.name, &self.mandate.claims().task_id);
        if let Some(s) = self.gw.sessions.get(&key) {
            return Ok(s);
        }
        let lock = self.gw.sessions.opening_lock(&key);
        let _guard = lock.lock().await;
        if let Some(s) = self.gw.sessions.get(&key) {
            return Ok(s);
        }
        let inject = self.injection().await.map_err(|c| UpstreamError::credential(&c))?;
        let opened = self.upstream.open(&client, inject.as_ref().map(|i| &i.header)).await;
        let (link, described) = self.scrub_opened(inject.as_ref(), "server/discover", opened)?;
        let s = self.new_session(key, client, STATELESS.to_owned(), link, described);
        self.gw.sessions.insert(s.clone());
        Ok(s)
    }

    /// A session over `link`, with its stream and the pump that fills it from what the
    /// upstream says outside any request.
    fn new_session(&self, id: String, client: ClientIdentity, protocol: String, link: Link, described: Value) -> Arc<Session> {
        let (tx, rx) = mpsc::channel(SIDE_CAPACITY);
        if let Link::Stdio(p) = &link {
            p.set_unsolicited(tx.clone());
        }
        let session = Arc::new(Session {
            id,
            upstream: self.upstream.clone(),
            task_id: self.mandate.claims().task_id.clone(),
            agent: self.mandate.claims().agent.clone(),
            client,
            client_protocol: protocol,
            link,
            described,
            last_used_ms: AtomicI64::new(now_ms()),
            ended: CancellationToken::new(),
            in_flight: Default::default(),
            outbox: Default::default(),
            server_requests: Default::default(),
            subscriptions: Default::default(),
            streams: Default::default(),
            unsolicited: tx,
            upstream_stream: Default::default(),
        });
        let pump = Call { side: None, request_id: None, stateless: false, ..self.clone() };
        tokio::spawn(pump.pump(Arc::downgrade(&session), rx));
        session
    }

    /// Moves what the upstream says outside any request into the session's stream, each
    /// message translated, decided and scrubbed; ends with the session.
    async fn pump(self, session: std::sync::Weak<Session>, mut rx: mpsc::Receiver<Value>) {
        loop {
            let Some(ended) = session.upgrade().map(|s| s.ended.clone()) else { return };
            let message = tokio::select! {
                m = rx.recv() => m,
                _ = ended.cancelled() => None,
            };
            let (Some(m), Some(s)) = (message, session.upgrade()) else { return };
            let inject = self.injection().await.ok().flatten();
            let relayed = Relayed { to: To::Session, progress: None, within: None, inject: inject.as_ref() };
            self.outbound(&s, m, &relayed).await;
        }
    }

    /// Opens the upstream's own stream of a session (HTTP with sessions) and relays it into
    /// the session's stream until the session ends; 405 when the upstream has none.
    async fn open_upstream_stream(&self, session: &Arc<Session>) -> Result<(), Response> {
        let inject = self.injection().await.map_err(|code| refused(self, &Value::Null, &Refusal::new(&code)))?;
        match session.upstream.open_stream(&session.link, inject.as_ref().map(|i| &i.header), None).await {
            Ok(resp) => {
                tokio::spawn(self.clone().relay_upstream_stream(Arc::downgrade(session), resp));
                Ok(())
            }
            Err(UpstreamError::Status(405)) => Err((StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST, DELETE")]).into_response()),
            Err(e) => {
                let e = self.scrub_error(inject.as_ref(), "GET", e);
                Err(http_error(
                    StatusCode::BAD_GATEWAY,
                    &Value::Null,
                    code::UPSTREAM_ERROR,
                    &e.to_string(),
                    Some(json!({"reason": e.reason()})),
                ))
            }
        }
    }

    /// Reads the upstream's stream event by event into the session's pump; when it closes,
    /// opens it again with `Last-Event-ID` (after the `retry` it last gave, 1 s by default),
    /// so nothing the upstream kept for the session is lost. Gives up after 5 failed opens in
    /// a row; the client's next `GET` tries again.
    async fn relay_upstream_stream(self, session: std::sync::Weak<Session>, first: reqwest::Response) {
        let mut next = Some(first);
        let mut last_id: Option<String> = None;
        let mut retry = std::time::Duration::from_secs(1);
        let mut failures = 0u32;
        let max = self.gw.cfg.max_message_bytes;
        loop {
            let Some((ended, tx)) = session.upgrade().map(|s| (s.ended.clone(), s.unsolicited.clone())) else { return };
            let resp = match next.take() {
                Some(r) => r,
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = ended.cancelled() => return,
                    }
                    let Some(s) = session.upgrade() else { return };
                    let inject = self.injection().await.ok().flatten();
                    match s.upstream.open_stream(&s.link, inject.as_ref().map(|i| &i.header), last_id.as_deref()).await {
                        Ok(r) => {
                            failures = 0;
                            r
                        }
                        Err(_) => {
                            failures += 1;
                            if failures >= 5 {
                                s.upstream_stream.store(false, Ordering::SeqCst);
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            let mut body = resp.bytes_stream();
            let mut buf: Vec<u8> = Vec::new();
            loop {
                let chunk = tokio::select! {
                    c = body.next() => c,
                    _ = ended.cancelled() => return,
                };
                let Some(Ok(chunk)) = chunk else { break };
                buf.extend_from_slice(&chunk);
                while let Some((end, whole)) = event_end(&buf) {
                    let text = String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned();
                    buf.drain(..whole);
                    for line in text.lines() {
                        if let Some(id) = line.strip_prefix("id:") {
                            last_id = Some(id.trim().to_owned());
                        } else if let Some(ms) = line.strip_prefix("retry:").and_then(|v| v.trim().parse::<u64>().ok()) {
                            retry = std::time::Duration::from_millis(ms.clamp(100, 60_000));
                        }
                    }
                    let data = sse_data(&text);
                    if let Ok(v) = serde_json::from_str::<Value>(&data)
                        && tx.send(v).await.is_err()
                    {
                        return;
                    }
                }
                if buf.len() > max {
                    // An event larger than any message may be: what is held is dropped, never
                    // passed on unchecked, and the stream is opened again.
                    tracing::warn!(upstream = %self.upstream.cfg.name, "an event of the upstream's stream is too large; reopening it");
                    break;
                }
            }
        }
    }

    /// One request on a link: the method decides what happens.
    async fn request(&self, session: &Arc<Session>, id: &Value, method: &str, params: Option<Map<String, Value>>) -> Response {
        match method {
            "ping" => self.answer(jsonrpc::result(id, json!({}))),
            "initialize" => self.answer(jsonrpc::error(id, code::INVALID_REQUEST, "the session is already initialised", None)),
            "server/discover" => self.answer(jsonrpc::result(id, as_discover_result(&session.described))),
            "tools/list" => self.list(session, id, method, params, "tools", "name").await,
            "prompts/list" => self.list(session, id, method, params, "prompts", "name").await,
            "resources/list" => self.list(session, id, method, params, "resources", "uri").await,
            "resources/templates/list" => self.list(session, id, method, params, "resourceTemplates", "uriTemplate").await,
            m if DECIDED.contains(&m) => self.decided(CallLink::Open(session.clone()), id, method, params).await,
            "resources/unsubscribe" => self.unsubscribe(session, id, params).await,
            "tasks/get" | "tasks/result" | "tasks/cancel" | "tasks/list" => self.task_request(session, id, method, params).await,
            m if PASS.contains(&m) => match self.forward(session, id, method, params.as_ref(), About::default()).await {
                Ok((reply, _)) => self.answer(with_id(reply.message, id, self.stateless)),
                Err(e) => self.answer(upstream_error(id, &e)),
            },
            other => self.answer(jsonrpc::error(
                id,
                code::METHOD_NOT_FOUND,
                &format!("method `{}` is not available through the gateway", mandate_core::clip(other)),
                Some(json!({"reason": "method_not_allowed"})),
            )),
        }
    }

    /// `resources/unsubscribe`: forwarded only for a subscription this session holds (the
    /// upstream never hears of one it was not asked for); otherwise answered here, as done.
    async fn unsubscribe(&self, session: &Arc<Session>, id: &Value, params: Option<Map<String, Value>>) -> Response {
        let uri = params.as_ref().and_then(|p| p.get("uri")).and_then(Value::as_str).map(uri::normalize);
        let uri = match uri {
            Some(Ok(u)) => u,
            Some(Err(e)) => return self.answer(jsonrpc::error(id, code::INVALID_PARAMS, &e.0, Some(json!({"reason": UriError::CODE})))),
            None => {
                return self.answer(jsonrpc::error(
                    id,
                    code::INVALID_PARAMS,
                    "`params.uri` is required",
                    Some(json!({"reason": "invalid_params"})),
                ));
            }
        };
        if !session.subscriptions.lock().remove(&uri) {
            return self.answer(jsonrpc::result(id, json!({})));
        }
        let mut forward = Map::new();
        forward.insert("uri".into(), json!(uri));
        match self.forward(session, id, "resources/unsubscribe", Some(&forward), About::default()).await {
            Ok((reply, _)) => self.answer(with_id(reply.message, id, self.stateless)),
            Err(e) => self.answer(upstream_error(id, &e)),
        }
    }

    /// `tasks/*`: a task the upstream runs is bound to the Mandate task whose call created it.
    /// `get`, `result` and `cancel` pass only for such a task (any other id is answered as
    /// unknown, whether or not it exists); `list` shows only the task's own.
    async fn task_request(&self, session: &Arc<Session>, id: &Value, method: &str, params: Option<Map<String, Value>>) -> Response {
        let own = |task: &str| self.upstream.task_owner(task).as_deref() == Some(self.mandate.claims().task_id.as_str());
        if method != "tasks/list" {
            let task = params.as_ref().and_then(|p| p.get("taskId")).and_then(Value::as_str);
            if !task.is_some_and(own) {
                return self.answer(jsonrpc::error(id, code::INVALID_PARAMS, "no such task", Some(json!({"reason": "task_not_found"}))));
            }
        }
        let (reply, _) = match self.forward(session, id, method, params.as_ref(), About::default()).await {
            Ok(r) => r,
            Err(e) => return self.answer(upstream_error(id, &e)),
        };
        let mut message = reply.message;
        if method == "tasks/list"
            && let Some(Value::Array(tasks)) = message.get_mut("result").and_then(|r| r.get_mut("tasks"))
        {
            tasks.retain(|t| t.get("taskId").and_then(Value::as_str).is_some_and(own));
        }
        self.answer(with_id(message, id, self.stateless))
    }

    /// Forwards the client's request `client_id` upstream with the brokered secret. Returns
    /// the reply and the secret that went with it (name, version) for the evidence. While it is
    /// on its way, a session's request is in [`Session::in_flight`] (a client may cancel it),
    /// and what the upstream sends before its answer goes to the client's stream of it.
    async fn forward(
        &self,
        session: &Arc<Session>,
        client_id: &Value,
        method: &str,
        params: Option<&Map<String, Value>>,
        about: About<'_>,
    ) -> Result<(Reply, Option<(String, u32)>), UpstreamError> {
        let inject = self.injection().await.map_err(|c| UpstreamError::credential(&c))?;
        let mut params = match &session.link {
            Link::Stateless => Some(stateless_meta(params, &session.client)),
            // A session upstream: the per-request revision keys of a 2026-07-28 client would
            // contradict the session's negotiated version.
            _ => params.map(without_stateless_meta),
        };
        let used = inject.as_ref().map(|i| (i.secret.clone(), i.version));
        let upstream_id = self.upstream.next_id();
        // The client's progress token, replaced by the request's own id upstream: unique on a
        // link several clients share, and how a process's progress finds its request.
        let client_progress = params.as_mut().and_then(|p| swap_progress_token(p, &upstream_id));
        let cancel = CancellationToken::new();
        // Stateless clients cancel by closing the stream, and the ids of several clients sharing
        // a task's link could collide: only sessions keep the map.
        let key = (!self.stateless).then_some(client_id);
        let mut in_flight = InFlight::new(session.clone(), key, &upstream_id, cancel.clone());
        let (raw_tx, mut raw_rx) = mpsc::channel(SIDE_CAPACITY);
        let send =
            self.upstream.send_as(&upstream_id, &session.link, method, params.as_ref(), inject.as_ref().map(|i| &i.header), Some(raw_tx));
        tokio::pin!(send);
        let relayed = Relayed {
            to: To::Request(self.side.as_ref()),
            progress: client_progress.as_ref().map(|c| (&upstream_id, c)),
            within: about.tool.map(|t| Within { tool: t.to_owned(), decision_id: about.decision_id.map(str::to_owned) }),
            inject: inject.as_ref(),
        };
        // The upstream's silence is bounded, not the request: each message it sends starts the
        // timeout again, and so does waiting for the client to answer one of its questions.
        let timeout = self.upstream.cfg.timeout;
        let mut deadline = tokio::time::Instant::now() + timeout;
        let sent = loop {
            tokio::select! {
                biased;
                Some(m) = raw_rx.recv() => {
                    self.outbound(session, m, &relayed).await;
                    deadline = tokio::time::Instant::now() + timeout;
                }
                r = &mut send => break r,
                _ = cancel.cancelled() => break Err(UpstreamError::Cancelled),
                _ = tokio::time::sleep_until(deadline) => {
                    if !session.server_requests.waiting(ANSWER_WAIT) {
                        break Err(UpstreamError::Timeout(timeout));
                    }
                    deadline = tokio::time::Instant::now() + timeout;
                }
            }
        };
        while let Ok(m) = raw_rx.try_recv() {
            self.outbound(session, m, &relayed).await;
        }
        in_flight.answered = !matches!(sent, Err(UpstreamError::Timeout(_)));
        drop(in_flight);
        let Some(i) = &inject else { return sent.map(|r| (r, used)) };
        // The whole answer, error or result, is scrubbed before anything reads it.
        let mut found = Found::default();
        let (sent, place) = match sent {
            Ok(mut reply) => {
                i.scrubber.value(&mut reply.message, &mut found);
                let place = if reply.message.get("error").is_some() { "error" } else { "result" };
                (Ok(reply), place)
            }
            Err(e) => (Err(e.scrubbed(&i.scrubber, &mut found)), "error"),
        };
        self.echo(i, method, &about, place, &found);
        sent.map(|r| (r, used))
    }

    /// An upstream's description of itself (or why it could not be had), scrubbed.
    fn scrub_opened(
        &self,
        inject: Option<&Injected>,
        method: &str,
        opened: Result<(Link, Value), UpstreamError>,
    ) -> Result<(Link, Value), UpstreamError> {
        let Some(i) = inject else { return opened };
        let mut found = Found::default();
        let out = match opened {
            Ok((link, mut described)) => {
                i.scrubber.value(&mut described, &mut found);
                Ok((link, described))
            }
            Err(e) => Err(e.scrubbed(&i.scrubber, &mut found)),
        };
        let place = if out.is_ok() { "description" } else { "error" };
        self.echo(i, method, &About::default(), place, &found);
        out
    }

    /// An upstream error, scrubbed.
    fn scrub_error(&self, inject: Option<&Injected>, method: &str, e: UpstreamError) -> UpstreamError {
        let Some(i) = inject else { return e };
        let mut found = Found::default();
        let e = e.scrubbed(&i.scrubber, &mut found);
        self.echo(i, method, &About::default(), "error", &found);
        e
    }

    fn echo(&self, i: &Injected, method: &str, about: &About<'_>, place: &str, found: &Found) {
        let echo = EchoRecord {
            mandate: Some(&self.mandate),
            upstream: &self.upstream.cfg.name,
            protocol: "mcp",
            method,
            tool: about.tool,
            decision_id: about.decision_id,
            receipt: about.receipt,
            request_id: self.request_id.as_deref(),
            secret: (&i.secret, i.version),
            place,
        };
        self.gw.echo_redacted(&echo, found);
    }

    /// A client notification inside a session: relayed only if MCP defines it for a client of
    /// the session's revision; a cancel only for a request of this session still on its way,
    /// under the id the upstream knows it by.
    async fn notification(&self, session: &Session, method: &str, params: Option<Map<String, Value>>) -> Response {
        if method == "notifications/initialized" {
            // The gateway completed the upstream's handshake itself when it opened the link; a
            // second `initialized` would be a protocol error upstream.
            return StatusCode::ACCEPTED.into_response();
        }
        if !client_notification(&session.client_protocol, method) {
            return notification_not_allowed(method);
        }
        let mut params = params;
        // The request ends here at once; the upstream hears of it under its own id.
        let target = (method == "notifications/cancelled")
            .then(|| params.as_ref().and_then(|p| p.get("requestId")).and_then(|id| session.cancel(id)))
            .flatten();
        // A 2026-07-28 upstream over HTTP takes no client notifications (a cancel there is the
        // closing of the request's stream, which ending the request just did).
        if matches!(session.link, Link::Stateless) {
            return StatusCode::ACCEPTED.into_response();
        }
        if method == "notifications/cancelled" {
            // A request this session did not send, or that has its answer: the upstream never
            // hears of it.
            let (Some(upstream_id), Some(p)) = (target, params.as_mut()) else {
                return StatusCode::ACCEPTED.into_response();
            };
            p.insert("requestId".into(), upstream_id);
        }
        let params = params.as_ref().map(without_stateless_meta);
        let inject = self.injection().await.ok().flatten();
        let _ = self.upstream.notify(&session.link, method, params.as_ref(), inject.as_ref().map(|i| &i.header)).await;
        StatusCode::ACCEPTED.into_response()
    }

    async fn injection(&self) -> Result<Option<Injected>, String> {
        self.gw.injection(&self.upstream.cfg, Some(&self.mandate.claims().task_id)).await
    }

    /// A list method: forwarded, then every item the agent could not use is removed, decided
    /// by one batch evaluation.
    async fn list(
        &self,
        session: &Arc<Session>,
        id: &Value,
        method: &str,
        params: Option<Map<String, Value>>,
        field: &str,
        key: &str,
    ) -> Response {
        let (reply, _) = match self.forward(session, id, method, params.as_ref(), About::default()).await {
            Ok(r) => r,
            Err(e) => return self.answer(upstream_error(id, &e)),
        };
        let mut message = reply.message;
        let Some(items) = message.get_mut("result").and_then(|r| r.get_mut(field)).and_then(Value::as_array_mut) else {
            if message.get("error").is_some() {
                return self.answer(with_id(message, id, self.stateless));
            }
            return self.answer(upstream_error(id, &UpstreamError::Garbage(format!("`{method}` result has no `{field}` array"))));
        };
        let taken: Vec<Value> = std::mem::take(items);
        let mut asks = Vec::with_capacity(taken.len());
        let mut keep = Vec::with_capacity(taken.len());
        for item in taken {
            let Some(name) = item.get(key).and_then(Value::as_str).map(str::to_owned) else { continue };
            if field == "tools" && is_reserved_tool_name(&name) {
                // Its action would be a method's: never offered.
                continue;
            }
            if field == "tools" {
                let ann = item.get("annotations");
                let hint = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_bool);
                self.upstream.annotations.lock().insert(name.clone(), (hint("readOnlyHint"), hint("destructiveHint")));
            }
            // A listed resource is decided on its normalized URI, as a read of it would be;
            // one that has none could not be read, so it is not listed.
            let name = match field {
                "resources" => match uri::normalize(&name) {
                    Ok(n) => n,
                    Err(_) => continue,
                },
                _ => name,
            };
            let target = Target::of(&self.upstream, method_for_list(method), &name);
            asks.push(target);
            keep.push(item);
        }
        let requests = asks.iter().map(|t| self.ask(t, None)).collect::<Vec<_>>();
        let environment = self.environment();
        let answers = if requests.is_empty() {
            Vec::new()
        } else {
            self.gw.control.decide(&requests, environment.as_deref(), self.request_id.as_deref()).await
        };
        let visible: Vec<Value> = keep
            .into_iter()
            .zip(asks.iter())
            .enumerate()
            .filter_map(|(i, (item, t))| {
                let o = answers.get(i)?;
                o.visible(t.policy.approval).then_some(item)
            })
            .collect();
        if let Some(Value::Object(r)) = message.get_mut("result") {
            r.insert(field.to_owned(), Value::Array(visible));
            if self.stateless {
                // The list is filtered for this mandate: no shared cache may keep it.
                r.insert("cacheScope".into(), json!("private"));
                r.entry("ttlMs").or_insert_with(|| json!(0));
            }
        }
        self.answer(with_id(message, id, self.stateless))
    }

    /// `tools/call`, `prompts/get`, `resources/read`: decided, then forwarded or refused, and
    /// recorded either way.
    async fn decided(&self, link: CallLink, id: &Value, method: &str, params: Option<Map<String, Value>>) -> Response {
        if let Some(resp) = self.reserved_tool(id, method, params.as_ref()) {
            return resp;
        }
        let d = match self.decide_call(id, method, params.as_ref()).await {
            Ok(d) => d,
            Err(resp) => return resp,
        };
        if !d.outcome.allowed {
            self.gw.control.record(d.record(self, false, "denied", None, 0, None));
            return self.answer(jsonrpc::error(id, code::DENIED, &d.outcome.message(), Some(d.outcome.error_data())));
        }
        let session = match link {
            CallLink::Open(s) => s,
            CallLink::Shared(client) => match self.shared_link(client).await {
                Ok(s) => {
                    s.touch();
                    s
                }
                Err(e) => {
                    self.gw.control.record(d.record(self, false, e.reason(), None, 0, None));
                    return self.answer(upstream_error(id, &e));
                }
            },
        };
        let session = &session;
        let about = About { tool: Some(&d.name), decision_id: d.outcome.decision_id.as_deref(), receipt: d.outcome.receipt.as_deref() };
        match self.forward(session, id, method, Some(&d.forward), about).await {
            Ok((reply, secret)) => {
                let (result, status) = match (reply.message.get("error"), reply.message.get("result")) {
                    (Some(e), _) => ("jsonrpc_error", e.get("code").and_then(Value::as_i64)),
                    (None, Some(r)) if r.get("isError").and_then(Value::as_bool) == Some(true) => ("tool_error", None),
                    _ => ("ok", None),
                };
                self.gw.control.record(d.record(self, true, result, status, reply.bytes, secret.as_ref().map(|(n, v)| (n.as_str(), *v))));
                if result == "ok" {
                    match method {
                        "resources/subscribe" => {
                            session.subscriptions.lock().insert(d.name.clone());
                        }
                        // A task the upstream runs for this call belongs to the call's task.
                        "tools/call" => {
                            if let Some(t) = reply.message.pointer("/result/task/taskId").and_then(Value::as_str) {
                                self.upstream.bind_task(t, &self.mandate.claims().task_id);
                            }
                        }
                        _ => {}
                    }
                }
                self.answer(with_id(reply.message, id, self.stateless))
            }
            Err(e) => {
                let status = match &e {
                    UpstreamError::Status(s) => Some(i64::from(*s)),
                    _ => None,
                };
                // Without its credential the request never left the gateway.
                let forwarded = !matches!(e, UpstreamError::Credential(_));
                self.gw.control.record(d.record(self, forwarded, e.reason(), status, 0, None));
                if matches!(e, UpstreamError::SessionGone)
                    && let Some(s) = self.gw.sessions.remove(&session.id)
                {
                    self.gw.end_session(s).await;
                }
                self.answer(upstream_error(id, &e))
            }
        }
    }

    /// A call made with a mandate whose task or agent may no longer act: decided (the
    /// control plane records why it is refused) and never forwarded.
    async fn refused_call(&self, id: &Value, method: &str, params: Option<Map<String, Value>>, gate: &Refusal) -> Response {
        if let Some(resp) = self.reserved_tool(id, method, params.as_ref()) {
            return resp;
        }
        let mut d = match self.decide_call(id, method, params.as_ref()).await {
            Ok(d) => d,
            Err(resp) => return resp,
        };
        if d.outcome.allowed {
            // The gate saw the revocation first; it wins.
            d.outcome.allowed = false;
            d.outcome.reason = gate.reason.clone();
        }
        self.gw.control.record(d.record(self, false, "denied", None, 0, None));
        self.answer(jsonrpc::error(id, code::DENIED, &d.outcome.message(), Some(d.outcome.error_data())))
    }

    /// Parses the call once into its canonical form (the normalized resource URI, the
    /// arguments in RFC 8785 form), decides on that, and keeps the params that will be
    /// forwarded: exactly what was decided, nothing else.
    async fn decide_call(&self, id: &Value, method: &str, params: Option<&Map<String, Value>>) -> Result<Decided, Response> {
        let started = Instant::now();
        let invalid =
            |message: &str, reason: &str| self.answer(jsonrpc::error(id, code::INVALID_PARAMS, message, Some(json!({ "reason": reason }))));
        let wire: &'static str = DECIDED.iter().find(|m| **m == method).copied().unwrap_or("tools/call");
        if wire == "completion/complete" {
            return self.decide_completion(id, params, started).await;
        }
        let name_key = if matches!(wire, "resources/read" | "resources/subscribe") { "uri" } else { "name" };
        let Some(raw_name) = params.and_then(|p| p.get(name_key)).and_then(Value::as_str) else {
            return Err(invalid(&format!("`params.{name_key}` is required"), "invalid_params"));
        };
        let name =
            if name_key == "uri" { uri::normalize(raw_name).map_err(|e| invalid(&e.0, UriError::CODE))? } else { raw_name.to_owned() };
        let sent = params.and_then(|p| p.get("arguments"));
        let arguments = sent.cloned().unwrap_or_else(|| json!({}));
        if !arguments.is_object() {
            return Err(invalid("`params.arguments` must be an object", "invalid_params"));
        }
        let arguments = Canonical::new(&arguments, Limits::ARGUMENTS).map_err(|e| invalid(&e.to_string(), e.code()))?.into_value();
        let forward = forwarded_params(wire, name_key, &name, (name_key != "uri").then_some(&arguments), params);
        // A subscription is decided as a read of the resource: it delivers what a read would.
        let target = Target::of(&self.upstream, if wire == "resources/subscribe" { "resources/read" } else { wire }, &name);
        let environment = self.environment();
        let outcome = self
            .gw
            .decide_one(&self.ask(&target, Some(&arguments)), environment.as_deref(), self.request_id.as_deref(), target.policy.approval)
            .await;
        Ok(Decided { started, method: wire, name, arguments, forward, target, outcome })
    }

    /// `completion/complete`, decided as a read of what it completes: `UPSTREAM.prompts.get`
    /// of the prompt, or `UPSTREAM.resources.read` of the resource (its normalized URI; a URI
    /// template, which no read could name, as written). What is forwarded is rebuilt from the
    /// members MCP defines, checked: the reference, the argument, its context.
    async fn decide_completion(&self, id: &Value, params: Option<&Map<String, Value>>, started: Instant) -> Result<Decided, Response> {
        let invalid =
            |message: &str| self.answer(jsonrpc::error(id, code::INVALID_PARAMS, message, Some(json!({ "reason": "invalid_params" }))));
        let reference = params.and_then(|p| p.get("ref")).and_then(Value::as_object).ok_or_else(|| invalid("`params.ref` is required"))?;
        let (policy_method, name, reference) = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let n = reference.get("name").and_then(Value::as_str).ok_or_else(|| invalid("`params.ref.name` is required"))?;
                ("prompts/get", n.to_owned(), json!({"type": "ref/prompt", "name": n}))
            }
            Some("ref/resource") => {
                let raw = reference.get("uri").and_then(Value::as_str).ok_or_else(|| invalid("`params.ref.uri` is required"))?;
                let uri = match uri::normalize(raw) {
                    Ok(u) => u,
                    Err(_) if raw.contains('{') && raw.len() <= uri::MAX_URI_BYTES => raw.to_owned(),
                    Err(e) => {
                        return Err(self.answer(jsonrpc::error(id, code::INVALID_PARAMS, &e.0, Some(json!({"reason": UriError::CODE})))));
                    }
                };
                ("resources/read", uri.clone(), json!({"type": "ref/resource", "uri": uri}))
            }
            _ => return Err(invalid("`params.ref.type` must be `ref/prompt` or `ref/resource`")),
        };
        let argument = params.and_then(|p| p.get("argument")).and_then(Value::as_object);
        let (Some(arg_name), Some(arg_value)) =
            (argument.and_then(|a| a.get("name")).and_then(Value::as_str), argument.and_then(|a| a.get("value")).and_then(Value::as_str))
        else {
            return Err(invalid("`params.argument` must have a string `name` and `value`"));
        };
        let mut forward = Map::new();
        forward.insert("ref".into(), reference);
        forward.insert("argument".into(), json!({"name": arg_name, "value": arg_value}));
        if let Some(context) = params.and_then(|p| p.get("context")) {
            let arguments = context.get("arguments").and_then(Value::as_object);
            if !context.is_object() || !arguments.is_none_or(|a| a.values().all(Value::is_string)) {
                return Err(invalid("`params.context.arguments` must map names to strings"));
            }
            if let Some(a) = arguments {
                forward.insert("context".into(), json!({"arguments": a}));
            }
        }
        if let Some(meta) = kept_meta(params) {
            forward.insert("_meta".into(), meta);
        }
        let target = Target::of(&self.upstream, policy_method, &name);
        let environment = self.environment();
        let outcome = self.gw.decide_one(&self.ask(&target, None), environment.as_deref(), self.request_id.as_deref(), false).await;
        Ok(Decided { started, method: "completion/complete", name, arguments: json!({}), forward, target, outcome })
    }

    /// A `tools/call` of a name the gateway keeps for a method (`resources.read`, …): it would
    /// be decided as that method's action, so it is refused before any decision, and recorded.
    fn reserved_tool(&self, id: &Value, method: &str, params: Option<&Map<String, Value>>) -> Option<Response> {
        let name = params.and_then(|p| p.get("name")).and_then(Value::as_str).filter(|n| is_reserved_tool_name(n))?;
        if method != "tools/call" {
            return None;
        }
        let started = Instant::now();
        let outcome = Outcome::refused("tool_name_reserved");
        let arguments = params.and_then(|p| p.get("arguments")).filter(|a| a.is_object());
        let action = format!("{}.{name}", self.upstream.cfg.name);
        let event = CallRecord {
            mandate: Some(&self.mandate),
            upstream: &self.upstream.cfg.name,
            protocol: "mcp",
            method: "tools/call",
            tool: name,
            action: &action,
            kind: ActionKind::Execute,
            outcome: &outcome,
            forwarded: false,
            result: "denied",
            status: None,
            arguments,
            log_arguments: false,
            redact: &[],
            latency_us: started.elapsed().as_micros() as u64,
            response_bytes: 0,
            secret: None,
            request_id: self.request_id.as_deref(),
            request_sha256: None,
        }
        .event(now_ms());
        self.gw.control.record(event);
        let message = format!("tool `{}` has a name the gateway keeps for an MCP method: refused", mandate_core::clip(name));
        Some(self.answer(jsonrpc::error(id, code::DENIED, &message, Some(outcome.error_data()))))
    }

    fn environment(&self) -> Option<String> {
        self.gw.cfg.environment.clone().or_else(|| self.gw.control.environment())
    }

    fn ask<'b>(&'b self, t: &'b Target, arguments: Option<&'b Value>) -> Ask<'b> {
        let mut context = Map::new();
        context.insert("protocol".into(), json!("mcp"));
        context.insert("method".into(), json!(t.method));
        context.insert(t.context_key.into(), json!(t.name));
        Ask {
            token: &self.token,
            mandate: &self.mandate,
            upstream: &self.upstream.cfg.name,
            action: &t.action,
            kind: t.kind,
            classification: t.policy.classification,
            resource: t.resource.clone(),
            context,
            arguments,
        }
    }

    /// The answer in the form the client accepts: JSON, or one SSE event.
    fn answer(&self, message: Value) -> Response {
        json_or_sse(self.accepts_json, &message)
    }
}

/// The params of a decided call as they go upstream: the name (the normalized URI for a
/// resource), the canonical arguments, and of `_meta` only the progress token and the
/// protocol's own keys. Any other member the client added is not part of what was decided,
/// so it is not forwarded.
fn forwarded_params(
    method: &str,
    name_key: &str,
    name: &str,
    arguments: Option<&Value>,
    params: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(name_key.to_owned(), json!(name));
    if let Some(a) = arguments
        && (method == "tools/call" || params.is_some_and(|p| p.contains_key("arguments")))
    {
        out.insert("arguments".into(), a.clone());
    }
    if let Some(meta) = kept_meta(params) {
        out.insert("_meta".into(), meta);
    }
    if method == "tools/call"
        && let Some(p) = params
    {
        // Protocol members of a call, not its content: run it as a task (2025-11-25), and a
        // 2026-07-28 retry's answers to what the server asked and the state it gave back.
        for key in ["task", "inputResponses", "requestState"] {
            if let Some(v) = p.get(key).filter(|v| v.is_object() || (key == "requestState" && v.is_string())) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    out
}

/// Of `_meta`, only the progress token and the protocol's own keys.
fn kept_meta(params: Option<&Map<String, Value>>) -> Option<Value> {
    let Some(Value::Object(meta)) = params.and_then(|p| p.get("_meta")) else { return None };
    let kept: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| *k == "progressToken" || k.starts_with("io.modelcontextprotocol/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// What an upstream's answer was to, for the evidence of a redaction.
#[derive(Default)]
struct About<'a> {
    tool: Option<&'a str>,
    decision_id: Option<&'a str>,
    receipt: Option<&'a str>,
}

/// Where an allowed call goes: a session already open, or the task's shared link, opened
/// only once the call is allowed.
enum CallLink {
    Open(Arc<Session>),
    Shared(ClientIdentity),
}

/// A call that was decided, with what its evidence needs.
struct Decided {
    started: Instant,
    method: &'static str,
    name: String,
    /// The canonical arguments: decided, digested into the evidence, forwarded.
    arguments: Value,
    /// The params forwarded upstream.
    forward: Map<String, Value>,
    target: Target,
    outcome: Outcome,
}

impl Decided {
    fn record(
        &self,
        call: &Call,
        forwarded: bool,
        result: &str,
        status: Option<i64>,
        bytes: usize,
        secret: Option<(&str, u32)>,
    ) -> mandate_audit::NewEvent {
        CallRecord {
            mandate: Some(&call.mandate),
            upstream: &call.upstream.cfg.name,
            protocol: "mcp",
            method: self.method,
            tool: &self.name,
            action: &self.target.action,
            kind: self.target.kind,
            outcome: &self.outcome,
            forwarded,
            result,
            status,
            arguments: Some(&self.arguments),
            log_arguments: self.target.policy.log_arguments,
            redact: &self.target.policy.redact,
            latency_us: self.started.elapsed().as_micros() as u64,
            response_bytes: bytes,
            secret,
            request_id: call.request_id.as_deref(),
            request_sha256: None,
        }
        .event(now_ms())
    }
}

/// What a method on a name is, in policy terms.
struct Target {
    method: &'static str,
    name: String,
    action: String,
    kind: ActionKind,
    policy: ToolPolicy,
    resource: (String, String),
    context_key: &'static str,
}

impl Target {
    fn of(up: &McpUpstream, method: &str, name: &str) -> Target {
        let u = &up.cfg.name;
        if let Some((m, entry)) = SERVER_REQUESTS.iter().find(|(m, _)| *m == method) {
            // A request of the server's to the client: a read of what the client holds (its
            // model, its user, its roots) by the server, in the call `name`.
            let policy = up.cfg.tools.get(*entry).cloned().unwrap_or_else(read_default);
            let action = format!("{u}.{entry}");
            return Target {
                method: m,
                name: name.to_owned(),
                kind: policy.kind,
                policy,
                resource: ("server_request".into(), action.clone()),
                action,
                context_key: "tool",
            };
        }
        match method {
            // The configured kind counts as much as the classification: a prompt or resource
            // the operator made a write or an execute is decided as one.
            "prompts/get" => {
                let policy = up.cfg.tools.get("prompts.get").cloned().unwrap_or_else(read_default);
                Target {
                    method: "prompts/get",
                    name: name.to_owned(),
                    action: format!("{u}.prompts.get"),
                    kind: policy.kind,
                    policy,
                    resource: ("prompt".into(), name.to_owned()),
                    context_key: "prompt",
                }
            }
            "resources/read" => {
                let policy = up.cfg.tools.get("resources.read").cloned().unwrap_or_else(read_default);
                Target {
                    method: "resources/read",
                    name: name.to_owned(),
                    action: format!("{u}.resources.read"),
                    kind: policy.kind,
                    policy,
                    resource: ("mcp_resource".into(), name.to_owned()),
                    context_key: "uri",
                }
            }
            _ => {
                let policy = up.cfg.tools.get(name).cloned().unwrap_or_else(ToolPolicy::unknown);
                let (ro, de) = up.annotations.lock().get(name).copied().unwrap_or((None, None));
                let kind = authz::effective_kind(&policy, ro, de);
                let action = format!("{u}.{name}");
                Target {
                    method: "tools/call",
                    name: name.to_owned(),
                    resource: ("tool".into(), action.clone()),
                    action,
                    kind,
                    policy,
                    context_key: "tool",
                }
            }
        }
    }
}

/// Resources and prompts are reads; their classification is `restricted` unless configured
/// (`[upstream.tools."resources.read"]`, `[upstream.tools."prompts.get"]`).
fn read_default() -> ToolPolicy {
    ToolPolicy { kind: ActionKind::Read, classification: Classification::Restricted, ..ToolPolicy::unknown() }
}

/// The notifications MCP defines from client to server (besides `notifications/initialized`,
/// which the gateway answers itself): 2024-11-05 to 2025-11-25 cancel, report progress on a
/// server's request and announce changed roots; 2025-11-25 also reports the status of a task the
/// client runs; 2026-07-28 only cancels.
fn client_notification(protocol: &str, method: &str) -> bool {
    const SESSIONS: [&str; 3] = ["notifications/cancelled", "notifications/progress", "notifications/roots/list_changed"];
    match protocol {
        STATELESS => method == "notifications/cancelled",
        LEGACY => SESSIONS.contains(&method) || method == "notifications/tasks/status",
        _ => SESSIONS.contains(&method),
    }
}

/// A notification MCP does not define for a client: refused, never relayed.
fn notification_not_allowed(method: &str) -> Response {
    http_error(
        StatusCode::BAD_REQUEST,
        &Value::Null,
        code::METHOD_NOT_FOUND,
        &format!("notification `{}` is not one a client may send", mandate_core::clip(method)),
        Some(json!({"reason": "notification_not_allowed"})),
    )
}

/// A request on its way upstream, in [`Session::in_flight`] (under the client's id, for a
/// session) until dropped: answered, failed, or abandoned by a client that went away. One that
/// ends without its answer (the client went away, the gateway gave up waiting) is cancelled
/// upstream, as a direct client's transport would, unless the client cancelled it itself.
struct InFlight {
    session: Arc<Session>,
    key: Option<String>,
    upstream_id: Value,
    cancel: CancellationToken,
    answered: bool,
}

impl InFlight {
    fn new(session: Arc<Session>, client_id: Option<&Value>, upstream_id: &Value, cancel: CancellationToken) -> Self {
        let key = client_id.map(Value::to_string);
        if let Some(k) = &key {
            session.in_flight.lock().insert(k.clone(), (upstream_id.clone(), cancel.clone()));
        }
        InFlight { session, key, upstream_id: upstream_id.clone(), cancel, answered: false }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(k) = &self.key {
            let mut map = self.session.in_flight.lock();
            // A client reusing an id while the first is on its way: the later one owns the entry.
            if map.get(k).map(|(id, _)| id) == Some(&self.upstream_id) {
                map.remove(k);
            }
        }
        // Over stateless HTTP the dropped connection is the cancel.
        if self.answered || self.cancel.is_cancelled() || matches!(self.session.link, Link::Stateless) {
            return;
        }
        let session = self.session.clone();
        let params = json!({ "requestId": self.upstream_id, "reason": "the client went away" });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = session.upstream.notify(&session.link, "notifications/cancelled", params.as_object(), None).await;
            });
        }
    }
}

/// Where a message the upstream sent goes.
enum To<'a> {
    /// The client's stream of the request it came during (`None`: the client takes JSON only).
    Request(Option<&'a mpsc::UnboundedSender<Value>>),
    /// The session's stream.
    Session,
}

/// What a message from the upstream is relayed with.
struct Relayed<'a> {
    to: To<'a>,
    /// (the token sent upstream, the client's own) for the request's progress.
    progress: Option<(&'a Value, &'a Value)>,
    /// The call it happened in.
    within: Option<Within>,
    inject: Option<&'a Injected>,
}

/// Replaces the client's `_meta.progressToken` with `ours`; returns the client's.
fn swap_progress_token(params: &mut Map<String, Value>, ours: &Value) -> Option<Value> {
    let meta = params.get_mut("_meta")?.as_object_mut()?;
    let theirs = meta.get("progressToken").filter(|t| t.is_string() || t.is_i64() || t.is_u64())?.clone();
    meta.insert("progressToken".into(), ours.clone());
    Some(theirs)
}

/// Whether the client takes an event stream for its request.
fn accepts_sse(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"))
}

fn method_for_list(list: &str) -> &'static str {
    match list {
        "prompts/list" => "prompts/get",
        "resources/list" | "resources/templates/list" => "resources/read",
        _ => "tools/call",
    }
}

/// The bearer, verified into a mandate. A bad credential is a 401 with a challenge. A good
/// one whose task or agent may no longer act comes back with its refusal: a tool call made
/// with it is still decided (and recorded); anything else is refused with the reason.
async fn authenticate(gw: &Gateway, headers: &HeaderMap, name: &str) -> Result<(String, Arc<VerifiedMandate>, Option<Refusal>), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(unauthorized(name, &Refusal::new("mandate_required")));
    };
    match gw.control.check_mandate(token).await {
        Ok(m) => Ok((token.to_owned(), m, None)),
        Err(r) if r.is_credential() => Err(unauthorized(name, &r)),
        Err(r) => match r.mandate.clone() {
            Some(m) => Ok((token.to_owned(), m, Some(r))),
            None => Err(refusal_response(headers, &Value::Null, &r)),
        },
    }
}

/// A refusal as a JSON-RPC error for a request (SDKs show the reason), a 403 otherwise.
fn refusal_response(headers: &HeaderMap, id: &Value, r: &Refusal) -> Response {
    let mut data = json!({ "reason": r.reason });
    if let (Some(c), Value::Object(m)) = (&r.error_code, &mut data) {
        m.insert("error_code".into(), json!(c));
    }
    let message = format!("denied: {}", r.reason);
    if id.is_null() {
        let status = if r.reason == "control_plane_unavailable" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::FORBIDDEN };
        return http_error(status, id, code::DENIED, &message, Some(data));
    }
    json_or_sse(accepts_json(headers), &jsonrpc::error(id, code::DENIED, &message, Some(data)))
}

fn unauthorized(name: &str, r: &Refusal) -> Response {
    let mut data = json!({ "reason": r.reason });
    if let (Some(c), Value::Object(m)) = (&r.error_code, &mut data) {
        m.insert("error_code".into(), json!(c));
    }
    let challenge = match r.reason.as_str() {
        "mandate_required" => format!("Bearer resource_metadata=\"/.well-known/oauth-protected-resource/mcp/{name}\""),
        _ => format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\", resource_metadata=\"/.well-known/oauth-protected-resource/mcp/{name}\"",
            r.error_code.as_deref().unwrap_or(&r.reason)
        ),
    };
    let message = match r.reason.as_str() {
        "mandate_required" => "a mandate is required: send `Authorization: Bearer <mandate>`".to_owned(),
        _ => format!("the mandate is not valid ({})", r.error_code.as_deref().unwrap_or(&r.reason)),
    };
    let mut resp = http_error(StatusCode::UNAUTHORIZED, &Value::Null, code::DENIED, &message, Some(data));
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// A refusal after authentication (the upstream's credential is not available, …).
fn refused(call: &Call, id: &Value, r: &Refusal) -> Response {
    let data = json!({ "reason": r.reason });
    if id.is_null() {
        return http_error(StatusCode::SERVICE_UNAVAILABLE, id, code::UPSTREAM_ERROR, &format!("refused: {}", r.reason), Some(data));
    }
    call.answer(jsonrpc::error(id, code::UPSTREAM_ERROR, &format!("refused: {}", r.reason), Some(data)))
}

#[allow(clippy::result_large_err, reason = "the error is the response itself, built once and returned at once")]
fn session_of(call: &Call, headers: &HeaderMap, id: &Value) -> Result<Arc<Session>, Response> {
    let Some(sid) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return Err(http_error(
            StatusCode::BAD_REQUEST,
            id,
            code::INVALID_REQUEST,
            "`Mcp-Session-Id` is required: send `initialize` first (2025-11-25), or `MCP-Protocol-Version: 2026-07-28` for stateless requests",
            None,
        ));
    };
    match call.gw.sessions.get(sid) {
        Some(s)
            if s.upstream.cfg.name == call.upstream.cfg.name
                && s.task_id == call.mandate.claims().task_id
                && !sid.starts_with("shared:") =>
        {
            Ok(s)
        }
        // Another task's session, or none: the same answer, so ids cannot be probed.
        _ => Err(http_error(StatusCode::NOT_FOUND, id, code::SESSION_NOT_FOUND, "no such session: initialise again", None)),
    }
}

fn is_stateless(headers: &HeaderMap, m: &Message) -> bool {
    let header_says = headers.get("mcp-protocol-version").and_then(|v| v.to_str().ok()).is_some_and(|v| v >= STATELESS);
    let meta_says = match m {
        Message::Request { params, .. } | Message::Notification { params, .. } => {
            jsonrpc::meta_protocol(params.as_ref()).is_some_and(|v| v >= STATELESS)
        }
        Message::Response(_) => false,
    };
    (header_says || meta_says) && !matches!(m, Message::Request { method, .. } if method == "initialize")
}

/// In 2026-07-28 the routing headers must agree with the body (a gateway may route on them).
fn check_routing_headers(headers: &HeaderMap, m: &Message) -> Option<Response> {
    let (id, method, params) = match m {
        Message::Request { id, method, params } => (id.clone(), method.as_str(), params.as_ref()),
        Message::Notification { method, params } => (Value::Null, method.as_str(), params.as_ref()),
        Message::Response(_) => return None,
    };
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    if let Some(hm) = h("mcp-method")
        && hm != method
    {
        return Some(http_error(
            StatusCode::BAD_REQUEST,
            &id,
            code::HEADER_MISMATCH,
            "`Mcp-Method` does not match the body's method",
            None,
        ));
    }
    if let (Some(hn), Some(body_name)) = (h("mcp-name"), jsonrpc::routing_name(method, params)) {
        let decoded = hn
            .strip_prefix("=?base64?")
            .and_then(|s| s.strip_suffix("?="))
            .and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b).ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| hn.to_owned());
        if decoded != body_name {
            return Some(http_error(StatusCode::BAD_REQUEST, &id, code::HEADER_MISMATCH, "`Mcp-Name` does not match the body", None));
        }
    }
    None
}

/// The upstream named in the path, for a request whose `Origin` is acceptable.
fn upstream_for(gw: &Gateway, name: &str, headers: &HeaderMap) -> Result<Arc<McpUpstream>, Box<Response>> {
    let Some(upstream) = gw.mcp.get(name).cloned() else {
        let message = format!("no MCP upstream `{}`", mandate_core::clip(name));
        return Err(Box::new(http_error(StatusCode::NOT_FOUND, &Value::Null, code::METHOD_NOT_FOUND, &message, None)));
    };
    match check_origin(gw, headers) {
        Some(resp) => Err(Box::new(resp)),
        None => Ok(upstream),
    }
}

/// MCP requires validating `Origin` (DNS rebinding): absent is fine (not a browser),
/// loopback and configured origins are accepted, anything else is 403.
fn check_origin(gw: &Gateway, headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok().unwrap_or("").trim_end_matches('/').to_ascii_lowercase();
    let loopback = url::Url::parse(&origin)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| h == "localhost" || h == "127.0.0.1" || h == "[::1]");
    if loopback || gw.cfg.allowed_origins.iter().any(|o| o == &origin) {
        return None;
    }
    Some(http_error(StatusCode::FORBIDDEN, &Value::Null, code::INVALID_REQUEST, "this `Origin` is not allowed", None))
}

fn json_or_sse(json: bool, message: &Value) -> Response {
    let body = serde_json::to_vec(message).unwrap_or_default();
    if json {
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let mut event = b"event: message\ndata: ".to_vec();
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Bytes::from(event)).into_response()
}

fn accepts_json(headers: &HeaderMap) -> bool {
    match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(a) => a.contains("application/json") || a.contains("*/*") || !a.contains("text/event-stream"),
    }
}

/// `params` without the `io.modelcontextprotocol/*` keys of `_meta` (other `_meta` keys,
/// such as `progressToken`, stay).
fn without_stateless_meta(params: &Map<String, Value>) -> Map<String, Value> {
    let mut p = params.clone();
    if let Some(Value::Object(meta)) = p.get_mut("_meta") {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            p.remove("_meta");
        }
    }
    p
}

/// Puts the client's id back on an upstream answer; stateless clients get `resultType`.
fn with_id(mut message: Value, id: &Value, stateless: bool) -> Value {
    if let Value::Object(m) = &mut message {
        m.insert("id".into(), id.clone());
        if stateless && let Some(Value::Object(r)) = m.get_mut("result") {
            r.entry("resultType").or_insert_with(|| json!("complete"));
        }
    }
    message
}

fn upstream_error(id: &Value, e: &UpstreamError) -> Value {
    jsonrpc::error(id, code::UPSTREAM_ERROR, &e.to_string(), Some(json!({ "reason": e.reason() })))
}

fn http_error(status: StatusCode, id: &Value, c: i64, message: &str, data: Option<Value>) -> Response {
    let body = jsonrpc::error(id, c, message, data);
    (status, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&body).unwrap_or_default()).into_response()
}

/// Of the upstream's capabilities, those the gateway serves, and no more: a client trusts what
/// it is told. Tools, prompts and resources (with `listChanged`, and `subscribe`), logging,
/// completions, and tasks (`list`, `cancel`, and task-run `tools/call`). `experimental` and
/// anything the gateway does not know are left out: it would refuse their methods.
fn served_capabilities(upstream: Option<&Value>) -> Value {
    const FLAGS: [(&str, &[&str]); 6] = [
        ("tools", &["listChanged"]),
        ("prompts", &["listChanged"]),
        ("resources", &["listChanged", "subscribe"]),
        ("logging", &[]),
        ("completions", &[]),
        ("tasks", &["list", "cancel"]),
    ];
    let mut out = Map::new();
    let Some(Value::Object(caps)) = upstream else { return Value::Object(out) };
    for (name, flags) in FLAGS {
        let Some(Value::Object(c)) = caps.get(name) else { continue };
        let mut kept: Map<String, Value> =
            c.iter().filter(|(k, _)| flags.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        if name == "tasks" && c.get("requests").and_then(|r| r.pointer("/tools/call")).is_some() {
            kept.insert("requests".into(), json!({"tools": {"call": {}}}));
        }
        out.insert(name.to_owned(), Value::Object(kept));
    }
    Value::Object(out)
}

/// Of a client's capabilities, those the gateway relays to an upstream: roots, sampling and
/// elicitation (the requests it relays back, each decided).
pub(crate) fn relayed_client_capabilities(client: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(caps) = client {
        for name in ["roots", "sampling", "elicitation"] {
            if let Some(c) = caps.get(name).filter(|c| c.is_object()) {
                out.insert(name.to_owned(), c.clone());
            }
        }
    }
    Value::Object(out)
}

/// The upstream's self-description as an `InitializeResult` for a 2025-11-25 client.
fn as_initialize_result(described: &Value, protocol: &str) -> Value {
    let server_info = described
        .get("serverInfo")
        .cloned()
        .or_else(|| described.get("_meta").and_then(|m| m.get(META_SERVER_INFO)).cloned())
        .unwrap_or_else(|| json!({ "name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION") }));
    let mut r = json!({
        "protocolVersion": protocol,
        "capabilities": served_capabilities(described.get("capabilities")),
        "serverInfo": server_info,
    });
    if let (Some(i), Value::Object(m)) = (described.get("instructions"), &mut r) {
        m.insert("instructions".into(), i.clone());
    }
    r
}

/// The upstream's self-description as a `DiscoverResult` for a 2026-07-28 client.
fn as_discover_result(described: &Value) -> Value {
    let server_info = described
        .get("serverInfo")
        .cloned()
        .or_else(|| described.get("_meta").and_then(|m| m.get(META_SERVER_INFO)).cloned())
        .unwrap_or_else(|| json!({ "name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION") }));
    // What the gateway answers depends on who asks (it filters per mandate): never cached
    // across authorization contexts.
    let mut r = json!({
        "resultType": "complete",
        "supportedVersions": SUPPORTED,
        "capabilities": served_capabilities(described.get("capabilities")),
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": { META_SERVER_INFO: server_info },
    });
    if let (Some(i), Value::Object(m)) = (described.get("instructions"), &mut r) {
        m.insert("instructions".into(), i.clone());
    }
    r
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_client_notifications_of_the_revision_pass() {
        for p in ["2024-11-05", "2025-03-26", "2025-06-18", LEGACY] {
            for m in ["notifications/cancelled", "notifications/progress", "notifications/roots/list_changed"] {
                assert!(client_notification(p, m), "{p} {m}");
            }
            for m in ["notifications/message", "notifications/tools/list_changed", "notifications/resources/updated", "custom/thing", ""] {
                assert!(!client_notification(p, m), "{p} {m}");
            }
        }
        assert!(client_notification(LEGACY, "notifications/tasks/status"));
        assert!(!client_notification("2025-06-18", "notifications/tasks/status"));
        assert!(client_notification(STATELESS, "notifications/cancelled"));
        assert!(!client_notification(STATELESS, "notifications/progress"));
        assert!(!client_notification(STATELESS, "notifications/roots/list_changed"));
    }
}
