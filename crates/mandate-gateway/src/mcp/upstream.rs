//! Talking to an MCP upstream in the revision it speaks: streamable HTTP with sessions
//! (2025-11-25), stateless streamable HTTP (2026-07-28), or stdio (a child process the
//! gateway spawns, one per session).
//!
//! Every upstream request gets an id of the gateway's own, so answers can never be confused
//! between clients sharing a link; the client's id is put back on the way out. Reads are
//! bounded in size and time: a slow, dead or babbling upstream is an [`UpstreamError`].

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use super::jsonrpc::{self, LEGACY, META_CLIENT_CAPS, META_CLIENT_INFO, META_PROTOCOL, STATELESS};
use crate::config::{ProtocolChoice, Target, Upstream};
use crate::scrub::{Found, Scrubber};

/// How long the rest of an event stream is read after its answer, so that the connection can
/// go back to the pool: servers end a request's stream right after the answer, but the end
/// may come a little later (a server without `TCP_NODELAY` waits for our delayed ACK, ~40 ms).
const DRAIN_WINDOW: Duration = Duration::from_millis(250);
/// At most this many streams are drained at once; past it (a server that keeps request
/// streams open), a stream is dropped and its connection closed, as before.
const MAX_DRAINING: usize = 256;
static DRAINING: AtomicUsize = AtomicUsize::new(0);

/// What went wrong talking to an upstream. `reason()` is the stable code clients see.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream cannot be reached: {0}")]
    Unreachable(String),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the upstream answered HTTP {0}")]
    Status(u16),
    #[error("the upstream's answer is not MCP: {0}")]
    Garbage(String),
    #[error("the upstream's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the upstream session ended")]
    SessionGone,
    /// The brokered credential could not be had (its stable code): nothing was sent.
    #[error("the upstream's credential is not available ({0})")]
    Credential(&'static str),
    /// The client cancelled the request on its way; the upstream was told.
    #[error("the request was cancelled")]
    Cancelled,
}

impl UpstreamError {
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "upstream_unreachable",
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Status(_) => "upstream_status",
            UpstreamError::Garbage(_) => "upstream_bad_response",
            UpstreamError::TooLarge(_) => "upstream_too_large",
            UpstreamError::SessionGone => "upstream_session_gone",
            UpstreamError::Credential(code) => code,
            UpstreamError::Cancelled => "cancelled",
        }
    }

    /// The error with every match of `scrubber` replaced in its text (an upstream's error
    /// message is quoted in it).
    pub fn scrubbed(self, scrubber: &Scrubber, found: &mut Found) -> Self {
        match self {
            UpstreamError::Unreachable(mut m) => {
                scrubber.text(&mut m, found);
                UpstreamError::Unreachable(m)
            }
            UpstreamError::Garbage(mut m) => {
                scrubber.text(&mut m, found);
                UpstreamError::Garbage(m)
            }
            other => other,
        }
    }

    /// The error for a brokered secret that could not be opened, from the control plane's code.
    pub fn credential(code: &str) -> Self {
        const CODES: [&str; 6] =
            ["secret_not_found", "secret_unavailable", "secret_undecryptable", "secret_unusable", "secret_empty", "invalid_master_key"];
        UpstreamError::Credential(
            CODES
                .into_iter()
                .chain(crate::control::LEASE_CODES)
                .chain(crate::control::GATEWAY_CODES)
                .find(|c| *c == code)
                .unwrap_or("secret_unavailable"),
        )
    }
}

/// The revision an HTTP upstream speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    Legacy,
    Stateless,
}

/// A connection to one upstream for one session: what is needed to send it a message.
pub enum Link {
    /// Streamable HTTP with a session (`Mcp-Session-Id` may be absent if the server assigns none).
    Legacy { session: Option<String>, protocol: String },
    /// Stateless streamable HTTP: every request stands alone.
    Stateless,
    /// A child process speaking JSON lines.
    Stdio(Arc<StdioProcess>),
}

