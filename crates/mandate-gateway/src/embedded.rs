//! The control plane in the same process (`mandate serve` with a `[gateway]` section):
//! mandates are checked against the server's own keys and registry, decisions run the
//! pipeline directly, evidence goes to the server's audit writer. No HTTP hop anywhere.

use std::sync::Arc;

use async_trait::async_trait;
use mandate_audit::NewEvent;
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse};
use mandate_proto::gateway::{RevocationEntry, RevocationKind};
use mandate_server::pipeline;
use mandate_server::{AppState, FeedItem};
use mandate_token::VerifiedMandate;
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::control::{ControlPlane, Refusal, Revoked};

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

/// A feed entry as a revocation, if it stops something from acting.
pub fn as_revoked(entry: &RevocationEntry) -> Option<Revoked> {
    if !entry.status.stops() {
        return None;
    }
    Some(match entry.kind {
        RevocationKind::Task => Revoked::Task(entry.id.clone()),
        RevocationKind::Agent => Revoked::Agent(entry.id.clone()),
    })
}

#[async_trait]
impl ControlPlane for Embedded {
    async fn check_mandate(&self, token: &str) -> Result<Arc<VerifiedMandate>, Refusal> {
        // The pipeline's own rules, so the gateway and a decision never disagree on them.
        let mandate = pipeline::verified_mandate(&self.state, token).map_err(|e| Refusal::with_code("invalid_mandate", e.code()))?;
        match pipeline::may_act_now(&self.state, &mandate).await {
            Ok(_) => Ok(mandate),
            Err(reason) => Err(Refusal::of(reason, mandate)),
        }
    }

    async fn decide(&self, requests: Vec<EvaluationRequest>, request_id: Option<&str>) -> Vec<EvaluationResponse> {
        pipeline::decide_all(&self.state, &requests, ACTOR, request_id)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(v) => v.response(),
                Err(message) => pipeline::item_error(400, &message),
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
