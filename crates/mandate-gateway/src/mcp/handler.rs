//! `/mcp/{name}`: the MCP endpoint clients talk to. The order of checks, top to bottom:
//!
//! 1. the upstream exists, the `Origin` is acceptable, the body fits and is one message;
//! 2. the bearer is a mandate that verifies, whose task is live and agent active;
//! 3. the client's revision: `initialize` opens a session (2025-11-25); a request carrying
//!    2026-07-28 in `MCP-Protocol-Version` or `_meta` is stateless (its routing headers must
//!    agree with the body); anything else needs a session of the same task;
//! 4. the method: lists are filtered by one batch decision; calls, reads and prompt fetches
//!    are decided one by one; pings pass, and the notifications MCP defines for clients (a
//!    cancel under the upstream's id of the request); any other method or notification is
//!    refused.
//!
//! Nothing reaches the upstream that was not allowed, and the agent's mandate never does.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
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
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{self, LEGACY, META_CLIENT_CAPS, META_CLIENT_INFO, META_SERVER_INFO, Message, STATELESS, SUPPORTED, code};
use super::upstream::{ClientIdentity, Link, McpUpstream, Reply, UpstreamError, stateless_meta};
use super::uri::{self, UriError};
use crate::authz::{self, Ask, CallRecord, EchoRecord, Outcome};
use crate::config::{ToolPolicy, is_reserved_tool_name};
use crate::control::Refusal;
use crate::gateway::{Gateway, Injected, Session, now_ms, shared_key};
use crate::scrub::{Found, SseScrubber};

/// Methods that pass without a decision (after the mandate check).
const PASS: [&str; 2] = ["ping", "logging/setLevel"];
/// Methods decided one call at a time.
const DECIDED: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

/// The state of one request on its way through.
struct Call<'a> {
    gw: &'a Gateway,
    upstream: Arc<McpUpstream>,
    token: String,
    mandate: Arc<VerifiedMandate>,
    stateless: bool,
    accepts_json: bool,
    request_id: Option<String>,
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
    let call = Call {
        gw: &gw,
        upstream,
        token,
        mandate,
        stateless,
        accepts_json: accepts_json(&headers),
        request_id: headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned),
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
    if stateless {
        return call.stateless(message).await;
    }
    match message {
        Message::Request { id, method, params } if method == "initialize" => call.initialize(&id, params).await,
        message => {
            let session = match session_of(&call, &headers, &id) {
                Ok(s) => s,
                Err(resp) => return resp,
            };
            session.touch();
            call.in_session(&session, message).await
        }
    }
}

