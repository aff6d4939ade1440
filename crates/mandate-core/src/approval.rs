//! Human approval as a policy obligation: a request a policy marked `@approval("required")`
//! waits for a person, bound to the exact call.

use serde::{Deserialize, Serialize};

/// Where an approval request is in its life. `pending` → `approved` → `used`, or `pending` →
/// `denied`, or `pending`/`approved` → `expired`. Only these moves exist; each happens once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
    Used,
}

impl ApprovalStatus {
    pub const ALL: [ApprovalStatus; 5] =
        [ApprovalStatus::Pending, ApprovalStatus::Approved, ApprovalStatus::Denied, ApprovalStatus::Expired, ApprovalStatus::Used];

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Expired => "expired",
            ApprovalStatus::Used => "used",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// No further move is possible.
    pub fn is_final(self) -> bool {
        matches!(self, ApprovalStatus::Denied | ApprovalStatus::Expired | ApprovalStatus::Used)
    }
}

/// One request for a person's yes or no, bound to one exact call: the task and its mandate,
/// the action, the resource and the digest of the arguments. A granted approval allows that
/// call exactly once, before `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub task_id: String,
    pub agent: String,
    /// The `jti` of the mandate the call was made with.
    pub mandate_jti: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// The call's `context.arguments` as the decision saw them (`null` when it had none, or a
    /// marker when they were too large to keep).
    #[serde(default)]
    pub arguments: serde_json::Value,
    /// Hex SHA-256 of the canonical JSON of `context.arguments`.
    pub arguments_digest: String,
    /// Hex SHA-256 over everything the approval is bound to: what identifies "the identical
    /// request".
    pub binding: String,
    /// The decision that asked for the approval.
    pub decision_id: String,
    /// The policies that asked for it.
    #[serde(default)]
    pub policies: Vec<String>,
    pub status: ApprovalStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The API token that decided (`token:<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// That token's label: the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at_ms: Option<i64>,
    /// The decision the approval allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by_decision: Option<String>,
}

impl Approval {
    /// Still open to a decision or a use at `now_ms`.
    pub fn open_at(&self, now_ms: i64) -> bool {
        matches!(self.status, ApprovalStatus::Pending | ApprovalStatus::Approved) && self.expires_at_ms > now_ms
    }
}
