use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AgentName, DomainError, Intent, SpiffeId};

/// Whether an agent may act. Disabling is the kill switch: it also ends every live task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    Disabled,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Active => "active",
            AgentStatus::Disabled => "disabled",
        }
    }
}

/// A registered autonomous workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub name: AgentName,
    pub spiffe_id: SpiffeId,
    /// The named human accountable for this agent.
    pub owner: String,
    pub purpose: String,
    pub status: AgentStatus,
    /// Free-form string attributes, visible to policy as entity tags.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The public JWK the agent signs attestations with, if it attests with a registered key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_jwk: Option<serde_json::Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When the agent last obtained a mandate (for stale-agent reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
}

/// The life of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Live,
    Completed,
    Revoked,
    Expired,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Live => "live",
            TaskStatus::Completed => "completed",
            TaskStatus::Revoked => "revoked",
            TaskStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [TaskStatus::Live, TaskStatus::Completed, TaskStatus::Revoked, TaskStatus::Expired].into_iter().find(|t| t.as_str() == s)
    }
}

/// How and why a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEnd {
    pub status: TaskStatus,
    pub at_ms: i64,
    /// Who ended it (an admin token id, `agent:<name>`, `system`).
    pub by: String,
    pub reason: String,
}

/// One unit of work an agent declared before acting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub agent: AgentName,
    pub intent: Intent,
    pub status: TaskStatus,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The `jti` of the mandate issued for this task.
    pub mandate_jti: String,
    /// The task this one was delegated from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// The first task of the delegation chain (itself when not delegated).
    pub root_id: String,
    /// Delegation depth: 0 for a task an agent opened itself.
    pub depth: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<TaskEnd>,
}

/// What an admin API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Act on approvals; read agents and tasks.
    Approver,
    /// Read agents, tasks and the audit trail.
    Auditor,
    /// A policy enforcement point: ask for decisions and nothing else.
    Pep,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Pep => "pep",
        }
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Role::Admin, Role::Approver, Role::Auditor, Role::Pep]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| DomainError::UnknownRole(s.chars().take(40).collect()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An admin API bearer token. Only the SHA-256 of the secret is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub role: Role,
    pub label: String,
    /// Hex SHA-256 of the token secret.
    pub secret_hash: String,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
}

/// Maps a claim of a trusted issuer's token to an agent name. The pattern holds exactly one
/// `{agent}` placeholder, e.g. `system:serviceaccount:prod:{agent}` or
/// `spiffe://cluster.local/ns/prod/sa/{agent}`; everything else matches literally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    pub claim: String,
    pub pattern: String,
}

impl ClaimRule {
    pub fn new(claim: &str, pattern: &str) -> Result<Self, DomainError> {
        if claim.is_empty() || claim.len() > 128 {
            return Err(DomainError::InvalidClaimRule("claim name must be 1 to 128 bytes".into()));
        }
        if pattern.matches("{agent}").count() != 1 {
            return Err(DomainError::InvalidClaimRule(format!("pattern `{pattern}` must hold `{{agent}}` exactly once")));
        }
        Ok(ClaimRule { claim: claim.to_owned(), pattern: pattern.to_owned() })
    }

    /// The agent name this rule maps `value` to, if it matches.
    pub fn map(&self, value: &str) -> Option<AgentName> {
        let (prefix, suffix) = self.pattern.split_once("{agent}")?;
        let middle = value.strip_prefix(prefix)?.strip_suffix(suffix)?;
        AgentName::parse(middle).ok()
    }
}

/// A trusted external token issuer (Kubernetes, SPIRE, CI OIDC, any OIDC provider).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issuer {
    /// The `iss` value its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry to be accepted here.
    pub audience: String,
    /// The issuer's JWKS (RFC 7517 JSON).
    pub jwks: serde_json::Value,
    /// Where the JWKS is refreshed from, if it was given as a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    pub rules: Vec<ClaimRule>,
    pub created_at_ms: i64,
    /// The longest a token of this issuer may live (`exp - iat`, or `exp - now` without
    /// `iat`); none: the server's attestation limit (`attestation_max_lifetime_secs`, 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_secs: Option<u64>,
    /// Whether a token without `jti` is accepted (and then again while it is valid, each
    /// reuse audited); otherwise such a token is refused. A token with a `jti` is accepted once.
    #[serde(default)]
    pub allow_token_reuse: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_rules_map_one_placeholder() {
        let r = ClaimRule::new("sub", "system:serviceaccount:prod:{agent}").unwrap();
        assert_eq!(r.map("system:serviceaccount:prod:support-bot").unwrap().as_str(), "support-bot");
        assert!(r.map("system:serviceaccount:dev:support-bot").is_none());
        assert!(r.map("system:serviceaccount:prod:Bad/Name").is_none());
        assert!(ClaimRule::new("sub", "no-placeholder").is_err());
        assert!(ClaimRule::new("sub", "{agent}{agent}").is_err());
        let s = ClaimRule::new("sub", "spiffe://cluster.local/ns/prod/sa/{agent}").unwrap();
        assert_eq!(s.map("spiffe://cluster.local/ns/prod/sa/bot").unwrap().as_str(), "bot");
    }

    #[test]
    fn roles_parse() {
        assert_eq!("pep".parse::<Role>().unwrap(), Role::Pep);
        assert_eq!("root".parse::<Role>().unwrap_err().code(), "unknown_role");
    }
}
