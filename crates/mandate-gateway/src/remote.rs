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
//!
//! Every call goes through [`mandate_client::Client`]'s typed methods; a refusal is matched on
//! the control plane's stable error code ([`ClientError::code`]), never on its JSON.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use mandate_audit::NewEvent;
use mandate_client::{Client, ClientError, ClientOptions};
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse, EvaluationsRequest};
use mandate_proto::gateway::{EvidenceEvent, GatewaySealedView, GatewayView, RevocationEntry, RevocationKind, SEAL_SUITE};
use mandate_secrets::{GatewayPrivateKey, GatewaySealed};
use mandate_token::{MandateVerifier, PublicKey, VerifiedMandate};
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use zeroize::Zeroizing;

use crate::authz::{Ask, Outcome};
use crate::control::{ControlPlane, GATEWAY_CODES, Refusal, Revoked, as_revoked};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DECISION_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(5);
const SEALED_TTL: Duration = Duration::from_secs(5);
/// A task's dynamic credential stays the same for the task's life; minting one may take a
/// database round trip or two.
const LEASE_TTL: Duration = Duration::from_secs(30);
const LEASE_TIMEOUT: Duration = Duration::from_secs(20);
const EVIDENCE_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// The control plane, with this gateway's `pep` token.
    client: Client,
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
        let deny = |reason: &str| {
            (0..n).map(|_| EvaluationResponse { decision: false, context: Some(json!({ "reason": reason })) }).collect::<Vec<_>>()
        };
        let fail = |why: &str| {
            tracing::warn!(reason = %why, "decision request failed; denying");
            deny("control_plane_unavailable")
        };
        match self.client.within(DECISION_TIMEOUT).evaluate_batch_traced(&body, request_id).await {
            Ok(r) if r.evaluations.len() == n => r.evaluations,
            Ok(_) => fail("the batch answer has the wrong length"),
            Err(e) if e.code() == Some("gateway_revoked") => {
                // This gateway was revoked: nothing it asks is allowed, and it says why.
                tracing::error!("this gateway is revoked at the control plane; denying every call");
                deny("gateway_revoked")
            }
            Err(e) => match e.status() {
                Some(s) if is_success(s) => fail("the batch answer is not AuthZEN"),
                Some(s) => fail(&format!("HTTP {}", status_text(s))),
                None => fail(&unreached(&e)),
            },
        }
    }

    /// Connects (best effort: a control plane that is down now is retried on use) and starts
    /// the revocation follower and the evidence sender.
    pub async fn start(opts: RemoteOptions) -> Result<Arc<Remote>, String> {
        // Every call sets its own timeout (`Client::within`).
        let client = Client::with_options(&opts.url, Some(opts.pep_token), ClientOptions::default().connect_timeout(CONNECT_TIMEOUT))
            .map_err(|e| format!("cannot talk to the control plane: {e}"))?;
        let (tx, rx) = mpsc::channel(EVIDENCE_QUEUE);
        let (revocations, _) = broadcast::channel(4096);
        let remote = Arc::new(Remote {
            client,
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
            let url = remote.client.base_url();
            tracing::warn!(error = %e, url = %url, "the control plane is not reachable yet; every call is denied until it is");
        }
        tokio::spawn(send_evidence(Arc::downgrade(&remote), rx));
        tokio::spawn(crate::remote_feed::follow(Arc::downgrade(&remote)));
        Ok(remote)
    }

    /// Asks the control plane under which name this gateway's token is registered, and checks
    /// that the registered public key is this gateway's. A registration with another key is an
    /// error: the control plane would seal to a key this gateway does not hold.
    pub async fn registration(&self) -> Result<Registration, String> {
        let view = match self.client.within(DECISION_TIMEOUT).gateway_self().await {
            Ok(v) => v,
            Err(e) => {
                let Some(status) = e.status() else { return Ok(Registration::Unknown(unreached(&e))) };
                if matches!(e, ClientError::NotJson { .. }) {
                    return Ok(Registration::Unknown(format!("the control plane answered {} without JSON", status_text(status))));
                }
                if is_success(status) {
                    return Err("the control plane's answer is not a gateway registration".to_owned());
                }
                let code = e.code().unwrap_or("error").to_owned();
                return Ok(if (400..500).contains(&status) { Registration::Refused(code) } else { Registration::Unknown(code) });
            }
        };
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

    /// The control plane, with this gateway's `pep` token.
    pub(crate) fn client(&self) -> &Client {
        &self.client
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

    /// A dynamic secret's credential for `task`, from the control plane (cached briefly).
    async fn lease(&self, me: &str, name: &str, task: Option<&str>) -> Result<(u32, Zeroizing<Vec<u8>>), String> {
        let task = task.ok_or_else(|| "secret_needs_task".to_owned())?;
        let key = (name.to_owned(), task.to_owned());
        let cached = self.leases.lock().get(&key).filter(|(at, ..)| at.elapsed() < LEASE_TTL).map(|(_, v, s)| (*v, s.clone()));
        let (version, sealed) = match cached {
            Some(c) => c,
            None => {
                let grant = match self.client.within(LEASE_TIMEOUT).lease(name, task).await {
                    Ok(g) => g,
                    // An answer that is not a lease grant.
                    Err(e) if e.status().is_some_and(is_success) => return Err("secret_unavailable".to_owned()),
                    Err(e) => {
                        let code = coded(&e, &format!("/v1/secrets/{name}/leases"));
                        tracing::warn!(secret = %name, task = %task, code = %code, "cannot get a dynamic credential");
                        return Err(passed_on(code));
                    }
                };
                let (version, sealed) = sealed_of(grant.credential, me, name)?;
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
        let client = self.client.within(DECISION_TIMEOUT);
        let info = client.info().await.map_err(|e| described(&e, "/v1/info"))?;
        let (issuer, audience) = (info.issuer, info.audience);
        let jwks = client.jwk_set().await.map_err(|e| described(&e, "/.well-known/jwks.json"))?;
        let keys: Vec<PublicKey> = jwks.keys.iter().filter_map(|k| PublicKey::from_jwk(k).ok()).collect();
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
                let v = match self.client.within(DECISION_TIMEOUT).sealed_secret(name).await {
                    Ok(v) => v,
                    Err(e) if e.code() == Some("secret_is_dynamic") => {
                        self.dynamic.lock().insert(name.to_owned(), Instant::now());
                        return self.lease(&me, name, task).await;
                    }
                    // An answer that is not a sealed secret.
                    Err(e) if e.status().is_some_and(is_success) => return Err("secret_unavailable".to_owned()),
                    Err(e) => {
                        let code = coded(&e, &format!("/v1/secrets/{name}/sealed"));
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
        self.identity.read().as_ref().map(|(i, _)| i.clone()).unwrap_or_else(|| self.client.base_url().to_owned())
    }

    async fn wait_approval(&self, id: &str, wait: std::time::Duration) -> Result<String, String> {
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err("invalid_approval_id".to_owned());
        }
        let secs = wait.as_secs().clamp(1, 30);
        let approval = self.client.within(wait + DECISION_TIMEOUT).get_approval(id, Some(secs)).await.map_err(|e| match e.status() {
            None => "control_plane_unavailable".to_owned(),
            Some(s) if is_success(s) => "control_plane_bad_response".to_owned(),
            Some(s) => format!("approval_status_{s}"),
        })?;
        let expired = approval.status == "pending" && approval.expires_at_ms <= now_ms();
        Ok(if expired { "expired".to_owned() } else { approval.status })
    }
}

async fn send_evidence(remote: std::sync::Weak<Remote>, mut rx: mpsc::Receiver<NewEvent>) {
    // Events waiting to be sent, already in wire form, oldest first.
    let mut queue: std::collections::VecDeque<(EvidenceEvent, usize)> = std::collections::VecDeque::new();
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
        let events: Vec<EvidenceEvent> = queue.iter().take(take).map(|(v, _)| v.clone()).collect();
        let Some(r) = remote.upgrade() else { return };
        match r.client.within(EVIDENCE_TIMEOUT).submit_evidence(&events).await.map_err(|e| (e.status(), e)) {
            // Accepted (an answer that does not decode still says the events are durable).
            Ok(_) | Err((Some(200..=299), _)) => {
                queue.drain(..take);
                r.delivered(take);
            }
            Err((Some(status @ 400..=499), _)) => {
                tracing::error!(status = %status_text(status), n = take, "the control plane refused evidence events; dropping them");
                queue.drain(..take);
                r.delivered(take);
            }
            Err((Some(status), _)) => {
                drop(r);
                tracing::warn!(status = %status_text(status), "evidence not accepted yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err((None, e)) => {
                drop(r);
                tracing::warn!(error = %unreached(&e), "cannot reach the control plane for evidence; retrying");
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
fn wire(e: NewEvent) -> (EvidenceEvent, usize) {
    let mut details = e.details;
    // The decision's receipt binds the event to it; it is not part of what is recorded.
    let receipt = details.as_object_mut().and_then(|m| m.remove(crate::authz::RECEIPT)).map(|r| match r {
        Value::String(s) => s,
        // Never the case (the receipt is the decision's string); sent as it is, refused.
        other => other.to_string(),
    });
    let ev = EvidenceEvent { kind: e.kind, ts_ms: e.ts_ms, agent: e.agent, task: e.task, details, receipt };
    let n = serde_json::to_vec(&ev).map_or(0, |v| v.len()) + 1;
    (ev, n)
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

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// An HTTP status as logs show it (`503 Service Unavailable`).
fn status_text(status: u16) -> String {
    axum::http::StatusCode::from_u16(status).map_or_else(|_| status.to_string(), |s| s.to_string())
}

/// Why the control plane could not be asked (no answer).
fn unreached(e: &ClientError) -> String {
    match e {
        ClientError::Connect { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// A failed call to `path` as a stable code: the control plane's own, `unreachable` when there
/// was no answer, `bad_response` when the answer was not JSON, `error` when it had no code.
fn coded(e: &ClientError, path: &str) -> String {
    if e.status().is_none() {
        tracing::warn!(path = %path, error = %unreached(e), "cannot reach the control plane");
        return "unreachable".to_owned();
    }
    if matches!(e, ClientError::NotJson { .. }) {
        return "bad_response".to_owned();
    }
    e.code().unwrap_or("error").to_owned()
}

/// A failed call to `path` in words, for the log.
fn described(e: &ClientError, path: &str) -> String {
    match (e.status(), e) {
        (None, e) => format!("cannot reach the control plane: {}", unreached(e)),
        (Some(_), ClientError::NotJson { .. }) => "the control plane's answer is not JSON".to_owned(),
        (Some(s), _) if is_success(s) => format!("the control plane's answer to `{path}` is not what it should be"),
        (Some(s), e) => format!("the control plane answered {}: {}", status_text(s), e.code().unwrap_or("error")),
    }
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
fn sealed_of(view: GatewaySealedView, me: &str, name: &str) -> Result<(u32, GatewaySealed), String> {
    let unavailable = || "secret_unavailable".to_owned();
    if view.gateway != me || view.name != name || view.suite != SEAL_SUITE {
        tracing::warn!(secret = %name, gateway = %view.gateway, suite = %view.suite, "a sealed secret is not for this gateway or this secret");
        return Err(unavailable());
    }
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| unavailable());
    Ok((view.version, GatewaySealed { enc: b(&view.enc)?, ciphertext: b(&view.ciphertext)? }))
}

#[cfg(test)]
mod tests {
    //! What the gateway makes of each kind of control-plane answer, against a real HTTP server
    //! on 127.0.0.1 standing in for the control plane.

    use axum::Router;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};

    use super::*;

    async fn remote_at(app: Router, key: GatewayPrivateKey) -> Arc<Remote> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let opts = RemoteOptions { url: format!("http://{addr}"), pep_token: "pep".into(), key, leeway_secs: 60 };
        Remote::start(opts).await.unwrap()
    }

    async fn remote(app: Router) -> Arc<Remote> {
        remote_at(app, GatewayPrivateKey::generate()).await
    }

    fn coded(status: StatusCode, code: &str) -> Response {
        (status, axum::Json(json!({ "error": { "code": code, "message": "refused" } }))).into_response()
    }

    fn registered(key: &GatewayPrivateKey) -> GatewayView {
        GatewayView {
            name: "gw".into(),
            public_key: key.public_key().unwrap().to_base64(),
            secrets: vec!["api".into(), "db".into()],
            token_id: "tok_1".into(),
            created_at_ms: 1,
            created_by: "admin".into(),
            revoked_at_ms: None,
        }
    }

    fn reasons(r: &[EvaluationResponse]) -> Vec<String> {
        r.iter()
            .map(|e| {
                assert!(!e.decision);
                e.context.as_ref().and_then(|c| c.get("reason")).and_then(Value::as_str).unwrap_or_default().to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_unreachable_control_plane_denies_everything() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let opts =
            RemoteOptions { url: format!("http://{addr}"), pep_token: "pep".into(), key: GatewayPrivateKey::generate(), leeway_secs: 60 };
        let r = Remote::start(opts).await.unwrap();
        let out = r.evaluations(vec![EvaluationRequest::default(); 3], Some("req-1")).await;
        assert_eq!(reasons(&out), vec!["control_plane_unavailable"; 3]);
        assert!(matches!(r.registration().await, Ok(Registration::Unknown(_))));
        assert_eq!(r.secret("api", None).await.unwrap_err(), "secret_unavailable");
        assert_eq!(r.wait_approval("apr_1", Duration::from_secs(1)).await.unwrap_err(), "control_plane_unavailable");
        assert!(r.check_mandate("not-a-mandate").await.is_err());
    }

    #[tokio::test]
    async fn a_revoked_gateway_is_denied_with_its_own_reason_and_other_refusals_fail_closed() {
        let app = Router::new().route("/access/v1/evaluations", post(|| async { coded(StatusCode::FORBIDDEN, "gateway_revoked") }));
        let out = remote(app).await.evaluations(vec![EvaluationRequest::default(); 2], None).await;
        assert_eq!(reasons(&out), vec!["gateway_revoked"; 2]);

        for app in [
            Router::new().route("/access/v1/evaluations", post(|| async { coded(StatusCode::FORBIDDEN, "forbidden") })),
            Router::new().route("/access/v1/evaluations", post(|| async { (StatusCode::BAD_GATEWAY, "proxy down").into_response() })),
            Router::new().route("/access/v1/evaluations", post(|| async { (StatusCode::OK, "not json").into_response() })),
            // One answer for a batch of two.
            Router::new().route(
                "/access/v1/evaluations",
                post(|| async { axum::Json(json!({ "evaluations": [{ "decision": true, "context": { "reason": "allowed" } }] })) }),
            ),
        ] {
            let out = remote(app).await.evaluations(vec![EvaluationRequest::default(); 2], None).await;
            assert_eq!(reasons(&out), vec!["control_plane_unavailable"; 2]);
        }
    }

    #[tokio::test]
    async fn the_registration_says_refused_unknown_or_wrong() {
        let app = Router::new().route("/v1/gateways/self", get(|| async { coded(StatusCode::NOT_FOUND, "gateway_not_registered") }));
        let r = remote(app).await;
        assert!(matches!(r.registration().await, Ok(Registration::Refused(c)) if c == "gateway_not_registered"));
        assert_eq!(r.secret("api", None).await.unwrap_err(), "gateway_not_registered");

        let app = Router::new().route("/v1/gateways/self", get(|| async { coded(StatusCode::UNAUTHORIZED, "unauthenticated") }));
        let r = remote(app).await;
        assert!(matches!(r.registration().await, Ok(Registration::Refused(c)) if c == "unauthenticated"));
        assert_eq!(r.secret("api", None).await.unwrap_err(), "secret_unavailable");

        let app = Router::new().route("/v1/gateways/self", get(|| async { coded(StatusCode::SERVICE_UNAVAILABLE, "unavailable") }));
        assert!(matches!(remote(app).await.registration().await, Ok(Registration::Unknown(c)) if c == "unavailable"));

        let app =
            Router::new().route("/v1/gateways/self", get(|| async { (StatusCode::BAD_REQUEST, axum::Json(json!({ "no": "code" }))) }));
        assert!(matches!(remote(app).await.registration().await, Ok(Registration::Refused(c)) if c == "error"));

        let app = Router::new().route("/v1/gateways/self", get(|| async { (StatusCode::BAD_GATEWAY, "proxy down").into_response() }));
        let got = remote(app).await.registration().await;
        assert!(matches!(&got, Ok(Registration::Unknown(w)) if w == "the control plane answered 502 Bad Gateway without JSON"), "{got:?}");

        let app = Router::new().route("/v1/gateways/self", get(|| async { axum::Json(json!({ "name": "gw" })) }));
        let r = remote(app).await;
        assert!(r.registration().await.is_err());
        assert_eq!(r.secret("api", None).await.unwrap_err(), "gateway_key_mismatch");

        // Registered, but with another gateway's key.
        let other = registered(&GatewayPrivateKey::generate());
        let app = Router::new().route("/v1/gateways/self", get(move || async move { axum::Json(other) }));
        let r = remote(app).await;
        assert!(r.registration().await.unwrap_err().contains("is registered with public key"));
        assert_eq!(r.secret("api", None).await.unwrap_err(), "gateway_key_mismatch");

        let key = GatewayPrivateKey::generate();
        let view = registered(&key);
        let app = Router::new().route("/v1/gateways/self", get(move || async move { axum::Json(view) }));
        assert!(matches!(remote_at(app, key).await.registration().await, Ok(Registration::Registered(v)) if v.name == "gw"));
    }

    #[tokio::test]
    async fn secret_refusals_pass_on_their_stable_codes() {
        let key = GatewayPrivateKey::generate();
        let view = registered(&key);
        let app = Router::new()
            .route("/v1/gateways/self", get(move || async move { axum::Json(view) }))
            .route("/v1/secrets/api/sealed", get(|| async { coded(StatusCode::FORBIDDEN, "secret_not_granted") }))
            .route("/v1/secrets/gone/sealed", get(|| async { coded(StatusCode::NOT_FOUND, "secret_not_found") }))
            .route("/v1/secrets/odd/sealed", get(|| async { coded(StatusCode::INTERNAL_SERVER_ERROR, "internal_error") }))
            .route("/v1/secrets/text/sealed", get(|| async { (StatusCode::OK, "not json").into_response() }))
            .route("/v1/secrets/db/sealed", get(|| async { coded(StatusCode::CONFLICT, "secret_is_dynamic") }))
            .route("/v1/secrets/db/leases", post(|| async { coded(StatusCode::SERVICE_UNAVAILABLE, "lease_database_unreachable") }));
        let r = remote_at(app, key).await;
        assert_eq!(r.secret("api", None).await.unwrap_err(), "secret_not_granted");
        assert_eq!(r.secret("gone", None).await.unwrap_err(), "secret_not_found");
        assert_eq!(r.secret("odd", None).await.unwrap_err(), "secret_unavailable");
        assert_eq!(r.secret("text", None).await.unwrap_err(), "secret_unavailable");
        assert_eq!(r.secret("db", None).await.unwrap_err(), "secret_needs_task");
        assert_eq!(r.secret("db", Some("tsk_1")).await.unwrap_err(), "lease_database_unreachable");
    }

    #[tokio::test]
    async fn a_waited_approval_is_its_status_or_a_stable_code() {
        fn approval(id: &str, status: &str, expires_at_ms: i64) -> Value {
            json!({
                "id": id, "task_id": "tsk_1", "agent": "bot", "mandate_jti": "j", "action": "call", "resource_type": "Tool",
                "resource_id": "t", "arguments_digest": "d", "binding": "b", "decision_id": "dec_1", "status": status,
                "created_at_ms": 1, "expires_at_ms": expires_at_ms
            })
        }
        let app = Router::new().route(
            "/v1/approvals/{id}",
            get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
                match id.as_str() {
                    "apr_ok" => axum::Json(approval(&id, "approved", i64::MAX)).into_response(),
                    "apr_pending" => axum::Json(approval(&id, "pending", i64::MAX)).into_response(),
                    "apr_stale" => axum::Json(approval(&id, "pending", 1)).into_response(),
                    "apr_text" => (StatusCode::OK, "not json").into_response(),
                    _ => coded(StatusCode::NOT_FOUND, "approval_not_found"),
                }
            }),
        );
        let r = remote(app).await;
        let wait = Duration::from_secs(1);
        assert_eq!(r.wait_approval("apr_ok", wait).await.unwrap(), "approved");
        assert_eq!(r.wait_approval("apr_pending", wait).await.unwrap(), "pending");
        assert_eq!(r.wait_approval("apr_stale", wait).await.unwrap(), "expired");
        assert_eq!(r.wait_approval("apr_text", wait).await.unwrap_err(), "control_plane_bad_response");
        assert_eq!(r.wait_approval("apr_none", wait).await.unwrap_err(), "approval_status_404");
        assert_eq!(r.wait_approval("../x", wait).await.unwrap_err(), "invalid_approval_id");
    }
}
