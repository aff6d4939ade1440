//! The control plane over HTTP, for a gateway running apart (`mandate gateway`).
//!
//! - Mandates are verified locally against the control plane's JWKS (fetched at start and
//!   again when a token names an unknown `kid`, at most every few seconds), with a bounded
//!   cache of verified tokens.
//! - Liveness comes from the control plane's revocation stream (SSE, resumed from the last
//!   sequence number after a reconnect): a revoked task or disabled agent is refused on its
//!   next request without waiting for the mandate to expire.
//! - Decisions are asked over AuthZEN (`/access/v1/evaluations`) with the gateway's `pep`
//!   token. If the control plane cannot be reached, every item is a deny
//!   (`control_plane_unavailable`): fail closed.
//! - Evidence is sent in batches to `/v1/evidence`, retried with backoff while the control
//!   plane is away (bounded queue).
//! - Secrets are fetched sealed to this gateway (`/v1/secrets/{name}/sealed`: HPKE to the
//!   gateway's own X25519 public key, registered with its `pep` token) and opened here with the
//!   gateway's private key, which never leaves it; the control plane's master key is never
//!   here. Sealed answers are cached briefly. A dynamic secret's credential for a task is asked
//!   for as a lease (`POST /v1/secrets/{name}/leases`), sealed the same way and bound to the
//!   task; the admin connection never leaves the control plane.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use mandate_audit::NewEvent;
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse, EvaluationsRequest, EvaluationsResponse};
use mandate_proto::gateway::{GatewaySealedView, GatewayView, RevocationEntry, RevocationKind, SEAL_SUITE};
use mandate_secrets::{GatewayPrivateKey, GatewaySealed};
use mandate_token::{MandateVerifier, PublicKey, VerifiedMandate};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use zeroize::Zeroizing;

use crate::authz::{Ask, Outcome};
use crate::control::{ControlPlane, GATEWAY_CODES, Refusal, Revoked, as_revoked};

const DECISION_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(5);
const SEALED_TTL: Duration = Duration::from_secs(5);
/// A task's dynamic credential stays the same for the task's life; minting one may take a
/// database round trip or two.
const LEASE_TTL: Duration = Duration::from_secs(30);
const LEASE_TIMEOUT: Duration = Duration::from_secs(20);
const CACHE_MAX: usize = 50_000;
const EVIDENCE_QUEUE: usize = 65_536;
const EVIDENCE_BATCH: usize = 512;
/// The control plane's default body limit is 64 KiB: batches stay well under it.
const EVIDENCE_BATCH_BYTES: usize = 48 * 1024;

/// A cached lease: when it was fetched, the secret's version, the sealed credential.
type CachedLease = (Instant, u32, GatewaySealed);

pub struct RemoteOptions {
    pub url: String,
    pub pep_token: String,
    /// The gateway's own private key; the control plane seals secrets to its public half.
    pub key: GatewayPrivateKey,
    pub leeway_secs: i64,
}

/// What the control plane says of this gateway's registration at start.
#[derive(Debug)]
pub enum Registration {
    /// Registered under this name, with this gateway's public key.
    Registered(GatewayView),
    /// The control plane's refusal code (`gateway_not_registered`, `gateway_revoked`, …).
    Refused(String),
    /// The control plane could not be asked.
    Unknown(String),
}

pub struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
    key: GatewayPrivateKey,
    /// The name this gateway is registered under, once the control plane said so.
    name: RwLock<Option<String>>,
    leeway_secs: i64,
    identity: RwLock<Option<(String, String)>>,
    verifier: RwLock<Option<MandateVerifier>>,
    jwks_fetched: Mutex<Option<Instant>>,
    verified: Mutex<HashMap<String, Arc<VerifiedMandate>>>,
    revoked_tasks: RwLock<HashSet<String>>,
    disabled_agents: RwLock<HashSet<String>>,
    sealed: Mutex<HashMap<String, (Instant, u32, GatewaySealed)>>,
    /// Secrets the control plane said are dynamic, when it said so.
    dynamic: Mutex<HashMap<String, Instant>>,
    /// Leases by (secret, task): the secret's version and the sealed credential.
    leases: Mutex<HashMap<(String, String), CachedLease>>,
    evidence: mpsc::Sender<NewEvent>,
    /// Evidence events recorded and not yet delivered (queued, or waiting to be retried).
    undelivered: std::sync::atomic::AtomicUsize,
    revocations: broadcast::Sender<Revoked>,
    /// Whether the revocation stream is connected right now (metrics and `/readyz`).
    pub stream_connected: std::sync::atomic::AtomicBool,
}

