//! The MCP Python SDK harness (`tests/py/`, `common::python`) against real servers and clients,
//! without the gateway: the Python client against the Rust demo tool server, the Rust SDK's
//! client against the Python server over HTTP and stdio, and the Python pair together. Each in
//! both MCP revisions the SDKs speak (2025-11-25 with a session, stateless 2026-07-28).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::future::Future;
use std::time::Duration;

use common::gateway::demo_tools;
use common::python::{PROTOCOLS, PY_SERVER_TOOLS, PyClient, PyServer, PyServerOptions, stdio_server_command};
use common::sorted;
use mandate_demo_tools::TOOL_NAMES;
use rmcp::model::{CallToolRequestParams, ClientConfig, GetPromptRequestParams, ProtocolVersion, ReadResourceRequestParams};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};

const UPSTREAM_SECRET: &str = "upstream-s3cret";
const PY_SECRET: &str = "py-server-s3cret";

/// Upper bound for any single rmcp step, so a broken server fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

fn step_tools(step: &Value) -> Vec<String> {
    sorted(step["tools"].as_array().unwrap_or_else(|| panic!("no tools in {step}")).iter().map(|t| t.as_str().unwrap().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// (a) The Python SDK's client against the Rust demo tool server
// ---------------------------------------------------------------------------------------------

async fn python_client_drives_demo_tools(protocol: &str) {
    let server = demo_tools(Some(UPSTREAM_SECRET)).await;
    let out = PyClient::new(server.mcp_url(), protocol)
        .bearer(UPSTREAM_SECRET)
        .steps(json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "tickets.search", "arguments": {"query": "checkout"}},
            {"op": "call_tool", "name": "email.send", "arguments": {"to": "alice@example.com", "subject": protocol, "body": "Fixed."}},
            {"op": "call_tool", "name": "email.send", "arguments": {"to": "nobody", "subject": "x", "body": "y"}},
            {"op": "call_tool", "name": "no.such.tool", "arguments": {}},
            {"op": "call_tool", "name": "tickets.search", "arguments": {"query": "vat"}},
        ]))
        .run()
        .await;
    let r = out.results();
    assert_eq!(out.connect(), &json!({"ok": true}), "{}", out.json);
    assert_eq!(out.protocol(), Some(protocol), "{}", out.json);
    assert_eq!(r.len(), 6);

    // tools/list: the four demo tools, with their annotations as the SDK parsed them.
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
    assert_eq!(step_tools(&r[0]), sorted(TOOL_NAMES));
    let listed = r[0]["result"]["tools"].as_array().unwrap();
    let deploy = listed.iter().find(|t| t["name"] == "deploy.production").unwrap();
    assert_eq!(deploy["annotations"]["destructiveHint"], true);
    assert_eq!(deploy["inputSchema"]["type"], "object");

    // A read, with its structured content.
    assert_eq!(r[1]["ok"], true, "{}", r[1]);
    assert_eq!(r[1]["result"]["isError"], false);
    let ids: Vec<&str> =
        r[1]["result"]["structuredContent"]["tickets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T-42", "T-45"]);

    // A write that the server recorded, exactly once, with what the client sent.
    assert_eq!(r[2]["ok"], true, "{}", r[2]);
    let message_id = r[2]["result"]["structuredContent"]["message_id"].as_str().unwrap();
    let outbox = server.state().outbox();
    assert_eq!(outbox.len(), 1, "{outbox:?}");
    assert_eq!(
        (outbox[0].message_id.as_str(), outbox[0].to.as_str(), outbox[0].subject.as_str()),
        (message_id, "alice@example.com", protocol)
    );

    // A tool error is a result with isError, not a JSON-RPC error.
    assert_eq!(r[3]["ok"], true, "{}", r[3]);
    assert_eq!(r[3]["result"]["isError"], true);
    assert!(r[3]["result"]["content"][0]["text"].as_str().unwrap().contains("not an email address"), "{}", r[3]);

    // An unknown tool is a JSON-RPC error from rmcp, captured with its code and message; the
    // session survives it.
    assert_eq!(r[4]["ok"], false, "{}", r[4]);
    assert_eq!(r[4]["error"]["code"], -32602, "{}", r[4]);
    assert_eq!(r[4]["error"]["message"], "tool not found", "{}", r[4]);
    assert!(r[4].get("transport_error").is_none());
    assert_eq!(r[5]["ok"], true, "{}", r[5]);
    assert_eq!(r[5]["result"]["structuredContent"]["tickets"][0]["id"], "T-43");

    // The revision shows on the wire: rmcp stamps resultType only for 2026-07-28 peers.
    assert_eq!(r[1]["result"].get("resultType").is_some(), protocol == "2026-07-28", "{}", r[1]);

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_drives_demo_tools_2025_11_25() {
    python_client_drives_demo_tools("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_drives_demo_tools_2026_07_28() {
    python_client_drives_demo_tools("2026-07-28").await;
}

/// The demo server's `--require-bearer` refusal reaches the Python client as an HTTP-level
/// failure (401), not as a JSON-RPC error, and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_sees_a_missing_bearer_as_a_transport_error() {
    let server = demo_tools(Some(UPSTREAM_SECRET)).await;
    let steps = json!([
        {"op": "list_tools"},
        {"op": "call_tool", "name": "email.send", "arguments": {"to": "eve@example.com", "subject": "s", "body": "b"}},
    ]);
    for protocol in PROTOCOLS {
        for bearer in [None, Some("wrong-secret")] {
            let mut client = PyClient::new(server.mcp_url(), protocol).steps(steps.clone());
            if let Some(b) = bearer {
                client = client.bearer(b);
            }
            let out = client.run().await;
            let what = format!("{protocol} with bearer {bearer:?}: {}", out.json);
            assert_eq!(out.protocol(), None, "{what}");
            assert_eq!(out.connect()["ok"], false, "{what}");
            assert_eq!(out.connect()["http_status"], 401, "{what}");
            assert!(out.connect()["transport_error"].as_str().unwrap().starts_with("HTTP 401"), "{what}");
            assert_eq!(out.results().len(), 2, "{what}");
            for step in out.results() {
                assert_eq!(step["ok"], false, "{what}");
                assert!(step.get("error").is_none(), "{what}");
                assert!(step["transport_error"].as_str().unwrap().contains("HTTP 401"), "{what}");
            }
        }
    }
    assert!(server.state().outbox().is_empty(), "a refused client must have no effect");

    // The same server with the secret: both revisions work.
    for protocol in PROTOCOLS {
        let out = PyClient::new(server.mcp_url(), protocol).bearer(UPSTREAM_SECRET).steps(json!([{"op": "list_tools"}])).run().await;
        assert_eq!(out.protocol(), Some(protocol), "{}", out.json);
        assert_eq!(out.result(0)["tools"].as_array().unwrap().len(), 4, "{}", out.json);
    }
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// (b) The Rust SDK's client against the Python SDK's server over streamable HTTP
// ---------------------------------------------------------------------------------------------

type RmcpClient = RunningService<RoleClient, ClientConfig>;

fn lifecycle(protocol: &str) -> ClientLifecycleMode {
    match protocol {
        "2025-11-25" => ClientLifecycleMode::Initialize,
        "2026-07-28" => ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
        other => panic!("unknown revision {other}"),
    }
}

async fn rmcp_connect<T, E, A>(transport: T, protocol: &str) -> Result<RmcpClient, String>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    ClientConfig::default().serve_with_lifecycle(transport, lifecycle(protocol)).await.map_err(|e| e.to_string())
}

