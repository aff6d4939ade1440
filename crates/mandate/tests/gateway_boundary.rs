#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! The gateway's edge toward the upstream, end to end (the real `mandate serve` with a
//! `[gateway]` section, the demo tool server behind a recording proxy):
//!
//! - only the notifications MCP defines for clients reach the upstream; a client's cancel
//!   reaches it under the id the gateway sent the request with, and only while that request of
//!   the same session is on its way;
//! - a tool whose name is one the gateway uses for a method's action is never listed nor called.

mod common;

use std::time::Duration;

use common::gateway::{
    Hook, Proxy, Seen, bounded, call, demo_tools, eventually, intent, reason, rmcp_connect, serve_with_gateway, tool_calls, tool_names,
};
use common::python::{PROTOCOLS, PyServer, PyServerOptions};
use common::{open_task, register_agent};
use rmcp::model::ReadResourceRequestParams;
use serde_json::{Value, json};

const SECRET: &str = "boundary-upstream-s3cret-4410";
/// An argument that makes the proxy hold the call a while before forwarding it.
const SLOW: &str = "held-by-the-proxy-5c2e";

fn config(mcp_url: &str) -> String {
    format!(
        r#"
[gateway]
[[gateway.upstream]]
name = "demo"
type = "mcp"
url = "{mcp_url}"
protocol = "2025-11-25"
[gateway.upstream.inject]
header = "Authorization"
secret = "demo-tools-token"
format = "Bearer {{}}"
[gateway.upstream.tools."tickets.search"]
kind = "read"
classification = "internal"
"#
    )
}

fn hold_slow_calls() -> Hook {
    std::sync::Arc::new(|seen: Seen| {
        Box::pin(async move {
            if seen.contains(SLOW) {
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
        })
    })
}

/// One JSON-RPC message to the gateway: (status, body or null).
async fn post(url: &str, mandate: &str, session: Option<&str>, stateless: bool, body: Value) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("authorization", format!("Bearer {mandate}"))
        .json(&body);
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    if stateless {
        r = r.header("mcp-protocol-version", "2026-07-28");
    }
    let resp = bounded("post", r.send()).await.unwrap();
    let status = resp.status().as_u16();
    (status, bounded("body", resp.json::<Value>()).await.unwrap_or(Value::Null))
}

fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// The notifications the upstream received (method, params), in order.
fn notifications(proxy: &Proxy) -> Vec<(String, Value)> {
    proxy
        .seen()
        .iter()
        .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok())
        .filter(|m| m.get("id").is_none() && m.get("method").is_some())
        .map(|m| (m["method"].as_str().unwrap().to_owned(), m.get("params").cloned().unwrap_or(Value::Null)))
        .collect()
}