/// Who the client is, for upstreams that need to be told (`initialize`, `_meta`).
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    pub info: Value,
    pub capabilities: Value,
}

impl Default for ClientIdentity {
    fn default() -> Self {
        ClientIdentity { info: json!({ "name": "mandate-gateway", "version": env!("CARGO_PKG_VERSION") }), capabilities: json!({}) }
    }
}

/// Runtime state of one configured MCP upstream.
pub struct McpUpstream {
    pub cfg: Upstream,
    http: reqwest::Client,
    max_bytes: usize,
    revision: Mutex<Option<Revision>>,
    next_id: AtomicI64,
    /// The annotations each tool had in the last `tools/list`: (readOnlyHint, destructiveHint).
    pub annotations: Mutex<HashMap<String, Hints>>,
    /// The tasks the upstream runs (`taskId`), by the Mandate task whose call created each.
    tasks: Mutex<HashMap<String, String>>,
}

/// Upstream tasks remembered at most; past it they are all forgotten (their results
/// can then no longer be fetched through the gateway).
const MAX_TASKS: usize = 10_000;

/// A tool's `readOnlyHint` and `destructiveHint`, as the upstream last listed them.
pub type Hints = (Option<bool>, Option<bool>);

/// Where the messages an upstream sends while a request is on its way go (its progress, log
/// messages, and requests of its own to the client): raw, as the upstream wrote them; the
/// handler translates, decides and scrubs each before the client sees it. Bounded: a process
/// that says more than its reader takes has the excess dropped (notifications) or refused
/// (its requests), and an HTTP stream is read no faster than it is relayed.
pub type Side = mpsc::Sender<Value>;

/// Messages waiting on a [`Side`] at most.
pub const SIDE_CAPACITY: usize = 256;

/// A request waiting for a stdio upstream's answer, by the gateway's id.
struct Waiting {
    answer: oneshot::Sender<(Value, usize)>,
    side: Option<Side>,
    /// The order requests were sent in.
    seq: u64,
}

type Pending = Arc<Mutex<HashMap<String, Waiting>>>;

/// A reply: the upstream's answer to one request, with our id replaced by the client's.
pub struct Reply {
    pub message: Value,
    pub bytes: usize,
}

