//! The gateway's state: its configuration, the control plane it asks, the upstreams and the
//! open sessions. Sessions are bound to the task of the mandate that opened them and die
//! with it: a revocation announced by the control plane closes them at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use base64::Engine;
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::authz::Ask;

use crate::authz::{EchoRecord, Outcome};
use crate::config::{GatewayConfig, Inject, InjectFormat, Target, Upstream};
use crate::control::{ControlPlane, Revoked};
use crate::mcp::relay::{Outbox, ServerRequests, Streams};
use crate::mcp::upstream::{ClientIdentity, Link, McpUpstream, Side};
use crate::scrub::{Found, Scrubber};

pub struct Gateway {
    pub cfg: GatewayConfig,
    pub control: Arc<dyn ControlPlane>,
    pub mcp: HashMap<String, Arc<McpUpstream>>,
    pub apis: HashMap<String, Arc<Upstream>>,
    pub http: reqwest::Client,
    pub sessions: Sessions,
    /// Scrubbers of injected values, by the SHA-256 of what they match.
    scrubbers: Mutex<HashMap<[u8; 32], Arc<Scrubber>>>,
}

/// Scrubbers kept at most (one per secret version, or per task for a dynamic secret).
const MAX_SCRUBBERS: usize = 1024;

/// One client session (2025-11-25), or the shared link of a task's stateless requests to an
/// upstream that needs a session or a process.
pub struct Session {
    pub id: String,
    pub upstream: Arc<McpUpstream>,
    pub task_id: String,
    pub agent: String,
    pub client: ClientIdentity,
    /// The revision negotiated with the client.
    pub client_protocol: String,
    pub link: Link,
    /// The upstream's `InitializeResult` or `DiscoverResult`.
    pub described: Value,
    pub last_used_ms: AtomicI64,
    /// Cancelled when the session ends: open streams stop.
    pub ended: CancellationToken,
    /// The client's requests on their way upstream: the client's id (as JSON text) → the
    /// upstream id the gateway sent it with (so a client's `notifications/cancelled` can name
    /// the request the upstream knows) and what ends the request when the client cancels it.
    /// An entry lives as long as its request.
    pub in_flight: Mutex<HashMap<String, (Value, CancellationToken)>>,
    /// The session's stream of server messages (`GET`), resumable with `Last-Event-ID`.
    pub outbox: Arc<Outbox>,
    /// The upstream's requests relayed to the client, waiting for its answer.
    pub server_requests: ServerRequests,
    /// The session's request streams, kept for a client that resumes one.
    pub streams: Arc<Streams>,
    /// The resources the client subscribed to (normalized URIs), each allowed when subscribed.
    pub subscriptions: Mutex<HashSet<String>>,
    /// What the upstream says outside any request, raw, for the session's pump to translate,
    /// decide and scrub into [`Session::outbox`].
    pub unsolicited: Side,
    /// Whether the upstream's own `GET` stream is being relayed (HTTP upstreams with sessions:
    /// opened with the client's first `GET`, reopened with `Last-Event-ID` when it closes).
    pub upstream_stream: AtomicBool,
}

impl Session {
    pub fn touch(&self) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The upstream id of the client's request `client_id`, while it is on its way; the
    /// request ends at once (the client cancelled it).
    pub fn cancel(&self, client_id: &Value) -> Option<Value> {
        let (id, token) = self.in_flight.lock().get(&client_id.to_string()).cloned()?;
        token.cancel();
        Some(id)
    }
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
    /// Opening a shared link is serialised per key so that a burst opens one, not many.
    opening: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Sessions {
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.lock().get(id).cloned()
    }

    pub fn insert(&self, s: Arc<Session>) {
        self.by_id.lock().insert(s.id.clone(), s);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn opening_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.opening.lock().entry(key.to_owned()).or_default().clone()
    }

    /// Removes every session matching `f` and returns them.
    pub fn drain(&self, f: impl Fn(&Session) -> bool) -> Vec<Arc<Session>> {
        let mut map = self.by_id.lock();
        let ids: Vec<String> = map.values().filter(|s| f(s)).map(|s| s.id.clone()).collect();
        ids.iter().filter_map(|id| map.remove(id)).collect()
    }
}

