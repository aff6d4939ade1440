//! One error type for every handler. The client sees a stable code and a message written for
//! it; the cause is logged with the request id and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mandate_proto::oauth::OAuthError;
use mandate_proto::{ApiErrorBody, ErrorCode, ErrorDetail};
use mandate_store::StoreError;

/// An admin- or decision-API error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// An error with a finer stable code than the generic one for its status.
    pub fn coded(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.to_owned(), message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::coded(StatusCode::NOT_FOUND, &format!("{what}_not_found"), format!("{what} `{}` not found", short(id)))
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// The same error with a finer stable code.
    pub fn with_code(mut self, code: &str) -> Self {
        code.clone_into(&mut self.code);
        self
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    /// Logs the cause, answers a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::coded(StatusCode::CONFLICT, "conflict", format!("{what} already exists")),
            StoreError::NotFound(what) => ApiError::coded(StatusCode::NOT_FOUND, "not_found", format!("{what} not found")),
            StoreError::Invalid(what) => ApiError::coded(StatusCode::BAD_REQUEST, "invalid_request", what),
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "the store holds corrupt data");
                ApiError::coded(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_corrupt",
                    "the store holds data this server cannot read; see the server log",
                )
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::new(ErrorCode::Unavailable, "the store is unavailable; try again")
            }
        }
    }
}

impl From<mandate_core::DomainError> for ApiError {
    fn from(e: mandate_core::DomainError) -> Self {
        ApiError::coded(StatusCode::BAD_REQUEST, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ApiErrorBody { error: ErrorDetail { code: self.code, message: self.message, request_id: None } };
        (self.status, Json(body)).into_response()
    }
}

/// An OAuth endpoint error in RFC 6749 §5.2 shape.
#[derive(Debug)]
pub struct OAuthFailure {
    pub status: StatusCode,
    pub body: OAuthError,
}

impl OAuthFailure {
    pub fn new(status: StatusCode, error: &str, description: impl Into<String>, detail: Option<&str>) -> Self {
        OAuthFailure {
            status,
            body: OAuthError {
                error: error.to_owned(),
                error_description: Some(description.into()),
                mandate_error: detail.map(str::to_owned),
            },
        }
    }

    pub fn invalid_request(description: impl Into<String>, detail: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description, Some(detail))
    }

    pub fn invalid_grant(description: impl Into<String>, detail: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description, Some(detail))
    }

    pub fn server_error(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error on an oauth endpoint");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error; see the server log", None)
    }

    pub fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the store is unavailable; try again", None)
    }
}

impl From<StoreError> for OAuthFailure {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error on an oauth endpoint");
        OAuthFailure::unavailable()
    }
}

impl IntoResponse for OAuthFailure {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        resp.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
        resp
    }
}

pub use mandate_core::clip as short;