impl Remote {
    /// One AuthZEN batch to the control plane; every failure is a deny of each item.
    async fn evaluations(&self, requests: Vec<EvaluationRequest>, request_id: Option<&str>) -> Vec<EvaluationResponse> {
        let n = requests.len();
        let body = EvaluationsRequest { evaluations: Some(requests), ..Default::default() };
        let mut req =
            self.http.post(format!("{}/access/v1/evaluations", self.base)).bearer_auth(&self.token).timeout(DECISION_TIMEOUT).json(&body);
        if let Some(r) = request_id {
            req = req.header("x-request-id", r);
        }
        let fail = |why: &str| {
            tracing::warn!(reason = %why, "decision request failed; denying");
            (0..n)
                .map(|_| EvaluationResponse { decision: false, context: Some(json!({ "reason": "control_plane_unavailable" })) })
                .collect::<Vec<_>>()
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return fail(&root_cause(&e)),
        };
        if !resp.status().is_success() {
            let status = resp.status();
            let code = resp.json::<Value>().await.ok().and_then(|b| b.pointer("/error/code").and_then(Value::as_str).map(str::to_owned));
            if code.as_deref() == Some("gateway_revoked") {
                // This gateway was revoked: nothing it asks is allowed, and it says why.
                tracing::error!("this gateway is revoked at the control plane; denying every call");
                return (0..n)
                    .map(|_| EvaluationResponse { decision: false, context: Some(json!({ "reason": "gateway_revoked" })) })
                    .collect();
            }
            return fail(&format!("HTTP {status}"));
        }
        match resp.json::<EvaluationsResponse>().await {
            Ok(r) if r.evaluations.len() == n => r.evaluations,
            Ok(_) => fail("the batch answer has the wrong length"),
            Err(_) => fail("the batch answer is not AuthZEN"),
        }
    }

