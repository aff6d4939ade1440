//! The control plane in the same process as the gateway (`mandate serve` with a `[gateway]`
//! section): mandates are checked against the server's own keys and registry, the gateway's
//! typed asks go to the decision core as they are (the mandate verified once, no AuthZEN
//! round trip), evidence goes to the server's audit writer. No HTTP hop anywhere.
//!
//! This crate is where the two are wired: `mandate-gateway` knows only its
//! [`ControlPlane`] trait, so a remote gateway links no store, no SQL and no console.

use std::sync::Arc;

use async_trait::async_trait;
use mandate_audit::NewEvent;
use mandate_gateway::authz::{Ask, Outcome};
use mandate_gateway::{ControlPlane, Refusal, Revoked, as_revoked};
use mandate_server::pipeline;
use mandate_server::{AppState, FeedItem};
use mandate_token::VerifiedMandate;
use tokio::sync::broadcast;
use zeroize::Zeroizing;

/// The actor recorded on decisions the embedded gateway asks for.
pub const ACTOR: &str = "gateway:embedded";

pub struct Embedded {
    state: Arc<AppState>,
    revoked: broadcast::Sender<Revoked>,
}

impl Embedded {
    /// Wraps the server's state and starts relaying its revocation feed to the gateway.
    pub fn new(state: Arc<AppState>) -> Arc<Embedded> {
        let (revoked, _) = broadcast::channel(4096);
        let mut feed = state.revocations().follow(None);
        let tx = revoked.clone();
        tokio::spawn(async move {
            // Ends when the feed closes (shutdown).
            while let Some(item) = feed.next().await {
                let r = match item {
                    FeedItem::Entry(entry) => as_revoked(&entry),
                    FeedItem::Reset(_) => Some(Revoked::Stale),
                };
                if let Some(r) = r {
                    let _ = tx.send(r);
                }
            }
        });
        Arc::new(Embedded { state, revoked })
    }
}

#[async_trait]
impl ControlPlane for Embedded {
    async fn check_mandate(&self, token: &str) -> Result<Arc<VerifiedMandate>, Refusal> {
        // The pipeline's own rules, so the gateway and a decision never disagree on them.
        let mandate = pipeline::verified_mandate(&self.state, token).map_err(|e| Refusal::with_code("invalid_mandate", e.code()))?;
        match pipeline::may_act_now(&self.state, &mandate).await {
            Ok(_) => Ok(mandate),
            Err(reason) => Err(Refusal::of(reason.as_str(), mandate)),
        }
    }

    async fn decide(&self, asks: &[Ask<'_>], environment: Option<&str>, request_id: Option<&str>) -> Vec<Outcome> {
        let requests = asks.iter().map(|a| Ok(a.decision_request(environment))).collect();
        pipeline::decide_requests(&self.state, requests, ACTOR, request_id, |_| false)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(v) => outcome(&v),
                // A typed ask always carries every member; should one not, it is a deny.
                Err(_) => Outcome::refused("evaluation_error"),
            })
            .collect()
    }

    fn record(&self, event: NewEvent) {
        if event.kind == mandate_audit::kinds::SECRET_ECHO_REDACTED {
            let upstream = event.details.get("upstream").and_then(serde_json::Value::as_str).unwrap_or_default();
            self.state.metrics.secret_echo_redacted(upstream);
        }
        self.state.enqueue_event(event);
    }

    async fn secret(&self, name: &str, task: Option<&str>) -> Result<(u32, Zeroizing<Vec<u8>>), String> {
        self.state.secret_for(name, task, ACTOR).await
    }

    fn revocations(&self) -> broadcast::Receiver<Revoked> {
        self.revoked.subscribe()
    }

    fn may_act(&self, task: &str, agent: &str) -> bool {
        pipeline::task_may_act(&self.state, task, agent).is_ok()
    }

    fn environment(&self) -> Option<String> {
        Some(self.state.settings.environment.clone())
    }

    fn issuer(&self) -> String {
        self.state.settings.issuer.clone()
    }

    async fn wait_approval(&self, id: &str, wait: std::time::Duration) -> Result<String, String> {
        match mandate_server::approvals::wait(&self.state, id, wait).await {
            Ok(a) if a.status == mandate_core::ApprovalStatus::Pending && a.expires_at_ms <= self.state.clock.now_ms() => {
                Ok("expired".to_owned())
            }
            Ok(a) => Ok(a.status.as_str().to_owned()),
            Err(e) => Err(e.code),
        }
    }
}

/// A verdict as the gateway acts on it.
pub fn outcome(v: &pipeline::Verdict) -> Outcome {
    Outcome {
        allowed: v.allowed(),
        reason: v.reason().to_owned(),
        decision_id: Some(v.decision_id.clone()),
        error_code: v.decided.error_code.map(str::to_owned),
        policies: v.policies().to_vec(),
        approval_id: v.approval_id.clone(),
        receipt: None,
    }
}