/// The key of a task's shared link to an upstream (stateless clients).
pub fn shared_key(upstream: &str, task: &str) -> String {
    format!("shared:{upstream}:{task}")
}

impl Gateway {
    /// Decides one call. A call policy holds for approval (on a tool or route that allows
    /// approval) waits up to `approval_wait` for a person: approved, the identical request is
    /// decided again and uses the approval; denied or expired, it is refused with that reason;
    /// still pending, it is answered `approval_required` with the approval id, for the client
    /// to retry. Anything that goes wrong is a deny.
    pub async fn decide_one(&self, ask: &Ask<'_>, environment: Option<&str>, request_id: Option<&str>, approvable: bool) -> Outcome {
        let decide = || async move {
            let answers = self.control.decide(std::slice::from_ref(ask), environment, request_id).await;
            answers.into_iter().next().unwrap_or_else(|| Outcome::refused("evaluation_error"))
        };
        let mut outcome = decide().await;
        if outcome.allowed || outcome.reason != "approval_required" {
            return outcome;
        }
        if !approvable {
            outcome.reason = "approval_not_available".into();
            return outcome;
        }
        let (Some(id), false) = (outcome.approval_id.clone(), self.cfg.approval_wait.is_zero()) else { return outcome };
        match self.control.wait_approval(&id, self.cfg.approval_wait).await.as_deref() {
            Ok("approved") => {
                let again = decide().await;
                if again.reason == "approval_required" && again.approval_id.as_deref() != Some(id.as_str()) {
                    // Another identical call used the grant first: this one asks anew.
                    return again;
                }
                again
            }
            Ok("denied") => Outcome { reason: "approval_denied".into(), ..outcome },
            Ok("expired") => Outcome { reason: "approval_expired".into(), ..outcome },
            Ok(_) => outcome,
            Err(code) => {
                tracing::warn!(approval = %id, error = %code, "could not wait for an approval; answering approval_required");
                outcome
            }
        }
    }

    pub fn new(cfg: GatewayConfig, control: Arc<dyn ControlPlane>) -> Result<Arc<Gateway>, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut mcp = HashMap::new();
        let mut apis = HashMap::new();
        for u in &cfg.upstreams {
            match u.target {
                Target::Http { .. } => {
                    apis.insert(u.name.clone(), Arc::new(u.clone()));
                }
                _ => {
                    mcp.insert(u.name.clone(), Arc::new(McpUpstream::new(u.clone(), http.clone(), cfg.max_message_bytes)));
                }
            }
        }
        let gw = Arc::new(Gateway { cfg, control, mcp, apis, http, sessions: Sessions::default(), scrubbers: Mutex::default() });
        tokio::spawn(watch_revocations(Arc::downgrade(&gw), gw.control.revocations()));
        tokio::spawn(reap_idle(Arc::downgrade(&gw)));
        Ok(gw)
    }

    /// Ends a session: its streams stop, its upstream link is closed.
    pub async fn end_session(&self, s: Arc<Session>) {
        s.ended.cancel();
        let inject = match self.injection(&s.upstream.cfg, Some(&s.task_id)).await {
            Ok(i) => i.map(|i| i.header),
            Err(_) => None,
        };
        s.upstream.close(&s.link, inject.as_ref()).await;
    }

    /// The header carrying an upstream's brokered secret, if it has one: for a dynamic secret,
    /// `task`'s own credential. The value lives in zeroized buffers only as long as the request
    /// does.
    pub async fn injection(&self, u: &Upstream, task: Option<&str>) -> Result<Option<Injected>, String> {
        let Some(inject) = &u.inject else { return Ok(None) };
        let (version, value) = self.control.secret(&inject.secret, task).await?;
        let header = header_for(inject, &value)?;
        let scrubber = self.scrubber(&value, header.1.as_bytes());
        Ok(Some(Injected { header, secret: inject.secret.clone(), version, scrubber }))
    }

    /// The scrubber of an injected value, built once per value (building one costs far more
    /// than a decision) and kept under the SHA-256 of what it matches, never the value itself.
    fn scrubber(&self, value: &[u8], header: &[u8]) -> Arc<Scrubber> {
        let mut h = Sha256::new();
        h.update((value.len() as u64).to_be_bytes());
        h.update(value);
        h.update(header);
        let key: [u8; 32] = h.finalize().into();
        if let Some(s) = self.scrubbers.lock().get(&key) {
            return s.clone();
        }
        let s = Scrubber::new(&[value, header]);
        let mut cache = self.scrubbers.lock();
        if cache.len() >= MAX_SCRUBBERS {
            // Dynamic secrets make one per task: start over rather than grow without bound.
            cache.clear();
        }
        cache.insert(key, s.clone());
        s
    }

    /// Records that an answer from an upstream held its injected secret, now replaced: one
    /// `secret.echo_redacted` event (never the value), counted in `/metrics` by the control
    /// plane. Nothing when nothing was found.
    pub fn echo_redacted(&self, echo: &EchoRecord<'_>, found: &Found) {
        if found.is_empty() {
            return;
        }
        tracing::warn!(
            upstream = %echo.upstream,
            secret = %echo.secret.0,
            version = echo.secret.1,
            matches = found.matches,
            place = %echo.place,
            "an upstream echoed its injected secret; it was redacted"
        );
        self.control.record(echo.event(found, now_ms()));
    }
}

