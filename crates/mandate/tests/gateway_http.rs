#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! The gateway in front of a plain HTTP API (`type = "http"`, a route table, `/api/NAME/...`),
//! embedded in the real `mandate serve`, with a recording upstream: what is forwarded (and
//! how: the brokered key injected, the agent's credential dropped), what is refused (with
//! the reason and the decision id), what matches no route, and the evidence of each call.

mod common;

use common::gateway::{Recorder, Seen, bounded, intent, raw_status, serve_with_gateway, summary, tool_calls};
use common::{Server, TestAgent, open_task, register_agent};
use serde_json::{Value, json};

const API_KEY: &str = "billing-api-key-4471-s3cret";

fn billing(url: &str) -> String {
    format!(
        r#"
[gateway]
[[gateway.upstream]]
name = "billing"
type = "http"
url = "{url}"
[gateway.upstream.inject]
secret = "billing-key"
header = "X-Api-Key"
format = "{{}}"
[[gateway.upstream.routes]]
method = "GET"
path = "/invoices/{{id}}"
action = "billing.invoices.read"
kind = "read"
classification = "internal"
resource = "invoice:{{id}}"
[[gateway.upstream.routes]]
method = "POST"
path = "/invoices"
action = "billing.invoices.create"
kind = "write"
classification = "internal"
[[gateway.upstream.routes]]
method = "DELETE"
path = "/invoices/{{id}}"
action = "billing.invoices.delete"
kind = "execute"
classification = "internal"
resource = "invoice:{{id}}"
[[gateway.upstream.routes]]
method = "GET"
path = "/files/{{*rest}}"
action = "billing.files.read"
kind = "read"
classification = "internal"
resource = "file:{{rest}}"
"#
    )
}

struct Setup {
    server: Server,
    upstream: Recorder,
    _cfg: tempfile::TempDir,
}

async fn setup() -> Setup {
    let upstream = Recorder::start().await;
    let (server, cfg) = serve_with_gateway(&billing(&upstream.url), Vec::new());
    server.admin().put_secret("billing-key", API_KEY, "billing API key").await.unwrap();
    Setup { server, upstream, _cfg: cfg }
}

fn billing_intent(resources: &[&str]) -> Value {
    let mut i = intent(&["billing.invoices.read", "billing.invoices.create", "billing.files.read"]);
    i["resources"] = json!(resources);
    i
}

