//! `/api/{name}/{*path}`: a plain HTTP API behind a route table. Each request is matched to a
//! route (method and path pattern), which names its action, kind, classification and
//! resource; the decision is asked for, and only an allowed request is forwarded, with the
//! brokered secret and without the agent's mandate. Unmatched routes are denied.
//!
//! The request is read once ([`crate::http_request`]): what the route is matched on, what is
//! decided and what is forwarded are the same normalized request, and the upstream URL is
//! rebuilt from it, never copied from the raw URI.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::authz::{Ask, CallRecord, EchoRecord, Outcome};
use crate::config::Target;
use crate::gateway::{Gateway, now_ms};
use crate::http_request::{Parsed, RequestError};
use crate::scrub::{Found, REDACTED, Scrubber};

pub async fn proxy(
    State(gw): State<Arc<Gateway>>,
    Path((name, _rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = raw_rest(&uri);
    handle(gw, name, path, method, uri, headers, body).await
}

pub async fn proxy_root(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(gw, name, "/".to_owned(), method, uri, headers, body).await
}

/// The path after `/api/{name}`, exactly as the client sent it (still percent-encoded), for
/// [`Parsed::parse`] to read once. The router's decoded `{*rest}` is not usable: decoding
/// turns `%2F` into a separator, `%2E%2E` into a dot segment and `%3F` into a query.
fn raw_rest(uri: &Uri) -> String {
    let after_api = uri.path().strip_prefix("/api/").unwrap_or_default();
    match after_api.find('/') {
        Some(i) => after_api.get(i..).unwrap_or("/").to_owned(),
        None => "/".to_owned(),
    }
}

async fn handle(gw: Arc<Gateway>, name: String, path: String, method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let Some(up) = gw.apis.get(&name).cloned() else {
        return error(StatusCode::NOT_FOUND, "upstream_not_found", &format!("no HTTP upstream `{}`", mandate_core::clip(&name)), None);
    };
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "mandate_required", "a mandate is required: send `Authorization: Bearer <mandate>`", None);
    };
    // A mandate that verifies but whose task or agent may no longer act is refused, yet its
    // request is still decided (the control plane records why) and recorded, as over MCP.
    let (mandate, gate) = match gw.control.check_mandate(token).await {
        Ok(m) => (m, None),
        Err(r) if r.is_credential() => {
            return error(StatusCode::UNAUTHORIZED, &r.reason, "the mandate is not valid", Some(json!({ "error_code": r.error_code })));
        }
        Err(r) => match r.mandate.clone() {
            Some(m) => (m, Some(r)),
            None => {
                let status = if r.reason == "control_plane_unavailable" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::FORBIDDEN };
                return error(status, &r.reason, &format!("denied: {}", r.reason), None);
            }
        },
    };
    let body = match axum::body::to_bytes(body, gw.cfg.max_message_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the body is larger than {} bytes", gw.cfg.max_message_bytes),
                None,
            );
        }
    };
    // Parsed once: what is decided below and what is forwarded are both this reading.
    let parsed = match Parsed::parse(method.as_str(), &path, uri.query(), &headers, body) {
        Ok(p) => p,
        Err(e) => {
            let refusal = Refusal { gw: &gw, mandate: &mandate, upstream: &up.name, method: method.as_str(), started };
            return refusal.refuse(&mandate_core::clip(&path), "", mandate_policy::ActionKind::Execute, &e);
        }
    };
    let segments = parsed.segment_values();
    let matched = up.routes.iter().find_map(|r| r.matches(&parsed.method, &segments).map(|p| (r, p)));
    let Some((route, params)) = matched else {
        let outcome = Outcome::refused("route_not_configured");
        let normalized_path = parsed.path();
        let ev = CallRecord {
            mandate: Some(&mandate),
            upstream: &up.name,
            protocol: "http",
            method: &parsed.method,
            tool: &normalized_path,
            action: "",
            kind: mandate_policy::ActionKind::Execute,
            outcome: &outcome,
            forwarded: false,
            result: "denied",
            status: None,
            arguments: None,
            log_arguments: false,
            redact: &[],
            latency_us: started.elapsed().as_micros() as u64,
            response_bytes: 0,
            secret: None,
            request_id: None,
            request_sha256: None,
        }
        .event(now_ms());
        gw.control.record(ev);
        return error(
            StatusCode::FORBIDDEN,
            "route_not_configured",
            &format!("`{} {}` matches no configured route", parsed.method, mandate_core::clip(&normalized_path)),
            None,
        );
    };
    let injected_header = up.inject.as_ref().map(|i| i.header.as_str());
    let normalized_path = parsed.path();
    let req = match parsed.finish(&up.name, route, injected_header) {
        Ok(n) => n,
        Err(e) => {
            let refusal = Refusal { gw: &gw, mandate: &mandate, upstream: &up.name, method: method.as_str(), started };
            return refusal.refuse(&normalized_path, &route.action, route.kind, &e);
        }
    };
    let Target::Http { base_url } = &up.target else {
        return error(StatusCode::FORBIDDEN, "route_not_configured", "the path matches no configured route", None);
    };
    let Some(target) = req.target(base_url) else {
        let refusal = Refusal { gw: &gw, mandate: &mandate, upstream: &up.name, method: &req.method, started };
        return refusal.refuse(&req.path, &route.action, route.kind, &RequestError::PathEncoding);
    };
    let context = req.context(&params, &route.list_params);
    let json_body: Option<Value> = serde_json::from_slice(&req.body).ok().filter(Value::is_object);
    let ask = Ask {
        token,
        mandate: &mandate,
        upstream: &up.name,
        action: &route.action,
        kind: route.kind,
        classification: route.classification,
        resource: route.resource(&params),
        context,
        arguments: json_body.as_ref(),
    };
    let environment = gw.cfg.environment.clone().or_else(|| gw.control.environment());
    let rid = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut outcome = gw.decide_one(&ask, environment.as_deref(), rid.as_deref(), route.approval).await;
    if let Some(g) = &gate
        && outcome.allowed
    {
        // The gate saw the revocation first; it wins.
        outcome.allowed = false;
        outcome.reason = g.reason.clone();
    }
    let record = |forwarded: bool, result: &str, status: Option<i64>, bytes: usize, secret: Option<(&str, u32)>| {
        CallRecord {
            mandate: Some(&mandate),
            upstream: &up.name,
            protocol: "http",
            method: &req.method,
            tool: &req.path,
            action: &route.action,
            kind: route.kind,
            outcome: &outcome,
            forwarded,
            result,
            status,
            arguments: json_body.as_ref(),
            log_arguments: false,
            redact: &[],
            latency_us: started.elapsed().as_micros() as u64,
            response_bytes: bytes,
            secret,
            request_id: rid.as_deref(),
            request_sha256: Some(req.digest()),
        }
        .event(now_ms())
    };
    if !outcome.allowed {
        gw.control.record(record(false, "denied", None, 0, None));
        let status = if outcome.reason == "control_plane_unavailable" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::FORBIDDEN };
        return error(status, &outcome.reason, &outcome.message(), Some(outcome.error_data()));
    }
    let injected = match gw.injection(&up, Some(&mandate.claims().task_id)).await {
        Ok(i) => i,
        Err(code) => {
            gw.control.record(record(false, &code, None, 0, None));
            return error(StatusCode::BAD_GATEWAY, &code, "the upstream's credential is not available", None);
        }
    };
    let Ok(upstream_method) = Method::from_bytes(req.method.as_bytes()) else {
        return error(StatusCode::BAD_REQUEST, "method_invalid", "the method is not valid", None);
    };
    // Exactly the normalized request: its method, its URL (never the raw URI), its headers
    // (the dropped ones gone), its body bytes; then the brokered header, set once. With a
    // secret injected the answer must be readable to be scrubbed: no compression.
    let mut out_req = gw.http.request(upstream_method, target).timeout(up.timeout).body(req.body.clone());
    for (k, v) in &req.headers {
        if !(injected.is_some() && k == header::ACCEPT_ENCODING) {
            out_req = out_req.header(k, v);
        }
    }
    if let Some(i) = &injected {
        out_req = out_req.header(i.header.0.clone(), i.header.1.clone()).header(header::ACCEPT_ENCODING, "identity");
    }
    let secret = injected.as_ref().map(|i| (i.secret.clone(), i.version));
    let scrubber = injected.as_ref().map(|i| i.scrubber.clone());
    drop(injected);
    let decision_id = outcome.decision_id.clone();
    let receipt = outcome.receipt.clone();
    let echo = |place: &str, found: &Found| {
        if let Some((name, version)) = &secret {
            let e = EchoRecord {
                mandate: Some(&mandate),
                upstream: &up.name,
                protocol: "http",
                method: &req.method,
                tool: Some(&req.path),
                decision_id: decision_id.as_deref(),
                receipt: receipt.as_deref(),
                request_id: rid.as_deref(),
                secret: (name, *version),
                place,
            };
            gw.echo_redacted(&e, found);
        }
    };
    // An error text that quotes the upstream, scrubbed.
    let scrubbed_text = |text: String| match &scrubber {
        Some(s) => {
            let mut found = Found::default();
            let mut text = text;
            s.text(&mut text, &mut found);
            echo("error", &found);
            text
        }
        None => text,
    };
    let resp = match out_req.send().await {
        Ok(r) => r,
        Err(e) => {
            let reason = if e.is_timeout() { "upstream_timeout" } else { "upstream_unreachable" };
            gw.control.record(record(true, reason, None, 0, secret.as_ref().map(|(n, v)| (n.as_str(), *v))));
            let text = scrubbed_text(format!("the upstream failed: {}", crate::remote::root_cause(&e)));
            return error(StatusCode::BAD_GATEWAY, reason, &text, None);
        }
    };
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if out.len() + c.len() <= gw.cfg.max_message_bytes => out.extend_from_slice(&c),
            Ok(_) => {
                gw.control.record(record(
                    true,
                    "upstream_too_large",
                    Some(i64::from(status.as_u16())),
                    out.len(),
                    secret.as_ref().map(|(n, v)| (n.as_str(), *v)),
                ));
                return error(StatusCode::BAD_GATEWAY, "upstream_too_large", "the upstream's answer is too large", None);
            }
            Err(e) => {
                gw.control.record(record(
                    true,
                    "upstream_unreachable",
                    Some(i64::from(status.as_u16())),
                    out.len(),
                    secret.as_ref().map(|(n, v)| (n.as_str(), *v)),
                ));
                let text = scrubbed_text(format!("the upstream failed: {}", crate::remote::root_cause(&e)));
                return error(StatusCode::BAD_GATEWAY, "upstream_unreachable", &text, None);
            }
        }
    }
    let encoded = resp_headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("identity"));
    if scrubber.is_some() && encoded {
        // Compressed despite `identity`: it cannot be checked for the secret, so it is withheld.
        gw.control.record(record(
            true,
            "upstream_encoded_answer",
            Some(i64::from(status.as_u16())),
            out.len(),
            secret.as_ref().map(|(n, v)| (n.as_str(), *v)),
        ));
        return error(
            StatusCode::BAD_GATEWAY,
            "upstream_encoded_answer",
            "the upstream compressed its answer, which cannot be checked for the injected secret",
            None,
        );
    }
    let result = if status.is_success() { "ok" } else { "http_status" };
    gw.control.record(record(true, result, Some(i64::from(status.as_u16())), out.len(), secret.as_ref().map(|(n, v)| (n.as_str(), *v))));
    let mut resp_headers = resp_headers;
    if let Some(s) = &scrubber {
        let mut found = Found::default();
        let (headers_found, body) = scrub_answer(s, &mut resp_headers, out, &mut found);
        out = body;
        let place = match (headers_found, found.matches > headers_found) {
            (0, _) => "body",
            (_, false) => "headers",
            (_, true) => "headers and body",
        };
        echo(place, &found);
    }
    let mut builder = Response::builder().status(status);
    for (k, v) in &resp_headers {
        let hop = ["connection", "keep-alive", "transfer-encoding", "content-length", "set-cookie"].contains(&k.as_str());
        if !hop {
            builder = builder.header(k, v);
        }
    }
    builder.body(Body::from(out)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Who a refusal before the decision is recorded for.
struct Refusal<'a> {
    gw: &'a Gateway,
    mandate: &'a mandate_token::VerifiedMandate,
    upstream: &'a str,
    method: &'a str,
    started: Instant,
}

