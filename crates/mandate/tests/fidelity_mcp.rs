#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! What reaches an MCP tool is exactly what was decided and approved. The real `mandate serve`
//! with its embedded gateway in front of an upstream built on the official Python SDK that
//! executes what it is sent the way careless servers do (`tests/py/fidelity_server.py`: it
//! percent-decodes resource paths, takes `\` as a separator and resolves `..`). Every test
//! asserts on what the upstream recorded, not only on what the agent was told.
//!
//! - An approval covers the canonical arguments, nulls, array order, floats and nesting
//!   included: a replay that differs in anything asks anew and reaches nothing.
//! - Arguments too deep, or with an integer a double cannot hold, are refused, never cut off.
//! - A resource URI is normalized (RFC 3986) before the intent ceiling and policy, and the
//!   normalized URI is what goes upstream: no spelling of `..` reads outside the pattern.
//! - Members of `params` that were not decided are not forwarded.

mod common;

use std::time::{Duration, Instant};

use common::gateway::{McpClient, bounded, call, reason, rmcp_connect, serve_with_gateway, tool_calls};
use common::python::{PyUpstream, start_recording_upstream};
use common::{Server, open_task, register_agent};
use mandate_client::Client;
use rmcp::model::ReadResourceRequestParams;
use serde_json::{Value, json};

/// `fidelity_server.py`, recording every call and read it executed.
struct Upstream(PyUpstream);

impl Upstream {
    fn start() -> Upstream {
        Upstream(start_recording_upstream("fidelity_server.py", &[], "--record"))
    }

    fn calls(&self) -> Vec<Value> {
        self.0.recorded().into_iter().filter(|r| r["kind"] == "call").map(|r| r["arguments"].clone()).collect()
    }

    fn reads(&self) -> Vec<(String, String)> {
        self.0
            .recorded()
            .into_iter()
            .filter(|r| r["kind"] == "read")
            .map(|r| (r["uri"].as_str().unwrap().to_owned(), r["path"].as_str().unwrap().to_owned()))
            .collect()
    }
}

struct Setup {
    server: Server,
    upstream: Upstream,
    approver: Client,
    _cfg: tempfile::TempDir,
}

async fn setup() -> Setup {
    let upstream = Upstream::start();
    let config = format!(
        r#"
[gateway]
approval_wait_secs = 0
[[gateway.upstream]]
name = "fid"
type = "mcp"
url = "{}"
[gateway.upstream.tools."payments.send"]
kind = "execute"
classification = "internal"
[gateway.upstream.tools."resources.read"]
kind = "read"
classification = "internal"
"#,
        upstream.0.url
    );
    let (server, cfg) = serve_with_gateway(&config, Vec::new());
    let t = server.admin().create_token("approver", "carol@example.com").await.unwrap();
    let approver = server.admin().with_token(Some(t.token));
    Setup { server, upstream, approver, _cfg: cfg }
}

fn task_intent(actions: &[&str], resources: &[&str]) -> Value {
    json!({
        "type": "agent_task",
        "purpose": "Pay invoice INV-7",
        "actions": actions,
        "resources": resources,
        "max_classification": "internal",
        "lifetime_seconds": 600
    })
}

/// The JSON-RPC error of a refused call, as (code, data).
async fn refused(client: &McpClient, args: Value) -> (i32, Value) {
    match call(client, "payments.send", args.clone()).await {
        Err(e) => e,
        Ok(v) => panic!("{args} should have been refused, got {v}"),
    }
}

/// Nested `levels` objects deep, with `leaf` at the bottom.
fn nested(levels: usize, leaf: &str) -> Value {
    let mut v = json!(leaf);
    for _ in 0..levels {
        v = json!({ "n": v });
    }
    v
}

