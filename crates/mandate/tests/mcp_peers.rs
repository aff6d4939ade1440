#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

//! Real MCP peers on both sides of the gateway: a client cannot tell the gateway (embedded in the
//! real `mandate serve`) from a direct connection to the server behind it.
//!
//! - The upstream is `@modelcontextprotocol/server-everything` 2026.8.31, the MCP reference
//!   server that exercises every feature: over streamable HTTP (its own transport, bound to
//!   127.0.0.1 by `tests/js/everything_http.mjs`, one process for the whole test binary) and as
//!   a stdio upstream (its own `stdio` CLI, spawned by the gateway).
//! - The clients are the official SDKs: TypeScript (`@modelcontextprotocol/sdk` 1.32.2,
//!   `tests/js/feature_client.mjs`) and Python (`mcp` 2.3.0, `tests/py/feature_client.py`). Each
//!   exercises every feature (capabilities, listings, a tool call, progress, logging with
//!   `logging/setLevel`, sampling, elicitation and roots asked by the server during a call or on
//!   the GET stream, completions, subscriptions and `notifications/resources/updated`, a prompt,
//!   a resource, tasks and an elicitation delivered on the stream of `tasks/result`,
//!   cancellation; the TypeScript one also whether a call's SSE stream carries event ids to
//!   resume from) and prints one normalized transcript. Each is run directly
//!   and through the gateway, and the transcripts must be equal feature by feature; a failure
//!   prints every differing path.
//! - The MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.13, the newest release
//!   that runs on Node.js 20; see `tests/js/README.md`) runs its server scenarios once directly
//!   and once through the gateway: every scenario that passes directly must pass through the
//!   gateway. Its CLI cannot send headers, so a small loopback proxy ([`BearerProxy`]) in front
//!   of the gateway adds `Authorization: Bearer <mandate>` to every request (and changes
//!   nothing else, `Host` included). The suite is written against its own reference server,
//!   which its package does not ship; against server-everything some scenarios pass, and those
//!   are the ones compared. Results go to temporary directories.
//! - Refusals on the newly decided paths, each observed on a recording proxy between the gateway
//!   and the upstream (the kit's `Proxy`): an out-of-intent `completion/complete` (a prompt the
//!   intent does not allow, a resource template outside its resources), a `resources/subscribe`
//!   to a resource outside the intent, and sampling and elicitation requests that the intent
//!   does not list (`UPSTREAM.sampling.createMessage`, `UPSTREAM.elicitation.create`): the client's
//!   handlers are never invoked and the upstream gets an error answer; likewise the roots the
//!   server asks for on the GET stream (`UPSTREAM.roots.list`). Each refusal test also
//!   runs the same feature with a mandate that allows it, so "never received" is measured on a
//!   path that does reach the upstream when allowed.
//!
//! Node.js, npm and the pinned packages come from `scripts/test` (`npm ci` in `tests/js`); a
//! test that finds them missing fails and says so. Every await is bounded, every server listens
//! on 127.0.0.1, every process is killed on drop (the shared server-everything, which no test
//! owns, exits when the test binary does).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::gateway::{Proxy, Seen, bounded, serve_router, serve_with_gateway, toml_str};
use common::python::{python_mcp, script};
use common::{Server, TestAgent, announced, open_task, register_agent};
use serde_json::{Value, json};

/// The gateway's name for server-everything over HTTP, and over stdio.
const UP: &str = "ev";
const UP_STDIO: &str = "evs";

/// How long one client run may take, all features together (each step bounds itself at 15 s).
const CLIENT_RUN: Duration = Duration::from_secs(240);
/// How long one conformance run may take, all scenarios together.
const CONFORMANCE_RUN: Duration = Duration::from_secs(240);

/// The pinned packages `tests/js/node_modules` must hold.
const JS_PINS: [(&str, &str); 3] = [
    ("@modelcontextprotocol/server-everything", "2026.8.31"),
    ("@modelcontextprotocol/sdk", "1.32.2"),
    ("@modelcontextprotocol/conformance", "0.1.13"),
];

