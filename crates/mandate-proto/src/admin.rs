//! Bodies of the admin API under `/v1`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgentRequest {
    pub name: String,
    pub owner: String,
    pub purpose: String,
    /// The public JWK (Ed25519 or P-256) the agent signs attestations with. Optional when the
    /// agent attests through a trusted external issuer instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub name: String,
    pub spiffe_id: String,
    pub owner: String,
    pub purpose: String,
    pub status: String,
    pub attributes: BTreeMap<String, String>,
    pub attestation: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
    /// Live tasks of the agent (in `GET /v1/agents/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_tasks: Option<usize>,
}

/// The result of `disable` (the kill switch) or `enable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatusChange {
    pub agent: AgentView,
    /// Tasks that the change ended.
    pub revoked_tasks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub agent: String,
    pub status: String,
    pub purpose: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub max_classification: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub root_id: String,
    pub depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<String>,
}

/// `POST /v1/tasks/{id}/revoke` and `/complete`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndTaskRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndTaskResponse {
    pub task: TaskView,
    /// Every task this call ended: the task and those delegated from it.
    pub ended: Vec<String>,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub role: String,
    #[serde(default)]
    pub label: String,
}

/// The secret is shown in this response only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    pub id: String,
    pub role: String,
    pub label: String,
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub role: String,
    pub label: String,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
}

/// `POST /v1/issuers`: trust an external issuer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddIssuerRequest {
    pub issuer: String,
    pub audience: String,
    /// The JWKS itself, or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// where to fetch it (https, or http on loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    pub rules: Vec<ClaimRuleView>,
    /// The longest a token may live (`exp - iat`, or `exp - now` without `iat`), 1 to 86400;
    /// absent: the server's attestation limit (`attestation_max_lifetime_secs`, 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_secs: Option<u64>,
    /// Accept tokens without `jti` (each use after the first is audited as a reuse); without
    /// it, such tokens are refused (`jti_required`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_token_reuse: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRuleView {
    pub claim: String,
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuerView {
    pub issuer: String,
    pub audience: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    pub keys: usize,
    pub rules: Vec<ClaimRuleView>,
    pub created_at_ms: i64,
    /// Absent: the server's attestation limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_secs: Option<u64>,
    #[serde(default)]
    pub allow_token_reuse: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub version: String,
    pub policies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_version: Option<String>,
    pub entities: usize,
}

/// `POST /v1/policies/reload`: the new version, or the diagnostics that kept the old one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResponse {
    pub reloaded: bool,
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitiesLoadResponse {
    pub entities: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotateResponse {
    pub kid: String,
    pub previous_kid: String,
    /// When the previous key leaves the JWKS (every token it signed has expired by then).
    pub previous_retires_at_ms: i64,
}

/// `GET /v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditVerifyResponse {
    pub ok: bool,
    pub events: u64,
    pub checkpoints: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hash: Option<String>,
    /// The first bad sequence number, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /v1/audit/events` and `/v1/audit/trail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventsResponse {
    pub events: Vec<Value>,
}

/// `GET /v1/info`: who am I talking to, and as whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub issuer: String,
    pub trust_domain: String,
    pub audience: String,
    pub version: String,
    pub role: String,
}

/// `PUT /v1/secrets/{name}`: stores version 1 of a new secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// The value. Never returned by any endpoint.
    pub value: String,
    #[serde(default)]
    pub description: String,
    /// `static` (the default) or `postgres-dynamic` (the value is the JSON configuration a
    /// per-task database role is minted from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl std::fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("value", &"<redacted>")
            .field("description", &self.description)
            .field("kind", &self.kind)
            .finish()
    }
}

/// `POST /v1/secrets/{name}/rotate`: stores the next version of an existing secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// The new value. Never returned by any endpoint.
    pub value: String,
}

impl std::fmt::Debug for RotateSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateSecretRequest").field("value", &"<redacted>").finish()
    }
}

/// A secret's metadata (its latest version). No endpoint ever returns the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretView {
    pub name: String,
    pub version: u32,
    /// `static` or `postgres-dynamic`.
    #[serde(default = "static_kind")]
    pub kind: String,
    pub description: String,
    pub created_at_ms: i64,
    pub created_by: String,
}

fn static_kind() -> String {
    "static".to_owned()
}

/// A dynamic credential minted for one task (`GET /v1/leases`): metadata only, never the
/// credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    pub id: String,
    /// The dynamic secret it was minted from, and that secret's version.
    pub secret: String,
    pub secret_version: u32,
    pub task_id: String,
    /// The database role.
    pub role: String,
    pub created_at_ms: i64,
    /// The role's `VALID UNTIL` (the task's expiry).
    pub expires_at_ms: i64,
    /// `live` until dropped, then `dropped`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at_ms: Option<i64>,
    /// `task_completed`, `task_revoked`, `task_expired`, `lease_expired`, `mint_failed`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
}

/// An approval request as `/v1/approvals` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: String,
    pub task_id: String,
    pub agent: String,
    pub mandate_jti: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    #[serde(default)]
    pub arguments: serde_json::Value,
    pub arguments_digest: String,
    pub binding: String,
    pub decision_id: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// `pending`, `approved`, `denied`, `expired` or `used`.
    pub status: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by_decision: Option<String>,
    /// What became of the webhook announcement: `{state, attempts, last_error}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<serde_json::Value>,
}

/// The body of `POST /v1/approvals/{id}/approve` and `/deny`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecisionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}
