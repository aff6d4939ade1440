//! The secrets admin API. Every answer carries metadata only: no endpoint returns a value, and
//! no value reaches a log or the audit trail. The one exception to metadata is for enforcement
//! points only (`pep` tokens, not even `admin`): the sealed record, which only a holder of the
//! master key can open.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_audit::kinds;
use mandate_core::Role;
use mandate_proto::admin::{PutSecretRequest, RotateSecretRequest, SecretView};
use mandate_proto::gateway::SealedSecretView;
use mandate_secrets::SecretError;
use mandate_store::{SecretRecord, StoreError};
use serde_json::json;
use zeroize::Zeroizing;

use crate::auth;
use crate::error::{ApiError, short};
use crate::extract::ApiJson;
use crate::state::AppState;

const READERS: &[Role] = &[Role::Auditor];
const MAX_DESCRIPTION: usize = 1024;

pub async fn put_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PutSecretRequest>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    let value = Zeroizing::new(req.value);
    let caller = auth::require(&state, &headers, &[], "store secrets").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    if req.description.len() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(format!("`description` may be at most {MAX_DESCRIPTION} bytes")));
    }
    if state.store.latest_secret(&name).await?.is_some() {
        return Err(exists(&name));
    }
    let record = state.seal_secret(&name, 1, &req.description, &caller.actor(), value.as_bytes()).map_err(secret_error)?;
    match state.store.put_secret_version(&record).await {
        Err(StoreError::Conflict(_)) => return Err(exists(&name)),
        other => other?,
    }
    let ev = state.event(kinds::SECRET_PUT, &caller.actor(), None, None, json!({ "name": name, "version": 1 }));
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(view(&record))))
}

pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<RotateSecretRequest>,
) -> Result<Json<SecretView>, ApiError> {
    let value = Zeroizing::new(req.value);
    let caller = auth::require(&state, &headers, &[], "rotate secrets").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    let Some(latest) = state.store.latest_secret(&name).await? else {
        return Err(ApiError::not_found("secret", &name));
    };
    let version = latest.version.checked_add(1).ok_or_else(|| ApiError::invalid(format!("secret `{name}` has no next version")))?;
    let record = state.seal_secret(&name, version, &latest.description, &caller.actor(), value.as_bytes()).map_err(secret_error)?;
    match state.store.put_secret_version(&record).await {
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::coded(
                StatusCode::CONFLICT,
                "conflict",
                format!("secret `{name}` was rotated at the same time by another request; try again"),
            ));
        }
        other => other?,
    }
    let ev = state.event(
        kinds::SECRET_ROTATED,
        &caller.actor(),
        None,
        None,
        json!({ "name": name, "version": version, "previous_version": latest.version }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(Json(view(&record)))
}

pub async fn list_secrets(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Vec<SecretView>>, ApiError> {
    auth::require(&state, &headers, READERS, "list secrets").await?;
    Ok(Json(state.store.list_secrets().await?.iter().map(view).collect()))
}

pub async fn get_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<SecretView>, ApiError> {
    auth::require(&state, &headers, READERS, "read secrets").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    match state.store.latest_secret(&name).await? {
        Some(record) => Ok(Json(view(&record))),
        None => Err(ApiError::not_found("secret", &name)),
    }
}

/// `GET /v1/secrets/{name}/sealed`: the latest version as stored, for a gateway that holds the
/// master key. Never a value.
pub async fn sealed_secret(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Result<Response, ApiError> {
    auth::require_only(&state, &headers, &[Role::Pep], "read sealed secrets").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    let Some(record) = state.sealed_secret(&name).await? else {
        return Err(ApiError::not_found("secret", &name));
    };
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let view = SealedSecretView {
        wrapped_key: b64(&record.sealed.wrapped_key),
        key_nonce: b64(&record.sealed.key_nonce),
        nonce: b64(&record.sealed.nonce),
        ciphertext: b64(&record.sealed.ciphertext),
        name: record.name,
        version: record.version,
    };
    let mut resp = Json(view).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub async fn delete_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = auth::require(&state, &headers, &[], "delete secrets").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    let Some(latest) = state.store.latest_secret(&name).await? else {
        return Err(ApiError::not_found("secret", &name));
    };
    if !state.store.delete_secret(&name).await? {
        return Err(ApiError::not_found("secret", &name));
    }
    let ev = state.event(kinds::SECRET_DELETED, &caller.actor(), None, None, json!({ "name": name, "version": latest.version }));
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

fn view(r: &SecretRecord) -> SecretView {
    SecretView {
        name: r.name.clone(),
        version: r.version,
        description: r.description.clone(),
        created_at_ms: r.created_at_ms,
        created_by: r.created_by.clone(),
    }
}

fn exists(name: &str) -> ApiError {
    ApiError::coded(
        StatusCode::CONFLICT,
        "secret_exists",
        format!("secret `{}` already exists; use `mandate secret rotate` to store a new version", short(name)),
    )
}

fn secret_error(e: SecretError) -> ApiError {
    match e {
        SecretError::Encrypt(_) | SecretError::Decrypt { .. } | SecretError::InvalidMasterKey => ApiError::internal(e),
        _ => ApiError::coded(StatusCode::BAD_REQUEST, e.code(), e.to_string()),
    }
}