impl McpUpstream {
    pub fn new(cfg: Upstream, http: reqwest::Client, max_bytes: usize) -> Self {
        let revision = match &cfg.target {
            Target::McpHttp { protocol: ProtocolChoice::Legacy, .. } => Some(Revision::Legacy),
            Target::McpHttp { protocol: ProtocolChoice::Stateless, .. } => Some(Revision::Stateless),
            _ => None,
        };
        McpUpstream {
            cfg,
            http,
            max_bytes,
            revision: Mutex::new(revision),
            next_id: AtomicI64::new(1),
            annotations: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    /// Binds the upstream's task `task` to the Mandate task `owner`.
    pub fn bind_task(&self, task: &str, owner: &str) {
        let mut tasks = self.tasks.lock();
        if tasks.len() >= MAX_TASKS {
            tasks.clear();
        }
        // The first call to name a task owns it.
        tasks.entry(task.to_owned()).or_insert_with(|| owner.to_owned());
    }

    /// The Mandate task that owns the upstream's task `task`.
    pub fn task_owner(&self, task: &str) -> Option<String> {
        self.tasks.lock().get(task).cloned()
    }

    /// A fresh id of the gateway's own for a request to this upstream.
    pub fn next_id(&self) -> Value {
        json!(format!("mgw-{}", self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    fn url(&self) -> Option<&str> {
        match &self.cfg.target {
            Target::McpHttp { url, .. } => Some(url),
            _ => None,
        }
    }

    /// Opens a link and returns it with the upstream's description of itself (an
    /// `InitializeResult` for legacy links, a `DiscoverResult` for stateless ones).
    pub async fn open(&self, client: &ClientIdentity, inject: Option<&(HeaderName, HeaderValue)>) -> Result<(Link, Value), UpstreamError> {
        match &self.cfg.target {
            Target::McpStdio { command, env } => {
                let proc = StdioProcess::spawn(&self.cfg.name, command, env, self.max_bytes)?;
                let link = Link::Stdio(proc);
                let init = self.initialize(&link, client, inject).await?;
                Ok((link, init))
            }
            Target::McpHttp { .. } => {
                let known = *self.revision.lock();
                match known {
                    Some(Revision::Stateless) => Ok((Link::Stateless, self.discover(client, inject).await?)),
                    Some(Revision::Legacy) => {
                        let link = Link::Legacy { session: None, protocol: LEGACY.to_owned() };
                        let (link, init) = self.initialize_http(link, client, inject).await?;
                        Ok((link, init))
                    }
                    None => match self.discover(client, inject).await {
                        Ok(d) if d.get("supportedVersions").and_then(Value::as_array).is_some_and(|v| v.iter().any(|x| x == STATELESS)) => {
                            *self.revision.lock() = Some(Revision::Stateless);
                            Ok((Link::Stateless, d))
                        }
                        Err(e @ (UpstreamError::Unreachable(_) | UpstreamError::Timeout(_))) => Err(e),
                        _ => {
                            let link = Link::Legacy { session: None, protocol: LEGACY.to_owned() };
                            let out = self.initialize_http(link, client, inject).await?;
                            *self.revision.lock() = Some(Revision::Legacy);
                            Ok(out)
                        }
                    },
                }
            }
            Target::Http { .. } => Err(UpstreamError::Garbage("not an MCP upstream".into())),
        }
    }

    async fn discover(&self, client: &ClientIdentity, inject: Option<&(HeaderName, HeaderValue)>) -> Result<Value, UpstreamError> {
        let reply = self.send(&Link::Stateless, "server/discover", Some(&stateless_meta(None, client)), inject).await?;
        result_of(reply.message)
    }

    async fn initialize_http(
        &self,
        link: Link,
        client: &ClientIdentity,
        inject: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<(Link, Value), UpstreamError> {
        let params = json!({ "protocolVersion": LEGACY, "capabilities": client.capabilities, "clientInfo": client.info });
        let id = self.next_id();
        let msg = jsonrpc::request(&id, "initialize", params.as_object());
        let url = self.url().unwrap_or_default().to_owned();
        let (session, messages, _) = self.post(&url, &link, "initialize", None, &msg, inject, Some(&id), None).await?;
        let reply = messages.into_iter().next().ok_or_else(|| UpstreamError::Garbage("no answer to `initialize`".into()))?;
        let init = result_of(reply)?;
        let protocol = init.get("protocolVersion").and_then(Value::as_str).unwrap_or(LEGACY).to_owned();
        let link = Link::Legacy { session, protocol };
        self.notify(&link, "notifications/initialized", None, inject).await?;
        Ok((link, init))
    }

    async fn initialize(
        &self,
        link: &Link,
        client: &ClientIdentity,
        inject: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<Value, UpstreamError> {
        let params = json!({ "protocolVersion": LEGACY, "capabilities": client.capabilities, "clientInfo": client.info });
        let reply = self.send(link, "initialize", params.as_object(), inject).await?;
        let init = result_of(reply.message)?;
        self.notify(link, "notifications/initialized", None, inject).await?;
        Ok(init)
    }

    /// Sends a request and waits for its answer (bounded by the upstream's timeout).
    pub async fn send(
        &self,
        link: &Link,
        method: &str,
        params: Option<&Map<String, Value>>,
        inject: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<Reply, UpstreamError> {
        self.send_as(&self.next_id(), link, method, params, inject, None).await
    }

    /// [`Self::send`] with an id from [`Self::next_id`] the caller already holds; what the
    /// upstream sends before its answer (on the request's stream, or for a process, what
    /// belongs to this request) goes to `side`. Without a side the whole request is bounded by
    /// the upstream's timeout; with one, the caller bounds the upstream's silence instead (a
    /// request that reports progress, or waits for the client's answer to a question, may
    /// take longer than the timeout and still be alive).
    pub async fn send_as(
        &self,
        id: &Value,
        link: &Link,
        method: &str,
        params: Option<&Map<String, Value>>,
        inject: Option<&(HeaderName, HeaderValue)>,
        side: Option<Side>,
    ) -> Result<Reply, UpstreamError> {
        let id = id.clone();
        let timeout = self.cfg.timeout;
        let streamed = side.is_some();
        let fut = async {
            match link {
                Link::Stdio(p) => p.request(&id, method, params, side).await,
                _ => {
                    let msg = jsonrpc::request(&id, method, params);
                    let url = self.url().unwrap_or_default().to_owned();
                    let (_, mut messages, bytes) = self.post(&url, link, method, params, &msg, inject, Some(&id), side).await?;
                    let message = messages.pop().ok_or_else(|| UpstreamError::Garbage(format!("no answer to `{method}`")))?;
                    Ok(Reply { message, bytes })
                }
            }
        };
        if streamed {
            return fut.await;
        }
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(timeout)),
        }
    }

    /// Sends a notification (or a client's response to a server request).
    pub async fn notify(
        &self,
        link: &Link,
        method: &str,
        params: Option<&Map<String, Value>>,
        inject: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<(), UpstreamError> {
        let msg = jsonrpc::notification(method, params);
        self.forward_raw(link, method, &msg, inject).await
    }

    /// Sends a message that expects no answer.
    pub async fn forward_raw(
        &self,
        link: &Link,
        method: &str,
        msg: &Value,
        inject: Option<&(HeaderName, HeaderValue)>,
    ) -> Result<(), UpstreamError> {
        let timeout = self.cfg.timeout;
        let fut = async {
            match link {
                Link::Stdio(p) => p.write(msg).await,
                _ => {
                    let url = self.url().unwrap_or_default().to_owned();
                    self.post(&url, link, method, None, msg, inject, None, None).await.map(|_| ())
                }
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(timeout)),
        }
    }

    /// Ends a link: `DELETE` for an HTTP session, kill for a process.
    pub async fn close(&self, link: &Link, inject: Option<&(HeaderName, HeaderValue)>) {
        match link {
            Link::Stdio(p) => p.kill(),
            Link::Legacy { session: Some(s), protocol } => {
                let Some(url) = self.url() else { return };
                let mut req = self.http.delete(url).header("mcp-session-id", s).header("mcp-protocol-version", protocol);
                if let Some((k, v)) = inject {
                    req = req.header(k, v);
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), req.send()).await;
            }
            _ => {}
        }
    }

    /// Opens the upstream's GET stream of a legacy session, for relaying to the client.
    pub async fn open_stream(
        &self,
        link: &Link,
        inject: Option<&(HeaderName, HeaderValue)>,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let (Link::Legacy { session, protocol }, Some(url)) = (link, self.url()) else {
            return Err(UpstreamError::Status(405));
        };
        let mut req = self.http.get(url).header("accept", "text/event-stream").header("mcp-protocol-version", protocol);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        if let Some((k, v)) = inject {
            req = req.header(k, v);
        }
        let resp = tokio::time::timeout(self.cfg.timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout(self.cfg.timeout))?
            .map_err(|e| UpstreamError::Unreachable(root_cause(&e)))?;
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()));
        }
        Ok(resp)
    }

    /// One POST. Returns the session id the server assigned (if any), the JSON-RPC messages
    /// that answer `want` (or none for a 202), and the bytes read; the other messages of the
    /// request's event stream go to `side`.
    #[allow(clippy::too_many_arguments)]
    async fn post(
        &self,
        url: &str,
        link: &Link,
        method: &str,
        params: Option<&Map<String, Value>>,
        msg: &Value,
        inject: Option<&(HeaderName, HeaderValue)>,
        want: Option<&Value>,
        side: Option<Side>,
    ) -> Result<(Option<String>, Vec<Value>, usize), UpstreamError> {
        let body = serde_json::to_vec(msg).map_err(|e| UpstreamError::Garbage(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("accept", HeaderValue::from_static("application/json, text/event-stream"));
        match link {
            Link::Legacy { session, protocol } => {
                if method != "initialize" {
                    if let Ok(v) = HeaderValue::from_str(protocol) {
                        headers.insert("mcp-protocol-version", v);
                    }
                    if let Some(s) = session.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
                        headers.insert("mcp-session-id", s);
                    }
                }
            }
            Link::Stateless => {
                headers.insert("mcp-protocol-version", HeaderValue::from_static(STATELESS));
                if let Ok(v) = HeaderValue::from_str(method) {
                    headers.insert("mcp-method", v);
                }
                if let Some(name) = jsonrpc::routing_name(method, params)
                    && let Some(v) = header_safe(name)
                {
                    headers.insert("mcp-name", v);
                }
            }
            Link::Stdio(_) => {}
        }
        if let Some((k, v)) = inject {
            headers.insert(k.clone(), v.clone());
        }
        let resp = self.http.post(url).headers(headers).body(body).send().await.map_err(|e| UpstreamError::Unreachable(root_cause(&e)))?;
        let status = resp.status().as_u16();
        let session = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        if status == 202 && want.is_none() {
            return Ok((session, Vec::new(), 0));
        }
        if status == 404 && matches!(link, Link::Legacy { session: Some(_), .. }) {
            return Err(UpstreamError::SessionGone);
        }
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        if !(200..300).contains(&status) {
            // A JSON-RPC error in a 4xx body is still an answer the client should see.
            if content_type.starts_with("application/json") && want.is_some() {
                let (bytes, n) = read_limited(resp, self.max_bytes).await?;
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                    && v.get("error").is_some()
                {
                    return Ok((session, vec![v], n));
                }
            }
            return Err(UpstreamError::Status(status));
        }
        let Some(want) = want else {
            return Ok((session, Vec::new(), 0));
        };
        if content_type.starts_with("text/event-stream") {
            let (msg, n) = read_sse_answer(resp, want, self.max_bytes, side.as_ref()).await?;
            Ok((session, vec![msg], n))
        } else if content_type.starts_with("application/json") {
            let (bytes, n) = read_limited(resp, self.max_bytes).await?;
            let v: Value = serde_json::from_slice(&bytes).map_err(|_| UpstreamError::Garbage("the body is not JSON".into()))?;
            let msg = match v {
                Value::Array(items) => items.into_iter().find(|m| m.get("id") == Some(want)),
                v => Some(v),
            }
            .ok_or_else(|| UpstreamError::Garbage("no answer with the request's id".into()))?;
            check_answer(&msg, want)?;
            Ok((session, vec![msg], n))
        } else {
            Err(UpstreamError::Garbage(format!("unexpected content type `{}`", mandate_core::clip(&content_type))))
        }
    }
}

/// `_meta` a stateless upstream needs on every request, merged into `params`.
pub fn stateless_meta(params: Option<&Map<String, Value>>, client: &ClientIdentity) -> Map<String, Value> {
    let mut p = params.cloned().unwrap_or_default();
    let meta = p.entry("_meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        m.entry(META_PROTOCOL).or_insert_with(|| json!(STATELESS));
        m.entry(META_CLIENT_INFO).or_insert_with(|| client.info.clone());
        m.entry(META_CLIENT_CAPS).or_insert_with(|| client.capabilities.clone());
    }
    p
}

fn header_safe(s: &str) -> Option<HeaderValue> {
    if s.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' ') && !s.starts_with(' ') && !s.ends_with(' ') {
        HeaderValue::from_str(s).ok()
    } else {
        use base64::Engine;
        HeaderValue::from_str(&format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(s))).ok()
    }
}

fn result_of(msg: Value) -> Result<Value, UpstreamError> {
    match msg.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(UpstreamError::Garbage(match msg.get("error").and_then(|e| e.get("message")).and_then(Value::as_str) {
            Some(m) => format!("the upstream refused: {}", mandate_core::clip(m)),
            None => "no result".into(),
        })),
    }
}

fn check_answer(msg: &Value, want: &Value) -> Result<(), UpstreamError> {
    if msg.get("id") != Some(want) || (msg.get("result").is_none() && msg.get("error").is_none()) {
        return Err(UpstreamError::Garbage("the answer is not a JSON-RPC response to the request".into()));
    }
    Ok(())
}

async fn read_limited(resp: reqwest::Response, max: usize) -> Result<(Vec<u8>, usize), UpstreamError> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UpstreamError::Unreachable(root_cause(&e)))?;
        if out.len() + chunk.len() > max {
            return Err(UpstreamError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    let n = out.len();
    Ok((out, n))
}

/// Reads an SSE response until the event that answers `want`; the stream may stay open
/// after it (servers keep per-request streams for notifications), so we stop there. Every
/// other message of the stream (progress, log messages, the server's own requests) goes to
/// `side`, in order; without one it is not relayed.
async fn read_sse_answer(resp: reqwest::Response, want: &Value, max: usize, side: Option<&Side>) -> Result<(Value, usize), UpstreamError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut stream = resp.bytes_stream();
    loop {
        // Complete events in the buffer first.
        while let Some(end) = event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end.1).collect();
            let text = String::from_utf8_lossy(event.get(..end.0).unwrap_or_default()).into_owned();
            let data = sse_data(&text);
            if data.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&data).map_err(|_| UpstreamError::Garbage("an event's data is not JSON".into()))?;
            if v.get("id") == Some(want) && (v.get("result").is_some() || v.get("error").is_some()) {
                drain_in_background(stream, max.saturating_sub(total));
                return Ok((v, total));
            }
            if let Some(side) = side
                && v.get("method").is_some()
            {
                let _ = side.send(v).await;
            }
        }
        match stream.next().await {
            Some(Ok(chunk)) => {
                total += chunk.len();
                if total > max {
                    return Err(UpstreamError::TooLarge(max));
                }
                buf.extend_from_slice(&chunk);
            }
            Some(Err(e)) => return Err(UpstreamError::Unreachable(root_cause(&e))),
            None => return Err(UpstreamError::Garbage("the event stream ended without an answer".into())),
        }
    }
}

