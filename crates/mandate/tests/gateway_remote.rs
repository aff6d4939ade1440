#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! `mandate gateway` as its own process, apart from `mandate serve`: it verifies mandates
//! with the control plane's keys, asks it for every decision with a `pep` token, opens
//! brokered secrets with the master key they share, sends its evidence back, follows the
//! revocation feed, and fails closed when the control plane is gone.

mod common;

use std::time::Duration;

use common::gateway::{
    GatewayProcess, McpClient, Proxy, Recorder, Seen, TcpRelay, bounded, call, claimed_tool_calls, eventually, intent, reason,
    rmcp_connect, stateless_request, summary, tool_calls, tool_names,
};
use common::{Options, Server, TestAgent, open_task, register_agent};
use mandate_demo_tools::{DemoToolsHandle, DemoToolsOptions};
use mandate_secrets::MasterKey;
use serde_json::{Value, json};

const DEMO_SECRET: &str = "demo-upstream-s3cret-0417";
const API_KEY: &str = "billing-api-key-6620-s3cret";
/// How long a revocation may take to reach the remote gateway over the feed.
const FEED: Duration = Duration::from_secs(5);

fn gateway_toml(demo_mcp: &str, api: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "demo"
type = "mcp"
url = "{demo_mcp}"
[upstream.inject]
secret = "demo-tools-token"
[upstream.tools."tickets.search"]
kind = "read"
classification = "internal"
[upstream.tools."email.send"]
kind = "write"
classification = "internal"

[[upstream]]
name = "billing"
type = "http"
url = "{api}"
[upstream.inject]
secret = "billing-key"
header = "X-Api-Key"
format = "{{}}"
[[upstream.routes]]
method = "GET"
path = "/invoices/{{id}}"
action = "billing.invoices.read"
kind = "read"
classification = "internal"
resource = "invoice:{{id}}"
"#
    )
}

struct Setup {
    server: Server,
    master: String,
    pep: mandate_proto::admin::CreateTokenResponse,
    demo: DemoToolsHandle,
    /// In front of the demo server: what reached it.
    demo_seen: Proxy,
    api: Recorder,
    agent: TestAgent,
}

impl Setup {
    async fn start() -> Setup {
        let master = MasterKey::generate().to_base64().to_string();
        let server = Server::start_with(Options { envs: vec![("MANDATE_MASTER_KEY".into(), master.clone())], ..Default::default() });
        let admin = server.admin();
        admin.put_secret("demo-tools-token", DEMO_SECRET, "demo tool server bearer").await.unwrap();
        admin.put_secret("billing-key", API_KEY, "billing API key").await.unwrap();
        let pep = admin.create_token("pep", "remote gateway").await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let demo = mandate_demo_tools::spawn(listener, DemoToolsOptions { require_bearer: Some(DEMO_SECRET.into()), ..Default::default() })
            .unwrap();
        let demo_seen = Proxy::start(&format!("http://{}", demo.addr()), None).await;
        let api = Recorder::start().await;
        let agent = register_agent(&admin, "support-bot", &[]).await;
        Setup { server, master, pep, demo, demo_seen, api, agent }
    }

    /// The gateway process, with the control plane's URL, the `pep` token and `master_key`.
    fn gateway(&self, master_key: Option<&str>) -> GatewayProcess {
        self.gateway_via(&self.server.url, master_key)
    }

    /// The gateway process, reaching the control plane at `url`.
    fn gateway_via(&self, url: &str, master_key: Option<&str>) -> GatewayProcess {
        let config = gateway_toml(&format!("{}/mcp", self.demo_seen.url), &self.api.url);
        let mut envs = vec![("MANDATE_URL", url), ("MANDATE_TOKEN", self.pep.token.as_str())];
        if let Some(k) = master_key {
            envs.push(("MANDATE_MASTER_KEY", k));
        }
        GatewayProcess::start(&config, &envs)
    }

    async fn task(&self) -> (String, String) {
        open_task(&self.server, &self.agent, &intent(&["demo.tickets.search", "demo.email.send", "billing.invoices.read"])).await
    }

