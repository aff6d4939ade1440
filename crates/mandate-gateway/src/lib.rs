//! Mandate's enforcement gateway: it stands between agents and their tools (MCP servers over
//! streamable HTTP or stdio, and plain HTTP APIs), decides every call at request time, shows
//! an agent only the tools it may use, injects brokered secrets the agent never sees, and
//! records every call in the evidence trail.
//!
//! [`router`] is the HTTP surface: `/mcp/{name}` for MCP upstreams, `/api/{name}/…` for HTTP
//! APIs, and the RFC 9728 protected-resource metadata. The gateway asks a [`ControlPlane`]:
//! the embedded control plane inside `mandate serve` (crate `mandate-embedded`), [`remote::Remote`]
//! when it runs apart.

pub mod authz;
pub mod config;
pub mod control;
mod gateway;
mod http_api;
pub mod http_request;
pub mod mcp;
pub mod remote;
mod remote_feed;
pub mod scrub;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get};
use serde_json::json;

pub use config::{ConfigError, GatewayConfig, GatewayFile};
pub use control::{ControlPlane, Refusal, Revoked, as_revoked};
pub use gateway::Gateway;

/// The gateway's routes, to serve alone or merge into the control plane's router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/mcp/{name}", get(mcp::handler::get).post(mcp::handler::post).delete(mcp::handler::delete))
        .route("/api/{name}", any(http_api::proxy_root))
        .route("/api/{name}/{*rest}", any(http_api::proxy))
        .route("/.well-known/oauth-protected-resource/mcp/{name}", get(resource_metadata))
        .with_state(gw)
}

/// RFC 9728 metadata for `/mcp/{name}`: where a client gets the credential it needs.
async fn resource_metadata(State(gw): State<Arc<Gateway>>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    if !gw.mcp.contains_key(&name) {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    Json(json!({
        "resource": format!("http://{host}/mcp/{name}"),
        "authorization_servers": [gw.control.issuer()],
        "bearer_methods_supported": ["header"],
        "resource_name": format!("Mandate gateway: {name}"),
    }))
    .into_response()
}
