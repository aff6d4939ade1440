use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::AppState;

/// RFC 8414 authorization server metadata.
pub async fn oauth_metadata(State(state): State<Arc<AppState>>) -> Json<Value> {
    let iss = &state.settings.issuer;
    Json(json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oauth2/token"),
        "jwks_uri": format!("{iss}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "grant_types_supported": [mandate_proto::oauth::GRANT_TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["bearer"],
        "revocation_endpoint_auth_methods_supported": ["none", "bearer"],
        "authorization_details_types_supported": [mandate_core::AGENT_TASK_TYPE],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
        "subject_token_types_supported": [mandate_proto::oauth::TOKEN_TYPE_JWT],
        "mandate_trust_domain": state.settings.trust_domain.as_str(),
        "mandate_audience": state.settings.audience,
    }))
}

pub async fn jwks(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(mandate_token::jwks(&state.keys.signing().published))
}

/// AuthZEN PDP metadata.
pub async fn authzen_metadata(State(state): State<Arc<AppState>>) -> Json<Value> {
    let iss = &state.settings.issuer;
    Json(json!({
        "policy_decision_point": iss,
        "access_evaluation_endpoint": format!("{iss}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{iss}/access/v1/evaluations"),
        "capabilities": [],
    }))
}
