//! Wire types for enforcement gateways that run apart from the control plane: the revocation
//! feed (`GET /v1/revocations`), secrets sealed to one gateway (`GET /v1/secrets/{name}/sealed`,
//! `POST /v1/secrets/{name}/leases`), evidence intake (`POST /v1/evidence`) and the registry of
//! remote gateways (`/v1/gateways`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The SSE event name of the first event on the feed: a [`FeedPosition`].
pub const EVENT_HELLO: &str = "hello";
/// The SSE event name of a [`RevocationEntry`]; its SSE `id` is the entry's `seq`.
pub const EVENT_REVOCATION: &str = "revocation";
/// The SSE event name of a [`FeedPosition`] sent when the entries after the resume point are
/// no longer held: the subscriber may have missed some and must treat its view as stale.
pub const EVENT_RESET: &str = "reset";

/// The most events one `POST /v1/evidence` may carry.
pub const MAX_EVIDENCE_EVENTS: usize = 512;

/// What a revocation-feed entry concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// `id` is a task id.
    Task,
    /// `id` is an agent name.
    Agent,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Task => "task",
            RevocationKind::Agent => "agent",
        }
    }
}

/// What happened to the task or agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationStatus {
    /// A task was revoked (by an admin, RFC 7009, a disabled agent, or as a delegated child).
    Revoked,
    /// A task was completed.
    Completed,
    /// A task's lifetime elapsed.
    Expired,
    /// An agent was disabled (the kill switch).
    Disabled,
    /// A disabled agent was enabled again. The only entry that does not stop anything.
    Enabled,
}

impl RevocationStatus {
    /// Whether the task or agent may no longer act.
    pub fn stops(self) -> bool {
        !matches!(self, RevocationStatus::Enabled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationStatus::Revoked => "revoked",
            RevocationStatus::Completed => "completed",
            RevocationStatus::Expired => "expired",
            RevocationStatus::Disabled => "disabled",
            RevocationStatus::Enabled => "enabled",
        }
    }
}

/// One entry of the revocation feed (`event: revocation`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationEntry {
    /// Position in the feed of this server process, from 1, without gaps.
    pub seq: u64,
    pub kind: RevocationKind,
    /// The task id or agent name.
    pub id: String,
    pub status: RevocationStatus,
    /// When the change took effect, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// The feed's identity and head (`event: hello` and `event: reset`). `epoch` is random per
/// server process: sequence numbers of different epochs have nothing to do with each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPosition {
    pub epoch: String,
    /// The last sequence number published when this was sent (0 before the first entry).
    pub seq: u64,
}

/// The HPKE suite every [`GatewaySealedView`] is sealed with (RFC 9180, base mode):
/// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
pub const SEAL_SUITE: &str = "hpke-x25519-hkdfsha256-chacha20poly1305";

/// `GET /v1/secrets/{name}/sealed`: the latest version of a secret, opened inside the control
/// plane and sealed with HPKE to the calling gateway's public key only. Byte fields are
/// base64url without padding; the gateway opens it with
/// `mandate_secrets::open_for_gateway(private_key, gateway, name, version, task, sealed)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySealedView {
    /// The secret's name.
    pub name: String,
    /// The secret's version.
    pub version: u32,
    /// The gateway it is sealed to (bound in the HPKE `info`).
    pub gateway: String,
    /// Always [`SEAL_SUITE`].
    pub suite: String,
    /// The HPKE encapsulated key.
    pub enc: String,
    /// The value, encrypted (with its tag).
    pub ciphertext: String,
}

/// `POST /v1/secrets/{name}/leases`: the credential of a dynamic secret for one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The task the credential is for; it must be live.
    pub task: String,
}

/// The answer to [`LeaseRequest`]: the lease, and its credential (a connection URL) sealed to
/// the calling gateway, under the dynamic secret's name and version and bound to the task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    pub lease: crate::admin::LeaseView,
    pub credential: GatewaySealedView,
}

/// `POST /v1/gateways`: register a remote gateway with its public key and the secrets it may
/// open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterGatewayRequest {
    /// 1 to 64 of `a-z0-9-_.`.
    pub name: String,
    /// The gateway's X25519 public key, base64url (as `mandate gateway keygen` prints it).
    pub public_key: String,
    /// The secrets (by name) it may open; each may be stored later.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// The answer to [`RegisterGatewayRequest`]: the gateway and its `pep` token, whose secret is
/// shown in this answer only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterGatewayResponse {
    pub gateway: GatewayView,
    /// The `pep` token bound to the gateway.
    pub token: String,
}

/// A registered remote gateway (`GET /v1/gateways`, `GET /v1/gateways/self`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    pub name: String,
    pub public_key: String,
    /// The secrets it may open, sorted.
    pub secrets: Vec<String>,
    /// The id of its `pep` token.
    pub token_id: String,
    pub created_at_ms: i64,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
}

/// `POST /v1/evidence`: audit events a remote gateway recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// At most [`MAX_EVIDENCE_EVENTS`].
    pub events: Vec<EvidenceEvent>,
}

/// One audit event from a gateway. The actor is the submitting API token, never a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceEvent {
    /// Only `tool.call` and `secret.echo_redacted` are accepted.
    pub kind: String,
    /// When it happened, by the gateway's clock, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub task: Option<String>,
    /// A JSON object. With `decision_id`, the event records what came of that decision, and
    /// `receipt` must be the one the decision was answered with.
    pub details: Value,
    /// The receipt of the decision the event records (`context.receipt` of the answer the
    /// submitting token got for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// The answer to `POST /v1/evidence`, sent once every event is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceResponse {
    pub recorded: usize,
    /// The audit sequence number of each event, in the order sent.
    pub seqs: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_entry_has_the_documented_shape() {
        let e = RevocationEntry { seq: 7, kind: RevocationKind::Task, id: "tsk_1".into(), status: RevocationStatus::Expired, at_ms: 5 };
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({"seq": 7, "kind": "task", "id": "tsk_1", "status": "expired", "at_ms": 5}));
        let back: RevocationEntry =
            serde_json::from_value(json!({"seq": 1, "kind": "agent", "id": "bot", "status": "enabled", "at_ms": 0})).unwrap();
        assert_eq!(back.status, RevocationStatus::Enabled);
        assert!(!back.status.stops());
        assert!(RevocationStatus::Disabled.stops());
        assert_eq!(serde_json::to_value(RevocationStatus::Completed).unwrap(), json!(RevocationStatus::Completed.as_str()));
        assert_eq!(serde_json::to_value(RevocationKind::Agent).unwrap(), json!(RevocationKind::Agent.as_str()));
    }

    #[test]
    fn evidence_takes_optional_agent_and_task_and_refuses_unknown_fields() {
        let r: EvidenceRequest = serde_json::from_value(json!({"events": [{"kind": "tool.call", "ts_ms": 1, "details": {}}]})).unwrap();
        assert_eq!(r.events[0].agent, None);
        assert!(serde_json::from_value::<EvidenceRequest>(json!({"events": [], "extra": 1})).is_err());
        assert!(
            serde_json::from_value::<EvidenceRequest>(json!({"events": [{"kind": "tool.call", "ts_ms": 1, "details": {}, "actor": "x"}]}))
                .is_err()
        );
    }
}