/// server-everything's tools (the conditional ones included), and the tools the conformance
/// scenarios call (their reference server's; server-everything answers that it has none).
const EVERYTHING_TOOLS: [&str; 19] = [
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-roots-list",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "gzip-file-as-resource",
    "simulate-research-query",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "trigger-elicitation-request",
    "trigger-elicitation-request-async",
    "trigger-long-running-operation",
    "trigger-sampling-request",
    "trigger-sampling-request-async",
    "trigger-url-elicitation",
];
const CONFORMANCE_TOOLS: [&str; 15] = [
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "test_client_elicitation_defaults",
    "test_reconnection",
    "json_schema_2020_12_tool",
];
/// What the server asks of the client, decided under these action names.
const SERVER_REQUESTS: [&str; 3] = ["sampling.createMessage", "elicitation.create", "roots.list"];
/// Task methods, in case the gateway decides them under their own names.
const TASK_ACTIONS: [&str; 4] = ["tasks.get", "tasks.result", "tasks.list", "tasks.cancel"];

// ---------------------------------------------------------------------------------------------
// Node.js and the pinned packages
// ---------------------------------------------------------------------------------------------

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("js")
}

/// The `node` on PATH, once the pinned packages are checked to be installed; panics saying to
/// run `scripts/test` otherwise.
fn node() -> PathBuf {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match NODE.get_or_init(find_node) {
        Ok(p) => p.clone(),
        Err(why) => panic!(
            "the MCP peer tests need Node.js and the packages pinned in crates/mandate/tests/js: {why}\n\
             run scripts/test (it installs Node.js and npm and runs `npm ci` in crates/mandate/tests/js), \
             or `npm ci` in crates/mandate/tests/js yourself"
        ),
    }
}

