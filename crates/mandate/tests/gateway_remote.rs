#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! `mandate gateway` as its own process, apart from `mandate serve`: it verifies mandates
//! with the control plane's keys, asks it for every decision with a `pep` token, opens the
//! brokered secrets it was granted with its own key (sealed to it alone; it never holds the
//! master key), sends its evidence back, follows the revocation feed, and fails closed when the
//! control plane is gone or its registration is revoked.

mod common;

use std::time::Duration;

use common::gateway::{
    GatewayIdentity, GatewayProcess, McpClient, Proxy, Recorder, Seen, TcpRelay, bounded, call, claimed_tool_calls, demo_tools, eventually,
    intent, reason, rmcp_connect, stateless_request, summary, tool_calls, tool_names,
};
use common::{Options, Server, TestAgent, open_task, register_agent};
use mandate_client::Client;
use mandate_demo_tools::DemoToolsHandle;
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
    /// The control plane's master key: never given to the gateway.
    master: String,
    /// The gateway's registration: its key and `pep` token.
    gw: GatewayIdentity,
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
        let gw = GatewayIdentity::register(&admin, "edge", &["demo-tools-token", "billing-key"]).await;
        let demo = demo_tools(Some(DEMO_SECRET)).await;
        let demo_seen = Proxy::start(&format!("http://{}", demo.addr()), None).await;
        let api = Recorder::start().await;
        let agent = register_agent(&admin, "support-bot", &[]).await;
        Setup { server, master, gw, demo, demo_seen, api, agent }
    }

    fn config(&self) -> String {
        gateway_toml(&format!("{}/mcp", self.demo_seen.url), &self.api.url)
    }

    /// The gateway process, with the control plane's URL, its `pep` token and its own key.
    fn gateway(&self) -> GatewayProcess {
        self.gateway_via(&self.server.url)
    }

    /// The gateway process, reaching the control plane at `url`.
    fn gateway_via(&self, url: &str) -> GatewayProcess {
        self.gateway_as(url, &self.gw.token, Some(&self.gw.key_path()))
    }

    /// The gateway process with `token` and key file `key` (`None`: the default, beside its
    /// config, made on first start).
    fn gateway_as(&self, url: &str, token: &str, key: Option<&str>) -> GatewayProcess {
        let mut envs = vec![("MANDATE_URL", url), ("MANDATE_TOKEN", token)];
        if let Some(k) = key {
            envs.push(("MANDATE_GATEWAY_KEY_FILE", k));
        }
        GatewayProcess::start(&self.config(), &envs)
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
    let gw = s.gateway();
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
        assert_eq!(e["actor"], format!("token:{}", s.gw.token_id), "{e}");
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
    assert!(!gw.log().contains(&s.master) && !gw.log().contains(&s.gw.token));
    let key = std::fs::read_to_string(&s.gw.key_file).unwrap();
    assert!(!gw.log().contains(key.trim()) && !s.server.log().contains(key.trim()) && !export.contains(key.trim()));
    // Every secret it got was sealed to it, and recorded by name and version.
    let sealed = admin.audit_events(&[("kind", "secret.sealed".to_owned())]).await.unwrap().events;
    assert!(!sealed.is_empty());
    for e in &sealed {
        assert_eq!(
            (e["details"]["gateway"].as_str(), e["actor"].as_str()),
            (Some("edge"), Some(format!("token:{}", s.gw.token_id).as_str()))
        );
        assert!(["demo-tools-token", "billing-key"].contains(&e["details"]["name"].as_str().unwrap()), "{e}");
        assert_eq!(e["details"]["version"], 1);
    }
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
    let gw = s.gateway();
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
    let gw = s.gateway();
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

/// Through `gw`, an allowed call to either upstream fails with `code` (MCP `-32002`, HTTP 502)
/// and is recorded as allowed and not forwarded (the `round`-th pair of this task's calls).
async fn allowed_but_refused(s: &Setup, gw: &GatewayProcess, mandate: &str, task: &str, round: usize, code: &str) {
    let got = api_get(gw, "/invoices/42", mandate).await;
    assert_eq!((got.0, got.1["error"]["code"].as_str()), (502, Some(code)), "{got:?}\n{}", gw.log());
    let (status, body) = stateless_request(
        &format!("{}/mcp/demo", gw.url),
        mandate,
        "tools/call",
        Some("tickets.search"),
        json!({"name": "tickets.search", "arguments": {"query": "x"}}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_i64(), reason(&body["error"]["data"])), (200, Some(-32002), code), "{body}");
    assert!(!gw.log().contains(DEMO_SECRET) && !gw.log().contains(API_KEY));
    // Allowed, and recorded as not forwarded (before this gateway stops: its evidence queue
    // lives in its memory).
    let calls = tool_calls(&s.server.admin(), task, 2 * (round + 1)).await;
    let ours = &calls[2 * round..];
    assert!(ours.iter().all(|d| d["decision"] == true && d["forwarded"] == false), "{calls:#?}");
    assert!(ours.iter().all(|d| d["result"] == code), "{calls:#?}");
}

/// A gateway opens only what it was registered for: a `pep` token bound to no gateway gets
/// `gateway_not_registered`, a gateway not granted the secret `secret_not_granted`, and an
/// allowed request is refused before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_opens_only_the_secrets_it_was_granted() {
    let s = Setup::start().await;
    let admin = s.server.admin();
    let (mandate, task) = s.task().await;

    // A plain `pep` token, with a key made on first start (beside the config).
    let plain = admin.create_token("pep", "not a registered gateway").await.unwrap();
    let gw = s.gateway_as(&s.server.url, &plain.token, None);
    allowed_but_refused(&s, &gw, &mandate, &task, 0, "gateway_not_registered").await;
    drop(gw);

    // A registered gateway granted another secret only.
    let other = GatewayIdentity::register(&admin, "edge-other", &["unrelated"]).await;
    let gw = s.gateway_as(&s.server.url, &other.token, Some(&other.key_path()));
    allowed_but_refused(&s, &gw, &mandate, &task, 1, "secret_not_granted").await;
    drop(gw);
    let direct = other.client(&s.server.url).sealed_secret("billing-key").await.unwrap_err();
    assert_eq!(direct.code(), Some("secret_not_granted"));
    let direct = Client::new(&s.server.url, Some(plain.token.clone())).unwrap().sealed_secret("billing-key").await.unwrap_err();
    assert_eq!(direct.code(), Some("gateway_not_registered"));
    assert!(direct.to_string().contains("mandate gateway register"), "{direct}");

    assert!(s.api.seen().is_empty());
    assert!(s.demo_seen.seen().is_empty(), "{:?}", s.demo_seen.seen());
    let refused = admin.audit_events(&[("kind", "secret.seal_refused".to_owned())]).await.unwrap().events;
    let reasons: Vec<&str> = refused.iter().filter_map(|e| e["details"]["reason"].as_str()).collect();
    assert!(reasons.contains(&"gateway_not_registered") && reasons.contains(&"secret_not_granted"), "{refused:#?}");
    assert!(refused.iter().any(|e| e["details"]["gateway"] == "edge-other" && e["details"]["name"] == "billing-key"), "{refused:#?}");
    s.demo.shutdown().await.unwrap();
}

