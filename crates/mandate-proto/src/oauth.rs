//! OAuth 2.0 bodies: token exchange (RFC 8693), introspection (RFC 7662), the RFC 6749 error.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The form fields of `POST /oauth2/token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenExchangeForm {
    #[serde(default)]
    pub grant_type: Option<String>,
    #[serde(default)]
    pub subject_token: Option<String>,
    #[serde(default)]
    pub subject_token_type: Option<String>,
    #[serde(default)]
    pub actor_token: Option<String>,
    #[serde(default)]
    pub actor_token_type: Option<String>,
    /// A JSON array (RFC 9396) holding one `agent_task` object.
    #[serde(default)]
    pub authorization_details: Option<String>,
    #[serde(default)]
    pub requested_token_type: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// RFC 8693 §2.2.1 plus `task_id` and the granted `authorization_details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenExchangeResponse {
    pub access_token: String,
    pub issued_token_type: String,
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
    pub task_id: String,
    pub authorization_details: Vec<Value>,
}

/// RFC 6749 §5.2 error body, with Mandate's finer code alongside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Mandate's stable detail code (`replayed_jti`, `expired`, `policy_denied`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandate_error: Option<String>,
}

/// RFC 7662 response. An inactive token yields only `{"active":false}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IntrospectionResponse {
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<Value>>,
    /// The delegation chain of a delegated mandate (RFC 8693 §4.1): `sub` is the root agent,
    /// `act.sub` the agent acting (also `client_id`), nested `act`s the agents before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
}

/// `GET /.well-known/jwks.json` (RFC 7517 §5): the control plane's mandate signing keys. Each
/// key stays a JSON object here; `mandate_token::PublicKey::from_jwk` reads one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JwkSet {
    /// No `keys` member reads as no keys.
    #[serde(default)]
    pub keys: Vec<Value>,
}