impl Refusal<'_> {
    /// Records the refused request as a `tool.call` (not forwarded, no decision) and answers
    /// 400 with the refusal's code.
    fn refuse(&self, path: &str, action: &str, kind: mandate_policy::ActionKind, e: &RequestError) -> Response {
        let outcome = Outcome::refused(e.code());
        let ev = CallRecord {
            mandate: Some(self.mandate),
            upstream: self.upstream,
            protocol: "http",
            method: self.method,
            tool: path,
            action,
            kind,
            outcome: &outcome,
            forwarded: false,
            result: "denied",
            status: None,
            arguments: None,
            log_arguments: false,
            redact: &[],
            latency_us: self.started.elapsed().as_micros() as u64,
            response_bytes: 0,
            secret: None,
            request_id: None,
            request_sha256: None,
        }
        .event(now_ms());
        self.gw.control.record(ev);
        error(StatusCode::BAD_REQUEST, e.code(), &e.to_string(), None)
    }
}

/// An HTTP answer with the injected secret replaced: in each header value, in the decoded
/// strings of a JSON body (re-serialised only when something changed), and in the body's
/// bytes. Returns how many matches were in the headers, and the body.
fn scrub_answer(s: &Scrubber, headers: &mut HeaderMap, body: Vec<u8>, found: &mut Found) -> (usize, Vec<u8>) {
    for v in headers.values_mut() {
        if let Some(new) = s.bytes(v.as_bytes(), found) {
            *v = HeaderValue::from_bytes(&new).unwrap_or_else(|_| HeaderValue::from_static(REDACTED));
        }
    }
    let in_headers = found.matches;
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|c| c.to_ascii_lowercase().contains("json"));
    let mut body = body;
    if json
        && let Ok(mut v) = serde_json::from_slice::<Value>(&body)
        && s.value(&mut v, found)
    {
        body = serde_json::to_vec(&v).unwrap_or_else(|_| REDACTED.as_bytes().to_vec());
    }
    let body = s.bytes(&body, found).unwrap_or(body);
    (in_headers, body)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn error(status: StatusCode, code: &str, message: &str, extra: Option<Value>) -> Response {
    let mut e = json!({ "code": code, "message": message });
    if let (Some(Value::Object(x)), Value::Object(m)) = (extra, &mut e) {
        for (k, v) in x {
            if !v.is_null() {
                m.insert(k, v);
            }
        }
    }
    let mut resp = (status, axum::Json(json!({ "error": e }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    resp
}