/// Reads what is left of a stream whose answer was taken, apart from the request, so the
/// connection is reused once the server ends the stream instead of being closed now (a
/// dropped, unfinished body closes its connection: the next request would open a new one).
/// Bounded in time, bytes and number of streams at once.
fn drain_in_background<S>(mut stream: S, budget: usize)
where
    S: futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + Send + 'static,
{
    if DRAINING.fetch_add(1, Ordering::Relaxed) >= MAX_DRAINING {
        DRAINING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_WINDOW, async {
            let mut read = 0usize;
            while let Some(Ok(chunk)) = stream.next().await {
                read += chunk.len();
                if read > budget {
                    return;
                }
            }
        })
        .await;
        DRAINING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The end of the first complete event: (length without the separator, length with it).
pub(crate) fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        match (buf.get(i), buf.get(i + 1), buf.get(i + 2), buf.get(i + 3)) {
            (Some(b'\n'), Some(b'\n'), _, _) => return Some((i, i + 2)),
            (Some(b'\r'), Some(b'\n'), Some(b'\r'), Some(b'\n')) => return Some((i, i + 4)),
            (Some(b'\r'), Some(b'\r'), _, _) => return Some((i, i + 2)),
            _ => i += 1,
        }
    }
    None
}

/// The `data` of one event: its `data:` lines joined with newlines.
pub fn sse_data(event: &str) -> String {
    let mut out = String::new();
    for line in event.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    out
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    mandate_core::clip(&cur.to_string())
}

