#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! The HTTP API gateway forwards exactly the request it decided. The upstream is a real
//! Starlette app (`tests/py/http_upstream.py`) that reads requests the way attacked
//! frameworks do: it decodes `%2F` before routing, honours method overrides, reads the first
//! of repeated query keys and folds `_` into `-` in header names. Each attack class asserts
//! on what that upstream recorded (nothing, or exactly the normalized request), not only on
//! the answer the agent got.

mod common;

use common::gateway::{bounded, intent, raw_status, serve_with_gateway, tool_calls};
use common::python::{PyUpstream, start_recording_upstream};
use common::{Server, TestAgent, open_task, register_agent};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const API_KEY: &str = "billing-api-key-8812-s3cret";

fn config(url: &str) -> String {
    let route = |method: &str, path: &str, action: &str, kind: &str, extra: &str| {
        format!(
            "[[gateway.upstream.routes]]\nmethod = \"{method}\"\npath = \"{path}\"\naction = \"billing.{action}\"\nkind = \"{kind}\"\nclassification = \"internal\"\n{extra}\n"
        )
    };
    [
        format!(
            "[gateway]\napproval_wait_secs = 0\n[[gateway.upstream]]\nname = \"billing\"\ntype = \"http\"\nurl = \"{url}\"\n[gateway.upstream.inject]\nsecret = \"billing-key\"\nheader = \"X-Api-Key\"\nformat = \"{{}}\"\n"
        ),
        route("GET", "/invoices/{id}", "invoices.read", "read", "resource = \"invoice:{id}\""),
        route("POST", "/invoices", "invoices.create", "write", ""),
        route("DELETE", "/invoices/{id}", "invoices.delete", "execute", "resource = \"invoice:{id}\""),
        route("GET", "/files/{name}", "files.read", "read", "resource = \"file:{name}\""),
        route("GET", "/docs/{*path}", "docs.read", "read", "resource = \"doc:{path}\"\ndecode_slashes = true"),
        route(
            "GET",
            "/accounts/{id}/statement",
            "accounts.statement",
            "read",
            "resource = \"account:{id}\"\nlist_params = [\"tag\"]\nheaders = [\"x-tenant\"]",
        ),
        route("POST", "/payments", "payments.create", "execute", ""),
        route("POST", "/notes", "notes.create", "write", ""),
    ]
    .concat()
}

struct Setup {
    server: Server,
    upstream: PyUpstream,
    _cfg: tempfile::TempDir,
}

async fn setup() -> Setup {
    let upstream = start_recording_upstream("http_upstream.py", &[], "--record");
    let (server, cfg) = serve_with_gateway(&config(&upstream.url), Vec::new());
    server.admin().put_secret("billing-key", API_KEY, "billing API key").await.unwrap();
    Setup { server, upstream, _cfg: cfg }
}

const ACTIONS: [&str; 7] = [
    "billing.invoices.read",
    "billing.invoices.create",
    "billing.files.read",
    "billing.docs.read",
    "billing.accounts.statement",
    "billing.payments.create",
    "billing.notes.create",
];

/// A task for `name` over every action, on invoice 1 only, any file, doc, account and route.
async fn task(s: &Setup, name: &str, writer: bool) -> (TestAgent, String, String) {
    let attrs: &[(&str, &str)] = if writer { &[("writer", "true")] } else { &[] };
    let agent = register_agent(&s.server.admin(), name, attrs).await;
    let mut i = intent(&ACTIONS);
    i["resources"] = json!(["invoice:1", "file:*", "doc:*", "account:*", "route:*"]);
    let (mandate, task) = open_task(&s.server, &agent, &i).await;
    (agent, mandate, task)
}

struct Call<'a> {
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: Option<(&'a str, Vec<u8>)>,
}

fn call<'a>(method: &'a str, path: &'a str) -> Call<'a> {
    Call { method, path, headers: Vec::new(), body: None }
}