    /// Connects (best effort: a control plane that is down now is retried on use) and starts
    /// the revocation follower and the evidence sender.
    pub async fn start(opts: RemoteOptions) -> Result<Arc<Remote>, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let (tx, rx) = mpsc::channel(EVIDENCE_QUEUE);
        let (revocations, _) = broadcast::channel(4096);
        let remote = Arc::new(Remote {
            base: opts.url.trim_end_matches('/').to_owned(),
            token: opts.pep_token,
            http,
            key: opts.key,
            name: RwLock::new(None),
            leeway_secs: opts.leeway_secs,
            identity: RwLock::new(None),
            verifier: RwLock::new(None),
            jwks_fetched: Mutex::new(None),
            verified: Mutex::new(HashMap::new()),
            revoked_tasks: RwLock::new(HashSet::new()),
            disabled_agents: RwLock::new(HashSet::new()),
            sealed: Mutex::new(HashMap::new()),
            dynamic: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            evidence: tx,
            undelivered: std::sync::atomic::AtomicUsize::new(0),
            revocations,
            stream_connected: std::sync::atomic::AtomicBool::new(false),
        });
        if let Err(e) = remote.refresh_keys().await {
            tracing::warn!(error = %e, url = %remote.base, "the control plane is not reachable yet; every call is denied until it is");
        }
        tokio::spawn(send_evidence(Arc::downgrade(&remote), rx));
        tokio::spawn(crate::remote_feed::follow(Arc::downgrade(&remote)));
        Ok(remote)
    }

    /// Asks the control plane under which name this gateway's token is registered, and checks
    /// that the registered public key is this gateway's. A registration with another key is an
    /// error: the control plane would seal to a key this gateway does not hold.
    pub async fn registration(&self) -> Result<Registration, String> {
        let resp = match self
            .http
            .get(format!("{}/v1/gateways/self", self.base))
            .bearer_auth(&self.token)
            .timeout(DECISION_TIMEOUT)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(Registration::Unknown(root_cause(&e))),
        };
        let status = resp.status();
        let body: Value = match resp.json().await {
            Ok(b) => b,
            Err(_) => return Ok(Registration::Unknown(format!("the control plane answered {status} without JSON"))),
        };
        if !status.is_success() {
            let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error").to_owned();
            return Ok(if status.is_client_error() { Registration::Refused(code) } else { Registration::Unknown(code) });
        }
        let view: GatewayView =
            serde_json::from_value(body).map_err(|_| "the control plane's answer is not a gateway registration".to_owned())?;
        let mine = self.key.public_key().map_err(|e| e.to_string())?.to_base64();
        if view.public_key != mine {
            return Err(format!(
                "gateway `{}` is registered with public key `{}`, not this gateway's `{mine}`: register this key, or start with the key file it was registered with",
                view.name, view.public_key
            ));
        }
        *self.name.write() = Some(view.name.clone());
        Ok(Registration::Registered(view))
    }

    /// The name this gateway is registered under (asked once).
    async fn my_name(&self) -> Result<String, String> {
        if let Some(n) = self.name.read().clone() {
            return Ok(n);
        }
        match self.registration().await {
            Ok(Registration::Registered(v)) => Ok(v.name),
            Ok(Registration::Refused(code)) if GATEWAY_CODES.contains(&code.as_str()) => Err(code),
            Ok(Registration::Refused(code)) if code == "unauthenticated" => Err("secret_unavailable".to_owned()),
            Ok(Registration::Refused(code) | Registration::Unknown(code)) => {
                tracing::warn!(error = %code, "cannot learn this gateway's registration");
                Err("secret_unavailable".to_owned())
            }
            Err(e) => {
                tracing::error!(error = %e, "this gateway's key is not the one registered");
                Err("gateway_key_mismatch".to_owned())
            }
        }
    }

    /// Opens a blob the control plane sealed to this gateway, after checking it says what was
    /// asked for (the HPKE binding checks it again).
    fn open(&self, me: &str, name: &str, version: u32, task: Option<&str>, sealed: &GatewaySealed) -> Result<Zeroizing<Vec<u8>>, String> {
        mandate_secrets::open_for_gateway(&self.key, me, name, version, task, sealed).map_err(|e| {
            tracing::warn!(secret = %name, version, "a sealed secret does not open with this gateway's key");
            e.code().to_owned()
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Waits (at most `within`) until every evidence event recorded so far has been delivered
    /// to the control plane; call on shutdown, after the listener has stopped. Returns how many
    /// could not be delivered, and says so in the log.
    pub async fn flush(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let left = self.undelivered.load(std::sync::atomic::Ordering::SeqCst);
            if left == 0 {
                return 0;
            }
            if Instant::now() >= deadline {
                tracing::error!(undelivered = left, "stopping with tool-call evidence the control plane has not received");
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn delivered(&self, n: usize) {
        let _ = self
            .undelivered
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |v| Some(v.saturating_sub(n)));
    }

    /// Entries may have been missed: open sessions are checked again.
    pub(crate) fn stale(&self) {
        let _ = self.revocations.send(Revoked::Stale);
    }

    /// Applies one entry of the revocation feed.
    pub(crate) fn apply(&self, e: &RevocationEntry) {
        match (e.kind, e.status.stops()) {
            (RevocationKind::Task, true) => {
                self.revoked_tasks.write().insert(e.id.clone());
            }
            (RevocationKind::Agent, true) => {
                self.disabled_agents.write().insert(e.id.clone());
            }
            (RevocationKind::Agent, false) => {
                self.disabled_agents.write().remove(&e.id);
            }
            (RevocationKind::Task, false) => {}
        }
        if let Some(r) = as_revoked(e) {
            let _ = self.revocations.send(r);
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, String> {
        let resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .timeout(DECISION_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("cannot reach the control plane: {}", root_cause(&e)))?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|_| "the control plane's answer is not JSON".to_owned())?;
        if !status.is_success() {
            let code = body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error");
            return Err(format!("the control plane answered {status}: {code}"));
        }
        Ok(body)
    }

    /// GETs JSON; the error is the control plane's stable code (`unreachable` when there was no
    /// answer).
    async fn get_coded(&self, path: &str) -> Result<Value, String> {
        let resp =
            self.http.get(format!("{}{}", self.base, path)).bearer_auth(&self.token).timeout(DECISION_TIMEOUT).send().await.map_err(
                |e| {
                    tracing::warn!(path = %path, error = %root_cause(&e), "cannot reach the control plane");
                    "unreachable".to_owned()
                },
            )?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|_| "bad_response".to_owned())?;
        if !status.is_success() {
            return Err(body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error").to_owned());
        }
        Ok(body)
    }

    /// POSTs JSON; the error is the control plane's stable code (`unreachable` when there was no
    /// answer).
    async fn post_json(&self, path: &str, body: &Value) -> Result<Value, String> {
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .timeout(LEASE_TIMEOUT)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(path = %path, error = %root_cause(&e), "cannot reach the control plane");
                "unreachable".to_owned()
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|_| "bad_response".to_owned())?;
        if !status.is_success() {
            return Err(body.pointer("/error/code").and_then(Value::as_str).unwrap_or("error").to_owned());
        }
        Ok(body)
    }

    /// A dynamic secret's credential for `task`, from the control plane (cached briefly).
    async fn lease(&self, me: &str, name: &str, task: Option<&str>) -> Result<(u32, Zeroizing<Vec<u8>>), String> {
        let task = task.ok_or_else(|| "secret_needs_task".to_owned())?;
        let key = (name.to_owned(), task.to_owned());
        let cached = self.leases.lock().get(&key).filter(|(at, ..)| at.elapsed() < LEASE_TTL).map(|(_, v, s)| (*v, s.clone()));
        let (version, sealed) = match cached {
            Some(c) => c,
            None => {
                let grant = self.post_json(&format!("/v1/secrets/{name}/leases"), &json!({ "task": task })).await.map_err(|code| {
                    tracing::warn!(secret = %name, task = %task, code = %code, "cannot get a dynamic credential");
                    passed_on(code)
                })?;
                let c = grant.get("credential").cloned().ok_or_else(|| "secret_unavailable".to_owned())?;
                let (version, sealed) = sealed_of(c, me, name)?;
                let mut leases = self.leases.lock();
                if leases.len() >= CACHE_MAX {
                    leases.clear();
                }
                leases.insert(key, (Instant::now(), version, sealed.clone()));
                (version, sealed)
            }
        };
        let value = self.open(me, name, version, Some(task), &sealed)?;
        Ok((version, value))
    }

    /// Fetches issuer, audience and signing keys.
    async fn refresh_keys(&self) -> Result<(), String> {
        *self.jwks_fetched.lock() = Some(Instant::now());
        let info = self.get_json("/v1/info").await?;
        let issuer = info.get("issuer").and_then(Value::as_str).ok_or("`/v1/info` has no issuer")?.to_owned();
        let audience = info.get("audience").and_then(Value::as_str).ok_or("`/v1/info` has no audience")?.to_owned();
        let jwks = self.get_json("/.well-known/jwks.json").await?;
        let keys: Vec<PublicKey> = jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(|ks| ks.iter().filter_map(|k| PublicKey::from_jwk(k).ok()).collect())
            .unwrap_or_default();
        if keys.is_empty() {
            return Err("the control plane's JWKS holds no usable key".into());
        }
        *self.verifier.write() = Some(MandateVerifier::new(&issuer, &audience, &keys, self.leeway_secs));
        *self.identity.write() = Some((issuer, audience));
        Ok(())
    }

    async fn verify(&self, token: &str) -> Result<Arc<VerifiedMandate>, Refusal> {
        let now = now_secs();
        if let Some(m) = self.verified.lock().get(token)
            && m.claims().exp + self.leeway_secs > now
        {
            return Ok(m.clone());
        }
        let first = self.verifier.read().as_ref().map(|v| v.verify(token, now));
        let result = match first {
            Some(Err(mandate_token::TokenError::UnknownKid(_))) | None => {
                let recently = self.jwks_fetched.lock().is_some_and(|t| t.elapsed() < JWKS_MIN_INTERVAL);
                if !recently && let Err(e) = self.refresh_keys().await {
                    tracing::warn!(error = %e, "cannot refresh the control plane's keys");
                }
                match self.verifier.read().as_ref() {
                    Some(v) => v.verify(token, now),
                    None => return Err(Refusal::new("control_plane_unavailable")),
                }
            }
            Some(r) => r,
        };
        match result {
            Ok(m) => {
                let m = Arc::new(m);
                let mut cache = self.verified.lock();
                if cache.len() >= CACHE_MAX {
                    cache.retain(|_, v| v.claims().exp + self.leeway_secs > now);
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(token.to_owned(), m.clone());
                Ok(m)
            }
            Err(e) => Err(Refusal::with_code("invalid_mandate", e.code())),
        }
    }
}

#[async_trait]
impl ControlPlane for Remote {
    async fn check_mandate(&self, token: &str) -> Result<Arc<VerifiedMandate>, Refusal> {
        let m = self.verify(token).await?;
        let c = m.claims();
        if self.revoked_tasks.read().contains(&c.task_id) {
            return Err(Refusal::of("task_revoked", m.clone()));
        }
        if self.disabled_agents.read().contains(&c.agent) {
            return Err(Refusal::of("agent_disabled", m.clone()));
        }
        Ok(m)
    }

    async fn decide(&self, asks: &[Ask<'_>], environment: Option<&str>, request_id: Option<&str>) -> Vec<Outcome> {
        let requests = asks.iter().map(|a| a.request(environment)).collect();
        self.evaluations(requests, request_id).await.iter().map(Outcome::from_response).collect()
    }

    fn record(&self, event: NewEvent) {
        if self.evidence.try_send(event).is_ok() {
            self.undelivered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        } else {
            tracing::error!("the evidence queue is full; an evidence event was dropped");
        }
    }

    async fn secret(&self, name: &str, task: Option<&str>) -> Result<(u32, Zeroizing<Vec<u8>>), String> {
        let me = self.my_name().await?;
        if self.dynamic.lock().get(name).is_some_and(|at| at.elapsed() < LEASE_TTL) {
            return self.lease(&me, name, task).await;
        }
        let cached = self.sealed.lock().get(name).filter(|(at, _, _)| at.elapsed() < SEALED_TTL).map(|(_, v, s)| (*v, s.clone()));
        let (version, sealed) = match cached {
            Some(c) => c,
            None => {
                let v = match self.get_coded(&format!("/v1/secrets/{name}/sealed")).await {
                    Ok(v) => v,
                    Err(code) if code == "secret_is_dynamic" => {
                        self.dynamic.lock().insert(name.to_owned(), Instant::now());
                        return self.lease(&me, name, task).await;
                    }
                    Err(code) => {
                        tracing::warn!(secret = %name, code = %code, "cannot fetch a sealed secret");
                        return Err(passed_on(code));
                    }
                };
                let (version, sealed) = sealed_of(v, &me, name)?;
                let mut cache = self.sealed.lock();
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(name.to_owned(), (Instant::now(), version, sealed.clone()));
                (version, sealed)
            }
        };
        let value = self.open(&me, name, version, None, &sealed)?;
        Ok((version, value))
    }

    fn revocations(&self) -> broadcast::Receiver<Revoked> {
        self.revocations.subscribe()
    }

    fn may_act(&self, task: &str, agent: &str) -> bool {
        !self.revoked_tasks.read().contains(task) && !self.disabled_agents.read().contains(agent)
    }

    fn issuer(&self) -> String {
        self.identity.read().as_ref().map(|(i, _)| i.clone()).unwrap_or_else(|| self.base.clone())
    }

    async fn wait_approval(&self, id: &str, wait: std::time::Duration) -> Result<String, String> {
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err("invalid_approval_id".to_owned());
        }
        let secs = wait.as_secs().clamp(1, 30);
        let resp = self
            .http
            .get(format!("{}/v1/approvals/{id}?wait={secs}", self.base))
            .bearer_auth(&self.token)
            .timeout(wait + DECISION_TIMEOUT)
            .send()
            .await
            .map_err(|_| "control_plane_unavailable".to_owned())?;
        if !resp.status().is_success() {
            return Err(format!("approval_status_{}", resp.status().as_u16()));
        }
        let body: Value = resp.json().await.map_err(|_| "control_plane_bad_response".to_owned())?;
        let status = body.get("status").and_then(Value::as_str).ok_or_else(|| "control_plane_bad_response".to_owned())?;
        let expired = status == "pending" && body.get("expires_at_ms").and_then(Value::as_i64).is_some_and(|e| e <= now_ms());
        Ok(if expired { "expired".to_owned() } else { status.to_owned() })
    }
}

async fn send_evidence(remote: std::sync::Weak<Remote>, mut rx: mpsc::Receiver<NewEvent>) {
    // Events waiting to be sent, already in wire form, oldest first.
    let mut queue: std::collections::VecDeque<(Value, usize)> = std::collections::VecDeque::new();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(ev) => queue.push_back(wire(ev)),
                None => return,
            }
        }
        while let Ok(ev) = rx.try_recv() {
            queue.push_back(wire(ev));
        }
        // One batch: by count and by bytes (a single oversized event goes alone, and is
        // refused by the control plane with a 4xx, which drops it with an error).
        let mut take = 0;
        let mut bytes = 0;
        for (_, n) in &queue {
            if take > 0 && (take == EVIDENCE_BATCH || bytes + n > EVIDENCE_BATCH_BYTES) {
                break;
            }
            take += 1;
            bytes += n;
        }
        let events: Vec<Value> = queue.iter().take(take).map(|(v, _)| v.clone()).collect();
        let Some(r) = remote.upgrade() else { return };
        let sent = r
            .http
            .post(format!("{}/v1/evidence", r.base))
            .bearer_auth(&r.token)
            .timeout(Duration::from_secs(10))
            .json(&json!({ "events": events }))
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {
                queue.drain(..take);
                r.delivered(take);
            }
            Ok(resp) if resp.status().is_client_error() => {
                tracing::error!(status = %resp.status(), n = take, "the control plane refused evidence events; dropping them");
                queue.drain(..take);
                r.delivered(take);
            }
            Ok(resp) => {
                drop(r);
                tracing::warn!(status = %resp.status(), "evidence not accepted yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => {
                drop(r);
                tracing::warn!(error = %root_cause(&e), "cannot reach the control plane for evidence; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if queue.len() > EVIDENCE_QUEUE {
            let excess = queue.len() - EVIDENCE_QUEUE;
            tracing::error!(dropped = excess, "the evidence backlog is full; the oldest events were dropped");
            queue.drain(..excess);
            r.delivered(excess);
        }
    }
}

/// An event as `/v1/evidence` takes it, with its encoded size.
fn wire(e: NewEvent) -> (Value, usize) {
    let mut details = e.details;
    // The decision's receipt binds the event to it; it is not part of what is recorded.
    let receipt = details.as_object_mut().and_then(|m| m.remove(crate::authz::RECEIPT));
    let mut v = json!({ "kind": e.kind, "ts_ms": e.ts_ms, "agent": e.agent, "task": e.task, "details": details });
    if let (Some(r), Value::Object(m)) = (receipt, &mut v) {
        m.insert("receipt".into(), r);
    }
    let n = v.to_string().len() + 1;
    (v, n)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    mandate_core::clip(&cur.to_string())
}

/// Milliseconds since the epoch, by this machine's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A control-plane code as the agent sees it: the registration and lease codes as they are,
/// anything else `secret_unavailable`.
fn passed_on(code: String) -> String {
    let c = code.as_str();
    if GATEWAY_CODES.contains(&c) || crate::control::LEASE_CODES.contains(&c) || c == "secret_not_found" {
        code
    } else {
        "secret_unavailable".to_owned()
    }
}

/// The version and sealed parts of a [`GatewaySealedView`] (base64url, no padding), which must
/// name this gateway, the secret asked for and the suite this gateway speaks.
fn sealed_of(v: Value, me: &str, name: &str) -> Result<(u32, GatewaySealed), String> {
    let unavailable = || "secret_unavailable".to_owned();
    let view: GatewaySealedView = serde_json::from_value(v).map_err(|_| unavailable())?;
    if view.gateway != me || view.name != name || view.suite != SEAL_SUITE {
        tracing::warn!(secret = %name, gateway = %view.gateway, suite = %view.suite, "a sealed secret is not for this gateway or this secret");
        return Err(unavailable());
    }
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| unavailable());
    Ok((view.version, GatewaySealed { enc: b(&view.enc)?, ciphertext: b(&view.ciphertext)? }))
}
