//! The web console at `/console`, for people with an `admin`, `approver` or `auditor` API
//! token: agents, tasks, approvals, a task's evidence timeline with the trail's verification,
//! the policy set and a what-if form. Server-rendered HTML (maud, escaped by construction),
//! one embedded stylesheet, no JavaScript.
//!
//! Security, in the order a request meets it:
//!
//! - **Session.** Logging in with an API token makes a random session id (32 bytes) in the
//!   cookie `mandate_session` (`HttpOnly; SameSite=Strict; Path=/console`, `Secure` when the
//!   server is reached over HTTPS); the server keeps only its SHA-256 (see [`session`]). Every
//!   request re-checks that the token has not been revoked.
//! - **Forgery.** Every POST must come from this origin (`Origin`, when present, names this
//!   host; `Sec-Fetch-Site` is not `cross-site`) and carry the session's CSRF token, compared in
//!   constant time; the login form uses a double-submit cookie. A refusal is a 403 with code
//!   `csrf_refused`, audited as `console.csrf_refused`, and changes nothing.
//! - **Roles.** An `auditor` reads everything and acts on nothing, an `approver` may also
//!   approve and deny, an `admin` may do everything; buttons a role may not use are not shown
//!   and the server refuses them anyway (audited as `admin.auth_failed`).
//! - **Same path as the API.** Every action calls the functions the API calls
//!   (`tasks::disable_agent`, `tasks::end_task`, the approvals module) with the actor
//!   `token:<id>`, so it lands in the trail with the person's identity.

mod actions;
mod approvals;
mod login;
mod pages;
mod session;
mod timeline;
mod view;
mod what_if;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use mandate_audit::kinds;
use mandate_core::Role;
use maud::Markup;
use serde_json::json;

pub use session::Sessions;
use session::{NoSession, SESSION_COOKIE};

use crate::error::ApiError;
use crate::state::AppState;

const STYLE: &str = include_str!("style.css");

/// What the console's pages may load: its own stylesheet, nothing else; forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes, merged into the API's router (same listener).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(pages::agents))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/style.css", get(style))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/agents", get(pages::agents))
        .route("/console/agents/{name}", get(pages::agent))
        .route("/console/agents/{name}/disable", post(actions::disable_agent))
        .route("/console/tasks", get(pages::tasks))
        .route("/console/tasks/{id}", get(pages::task))
        .route("/console/tasks/{id}/revoke", post(actions::revoke_task))
        .route("/console/approvals", get(approvals::page))
        .route("/console/approvals/{id}/decide", post(approvals::decide))
        .route("/console/policy", get(what_if::page).post(what_if::evaluate))
        .route("/console/{*rest}", any(not_found))
        .layer(map_response(security_headers))
}

/// The person behind a request, from their session.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The session's key (the hash of its id), to leave a message for the next page.
    pub hash: String,
    pub token_id: String,
    pub role: Role,
    pub label: String,
    pub csrf: String,
    /// The last action's message, shown once.
    pub flash: Option<String>,
}

impl Viewer {
    /// Who the audit trail names: the API token the person logged in with.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// Disable agents, revoke tasks.
    pub fn may_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Approve or deny held calls.
    pub fn may_decide(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Approver)
    }
}

/// The request's session, or a redirect to the login page. Takes the one-time message when
/// `page` (a page is being shown, not a form being handled).
pub async fn viewer(state: &AppState, headers: &HeaderMap, page: bool) -> Result<Viewer, Response> {
    let Some(id) = session::cookie(headers, SESSION_COOKIE) else { return Err(to_login(None)) };
    let (hash, s) = match state.console.touch(id, state.clock.now_ms()) {
        Ok(found) => found,
        Err(NoSession::Missing) => return Err(to_login(None)),
        Err(NoSession::Expired) => return Err(to_login(Some("expired"))),
    };
    match token_live(state, &s.token_hash).await {
        Ok(true) => {}
        Ok(false) => {
            state.console.remove(&hash);
            return Err(to_login(Some("revoked")));
        }
        Err(e) => return Err(error_page(None, &e)),
    }
    let flash = if page { state.console.take_flash(&hash) } else { None };
    Ok(Viewer { hash, token_id: s.token_id, role: s.role, label: s.label, csrf: s.csrf, flash })
}

