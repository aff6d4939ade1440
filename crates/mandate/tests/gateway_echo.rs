#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! Upstreams that echo the secret the gateway injects (a real MCP server on the official
//! Python SDK, a Starlette HTTP API: `tests/py/echo_server.py`) in every encoding a tool might
//! use: the agent never gets it back, in any form, through the embedded gateway or the remote
//! one; each answer that held it leaves a `secret.echo_redacted` event (name, version, no
//! value) and counts in `/metrics`.

mod common;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use common::gateway::{GatewayIdentity, GatewayProcess, bounded, eventually, intent, serve_with_gateway};
use common::python::start_upstream;
use common::{Options, Server, open_task, register_agent};
use mandate_secrets::MasterKey;
use serde_json::{Value, json};

const MCP_SECRET: &str = "sk-echo-7f3a9c2e51d8b604";
const API_SECRET: &str = "api-s3cret/with+chars=42";
const TOOLS: [&str; 7] = ["echo.raw", "echo.base64", "echo.base64url", "echo.percent", "echo.hex", "echo.json_escaped", "echo.error"];

fn percent(v: &str, upper: bool) -> String {
    v.bytes().map(|b| if upper { format!("%{b:02X}") } else { format!("%{b:02x}") }).collect()
}

/// Every form of `values` the agent must never see, written out independently of the
/// gateway's own matcher: raw, JSON-escaped, base64 (both alphabets, padded or not, and the
/// characters fixed by the value at each of the three offsets), percent-encoded, hex.
fn forms(values: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        out.push(v.to_string());
        out.push(serde_json::to_string(v).unwrap().trim_matches('"').to_owned());
        out.push(v.chars().map(|c| format!("\\u{:04x}", c as u32)).collect());
        for (padded, unpadded) in [(&STANDARD, &STANDARD_NO_PAD), (&URL_SAFE, &URL_SAFE_NO_PAD)] {
            out.push(padded.encode(v));
            out.push(unpadded.encode(v));
            for shift in 0..3usize {
                let mut buf = vec![0u8; shift];
                buf.extend_from_slice(v.as_bytes());
                let text = unpadded.encode(&buf);
                out.push(text[(8 * shift).div_ceil(6)..(8 * (shift + v.len())) / 6].to_owned());
            }
        }
        out.push(url::form_urlencoded::byte_serialize(v.as_bytes()).collect());
        out.push(percent(v, true));
        out.push(percent(v, false));
        out.push(v.replace(' ', "%20").replace('/', "%2F").replace('+', "%2B").replace('=', "%3D"));
        out.push(hex::encode(v));
        out.push(hex::encode_upper(v));
    }
    out.sort();
    out.dedup();
    out
}

fn assert_clean(what: &str, text: &str, forms: &[String]) {
    for f in forms {
        assert!(!text.contains(f.as_str()), "{what}: the agent got the secret as `{f}`:\n{text}");
    }
}

fn config(mcp: &str, api: &str) -> String {
    format!(
        r#"
[[gateway.upstream]]
name = "echo"
type = "mcp"
url = "{mcp}/mcp"
protocol = "2025-11-25"
[gateway.upstream.inject]
header = "Authorization"
secret = "echo-token"
format = "Bearer {{}}"
{tools}
[[gateway.upstream]]
name = "api"
type = "http"
url = "{api}"
[gateway.upstream.inject]
header = "Authorization"
secret = "api-key"
basic_user = "bot"
[[gateway.upstream.routes]]
method = "GET"
path = "/{{*rest}}"
action = "api.echo.read"
kind = "read"
classification = "internal"
"#,
        tools = TOOLS
            .iter()
            .chain(["echo.stream"].iter())
            .map(|t| format!("[gateway.upstream.tools.\"{t}\"]\nkind = \"read\"\nclassification = \"internal\"\n"))
            .collect::<String>()
    )
}

fn actions() -> Vec<String> {
    let mut a: Vec<String> = TOOLS.iter().chain(["echo.stream"].iter()).map(|t| format!("echo.{t}")).collect();
    a.push("api.echo.read".into());
    a
}

/// A legacy (2025-11-25) MCP session through the gateway, spoken by hand so the test sees
/// exactly the bytes the agent gets.
struct Session {
    url: String,
    mandate: String,
    id: String,
    http: reqwest::Client,
}

