//! The audit event model: what a caller records ([`NewEvent`]), what the trail holds once an
//! event is sealed into the hash chain ([`SealedEvent`]), and the chain's head ([`ChainHead`]).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::timefmt::rfc3339_ms;

/// The event kinds Mandate records. A kind is a stable, dotted, lowercase name; exporters and
/// queries match on it.
pub mod kinds {
    /// A task was opened and its mandate is about to be issued.
    pub const TASK_OPENED: &str = "task.opened";
    /// Policy refused to open a task.
    pub const TASK_OPEN_DENIED: &str = "task.open_denied";
    /// A mandate (task token) was issued.
    pub const TOKEN_ISSUED: &str = "token.issued";
    /// A request-time access decision.
    pub const DECISION: &str = "decision";
    /// A tool call an enforcement gateway forwarded, or refused to forward, and its outcome.
    pub const TOOL_CALL: &str = "tool.call";
    /// A task was completed by its agent.
    pub const TASK_COMPLETED: &str = "task.completed";
    /// A task was revoked.
    pub const TASK_REVOKED: &str = "task.revoked";
    /// A task reached its expiry.
    pub const TASK_EXPIRED: &str = "task.expired";
    /// An agent was registered.
    pub const AGENT_REGISTERED: &str = "agent.registered";
    /// An agent was disabled (the kill switch).
    pub const AGENT_DISABLED: &str = "agent.disabled";
    /// A disabled agent was enabled again.
    pub const AGENT_ENABLED: &str = "agent.enabled";
    /// A new policy set was loaded.
    pub const POLICY_RELOADED: &str = "policy.reloaded";
    /// A policy reload was refused; the previous set stays in force.
    pub const POLICY_RELOAD_FAILED: &str = "policy.reload_failed";
    /// Entity data for policy was loaded.
    pub const ENTITIES_LOADED: &str = "entities.loaded";
    /// An admin API request carried a missing, unknown or revoked token.
    pub const ADMIN_AUTH_FAILED: &str = "admin.auth_failed";
    /// A workload's attestation was refused.
    pub const ATTESTATION_REFUSED: &str = "attestation.refused";
    /// An admin API token was created.
    pub const API_TOKEN_CREATED: &str = "api_token.created";
    pub const API_TOKEN_REVOKED: &str = "api_token.revoked";
    /// A trusted external issuer was added.
    pub const ISSUER_ADDED: &str = "issuer.added";
    /// A trusted external issuer was removed.
    pub const ISSUER_REMOVED: &str = "issuer.removed";
    /// The signing key was rotated.
    pub const KEY_ROTATED: &str = "key.rotated";
    /// A secret was stored (version 1).
    pub const SECRET_PUT: &str = "secret.put";
    /// A secret got a new version.
    pub const SECRET_ROTATED: &str = "secret.rotated";
    /// Every version of a secret was deleted.
    pub const SECRET_DELETED: &str = "secret.deleted";
    /// A dynamic secret minted a credential for one task (a database role); never the password.
    pub const SECRET_LEASE_CREATED: &str = "secret.lease_created";
    /// Minting a lease failed; nothing was left at the target.
    pub const SECRET_LEASE_FAILED: &str = "secret.lease_failed";
    /// A lease's credential was dropped at its target (its task ended, or it expired).
    pub const SECRET_LEASE_DROPPED: &str = "secret.lease_dropped";
    /// An upstream's answer held the secret the gateway injected into its request (raw or
    /// encoded); the gateway replaced it before the agent saw it. The secret's name and
    /// version, the upstream, the tool, the decision, how many matches and in which
    /// encodings; never the value.
    pub const SECRET_ECHO_REDACTED: &str = "secret.echo_redacted";
    /// A secret (or a lease's credential) was opened inside the control plane and sealed to
    /// one registered remote gateway; its name and version, never the value.
    pub const SECRET_SEALED: &str = "secret.sealed";
    /// A gateway asked for a secret it may not open (not granted, not registered, revoked).
    pub const SECRET_SEAL_REFUSED: &str = "secret.seal_refused";
    /// A remote gateway was registered with its public key and the secrets it may open.
    pub const GATEWAY_REGISTERED: &str = "gateway.registered";
    /// A remote gateway was revoked, and its `pep` token with it.
    pub const GATEWAY_REVOKED: &str = "gateway.revoked";
    /// The control plane started.
    pub const SERVER_STARTED: &str = "server.started";
    /// The control plane stopped.
    pub const SERVER_STOPPED: &str = "server.stopped";
    /// A person logged in to the web console with an API token.
    pub const CONSOLE_LOGIN: &str = "console.login";
    /// A person logged out of the web console.
    pub const CONSOLE_LOGOUT: &str = "console.logout";
    /// A console form was refused as a possible forgery (wrong or missing CSRF token, or
    /// sent from another site); nothing was changed.
    pub const CONSOLE_CSRF_REFUSED: &str = "console.csrf_refused";

