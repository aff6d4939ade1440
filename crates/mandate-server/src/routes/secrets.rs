//! The secrets admin API. Every answer carries metadata only: no endpoint returns a value, and
//! no value reaches a log or the audit trail. The one exception to metadata is for registered
//! remote gateways only (a `pep` token bound to a gateway, not even `admin`): a secret it was
//! granted, opened here with the master key and sealed with HPKE to that gateway's public key,
//! which only that gateway's private key opens. The master key never leaves this process.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mandate_audit::kinds;
use mandate_core::Role;
use mandate_proto::admin::{LeaseView, PutSecretRequest, RotateSecretRequest, SecretView};
use mandate_proto::gateway::{GatewaySealedView, LeaseGrant, LeaseRequest, SEAL_SUITE};
use mandate_secrets::{GatewaySealed, SecretError};
use mandate_store::{Lease, LeaseFilter, SecretKind, SecretRecord, StoreError};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::auth;
use crate::dyncreds::{ConfigError, LeaseError, PgDynamicConfig};
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
    let kind = match req.kind.as_deref() {
        None => SecretKind::Static,
        Some(k) => SecretKind::parse(k).ok_or_else(|| {
            ApiError::coded(
                StatusCode::BAD_REQUEST,
                "unknown_secret_kind",
                format!("kind `{}` is not one of `static`, `postgres-dynamic`", short(k)),
            )
        })?,
    };
    check_value(kind, value.as_bytes())?;
    if state.store.latest_secret(&name).await?.is_some() {
        return Err(exists(&name));
    }
    let record = state.seal_secret(&name, 1, kind, &req.description, &caller.actor(), value.as_bytes()).map_err(secret_error)?;
    match state.store.put_secret_version(&record).await {
        Err(StoreError::Conflict(_)) => return Err(exists(&name)),
        other => other?,
    }
    let ev = state.event(kinds::SECRET_PUT, &caller.actor(), None, None, json!({ "name": name, "version": 1, "kind": kind.as_str() }));
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
    check_value(latest.kind, value.as_bytes())?;
    let record =
        state.seal_secret(&name, version, latest.kind, &latest.description, &caller.actor(), value.as_bytes()).map_err(secret_error)?;
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