/// What the control plane seals for gateway A opens with A's key only: not with gateway B's
/// key, not under B's name, not as another secret or version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_sealed_for_one_gateway_does_not_open_at_another() {
    let s = Setup::start().await;
    let admin = s.server.admin();
    let b = GatewayIdentity::register(&admin, "edge-b", &["billing-key"]).await;
    let view = s.gw.client(&s.server.url).sealed_secret("billing-key").await.unwrap();
    assert_eq!((view.name.as_str(), view.version, view.gateway.as_str()), ("billing-key", 1, "edge"));
    assert_eq!(view.suite, mandate_proto::gateway::SEAL_SUITE);
    let text = serde_json::to_string(&view).unwrap();
    assert!(!text.contains(API_KEY), "{text}");
    let mut keys: Vec<String> = serde_json::to_value(&view).unwrap().as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["ciphertext", "enc", "gateway", "name", "suite", "version"]);
    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).unwrap();
    let sealed = mandate_secrets::GatewaySealed { enc: b64(&view.enc), ciphertext: b64(&view.ciphertext) };
    let open = |key: &mandate_secrets::GatewayPrivateKey, gw: &str, name: &str, version: u32| {
        mandate_secrets::open_for_gateway(key, gw, name, version, None, &sealed)
    };
    assert_eq!(open(&s.gw.private_key(), "edge", "billing-key", 1).unwrap().as_slice(), API_KEY.as_bytes());
    for (key, gw, name, version) in [
        (b.private_key(), "edge", "billing-key", 1),
        (b.private_key(), "edge-b", "billing-key", 1),
        (s.gw.private_key(), "edge-b", "billing-key", 1),
        (s.gw.private_key(), "edge", "demo-tools-token", 1),
        (s.gw.private_key(), "edge", "billing-key", 2),
    ] {
        assert_eq!(open(&key, gw, name, version).unwrap_err().code(), "secret_undecryptable", "{gw} {name} {version}");
    }
    // B's own blob opens with B's key; no role but a registered gateway's `pep` token gets one.
    let mine = b.client(&s.server.url).sealed_secret("billing-key").await.unwrap();
    let sealed_b = mandate_secrets::GatewaySealed { enc: b64(&mine.enc), ciphertext: b64(&mine.ciphertext) };
    assert_eq!(
        mandate_secrets::open_for_gateway(&b.private_key(), "edge-b", "billing-key", 1, None, &sealed_b).unwrap().as_slice(),
        API_KEY.as_bytes()
    );
    assert!(mandate_secrets::open_for_gateway(&s.gw.private_key(), "edge", "billing-key", 1, None, &sealed_b).is_err());
    assert_eq!(admin.sealed_secret("billing-key").await.unwrap_err().code(), Some("forbidden"));
    assert_eq!(s.gw.client(&s.server.url).sealed_secret("missing").await.unwrap_err().code(), Some("secret_not_granted"));

    // A gateway started with another key than the one registered refuses to start.
    let (status, out) = GatewayProcess::refused(
        &s.config(),
        &[("MANDATE_URL", s.server.url.as_str()), ("MANDATE_TOKEN", s.gw.token.as_str()), ("MANDATE_GATEWAY_KEY_FILE", &b.key_path())],
    );
    assert!(!status.success());
    assert!(out.contains("is registered with public key") && out.contains(&s.gw.public_key) && out.contains(&b.public_key), "{out}");
    s.demo.shutdown().await.unwrap();
}