/// An MCP server the gateway spawned, speaking newline-delimited JSON on stdin/stdout.
pub struct StdioProcess {
    name: String,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next_seq: std::sync::atomic::AtomicU64,
    /// Where what the process says outside any request goes (the session's stream).
    unsolicited: Arc<Mutex<Option<Side>>>,
    child: Mutex<Option<Child>>,
    dead: Arc<AtomicBool>,
}

/// Messages of a process that belong to its session, not to a request.
const SESSION_NOTIFICATIONS: [&str; 5] = [
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/tasks/status",
];

/// Where a message a process wrote, that is not an answer, goes. A process has one pipe, so
/// what a message belongs to is read from it: a progress notification names its request by
/// its token (the gateway sends each request's token as the request's own id); a log message
/// or a request of the server's while requests are on their way belongs to the latest of them
/// (the one whose handler is running, for a server that serves one request at a time); list
/// changes, resource updates and anything said while nothing is on its way go to the session.
fn route(pending: &HashMap<String, Waiting>, msg: &Value) -> Option<Side> {
    let method = msg.get("method").and_then(Value::as_str)?;
    if SESSION_NOTIFICATIONS.contains(&method) {
        return None;
    }
    if method == "notifications/progress" {
        let token = msg.get("params").and_then(|p| p.get("progressToken"));
        let key = token.and_then(Value::as_str).map(str::to_owned).or_else(|| token.map(Value::to_string));
        return key.and_then(|k| pending.get(&k)).and_then(|w| w.side.clone());
    }
    pending.values().filter(|w| w.side.is_some()).max_by_key(|w| w.seq).and_then(|w| w.side.clone())
}

