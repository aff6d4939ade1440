#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! The gateway end to end: the real `mandate serve` binary with a `[gateway]` section, the
//! demo tool server (rmcp) as the upstream, and the official Rust SDK's client (rmcp) in
//! both revisions. Filtered lists, allowed and denied calls with reasons, calls outside the
//! intent, revocation mid-session, the brokered secret injected upstream and seen nowhere
//! else, and the evidence trail in order.

mod common;

use std::time::Duration;

use common::gateway::{McpClient, STEP, bounded, call, demo_tools, intent, reason, rmcp_connect, tool_names};
use common::{Server, TestAgent, open_task, register_agent};
use mandate_demo_tools::DemoToolsHandle;
use serde_json::{Value, json};

const UPSTREAM_SECRET: &str = "upstream-s3cret-value-7781";

pub struct Setup {
    pub server: Server,
    pub tools: DemoToolsHandle,
    pub agent: TestAgent,
}

/// The gateway config for the demo tool server at `mcp_url`.
pub fn gateway_toml(mcp_url: &str, extra: &str) -> String {
    format!(
        r#"
[gateway]
[[gateway.upstream]]
name = "demo"
type = "mcp"
url = "{mcp_url}"
[gateway.upstream.inject]
header = "Authorization"
secret = "demo-tools-token"
format = "Bearer {{}}"
[gateway.upstream.tools."tickets.search"]
kind = "read"
classification = "internal"
[gateway.upstream.tools."tickets.export"]
kind = "read"
classification = "confidential"
[gateway.upstream.tools."email.send"]
kind = "write"
classification = "internal"
log_arguments = true
redact = ["body"]
[gateway.upstream.tools."deploy.production"]
kind = "execute"
classification = "internal"
{extra}
"#
    )
}

async fn setup(agent_attrs: &[(&str, &str)]) -> Setup {
    setup_with(agent_attrs, "", "").await
}

/// `settings`: lines for the `[gateway]` table itself; `upstream`: lines for the upstream's.
async fn setup_with(agent_attrs: &[(&str, &str)], settings: &str, upstream: &str) -> Setup {
    let tools = demo_tools(Some(UPSTREAM_SECRET)).await;
    let toml = gateway_toml(&tools.mcp_url(), "").replacen("[gateway]\n", &format!("[gateway]\n{settings}\n"), 1).replacen(
        "type = \"mcp\"\n",
        &format!("type = \"mcp\"\n{upstream}\n"),
        1,
    );
    let server = Server::start_configured(&toml, Vec::new());
    server.admin().put_secret("demo-tools-token", UPSTREAM_SECRET, "demo tool server bearer").await.unwrap();
    let agent = register_agent(&server.admin(), "support-bot", agent_attrs).await;
    Setup { server, tools, agent }
}

async fn connect(url: String, mandate: &str, modern: bool) -> McpClient {
    rmcp_connect(&url, mandate, if modern { "2026-07-28" } else { "2025-11-25" }, &[]).await.unwrap()
}

