//! OpenID AuthZEN Authorization API 1.0 bodies. Unknown fields are ignored, as the spec says.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /access/v1/evaluation`. Every member is optional at the serde level so that a missing
/// one is answered with the spec's 400 and a precise message instead of a parser error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
}

/// A subject or a resource: `{type, id, properties?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// `{name, properties?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Action {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

/// `{decision, context?}`. Mandate always fills `context` (see [`DecisionContext`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationResponse {
    pub decision: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
}

/// What Mandate puts in a response's `context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionContext {
    /// Identifies the decision in the audit trail.
    pub decision_id: String,
    /// Stable code: `allowed`, `no_policy_permits`, `forbidden_by_policy`,
    /// `approval_required`, `action_outside_intent`, `task_revoked`, `invalid_mandate`, ….
    pub reason: String,
    /// The ids of the policies that decided.
    #[serde(default)]
    pub policies: Vec<String>,
    /// The version of the policy set that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<Value>,
    /// A detail code for a refused mandate (`expired`, `bad_signature`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Item errors in a batch: `{status, message}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// With `approval_required`: the approval request to decide; with an allow: the granted
    /// approval this call used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// For a `pep` token: the evidence receipt of this decision, to send back with the
    /// `tool.call` event that records what came of it (`POST /v1/evidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub status: u16,
    pub message: String,
}

/// `POST /access/v1/evaluations`: top-level members are defaults for each item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Entity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations: Option<Vec<EvaluationRequest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<EvaluationsOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvaluationsOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluations_semantic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationsResponse {
    pub evaluations: Vec<EvaluationResponse>,
}

/// The batch semantics AuthZEN defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvaluationsSemantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl EvaluationsSemantic {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "execute_all" => Some(Self::ExecuteAll),
            "deny_on_first_deny" => Some(Self::DenyOnFirstDeny),
            "permit_on_first_permit" => Some(Self::PermitOnFirstPermit),
            _ => None,
        }
    }
}