async fn rmcp_http(url: &str, bearer: Option<&str>, protocol: &str) -> Result<RmcpClient, String> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(b) = bearer {
        config = config.auth_header(b);
    }
    bounded("connect", rmcp_connect(StreamableHttpClientTransport::from_config(config), protocol)).await
}

async fn call(client: &RmcpClient, name: &'static str, args: Value) -> Value {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    let r = bounded(name, client.call_tool(CallToolRequestParams::new(name).with_arguments(args))).await.unwrap();
    serde_json::to_value(r).unwrap()
}

/// Lists, calls, reads and prompts through `client`, asserting what the Python server answers.
async fn exercise_python_server(client: &RmcpClient, protocol: &str) {
    let version = client.peer_info().map(|i| i.protocol_version.to_string());
    assert_eq!(version.as_deref(), Some(protocol));
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().map(|i| i.name.as_str()), Some("mandate-py-test-server"));

    // tools/list: names, annotations and schemas as MCPServer derives them.
    let tools = bounded("list_tools", client.list_tools(None)).await.unwrap().tools;
    assert_eq!(sorted(tools.iter().map(|t| t.name.to_string())), sorted(PY_SERVER_TOOLS));
    let tool = |name: &str| tools.iter().find(|t| t.name == name).unwrap().clone();
    assert_eq!(tool("notes.read").annotations.unwrap().read_only_hint, Some(true));
    assert_eq!(tool("notes.write").annotations.unwrap().read_only_hint, Some(false));
    assert_eq!(tool("shell.exec").annotations.unwrap().destructive_hint, Some(true));
    assert_eq!(tool("notes.write").input_schema["required"], json!(["id", "text"]));

    // A write, then a read of the same note: state kept across requests (and, at 2026-07-28,
    // across stateless requests).
    let id = format!("rust-{protocol}");
    let w = call(client, "notes.write", json!({"id": id, "text": "written by rmcp"})).await;
    assert_eq!(w["isError"], false, "{w}");
    assert_eq!(w["structuredContent"], json!({"id": id, "written": true, "length": 15}));
    let r = call(client, "notes.read", json!({"id": id})).await;
    assert_eq!(r["structuredContent"], json!({"id": id, "text": "written by rmcp"}), "{r}");

    // shell.exec only echoes.
    let e = call(client, "shell.exec", json!({"command": "rm -rf /tmp/never"})).await;
    assert_eq!(e["structuredContent"], json!({"command": "rm -rf /tmp/never", "executed": false, "echo": "rm -rf /tmp/never"}), "{e}");

    // A tool error from the Python side is a result with isError.
    let missing = call(client, "notes.read", json!({"id": "nope"})).await;
    assert_eq!(missing["isError"], true, "{missing}");
    assert!(missing["content"][0]["text"].as_str().unwrap().contains("no note with id"), "{missing}");

    // resources/read and prompts/get.
    let res = bounded("read_resource", client.read_resource(ReadResourceRequestParams::new("notes://1"))).await.unwrap();
    let res = serde_json::to_value(res).unwrap();
    assert_eq!(res["contents"][0]["uri"], "notes://1", "{res}");
    assert_eq!(res["contents"][0]["mimeType"], "text/plain", "{res}");
    assert!(res["contents"][0]["text"].as_str().unwrap().contains("refund"), "{res}");

    let mut args = serde_json::Map::new();
    args.insert("topic".into(), "refunds".into());
    let prompt = bounded("get_prompt", client.get_prompt(GetPromptRequestParams::new("summarise").with_arguments(args))).await.unwrap();
    let prompt = serde_json::to_value(prompt).unwrap();
    assert_eq!(prompt["messages"][0]["role"], "user", "{prompt}");
    assert_eq!(prompt["messages"][0]["content"]["text"], "Summarise the notes about refunds in three sentences.", "{prompt}");

    // An unknown resource is a JSON-RPC error.
    let err = bounded("read_resource", client.read_resource(ReadResourceRequestParams::new("notes://404"))).await;
    assert!(err.is_err(), "reading an unknown resource must fail: {err:?}");
}

