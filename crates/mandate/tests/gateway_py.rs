#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! The gateway (embedded in the real `mandate serve`) between the official SDKs, in both MCP
//! revisions:
//!
//! - the Python SDK's client (`mcp` 2.3.0) through the gateway to the Rust demo tool server;
//! - the Rust SDK's client (rmcp) through the gateway to the Python SDK's server, over
//!   streamable HTTP (the upstream spoken to in 2026-07-28 and in 2025-11-25);
//! - the Rust SDK's client through the gateway to the Python server over stdio, one process
//!   per session, stopped when its task is revoked;
//! - prompts and resources decided by their configured kind, and a call whose brokered secret
//!   is gone refused without reaching the upstream.
//!
//! Upstreams sit behind a recording proxy, so the tests see exactly what the gateway sent them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::gateway::{
    Hook, McpClient, Proxy, Seen, bounded, call, demo_tools, eventually, intent, reason, rmcp_connect, serve_with_gateway, summary,
    toml_str, tool_calls, tool_names,
};
use common::python::{PROTOCOLS, PyClient, PyServer, PyServerOptions, stdio_server_command};
use common::{open_task, register_agent, sorted};
use rmcp::model::{GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::{Value, json};

const DEMO_SECRET: &str = "demo-upstream-s3cret-5512";
const PY_SECRET: &str = "py-upstream-s3cret-8830";
/// The argument that makes the client-side proxy revoke the task before forwarding the call.
const MARKER: &str = "asked-after-revocation-9f1c";

/// The JSON-RPC error of a failed rmcp request, as (code, data).
fn rpc_error<T: std::fmt::Debug>(r: Result<T, rmcp::ServiceError>) -> (i32, Value) {
    match r {
        Err(rmcp::ServiceError::McpError(e)) => (e.code.0, e.data.unwrap_or(Value::Null)),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

fn assert_decision_id(data: &Value) {
    let id = data["decision_id"].as_str().unwrap_or_else(|| panic!("no decision id in {data}"));
    assert!(id.starts_with("dec_"), "{data}");
}

// ---------------------------------------------------------------------------------------------
// The Python client through the gateway to the Rust demo tool server
// ---------------------------------------------------------------------------------------------

fn demo_gateway(mcp_url: &str) -> String {
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
[gateway.upstream.tools."deploy.production"]
kind = "execute"
classification = "internal"
"#
    )
}

/// A hook that revokes `task` (once) when a request carrying [`MARKER`] comes by, before it is
/// forwarded: the call that carries it is the first one after the revocation.
fn revoke_on_marker(admin: mandate_client::Client, task: String) -> Hook {
    let done = Arc::new(AtomicBool::new(false));
    Arc::new(move |seen: Seen| {
        let (admin, task, done) = (admin.clone(), task.clone(), done.clone());
        Box::pin(async move {
            if seen.contains(MARKER) && !done.swap(true, Ordering::SeqCst) {
                admin.revoke_task(&task, Some("revoked mid-session by the test".into())).await.unwrap();
            }
        })
    })
}

async fn python_client_through_the_gateway(protocol: &str) {
    let demo = demo_tools(Some(DEMO_SECRET)).await;
    let upstream = Proxy::start(&format!("http://{}", demo.addr()), None).await;
    let (server, _cfg) = serve_with_gateway(&demo_gateway(&format!("{}/mcp", upstream.url)), Vec::new());
    let admin = server.admin();
    admin.put_secret("demo-tools-token", DEMO_SECRET, "demo tool server bearer").await.unwrap();
    let agent = register_agent(&admin, "support-bot", &[]).await;
    let actions = ["demo.tickets.search", "demo.email.send", "demo.deploy.production"];
    let (mandate, task) = open_task(&server, &agent, &intent(&actions)).await;
    let front = Proxy::start(&server.url, Some(revoke_on_marker(admin.clone(), task.clone()))).await;

    let out = PyClient::new(format!("{}/mcp/demo", front.url), protocol)
        .bearer(&mandate)
        .steps(json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "tickets.search", "arguments": {"query": "checkout"}},
            {"op": "call_tool", "name": "email.send", "arguments": {"to": "bob@example.com", "subject": "x", "body": "private words"}},
            {"op": "call_tool", "name": "tickets.export", "arguments": {"ids": ["T-42"]}},
            {"op": "call_tool", "name": "deploy.production", "arguments": {"service": "web", "version": "1.0.0"}},
            {"op": "call_tool", "name": "tickets.search", "arguments": {"query": MARKER}},
        ]))
        .run()
        .await;
    let what = format!("{protocol}: {}\n--- client stderr\n{}", out.json, out.stderr);
    assert_eq!(out.connect(), &json!({"ok": true}), "{what}");
    assert_eq!(out.protocol(), Some(protocol), "{what}");
    let r = out.results();

    // Filtered list: `tickets.export` is outside the intent, `email.send` needs a writer;
    // `deploy.production` is held for approval, so it is listed.
    assert_eq!(r[0]["ok"], true, "{what}");
    assert_eq!(sorted(r[0]["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap())), ["deploy.production", "tickets.search"]);

    // Allowed: forwarded with the brokered secret (the demo server refuses requests without it).
    assert_eq!(r[1]["ok"], true, "{what}");
    assert_eq!(r[1]["result"]["isError"], false, "{what}");
    assert_eq!(r[1]["result"]["structuredContent"]["tickets"][0]["id"], "T-42", "{what}");

    // Denied by policy: the COAZ code, the reason and the decision id in the error's data.
    assert_eq!(r[2]["ok"], false, "{what}");
    assert_eq!(r[2]["error"]["code"], -32001, "{what}");
    assert_eq!(reason(&r[2]["error"]["data"]), "no_policy_permits", "{what}");
    assert_decision_id(&r[2]["error"]["data"]);

    // Outside the intent, and held for approval.
    assert_eq!((r[3]["error"]["code"].as_i64(), reason(&r[3]["error"]["data"])), (Some(-32001), "action_outside_intent"), "{what}");
    assert_eq!((r[4]["error"]["code"].as_i64(), reason(&r[4]["error"]["data"])), (Some(-32001), "approval_required"), "{what}");

    // The task was revoked just before this call reached the gateway: refused, with the reason.
    assert_eq!((r[5]["error"]["code"].as_i64(), reason(&r[5]["error"]["data"])), (Some(-32001), "task_revoked"), "{what}");
    assert_decision_id(&r[5]["error"]["data"]);

    // What reached the upstream: one call, the allowed one, every request with the injected
    // secret, none with the agent's mandate.
    assert!(demo.state().outbox().is_empty() && demo.state().deployments().is_empty());
    let seen = upstream.seen();
    assert!(!seen.is_empty());
    let calls: Vec<&Seen> = seen.iter().filter(|s| s.rpc_method().as_deref() == Some("tools/call")).collect();
    assert_eq!(calls.len(), 1, "{seen:#?}");
    assert!(String::from_utf8_lossy(&calls[0].body).contains("checkout"));
    for s in &seen {
        assert_eq!(s.header("authorization"), [format!("Bearer {DEMO_SECRET}")], "{s:?}");
        assert!(!s.contains(&mandate), "the mandate went upstream: {s:?}");
    }

    // The secret reached the upstream and nothing else: not the client (its whole output),
    // not the client's side of the wire, not the log, not the trail.
    assert!(!out.json.to_string().contains(DEMO_SECRET), "{what}");
    assert!(!out.stderr.contains(DEMO_SECRET));
    assert!(front.seen().iter().all(|s| !s.contains(DEMO_SECRET)));
    assert!(!server.log().contains(DEMO_SECRET));

    // Evidence: each call in order, linked to its decision.
    let trail = tool_calls(&admin, &task, 5).await;
    assert_eq!(
        summary(&trail),
        [
            ("tickets.search".to_owned(), true, "allowed".to_owned()),
            ("email.send".to_owned(), false, "no_policy_permits".to_owned()),
            ("tickets.export".to_owned(), false, "action_outside_intent".to_owned()),
            ("deploy.production".to_owned(), false, "approval_required".to_owned()),
            ("tickets.search".to_owned(), false, "task_revoked".to_owned()),
        ],
        "{trail:#?}"
    );
    assert_eq!(trail[1]["decision_id"], r[2]["error"]["data"]["decision_id"]);
    assert_eq!(trail[0]["secret"], json!({"name": "demo-tools-token", "version": 1}));
    let export = admin.audit_export("jsonl").await.unwrap();
    assert!(!export.contains(DEMO_SECRET) && !export.contains(&mandate));
    demo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_through_the_gateway_2025_11_25() {
    python_client_through_the_gateway("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_through_the_gateway_2026_07_28() {
    python_client_through_the_gateway("2026-07-28").await;
}

// ---------------------------------------------------------------------------------------------
// The Rust client through the gateway to the Python server over streamable HTTP
// ---------------------------------------------------------------------------------------------

/// One `[[gateway.upstream]]` for the Python server.
fn py_upstream(name: &str, url: &str, protocol: &str, shell_approval: bool) -> String {
    format!(
        r#"
[[gateway.upstream]]
name = "{name}"
type = "mcp"
url = "{url}"
protocol = "{protocol}"
[gateway.upstream.inject]
secret = "py-token"
[gateway.upstream.tools."notes.read"]
kind = "read"
classification = "internal"
[gateway.upstream.tools."notes.write"]
kind = "write"
classification = "internal"
[gateway.upstream.tools."shell.exec"]
kind = "execute"
classification = "internal"
approval = {shell_approval}
[gateway.upstream.tools."resources.read"]
kind = "read"
classification = "internal"
[gateway.upstream.tools."prompts.get"]
kind = "read"
classification = "confidential"
"#
    )
}

/// What policy makes of `shell.exec` (an execute) on upstream `u`: held for a person where the
/// config lets it be (`py`), refused outright where it does not (`pyl`).
fn held_reason(u: &str) -> &'static str {
    if u == "py" { "approval_required" } else { "approval_not_available" }
}

fn py_actions(u: &str) -> Vec<String> {
    ["notes.read", "notes.write", "shell.exec", "resources.read", "prompts.get"].iter().map(|t| format!("{u}.{t}")).collect()
}

fn prompt_args() -> serde_json::Map<String, Value> {
    let mut args = serde_json::Map::new();
    args.insert("topic".into(), "refunds".into());
    args
}

/// Through upstream `u`: what is listed, allowed and denied.
async fn exercise_py(client: &McpClient, u: &str) {
    // `notes.write` needs a writer; `shell.exec` (destructive) is an execute: listed where
    // policy may hold it for approval (`py`), hidden where the config forbids approval (`pyl`).
    let expect: &[&str] = if u == "py" { &["notes.read", "shell.exec"] } else { &["notes.read"] };
    assert_eq!(tool_names(client).await, expect, "{u}");

    let ok = call(client, "notes.read", json!({"id": "1"})).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(ok["structuredContent"]["id"], "1", "{ok}");
    assert!(ok["structuredContent"]["text"].as_str().unwrap().contains("refund"), "{ok}");

    let (code, data) = call(client, "notes.write", json!({"id": "1", "text": "overwritten"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "no_policy_permits"), "{data}");
    assert_decision_id(&data);

    let (code, data) = call(client, "shell.exec", json!({"command": "rm -rf /tmp/never"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, held_reason(u)), "{data}");
    assert_decision_id(&data);

    // resources/read is configured `internal`: allowed. prompts/get is `confidential`, above
    // the intent: denied, and the prompt is not listed.
    let listed = bounded("list_resources", client.list_resources(None)).await.unwrap();
    assert_eq!(listed.resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(), ["notes://1"]);
    let res = bounded("read_resource", client.read_resource(ReadResourceRequestParams::new("notes://1"))).await.unwrap();
    let res = serde_json::to_value(res).unwrap();
    assert!(res["contents"][0]["text"].as_str().unwrap().contains("refund"), "{res}");
    let prompts = bounded("list_prompts", client.list_prompts(None)).await.unwrap();
    assert!(prompts.prompts.is_empty(), "{prompts:?}");
    let (code, data) =
        rpc_error(bounded("get_prompt", client.get_prompt(GetPromptRequestParams::new("summarise").with_arguments(prompt_args()))).await);
    assert_eq!((code, reason(&data)), (-32001, "classification_above_intent"), "{data}");
    assert_decision_id(&data);
}

async fn rmcp_through_the_gateway_to_the_python_server(protocol: &str) {
    let py = PyServer::start(PyServerOptions { require_bearer: Some(PY_SECRET.into()), record_headers: true });
    let config = format!("[gateway]\n{}{}", py_upstream("py", &py.url, "auto", true), py_upstream("pyl", &py.url, "2025-11-25", false));
    let (server, _cfg) = serve_with_gateway(&config, Vec::new());
    let admin = server.admin();
    admin.put_secret("py-token", PY_SECRET, "python server bearer").await.unwrap();
    let agent = register_agent(&admin, "notes-bot", &[]).await;

    for u in ["py", "pyl"] {
        let actions = py_actions(u);
        let (mandate, task) = open_task(&server, &agent, &intent(&actions.iter().map(String::as_str).collect::<Vec<_>>())).await;
        let before = py.recorded().len();
        // The client sends a (loopback, so accepted) Origin and a header of its own: neither
        // may reach the upstream.
        let client = rmcp_connect(
            &format!("{}/mcp/{u}", server.url),
            &mandate,
            protocol,
            &[("origin", "http://127.0.0.1"), ("x-agent-trace", "t-77")],
        )
        .await
        .unwrap_or_else(|e| panic!("{u}: {e}\n{}", server.log()));
        exercise_py(&client, u).await;
        let _ = bounded("cancel", client.cancel()).await;

        // What the Python server received from the gateway for this client.
        let seen = &py.recorded()[before..];
        assert!(!seen.is_empty(), "{u}: nothing reached the upstream");
        for r in seen {
            let h = &r["headers"];
            assert_eq!(h["authorization"], format!("Bearer {PY_SECRET}"), "{u}: {r}");
            assert!(h.get("origin").is_none(), "{u}: Origin went upstream: {r}");
            assert!(h.get("x-agent-trace").is_none(), "{u}: a client header went upstream: {r}");
            assert!(!r.to_string().contains(&mandate), "{u}: the mandate went upstream: {r}");
            assert_ne!(r["status"], 401, "{u}: {r}");
        }
        let methods: Vec<&str> = seen.iter().filter_map(|r| r["rpc_method"].as_str()).collect();
        let count = |m: &str| methods.iter().filter(|x| **x == m).count();
        assert_eq!((count("tools/call"), count("resources/read"), count("prompts/get")), (1, 1, 0), "{u}: {methods:?}");
        // Each upstream is spoken to in its own revision, whatever the client chose.
        let posts: Vec<&Value> = seen.iter().filter(|r| r["method"] == "POST" && r["rpc_method"] != "initialize").collect();
        let upstream_rev = if u == "py" { "2026-07-28" } else { "2025-11-25" };
        for r in &posts {
            assert_eq!(r["headers"]["mcp-protocol-version"], upstream_rev, "{u}: {r}");
            assert_eq!(r["headers"].get("mcp-session-id").is_some(), u == "pyl", "{u}: {r}");
        }

        // Evidence: five decided calls, two forwarded; reads carry the secret's name.
        let trail = tool_calls(&admin, &task, 5).await;
        assert_eq!(
            summary(&trail),
            [
                ("notes.read".to_owned(), true, "allowed".to_owned()),
                ("notes.write".to_owned(), false, "no_policy_permits".to_owned()),
                ("shell.exec".to_owned(), false, held_reason(u).to_owned()),
                ("notes://1".to_owned(), true, "allowed".to_owned()),
                ("summarise".to_owned(), false, "classification_above_intent".to_owned()),
            ],
            "{u}: {trail:#?}"
        );
        assert_eq!(
            (trail[3]["method"].as_str(), trail[3]["action"].as_str()),
            (Some("resources/read"), Some(&*format!("{u}.resources.read")))
        );
        assert_eq!((trail[4]["method"].as_str(), trail[4]["action"].as_str()), (Some("prompts/get"), Some(&*format!("{u}.prompts.get"))));
        assert_eq!(trail[3]["secret"], json!({"name": "py-token", "version": 1}));
        assert_eq!(trail[2]["kind"], "execute");
    }
    assert!(!server.log().contains(PY_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_through_the_gateway_to_the_python_server_2025_11_25() {
    rmcp_through_the_gateway_to_the_python_server("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_through_the_gateway_to_the_python_server_2026_07_28() {
    rmcp_through_the_gateway_to_the_python_server("2026-07-28").await;
}

/// `[upstream.tools."prompts.get"]` and `"resources.read"` set the kind of those methods as
/// well as their classification: a prompt configured as an execute is held for approval, a
/// resource configured as a write needs a writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_kinds_of_prompts_and_resources_are_enforced() {
    let py = PyServer::start(PyServerOptions { require_bearer: Some(PY_SECRET.into()), record_headers: true });
    let config = format!(
        r#"
[gateway]
[[gateway.upstream]]
name = "py"
type = "mcp"
url = "{}"
[gateway.upstream.inject]
secret = "py-token"
[gateway.upstream.tools."prompts.get"]
kind = "execute"
classification = "internal"
[gateway.upstream.tools."resources.read"]
kind = "write"
classification = "internal"
"#,
        py.url
    );
    let (server, _cfg) = serve_with_gateway(&config, Vec::new());
    let admin = server.admin();
    admin.put_secret("py-token", PY_SECRET, "python server bearer").await.unwrap();
    let agent = register_agent(&admin, "notes-bot", &[]).await;
    let (mandate, task) = open_task(&server, &agent, &intent(&["py.prompts.get", "py.resources.read"])).await;
    for protocol in PROTOCOLS {
        let client = rmcp_connect(&format!("{}/mcp/py", server.url), &mandate, protocol, &[]).await.unwrap();
        let (code, data) = rpc_error(
            bounded("get_prompt", client.get_prompt(GetPromptRequestParams::new("summarise").with_arguments(prompt_args()))).await,
        );
        assert_eq!((code, reason(&data)), (-32001, "approval_required"), "{protocol}: {data}");
        let (code, data) = rpc_error(bounded("read_resource", client.read_resource(ReadResourceRequestParams::new("notes://1"))).await);
        assert_eq!((code, reason(&data)), (-32001, "no_policy_permits"), "{protocol}: {data}");
        // Listed as policy says: the prompt may be held for a person, the resource may not be read.
        let prompts = bounded("list_prompts", client.list_prompts(None)).await.unwrap();
        assert_eq!(prompts.prompts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["summarise"], "{protocol}");
        let resources = bounded("list_resources", client.list_resources(None)).await.unwrap();
        assert!(resources.resources.is_empty(), "{protocol}: {resources:?}");
        let _ = bounded("cancel", client.cancel()).await;
    }
    let methods: Vec<String> = py.recorded().iter().filter_map(|r| r["rpc_method"].as_str().map(str::to_owned)).collect();
    assert!(!methods.iter().any(|m| m == "prompts/get" || m == "resources/read"), "{methods:?}");
    let trail = tool_calls(&admin, &task, 4).await;
    let kinds: Vec<(&str, &str)> = trail.iter().map(|d| (d["method"].as_str().unwrap(), d["kind"].as_str().unwrap())).collect();
    assert_eq!(kinds, [("prompts/get", "execute"), ("resources/read", "write"), ("prompts/get", "execute"), ("resources/read", "write")]);
}

/// A secret that is gone by the time of a call (deleted mid-session): the call is allowed,
/// nothing is sent upstream, the client is told why, and the evidence says it was not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_secret_is_gone_is_not_forwarded() {
    let py = PyServer::start(PyServerOptions { require_bearer: Some(PY_SECRET.into()), record_headers: true });
    let config = format!("[gateway]\n{}{}", py_upstream("py", &py.url, "auto", true), py_upstream("pyl", &py.url, "2025-11-25", true));
    let (server, _cfg) = serve_with_gateway(&config, Vec::new());
    let admin = server.admin();
    admin.put_secret("py-token", PY_SECRET, "python server bearer").await.unwrap();
    let agent = register_agent(&admin, "notes-bot", &[]).await;
    let (mandate, task) = open_task(&server, &agent, &intent(&["py.notes.read", "pyl.notes.read"])).await;
    let mut clients = Vec::new();
    for (u, protocol) in [("py", "2026-07-28"), ("pyl", "2025-11-25")] {
        let client = rmcp_connect(&format!("{}/mcp/{u}", server.url), &mandate, protocol, &[]).await.unwrap();
        call(&client, "notes.read", json!({"id": "1"})).await.unwrap();
        clients.push(client);
    }
    let calls_before = py.recorded().iter().filter(|r| r["rpc_method"] == "tools/call").count();
    admin.delete_secret("py-token").await.unwrap();
    for client in &clients {
        let (code, data) = call(client, "notes.read", json!({"id": "1"})).await.unwrap_err();
        assert_eq!((code, reason(&data)), (-32002, "secret_not_found"), "{data}");
    }
    let calls_after = py.recorded().iter().filter(|r| r["rpc_method"] == "tools/call").count();
    assert_eq!(calls_after, calls_before, "a call went upstream without its secret");
    let trail = tool_calls(&admin, &task, 4).await;
    for d in &trail[2..] {
        assert_eq!(
            (d["decision"].as_bool(), d["forwarded"].as_bool(), d["result"].as_str()),
            (Some(true), Some(false), Some("secret_not_found")),
            "{d}"
        );
    }
    for client in clients {
        let _ = bounded("cancel", client.cancel()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// A stdio upstream: the Python server as a process per session
// ---------------------------------------------------------------------------------------------

/// Variables a stdio upstream's process may have: what the gateway passes on, and the table.
const STDIO_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "SYSTEMROOT", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "MANDATE_TEST_STDIO"];

/// The processes whose environment holds `MANDATE_TEST_STDIO=<marker>`, with their variables'
/// names. A process that has exited (even if not yet reaped) has an empty environ: not counted.
fn stdio_processes(marker: &str) -> Vec<(u32, Vec<String>)> {
    let needle = format!("MANDATE_TEST_STDIO={marker}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let vars: Vec<String> =
            environ.split(|b| *b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        if vars.contains(&needle) {
            out.push((pid, vars.iter().map(|v| v.split('=').next().unwrap_or("").to_owned()).collect()));
        }
    }
    out
}

async fn stdio_upstream(protocol: &str) {
    let marker = uuid::Uuid::new_v4().to_string();
    let cmd = stdio_server_command();
    let command: Vec<String> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| toml_str(a.to_str().unwrap())).collect();
    let config = format!(
        r#"
[gateway]
[[gateway.upstream]]
name = "local"
type = "mcp"
command = [{}]
[gateway.upstream.env]
PYTHONUNBUFFERED = "1"
PYTHONDONTWRITEBYTECODE = "1"
MANDATE_TEST_STDIO = "{marker}"
[gateway.upstream.tools."notes.read"]
kind = "read"
classification = "internal"
[gateway.upstream.tools."notes.write"]
kind = "write"
classification = "internal"
"#,
        command.join(", ")
    );
    let (server, _cfg) = serve_with_gateway(&config, Vec::new());
    let admin = server.admin();
    let agent = register_agent(&admin, "notes-bot", &[("writer", "true")]).await;
    let actions = intent(&["local.notes.read", "local.notes.write"]);
    let (mandate_a, task_a) = open_task(&server, &agent, &actions).await;
    let (mandate_b, _task_b) = open_task(&server, &agent, &actions).await;
    let url = format!("{}/mcp/local", server.url);

    let a = rmcp_connect(&url, &mandate_a, protocol, &[]).await.unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(tool_names(&a).await, ["notes.read", "notes.write"], "unconfigured `shell.exec` is an execute outside the intent");
    let w = call(&a, "notes.write", json!({"id": "a", "text": "kept by A's process"})).await.unwrap();
    assert_eq!(w["structuredContent"]["written"], true, "{w}");
    let r = call(&a, "notes.read", json!({"id": "a"})).await.unwrap();
    assert_eq!(r["structuredContent"]["text"], "kept by A's process", "{r}");

    // Another task's session is another process: A's note is not there.
    let b = rmcp_connect(&url, &mandate_b, protocol, &[]).await.unwrap();
    let r = call(&b, "notes.read", json!({"id": "a"})).await.unwrap();
    assert_eq!(r["isError"], true, "{r}");

    let linux = cfg!(target_os = "linux");
    if linux {
        let procs = stdio_processes(&marker);
        assert_eq!(procs.len(), 2, "one process per session: {procs:?}");
        for (pid, vars) in &procs {
            for v in vars {
                assert!(STDIO_ENV.contains(&v.as_str()), "process {pid} inherited `{v}` from the gateway: {vars:?}");
            }
        }
    }

    // Revoking A's task refuses A's next call and stops A's process, not B's.
    admin.revoke_task(&task_a, Some("test".into())).await.unwrap();
    let (code, data) = call(&a, "notes.read", json!({"id": "a"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "task_revoked"), "{data}");
    if linux {
        eventually("A's stdio process to stop", Duration::from_secs(5), || async { (stdio_processes(&marker).len() == 1).then_some(()) })
            .await;
    }
    let r = call(&b, "notes.read", json!({"id": "1"})).await.unwrap();
    assert_eq!(r["isError"], false, "{r}");
    let _ = bounded("cancel", a.cancel()).await;
    let _ = bounded("cancel", b.cancel()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_through_the_gateway_to_a_stdio_server_2025_11_25() {
    stdio_upstream("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_through_the_gateway_to_a_stdio_server_2026_07_28() {
    stdio_upstream("2026-07-28").await;
}