fn find_node() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let node = std::env::split_paths(&path).map(|d| d.join("node")).find(|p| p.is_file()).ok_or("no `node` on PATH")?;
    let out = Command::new(&node).arg("--version").output().map_err(|e| format!("{} does not run: {e}", node.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let major: u32 = version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < 18 {
        return Err(format!("{} is Node.js {version}; the pinned packages need 18 or newer", node.display()));
    }
    for (package, want) in JS_PINS {
        let manifest = js_dir().join("node_modules").join(package).join("package.json");
        let text = std::fs::read_to_string(&manifest).map_err(|e| format!("{package} is not installed ({}: {e})", manifest.display()))?;
        let got: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
        if got["version"] != want {
            return Err(format!("{package} is {} in node_modules, the lock pins {want}", got["version"]));
        }
    }
    Ok(node)
}

fn everything_cli() -> PathBuf {
    js_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

fn conformance_cli() -> PathBuf {
    js_dir().join("node_modules/@modelcontextprotocol/conformance/dist/index.js")
}

// ---------------------------------------------------------------------------------------------
// server-everything over streamable HTTP, once per test binary
// ---------------------------------------------------------------------------------------------

/// server-everything on 127.0.0.1, shared by the tests of this binary (it keeps each client's
/// state in its own session). It exits when this process does (`everything_http.mjs` watches
/// for its parent to go).
struct Everything {
    /// `http://127.0.0.1:PORT/mcp`
    url: String,
    /// `http://127.0.0.1:PORT`
    base: String,
    _child: Mutex<Child>,
}

fn everything() -> &'static Everything {
    static EVERYTHING: OnceLock<Everything> = OnceLock::new();
    EVERYTHING.get_or_init(|| {
        // Its stderr (errors it logs) goes to one file, kept for a look after the last run.
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mcp-peers-server-everything.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut child = Command::new(node())
            .arg(js_dir().join("everything_http.mjs"))
            .current_dir(js_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start server-everything");
        let Some(url) = announced(child.stdout.take().unwrap(), "listening on ", Duration::from_secs(60)) else {
            let _ = child.kill();
            let status = child.wait();
            panic!("server-everything did not start ({status:?}):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        let base = url.trim_end_matches("/mcp").to_owned();
        Everything { url, base, _child: Mutex::new(child) }
    })
}

/// `node .../server-everything/dist/index.js stdio`, as a stdio upstream's `command`.
fn everything_stdio_command() -> Vec<String> {
    vec![node().display().to_string(), everything_cli().display().to_string(), "stdio".to_owned()]
}

// ---------------------------------------------------------------------------------------------
// The feature clients
// ---------------------------------------------------------------------------------------------

/// Runs a client script to its end (bounded) and parses the one JSON line it printed.
async fn transcript(mut cmd: tokio::process::Command, what: &str) -> Value {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out = match tokio::time::timeout(CLIENT_RUN, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("{what} did not finish within {CLIENT_RUN:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().rev().find(|l| !l.trim().is_empty()).and_then(|l| serde_json::from_str::<Value>(l).ok());
    match json {
        Some(v) if out.status.success() && v["features"].is_object() => v,
        _ => panic!("{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
}

/// The TypeScript SDK client against `url`, with `bearer` (through `MCP_BEARER`, so it is not
/// on a command line), running `only` the named features (all when empty).
async fn js_client(url: &str, bearer: Option<&str>, only: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(node());
    cmd.arg(js_dir().join("feature_client.mjs")).arg("--url").arg(url).current_dir(js_dir()).env_remove("MCP_BEARER");
    if !only.is_empty() {
        cmd.arg("--only").arg(only.join(","));
    }
    if let Some(b) = bearer {
        cmd.env("MCP_BEARER", b);
    }
    transcript(cmd, &format!("feature_client.mjs --url {url}")).await
}

/// The Python SDK client, likewise.
async fn py_client(url: &str, bearer: Option<&str>, only: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(python_mcp());
    cmd.arg(script("feature_client.py"))
        .arg("--url")
        .arg(url)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("MCP_BEARER");
    if !only.is_empty() {
        cmd.arg("--only").arg(only.join(","));
    }
    if let Some(b) = bearer {
        cmd.env("MCP_BEARER", b);
    }
    transcript(cmd, &format!("feature_client.py --url {url}")).await
}

/// Both clients' transcripts straight against server-everything over HTTP, once per test
/// binary: (TypeScript, Python).
async fn direct_transcripts() -> &'static (Value, Value) {
    static DIRECT: tokio::sync::OnceCell<(Value, Value)> = tokio::sync::OnceCell::const_new();
    DIRECT
        .get_or_init(|| async {
            let url = &everything().url;
            let (js, py) = tokio::join!(js_client(url, None, &[]), py_client(url, None, &[]));
            // The baseline must itself be whole: a feature that fails directly proves nothing.
            for t in [&js, &py] {
                assert_eq!(t["connect"], json!({"ok": true}), "direct: {t}");
                let failed: Vec<&String> =
                    t["features"].as_object().unwrap().iter().filter(|(_, v)| v.get("error").is_some()).map(|(k, _)| k).collect();
                assert!(failed.is_empty(), "{} direct: features failed against server-everything itself: {failed:?}\n{t:#}", t["sdk"]);
            }
            (js, py)
        })
        .await
}

// ---------------------------------------------------------------------------------------------
// Comparing transcripts
// ---------------------------------------------------------------------------------------------

fn short(v: Option<&Value>) -> String {
    let s = match v {
        None => "<missing>".to_owned(),
        Some(v) => v.to_string(),
    };
    if s.chars().count() > 400 { format!("{}…", s.chars().take(400).collect::<String>()) } else { s }
}

/// Every path where `a` and `b` differ, with both values.
fn json_diff(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                json_diff(&format!("{path}.{k}"), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), Some(p), Some(q), out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("  {path}\n      direct:  {}\n      gateway: {}", short(a), short(b))),
    }
}

/// The features whose transcripts differ, each with its differing paths.
fn differences(direct: &Value, through: &Value) -> BTreeMap<String, Vec<String>> {
    let mut by_feature = BTreeMap::new();
    for top in ["connect", "handlers"] {
        let mut d = Vec::new();
        json_diff(top, direct.get(top), through.get(top), &mut d);
        if !d.is_empty() {
            by_feature.insert(top.to_owned(), d);
        }
    }
    let empty = serde_json::Map::new();
    let (a, b) = (direct["features"].as_object().unwrap_or(&empty), through["features"].as_object().unwrap_or(&empty));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let mut d = Vec::new();
        json_diff(&format!("features.{name}"), a.get(name), b.get(name), &mut d);
        if !d.is_empty() {
            by_feature.insert(name.clone(), d);
        }
    }
    by_feature
}

/// A readable report of `differences`, or `None` when the transcripts are equal.
fn report(label: &str, direct: &Value, through: &Value) -> Option<String> {
    let diffs = differences(direct, through);
    if diffs.is_empty() {
        return None;
    }
    let mut s = format!("{label}: {} of the features differ through the gateway: {:?}\n", diffs.len(), diffs.keys().collect::<Vec<_>>());
    for (feature, lines) in &diffs {
        s.push_str(&format!("- {feature}\n{}\n", lines.join("\n")));
    }
    Some(s)
}

// ---------------------------------------------------------------------------------------------
// The gateway
// ---------------------------------------------------------------------------------------------

enum Target<'a> {
    Url(&'a str),
    Stdio(Vec<String>),
}

/// One `[[gateway.upstream]]` for server-everything: every tool (its own and the conformance
/// suite's) a read at `internal` (the server's hints make the non-read-only ones writes);
/// prompts, resources and the server's requests to the client (sampling, elicitation, roots)
/// reads at `internal`. Unconfigured, those are `restricted`, above any `internal` intent.
fn upstream_config(name: &str, target: &Target) -> String {
    let mut s = format!("[[gateway.upstream]]\nname = \"{name}\"\ntype = \"mcp\"\n");
    match target {
        Target::Url(u) => s.push_str(&format!("url = {}\n", toml_str(u))),
        Target::Stdio(cmd) => {
            s.push_str(&format!("command = [{}]\n", cmd.iter().map(|a| toml_str(a)).collect::<Vec<_>>().join(", ")));
        }
    }
    let mut tools: BTreeSet<&str> = EVERYTHING_TOOLS.iter().chain(CONFORMANCE_TOOLS.iter()).copied().collect();
    tools.extend(["prompts.get", "resources.read"]);
    tools.extend(SERVER_REQUESTS);
    for t in tools {
        s.push_str(&format!("[gateway.upstream.tools.{}]\nkind = \"read\"\nclassification = \"internal\"\n", toml_str(t)));
    }
    s
}

/// `mandate serve` with the gateway in front of `upstreams` (name, target).
fn gateway(upstreams: &[(&str, Target)]) -> (Server, tempfile::TempDir) {
    let mut config = String::from("[gateway]\napproval_wait_secs = 0\n");
    for (name, target) in upstreams {
        config.push_str(&upstream_config(name, target));
    }
    serve_with_gateway(&config, Vec::new())
}

/// Every action the scenarios use on upstream `up`: the tools, prompts, resources, what the
/// server asks of the client, and the task methods.
fn all_actions(up: &str) -> Vec<String> {
    let mut names: BTreeSet<&str> = EVERYTHING_TOOLS.iter().chain(CONFORMANCE_TOOLS.iter()).copied().collect();
    names.extend(["prompts.get", "resources.read"]);
    names.extend(SERVER_REQUESTS);
    names.extend(TASK_ACTIONS);
    names.into_iter().map(|n| format!("{up}.{n}")).collect()
}

fn intent_of(actions: &[String], resources: &[&str]) -> Value {
    json!({
        "type": "agent_task",
        "purpose": "Exercise every MCP feature of the reference server",
        "actions": actions,
        "resources": resources,
        "max_classification": "internal",
        "lifetime_seconds": 600
    })
}

/// An agent that may write (server-everything marks most of its tools not read-only).
async fn writer(server: &Server) -> TestAgent {
    register_agent(&server.admin(), "peer-bot", &[("writer", "true")]).await
}

/// A mandate for `actions` on `resources`.
async fn mandate(server: &Server, agent: &TestAgent, actions: &[String], resources: &[&str]) -> String {
    open_task(server, agent, &intent_of(actions, resources)).await.0
}

// ---------------------------------------------------------------------------------------------
// Transcripts: directly and through the gateway
// ---------------------------------------------------------------------------------------------

async fn compare_through(gateway_url: &str, mandate: &str, what: &str) {
    let direct = direct_transcripts().await;
    let (js, py) = tokio::join!(js_client(gateway_url, Some(mandate), &[]), py_client(gateway_url, Some(mandate), &[]));
    let reports: Vec<String> =
        [report(&format!("TypeScript SDK, {what}"), &direct.0, &js), report(&format!("Python SDK, {what}"), &direct.1, &py)]
            .into_iter()
            .flatten()
            .collect();
    assert!(reports.is_empty(), "{}", reports.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_cannot_tell_the_gateway_from_server_everything_over_http() {
    let ev = everything();
    let upstream = Proxy::start(&ev.base, None).await;
    let (server, _cfg) = gateway(&[(UP, Target::Url(&format!("{}/mcp", upstream.url)))]);
    let agent = writer(&server).await;
    let mandate = mandate(&server, &agent, &all_actions(UP), &["*"]).await;
    compare_through(&format!("{}/mcp/{UP}", server.url), &mandate, "upstream over streamable HTTP").await;

    // What the upstream was sent: each client's abandoned call was cancelled upstream under the
    // id the gateway gave that call there, and the mandate never left the gateway.
    let seen = upstream.seen();
    let messages: Vec<Value> = seen
        .iter()
        .filter(|s| s.method == "POST")
        .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok())
        .flat_map(|v| if let Value::Array(a) = v { a } else { vec![v] })
        .collect();
    let abandoned: Vec<&Value> = messages
        .iter()
        .filter(|m| {
            m["method"] == "tools/call"
                && m["params"]["name"] == "trigger-long-running-operation"
                && m["params"]["arguments"]["duration"] == 60
        })
        .map(|m| &m["id"])
        .collect();
    let cancelled: Vec<&Value> =
        messages.iter().filter(|m| m["method"] == "notifications/cancelled").map(|m| &m["params"]["requestId"]).collect();
    assert_eq!(abandoned.len(), 2, "one abandoned call per client: {:?}", methods(&seen));
    for id in &abandoned {
        assert!(cancelled.contains(id), "the call the gateway sent upstream as {id} was not cancelled there: cancelled {cancelled:?}");
    }
    assert!(seen.iter().all(|s| !s.contains(&mandate)), "the mandate went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_cannot_tell_the_gateway_from_server_everything_over_stdio() {
    let (server, _cfg) = gateway(&[(UP_STDIO, Target::Stdio(everything_stdio_command()))]);
    let agent = writer(&server).await;
    let mandate = mandate(&server, &agent, &all_actions(UP_STDIO), &["*"]).await;
    // The baseline is the same server over HTTP: a client speaks HTTP either way.
    compare_through(&format!("{}/mcp/{UP_STDIO}", server.url), &mandate, "upstream over stdio").await;
}

// ---------------------------------------------------------------------------------------------
// The conformance suite
// ---------------------------------------------------------------------------------------------

/// A loopback proxy to `target` that adds `Authorization: Bearer <token>` to every request and
/// forwards everything else as it came (method, path, query, headers, `Host` included, body),
/// streaming answers back. For clients that cannot send headers. Stops when dropped.
struct BearerProxy {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct BearerState {
    target: String,
    authorization: String,
    http: reqwest::Client,
}

impl BearerProxy {
    async fn start(target: &str, token: &str) -> BearerProxy {
        let state = BearerState {
            target: target.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {token}"),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        };
        let (url, task) = serve_router(axum::Router::new().fallback(bearer_forward).with_state(state)).await;
        BearerProxy { url, task }
    }
}

impl Drop for BearerProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bearer_forward(State(st): State<BearerState>, req: Request) -> Response {
    const HOP: [&str; 5] = ["content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"];
    let (parts, body) = req.into_parts();
    let body = bounded("request body", axum::body::to_bytes(body, 64 * 1024 * 1024)).await.unwrap();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut out = st.http.request(parts.method.clone(), format!("{}{path_and_query}", st.target)).body(body);
    for (k, v) in &parts.headers {
        if !HOP.contains(&k.as_str()) && k != "authorization" {
            out = out.header(k, v);
        }
    }
    out = out.header("authorization", &st.authorization);
    let resp = match bounded("proxied request", out.send()).await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    };
    let mut builder = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !HOP.contains(&k.as_str()) {
            builder = builder.header(k, v);
        }
    }
    builder.body(Body::from_stream(resp.bytes_stream())).unwrap()
}

/// One scenario's checks: (id, status, error message).
type Checks = Vec<(String, String, String)>;

/// Runs every server scenario of the conformance suite against `url`, results in `dir`; each
/// scenario's checks by scenario name.
async fn conformance(url: &str, dir: &Path) -> BTreeMap<String, Checks> {
    let mut cmd = tokio::process::Command::new(node());
    cmd.arg(conformance_cli())
        .args(["server", "--suite", "all", "--url", url, "--output-dir"])
        .arg(dir)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    // Its exit status counts failed scenarios; the checks are what is compared.
    let out = match tokio::time::timeout(CONFORMANCE_RUN, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("the conformance suite against {url} did not finish within {CONFORMANCE_RUN:?}"),
    };
    let mut scenarios = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let file = entry.path().join("checks.json");
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let name = scenario_name(&entry.file_name().to_string_lossy());
        let checks: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let checks = checks
            .iter()
            .map(|c| {
                let message = c["errorMessage"].as_str().map(str::to_owned).unwrap_or_else(|| short(c.get("details")));
                (c["id"].as_str().unwrap_or("").to_owned(), c["status"].as_str().unwrap_or("").to_owned(), message)
            })
            .collect();
        scenarios.insert(name, checks);
    }
    assert!(
        !scenarios.is_empty(),
        "the conformance suite against {url} wrote no results ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    scenarios
}

/// `server-NAME-2026-12-07T20-36-20-596Z` → `NAME`.
fn scenario_name(dir: &str) -> String {
    let s = dir.strip_prefix("server-").unwrap_or(dir);
    let b = s.as_bytes();
    let stamp = (0..b.len()).find(|&i| {
        b.len() >= i + 12 && b[i] == b'-' && b[i + 1..i + 5].iter().all(u8::is_ascii_digit) && b[i + 5] == b'-' && b[i + 11] == b'T'
    });
    stamp.map_or(s, |i| &s[..i]).to_owned()
}

/// A scenario passes when it has checks and none of them failed.
fn passes(checks: &Checks) -> bool {
    !checks.is_empty() && checks.iter().all(|(_, status, _)| status != "FAILURE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_scenarios_that_pass_directly_pass_through_the_gateway() {
    node();
    let ev = everything();
    let (server, _cfg) = gateway(&[(UP, Target::Url(&ev.url))]);
    let agent = writer(&server).await;
    let mandate = mandate(&server, &agent, &all_actions(UP), &["*"]).await;
    let front = BearerProxy::start(&server.url, &mandate).await;
    let (direct_dir, gateway_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let through_url = format!("{}/mcp/{UP}", front.url);
    let (direct, through) = tokio::join!(conformance(&ev.url, direct_dir.path()), conformance(&through_url, gateway_dir.path()));

    let passing: Vec<&String> = direct.iter().filter(|(_, c)| passes(c)).map(|(n, _)| n).collect();
    assert!(passing.len() >= 5, "too few scenarios pass against server-everything itself to compare anything: {direct:#?}");
    let mut failures = Vec::new();
    for name in &passing {
        match through.get(*name) {
            None => failures.push(format!("- {name}: no result through the gateway")),
            Some(checks) if !passes(checks) => {
                let failed: Vec<String> =
                    checks.iter().filter(|(_, s, _)| s == "FAILURE").map(|(id, _, m)| format!("    {id}: {m}")).collect();
                failures.push(format!("- {name}:\n{}", failed.join("\n")));
            }
            Some(_) => {}
        }
    }
    let also: Vec<&String> = through.iter().filter(|(n, c)| passes(c) && !passing.contains(n)).map(|(n, _)| n).collect();
    eprintln!("conformance: {} scenarios pass directly: {passing:?}; through the gateway also: {also:?}", passing.len());
    assert!(
        failures.is_empty(),
        "{} of the {} conformance scenarios that pass against server-everything fail through the gateway:\n{}",
        failures.len(),
        passing.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals on the new paths, observed between the gateway and the upstream
// ---------------------------------------------------------------------------------------------

/// The gateway in front of server-everything through a recording proxy, a writer agent.
async fn observed_gateway() -> (Server, tempfile::TempDir, Proxy, TestAgent) {
    let ev = everything();
    let proxy = Proxy::start(&ev.base, None).await;
    let (server, cfg) = gateway(&[(UP, Target::Url(&format!("{}/mcp", proxy.url)))]);
    let agent = writer(&server).await;
    (server, cfg, proxy, agent)
}

/// The JSON-RPC methods of the requests the upstream received.
fn methods(seen: &[Seen]) -> Vec<String> {
    seen.iter().filter_map(Seen::rpc_method).collect()
}

fn count(seen: &[Seen], method: &str) -> usize {
    methods(seen).iter().filter(|m| *m == method).count()
}

/// The reason of a refusal recorded in a transcript (`{"error": {"code", "message", "reason"}}`).
fn refusal(part: &Value) -> (Option<i64>, String) {
    (part["error"]["code"].as_i64(), part["error"]["reason"].as_str().unwrap_or("").to_owned())
}

fn tools_and(up: &str, more: &[&str]) -> Vec<String> {
    let mut names: BTreeSet<&str> = EVERYTHING_TOOLS.iter().copied().collect();
    names.extend(more);
    names.into_iter().map(|n| format!("{up}.{n}")).collect()
}

/// Resources an intent without the dynamic ones allows: tools, prompts, the static documents.
const STATIC_ONLY: [&str; 3] = ["tool:*", "prompt:*", "mcp_resource:demo://resource/static/*"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_intent_completion_never_reaches_the_upstream() {
    let (server, _cfg, proxy, agent) = observed_gateway().await;
    let url = format!("{}/mcp/{UP}", server.url);
    // No `ev.prompts.get`, and no dynamic resources: neither the prompt nor the template may be
    // completed.
    let narrow = mandate(&server, &agent, &tools_and(UP, &["resources.read", "roots.list"]), &STATIC_ONLY).await;
    let t = js_client(&url, Some(&narrow), &["completion"]).await;
    assert_eq!(t["connect"], json!({"ok": true}), "{t:#}");
    let c = &t["features"]["completion"];
    assert_eq!(refusal(&c["prompt"]), (Some(-32001), "action_outside_intent".to_owned()), "{c:#}");
    assert_eq!(refusal(&c["prompt_with_context"]), (Some(-32001), "action_outside_intent".to_owned()), "{c:#}");
    assert_eq!(refusal(&c["resource_template"]), (Some(-32001), "resource_outside_intent".to_owned()), "{c:#}");
    let refused = proxy.seen();
    assert_eq!(count(&refused, "completion/complete"), 0, "a refused completion reached the upstream: {:?}", methods(&refused));

    // Allowed, the same completions do reach it: the refusal above was measured on a live path.
    let wide = mandate(&server, &agent, &all_actions(UP), &["*"]).await;
    let t = js_client(&url, Some(&wide), &["completion"]).await;
    let c = &t["features"]["completion"];
    assert_eq!(c["prompt"]["completion"]["values"], json!(["Engineering"]), "{c:#}");
    assert_eq!(c["resource_template"]["completion"]["values"], json!(["7"]), "{c:#}");
    assert_eq!(count(&proxy.seen(), "completion/complete"), 3, "{:?}", methods(&proxy.seen()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_outside_the_intent_never_reaches_the_upstream() {
    let (server, _cfg, proxy, agent) = observed_gateway().await;
    let url = format!("{}/mcp/{UP}", server.url);
    let narrow = mandate(&server, &agent, &tools_and(UP, &["prompts.get", "resources.read", "roots.list"]), &STATIC_ONLY).await;
    let t = js_client(&url, Some(&narrow), &["subscribe"]).await;
    assert_eq!(t["connect"], json!({"ok": true}), "{t:#}");
    let s = &t["features"]["subscribe"];
    assert_eq!(refusal(&s["subscribe"]), (Some(-32001), "resource_outside_intent".to_owned()), "{s:#}");
    let refused = proxy.seen();
    assert_eq!(count(&refused, "resources/subscribe"), 0, "a refused subscription reached the upstream: {:?}", methods(&refused));

    let wide = mandate(&server, &agent, &all_actions(UP), &["*"]).await;
    let t = js_client(&url, Some(&wide), &["subscribe"]).await;
    let s = &t["features"]["subscribe"];
    assert_eq!(s["subscribe"], json!({}), "{s:#}");
    assert_eq!(s["updated"], json!(["demo://resource/dynamic/text/1"]), "{s:#}");
    assert_eq!(count(&proxy.seen(), "resources/subscribe"), 1, "{:?}", methods(&proxy.seen()));
}

/// A JSON-RPC response (no method) with an error, as the gateway answers a server's request.
fn error_answers(seen: &[Seen]) -> Vec<Value> {
    seen.iter()
        .filter(|s| s.method == "POST")
        .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok())
        .flat_map(|v| if let Value::Array(a) = v { a } else { vec![v] })
        .filter(|m| m.get("method").is_none() && m.get("id").is_some() && m.get("error").is_some())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_and_elicitation_the_intent_does_not_list_never_reach_the_client() {
    let (server, _cfg, proxy, agent) = observed_gateway().await;
    let url = format!("{}/mcp/{UP}", server.url);
    let narrow = mandate(&server, &agent, &tools_and(UP, &["prompts.get", "resources.read", "roots.list"]), &["*"]).await;
    let t = js_client(&url, Some(&narrow), &["sampling", "elicitation"]).await;
    assert_eq!(t["connect"], json!({"ok": true}), "{t:#}");
    assert_eq!(t["handlers"]["sampling"], 0, "the client's sampling handler was asked: {t:#}");
    assert_eq!(t["handlers"]["elicitation"], 0, "the client's elicitation handler was asked: {t:#}");
    // The tool calls themselves were allowed and reached the server, which got an error answer
    // to its request instead of the client's, and says so in its result.
    let seen = proxy.seen();
    let calls: Vec<String> = seen
        .iter()
        .filter(|s| s.rpc_method().as_deref() == Some("tools/call"))
        .filter_map(|s| serde_json::from_slice::<Value>(&s.body).ok()?["params"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(calls, ["trigger-sampling-request", "trigger-elicitation-request"], "{:?}", methods(&seen));
    for f in ["sampling", "elicitation"] {
        assert_eq!(t["features"][f]["result"]["isError"], true, "{f}: the server should report the refused request: {t:#}");
    }
    let answers = error_answers(&seen);
    assert_eq!(answers.len(), 2, "the upstream should get one error answer per refused request: {answers:#?}\n{:?}", methods(&seen));
    assert!(!seen.iter().any(|s| s.contains("A sampled answer from the test client.")), "a client answer went upstream");

    // Listed in the intent, the same requests reach the client and its answers the server.
    let wide = mandate(&server, &agent, &all_actions(UP), &["*"]).await;
    let t = js_client(&url, Some(&wide), &["sampling", "elicitation"]).await;
    assert_eq!((t["handlers"]["sampling"].as_u64(), t["handlers"]["elicitation"].as_u64()), (Some(1), Some(1)), "{t:#}");
    assert_eq!(t["features"]["sampling"]["result"]["isError"], false, "{t:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_the_intent_does_not_list_never_reach_the_client() {
    let (server, _cfg, proxy, agent) = observed_gateway().await;
    let url = format!("{}/mcp/{UP}", server.url);
    // The server asks for the roots on the GET stream, outside any call, and again from a tool.
    let narrow = mandate(
        &server,
        &agent,
        &tools_and(UP, &["prompts.get", "resources.read", "sampling.createMessage", "elicitation.create"]),
        &["*"],
    )
    .await;
    let t = js_client(&url, Some(&narrow), &["roots"]).await;
    assert_eq!(t["connect"], json!({"ok": true}), "{t:#}");
    assert_eq!(t["handlers"]["roots"], false, "the client's roots handler was asked: {t:#}");
    let text = t["features"]["roots"]["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(text.contains("no roots are currently configured"), "the server should hold no roots: {t:#}");
    let seen = proxy.seen();
    assert!(!error_answers(&seen).is_empty(), "the upstream should get an error answer to its roots/list: {:?}", methods(&seen));
    assert!(!seen.iter().any(|s| s.contains("mandate-peer-root")), "the client's roots went upstream");

    let wide = mandate(&server, &agent, &all_actions(UP), &["*"]).await;
    let t = js_client(&url, Some(&wide), &["roots"]).await;
    assert_eq!(t["handlers"]["roots"], true, "{t:#}");
    assert!(proxy.seen().iter().any(|s| s.contains("mandate-peer-root")), "allowed, the client's roots should reach the upstream");
}