/// `GET /mcp/{name}`: the session's stream of server messages (2025-11-25), relayed from the
/// upstream; ends when the session does. 405 where the upstream has none to offer.
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
    let call = Call { gw: &gw, upstream, token, mandate, stateless: false, accepts_json: false, request_id: None };
    let session = match session_of(&call, &headers, &Value::Null) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if !matches!(session.link, Link::Legacy { .. }) {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST, DELETE")]).into_response();
    }
    let inject = match gw.injection(&session.upstream.cfg, Some(&session.task_id)).await {
        Ok(i) => i,
        Err(code) => return refused(&call, &Value::Null, &Refusal::new(&code)),
    };
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let resp = match session.upstream.open_stream(&session.link, inject.as_ref().map(|i| &i.header), last).await {
        Ok(r) => r,
        Err(UpstreamError::Status(405)) => return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "POST, DELETE")]).into_response(),
        Err(e) => {
            let e = call.scrub_error(inject.as_ref(), "GET", e);
            return http_error(
                StatusCode::BAD_GATEWAY,
                &Value::Null,
                code::UPSTREAM_ERROR,
                &e.to_string(),
                Some(json!({"reason": e.reason()})),
            );
        }
    };
    let ended: CancellationToken = session.ended.clone();
    let stream = Box::pin(resp.bytes_stream().take_until(ended.cancelled_owned()));
    let body = match inject {
        None => Body::from_stream(stream.map(|c| c.map_err(std::io::Error::other))),
        Some(i) => {
            let echo = StreamEcho {
                gw: gw.clone(),
                mandate: call.mandate.clone(),
                upstream: session.upstream.cfg.name.clone(),
                secret: i.secret.clone(),
                version: i.version,
            };
            let sse = SseScrubber::new(i.scrubber.clone(), gw.cfg.max_message_bytes);
            Body::from_stream(scrubbed_stream(stream, sse, echo))
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Who a relayed stream belongs to, for the evidence of what is redacted from it.
struct StreamEcho {
    gw: Arc<Gateway>,
    mandate: Arc<VerifiedMandate>,
    upstream: String,
    secret: String,
    version: u32,
}

impl StreamEcho {
    fn record(&self, found: &[Found]) {
        for f in found {
            let echo = EchoRecord {
                mandate: Some(&self.mandate),
                upstream: &self.upstream,
                protocol: "mcp",
                method: "GET",
                tool: None,
                decision_id: None,
                receipt: None,
                request_id: None,
                secret: (&self.secret, self.version),
                place: "stream",
            };
            self.gw.echo_redacted(&echo, f);
        }
    }
}

/// The upstream's GET stream, event by event, with the injected secret redacted from each
/// (one `secret.echo_redacted` event for each event that held it). An event larger than
/// the message limit ends the stream.
fn scrubbed_stream<S>(inner: S, sse: SseScrubber, echo: StreamEcho) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>
where
    S: futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin + Send + 'static,
{
    futures_util::stream::unfold(Some((inner, sse, echo)), |state| async move {
        let (mut inner, mut sse, echo) = state?;
        loop {
            match inner.next().await {
                Some(Ok(chunk)) => {
                    let mut found = Vec::new();
                    let pushed = sse.push(&chunk, &mut found);
                    echo.record(&found);
                    match pushed {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Some((Ok(Bytes::from(out)), Some((inner, sse, echo)))),
                        Err(_) => return Some((Err(std::io::Error::other("an event of the upstream's stream is too large")), None)),
                    }
                }
                // What is held is an unfinished event: never passed on unchecked.
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), None)),
                None => {
                    let mut found = Vec::new();
                    let out = sse.finish(&mut found);
                    echo.record(&found);
                    return (!out.is_empty()).then(|| (Ok(Bytes::from(out)), None));
                }
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
    let call = Call { gw: &gw, upstream, token, mandate, stateless: false, accepts_json: true, request_id: None };
    let session = match session_of(&call, &headers, &Value::Null) {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if let Some(s) = gw.sessions.remove(&session.id) {
        gw.end_session(s).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

impl Call<'_> {
    /// `initialize`: opens a session and its upstream link.
    async fn initialize(&self, id: &Value, params: Option<Map<String, Value>>) -> Response {
        let p = params.unwrap_or_default();
        let client = ClientIdentity {
            info: p.get("clientInfo").cloned().unwrap_or_else(|| ClientIdentity::default().info),
            capabilities: p.get("capabilities").cloned().unwrap_or_else(|| json!({})),
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
        let session = Arc::new(Session {
            id: random_id(),
            upstream: self.upstream.clone(),
            task_id: self.mandate.claims().task_id.clone(),
            agent: self.mandate.claims().agent.clone(),
            client,
            client_protocol: protocol.clone(),
            link,
            described: described.clone(),
            last_used_ms: AtomicI64::new(now_ms()),
            ended: CancellationToken::new(),
            in_flight: Default::default(),
        });
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
            Message::Response(v) => {
                if matches!(session.link, Link::Legacy { .. }) {
                    let inject = self.injection().await.ok().flatten();
                    let _ = self.upstream.forward_raw(&session.link, "response", &v, inject.as_ref().map(|i| &i.header)).await;
                }
                StatusCode::ACCEPTED.into_response()
            }
        }
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
                .cloned()
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
        let s = Arc::new(Session {
            id: key,
            upstream: self.upstream.clone(),
            task_id: self.mandate.claims().task_id.clone(),
            agent: self.mandate.claims().agent.clone(),
            client,
            client_protocol: STATELESS.to_owned(),
            link,
            described,
            last_used_ms: AtomicI64::new(now_ms()),
            ended: CancellationToken::new(),
            in_flight: Default::default(),
        });
        self.gw.sessions.insert(s.clone());
        Ok(s)
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
            "tools/call" | "prompts/get" | "resources/read" => self.decided(CallLink::Open(session.clone()), id, method, params).await,
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

    /// Forwards the client's request `client_id` upstream with the brokered secret. Returns
    /// the reply and the secret that went with it (name, version) for the evidence. While it is
    /// on its way, a session's request is in [`Session::in_flight`] (a client may cancel it).
    async fn forward(
        &self,
        session: &Session,
        client_id: &Value,
        method: &str,
        params: Option<&Map<String, Value>>,
        about: About<'_>,
    ) -> Result<(Reply, Option<(String, u32)>), UpstreamError> {
        let inject = self.injection().await.map_err(|c| UpstreamError::credential(&c))?;
        let params = match &session.link {
            Link::Stateless => Some(stateless_meta(params, &session.client)),
            // A session upstream: the per-request revision keys of a 2026-07-28 client would
            // contradict the session's negotiated version.
            _ => params.map(without_stateless_meta),
        };
        let used = inject.as_ref().map(|i| (i.secret.clone(), i.version));
        let upstream_id = self.upstream.next_id();
        // Stateless clients cannot cancel (their notification is not relayed), and the ids of
        // several clients sharing a task's link could collide: only sessions keep the map.
        let _in_flight = (!self.stateless).then(|| InFlight::new(session, client_id, &upstream_id));
        let sent = self.upstream.send_as(&upstream_id, &session.link, method, params.as_ref(), inject.as_ref().map(|i| &i.header)).await;
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
        // A 2026-07-28 upstream over HTTP takes no client notifications (a cancel there is the
        // closing of the request's stream).
        if matches!(session.link, Link::Stateless) {
            return StatusCode::ACCEPTED.into_response();
        }
        let mut params = params;
        if method == "notifications/cancelled" {
            let target = params.as_ref().and_then(|p| p.get("requestId")).and_then(|id| session.upstream_id_of(id));
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
        let name_key = if method == "resources/read" { "uri" } else { "name" };
        let Some(raw_name) = params.and_then(|p| p.get(name_key)).and_then(Value::as_str) else {
            return Err(invalid(&format!("`params.{name_key}` is required"), "invalid_params"));
        };
        let name = if method == "resources/read" {
            uri::normalize(raw_name).map_err(|e| invalid(&e.0, UriError::CODE))?
        } else {
            raw_name.to_owned()
        };
        let sent = params.and_then(|p| p.get("arguments"));
        let arguments = sent.cloned().unwrap_or_else(|| json!({}));
        if !arguments.is_object() {
            return Err(invalid("`params.arguments` must be an object", "invalid_params"));
        }
        let arguments = Canonical::new(&arguments, Limits::ARGUMENTS).map_err(|e| invalid(&e.to_string(), e.code()))?.into_value();
        let forward = forwarded_params(method, name_key, &name, (method != "resources/read").then_some(&arguments), params);
        let target = Target::of(&self.upstream, method, &name);
        let environment = self.environment();
        let outcome = self
            .gw
            .decide_one(&self.ask(&target, Some(&arguments)), environment.as_deref(), self.request_id.as_deref(), target.policy.approval)
            .await;
        Ok(Decided { started, method: target.method, name, arguments, forward, target, outcome })
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
    if let Some(Value::Object(meta)) = params.and_then(|p| p.get("_meta")) {
        let kept: Map<String, Value> = meta
            .iter()
            .filter(|(k, _)| *k == "progressToken" || k.starts_with("io.modelcontextprotocol/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            out.insert("_meta".into(), Value::Object(kept));
        }
    }
    out
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
        call: &Call<'_>,
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

/// A session's request on its way upstream, in [`Session::in_flight`] until dropped (answered,
/// failed, or abandoned by a client that went away).
struct InFlight<'a> {
    session: &'a Session,
    key: String,
    upstream_id: Value,
}

impl<'a> InFlight<'a> {
    fn new(session: &'a Session, client_id: &Value, upstream_id: &Value) -> Self {
        let key = client_id.to_string();
        session.in_flight.lock().insert(key.clone(), upstream_id.clone());
        InFlight { session, key, upstream_id: upstream_id.clone() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self.session.in_flight.lock();
        // A client reusing an id while the first is on its way: the later one owns the entry.
        if map.get(&self.key) == Some(&self.upstream_id) {
            map.remove(&self.key);
        }
    }
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
fn refused(call: &Call<'_>, id: &Value, r: &Refusal) -> Response {
    let data = json!({ "reason": r.reason });
    if id.is_null() {
        return http_error(StatusCode::SERVICE_UNAVAILABLE, id, code::UPSTREAM_ERROR, &format!("refused: {}", r.reason), Some(data));
    }
    call.answer(jsonrpc::error(id, code::UPSTREAM_ERROR, &format!("refused: {}", r.reason), Some(data)))
}

#[allow(clippy::result_large_err, reason = "the error is the response itself, built once and returned at once")]
fn session_of(call: &Call<'_>, headers: &HeaderMap, id: &Value) -> Result<Arc<Session>, Response> {
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

/// The upstream's self-description as an `InitializeResult` for a 2025-11-25 client.
fn as_initialize_result(described: &Value, protocol: &str) -> Value {
    let server_info = described
        .get("serverInfo")
        .cloned()
        .or_else(|| described.get("_meta").and_then(|m| m.get(META_SERVER_INFO)).cloned())
        .unwrap_or_else(|| json!({ "name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION") }));
    let mut r = json!({
        "protocolVersion": protocol,
        "capabilities": described.get("capabilities").cloned().unwrap_or_else(|| json!({})),
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
        "capabilities": described.get("capabilities").cloned().unwrap_or_else(|| json!({})),
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