impl Session {
    async fn open(url: String, mandate: String) -> Session {
        let http = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "echo-test", "version": "1"}}});
        let resp = bounded("initialize", http.post(&url).bearer_auth(&mandate).header("accept", "application/json").json(&init).send())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let s = Session { url, mandate, id, http };
        let _ = s.post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
        s
    }

    async fn post(&self, body: Value) -> String {
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(&self.mandate)
            .header("accept", "application/json")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&body)
            .send();
        bounded("post", async { resp.await.unwrap().text().await.unwrap() }).await
    }

    async fn call(&self, tool: &str) -> String {
        self.post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}})).await
    }

    async fn stream(&self) -> reqwest::Response {
        let resp = self
            .http
            .get(&self.url)
            .bearer_auth(&self.mandate)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .send();
        let resp = bounded("GET stream", resp).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp
    }
}

/// Reads the stream until `until` appears (or 10 s pass): the bytes the agent got.
async fn read_stream(mut resp: reqwest::Response, until: &str) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = resp.chunk().await {
            got.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&got).contains(until) {
                return;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The details of the task's `secret.echo_redacted` events once there are at least `n`.
/// The task's `secret.echo_redacted` events: in its trail, and (from a remote gateway) those
/// bound to no decision, such as the GET stream's, which the control plane keeps out of any
/// task's trail and records with the task they claim.
async fn echoes(admin: &mandate_client::Client, task: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} secret.echo_redacted events"), Duration::from_secs(10), || async {
        let all = admin.audit_events(&[("kind", "secret.echo_redacted".to_owned()), ("limit", "10000".to_owned())]).await.unwrap().events;
        let e: Vec<Value> = all.into_iter().filter(|e| e["task"] == task || e["details"]["claimed_task"] == task).collect();
        (e.len() >= n).then_some(e)
    })
    .await
}