/// Whether the API token with this secret hash is still valid: memory first (revoking removes
/// it there), then the store (a token another replica made).
async fn token_live(state: &AppState, hash: &str) -> Result<bool, ApiError> {
    if state.api_tokens.read().contains_key(hash) {
        return Ok(true);
    }
    Ok(matches!(state.store.api_token_by_hash(hash).await?, Some(t) if t.revoked_at_ms.is_none()))
}

fn to_login(ended: Option<&str>) -> Response {
    match ended {
        Some(why) => Redirect::to(&format!("/console/login?ended={why}")).into_response(),
        None => Redirect::to("/console/login").into_response(),
    }
}

/// A submitted `application/x-www-form-urlencoded` form. A field sent twice counts once (the
/// first).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The field's value, or `""`.
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}

/// A query-string parameter, or `""`.
pub fn query_param(uri: &Uri, name: &str) -> String {
    uri.query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned()).unwrap_or_default())
        .unwrap_or_default()
}

/// Every POST but the login's: same origin, a live session, its CSRF token, a role in `roles`
/// (`admin` always). `what` names the action for a refusal ("disable agents").
pub async fn guard_post(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &Bytes,
    roles: &[Role],
    what: &str,
) -> Result<(Viewer, Form), Response> {
    let form = Form::parse(body);
    if let Err(why) = same_origin(headers, uri) {
        let who = viewer(state, headers, false).await.ok();
        return Err(csrf_refused(state, who.as_ref(), why, uri.path()).await);
    }
    let v = viewer(state, headers, false).await?;
    let sent = form.get("csrf");
    if sent.is_empty() || !session::constant_time_eq(sent, &v.csrf) {
        let why = if sent.is_empty() { "csrf_token_missing" } else { "csrf_token_wrong" };
        return Err(csrf_refused(state, Some(&v), why, uri.path()).await);
    }
    if v.role != Role::Admin && !roles.contains(&v.role) {
        return Err(role_refused(state, &v, what).await);
    }
    Ok((v, form))
}

/// Whether a form was sent from a page of this server: `Sec-Fetch-Site` is not `cross-site`,
/// and `Origin`, when the browser sends one, names the host the request was sent to.
pub fn same_origin(headers: &HeaderMap, uri: &Uri) -> Result<(), &'static str> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return Err("cross_site");
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().map_err(|_| "cross_origin")?;
    let Some(authority) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else {
        return Err("cross_origin");
    };
    // HTTP/1.1 names the host in `Host`, HTTP/2 in the request's authority.
    let host = get(header::HOST.as_str()).or_else(|| uri.authority().map(|a| a.as_str()));
    match host {
        Some(h) if h.eq_ignore_ascii_case(authority) => Ok(()),
        _ => Err("cross_origin"),
    }
}

/// A refused forged form: audited, a 403 with code `csrf_refused`, nothing changed.
pub async fn csrf_refused(state: &AppState, who: Option<&Viewer>, why: &str, path: &str) -> Response {
    state.metrics.admin_auth_failure();
    let actor = who.map_or_else(|| "anonymous".to_owned(), Viewer::actor);
    let ev = state.event(kinds::CONSOLE_CSRF_REFUSED, &actor, None, None, json!({ "reason": why, "path": crate::error::short(path) }));
    if let Err(e) = state.record(ev).await {
        tracing::error!(error = %e, "could not audit a refused console form");
    }
    let e = ApiError::coded(
        StatusCode::FORBIDDEN,
        "csrf_refused",
        format!("this form did not come from a page of this console ({why}), so nothing was changed; reload the page and try again"),
    );
    error_page(who, &e)
}

