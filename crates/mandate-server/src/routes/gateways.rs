//! The registry of remote gateways (`/v1/gateways`, `admin` only; reads also `auditor`; `self`
//! for the gateway's own `pep` token), and the check every seal to a gateway passes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use mandate_audit::kinds;
use mandate_core::Role;
use mandate_proto::gateway::{GatewayView, RegisterGatewayRequest, RegisterGatewayResponse};
use serde_json::json;

use crate::auth::{self, Caller};
use crate::error::{ApiError, short};
use crate::extract::ApiJson;
use crate::gateways::{GatewayEntry, GatewayError, check_registration};
use crate::state::AppState;

/// `POST /v1/gateways`: records the gateway and makes the `pep` token bound to it, whose
/// secret is in this answer only.
pub async fn register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterGatewayRequest>,
) -> Result<(StatusCode, Json<RegisterGatewayResponse>), ApiError> {
    let caller = auth::require(&state, &headers, &[], "register gateways").await?;
    let secrets = check_registration(&req.name, &req.public_key, &req.secrets).map_err(gateway_error)?;
    if state.gateways().await?.iter().any(|g| g.name == req.name && g.revoked_at_ms.is_none()) {
        return Err(gateway_error(GatewayError::Exists(req.name)));
    }
    let label = format!("gateway:{}", req.name);
    let (token, secret) = state.create_api_token(Role::Pep, &label).await?;
    let entry = GatewayEntry {
        name: req.name.clone(),
        public_key: mandate_secrets::GatewayPublicKey::from_base64(&req.public_key).map_err(ApiError::internal)?.to_base64(),
        secrets,
        token_id: token.id.clone(),
        created_at_ms: state.clock.now_ms(),
        created_by: caller.actor(),
        revoked_at_ms: None,
    };
    if let Err(e) = state.insert_gateway(entry.clone()).await {
        // The token must not outlive a registration that did not happen.
        revoke_token(&state, &token.id).await;
        return Err(gateway_error(e));
    }
    let ev = state.event(
        kinds::API_TOKEN_CREATED,
        &caller.actor(),
        None,
        None,
        json!({ "id": token.id, "role": Role::Pep.as_str(), "label": label, "gateway": entry.name }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    let ev = state.event(
        kinds::GATEWAY_REGISTERED,
        &caller.actor(),
        None,
        None,
        json!({ "name": entry.name, "public_key": entry.public_key, "secrets": entry.secrets, "token_id": entry.token_id }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(RegisterGatewayResponse { gateway: entry.view(), token: secret })))
}

/// `GET /v1/gateways`: every gateway, revoked ones too, by name.
pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Vec<GatewayView>>, ApiError> {
    auth::require(&state, &headers, &[Role::Auditor], "list gateways").await?;
    Ok(Json(state.gateways().await?.iter().map(GatewayEntry::view).collect()))
}

/// `GET /v1/gateways/self`: the registration of the calling gateway (its `pep` token).
pub async fn whoami(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<GatewayView>, ApiError> {
    let caller = auth::require_only(&state, &headers, &[Role::Pep], "read its gateway registration").await?;
    match state.gateway_of_token(&caller.token_id).await? {
        Some(g) if g.revoked_at_ms.is_none() => Ok(Json(g.view())),
        Some(g) => Err(revoked(&g.name)),
        None => Err(not_registered()),
    }
}

/// `POST /v1/gateways/{name}/revoke`: the gateway may open nothing more, and its token is
/// revoked.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<GatewayView>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "revoke gateways").await?;
    let entry = state.revoke_gateway(&name, state.clock.now_ms()).await.map_err(gateway_error)?;
    let token_revoked = revoke_token(&state, &entry.token_id).await;
    let ev = state.event(kinds::GATEWAY_REVOKED, &caller.actor(), None, None, json!({ "name": entry.name, "token_id": entry.token_id }));
    state.record(ev).await.map_err(ApiError::internal)?;
    if token_revoked {
        let ev = state.event(kinds::API_TOKEN_REVOKED, &caller.actor(), None, None, json!({ "id": entry.token_id, "gateway": entry.name }));
        state.record(ev).await.map_err(ApiError::internal)?;
    }
    Ok(Json(entry.view()))
}

/// The gateway the caller's token is bound to, if it may open secret `secret`; otherwise the
/// refusal, audited (`secret.seal_refused`).
pub(crate) async fn may_open(state: &AppState, caller: &Caller, secret: &str) -> Result<GatewayEntry, ApiError> {
    let found = state.gateway_of_token(&caller.token_id).await?;
    let (gateway, refusal) = match found {
        None => (None, not_registered()),
        Some(g) if g.revoked_at_ms.is_some() => (Some(g.name.clone()), revoked(&g.name)),
        Some(g) if !g.may_open(secret) => (
            Some(g.name.clone()),
            ApiError::coded(
                StatusCode::FORBIDDEN,
                "secret_not_granted",
                format!("gateway `{}` may not open secret `{}`", short(&g.name), short(secret)),
            ),
        ),
        Some(g) => return Ok(g),
    };
    let ev = state.event(
        kinds::SECRET_SEAL_REFUSED,
        &caller.actor(),
        None,
        None,
        json!({ "name": secret, "gateway": gateway, "reason": refusal.code }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Err(refusal)
}

fn not_registered() -> ApiError {
    ApiError::coded(
        StatusCode::FORBIDDEN,
        "gateway_not_registered",
        "this `pep` token is bound to no gateway: register the gateway with `mandate gateway register NAME --public-key KEY --secret SECRET` and give it the token that prints",
    )
}

fn revoked(name: &str) -> ApiError {
    ApiError::coded(StatusCode::FORBIDDEN, "gateway_revoked", format!("gateway `{}` is revoked", short(name)))
}

/// Revokes API token `id` in the store and in memory; whether it was live.
async fn revoke_token(state: &AppState, id: &str) -> bool {
    let revoked = match state.store.revoke_api_token(id, state.clock.now_ms()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, token = %id, "could not revoke a gateway's token");
            false
        }
    };
    state.api_tokens.write().retain(|_, t| t.id != id);
    revoked
}

fn gateway_error(e: GatewayError) -> ApiError {
    let e = match e {
        GatewayError::Store(se) => return ApiError::from(se),
        other => other,
    };
    let status = match &e {
        GatewayError::Invalid(_) => StatusCode::BAD_REQUEST,
        GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    ApiError::coded(status, e.code(), e.to_string())
}