/// A gateway given the control plane's master key refuses to start and says how to migrate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_refuses_the_master_key() {
    let s = Setup::start().await;
    let master_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(master_file.path(), &s.master).unwrap();
    let path = master_file.path().display().to_string();
    let base =
        [("MANDATE_URL", s.server.url.as_str()), ("MANDATE_TOKEN", s.gw.token.as_str()), ("MANDATE_GATEWAY_KEY_FILE", &s.gw.key_path())];
    for extra in [("MANDATE_MASTER_KEY", s.master.as_str()), ("MANDATE_MASTER_KEY_FILE", path.as_str())] {
        let mut envs = base.to_vec();
        envs.push(extra);
        let (status, out) = GatewayProcess::refused(&s.config(), &envs);
        assert!(!status.success(), "{out}");
        assert!(out.contains("no longer takes the control plane's master key") && out.contains("mandate gateway register"), "{out}");
        assert!(!out.contains(&s.master), "{out}");
    }
    s.demo.shutdown().await.unwrap();
}

/// Revoking a gateway: it gets nothing more. Its calls are refused with `gateway_revoked` and
/// nothing is forwarded; its token opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_gateway_gets_nothing() {
    let s = Setup::start().await;
    let admin = s.server.admin();
    let gw = s.gateway();
    let (mandate, _task) = s.task().await;
    assert_eq!(api_get(&gw, "/invoices/42", &mandate).await.0, 200);
    let client = connect(&gw, &mandate, "2026-07-28").await;
    call(&client, "tickets.search", json!({"query": "checkout"})).await.unwrap();
    let (calls, api) = (s.upstream_calls(), s.api.seen().len());

    let revoked = admin.revoke_gateway("edge").await.unwrap();
    assert!(revoked.revoked_at_ms.is_some());
    let (code, data) = call(&client, "tickets.search", json!({"query": "after"})).await.unwrap_err();
    assert_eq!((code, reason(&data)), (-32001, "gateway_revoked"), "{data}");
    let got = api_get(&gw, "/invoices/42", &mandate).await;
    assert_eq!((got.0, got.1["error"]["code"].as_str()), (403, Some("gateway_revoked")), "{got:?}");
    assert_eq!((s.upstream_calls(), s.api.seen().len()), (calls, api), "nothing forwarded after the revocation");

    let direct = s.gw.client(&s.server.url);
    assert_eq!(direct.sealed_secret("billing-key").await.unwrap_err().code(), Some("gateway_revoked"));
    assert_eq!(direct.gateway_self().await.unwrap_err().code(), Some("gateway_revoked"));
    let tokens = admin.list_tokens().await.unwrap();
    assert!(tokens.iter().any(|t| t.id == s.gw.token_id && t.revoked_at_ms.is_some()), "{tokens:?}");
    assert_eq!(admin.revoke_gateway("edge").await.unwrap_err().code(), Some("gateway_revoked"));
    let events = admin.audit_events(&[("kind", "gateway.revoked".to_owned())]).await.unwrap().events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["details"]["name"], "edge");
    let _ = bounded("cancel", client.cancel()).await;
    s.demo.shutdown().await.unwrap();
}