impl StdioProcess {
    fn spawn(
        name: &str,
        command: &[String],
        env: &std::collections::BTreeMap<String, String>,
        max_bytes: usize,
    ) -> Result<Arc<StdioProcess>, UpstreamError> {
        let (program, args) = command.split_first().ok_or_else(|| UpstreamError::Unreachable("empty command".into()))?;
        let mut cmd = Command::new(program);
        cmd.args(args).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // Nothing of the gateway's environment reaches the tool server (it may hold the
        // master key or API tokens), except what is needed to find programs.
        for key in ["PATH", "HOME", "LANG", "SYSTEMROOT"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
        cmd.envs(env);
        let mut child =
            cmd.spawn().map_err(|e| UpstreamError::Unreachable(format!("cannot start `{}`: {e}", mandate_core::clip(program))))?;
        let stdin = child.stdin.take().ok_or_else(|| UpstreamError::Unreachable("no stdin".into()))?;
        let stdout = child.stdout.take().ok_or_else(|| UpstreamError::Unreachable("no stdout".into()))?;
        let stderr = child.stderr.take();
        let pending: Pending = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let unsolicited: Arc<Mutex<Option<Side>>> = Arc::default();
        let proc = Arc::new(StdioProcess {
            name: name.to_owned(),
            stdin: tokio::sync::Mutex::new(stdin),
            pending: pending.clone(),
            next_seq: Default::default(),
            unsolicited: unsolicited.clone(),
            child: Mutex::new(Some(child)),
            dead: dead.clone(),
        });
        let weak = Arc::downgrade(&proc);
        let upstream = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut lines).take(max_bytes as u64 + 1).read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) if n > max_bytes => {
                        tracing::warn!(upstream = %upstream, "stdio upstream wrote a message over the size limit; stopping it");
                        break;
                    }
                    Ok(n) => {
                        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                            tracing::debug!(upstream = %upstream, "stdio upstream wrote a line that is not JSON");
                            continue;
                        };
                        let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
                        let is_answer = v.get("method").is_none() && (v.get("result").is_some() || v.get("error").is_some());
                        if is_answer {
                            if let Some(w) = id.and_then(|id| pending.lock().remove(&id)) {
                                let _ = w.answer.send((v, n));
                            }
                            continue;
                        }
                        if v.get("method").is_none() {
                            continue;
                        }
                        let to = route(&pending.lock(), &v).or_else(|| unsolicited.lock().clone());
                        let is_request = v.get("id").is_some();
                        let undelivered = match to {
                            Some(side) => match side.try_send(v) {
                                Ok(()) => None,
                                Err(mpsc::error::TrySendError::Full(v) | mpsc::error::TrySendError::Closed(v)) => Some(v),
                            },
                            None => Some(v),
                        };
                        if let Some(v) = undelivered.filter(|_| is_request) {
                            // A request of the server's with nobody to take it: refused at once,
                            // so the server moves on instead of waiting for its timeout.
                            let answer = jsonrpc::error(
                                v.get("id").unwrap_or(&Value::Null),
                                jsonrpc::code::METHOD_NOT_FOUND,
                                "no client stream is open to take this request",
                                None,
                            );
                            if let Some(p) = weak.upgrade() {
                                let _ = p.write(&answer).await;
                            }
                        }
                    }
                }
            }
            dead.store(true, Ordering::SeqCst);
            pending.lock().clear();
        });
        if let Some(stderr) = stderr {
            let upstream = name.to_owned();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    tracing::debug!(upstream = %upstream, line = %mandate_core::clip(&l), "stdio upstream stderr");
                }
            });
        }
        Ok(proc)
    }

    async fn request(
        &self,
        id: &Value,
        method: &str,
        params: Option<&Map<String, Value>>,
        side: Option<Side>,
    ) -> Result<Reply, UpstreamError> {
        let key = id.as_str().unwrap_or_default().to_owned();
        let (tx, rx) = oneshot::channel();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().insert(key.clone(), Waiting { answer: tx, side, seq });
        // Answered, failed, timed out or abandoned: the entry goes with the request.
        let _waiting = Unpend { pending: &self.pending, key: &key };
        self.write(&jsonrpc::request(id, method, params)).await?;
        match rx.await {
            Ok((message, bytes)) => Ok(Reply { message, bytes }),
            Err(_) => Err(UpstreamError::Unreachable(format!("the `{}` process exited", self.name))),
        }
    }

    /// Where what the process says outside any request goes from now on.
    pub fn set_unsolicited(&self, side: Side) {
        *self.unsolicited.lock() = Some(side);
    }

    /// Writes one message (an answer of the client's, a notification) to the process.
    pub async fn write(&self, msg: &Value) -> Result<(), UpstreamError> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(UpstreamError::Unreachable(format!("the `{}` process exited", self.name)));
        }
        let mut line = serde_json::to_vec(msg).map_err(|e| UpstreamError::Garbage(e.to_string()))?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(&line).await.map_err(|e| UpstreamError::Unreachable(format!("writing to `{}`: {e}", self.name)))?;
        stdin.flush().await.map_err(|e| UpstreamError::Unreachable(format!("writing to `{}`: {e}", self.name)))
    }

    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// Removes a request's entry from [`StdioProcess::pending`] when the request ends.
struct Unpend<'a> {
    pending: &'a Pending,
    key: &'a str,
}

impl Drop for Unpend<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(self.key);
    }
}

impl Drop for StdioProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_events_and_their_data() {
        let buf = b"data: \nid: 0\nretry: 3000\n\ndata: {\"a\":1}\nid: 1\n\n";
        let (a, b) = event_end(buf).unwrap();
        assert_eq!(sse_data(std::str::from_utf8(&buf[..a]).unwrap()), "");
        let rest = &buf[b..];
        let (c, _) = event_end(rest).unwrap();
        assert_eq!(sse_data(std::str::from_utf8(&rest[..c]).unwrap()), "{\"a\":1}");
        assert_eq!(sse_data("data: a\ndata: b"), "a\nb");
        assert!(event_end(b"data: x\n").is_none());
    }

    #[test]
    fn names_that_do_not_fit_a_header_are_base64() {
        assert_eq!(header_safe("tickets.search").unwrap(), "tickets.search");
        assert_eq!(header_safe("é").unwrap(), "=?base64?w6k=?=");
    }
}
