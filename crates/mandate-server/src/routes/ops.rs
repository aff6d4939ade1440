use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers; the policy set is always loaded once the server is up.
pub async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // A database that does not answer is as unready as one that refuses.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping())
        .await
        .unwrap_or_else(|_| Err(mandate_store::StoreError::Backend("the store did not answer within 2 s".into())));
    match ping {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
}

pub async fn not_found() -> ApiError {
    ApiError::coded(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}