/// Registration, list and revoke through the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_are_registered_listed_and_revoked_with_the_cli() {
    let server = Server::start();
    let (dir, key_file, public) = GatewayIdentity::keygen();
    assert_eq!(public.len(), 43, "{public}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // An existing key file is never overwritten.
    let again =
        std::process::Command::new(env!("CARGO_BIN_EXE_mandate")).args(["gateway", "keygen", "--out"]).arg(&key_file).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    let private = std::fs::read_to_string(&key_file).unwrap();
    assert!(!String::from_utf8_lossy(&again.stdout).contains(private.trim()));

    let out = server
        .cli()
        .args(["gateway", "register", "edge-cli", "--public-key", &public, "--secret", "github-token", "--secret", "billing-key"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("mdt_"), "{token}");
    let me = Client::new(&server.url, Some(token.clone())).unwrap().gateway_self().await.unwrap();
    assert_eq!((me.name.as_str(), me.secrets.clone()), ("edge-cli", vec!["billing-key".to_owned(), "github-token".to_owned()]));

    let dup = server.cli().args(["gateway", "register", "edge-cli", "--public-key", &public]).output().unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("gateway_exists"), "{}", String::from_utf8_lossy(&dup.stderr));
    let bad = server.cli().args(["gateway", "register", "edge-bad", "--public-key", "not-a-key"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_request"));

    let list = server.cli().args(["gateway", "list"]).output().unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    let line = text.lines().find(|l| l.starts_with("edge-cli")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("active") && line.contains(&public) && line.contains("billing-key,github-token") && line.contains(&me.token_id),
        "{line}"
    );
    let json = server.cli().args(["gateway", "list", "--json"]).output().unwrap();
    let views: Vec<mandate_proto::gateway::GatewayView> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(views.len(), 1);

    let out = server.cli().args(["gateway", "revoke", "edge-cli"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let text = String::from_utf8(server.cli().args(["gateway", "list"]).output().unwrap().stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("edge-cli") && l.contains("revoked")), "{text}");
    let gone = Client::new(&server.url, Some(token.clone())).unwrap().gateway_self().await.unwrap_err();
    assert_eq!(gone.code(), Some("gateway_revoked"));
    // A revoked name may be registered again, with a new token.
    let out = server.cli().args(["gateway", "register", "edge-cli", "--public-key", &public, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: mandate_proto::gateway::RegisterGatewayResponse = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(r.token, token);
    assert!(r.gateway.secrets.is_empty());

    for (kind, n) in [("gateway.registered", 2), ("gateway.revoked", 1)] {
        let events = server.admin().audit_events(&[("kind", kind.to_owned())]).await.unwrap().events;
        assert_eq!(events.len(), n, "{kind}: {events:#?}");
        assert!(events.iter().all(|e| e["details"]["name"] == "edge-cli"), "{events:#?}");
    }
    // The private key is in no log and no answer.
    assert!(!server.log().contains(private.trim()));
    drop(dir);
}

/// Cut off from its control plane, a gateway denies everything and keeps the evidence; once
/// the control plane is reachable again the evidence arrives, the revocation feed resumes
/// (a task revoked meanwhile is refused by the gateway itself), and calls work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_gateway_catches_up_when_the_control_plane_is_back() {
    let s = Setup::start().await;
    let relay = TcpRelay::start(&s.server.url).await;
    let gw = s.gateway_via(&relay.url);
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
    let mut gw = s.gateway_via(&relay.url);
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