/// A secret ready to go upstream.
pub struct Injected {
    pub header: (HeaderName, HeaderValue),
    pub secret: String,
    pub version: u32,
    /// Finds the value (and the header value) in what the upstream answers.
    pub scrubber: Arc<Scrubber>,
}

fn header_for(inject: &Inject, value: &[u8]) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(inject.header.as_bytes()).map_err(|_| "secret_unusable".to_owned())?;
    let text = std::str::from_utf8(value).map_err(|_| "secret_unusable".to_owned())?;
    let full: Zeroizing<String> = Zeroizing::new(match &inject.format {
        InjectFormat::Template { prefix, suffix } => format!("{prefix}{text}{suffix}"),
        InjectFormat::Basic { user } => {
            let pair = Zeroizing::new(format!("{user}:{text}"));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()))
        }
    });
    let mut v = HeaderValue::from_str(&full).map_err(|_| "secret_unusable".to_owned())?;
    v.set_sensitive(true);
    Ok((name, v))
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Closes the sessions of every task or agent the control plane revokes.
async fn watch_revocations(gw: std::sync::Weak<Gateway>, mut rx: tokio::sync::broadcast::Receiver<Revoked>) {
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => Some(ev),
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return,
        };
        let Some(gw) = gw.upgrade() else { return };
        let ended = match &ev {
            Some(Revoked::Task(t)) => gw.sessions.drain(|s| &s.task_id == t),
            Some(Revoked::Agent(a)) => gw.sessions.drain(|s| &s.agent == a),
            // Announcements were missed: check every open session again. (Every request is
            // checked on its own anyway; this only closes what may no longer act sooner.)
            Some(Revoked::Stale) | None => gw.sessions.drain(|s| !gw.control.may_act(&s.task_id, &s.agent)),
        };
        for s in ended {
            tracing::info!(session = %s.id, task = %s.task_id, "session closed: its task or agent was revoked");
            gw.end_session(s).await;
        }
    }
}

async fn reap_idle(gw: std::sync::Weak<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tick.tick().await;
        let Some(gw) = gw.upgrade() else { return };
        let idle = gw.cfg.session_idle.as_millis() as i64;
        let now = now_ms();
        for s in gw.sessions.drain(|s| now - s.last_used_ms.load(Ordering::Relaxed) > idle) {
            gw.end_session(s).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_built_from_the_format() {
        let bearer = Inject {
            header: "Authorization".into(),
            secret: "s".into(),
            format: InjectFormat::Template { prefix: "Bearer ".into(), suffix: String::new() },
        };
        let (k, v) = header_for(&bearer, b"tok").unwrap();
        assert_eq!((k.as_str(), v.to_str().unwrap()), ("authorization", "Bearer tok"));
        assert!(v.is_sensitive());
        let basic = Inject { header: "Authorization".into(), secret: "s".into(), format: InjectFormat::Basic { user: "bot".into() } };
        assert_eq!(header_for(&basic, b"pw").unwrap().1.to_str().unwrap(), "Basic Ym90OnB3");
        assert!(header_for(&bearer, b"bad\nvalue").is_err(), "a value that would split headers is refused");
    }
}
