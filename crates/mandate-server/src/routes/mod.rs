//! The HTTP surface. `app(state)` builds the whole router, so handler tests can drive it with
//! `Router::oneshot` and no socket.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post, put};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::state::AppState;

mod admin;
mod approvals;
mod audit;
mod authzen;
mod gateway;
mod gateways;
mod oauth;
mod ops;
mod secrets;
mod wellknown;

pub const REQUEST_ID: &str = "x-request-id";

pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.settings.max_body_bytes;
    let request_id = HeaderName::from_static(REQUEST_ID);
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/.well-known/oauth-authorization-server", get(wellknown::oauth_metadata))
        .route("/.well-known/jwks.json", get(wellknown::jwks))
        .route("/.well-known/authzen-configuration", get(wellknown::authzen_metadata))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/v1/info", get(admin::info))
        .route("/v1/agents", post(admin::register_agent).get(admin::list_agents))
        .route("/v1/agents/{name}", get(admin::get_agent))
        .route("/v1/agents/{name}/disable", post(admin::disable_agent))
        .route("/v1/agents/{name}/enable", post(admin::enable_agent))
        .route("/v1/tasks", get(admin::list_tasks))
        .route("/v1/tasks/{id}", get(admin::get_task))
        .route("/v1/tasks/{id}/revoke", post(admin::revoke_task))
        .route("/v1/tasks/{id}/complete", post(admin::complete_task))
        .route("/v1/tokens", post(admin::create_token).get(admin::list_tokens))
        .route("/v1/tokens/{id}/revoke", post(admin::revoke_token))
        .route("/v1/issuers", post(admin::add_issuer).get(admin::list_issuers).delete(admin::remove_issuer))
        .route("/v1/policies", get(admin::policy_status))
        .route("/v1/policies/reload", post(admin::reload_policies))
        .route("/v1/entities", post(admin::load_entities))
        .route("/v1/keys/rotate", post(admin::rotate_key))
        .route("/v1/secrets", get(secrets::list_secrets))
        .route("/v1/secrets/{name}", put(secrets::put_secret).get(secrets::get_secret).delete(secrets::delete_secret))
        .route("/v1/secrets/{name}/rotate", post(secrets::rotate_secret))
        .route("/v1/secrets/{name}/sealed", get(secrets::sealed_secret))
        .route("/v1/secrets/{name}/leases", post(secrets::create_lease))
        .route("/v1/leases", get(secrets::list_leases))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/v1/gateways", post(gateways::register).get(gateways::list))
        .route("/v1/gateways/self", get(gateways::whoami))
        .route("/v1/gateways/{name}/revoke", post(gateways::revoke))
        .route("/v1/revocations", get(gateway::revocations))
        .route("/v1/evidence", post(gateway::evidence))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/trail", get(audit::trail))
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/checkpoints", get(audit::checkpoints))
        .merge(crate::console::router())
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// The request id (set by the layer when the client sent none).
pub fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned)
}