/// One request to the gateway: (status, JSON body).
async fn send(server: &Server, method: &str, path: &str, mandate: &str, headers: &[(&str, &str)], body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}/api/billing{path}", server.url))
        .header("authorization", format!("Bearer {mandate}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = bounded(path, req.send()).await.unwrap();
    let status = resp.status().as_u16();
    (status, bounded(path, resp.json::<Value>()).await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn assert_denied(got: &(u16, Value), reason: &str) {
    assert_eq!((got.0, code(&got.1)), (403, reason), "{got:?}");
    assert!(got.1["error"]["decision_id"].as_str().is_some_and(|d| d.starts_with("dec_")), "{got:?}");
}

/// Asserts what the upstream received for a forwarded call: the brokered key exactly once,
/// not the agent's credential, the agent's own header passed on.
fn assert_forwarded_cleanly(s: &Seen, mandate: &str) {
    assert_eq!(s.header("x-api-key"), [API_KEY], "{s:?}");
    assert!(s.header("authorization").is_empty(), "the agent's Authorization went upstream: {s:?}");
    assert!(!s.contains(mandate), "the mandate went upstream: {s:?}");
}

async fn agent(s: &Setup, name: &str, attrs: &[(&str, &str)]) -> TestAgent {
    register_agent(&s.server.admin(), name, attrs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_calls_are_decided_forwarded_and_recorded() {
    let s = setup().await;
    let admin = s.server.admin();
    let bot = agent(&s, "billing-bot", &[]).await;
    let (mandate, task) = open_task(&s.server, &bot, &billing_intent(&["invoice:4*", "route:*", "file:public/*"])).await;

    // Allowed: forwarded with the key injected, the query kept, the agent's own header passed
    // on; the agent's Authorization is not.
    let got = send(&s.server, "GET", "/invoices/42?expand=lines", &mandate, &[("x-trace", "t-1")], None).await;
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["upstream"], "recorder");
    assert_eq!((got.1["path"].as_str(), got.1["query"].as_str()), (Some("/invoices/42"), Some("expand=lines")), "{got:?}");
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_forwarded_cleanly(&seen[0], &mandate);
    assert_eq!((seen[0].method.as_str(), seen[0].header("x-trace")), ("GET", vec!["t-1"]));

    // Denied: 403 with the reason and the decision id; nothing forwarded.
    let outside = send(&s.server, "GET", "/invoices/99", &mandate, &[], None).await;
    assert_denied(&outside, "resource_outside_intent");
    let write = send(&s.server, "POST", "/invoices", &mandate, &[], Some(json!({"customer": "ACME", "amount": 12}))).await;
    assert_denied(&write, "no_policy_permits");
    let delete = send(&s.server, "DELETE", "/invoices/42", &mandate, &[], None).await;
    assert_denied(&delete, "action_outside_intent");

    // No route: 403 route_not_configured, nothing forwarded (no decision: nothing to decide).
    let unrouted = send(&s.server, "GET", "/customers/7", &mandate, &[], None).await;
    assert_eq!((unrouted.0, code(&unrouted.1)), (403, "route_not_configured"), "{unrouted:?}");
    let wrong_method = send(&s.server, "PUT", "/invoices/42", &mandate, &[], Some(json!({}))).await;
    assert_eq!((wrong_method.0, code(&wrong_method.1)), (403, "route_not_configured"), "{wrong_method:?}");
    assert_eq!(s.upstream.seen().len(), 1, "a refused request reached the upstream");

    // The upstream's own failure is passed through as it is, and recorded as such.
    let boom = send(&s.server, "GET", "/invoices/4-boom", &mandate, &[], None).await;
    assert_eq!((boom.0, &boom.1), (500, &json!({"error": "boom"})));

    // A catch-all route, and an agent trying to supply the injected header itself: the
    // upstream sees the brokered key alone.
    let file = send(&s.server, "GET", "/files/public/report.txt", &mandate, &[("x-api-key", "agent-supplied")], None).await;
    assert_eq!((file.0, file.1["path"].as_str()), (200, Some("/files/public/report.txt")), "{file:?}");
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 3);
    for f in &seen {
        assert_forwarded_cleanly(f, &mandate);
    }

    // After the task is revoked the same allowed request is refused, still decided, and
    // nothing is forwarded.
    admin.revoke_task(&task, Some("test".into())).await.unwrap();
    let revoked = send(&s.server, "GET", "/invoices/42", &mandate, &[], None).await;
    assert_denied(&revoked, "task_revoked");
    assert_eq!(s.upstream.seen().len(), 3);

    // Each call is one tool.call event, in order, linked to its decision.
    let trail = tool_calls(&admin, &task, 9).await;
    let row = |t: &str, f: bool, r: &str| (t.to_owned(), f, r.to_owned());
    assert_eq!(
        summary(&trail),
        [
            row("/invoices/42", true, "allowed"),
            row("/invoices/99", false, "resource_outside_intent"),
            row("/invoices", false, "no_policy_permits"),
            row("/invoices/42", false, "action_outside_intent"),
            row("/customers/7", false, "route_not_configured"),
            row("/invoices/42", false, "route_not_configured"),
            row("/invoices/4-boom", true, "allowed"),
            row("/files/public/report.txt", true, "allowed"),
            row("/invoices/42", false, "task_revoked"),
        ],
        "{trail:#?}"
    );
    let first = &trail[0];
    assert_eq!(
        (first["protocol"].as_str(), first["method"].as_str(), first["action"].as_str(), first["kind"].as_str()),
        (Some("http"), Some("GET"), Some("billing.invoices.read"), Some("read"))
    );
    assert_eq!((first["result"].as_str(), first["status"].as_i64()), (Some("ok"), Some(200)));
    assert_eq!(first["secret"], json!({"name": "billing-key", "version": 1}));
    for (i, refused) in [(1, &outside), (2, &write), (3, &delete), (8, &revoked)] {
        assert_eq!(trail[i]["decision_id"], refused.1["error"]["decision_id"], "{i}: {:#?}", trail[i]);
        assert_eq!((trail[i]["result"].as_str(), trail[i].get("secret")), (Some("denied"), None), "{i}");
    }
    assert_eq!((trail[2]["method"].as_str(), trail[2]["kind"].as_str()), (Some("POST"), Some("write")));
    assert!(trail[2]["arguments_sha256"].as_str().is_some_and(|h| h.len() == 64), "a JSON body is the call's arguments");
    assert!(trail[4].get("decision_id").is_none() && trail[4]["method"] == "GET");
    assert_eq!((trail[6]["result"].as_str(), trail[6]["status"].as_i64()), (Some("http_status"), Some(500)));
    let all = admin.audit_trail(&task).await.unwrap().events;
    for d in trail.iter().filter_map(|d| d["decision_id"].as_str()) {
        assert!(all.iter().any(|e| e["kind"] == "decision" && e["details"]["decision_id"] == d), "decision {d} is in the trail");
    }

    // The key went upstream and nowhere else.
    let export = admin.audit_export("jsonl").await.unwrap();
    assert!(!export.contains(API_KEY) && !export.contains(&mandate));
    assert!(!s.server.log().contains(API_KEY));
    for got in [&got, &outside, &write, &delete, &unrouted, &boom, &file, &revoked] {
        assert!(!got.1.to_string().contains(API_KEY), "{got:?}");
    }
}

/// A writer's POST goes through with its body and content type exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_creates_an_invoice() {
    let s = setup().await;
    let writer = agent(&s, "billing-writer", &[("writer", "true")]).await;
    let (mandate, task) = open_task(&s.server, &writer, &billing_intent(&["route:*"])).await;
    let body = json!({"customer": "ACME", "amount": 12, "lines": [{"sku": "X-1", "qty": 2}]});
    let got = send(&s.server, "POST", "/invoices", &mandate, &[], Some(body.clone())).await;
    assert_eq!(got.0, 200, "{got:?}");
    assert_eq!(got.1["body"], body);
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/invoices"));
    assert_eq!(serde_json::from_slice::<Value>(&seen[0].body).unwrap(), body);
    assert_eq!(seen[0].header("content-type"), ["application/json"]);
    assert_forwarded_cleanly(&seen[0], &mandate);
    let trail = tool_calls(&s.server.admin(), &task, 1).await;
    assert_eq!(summary(&trail), [("/invoices".to_owned(), true, "allowed".to_owned())]);
}

/// A request cannot reach anything on the upstream that no route names: dot segments (plain
/// or percent-encoded) do not climb out of a route's prefix, and an encoded `?` stays part of
/// the path instead of becoming a query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_cannot_leave_their_route() {
    let s = setup().await;
    let bot = agent(&s, "billing-bot", &[]).await;
    let (mandate, _task) = open_task(&s.server, &bot, &billing_intent(&["*"])).await;

    let climbs = ["/files/..%2F..%2Fadmin%2Fkeys", "/files/public/..%2F..%2Fadmin", "/invoices/%2e%2e", "/invoices/.%2E"];
    for path in climbs {
        let got = send(&s.server, "GET", path, &mandate, &[], None).await;
        assert_ne!(got.0, 200, "{path}: {got:?}");
    }
    for target in ["/api/billing/files/../admin/keys", "/api/billing/files/%2e%2e/%2e%2e/admin/keys", "/api/billing/invoices/.."] {
        let status = raw_status(&s.server, target, &mandate).await;
        assert_eq!(status, 400, "{target}");
    }
    let injected = send(&s.server, "GET", "/invoices/42%3Fdelete=true", &mandate, &[], None).await;
    assert_eq!((injected.0, injected.1["path"].as_str()), (200, Some("/invoices/42%3Fdelete%3Dtrue")), "{injected:?}");
    // An encoded character inside one segment is fine, and arrives in the gateway's one
    // spelling (unreserved characters decoded).
    let encoded = send(&s.server, "GET", "/invoices/inv%2D7", &mandate, &[], None).await;
    assert_eq!((encoded.0, encoded.1["path"].as_str()), (200, Some("/invoices/inv-7")), "{encoded:?}");
    let seen = s.upstream.seen();
    for r in &seen {
        assert!(r.path.starts_with("/files/") || r.path.starts_with("/invoices/"), "left the routes: {r:?}");
        let decoded = percent_decode(&r.path);
        assert!(!decoded.split('/').any(|seg| seg == ".." || seg == "."), "a dot segment reached the upstream: {r:?}");
        assert!(r.query.is_none(), "an encoded `?` became a query upstream: {r:?} (answered {injected:?})");
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