async fn wait_for_upstream_calls(up: &Upstream, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = up.calls();
        if calls.len() >= n || Instant::now() > deadline {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_covers_the_canonical_call_and_nothing_else() {
    let s = setup().await;
    let admin = s.server.admin();
    let agent = register_agent(&admin, "pay-bot", &[]).await;
    let (mandate, task) = open_task(&s.server, &agent, &task_intent(&["fid.payments.send"], &["*"])).await;
    let client = rmcp_connect(&format!("{}/mcp/fid", s.server.url), &mandate, "2025-11-25", &[]).await.unwrap();

    // What a person is asked to approve: nulls, a float, array order and deep nesting included.
    let approved = json!({
        "to": "alice",
        "amount": 10.5,
        "cc": [null, "bob"],
        "memo": nested(12, "invoice INV-7"),
    });
    let (code, data) = refused(&client, approved.clone()).await;
    assert_eq!((code, reason(&data)), (-32001, "approval_required"), "{data}");
    let first = data["approval_id"].as_str().unwrap().to_owned();
    let view = s.approver.list_approvals(Some("pending"), None).await.unwrap().into_iter().find(|a| a.id == first).unwrap();
    assert_eq!(view.arguments, approved, "the approver sees the whole call, nulls and depth included");
    s.approver.approve(&first, Some("pay it".into())).await.unwrap();

    // Each of these differed from the approved call only in what a lossy view dropped; each
    // once used an approval it was not given. Now each asks anew, and nothing reaches the tool.
    let replays = [
        json!({ "to": "alice", "amount": 10.5, "cc": [null, "bob"], "memo": nested(12, "send to mallory instead") }),
        json!({ "to": "alice", "amount": 10.5, "cc": ["bob"], "memo": nested(12, "invoice INV-7") }),
        json!({ "to": "alice", "amount": 10.5, "cc": ["bob", null], "memo": nested(12, "invoice INV-7") }),
        json!({ "to": "alice", "amount": "10.5", "cc": [null, "bob"], "memo": nested(12, "invoice INV-7") }),
        json!({ "to": "alice", "amount": 10.5, "cc": [null, "bob"], "memo": nested(12, "invoice INV-7"), "account": null }),
    ];
    let mut ids = vec![first.clone()];
    for r in &replays {
        let (code, data) = refused(&client, r.clone()).await;
        assert_eq!((code, reason(&data)), (-32001, "approval_required"), "{r}: {data}");
        let id = data["approval_id"].as_str().unwrap().to_owned();
        assert!(!ids.contains(&id), "{r} was bound to an earlier approval");
        ids.push(id);
    }
    assert!(s.upstream.calls().is_empty(), "a replay reached the tool: {:?}", s.upstream.calls());

    // The identical call, with its members in another order (the same canonical form), goes
    // through once; the tool receives exactly the approved arguments.
    let same = json!({ "memo": nested(12, "invoice INV-7"), "cc": [null, "bob"], "amount": 10.5, "to": "alice" });
    let out = bounded("approved call", call(&client, "payments.send", same.clone())).await.unwrap();
    assert_eq!(out["isError"], json!(false), "{out}");
    let calls = wait_for_upstream_calls(&s.upstream, 1).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["to"], json!("alice"));
    assert_eq!(calls[0]["amount"], json!(10.5));
    assert_eq!(calls[0]["cc"], json!([null, "bob"]));
    assert_eq!(calls[0]["memo"], nested(12, "invoice INV-7"));
    // Used once: the same call again asks anew.
    let (_, data) = refused(&client, approved.clone()).await;
    assert_eq!(reason(&data), "approval_required");
    assert!(!ids.contains(&data["approval_id"].as_str().unwrap().to_owned()));

    // The evidence digest is the digest the approval was bound to.
    let trail = tool_calls(&admin, &task, 8).await;
    let forwarded: Vec<&Value> = trail.iter().filter(|c| c["forwarded"] == json!(true)).collect();
    assert_eq!(forwarded.len(), 1, "{trail:?}");
    assert_eq!(forwarded[0]["arguments_sha256"].as_str(), Some(view.arguments_digest.as_str()));
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_without_a_canonical_form_are_refused_never_cut() {
    let s = setup().await;
    let admin = s.server.admin();
    let agent = register_agent(&admin, "pay-bot", &[]).await;
    let (mandate, _task) = open_task(&s.server, &agent, &task_intent(&["fid.payments.send"], &["*"])).await;
    let client = rmcp_connect(&format!("{}/mcp/fid", s.server.url), &mandate, "2026-07-28", &[]).await.unwrap();
    let cases = [
        (json!({ "to": "alice", "amount": 1, "memo": nested(24, "deep") }), "arguments_too_deep"),
        (json!({ "to": "alice", "amount": 9007199254740993u64 }), "arguments_not_canonical"),
        (json!({ "to": "alice", "amount": 1, "memo": "x".repeat(1_100_000) }), "arguments_too_large"),
    ];
    for (args, code) in cases {
        let (c, data) = refused(&client, args).await;
        assert_eq!((c, reason(&data)), (-32602, code), "{data}");
    }
    assert!(s.upstream.calls().is_empty(), "{:?}", s.upstream.calls());
    let _ = client.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_uris_are_decided_as_the_upstream_resolves_them() {
    let s = setup().await;
    let admin = s.server.admin();
    let agent = register_agent(&admin, "reader", &[]).await;
    let (mandate, task) =
        open_task(&s.server, &agent, &task_intent(&["fid.resources.read"], &["mcp_resource:file:///data/public/*"])).await;
    for protocol in ["2025-11-25", "2026-07-28"] {
        let client = rmcp_connect(&format!("{}/mcp/fid", s.server.url), &mandate, protocol, &[]).await.unwrap();
        // Every spelling of "one level up": resolved before the ceiling (and so outside it), or
        // refused where an upstream could read it two ways.
        for uri in [
            "file:///data/public/../secret.txt",
            "file:///data/public/%2e%2e/secret.txt",
            "file:///data/public/%2E%2e/secret.txt",
            "file:///data/public/.%2E/secret.txt",
            "file:///data/public/sub/../../secret.txt",
            "file:///data/public/./../secret.txt",
            "FILE:///data/public/../secret.txt",
            "file:///data/public/..%2Fsecret.txt",
            "file:///data/public/..%2fsecret.txt",
            "file:///data/public/..%5Csecret.txt",
            "file:///data/public/%2e%2e%2fsecret.txt",
            "file:///data/public/..\\secret.txt",
            "file:///../data/secret.txt",
        ] {
            let r = bounded("read", client.read_resource(ReadResourceRequestParams::new(uri))).await;
            let (code, data) = match r {
                Err(rmcp::ServiceError::McpError(e)) => (e.code.0, e.data.unwrap_or(Value::Null)),
                other => panic!("{protocol}: {uri} should be refused, got {other:?}"),
            };
            assert!(
                (code, reason(&data)) == (-32001, "resource_outside_intent") || (code, reason(&data)) == (-32602, "resource_uri_invalid"),
                "{protocol}: {uri}: {code} {data}"
            );
        }
        // Inside the pattern, in other spellings: forwarded in the one normalized form.
        for uri in
            ["file:///data/public/./a.txt", "file:///data/public/%61.txt", "file:///data/public/x/../a.txt", "FILE:///data/public/a.txt"]
        {
            let r = bounded("read", client.read_resource(ReadResourceRequestParams::new(uri))).await.unwrap();
            assert!(format!("{r:?}").contains("public note"), "{protocol}: {uri}: {r:?}");
        }
        let _ = client.cancel().await;
    }
    let reads = s.upstream.reads();
    assert_eq!(reads.len(), 8, "{reads:?}");
    assert!(reads.iter().all(|(uri, path)| uri == "file:///data/public/a.txt" && path == "/data/public/a.txt"), "{reads:?}");
    // The decided refusals (7 spellings that resolve outside the pattern, per revision) are in
    // the trail under the normalized URI, next to the 8 reads; the 6 that cannot be read one
    // way were refused before any decision.
    let trail = tool_calls(&admin, &task, 2 * 7 + 8).await;
    assert!(trail.iter().any(|c| c["tool"] == json!("file:///data/secret.txt") && c["forwarded"] == json!(false)), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_decided_params_are_forwarded() {
    let s = setup().await;
    let agent = register_agent(&s.server.admin(), "pay-bot", &[]).await;
    let intent = task_intent(&["fid.resources.read"], &["*"]);
    let (mandate, _task) = open_task(&s.server, &agent, &intent).await;
    // A stateless request with members the decision never saw, next to the decided ones.
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "resources/read",
        "params": {
            "uri": "file:///data/public/a.txt",
            "arguments": { "path": "/data/secret.txt" },
            "path": "/data/secret.txt",
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": { "name": "t", "version": "1" },
                "io.modelcontextprotocol/clientCapabilities": {},
                "override": "/data/secret.txt"
            }
        }
    });
    let resp = reqwest::Client::new()
        .post(format!("{}/mcp/fid", s.server.url))
        .bearer_auth(&mandate)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "resources/read")
        .header("mcp-name", "file:///data/public/a.txt")
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains("public note"), "{text}");
    assert!(!text.contains("TOP-SECRET"), "{text}");
    assert_eq!(s.upstream.reads(), [("file:///data/public/a.txt".to_owned(), "/data/public/a.txt".to_owned())]);
}
