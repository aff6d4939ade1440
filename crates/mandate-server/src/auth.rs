//! Admin API authentication: `Authorization: Bearer <api token>`, each token with one role.

use axum::http::HeaderMap;
use mandate_audit::kinds;
use mandate_core::{ApiToken, Role};

use crate::error::ApiError;
use crate::state::{AppState, hash_secret};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
    /// The token's label: who holds it (shown as the approver, compared with agent owners).
    pub label: String,
}

impl Caller {
    /// The actor recorded in the audit trail.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

/// The bearer credential of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

/// Authenticates the request's API token and checks that its role is one of `roles`
/// (`admin` is always allowed). A failure is audited and answered 401 or 403.
pub async fn require(state: &AppState, headers: &HeaderMap, roles: &[Role], what: &str) -> Result<Caller, ApiError> {
    authorize(state, headers, roles, true, what).await
}

/// As [`require`], but only the given roles, not `admin`: for what only an enforcement point
/// may do (read sealed secrets, submit evidence of what it enforced).
pub async fn require_only(state: &AppState, headers: &HeaderMap, roles: &[Role], what: &str) -> Result<Caller, ApiError> {
    authorize(state, headers, roles, false, what).await
}

async fn authorize(state: &AppState, headers: &HeaderMap, roles: &[Role], admin: bool, what: &str) -> Result<Caller, ApiError> {
    let Some(secret) = bearer(headers) else {
        return Err(refuse(state, "missing", what, None).await);
    };
    let token = match lookup(state, secret).await? {
        Some(t) => t,
        None => {
            if let Some(gateway) = revoked_gateway(state, secret).await {
                let err = refuse(state, "gateway_revoked", what, None).await;
                return Err(err
                    .with_code("gateway_revoked")
                    .with_message(format!("gateway `{}` is revoked", mandate_core::clip(&gateway))));
            }
            return Err(refuse(state, "unknown_token", what, None).await);
        }
    };
    let allowed = roles.contains(&token.role) || (admin && token.role == Role::Admin);
    if !allowed {
        return Err(refuse(state, "role_not_allowed", what, Some(&token)).await);
    }
    Ok(Caller { token_id: token.id, role: token.role, label: token.label })
}

/// Finds an API token by its secret: memory first, then the store (a token made by another
/// replica), never a revoked one.
pub async fn lookup(state: &AppState, secret: &str) -> Result<Option<ApiToken>, ApiError> {
    if secret.len() > 512 {
        return Ok(None);
    }
    let hash = hash_secret(secret);
    if let Some(t) = state.api_tokens.read().get(&hash) {
        return Ok(Some(t.clone()));
    }
    let found = state.store.api_token_by_hash(&hash).await?;
    match found {
        Some(t) if t.revoked_at_ms.is_none() => {
            state.api_tokens.write().insert(hash, t.clone());
            Ok(Some(t))
        }
        _ => Ok(None),
    }
}

/// The name of the revoked gateway whose (revoked) token `secret` is, if it is one: so that
/// gateway learns why it gets nothing (`gateway_revoked`) rather than a bare 401.
async fn revoked_gateway(state: &AppState, secret: &str) -> Option<String> {
    if secret.len() > 512 {
        return None;
    }
    let token = state.store.api_token_by_hash(&hash_secret(secret)).await.ok()??;
    token.revoked_at_ms?;
    let gateway = state.gateway_of_token(&token.id).await.ok()??;
    gateway.revoked_at_ms.map(|_| gateway.name)
}

async fn refuse(state: &AppState, why: &str, what: &str, token: Option<&ApiToken>) -> ApiError {
    state.metrics.admin_auth_failure();
    let actor = token.map_or_else(|| "anonymous".to_owned(), |t| format!("token:{}", t.id));
    let ev = state.event(
        kinds::ADMIN_AUTH_FAILED,
        &actor,
        None,
        None,
        serde_json::json!({ "reason": why, "operation": what, "role": token.map(|t| t.role.as_str()) }),
    );
    if let Err(e) = state.record(ev).await {
        tracing::error!(error = %e, "could not audit a refused admin request");
    }
    match token {
        Some(t) => ApiError::forbidden(format!("a `{}` token may not {what}", t.role)),
        None if why == "missing" => ApiError::unauthenticated("this endpoint needs `Authorization: Bearer <api token>`"),
        None => ApiError::unauthenticated("the API token is not valid"),
    }
}
