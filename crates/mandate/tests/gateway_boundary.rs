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

use common::gateway::{Hook, Proxy, Seen, bounded, eventually, intent, serve_with_gateway};
use common::{open_task, register_agent};
use mandate_demo_tools::DemoToolsOptions;
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tools =
        mandate_demo_tools::spawn(listener, DemoToolsOptions { require_bearer: Some(SECRET.into()), ..Default::default() }).unwrap();
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