fn counted(metrics: &str, upstream: &str) -> u64 {
    let key = format!("mandate_secret_echo_redacted_total{{upstream=\"{upstream}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Everything the agent can get from both upstreams, through the gateway at `gw`: no form of
/// either secret in any of it. Returns the number of answers that held one.
async fn exercise(gw: &str, mandate: &str) -> usize {
    let mcp_forms = forms(&[MCP_SECRET, &format!("Bearer {MCP_SECRET}")]);
    let basic = format!("Basic {}", STANDARD.encode(format!("bot:{API_SECRET}")));
    let api_forms = forms(&[API_SECRET, &basic]);

    let s = Session::open(format!("{gw}/mcp/echo"), mandate.to_owned()).await;
    let stream = s.stream().await;
    let mut answers = 0;
    for tool in TOOLS {
        let got = s.call(tool).await;
        assert!(got.contains("[redacted]"), "{tool}: nothing was redacted:\n{got}");
        assert_clean(tool, &got, &mcp_forms);
        // Decoded, too: no JSON escape hides it.
        let v: Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{tool}: {e}: {got}"));
        assert_clean(tool, &v.to_string(), &mcp_forms);
        if tool == "echo.error" {
            assert_eq!(v["result"]["isError"], true, "{v}");
        }
        answers += 1;
    }
    // On the session's GET stream, written by the server in 7-byte pieces.
    let sent = s.call("echo.stream").await;
    assert!(sent.contains("sent"), "{sent}");
    let streamed = read_stream(stream, "again").await;
    assert!(streamed.contains("notifications/message") && streamed.contains("[redacted]"), "{streamed}");
    assert_clean("GET stream", &streamed, &mcp_forms);
    answers += 1;

    // The HTTP API: JSON body, text body, response headers.
    let http = reqwest::Client::new();
    for path in ["/json/x", "/text/x"] {
        let resp = bounded(path, http.get(format!("{gw}/api/api{path}")).bearer_auth(mandate).send()).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let headers = format!("{:?}", resp.headers());
        assert!(resp.headers()["x-echo"] == "[redacted]", "{headers}");
        assert_clean(&format!("{path} headers"), &headers, &api_forms);
        let body = resp.text().await.unwrap();
        assert!(body.contains("[redacted]"), "{body}");
        assert_clean(path, &body, &api_forms);
        if path.starts_with("/json") {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_clean(path, &v.to_string(), &api_forms);
        }
        answers += 1;
    }
    answers
}

async fn check_evidence(admin: &mandate_client::Client, task: &str, answers: usize, metrics: &str) {
    let events = echoes(admin, task, answers).await;
    let all = serde_json::to_string(&events).unwrap();
    assert_clean("the evidence", &all, &forms(&[MCP_SECRET, API_SECRET]));
    for e in &events {
        let d = &e["details"];
        assert!(d["matches"].as_u64().unwrap() >= 1, "{e}");
        assert!(!d["encodings"].as_array().unwrap().is_empty(), "{e}");
        assert_eq!(d["secret"]["version"], 1, "{e}");
        let (name, upstream) = (d["secret"]["name"].as_str().unwrap(), d["upstream"].as_str().unwrap());
        assert!(matches!((name, upstream), ("echo-token", "echo") | ("api-key", "api")), "{e}");
    }
    let tool = |t: &str| events.iter().find(|e| e["details"]["tool"] == t).unwrap_or_else(|| panic!("no echo event for {t}: {all}"));
    for t in TOOLS {
        let d = &tool(t)["details"];
        assert!(d["decision_id"].as_str().unwrap().starts_with("dec_"), "{d}");
        assert_eq!(d["method"], "tools/call");
    }
    let enc =
        |t: &str| tool(t)["details"]["encodings"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert!(enc("echo.base64").contains(&"base64".to_owned()), "{:?}", enc("echo.base64"));
    assert!(enc("echo.percent").contains(&"percent".to_owned()), "{:?}", enc("echo.percent"));
    assert!(enc("echo.hex").contains(&"hex".to_owned()), "{:?}", enc("echo.hex"));
    assert_eq!(tool("echo.error")["details"]["place"], "result", "a tool error is a result with `isError`");
    assert!(events.iter().any(|e| e["details"]["place"] == "stream"), "{all}");
    assert!(events.iter().any(|e| e["details"]["tool"] == "/json/x" && e["details"]["place"] == "headers and body"), "{all}");
    assert!(counted(metrics, "echo") >= 8, "{metrics}");
    assert!(counted(metrics, "api") >= 2, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_never_reach_the_agent_through_the_embedded_gateway() {
    let (mcp, api) = (start_upstream("echo_server.py", &["--mcp"]), start_upstream("echo_server.py", &["--http"]));
    let (server, _cfg) = serve_with_gateway(&format!("[gateway]\n{}", config(&mcp.url, &api.url)), Vec::new());
    let admin = server.admin();
    admin.put_secret("echo-token", MCP_SECRET, "echo server bearer").await.unwrap();
    admin.put_secret("api-key", API_SECRET, "echo api password").await.unwrap();
    let agent = register_agent(&admin, "echo-bot", &[]).await;
    let actions = actions();
    let (mandate, task) = open_task(&server, &agent, &intent(&actions.iter().map(String::as_str).collect::<Vec<_>>())).await;

    let answers = exercise(&server.url, &mandate).await;
    let metrics = eventually("the metric", Duration::from_secs(10), || async {
        let m = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
        (counted(&m, "api") >= 2).then_some(m)
    })
    .await;
    check_evidence(&admin, &task, answers, &metrics).await;
    assert!(!server.log().contains(MCP_SECRET) && !server.log().contains(API_SECRET), "a secret is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_secrets_never_reach_the_agent_through_the_remote_gateway() {
    let (mcp, api) = (start_upstream("echo_server.py", &["--mcp"]), start_upstream("echo_server.py", &["--http"]));
    let master = MasterKey::generate().to_base64().to_string();
    let server = Server::start_with(Options { envs: vec![("MANDATE_MASTER_KEY".into(), master.clone())], ..Default::default() });
    let admin = server.admin();
    admin.put_secret("echo-token", MCP_SECRET, "echo server bearer").await.unwrap();
    admin.put_secret("api-key", API_SECRET, "echo api password").await.unwrap();
    // The gateway's own key, granted the two secrets it injects.
    let id = GatewayIdentity::register(&admin, "edge", &["echo-token", "api-key"]).await;
    let key_file = id.key_path();
    let gw = GatewayProcess::start(
        &config(&mcp.url, &api.url),
        &[("MANDATE_URL", server.url.as_str()), ("MANDATE_TOKEN", id.token.as_str()), ("MANDATE_GATEWAY_KEY_FILE", key_file.as_str())],
    );
    let agent = register_agent(&admin, "echo-bot", &[]).await;
    let actions = actions();
    let (mandate, task) = open_task(&server, &agent, &intent(&actions.iter().map(String::as_str).collect::<Vec<_>>())).await;

    let answers = exercise(&gw.url, &mandate).await;
    // The remote gateway has no `/metrics`: the control plane counts the events it delivers.
    let metrics = eventually("the metric", Duration::from_secs(15), || async {
        let m = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
        (counted(&m, "api") >= 2 && counted(&m, "echo") >= 8).then_some(m)
    })
    .await;
    check_evidence(&admin, &task, answers, &metrics).await;
    assert!(!gw.log().contains(MCP_SECRET) && !gw.log().contains(API_SECRET), "a secret is in the gateway's log");
}
