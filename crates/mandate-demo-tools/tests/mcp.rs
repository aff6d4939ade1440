#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! A real rmcp client over streamable HTTP against the demo tool server.

use std::future::Future;
use std::time::Duration;

use mandate_demo_tools::{DemoToolsHandle, DemoToolsOptions, TOOL_NAMES, spawn};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

/// Upper bound for any single step, so a broken server fails the test instead of hanging it.
const STEP: Duration = Duration::from_secs(30);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

async fn start(opts: DemoToolsOptions) -> DemoToolsHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    spawn(listener, opts).unwrap()
}

async fn connect(url: String, bearer: Option<&str>) -> anyhow::Result<RunningService<RoleClient, ClientConfig>> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(b) = bearer {
        config = config.auth_header(b);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    Ok(ClientConfig::default().serve(transport).await?)
}

async fn call(client: &RunningService<RoleClient, ClientConfig>, name: &'static str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    bounded(name, client.call_tool(CallToolRequestParams::new(name).with_arguments(args))).await.unwrap()
}

async fn get_json(url: String) -> Value {
    let resp = bounded("GET", reqwest::get(url)).await.unwrap();
    assert_eq!(resp.status(), 200);
    bounded("GET body", resp.json::<Value>()).await.unwrap()
}

#[tokio::test]
async fn lists_and_calls_every_tool() {
    let server = start(DemoToolsOptions::default()).await;
    let base = format!("http://{}", server.addr());
    let client = bounded("connect", connect(server.mcp_url(), None)).await.unwrap();

    // tools/list: exactly the four tools, each with a description, an object input schema
    // with the expected required fields, and the expected annotations.
    let tools = bounded("list_tools", client.list_tools(None)).await.unwrap().tools;
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    let mut expected: Vec<String> = TOOL_NAMES.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);

    let required = |name: &str| -> Vec<String> {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        assert!(tool.description.as_deref().is_some_and(|d| !d.is_empty()), "{name} has no description");
        assert_eq!(tool.input_schema.get("type"), Some(&json!("object")), "{name}");
        let mut req: Vec<String> =
            tool.input_schema["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        req.sort();
        req
    };
    assert_eq!(required("tickets.search"), ["query"]);
    assert_eq!(required("tickets.export"), ["ids"]);
    assert_eq!(required("email.send"), ["body", "subject", "to"]);
    assert_eq!(required("deploy.production"), ["service", "version"]);

    let annotations = |name: &str| tools.iter().find(|t| t.name == name).unwrap().annotations.clone().unwrap();
    assert_eq!(annotations("tickets.search").read_only_hint, Some(true));
    assert_eq!(annotations("tickets.export").read_only_hint, Some(true));
    assert_eq!(annotations("email.send").read_only_hint, Some(false));
    assert_eq!(annotations("deploy.production").destructive_hint, Some(true));
    assert_eq!(annotations("deploy.production").read_only_hint, Some(false));

    // tickets.search
    let r = call(&client, "tickets.search", json!({"query": "checkout"})).await;
    assert_ne!(r.is_error, Some(true));
    let found = r.structured_content.unwrap();
    let ids: Vec<&str> = found["tickets"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["T-42", "T-45"]);
    assert!(found["tickets"][0].get("body").is_none(), "search must not return full text");

    // tickets.export
    let r = call(&client, "tickets.export", json!({"ids": ["T-42", "T-999"]})).await;
    assert_ne!(r.is_error, Some(true));
    let exported = r.structured_content.unwrap();
    assert_eq!(exported["tickets"][0]["id"], "T-42");
    assert!(exported["tickets"][0]["body"].as_str().unwrap().contains("bill.lumbergh@initech.example"));
    assert_eq!(exported["not_found"], json!(["T-999"]));

    // email.send, then the outbox shows it
    assert_eq!(get_json(format!("{base}/_demo/outbox")).await, json!([]));
    let r = call(&client, "email.send", json!({"to": "alice@example.com", "subject": "T-42", "body": "Fixed."})).await;
    assert_ne!(r.is_error, Some(true));
    let message_id = r.structured_content.unwrap()["message_id"].as_str().unwrap().to_owned();
    let outbox = get_json(format!("{base}/_demo/outbox")).await;
    assert_eq!(outbox, json!([{"message_id": message_id, "to": "alice@example.com", "subject": "T-42", "body": "Fixed."}]));

    // a bad address is a tool error and records nothing
    let r = call(&client, "email.send", json!({"to": "nobody", "subject": "x", "body": "y"})).await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(get_json(format!("{base}/_demo/outbox")).await.as_array().unwrap().len(), 1);

    // deploy.production, then the deployments endpoint shows it
    let r = call(&client, "deploy.production", json!({"service": "payments", "version": "4.12.1"})).await;
    assert_ne!(r.is_error, Some(true));
    let deployment_id = r.structured_content.unwrap()["deployment_id"].as_str().unwrap().to_owned();
    let deployments = get_json(format!("{base}/_demo/deployments")).await;
    assert_eq!(
        deployments,
        json!([{"deployment_id": deployment_id, "service": "payments", "version": "4.12.1", "environment": "production"}])
    );
    assert_eq!(server.state().deployments().len(), 1);

    bounded("client cancel", client.cancel()).await.unwrap();
    bounded("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn required_bearer_is_enforced() {
    let server = start(DemoToolsOptions { require_bearer: Some("upstream-s3cret".into()), ..Default::default() }).await;

    // No header: the MCP handshake is refused.
    let err = bounded("connect without bearer", connect(server.mcp_url(), None)).await;
    assert!(err.is_err(), "a client without the bearer secret must not connect");

    // Wrong secret: refused too.
    let err = bounded("connect with wrong bearer", connect(server.mcp_url(), Some("nope"))).await;
    assert!(err.is_err(), "a client with the wrong secret must not connect");

    // Plain HTTP: 401 with a challenge, and the demo endpoints stay readable.
    let http = reqwest::Client::new();
    let resp = bounded(
        "raw POST",
        http.post(server.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));

    // Right secret: works.
    let client = bounded("connect with bearer", connect(server.mcp_url(), Some("upstream-s3cret"))).await.unwrap();
    let tools = bounded("list_tools", client.list_tools(None)).await.unwrap().tools;
    assert_eq!(tools.len(), 4);
    let r = call(&client, "deploy.production", json!({"service": "web", "version": "1.0.0"})).await;
    assert_ne!(r.is_error, Some(true));
    let deployments = get_json(format!("http://{}/_demo/deployments", server.addr())).await;
    assert_eq!(deployments.as_array().unwrap().len(), 1);

    bounded("client cancel", client.cancel()).await.unwrap();
    bounded("shutdown", server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn speaks_the_stateless_2026_07_28_revision() {
    use rmcp::model::ProtocolVersion;
    use rmcp::{ClientLifecycleMode, ClientServiceExt};

    let server = start(DemoToolsOptions { require_bearer: Some("s".into()), ..Default::default() }).await;
    let transport =
        StreamableHttpClientTransport::from_config(StreamableHttpClientTransportConfig::with_uri(server.mcp_url()).auth_header("s"));
    let client = bounded(
        "discover",
        ClientConfig::default()
            .serve_with_lifecycle(transport, ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] }),
    )
    .await
    .unwrap();
    assert_eq!(client.peer_info().map(|i| i.protocol_version.clone()), Some(ProtocolVersion::V_2026_07_28));
    let tools = bounded("list_tools", client.list_tools(None)).await.unwrap().tools;
    assert_eq!(tools.len(), 4);
    let r = call(&client, "email.send", json!({"to": "bob@example.com", "subject": "hi", "body": "there"})).await;
    assert_ne!(r.is_error, Some(true));
    assert_eq!(server.state().outbox().len(), 1);

    bounded("client cancel", client.cancel()).await.unwrap();
    bounded("shutdown", server.shutdown()).await.unwrap();
}
