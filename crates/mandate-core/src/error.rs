/// Why a piece of domain input was refused.
///
/// Every variant carries a stable snake_case `code()` that the API exposes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    #[error("invalid agent name `{0}`: use 1 to 63 of a-z, 0-9, `-`, `_`, `.`, starting with a letter or digit")]
    InvalidAgentName(String),
    #[error("invalid trust domain `{0}`: use lowercase a-z, 0-9, `.`, `-`, `_`, at most 255 bytes")]
    InvalidTrustDomain(String),
    #[error("invalid SPIFFE ID `{value}`: {reason}")]
    InvalidSpiffeId { value: String, reason: &'static str },
    #[error("invalid intent: {0}")]
    InvalidIntent(String),
    #[error("invalid pattern `{pattern}`: {reason}")]
    InvalidPattern { pattern: String, reason: &'static str },
    #[error("unknown classification `{0}`: use public, internal, confidential or restricted")]
    UnknownClassification(String),
    #[error("unknown role `{0}`: use admin, approver, auditor or pep")]
    UnknownRole(String),
    #[error("invalid claim rule: {0}")]
    InvalidClaimRule(String),
}

impl DomainError {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::InvalidAgentName(_) => "invalid_agent_name",
            DomainError::InvalidTrustDomain(_) => "invalid_trust_domain",
            DomainError::InvalidSpiffeId { .. } => "invalid_spiffe_id",
            DomainError::InvalidIntent(_) => "invalid_intent",
            DomainError::InvalidPattern { .. } => "invalid_pattern",
            DomainError::UnknownClassification(_) => "unknown_classification",
            DomainError::UnknownRole(_) => "unknown_role",
            DomainError::InvalidClaimRule(_) => "invalid_claim_rule",
        }
    }
}
