//! The approval webhook: each new approval request is announced with an HTTP POST whose body
//! is signed with HMAC-SHA256, retried with exponential backoff, and whose failures are
//! visible (log, metrics, the approval's `notification`, an audit event after the last try).
//!
//! Receivers check `X-Mandate-Signature: sha256=<hex HMAC-SHA256(secret, body)>` over the raw
//! body bytes, and may use `X-Mandate-Delivery` (unique per approval) to drop duplicates: a
//! delivery can arrive twice when an answer is lost.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Weak;
use std::time::Duration;

use hmac::{Hmac, Mac};
use mandate_audit::kinds;
use mandate_core::Approval;
use parking_lot::Mutex;
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::state::AppState;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-mandate-signature";
/// The header naming the event (`approval.requested`).
pub const EVENT_HEADER: &str = "x-mandate-event";
/// The header with the delivery's id (the approval id): the same on every retry.
pub const DELIVERY_HEADER: &str = "x-mandate-delivery";

/// Most approvals whose delivery status is kept for `GET /v1/approvals/{id}`.
const STATUS_KEPT: usize = 10_000;
/// Most announcements waiting for a delivery worker; beyond it one is dropped and counted.
const QUEUE: usize = 1024;

/// Where and how approval requests are announced.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// The HMAC key. Never logged, never sent.
    pub secret: Zeroizing<String>,
    /// Tries per announcement, the first included.
    pub max_attempts: u32,
    /// Wait before the second try; doubled for each one after.
    pub first_backoff: Duration,
    /// Per-try timeout.
    pub timeout: Duration,
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("max_attempts", &self.max_attempts)
            .field("first_backoff", &self.first_backoff)
            .finish()
    }
}

impl WebhookSettings {
    pub fn new(url: String, secret: String) -> Self {
        WebhookSettings {
            url,
            secret: Zeroizing::new(secret),
            max_attempts: 5,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What happened to an approval's announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// `pending` (trying), `delivered`, or `failed` (gave up).
    pub state: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The announcer: a queue into one background worker, and what each delivery came to.
pub struct Webhook {
    tx: Option<mpsc::Sender<Approval>>,
    status: Mutex<(HashMap<String, Delivery>, VecDeque<String>)>,
}

impl Webhook {
    /// No webhook configured: announcing does nothing.
    pub fn disabled() -> Self {
        Webhook { tx: None, status: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// Starts the delivery worker for `state`'s webhook settings (none: disabled).
    pub fn start(state: Weak<AppState>, settings: Option<WebhookSettings>) -> Self {
        let Some(settings) = settings else { return Self::disabled() };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(worker(state, settings, rx));
        Webhook { tx: Some(tx), status: Mutex::new((HashMap::new(), VecDeque::new())) }
    }

    /// Queues the announcement of a new approval request. Never waits.
    pub fn announce(&self, state: &AppState, approval: &Approval) {
        let Some(tx) = &self.tx else { return };
        self.set(&approval.id, Delivery { state: "pending", attempts: 0, last_error: None });
        if tx.try_send(approval.clone()).is_err() {
            state.metrics.webhook("failed");
            self.set(&approval.id, Delivery { state: "failed", attempts: 0, last_error: Some("the delivery queue is full".into()) });
            tracing::warn!(approval = %approval.id, "approval webhook queue full: announcement dropped");
        }
    }

    /// What became of the approval's announcement, if one was made.
    pub fn delivery(&self, id: &str) -> Option<Delivery> {
        self.status.lock().0.get(id).cloned()
    }

    fn set(&self, id: &str, d: Delivery) {
        let mut guard = self.status.lock();
        let (map, order) = &mut *guard;
        if map.insert(id.to_owned(), d).is_none() {
            order.push_back(id.to_owned());
            while order.len() > STATUS_KEPT {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sent_at_ms: i64,
    approval: &'a Approval,
    /// Where a person decides it.
    console: String,
}

async fn worker(state: Weak<AppState>, settings: WebhookSettings, mut rx: mpsc::Receiver<Approval>) {
    let client = match reqwest::Client::builder().timeout(settings.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client: approval announcements are off");
            return;
        }
    };
    while let Some(approval) = rx.recv().await {
        // Deliveries run side by side so that one slow receiver does not hold back the rest.
        tokio::spawn(deliver(state.clone(), settings.clone(), client.clone(), approval));
    }
}

async fn deliver(state: Weak<AppState>, settings: WebhookSettings, client: reqwest::Client, approval: Approval) {
    let Some(s) = state.upgrade() else { return };
    let body = Body {
        kind: kinds::APPROVAL_REQUESTED,
        sent_at_ms: s.clock.now_ms(),
        approval: &approval,
        console: format!("{}/console/approvals", s.settings.issuer.trim_end_matches('/')),
    };
    let body = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode an approval announcement");
            return;
        }
    };
    drop(s);
    let signature = sign(settings.secret.as_bytes(), &body);
    let mut backoff = settings.first_backoff;
    let attempts = settings.max_attempts.max(1);
    for attempt in 1..=attempts {
        let result = client
            .post(&settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_HEADER, kinds::APPROVAL_REQUESTED)
            .header(DELIVERY_HEADER, &approval.id)
            .body(body.clone())
            .send()
            .await;
        let error = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the receiver answered {}", r.status().as_u16())),
            // Only the kind of failure: the URL may carry credentials.
            Err(e) if e.is_timeout() => Some("timed out".to_owned()),
            Err(e) if e.is_connect() => Some("could not connect".to_owned()),
            Err(_) => Some("the request failed".to_owned()),
        };
        let Some(s) = state.upgrade() else { return };
        match error {
            None => {
                s.metrics.webhook("delivered");
                s.approvals.webhook.set(&approval.id, Delivery { state: "delivered", attempts: attempt, last_error: None });
                return;
            }
            Some(e) if attempt < attempts => {
                s.metrics.webhook("retried");
                tracing::warn!(approval = %approval.id, attempt, error = %e, "approval webhook failed; will retry");
                s.approvals.webhook.set(&approval.id, Delivery { state: "pending", attempts: attempt, last_error: Some(e) });
            }
            Some(e) => {
                s.metrics.webhook("failed");
                tracing::error!(approval = %approval.id, attempts = attempt, error = %e, "approval webhook failed; giving up");
                s.approvals.webhook.set(&approval.id, Delivery { state: "failed", attempts: attempt, last_error: Some(e.clone()) });
                let ev = s.event(
                    kinds::APPROVAL_NOTIFY_FAILED,
                    "system",
                    Some(&approval.agent),
                    Some(&approval.task_id),
                    serde_json::json!({ "approval_id": approval.id, "attempts": attempt, "error": e }),
                );
                s.enqueue_event(ev);
                return;
            }
        }
        drop(s);
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_rfc_4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = WebhookSettings::new("http://127.0.0.1:1/hook".into(), "s3cr3t-value".into());
        assert!(!format!("{s:?}").contains("s3cr3t-value"));
    }
}