/// A role that may not do `what`: audited like a refused API request, a 403.
async fn role_refused(state: &AppState, v: &Viewer, what: &str) -> Response {
    state.metrics.admin_auth_failure();
    let ev = state.event(
        kinds::ADMIN_AUTH_FAILED,
        &v.actor(),
        None,
        None,
        json!({ "reason": "role_not_allowed", "operation": what, "role": v.role.as_str(), "via": "console" }),
    );
    if let Err(e) = state.record(ev).await {
        tracing::error!(error = %e, "could not audit a refused console action");
    }
    error_page(Some(v), &ApiError::forbidden(format!("a `{}` token may not {what}", v.role)))
}

/// An HTML page with this status.
pub fn html(status: StatusCode, page: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page.into_string()).into_response()
}

/// An error as a page: the status, the stable code and the message (never a cause).
pub fn error_page(v: Option<&Viewer>, e: &ApiError) -> Response {
    let title = match e.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Refused",
        StatusCode::UNAUTHORIZED => "Not logged in",
        StatusCode::CONFLICT => "Already done",
        s if s.is_client_error() => "Cannot do that",
        _ => "Something went wrong",
    };
    let back = if v.is_some() { Some(("/console", "Back to the console")) } else { Some(("/console/login", "Log in")) };
    html(e.status, view::layout(title, v, view::Nav::None, view::problem(title, &e.code, &e.message, back)))
}

async fn not_found(state: axum::extract::State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let v = viewer(&state, &headers, true).await.ok();
    error_page(v.as_ref(), &ApiError::coded(StatusCode::NOT_FOUND, "not_found", "there is no console page here"))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], STYLE).into_response()
}

/// Headers on every console response: the CSP, no framing, no sniffing, no caching of pages.
async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forms_from_other_origins_are_refused() {
        let uri: Uri = "/console/tasks/t/revoke".parse().unwrap();
        let ok = headers(&[("host", "127.0.0.1:8480"), ("origin", "http://127.0.0.1:8480"), ("sec-fetch-site", "same-origin")]);
        assert_eq!(same_origin(&ok, &uri), Ok(()));
        // No browser headers at all: the CSRF token still has to match.
        assert_eq!(same_origin(&headers(&[("host", "a")]), &uri), Ok(()));
        let evil = headers(&[("host", "127.0.0.1:8480"), ("origin", "http://evil.example")]);
        assert_eq!(same_origin(&evil, &uri), Err("cross_origin"));
        let port = headers(&[("host", "127.0.0.1:8480"), ("origin", "http://127.0.0.1:9999")]);
        assert_eq!(same_origin(&port, &uri), Err("cross_origin"));
        let null = headers(&[("host", "127.0.0.1:8480"), ("origin", "null")]);
        assert_eq!(same_origin(&null, &uri), Err("cross_origin"));
        let site = headers(&[("host", "127.0.0.1:8480"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(same_origin(&site, &uri), Err("cross_site"));
        // HTTP/2: the authority of the request stands for `Host`.
        let h2: Uri = "https://mandate.example.com/console/logout".parse().unwrap();
        assert_eq!(same_origin(&headers(&[("origin", "https://mandate.example.com")]), &h2), Ok(()));
    }

    #[test]
    fn forms_parse_and_the_first_field_wins() {
        let f = Form::parse(b"csrf=a%2Bb&reason=too+risky&csrf=evil");
        assert_eq!(f.get("csrf"), "a+b");
        assert_eq!(f.get("reason"), "too risky");
        assert_eq!(f.get("absent"), "");
        let uri: Uri = "/console/tasks?agent=bot&status=".parse().unwrap();
        assert_eq!(query_param(&uri, "agent"), "bot");
        assert_eq!(query_param(&uri, "status"), "");
        assert_eq!(query_param(&uri, "x"), "");
    }
}
