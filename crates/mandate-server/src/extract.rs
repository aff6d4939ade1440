//! Body extractors whose rejections speak the API's error shape instead of axum's plain text.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, OAuthFailure};

/// JSON body for the admin and decision APIs.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::coded(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::coded(StatusCode::BAD_REQUEST, "malformed_request", format!("the body is not valid JSON: {}", clean(&e.body_text())))
        }
        JsonRejection::JsonDataError(e) => ApiError::coded(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!("the body does not fit this endpoint: {}", clean(&e.body_text())),
        ),
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::coded(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the body is larger than this server accepts")
        }
        other => ApiError::coded(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!("the body could not be read: {}", clean(&other.body_text())),
        ),
    }
}

/// `application/x-www-form-urlencoded` body for the OAuth endpoints.
pub struct OAuthForm<T>(pub T);

impl<S, T> FromRequest<S> for OAuthForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OAuthFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(OAuthFailure::invalid_request("send the body as `application/x-www-form-urlencoded`", "unsupported_media_type"));
        }
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(OAuthForm(v)),
            Err(rejection) => Err(form_rejection(rejection)),
        }
    }
}

fn form_rejection(rejection: FormRejection) -> OAuthFailure {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return OAuthFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the body is larger than this server accepts",
            Some("payload_too_large"),
        );
    }
    OAuthFailure::invalid_request(format!("the form could not be read: {}", clean(&rejection.body_text())), "malformed_request")
}

/// Lowercases the first letter and drops a final period, per the error style.
fn clean(s: &str) -> String {
    let s = s.trim().trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An optional JSON body: empty means the type's default.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::coded(
            StatusCode::BAD_REQUEST,
            "malformed_request",
            format!("the body does not fit this endpoint: {}", clean(&e.to_string())),
        )
    })
}