/// `GET /v1/secrets/{name}/sealed`: the latest version, opened here and sealed to the calling
/// gateway only, if it was granted the secret. Never a value, never the master-key form.
pub async fn sealed_secret(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Result<Response, ApiError> {
    let caller = auth::require_only(&state, &headers, &[Role::Pep], "read sealed secrets").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    let gateway = super::gateways::may_open(&state, &caller, &name).await?;
    let Some(record) = state.sealed_secret(&name).await? else {
        return Err(ApiError::not_found("secret", &name));
    };
    // The admin connection of a dynamic secret never leaves the control plane.
    if record.kind.is_dynamic() {
        return Err(is_dynamic(&name));
    }
    let (version, value) = state.reveal_secret(&name).await.map_err(|e| ApiError::internal(e.code()))?;
    let public = gateway.public_key().map_err(|e| ApiError::internal(e.code()))?;
    let sealed = mandate_secrets::seal_to_gateway(&public, &gateway.name, &name, version, None, &value).map_err(secret_error)?;
    drop(value);
    let ev = state.event(
        kinds::SECRET_SEALED,
        &caller.actor(),
        None,
        None,
        json!({ "name": name, "version": version, "gateway": gateway.name }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    no_store(Json(gateway_view(name, version, &gateway.name, &sealed)).into_response())
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
    if crate::dyncreds::in_use(&state, &name).await? {
        return Err(ApiError::coded(
            StatusCode::CONFLICT,
            "secret_in_use",
            format!("secret `{}` has credentials not yet dropped; delete it once their tasks have ended", short(&name)),
        ));
    }
    if !state.store.delete_secret(&name).await? {
        return Err(ApiError::not_found("secret", &name));
    }
    let ev = state.event(kinds::SECRET_DELETED, &caller.actor(), None, None, json!({ "name": name, "version": latest.version }));
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/secrets/{name}/leases` (a registered gateway's `pep` token): the credential of a
/// dynamic secret for one live task, minted on first use, sealed to the calling gateway under
/// the secret's name and version and bound to the task.
pub async fn create_lease(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Response, ApiError> {
    let caller = auth::require_only(&state, &headers, &[Role::Pep], "lease dynamic credentials").await?;
    mandate_secrets::validate_name(&name).map_err(secret_error)?;
    let gateway = super::gateways::may_open(&state, &caller, &name).await?;
    let lease = state.lease(&name, &req.task, &caller.actor()).await.map_err(lease_error)?;
    let value = state.open_lease(&lease).map_err(|e| ApiError::internal(e.code()))?;
    let public = gateway.public_key().map_err(|e| ApiError::internal(e.code()))?;
    let sealed =
        mandate_secrets::seal_to_gateway(&public, &gateway.name, &lease.secret, lease.secret_version, Some(&lease.task_id), &value)
            .map_err(secret_error)?;
    drop(value);
    let ev = state.event(
        kinds::SECRET_SEALED,
        &caller.actor(),
        None,
        Some(&lease.task_id),
        json!({ "name": lease.secret, "version": lease.secret_version, "gateway": gateway.name, "lease": lease.id }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    let grant = LeaseGrant {
        credential: gateway_view(lease.secret.clone(), lease.secret_version, &gateway.name, &sealed),
        lease: lease_view(&lease),
    };
    no_store(Json(grant).into_response())
}

fn no_store(mut resp: Response) -> Result<Response, ApiError> {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseQuery {
    task: Option<String>,
    secret: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/leases[?task=&secret=&limit=]` (`admin`, `auditor`): newest first, never a
/// credential.
pub async fn list_leases(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<LeaseQuery>,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    auth::require(&state, &headers, READERS, "list leases").await?;
    let f = LeaseFilter { task: q.task, secret: q.secret, undropped: false, limit: q.limit.unwrap_or(100).clamp(1, 1000) };
    Ok(Json(state.store.list_leases(&f).await?.iter().map(lease_view).collect()))
}

fn lease_view(l: &Lease) -> LeaseView {
    LeaseView {
        id: l.id.clone(),
        secret: l.secret.clone(),
        secret_version: l.secret_version,
        task_id: l.task_id.clone(),
        role: l.role.clone(),
        created_at_ms: l.created_at_ms,
        expires_at_ms: l.expires_at_ms,
        status: if l.is_undropped() { "live" } else { "dropped" }.to_owned(),
        dropped_at_ms: l.dropped_at_ms,
        drop_reason: l.drop_reason.clone(),
    }
}

fn gateway_view(name: String, version: u32, gateway: &str, sealed: &GatewaySealed) -> GatewaySealedView {
    GatewaySealedView {
        name,
        version,
        gateway: gateway.to_owned(),
        suite: SEAL_SUITE.to_owned(),
        enc: URL_SAFE_NO_PAD.encode(&sealed.enc),
        ciphertext: URL_SAFE_NO_PAD.encode(&sealed.ciphertext),
    }
}

/// A dynamic secret's value must be a valid configuration; a static one anything.
fn check_value(kind: SecretKind, value: &[u8]) -> Result<(), ApiError> {
    match kind {
        SecretKind::Static => Ok(()),
        SecretKind::PostgresDynamic => PgDynamicConfig::parse(value)
            .map(drop)
            .map_err(|e: ConfigError| ApiError::coded(StatusCode::BAD_REQUEST, ConfigError::CODE, e.to_string())),
    }
}

fn is_dynamic(name: &str) -> ApiError {
    ApiError::coded(
        StatusCode::CONFLICT,
        "secret_is_dynamic",
        format!("secret `{}` is postgres-dynamic: its credentials are per task, from `POST /v1/secrets/{{name}}/leases`", short(name)),
    )
}

pub(crate) fn lease_error(e: LeaseError) -> ApiError {
    let e = match e {
        LeaseError::Store(se) => return ApiError::from(se),
        other => other,
    };
    let status = match &e {
        LeaseError::SecretNotFound(_) => StatusCode::NOT_FOUND,
        LeaseError::Task("task_unknown", _) => StatusCode::NOT_FOUND,
        LeaseError::NotDynamic(_) | LeaseError::Task(..) => StatusCode::CONFLICT,
        LeaseError::Unreachable(_) | LeaseError::Refused(_) => StatusCode::BAD_GATEWAY,
        LeaseError::Config | LeaseError::Secret(_) | LeaseError::Audit => StatusCode::SERVICE_UNAVAILABLE,
        LeaseError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    ApiError::coded(status, e.code(), e.to_string())
}

fn view(r: &SecretRecord) -> SecretView {
    SecretView {
        name: r.name.clone(),
        version: r.version,
        kind: r.kind.as_str().to_owned(),
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
