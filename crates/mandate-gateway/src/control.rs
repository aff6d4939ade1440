//! What the gateway needs from the control plane, as one trait with two implementations:
//! in-process when the gateway is mounted inside `mandate serve` ([`crate::embedded`]) and
//! over HTTP when it runs apart ([`crate::remote`]). Every method fails closed: an error is a
//! refusal, never an allow.

use std::sync::Arc;

use async_trait::async_trait;
use mandate_audit::NewEvent;
use mandate_proto::gateway::{RevocationEntry, RevocationKind};
use mandate_token::VerifiedMandate;
use tokio::sync::broadcast;
use zeroize::Zeroizing;

use crate::authz::{Ask, Outcome};

/// Why a request was refused before any decision was asked for.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// A stable code: `mandate_required`, `invalid_mandate`, `task_revoked`, `agent_disabled`,
    /// `control_plane_unavailable`, ….
    pub reason: String,
    /// A detail code for a refused mandate (`expired`, `bad_signature`, …).
    pub error_code: Option<String>,
    /// The mandate, when it verified but its task or agent may not act: a tool call made
    /// with it is still decided (and so recorded) by the control plane.
    pub mandate: Option<Arc<VerifiedMandate>>,
}

impl Refusal {
    pub fn new(reason: &str) -> Self {
        Refusal { reason: reason.to_owned(), error_code: None, mandate: None }
    }

    pub fn with_code(reason: &str, code: &str) -> Self {
        Refusal { reason: reason.to_owned(), error_code: Some(code.to_owned()), mandate: None }
    }

    /// A refusal of a mandate that verified.
    pub fn of(reason: &str, mandate: Arc<VerifiedMandate>) -> Self {
        Refusal { reason: reason.to_owned(), error_code: None, mandate: Some(mandate) }
    }

    /// True when the credential itself is at fault (HTTP 401), rather than what it is for.
    pub fn is_credential(&self) -> bool {
        matches!(self.reason.as_str(), "mandate_required" | "invalid_mandate")
    }
}

/// The stable codes a dynamic secret's credential may fail with, passed on to the agent as
/// they are (anything else is `secret_unavailable`).
pub const LEASE_CODES: [&str; 6] = [
    "secret_needs_task",
    "secret_is_dynamic",
    "dynamic_secret_unusable",
    "lease_database_unreachable",
    "lease_refused_by_database",
    "audit_unavailable",
];

/// The codes of a remote gateway's registration a secret may fail with, passed on to the
/// agent as they are.
pub const GATEWAY_CODES: [&str; 4] = ["gateway_not_registered", "gateway_revoked", "secret_not_granted", "gateway_key_mismatch"];

/// A task or agent that may no longer act, as the control plane announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    Task(String),
    Agent(String),
    /// Announcements may have been missed: every open session is checked again.
    Stale,
}

/// A revocation feed entry as a revocation, if it stops something from acting.
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
pub trait ControlPlane: Send + Sync + 'static {
    /// Verifies a mandate (signature, `typ`, issuer, audience, expiry; cached) and checks that
    /// its task is live and its agent active, from state that revocation updates at once.
    async fn check_mandate(&self, token: &str) -> Result<Arc<VerifiedMandate>, Refusal>;

    /// Decides every ask (in `environment` when the gateway names one), made durable in the
    /// trail before this returns; the outcomes are in ask order. An unreachable control plane
    /// answers every ask with a deny.
    async fn decide(&self, asks: &[Ask<'_>], environment: Option<&str>, request_id: Option<&str>) -> Vec<Outcome>;

    /// Queues an evidence event (a tool call's outcome); does not wait for durability.
    fn record(&self, event: NewEvent);

    /// The latest version of a secret and its value (zeroized when dropped); for a dynamic
    /// secret (`postgres-dynamic`), the credential of `task` (minted on first use; none without
    /// a task: `secret_needs_task`). The error is a stable code (`secret_not_found`,
    /// `secret_unavailable`, `lease_database_unreachable`, …); it never holds the value.
    async fn secret(&self, name: &str, task: Option<&str>) -> Result<(u32, Zeroizing<Vec<u8>>), String>;

    /// Revocations as they happen, so open sessions of a revoked task are closed at once.
    fn revocations(&self) -> broadcast::Receiver<Revoked>;

    /// Whether a task and its agent may still act, as far as this control plane knows (used
    /// to re-check open sessions after [`Revoked::Stale`]).
    fn may_act(&self, task: &str, agent: &str) -> bool;

    /// The `environment` decisions are made in when the gateway config names none.
    fn environment(&self) -> Option<String> {
        None
    }

    /// Where agents get mandates: the `authorization_servers` of the protected-resource metadata.
    fn issuer(&self) -> String;

    /// Waits, at most `wait`, until the approval is decided, and returns its status
    /// (`pending` when the wait ran out, `approved`, `denied`, `expired`, `used`). The error
    /// is a stable code; a caller treats it as "still not approved".
    async fn wait_approval(&self, id: &str, wait: std::time::Duration) -> Result<String, String>;
}