    /// Requests that reached the demo server carrying a `tools/call`.
    fn upstream_calls(&self) -> usize {
        self.demo_seen.seen().iter().filter(|s| s.rpc_method().as_deref() == Some("tools/call")).count()
    }
}

async fn api_get(gw: &GatewayProcess, path: &str, mandate: &str) -> (u16, Value) {
    let resp = bounded(
        path,
        reqwest::Client::new().get(format!("{}/api/billing{path}", gw.url)).header("authorization", format!("Bearer {mandate}")).send(),
    )
    .await
    .unwrap();
    let status = resp.status().as_u16();
    (status, bounded(path, resp.json::<Value>()).await.unwrap_or(Value::Null))
}

async fn connect(gw: &GatewayProcess, mandate: &str, protocol: &str) -> McpClient {
    rmcp_connect(&format!("{}/mcp/demo", gw.url), mandate, protocol, &[]).await.unwrap_or_else(|e| panic!("{e}\n{}", gw.log()))
}

/// Polls a stateless `tools/list` until the gateway itself refuses it (it has heard of the
/// revocation over the feed: before that, the list is forwarded and every tool filtered out
/// by the control plane's decisions). Returns the refusal's reason.
async fn refused_by_the_gateway(gw: &GatewayProcess, mandate: &str) -> String {
    let url = format!("{}/mcp/demo", gw.url);
    eventually("the remote gateway to hear of the revocation", FEED, || async {
        let (status, body) = stateless_request(&url, mandate, "tools/list", None, json!({})).await;
        assert_eq!(status, 200, "{body}");
        if body.get("error").is_some() {
            assert_eq!(body["error"]["code"], -32001, "{body}");
            return Some(reason(&body["error"]["data"]).to_owned());
        }
        assert_eq!(body["result"]["tools"], json!([]), "a revoked task's list is filtered to nothing: {body}");
        None
    })
    .await
}

fn assert_clean(seen: &[Seen], header: &str, value: &str, mandate: &str) {
    assert!(!seen.is_empty());
    for s in seen {
        assert_eq!(s.header(header), [value], "{s:?}");
        assert!(!s.contains(mandate), "the mandate went upstream: {s:?}");
    }
}