    /// A decision asked for a person's approval: the request, bound to one exact call.
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    /// An approver said yes (with who and the comment).
    pub const APPROVAL_APPROVED: &str = "approval.approved";
    /// An approver said no.
    pub const APPROVAL_DENIED: &str = "approval.denied";
    /// A granted approval allowed its one call.
    pub const APPROVAL_USED: &str = "approval.used";
    /// An approval request, or a grant never used, ran out of time.
    pub const APPROVAL_EXPIRED: &str = "approval.expired";
    /// The approval webhook could not be delivered after every retry.
    pub const APPROVAL_NOTIFY_FAILED: &str = "approval.notify_failed";

    /// Every kind above.
    pub const ALL: [&str; 43] = [
        TASK_OPENED,
        TASK_OPEN_DENIED,
        TOKEN_ISSUED,
        DECISION,
        TOOL_CALL,
        TASK_COMPLETED,
        TASK_REVOKED,
        TASK_EXPIRED,
        AGENT_REGISTERED,
        AGENT_DISABLED,
        AGENT_ENABLED,
        POLICY_RELOADED,
        POLICY_RELOAD_FAILED,
        ENTITIES_LOADED,
        ADMIN_AUTH_FAILED,
        ATTESTATION_REFUSED,
        API_TOKEN_CREATED,
        API_TOKEN_REVOKED,
        ISSUER_ADDED,
        ISSUER_REMOVED,
        KEY_ROTATED,
        SECRET_PUT,
        SECRET_ROTATED,
        SECRET_DELETED,
        SECRET_LEASE_CREATED,
        SECRET_LEASE_FAILED,
        SECRET_LEASE_DROPPED,
        SECRET_ECHO_REDACTED,
        SECRET_SEALED,
        SECRET_SEAL_REFUSED,
        GATEWAY_REGISTERED,
        GATEWAY_REVOKED,
        SERVER_STARTED,
        SERVER_STOPPED,
        APPROVAL_REQUESTED,
        APPROVAL_APPROVED,
        APPROVAL_DENIED,
        APPROVAL_USED,
        APPROVAL_EXPIRED,
        APPROVAL_NOTIFY_FAILED,
        CONSOLE_LOGIN,
        CONSOLE_LOGOUT,
        CONSOLE_CSRF_REFUSED,
    ];
}

/// The hash that precedes the first event: 64 hex zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event as a caller records it, before it has a place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NewEvent {
    /// When it happened, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// One of [`kinds`].
    pub kind: String,
    /// Who caused it: an admin token id, `agent:<name>`, `system`.
    pub actor: String,
    /// The agent it concerns, if any.
    pub agent: Option<String>,
    /// The task it concerns, if any.
    pub task: Option<String>,
    /// Kind-specific detail.
    pub details: Value,
}

/// An event sealed into the hash chain.
///
/// `body` is the authoritative record: the canonical JSON of every other field except `hash`
/// (and with `details`). The columns beside it exist so that stores can index and query; a
/// verifier checks that they agree with the body.
#[derive(Clone, Debug, PartialEq)]
pub struct SealedEvent {
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// One of [`kinds`].
    pub kind: String,
    /// Who caused it.
    pub actor: String,
    /// The agent it concerns, if any.
    pub agent: Option<String>,
    /// The task it concerns, if any.
    pub task: Option<String>,
    /// Canonical JSON of `{actor, agent, details, kind, prev_hash, seq, task, ts_ms}`.
    pub body: String,
    /// Hex SHA-256 of the previous event's body ([`GENESIS_HASH`] for the first event).
    pub prev_hash: String,
    /// Hex SHA-256 of `body`.
    pub hash: String,
}

impl SealedEvent {
    /// The event's `details`, read from the body; `null` if the body cannot be read.
    pub fn details(&self) -> Value {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Object(mut map)) => map.remove("details").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The event as Mandate's own JSON export shape:
    /// `{seq, ts, ts_ms, kind, actor, agent, task, details, prev_hash, hash}`, where `ts` is the
    /// RFC 3339 UTC form of `ts_ms`.
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "ts": rfc3339_ms(self.ts_ms),
            "ts_ms": self.ts_ms,
            "kind": self.kind,
            "actor": self.actor,
            "agent": self.agent,
            "task": self.task,
            "details": self.details(),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

/// The last sealed event's position and hash: what the next event links to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// The last event's seq; 0 for an empty trail.
    pub seq: u64,
    /// The last event's hash; [`GENESIS_HASH`] for an empty trail.
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty trail.
    pub fn genesis() -> Self {
        ChainHead { seq: 0, hash: GENESIS_HASH.to_owned() }
    }
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead::genesis()
    }
}