impl<'a> Call<'a> {
    fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }

    fn body(mut self, content_type: &'a str, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }

    /// Sends it through the gateway: (status, JSON answer).
    async fn send(self, s: &Setup, mandate: &str) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(self.method.parse().unwrap(), format!("{}/api/billing{}", s.server.url, self.path))
            .header("authorization", format!("Bearer {mandate}"));
        for (k, v) in &self.headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, b)) = self.body {
            req = req.header("content-type", ct).body(b);
        }
        let resp = bounded(self.path, req.send()).await.unwrap();
        let status = resp.status().as_u16();
        (status, bounded(self.path, resp.json::<Value>()).await.unwrap_or(Value::Null))
    }
}

fn code(got: &(u16, Value)) -> (u16, &str) {
    (got.0, got.1["error"]["code"].as_str().unwrap_or(""))
}

/// (tool, reason) of each recorded call.
fn reasons(trail: &[Value]) -> Vec<(String, String)> {
    trail.iter().map(|d| (d["tool"].as_str().unwrap_or("").to_owned(), d["reason"].as_str().unwrap_or("").to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_slash_cannot_reach_another_route() {
    let s = setup().await;
    let (_a, mandate, task) = task(&s, "files-bot", false).await;

    // Decided as `file:admin/keys` (inside `file:*`), the upstream would route it to
    // `/files/admin/{name}`, which no gateway route names.
    for path in ["/files/admin%2Fkeys", "/files/admin%2fkeys", "/files/admin%5Ckeys"] {
        assert_eq!(code(&call("GET", path).send(&s, &mandate).await), (400, "encoded_slash_refused"), "{path}");
    }
    assert_eq!(raw_status(&s.server, "/api/billing/files/admin\\keys", &mandate).await, 400);
    // Sent as written: an HTTP client would resolve these before they leave.
    for path in ["/files/%2e%2e", "/files/.%2E", "/files/..%2Fadmin"] {
        assert_eq!(raw_status(&s.server, &format!("/api/billing{path}"), &mandate).await, 400, "{path}");
    }
    assert!(s.upstream.recorded().is_empty(), "a refused request reached the upstream: {:#?}", s.upstream.recorded());

    // Spellings of one request are one request: decided and forwarded as `/invoices/1`
    // (the intent holds invoice 1 only), `/files/report.txt`.
    let one = call("GET", "/invoices/%31").send(&s, &mandate).await;
    assert_eq!((one.0, &one.1["params"]), (200, &json!({"id": "1"})), "{one:?}");
    let file = call("GET", "/files/report%2Etxt").send(&s, &mandate).await;
    assert_eq!((file.0, file.1["route"].as_str()), (200, Some("files.read")), "{file:?}");
    // A route that takes encoded slashes: decided as `doc:a/b`, forwarded in one spelling.
    let doc = call("GET", "/docs/a%2fb").send(&s, &mandate).await;
    assert_eq!((doc.0, &doc.1["params"]), (200, &json!({"path": "a/b"})), "{doc:?}");
    let got = s.upstream.recorded();
    let raw: Vec<&str> = got.iter().map(|r| r["raw_path"].as_str().unwrap()).collect();
    assert_eq!(raw, ["/invoices/1", "/files/report.txt", "/docs/a%2Fb"]);
    assert!(got.iter().all(|r| r["folded_headers"]["x-api-key"] == API_KEY));

    let trail = tool_calls(&s.server.admin(), &task, 10).await;
    let r = reasons(&trail);
    assert_eq!(r[0], ("/files/admin%2Fkeys".to_owned(), "encoded_slash_refused".to_owned()), "{trail:#?}");
    assert_eq!(r[3].1, "backslash_refused");
    assert_eq!(r[4].1, "path_dot_segment");
    assert_eq!(
        &r[7..],
        [
            ("/invoices/1".to_owned(), "allowed".to_owned()),
            ("/files/report.txt".into(), "allowed".into()),
            ("/docs/a%2Fb".into(), "allowed".into())
        ]
    );
    assert!(trail[..7].iter().all(|d| d["forwarded"] == false && d["result"] == "denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_override_cannot_turn_a_write_into_a_delete() {
    let s = setup().await;
    let (_a, mandate, task) = task(&s, "invoice-writer", true).await;
    let json_body = br#"{"customer":"ACME","amount":12}"#.to_vec();
    let multipart = b"--B0und\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B0und--\r\n".to_vec();
    let attempts = [
        call("POST", "/invoices").header("X-HTTP-Method-Override", "DELETE").body("application/json", json_body.clone()),
        call("POST", "/invoices").header("x-http-method", "DELETE").body("application/json", json_body.clone()),
        call("POST", "/invoices").header("X-Method-Override", "DELETE").body("application/json", json_body.clone()),
        call("POST", "/invoices").header("X_HTTP_Method_Override", "DELETE").body("application/json", json_body.clone()),
        call("POST", "/invoices?_method=DELETE").body("application/json", json_body.clone()),
        call("POST", "/invoices?%5Fmethod=DELETE").body("application/json", json_body.clone()),
        call("POST", "/invoices").body("application/x-www-form-urlencoded", "customer=ACME&_method=DELETE"),
        call("POST", "/invoices").body("multipart/form-data; boundary=B0und", multipart),
        call("POST", "/invoices").body("application/json", br#"{"customer":"ACME","_method":"DELETE"}"#.to_vec()),
        call("POST", "/invoices").body("text/plain", br#"{"_method":"DELETE"}"#.to_vec()),
    ];
    let n = attempts.len();
    for (i, a) in attempts.into_iter().enumerate() {
        assert_eq!(code(&a.send(&s, &mandate).await), (400, "method_override_refused"), "attempt {i}");
    }
    assert!(s.upstream.recorded().is_empty(), "an override reached the upstream: {:#?}", s.upstream.recorded());

    // The write itself goes through, and is executed as the write it was decided as.
    let ok = call("POST", "/invoices").body("application/json", json_body.clone()).send(&s, &mandate).await;
    assert_eq!((ok.0, ok.1["executed"].as_str(), ok.1["route"].as_str()), (200, Some("POST"), Some("invoices.create")), "{ok:?}");
    let got = s.upstream.recorded();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["method"].as_str(), got[0]["executed"].as_str()), (Some("POST"), Some("POST")));
    assert_eq!(got[0]["body"].as_str().unwrap().as_bytes(), json_body.as_slice());

    let trail = tool_calls(&s.server.admin(), &task, n + 1).await;
    for d in &trail[..n] {
        assert_eq!(
            (d["reason"].as_str(), d["forwarded"].as_bool(), d["action"].as_str()),
            (Some("method_override_refused"), Some(false), Some("")),
            "{d:#?}"
        );
    }
    assert_eq!(trail[n]["reason"], "allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_query_key_is_refused_unless_the_route_takes_a_list() {
    let s = setup().await;
    let (_a, mandate, task) = task(&s, "statement-bot", false).await;

    // Decided on one value, read upstream on another: refused, whatever the spelling.
    for path in ["/accounts/7/statement?account=1&account=2", "/accounts/7/statement?account=1&%61ccount=2", "/invoices/1?x=1&x=1"] {
        assert_eq!(code(&call("GET", path).send(&s, &mandate).await), (400, "query_key_repeated"), "{path}");
    }
    assert_eq!(code(&call("GET", "/invoices/1?x=%ZZ").send(&s, &mandate).await), (400, "query_bad_encoding"));
    assert!(s.upstream.recorded().is_empty(), "{:#?}", s.upstream.recorded());

    // A declared list keeps every value, in order; everything is written in one encoding
    // (`+` and `%20` are one space, a literal `+` and `;` are data).
    let list = call("GET", "/accounts/7/statement?tag=b&month=2026-01&tag=a&q=x+y%20z%2B1;2").send(&s, &mandate).await;
    assert_eq!(list.0, 200, "{list:?}");
    let got = s.upstream.recorded();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["raw_query"], "tag=b&month=2026-01&tag=a&q=x%20y%20z%2B1%3B2");
    assert_eq!(got[0]["query_pairs"], json!([["tag", "b"], ["month", "2026-01"], ["tag", "a"], ["q", "x y z+1;2"]]));

    let trail = tool_calls(&s.server.admin(), &task, 5).await;
    assert!(trail[..4].iter().all(|d| d["forwarded"] == false));
    assert_eq!(reasons(&trail)[..3].iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["query_key_repeated"; 3]);
    assert_eq!(trail[0]["action"], "billing.accounts.statement", "refused after the route is known: its action is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_spelled_with_underscores_does_not_ride_along() {
    let s = setup().await;
    let (_a, mandate, _task) = task(&s, "header-bot", false).await;

    let got = call("GET", "/invoices/1")
        .header("X_Api_Key", "agent-supplied")
        .header("x-api-key", "agent-supplied-2")
        .header("Proxy_Authorization", "Basic eA==")
        .header("x-forwarded-for", "10.0.0.1")
        .header("forwarded", "for=10.0.0.1")
        .header("x-trace", "t-1")
        .send(&s, &mandate)
        .await;
    // The upstream saw the brokered key alone (checked on its record below); its echo of the
    // key is scrubbed before the agent sees it.
    assert_eq!((got.0, got.1["api_key"].as_str()), (200, Some("[redacted]")), "{got:?}");
    let tenant = call("GET", "/accounts/7/statement").header("x_tenant", "evil").header("x-tenant", "acme").send(&s, &mandate).await;
    assert_eq!(tenant.0, 200, "{tenant:?}");
    let alone = call("GET", "/accounts/8/statement").header("X_Tenant", "evil").send(&s, &mandate).await;
    assert_eq!(alone.0, 200, "{alone:?}");
    let twice = call("GET", "/accounts/9/statement").header("x-tenant", "a").header("x-tenant", "b").send(&s, &mandate).await;
    assert_eq!(code(&twice), (400, "header_repeated"));

    let got = s.upstream.recorded();
    assert_eq!(got.len(), 3, "{got:#?}");
    for r in &got {
        let names: Vec<String> = r["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap().to_owned()).collect();
        let folded: Vec<String> = names.iter().map(|n| n.replace('_', "-")).collect();
        assert_eq!(folded.iter().filter(|n| *n == "x-api-key").count(), 1, "{names:?}");
        assert!(
            !folded.iter().any(|n| n == "proxy-authorization" || n == "authorization" || n == "forwarded" || n.starts_with("x-forwarded-")),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
        assert_eq!(r["folded_headers"]["x-api-key"], API_KEY);
    }
    assert_eq!(got[0]["folded_headers"]["x-trace"], "t-1", "the agent's own headers pass");
    assert_eq!(got[1]["folded_headers"]["x-tenant"], "acme");
    assert!(got[2]["folded_headers"].get("x-tenant").is_none(), "{:#?}", got[2]);
}

/// The canonical view as the gateway builds it, and its digest.
fn view_digest(
    method: &str,
    path: &str,
    segments: &[&str],
    query: &[(&str, &str)],
    body: &[u8],
    ct: Option<&str>,
    headers: &[(&str, &str)],
) -> String {
    let view = json!({
        "upstream": "billing", "method": method, "path": path, "segments": segments,
        "query": query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "body_sha256": hex::encode(Sha256::digest(body)), "body_bytes": body.len(), "content_type": ct,
        "headers": headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
    });
    mandate_core::canonical::Canonical::new(&view, mandate_core::canonical::Limits::default()).unwrap().digest().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_binds_the_whole_request() {
    let s = setup().await;
    let (_a, mandate, task) = task(&s, "notes-bot", true).await;
    assert_eq!(call("POST", "/notes?page=1").body("text/plain", "hello").send(&s, &mandate).await.0, 200);
    assert_eq!(call("POST", "/notes?page=2").body("text/plain", "hello").send(&s, &mandate).await.0, 200);
    assert_eq!(call("POST", "/notes?page=1").body("text/plain", "hellp").send(&s, &mandate).await.0, 200);
    assert_eq!(call("GET", "/accounts/%37/statement?tag=x").header("x-tenant", "acme").send(&s, &mandate).await.0, 200);
    let trail = tool_calls(&s.server.admin(), &task, 4).await;
    let d: Vec<&str> = trail.iter().map(|t| t["request_sha256"].as_str().unwrap()).collect();
    assert_eq!(d[0], view_digest("POST", "/notes", &["notes"], &[("page", "1")], b"hello", Some("text/plain"), &[]));
    assert_eq!(d[1], view_digest("POST", "/notes", &["notes"], &[("page", "2")], b"hello", Some("text/plain"), &[]));
    assert_eq!(d[2], view_digest("POST", "/notes", &["notes"], &[("page", "1")], b"hellp", Some("text/plain"), &[]));
    assert_eq!(
        d[3],
        view_digest("GET", "/accounts/7/statement", &["accounts", "7", "statement"], &[("tag", "x")], b"", None, &[("x-tenant", "acme")])
    );
    assert_eq!(trail[3]["tool"], "/accounts/7/statement");
    // What was recorded is what the upstream got.
    let got = s.upstream.recorded();
    assert_eq!((got[3]["raw_path"].as_str(), got[3]["raw_query"].as_str()), (Some("/accounts/7/statement"), Some("tag=x")));
    assert_eq!(got[2]["body"], "hellp");
}

async fn approver(s: &Setup) -> mandate_client::Client {
    let t = s.server.admin().create_token("approver", "carol@example.com").await.unwrap();
    s.server.admin().with_token(Some(t.token))
}

/// An approved payment goes through once, as approved; the same call with another body is
/// not covered by that approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_covers_the_approved_body_only() {
    let s = setup().await;
    let (_a, mandate, _task) = task(&s, "payments-bot", false).await;
    let approver = approver(&s).await;
    let pay = |amount: u32| call("POST", "/payments?account=1").body("application/json", format!(r#"{{"amount":{amount}}}"#));

    let held = pay(10).send(&s, &mandate).await;
    assert_eq!(code(&held), (403, "approval_required"), "{held:?}");
    let id = held.1["error"]["approval_id"].as_str().unwrap().to_owned();
    approver.approve(&id, Some("ok".into())).await.unwrap();

    let other = pay(1000).send(&s, &mandate).await;
    assert_eq!(code(&other), (403, "approval_required"), "{other:?}");
    assert_ne!(other.1["error"]["approval_id"].as_str(), Some(id.as_str()));
    assert!(s.upstream.recorded().is_empty());

    let approved = pay(10).send(&s, &mandate).await;
    assert_eq!(approved.0, 200, "{approved:?}");
    let got = s.upstream.recorded();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["raw_query"].as_str(), got[0]["body"].as_str()), (Some("account=1"), Some(r#"{"amount":10}"#)));
}

/// The same with another query value, or another non-JSON body: covered once the control
/// plane binds an approval to the whole decision context (which holds `query`,
/// `body_sha256` and `request_sha256`), not only to `context.arguments`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_covers_the_approved_query_only() {
    let s = setup().await;
    let (_a, mandate, _task) = task(&s, "payments-bot", false).await;
    let approver = approver(&s).await;
    let pay = |account: &'static str| call("POST", account).body("application/json", r#"{"amount":10}"#);

    let held = pay("/payments?account=1").send(&s, &mandate).await;
    assert_eq!(code(&held), (403, "approval_required"), "{held:?}");
    let id = held.1["error"]["approval_id"].as_str().unwrap().to_owned();
    approver.approve(&id, Some("ok".into())).await.unwrap();
    let other = pay("/payments?account=2").send(&s, &mandate).await;
    assert_eq!(code(&other), (403, "approval_required"), "{other:?}");
    assert!(s.upstream.recorded().is_empty());
    let approved = pay("/payments?account=1").send(&s, &mandate).await;
    assert_eq!(approved.0, 200, "{approved:?}");
    assert_eq!(s.upstream.recorded()[0]["raw_query"], "account=1");
}