async fn remote_gateway_decides_injects_and_reports(protocol: &str) {
    let s = Setup::start().await;
    let gw = s.gateway(Some(&s.master));
    let admin = s.server.admin();
    let (mandate, task) = s.task().await;
    let client = connect(&gw, &mandate, protocol).await;

    // Filtered by the control plane's decisions; an allowed call goes through with the secret
    // the gateway opened itself (the demo server refuses requests without it).
    assert_eq!(tool_names(&client).await, ["tickets.search"]);
    let ok = call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap();
    assert_eq!(ok["structuredContent"]["tickets"][0]["id"], "T-42", "{ok}");
    let (code, data) = call(&client, "email.send", json!({"to": "bob@example.com", "subject": "x", "body": "y"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "no_policy_permits"), "{data}");
    let denied_id = data["decision_id"].as_str().unwrap().to_owned();
    assert_eq!(s.upstream_calls(), 1);
    assert!(s.demo.state().outbox().is_empty());
    assert_clean(&s.demo_seen.seen(), "authorization", &format!("Bearer {DEMO_SECRET}"), &mandate);

    // The HTTP API side of the same gateway.
    let got = api_get(&gw, "/invoices/42", &mandate).await;
    assert_eq!((got.0, got.1["path"].as_str()), (200, Some("/invoices/42")), "{got:?}");
    assert_clean(&s.api.seen(), "x-api-key", API_KEY, &mandate);

    // The evidence reaches the control plane's trail, sent by the gateway's token.
    let calls = tool_calls(&admin, &task, 3).await;
    assert_eq!(
        summary(&calls),
        [
            ("tickets.search".to_owned(), true, "allowed".to_owned()),
            ("email.send".to_owned(), false, "no_policy_permits".to_owned()),
            ("/invoices/42".to_owned(), true, "allowed".to_owned()),
        ]
    );
    assert_eq!(calls[1]["decision_id"], denied_id.as_str());
    assert_eq!(calls[0]["secret"], json!({"name": "demo-tools-token", "version": 1}));
    let events = admin.audit_trail(&task).await.unwrap().events;
    for e in events.iter().filter(|e| e["kind"] == "tool.call") {
        assert_eq!(e["actor"], format!("token:{}", s.pep.id), "{e}");
        let id = e["details"]["decision_id"].as_str().unwrap();
        assert!(events.iter().any(|d| d["kind"] == "decision" && d["details"]["decision_id"] == id), "decision {id} is in the trail");
    }

    // Revoked at the control plane: the very next call is refused (decisions are always asked
    // there), and once the feed has brought the news the gateway refuses on its own.
    admin.revoke_task(&task, Some("test".into())).await.unwrap();
    let (code, data) = call(&client, "tickets.search", json!({"query": "again"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "task_revoked"), "{data}");
    assert!(data["decision_id"].as_str().is_some(), "{data}");
    assert_eq!(refused_by_the_gateway(&gw, &mandate).await, "task_revoked");
    let (code, data) = call(&client, "tickets.search", json!({"query": "once more"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "task_revoked"), "{data}");
    let revoked_api = api_get(&gw, "/invoices/42", &mandate).await;
    assert_eq!((revoked_api.0, revoked_api.1["error"]["code"].as_str()), (403, Some("task_revoked")), "{revoked_api:?}");
    assert_eq!(s.upstream_calls(), 1, "nothing forwarded after the revocation");
    assert_eq!(s.api.seen().len(), 1);
    let _ = bounded("cancel", client.cancel()).await;

    let calls = tool_calls(&admin, &task, 6).await;
    assert!(calls[3..].iter().all(|d| d["reason"] == "task_revoked" && d["forwarded"] == false), "{calls:#?}");

    // The secrets went upstream and nowhere else; the mandate is in no log.
    let export = admin.audit_export("jsonl").await.unwrap();
    for secret in [DEMO_SECRET, API_KEY] {
        assert!(!export.contains(secret) && !gw.log().contains(secret) && !s.server.log().contains(secret));
    }
    assert!(!gw.log().contains(&mandate) && !export.contains(&mandate));
    assert!(!gw.log().contains(&s.master) && !gw.log().contains(&s.pep.token));
    s.demo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_gateway_2025_11_25_decides_injects_and_reports() {
    remote_gateway_decides_injects_and_reports("2025-11-25").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_gateway_2026_07_28_decides_injects_and_reports() {
    remote_gateway_decides_injects_and_reports("2026-07-28").await;
}

/// The kill switch at the control plane stops the agent at a remote gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_the_agent_stops_it_at_a_remote_gateway() {
    let s = Setup::start().await;
    let gw = s.gateway(Some(&s.master));
    let (mandate, task) = s.task().await;
    let client = connect(&gw, &mandate, "2026-07-28").await;
    call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap();

    s.server.admin().disable_agent(&s.agent.name).await.unwrap();
    // Disabling an agent revokes its live tasks, and the control plane checks the task first:
    // the decision says `task_revoked`.
    let (code, data) = call(&client, "tickets.search", json!({"query": "again"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "task_revoked"), "{data}");
    // The feed announces the agent first, then each of its tasks: the gateway's own refusal
    // names whichever it applied first.
    let own = refused_by_the_gateway(&gw, &mandate).await;
    assert!(own == "agent_disabled" || own == "task_revoked", "{own}");
    let api = api_get(&gw, "/invoices/42", &mandate).await;
    assert_eq!((api.0, api.1["error"]["code"].as_str()), (403, Some("task_revoked")), "{api:?}");
    assert_eq!(s.upstream_calls(), 1);
    assert!(s.api.seen().is_empty());
    let _ = bounded("cancel", client.cancel()).await;
    let calls = tool_calls(&s.server.admin(), &task, 3).await;
    assert_eq!(
        summary(&calls)[1..],
        [("tickets.search".to_owned(), false, "task_revoked".to_owned()), ("/invoices/42".to_owned(), false, "task_revoked".to_owned())]
    );
    s.demo.shutdown().await.unwrap();
}

/// With the control plane gone (SIGKILL), every call through the gateway is denied with
/// `control_plane_unavailable` and nothing is forwarded: mandates still verify locally, but
/// no decision can be had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_fails_closed_without_its_control_plane() {
    let mut s = Setup::start().await;
    let gw = s.gateway(Some(&s.master));
    let (mandate, _task) = s.task().await;
    let legacy = connect(&gw, &mandate, "2025-11-25").await;
    let modern = connect(&gw, &mandate, "2026-07-28").await;
    for c in [&legacy, &modern] {
        call(c, "tickets.search", json!({"query": "checkout"})).await.unwrap();
    }
    assert_eq!(api_get(&gw, "/invoices/42", &mandate).await.0, 200);
    let ready = reqwest::get(format!("{}/readyz", gw.url)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let (calls_before, api_before) = (s.upstream_calls(), s.api.seen().len());

    s.server.kill9();

    for c in [&legacy, &modern] {
        let (code, data) = call(c, "tickets.search", json!({"query": "while down"})).await.unwrap_err();
        assert_eq!((code, reason(&data)), (-32001, "control_plane_unavailable"), "{data}");
        assert!(data.get("decision_id").is_none(), "no decision was made: {data}");
    }
    let (status, body) = stateless_request(
        &format!("{}/mcp/demo", gw.url),
        &mandate,
        "tools/call",
        Some("tickets.search"),
        json!({"name": "tickets.search", "arguments": {"query": "raw"}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_i64(), reason(&body["error"]["data"])),
        (200, Some(-32001), "control_plane_unavailable"),
        "{body}"
    );
    let api = api_get(&gw, "/invoices/42", &mandate).await;
    assert_eq!((api.0, api.1["error"]["code"].as_str()), (503, Some("control_plane_unavailable")), "{api:?}");
    assert_eq!(s.upstream_calls(), calls_before, "a call was forwarded without a decision");
    assert_eq!(s.api.seen().len(), api_before, "a request was forwarded without a decision");

    // Readiness follows the revocation feed's connection.
    eventually("/readyz to report the control plane gone", Duration::from_secs(10), || async {
        let r = reqwest::get(format!("{}/readyz", gw.url)).await.unwrap();
        (r.status() == 503).then_some(())
    })
    .await;
    let _ = bounded("cancel", legacy.cancel()).await;
    let _ = bounded("cancel", modern.cancel()).await;
    s.demo.shutdown().await.unwrap();
}

/// The gateway opens sealed secrets only with the control plane's master key: without one,
/// or with another, an allowed request is refused before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_without_the_master_key_forwards_nothing() {
    let s = Setup::start().await;
    let (mandate, task) = s.task().await;
    let other = MasterKey::generate().to_base64().to_string();
    for (round, (key, code)) in [(None, "secret_unavailable"), (Some(other.as_str()), "secret_undecryptable")].into_iter().enumerate() {
        let gw = s.gateway(key);
        let got = api_get(&gw, "/invoices/42", &mandate).await;
        assert_eq!((got.0, got.1["error"]["code"].as_str()), (502, Some(code)), "{got:?}");
        let (status, body) = stateless_request(
            &format!("{}/mcp/demo", gw.url),
            &mandate,
            "tools/call",
            Some("tickets.search"),
            json!({"name": "tickets.search", "arguments": {"query": "x"}}),
        )
        .await;
        assert_eq!((status, body["error"]["code"].as_i64(), reason(&body["error"]["data"])), (200, Some(-32002), code), "{body}");
        assert!(!gw.log().contains(DEMO_SECRET) && !gw.log().contains(API_KEY));
        // Allowed, and recorded as not forwarded (before this gateway stops: its evidence
        // queue lives in its memory).
        let calls = tool_calls(&s.server.admin(), &task, 2 * (round + 1)).await;
        let ours = &calls[2 * round..];
        assert!(ours.iter().all(|d| d["decision"] == true && d["forwarded"] == false), "{calls:#?}");
        assert!(ours.iter().all(|d| d["result"] == code), "{calls:#?}");
    }
    assert!(s.api.seen().is_empty());
    assert!(s.demo_seen.seen().is_empty(), "{:?}", s.demo_seen.seen());
    s.demo.shutdown().await.unwrap();
}

/// Cut off from its control plane, a gateway denies everything and keeps the evidence; once
/// the control plane is reachable again the evidence arrives, the revocation feed resumes
/// (a task revoked meanwhile is refused by the gateway itself), and calls work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_gateway_catches_up_when_the_control_plane_is_back() {
    let s = Setup::start().await;
    let relay = TcpRelay::start(&s.server.url).await;
    let gw = s.gateway_via(&relay.url, Some(&s.master));
    let admin = s.server.admin();
    let (mandate, task) = s.task().await;
    let (other_mandate, other_task) = s.task().await;
    let client = connect(&gw, &mandate, "2026-07-28").await;
    call(&client, "tickets.search", json!({"query": "before"})).await.unwrap();
    tool_calls(&admin, &task, 1).await;

    relay.cut();
    for _ in 0..3 {
        let (code, data) = call(&client, "tickets.search", json!({"query": "cut off"})).await.unwrap_err();
        assert_eq!((code, reason(&data)), (-32001, "control_plane_unavailable"), "{data}");
    }
    let api = api_get(&gw, "/invoices/42", &mandate).await;
    assert_eq!((api.0, api.1["error"]["code"].as_str()), (503, Some("control_plane_unavailable")), "{api:?}");
    assert_eq!(s.upstream_calls(), 1);
    admin.revoke_task(&other_task, Some("revoked while the gateway was cut off".into())).await.unwrap();

    relay.reopen();
    // The refusals made while cut off name no decision: they are recorded outside the task's
    // trail, claiming it.
    let calls = claimed_tool_calls(&admin, &task, 5).await;
    assert_eq!(tool_calls(&admin, &task, 1).await.len(), 1);
    let down = ("tickets.search".to_owned(), false, "control_plane_unavailable".to_owned());
    assert_eq!(
        summary(&calls),
        [
            ("tickets.search".to_owned(), true, "allowed".to_owned()),
            down.clone(),
            down.clone(),
            down,
            ("/invoices/42".to_owned(), false, "control_plane_unavailable".to_owned()),
        ]
    );
    assert_eq!(refused_by_the_gateway(&gw, &other_mandate).await, "task_revoked");
    let ok = call(&client, "tickets.search", json!({"query": "after"})).await.unwrap();
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(s.upstream_calls(), 2);
    let _ = bounded("cancel", client.cancel()).await;
    s.demo.shutdown().await.unwrap();
}

/// Evidence queued while the control plane was away is delivered when the gateway is stopped
/// gracefully right after the control plane came back: the gateway flushes what it holds
/// before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_delivers_the_evidence_it_holds() {
    let s = Setup::start().await;
    let relay = TcpRelay::start(&s.server.url).await;
    let mut gw = s.gateway_via(&relay.url, Some(&s.master));
    let admin = s.server.admin();
    let (mandate, task) = s.task().await;
    let client = connect(&gw, &mandate, "2026-07-28").await;
    call(&client, "tickets.search", json!({"query": "before"})).await.unwrap();
    tool_calls(&admin, &task, 1).await;
    relay.cut();
    let (_, data) = call(&client, "tickets.search", json!({"query": "cut off"})).await.unwrap_err();
    assert_eq!(reason(&data), "control_plane_unavailable");
    drop(client);
    // The gateway has tried to send it and is waiting to retry.
    eventually("a failed evidence delivery", Duration::from_secs(10), || async {
        gw.log().contains("cannot reach the control plane for evidence").then_some(())
    })
    .await;
    relay.reopen();
    assert!(gw.stop().success(), "{}", gw.log());
    let calls = claimed_tool_calls(&admin, &task, 2).await;
    assert_eq!(calls[1]["reason"], "control_plane_unavailable", "{calls:#?}");
    assert_eq!(calls[1]["claimed_task"], task.as_str(), "{calls:#?}");
}