#[tokio::test]
async fn only_client_notifications_are_relayed_and_a_cancel_names_the_upstreams_request() {
    let tools = demo_tools(Some(SECRET)).await;
    let proxy = Proxy::start(&format!("http://{}", tools.addr()), Some(hold_slow_calls())).await;
    let (server, _cfg) = serve_with_gateway(&config(&format!("{}/mcp", proxy.url)), Vec::new());
    let admin = server.admin();
    admin.put_secret("demo-tools-token", SECRET, "demo tool server bearer").await.unwrap();
    let agent = register_agent(&admin, "support-bot", &[]).await;
    let (mandate, _task) = open_task(&server, &agent, &intent(&["demo.tickets.search"])).await;
    let url = format!("{}/mcp/demo", server.url);

    // A 2025-11-25 session.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"roots": {"listChanged": true}},
        "clientInfo": {"name": "boundary-test", "version": "1"}}});
    let resp = bounded(
        "initialize",
        reqwest::Client::new()
            .post(&url)
            .header("accept", "application/json")
            .header("authorization", format!("Bearer {mandate}"))
            .json(&init)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let session = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let sid = Some(session.as_str());
    assert_eq!(post(&url, &mandate, sid, false, notification("notifications/initialized", json!({}))).await.0, 202);
    let before = notifications(&proxy).len();

    // A call the proxy holds, so that it is on its way while the client cancels it.
    let call = {
        let (url, mandate, session) = (url.clone(), mandate.clone(), session.clone());
        tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                              "params": {"name": "tickets.search", "arguments": {"query": SLOW}}});
            post(&url, &mandate, Some(&session), false, body).await
        })
    };
    let upstream_id = eventually("the held call reaches the proxy", Duration::from_secs(10), || async {
        proxy
            .seen()
            .iter()
            .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok())
            .find(|m| m["method"] == "tools/call" && m.to_string().contains(SLOW))
            .map(|m| m["id"].clone())
    })
    .await;
    assert_ne!(upstream_id, json!(77), "the upstream knows the request by the gateway's id");

    let cancel = |id: Value| notification("notifications/cancelled", json!({"requestId": id, "reason": "the user gave up"}));
    assert_eq!(post(&url, &mandate, sid, false, cancel(json!(77))).await.0, 202);
    // A request this session never sent, and one with the same id as text: dropped.
    assert_eq!(post(&url, &mandate, sid, false, cancel(json!(999))).await.0, 202);
    assert_eq!(post(&url, &mandate, sid, false, cancel(json!("77"))).await.0, 202);
    assert_eq!(post(&url, &mandate, sid, false, notification("notifications/cancelled", json!({}))).await.0, 202);
    // The other notifications MCP defines for a client pass.
    let progress = json!({"progressToken": "p-1", "progress": 1, "total": 2});
    assert_eq!(post(&url, &mandate, sid, false, notification("notifications/progress", progress.clone())).await.0, 202);
    assert_eq!(post(&url, &mandate, sid, false, notification("notifications/roots/list_changed", json!({}))).await.0, 202);
    // Anything else is refused, with the reason, and goes nowhere.
    for method in ["notifications/made_up", "notifications/message", "notifications/tools/list_changed", "sampling/whatever"] {
        let (status, body) = post(&url, &mandate, sid, false, notification(method, json!({"x": 1}))).await;
        assert_eq!(status, 400, "{method}: {body}");
        assert_eq!(body["error"]["data"]["reason"], "notification_not_allowed", "{method}: {body}");
    }

    // The call still gets its answer; once answered, its id cancels nothing.
    let (status, answer) = bounded("the held call", call).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], 77, "{answer}");
    assert_eq!(post(&url, &mandate, sid, false, cancel(json!(77))).await.0, 202);

    // Stateless (2026-07-28) notifications: a cancel is accepted and relayed nowhere (closing
    // the stream cancels over HTTP); every other is refused.
    assert_eq!(post(&url, &mandate, None, true, cancel(json!(5))).await.0, 202);
    let (status, body) = post(&url, &mandate, None, true, notification("notifications/progress", progress.clone())).await;
    assert_eq!((status, body["error"]["data"]["reason"].as_str()), (400, Some("notification_not_allowed")), "{body}");

    let relayed: Vec<(String, Value)> = notifications(&proxy).split_off(before);
    assert_eq!(
        relayed,
        [
            ("notifications/cancelled".to_owned(), json!({"requestId": upstream_id, "reason": "the user gave up"})),
            ("notifications/progress".to_owned(), progress),
            ("notifications/roots/list_changed".to_owned(), json!({})),
        ],
        "exactly what MCP defines, a cancel under the upstream's id"
    );
    // Every relayed notification carried the brokered secret, and only it.
    for s in proxy.seen().iter().filter(|s| s.rpc_method().is_some_and(|m| m.starts_with("notifications/"))) {
        assert_eq!(s.header("authorization"), [format!("Bearer {SECRET}").as_str()]);
    }
    tools.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_named_like_methods_are_neither_listed_nor_called() {
    const PY_SECRET: &str = "py-boundary-s3cret-0917";
    let py = PyServer::start_with_args(
        PyServerOptions { require_bearer: Some(PY_SECRET.into()), record_headers: true },
        &["--reserved-name-tools"],
    );
    let config = format!(
        r#"
[gateway]
[[gateway.upstream]]
name = "py"
type = "mcp"
url = "{}"
[gateway.upstream.inject]
secret = "py-token"
[gateway.upstream.tools."notes.read"]
kind = "read"
classification = "internal"
[gateway.upstream.tools."resources.read"]
classification = "internal"
"#,
        py.url
    );
    let (server, _cfg) = serve_with_gateway(&config, Vec::new());
    let admin = server.admin();
    admin.put_secret("py-token", PY_SECRET, "python server bearer").await.unwrap();
    let agent = register_agent(&admin, "notes-bot", &[]).await;
    // The intent even names the reserved actions: the names are refused before any decision.
    let (mandate, task) = open_task(&server, &agent, &intent(&["py.notes.read", "py.resources.read", "py.tools.call"])).await;
    for protocol in PROTOCOLS {
        let client = rmcp_connect(&format!("{}/mcp/py", server.url), &mandate, protocol, &[]).await.unwrap();
        assert_eq!(tool_names(&client).await, ["notes.read"], "{protocol}");
        for name in ["resources.read", "tools.call"] {
            let (code, data) = call(&client, name, json!({"text": "x"})).await.unwrap_err();
            assert_eq!((code, reason(&data)), (-32001, "tool_name_reserved"), "{protocol} {name}: {data}");
            assert!(data.get("decision_id").is_none(), "refused before any decision: {data}");
        }
        // The method itself is still decided as `py.resources.read` and answered.
        let read = bounded("read", client.read_resource(ReadResourceRequestParams::new("notes://1"))).await.unwrap();
        let text = serde_json::to_value(&read).unwrap().to_string();
        assert!(text.contains("refund on order 1001"), "note 1 is untouched: {text}");
        call(&client, "notes.read", json!({"id": "1"})).await.unwrap();
        let _ = bounded("cancel", client.cancel()).await;
    }
    // Only the allowed calls reached the upstream.
    let calls = py.recorded().iter().filter(|r| r["rpc_method"] == "tools/call").count();
    assert_eq!(calls, PROTOCOLS.len(), "{:#?}", py.recorded());
    // Recorded like other refusals: not forwarded, the reason, no decision.
    // Per revision: two refusals, the resource read and the allowed call.
    let events = tool_calls(&admin, &task, 4 * PROTOCOLS.len()).await;
    let reserved: Vec<&Value> = events.iter().filter(|d| d["reason"] == "tool_name_reserved").collect();
    assert_eq!(reserved.len(), 2 * PROTOCOLS.len(), "{events:#?}");
    for d in reserved {
        assert_eq!((d["forwarded"].as_bool(), d["decision"].as_bool()), (Some(false), Some(false)), "{d}");
        assert!(d.get("decision_id").is_none(), "{d}");
        assert!(d["action"] == "py.resources.read" || d["action"] == "py.tools.call", "{d}");
    }
    // No decision was asked for a reserved name: the only `py.resources.read` decisions are
    // of the method, on the resource.
    let trail = admin.audit_trail(&task).await.unwrap();
    let decisions: Vec<&Value> = trail.events.iter().filter(|e| e["kind"] == "decision").map(|e| &e["details"]).collect();
    assert!(!decisions.iter().any(|d| d["action"] == "py.tools.call"), "{decisions:#?}");
    for d in decisions.iter().filter(|d| d["action"] == "py.resources.read") {
        assert_eq!(d["resource"]["type"], "mcp_resource", "{d}");
    }
}

#[test]
fn a_config_naming_a_reserved_tool_or_route_action_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[upstream]]\nname = \"gh\"\ntype = \"mcp\"\nurl = \"http://127.0.0.1:9/mcp\"\n[upstream.tools.\"tools.list\"]\nkind = \"read\"\n",
            "upstream `gh`: tool `tools.list`",
        ),
        (
            "[[upstream]]\nname = \"billing\"\ntype = \"http\"\nurl = \"http://127.0.0.1:9\"\n[[upstream.routes]]\nmethod = \"GET\"\npath = \"/x\"\naction = \"gh.prompts.get\"\nkind = \"read\"\nclassification = \"public\"\n",
            "upstream `billing`: route `GET /x`: `action` `gh.prompts.get`",
        ),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("gateway-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
            .arg("gateway")
            .arg("--config")
            .arg(&path)
            .args(["--listen", "127.0.0.1:0"])
            .env("MANDATE_URL", "http://127.0.0.1:9")
            .env("MANDATE_TOKEN", "mnd_unused")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
}
