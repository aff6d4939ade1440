//! Upstreams that misbehave, through the real gateway: one that never answers (the call
//! times out, the connection is not left hanging), one that is not there, and ones that
//! answer garbage. Each is a clear JSON-RPC error with a stable reason, and the evidence
//! trail records the outcome.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Server, open_task, register_agent};
use serde_json::{Value, json};

/// How each fake upstream misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// Answers `server/discover`, then never answers a call.
    Hang,
    /// Answers `server/discover`, then answers calls with a 200 that is not JSON.
    NotJson,
    /// Answers `server/discover`, then answers calls with JSON-RPC for another id.
    WrongId,
    /// Answers `server/discover`, then an SSE stream that ends without the answer.
    TruncatedStream,
    /// Answers `server/discover`, then a 500.
    ServerError,
}

async fn fake_upstream(fault: Fault) -> String {
    let app = Router::new().route(
        "/mcp",
        post(move |headers: HeaderMap, body: Bytes| async move {
            let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let id = msg["id"].clone();
            if msg["method"] == "server/discover" {
                let _ = headers;
                let r = json!({"jsonrpc": "2.0", "id": id, "result": {
                    "resultType": "complete", "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                    "ttlMs": 0, "cacheScope": "private", "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "faulty", "version": "1"}}
                }});
                return ([(header::CONTENT_TYPE, "application/json")], r.to_string()).into_response();
            }
            match fault {
                Fault::Hang => {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    StatusCode::OK.into_response()
                }
                Fault::NotJson => ([(header::CONTENT_TYPE, "application/json")], "<html>oops</html>").into_response(),
                Fault::WrongId => {
                    let r = json!({"jsonrpc": "2.0", "id": "someone-else", "result": {"content": []}});
                    ([(header::CONTENT_TYPE, "application/json")], r.to_string()).into_response()
                }
                Fault::TruncatedStream => ([(header::CONTENT_TYPE, "text/event-stream")], "data: \nid: 0\n\n").into_response(),
                Fault::ServerError => Response::builder().status(500).body(axum::body::Body::from("boom")).unwrap(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/mcp")
}

fn upstream_toml(name: &str, url: &str) -> String {
    format!(
        r#"
[[gateway.upstream]]
name = "{name}"
type = "mcp"
url = "{url}"
timeout_secs = 1
[gateway.upstream.tools.echo]
kind = "read"
classification = "internal"
"#
    )
}

async fn call(http: &reqwest::Client, url: &str, mandate: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hi"}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}
        }}
    });
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        http.post(url)
            .bearer_auth(mandate)
            .header("accept", "application/json")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .json(&body)
            .send(),
    )
    .await
    .expect("the gateway answered")
    .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null), started.elapsed())
}

#[tokio::test]
async fn misbehaving_upstreams_get_clear_errors_and_are_recorded() {
    let faults = [
        ("hang", Fault::Hang, "upstream_timeout"),
        ("notjson", Fault::NotJson, "upstream_bad_response"),
        ("wrongid", Fault::WrongId, "upstream_bad_response"),
        ("truncated", Fault::TruncatedStream, "upstream_bad_response"),
        ("broken", Fault::ServerError, "upstream_status"),
    ];
    let mut toml = String::from("[gateway]\n");
    for (name, fault, _) in faults {
        toml.push_str(&upstream_toml(name, &fake_upstream(fault).await));
    }
    // Nothing listens there: bind a port, then free it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", l.local_addr().unwrap())
    };
    toml.push_str(&upstream_toml("dead", &dead));
    let server = Server::start_configured(&toml, Vec::new());
    let agent = register_agent(&server.admin(), "fault-bot", &[]).await;
    let actions: Vec<String> = faults.iter().map(|(n, _, _)| format!("{n}.echo")).chain(["dead.echo".to_owned()]).collect();
    let intent = json!({"type": "agent_task", "purpose": "probe faults", "actions": actions, "resources": ["*"], "max_classification": "internal", "lifetime_seconds": 600});
    let (mandate, task) = open_task(&server, &agent, &intent).await;
    let http = reqwest::Client::new();

    for (name, _, reason) in faults {
        let (status, body, took) = call(&http, &format!("{}/mcp/{name}", server.url), &mandate).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["error"]["code"], -32002, "{name}: {body}");
        assert_eq!(body["error"]["data"]["reason"], reason, "{name}: {body}");
        assert_eq!(body["id"], 7, "{name}: the client's id is kept");
        // Bounded by the upstream's timeout (1 s), with room for a loaded machine.
        assert!(took < Duration::from_secs(20), "{name} took {took:?}");
    }
    // A dead upstream: the allowed call cannot be delivered.
    let (_, body, _) = call(&http, &format!("{}/mcp/dead", server.url), &mandate).await;
    assert_eq!(body["error"]["code"], -32002, "{body}");
    assert_eq!(body["error"]["data"]["reason"], "upstream_unreachable", "{body}");

    // Every forwarded call's outcome is in the trail.
    let deadline = Instant::now() + Duration::from_secs(20);
    let results = loop {
        let trail = server.admin().audit_trail(&task).await.unwrap();
        let r: Vec<(String, String)> = trail
            .events
            .iter()
            .filter(|e| e["kind"] == "tool.call")
            .map(|e| (e["details"]["upstream"].as_str().unwrap().to_owned(), e["details"]["result"].as_str().unwrap().to_owned()))
            .collect();
        if r.len() > faults.len() || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected: Vec<(String, String)> = faults
        .iter()
        .map(|(n, _, r)| ((*n).to_owned(), (*r).to_owned()))
        .chain([("dead".to_owned(), "upstream_unreachable".to_owned())])
        .collect();
    assert_eq!(results, expected);
    // The gateway still serves after all that.
    let r = http.get(format!("{}/healthz", server.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