/// The task's trail once it holds `n` tool calls (bounded wait).
pub async fn trail_with_calls(server: &Server, task: &str, n: usize) -> mandate_proto::admin::AuditEventsResponse {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let trail = server.admin().audit_trail(task).await.unwrap();
        let calls = trail.events.iter().filter(|e| e["kind"] == "tool.call").count();
        if calls >= n || std::time::Instant::now() > deadline {
            return trail;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The story with a client of one revision and an upstream spoken to in another (or the
/// one it is probed for, when `upstream_protocol` is empty).
async fn the_whole_story(modern: bool, upstream_protocol: &str) {
    let pin = if upstream_protocol.is_empty() { String::new() } else { format!("protocol = \"{upstream_protocol}\"") };
    let s = setup_with(&[], "", &pin).await;
    let actions = ["demo.tickets.search", "demo.email.send", "demo.deploy.production"];
    let (mandate, task) = open_task(&s.server, &s.agent, &intent(&actions)).await;
    let url = format!("{}/mcp/demo", s.server.url);
    let client = connect(url, &mandate, modern).await;

    // Filtered list: `tickets.export` is outside the intent; `email.send` needs a writer
    // (support-bot is not one); `deploy.production` is an execute that policy holds for
    // approval, so it is listed.
    assert_eq!(tool_names(&client).await, ["deploy.production", "tickets.search"]);

    // Allowed: forwarded with the injected secret (the upstream refuses requests without it).
    let ok = call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap();
    assert_ne!(ok["isError"], json!(true), "{ok}");
    assert_eq!(ok["structuredContent"]["tickets"][0]["id"], "T-42");

    // Denied by policy, with the reason and the decision id; nothing forwarded.
    let (code, data) =
        call(&client, "email.send", json!({"to": "bob@example.com", "subject": "x", "body": "private words"})).await.unwrap_err();
    assert_eq!(code, -32001);
    assert_eq!(reason(&data), "no_policy_permits", "{data}");
    assert!(data["decision_id"].as_str().unwrap().starts_with("dec_"));
    assert!(s.tools.state().outbox().is_empty(), "a denied call must not reach the upstream");

    // Outside the intent: refused before policy.
    let (code, data) = call(&client, "tickets.export", json!({"ids": ["T-42"]})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "action_outside_intent"));

    // A tool the config does not know is an execute at `restricted`: above the intent.
    let (_, data) = call(&client, "nonexistent.tool", json!({})).await.unwrap_err();
    assert_eq!(reason(&data), "action_outside_intent");

    // Approval required: refused with that reason, nothing deployed.
    let (code, data) = call(&client, "deploy.production", json!({"service": "web", "version": "1.0.0"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "approval_required"));
    assert!(s.tools.state().deployments().is_empty());

    // Revoke the task: the very next call is refused, with the reason.
    s.server.admin().revoke_task(&task, Some("test".into())).await.unwrap();
    let (code, data) = call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "task_revoked"), "{data}");
    let _ = bounded("cancel", client.cancel()).await;

    // Evidence: every call in order, linked to its decision; the secret by name and version.
    // A call's outcome is queued for the trail without holding the answer (its decision was
    // durable before anything was forwarded), so it may land a commit later.
    let trail = trail_with_calls(&s.server, &task, 6).await;
    let calls: Vec<&Value> = trail.events.iter().filter(|e| e["kind"] == "tool.call").map(|e| &e["details"]).collect();
    let summary: Vec<(String, bool, String)> = calls
        .iter()
        .map(|d| (d["tool"].as_str().unwrap().to_owned(), d["forwarded"].as_bool().unwrap(), d["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        summary,
        [
            ("tickets.search".to_owned(), true, "allowed".to_owned()),
            ("email.send".to_owned(), false, "no_policy_permits".to_owned()),
            ("tickets.export".to_owned(), false, "action_outside_intent".to_owned()),
            ("nonexistent.tool".to_owned(), false, "action_outside_intent".to_owned()),
            ("deploy.production".to_owned(), false, "approval_required".to_owned()),
            ("tickets.search".to_owned(), false, "task_revoked".to_owned()),
        ],
        "{calls:#?}"
    );
    let first = calls[0];
    assert_eq!(first["secret"], json!({"name": "demo-tools-token", "version": 1}));
    assert_eq!(first["result"], "ok");
    assert_eq!(first["arguments_sha256"].as_str().unwrap().len(), 64);
    assert!(first.get("arguments").is_none(), "arguments are recorded only where config asks");
    let email = calls[1];
    assert_eq!(email["arguments"]["body"], "[redacted]", "configured fields are redacted");
    assert_eq!(email["arguments"]["to"], "bob@example.com");
    for d in &calls {
        let id = d["decision_id"].as_str().unwrap();
        assert!(trail.events.iter().any(|e| e["kind"] == "decision" && e["details"]["decision_id"] == id), "decision {id} is in the trail");
    }
    assert!(s.server.admin().audit_verify().await.unwrap().ok);

    // The secret went upstream and nowhere else: not in the trail, not in the log.
    let export = s.server.admin().audit_export("jsonl").await.unwrap();
    assert!(!export.contains(UPSTREAM_SECRET));
    assert!(!s.server.log().contains(UPSTREAM_SECRET));
    assert!(!export.contains(&mandate), "the mandate is never recorded");
    s.tools.shutdown().await.unwrap();
}

#[tokio::test]
async fn rmcp_client_2025_11_25_through_the_gateway() {
    the_whole_story(false, "").await;
}

#[tokio::test]
async fn rmcp_client_2026_07_28_through_the_gateway() {
    the_whole_story(true, "").await;
}

#[tokio::test]
async fn a_2026_07_28_client_through_a_2025_11_25_upstream() {
    the_whole_story(true, "2025-11-25").await;
}

#[tokio::test]
async fn a_2025_11_25_client_through_a_2026_07_28_upstream() {
    the_whole_story(false, "2026-07-28").await;
}

#[tokio::test]
async fn a_writer_agent_sees_and_sends_email() {
    let s = setup(&[("writer", "true")]).await;
    let (mandate, _task) = open_task(&s.server, &s.agent, &intent(&["demo.tickets.search", "demo.email.send"])).await;
    let client = connect(format!("{}/mcp/demo", s.server.url), &mandate, false).await;
    assert_eq!(tool_names(&client).await, ["email.send", "tickets.search"]);
    let r = call(&client, "email.send", json!({"to": "bob@example.com", "subject": "T-42", "body": "Fixed."})).await.unwrap();
    assert_ne!(r["isError"], json!(true));
    assert_eq!(s.tools.state().outbox().len(), 1);
    let _ = bounded("cancel", client.cancel()).await;
    s.tools.shutdown().await.unwrap();
}

#[tokio::test]
async fn mandates_are_checked_before_anything_else() {
    let s = setup(&[]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp/demo", s.server.url);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let post = |auth: Option<&str>, body: &'static str| {
        let mut r =
            http.post(&url).header("content-type", "application/json").header("accept", "application/json, text/event-stream").body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    // No mandate: 401 with a challenge naming the resource metadata.
    let r = post(None, init).await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    // Not a mandate: 401 invalid_token.
    let r = post(Some("Bearer not-a-jwt"), init).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    // The upstream secret itself is not a credential here either.
    let r = post(Some(&format!("Bearer {UPSTREAM_SECRET}")), init).await.unwrap();
    assert_eq!(r.status(), 401);
    // The protected-resource metadata points at the control plane.
    let meta: Value =
        http.get(format!("{}/.well-known/oauth-protected-resource/mcp/demo", s.server.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(meta["authorization_servers"][0], s.server.url);
    // An unknown upstream is a 404.
    let r = http.post(format!("{}/mcp/nope", s.server.url)).body(init).send().await.unwrap();
    assert_eq!(r.status(), 404);
    s.tools.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_answered_clearly_and_never_forwarded() {
    // A small limit, so the oversized body is sent whole before the gateway answers.
    let s = setup_with(&[], "max_message_bytes = 4096", "").await;
    let (mandate, _) = open_task(&s.server, &s.agent, &intent(&["demo.tickets.search"])).await;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp/demo", s.server.url);
    let send = |body: Vec<u8>, session: Option<String>| {
        let mut r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {mandate}"))
            .body(body);
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let expect = |status: u16, code: i64| {
        move |(st, body): (u16, Value)| {
            assert_eq!(st, status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
        }
    };
    async fn read(r: reqwest::Response) -> (u16, Value) {
        let st = r.status().as_u16();
        (st, r.json().await.unwrap_or(Value::Null))
    }
    expect(400, -32700)(read(send(b"{not json".to_vec(), None).await.unwrap()).await);
    expect(400, -32600)(read(send(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_vec(), None).await.unwrap()).await);
    expect(400, -32600)(read(send(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec(), None).await.unwrap()).await);
    expect(404, -32003)(
        read(send(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.to_vec(), Some("no-such-session".into())).await.unwrap()).await,
    );
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"tickets.search","arguments":{{"query":"{}"}}}}}}"#,
        "x".repeat(8 * 1024)
    );
    expect(413, -32600)(read(send(big.into_bytes(), None).await.unwrap()).await);
    // Stateless requests whose routing headers disagree with the body.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("authorization", format!("Bearer {mandate}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "tickets.search")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy.production","arguments":{}}}"#)
        .send()
        .await
        .unwrap();
    expect(400, -32020)(read(r).await);
    // An unknown method is refused, not forwarded.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("authorization", format!("Bearer {mandate}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "sampling/createMessage")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#)
        .send()
        .await
        .unwrap();
    let (st, body) = read(r).await;
    assert_eq!((st, body["error"]["code"].as_i64()), (200, Some(-32601)), "{body}");
    assert!(s.tools.state().outbox().is_empty() && s.tools.state().deployments().is_empty());
    s.tools.shutdown().await.unwrap();
}
