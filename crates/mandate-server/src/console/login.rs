//! Logging in with an API token, and out.
//!
//! The login form has no session to carry a CSRF token yet, so it uses a double-submit
//! cookie: the form page sets a random value in `mandate_login_csrf` (`HttpOnly;
//! SameSite=Strict`) and puts the same value in a hidden field; a login whose field does not
//! match its cookie is refused. That keeps another site from logging a browser in to an
//! account of the attacker's choosing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_audit::kinds;
use mandate_core::Role;
use maud::{Markup, html};
use serde_json::json;

use super::session::{self, LOGIN_COOKIE, SESSION_COOKIE, Session};
use super::view::{self, Nav};
use super::{Form, Viewer, csrf_refused, guard_post, query_param, same_origin};
use crate::auth;
use crate::state::{AppState, random_b64};

/// The login form's cookie lives this long (seconds).
const LOGIN_COOKIE_SECS: u64 = 900;

/// `GET /console/login`: the form (or the console, when already logged in).
pub async fn form(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    if super::viewer(&state, &headers, false).await.is_ok() {
        return Redirect::to("/console").into_response();
    }
    let notice = match query_param(&uri, "ended").as_str() {
        "expired" => Some("Your session ended: 30 minutes without activity, or 8 hours after logging in. Log in again."),
        "revoked" => Some("The API token of your session was revoked, so the session ended."),
        "loggedout" => Some("You are logged out."),
        _ => None,
    };
    login_page(&state, StatusCode::OK, notice, None)
}

/// `POST /console/login`: checks the form came from the login page, then the token.
pub async fn submit(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if let Err(why) = same_origin(&headers, &uri) {
        return csrf_refused(&state, None, why, uri.path()).await;
    }
    let sent = form.get("csrf");
    let matches = session::cookie(&headers, LOGIN_COOKIE).is_some_and(|c| !c.is_empty() && session::constant_time_eq(c, sent));
    if sent.is_empty() || !matches {
        return csrf_refused(&state, None, "login_csrf_mismatch", uri.path()).await;
    }
    let secret = form.get("token").trim();
    if secret.is_empty() {
        return login_page(&state, StatusCode::BAD_REQUEST, None, Some(("token_required", "Paste an API token to log in.")));
    }
    let token = match auth::lookup(&state, secret).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            refused(&state, "unknown_token", None).await;
            return login_page(&state, StatusCode::UNAUTHORIZED, None, Some(("unauthenticated", "That API token is not valid.")));
        }
        Err(e) => return super::error_page(None, &e),
    };
    if !matches!(token.role, Role::Admin | Role::Approver | Role::Auditor) {
        refused(&state, "role_not_allowed", Some((&token.id, token.role))).await;
        let msg = format!(
            "A `{}` token is for enforcement points and cannot log in to the console: use an admin, approver or auditor token.",
            token.role
        );
        return login_page(&state, StatusCode::FORBIDDEN, None, Some(("role_not_allowed", &msg)));
    }
    let now = state.clock.now_ms();
    let new = Session {
        token_id: token.id.clone(),
        token_hash: token.secret_hash.clone(),
        role: token.role,
        label: token.label.clone(),
        csrf: String::new(),
        created_ms: now,
        last_seen_ms: now,
        flash: None,
    };
    let id = state.console.create(new, now);
    let ev = state.event(
        kinds::CONSOLE_LOGIN,
        &format!("token:{}", token.id),
        None,
        None,
        json!({ "role": token.role.as_str(), "label": token.label }),
    );
    if let Err(e) = state.record(ev).await {
        // Nobody works in the console unrecorded.
        if let Ok((hash, _)) = state.console.touch(&id, now) {
            state.console.remove(&hash);
        }
        return super::error_page(None, &crate::error::ApiError::internal(e));
    }
    let secure = state.settings.console_secure_cookie;
    let mut resp = Redirect::to("/console").into_response();
    let h = resp.headers_mut();
    for c in [session::set_cookie(SESSION_COOKIE, &id, secure, None), session::set_cookie(LOGIN_COOKIE, "", secure, Some(0))] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /console/logout`.
pub async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (v, _) = match guard_post(&state, &headers, &uri, &body, &[Role::Approver, Role::Auditor], "log out").await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    state.console.remove(&v.hash);
    let ev = state.event(kinds::CONSOLE_LOGOUT, &v.actor(), None, None, json!({}));
    if let Err(e) = state.record(ev).await {
        tracing::error!(error = %e, "could not audit a console logout");
    }
    let mut resp = Redirect::to("/console/login?ended=loggedout").into_response();
    if let Ok(c) = session::set_cookie(SESSION_COOKIE, "", state.settings.console_secure_cookie, Some(0)).parse() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

/// A refused login, audited like a refused API request.
async fn refused(state: &AppState, why: &str, token: Option<(&str, Role)>) {
    state.metrics.admin_auth_failure();
    let actor = token.map_or_else(|| "anonymous".to_owned(), |(id, _)| format!("token:{id}"));
    let ev = state.event(
        kinds::ADMIN_AUTH_FAILED,
        &actor,
        None,
        None,
        json!({ "reason": why, "operation": "log in to the console", "role": token.map(|(_, r)| r.as_str()), "via": "console" }),
    );
    if let Err(e) = state.record(ev).await {
        tracing::error!(error = %e, "could not audit a refused console login");
    }
}

/// The login page with a fresh double-submit value in its cookie and its form.
fn login_page(state: &AppState, status: StatusCode, notice: Option<&str>, error: Option<(&str, &str)>) -> Response {
    let csrf = random_b64(32);
    let mut resp = super::html(status, view::layout("Log in", None::<&Viewer>, Nav::None, body(&csrf, notice, error)));
    let cookie = session::set_cookie(LOGIN_COOKIE, &csrf, state.settings.console_secure_cookie, Some(LOGIN_COOKIE_SECS));
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

fn body(csrf: &str, notice: Option<&str>, error: Option<(&str, &str)>) -> Markup {
    html! {
        section.login {
            h1 { "Log in to the console" }
            p.muted {
                "Paste an API token with the " b { "admin" } ", " b { "approver" } " or " b { "auditor" } " role ("
                code { "mandate token create --role approver --label you@example.com" } "). "
                "The token is checked once and never kept: the console holds a session instead."
            }
            @if let Some(n) = notice {
                p.flash role="status" { (n) }
            }
            @if let Some((code, message)) = error {
                p.error role="alert" { (message) " " span.code { "(" (code) ")" } }
            }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(csrf);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button.primary type="submit" { "Log in" }
            }
        }
    }
}