async fn rmcp_drives_python_server(protocol: &str) {
    let server = PyServer::start(PyServerOptions { require_bearer: Some(PY_SECRET.into()), record_headers: true });

    // Without the bearer the handshake is refused before the SDK sees it.
    let refused = rmcp_http(&server.url, None, protocol).await;
    assert!(refused.is_err(), "connected without the bearer secret");
    let refusals = server.recorded();
    assert!(!refusals.is_empty() && refusals.iter().all(|r| r["status"] == 401), "{refusals:?}");
    let first_rpc = if protocol == "2025-11-25" { "initialize" } else { "server/discover" };
    assert_eq!(refusals[0]["rpc_method"], first_rpc, "{refusals:?}");
    let refused_count = refusals.len();

    let client = rmcp_http(&server.url, Some(PY_SECRET), protocol).await.unwrap_or_else(|e| panic!("{e}\n{}", server.stderr()));
    exercise_python_server(&client, protocol).await;
    bounded("client cancel", client.cancel()).await.unwrap();

    // What rmcp sent, as the Python server recorded it.
    let all = server.recorded();
    let seen = &all[refused_count..];
    assert!(seen.iter().all(|r| r["headers"]["authorization"] == format!("Bearer {PY_SECRET}")), "{seen:?}");
    let posts: Vec<&Value> = seen.iter().filter(|r| r["method"] == "POST").collect();
    let methods: Vec<&str> = posts.iter().map(|r| r["rpc_method"].as_str().unwrap_or("")).collect();
    assert_eq!(methods[0], first_rpc, "{methods:?}");
    for m in ["tools/list", "tools/call", "resources/read", "prompts/get"] {
        assert!(methods.contains(&m), "{m} not seen upstream: {methods:?}");
    }
    assert_eq!(methods.iter().filter(|m| **m == "tools/call").count(), 4, "{methods:?}");
    for r in &posts[1..] {
        assert_eq!(r["headers"]["mcp-protocol-version"], protocol, "{r}");
    }
    if protocol == "2025-11-25" {
        // A session: assigned at initialize, carried by every later request.
        assert!(posts[0]["headers"].get("mcp-session-id").is_none(), "{}", posts[0]);
        let session = posts[1]["headers"]["mcp-session-id"].as_str().expect("no Mcp-Session-Id after initialize");
        assert!(seen[1..].iter().all(|r| r["headers"]["mcp-session-id"] == session), "{seen:?}");
        assert!(methods.contains(&"notifications/initialized"), "{methods:?}");
    } else {
        // Stateless: no session, and the routing headers match each body.
        assert!(seen.iter().all(|r| r["headers"].get("mcp-session-id").is_none()), "{seen:?}");
        assert!(!methods.contains(&"initialize"), "{methods:?}");
        for r in &posts {
            assert_eq!(r["headers"]["mcp-method"], r["rpc_method"], "{r}");
            if r["rpc_method"] == "tools/call" {
                let name = r["headers"]["mcp-name"].as_str().unwrap();
                assert!(PY_SERVER_TOOLS.contains(&name), "{r}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_drives_python_server_2025_11_25() {
    rmcp_drives_python_server("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_drives_python_server_2026_07_28() {
    rmcp_drives_python_server("2026-07-28").await;
}

// ---------------------------------------------------------------------------------------------
// (c) The Rust SDK's child-process transport against the Python server over stdio
// ---------------------------------------------------------------------------------------------

async fn rmcp_drives_python_stdio_server(protocol: &str) {
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let (transport, _) =
        TokioChildProcess::builder(tokio::process::Command::from(stdio_server_command())).stderr(stderr.reopen().unwrap()).spawn().unwrap();
    let client = bounded("connect over stdio", rmcp_connect(transport, protocol))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", std::fs::read_to_string(stderr.path()).unwrap_or_default()));
    exercise_python_server(&client, protocol).await;
    bounded("client cancel", client.cancel()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_drives_python_stdio_server_2025_11_25() {
    rmcp_drives_python_stdio_server("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_drives_python_stdio_server_2026_07_28() {
    rmcp_drives_python_stdio_server("2026-07-28").await;
}

// ---------------------------------------------------------------------------------------------
// The Python pair: how the client reports JSON-RPC errors, HTTP refusals and dead servers
// ---------------------------------------------------------------------------------------------

#[test]
fn python_client_reports_errors_faithfully() {
    let server = PyServer::start(PyServerOptions { require_bearer: Some(PY_SECRET.into()), record_headers: true });
    for protocol in PROTOCOLS {
        let out = PyClient::new(&server.url, protocol)
            .bearer(PY_SECRET)
            .steps(json!([
                {"op": "read_resource", "uri": "notes://404"},
                {"op": "call_tool", "name": "notes.write", "arguments": {"id": "py", "text": protocol}},
                {"op": "call_tool", "name": "notes.read", "arguments": {"id": "py"}},
                {"op": "get_prompt", "name": "summarise", "arguments": {"topic": "VAT"}},
                {"op": "list_resources"},
                {"op": "list_prompts"},
            ]))
            .run_blocking();
        let what = format!("{protocol}: {}", out.json);
        assert_eq!(out.protocol(), Some(protocol), "{what}");
        let r = out.results();

        // A JSON-RPC error, exactly as the server sent it (code, message, data), and the
        // session carries on.
        assert_eq!(r[0]["ok"], false, "{what}");
        assert_eq!(
            r[0]["error"],
            json!({"code": -32602, "message": "Unknown resource: notes://404", "data": {"uri": "notes://404"}}),
            "{what}"
        );
        if protocol == "2026-07-28" {
            assert_eq!(r[0]["http_status"], 400, "the SDK answers a 2026 request error with 400: {what}");
        }
        assert_eq!(r[2]["result"]["structuredContent"], json!({"id": "py", "text": protocol}), "{what}");
        assert_eq!(r[3]["result"]["messages"][0]["content"]["text"], "Summarise the notes about VAT in three sentences.", "{what}");
        assert_eq!(r[4]["result"]["resources"][0]["uri"], "notes://1", "{what}");
        assert_eq!(r[5]["result"]["prompts"][0]["name"], "summarise", "{what}");
        assert_eq!(r[5]["result"]["prompts"][0]["arguments"][0]["name"], "topic", "{what}");
    }

    // What the Python client sent: the bearer on every request, the revision it was told to use.
    let rec = server.recorded();
    assert!(rec.iter().all(|r| r["headers"]["authorization"] == format!("Bearer {PY_SECRET}")), "{rec:?}");
    let first: Vec<&Value> = rec.iter().filter(|r| r["rpc_method"] == "initialize" || r["rpc_method"] == "server/discover").collect();
    assert_eq!(first.len(), 2, "one handshake per run: {rec:?}");
    assert_eq!(first[0]["rpc_method"], "initialize");
    assert_eq!(first[1]["rpc_method"], "server/discover");
    assert_eq!(first[1]["headers"]["mcp-protocol-version"], "2026-07-28");

    // The refused client: HTTP 401 as a transport error, no steps run.
    let out = PyClient::new(&server.url, "2026-07-28").steps(json!([{"op": "list_tools"}])).run_blocking();
    assert_eq!(out.connect()["http_status"], 401, "{}", out.json);
    assert_eq!(out.result(0)["http_status"], 401, "{}", out.json);

    // A server that is gone: a transport error for the connection and every step, promptly.
    let url = server.url.clone();
    drop(server);
    let started = std::time::Instant::now();
    for protocol in PROTOCOLS {
        let out =
            PyClient::new(&url, protocol).bearer(PY_SECRET).steps(json!([{"op": "list_tools"}, {"op": "list_prompts"}])).run_blocking();
        assert_eq!(out.protocol(), None, "{}", out.json);
        assert!(out.connect()["transport_error"].as_str().unwrap().contains("ConnectError"), "{}", out.json);
        assert!(out.results().iter().all(|s| s["transport_error"].as_str().unwrap().starts_with("not run")), "{}", out.json);
    }
    assert!(started.elapsed() < Duration::from_secs(30), "a refused connection took {:?}", started.elapsed());
}
