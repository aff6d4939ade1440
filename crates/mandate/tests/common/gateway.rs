//! Shared setup for the gateway's end-to-end tests (`gateway_py`, `gateway_http`,
//! `gateway_remote`):
//!
//! - [`serve_with_gateway`]: the real `mandate serve` with a `[gateway]` section;
//! - [`GatewayProcess`]: the real `mandate gateway` as its own process, asking a control plane;
//! - [`GatewayIdentity`]: a remote gateway's own key (`mandate gateway keygen`) and the `pep`
//!   token of its registration;
//! - [`rmcp_connect`], [`call`], [`tool_names`]: the Rust SDK's client in either revision;
//! - [`Proxy`]: an HTTP proxy that records every request it forwards (in front of an upstream,
//!   to see exactly what the gateway sent it) and can run a hook before forwarding one;
//! - [`Recorder`]: a tiny HTTP API upstream that records what it receives and answers JSON;
//! - [`TcpRelay`]: a TCP relay that can be cut (a network partition) and moved;
//! - [`demo_tools`]: the Rust demo tool server; [`raw_status`]: one request line as written;
//! - [`eventually`], [`tool_calls`]: bounded polling, for evidence that arrives a little later.
//!
//! Every await is bounded; everything listens on 127.0.0.1.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_client::Client;
use rmcp::model::{CallToolRequestParams, ClientConfig, ProtocolVersion};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};

use super::{Options, Server, announced, log_lines};

/// Upper bound for any single step (a request, a connection, a process start).
pub const STEP: Duration = Duration::from_secs(30);

/// Awaits `fut`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

/// Polls `probe` (every 50 ms) until it answers `Some`, failing the test after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = bounded(what, probe()).await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A task intent for gateway actions (`UPSTREAM.TOOL`), on any resource, up to `internal`.
pub fn intent(actions: &[&str]) -> Value {
    json!({
        "type": "agent_task",
        "purpose": "Answer ticket T-42",
        "actions": actions,
        "resources": ["*"],
        "max_classification": "internal",
        "lifetime_seconds": 600
    })
}

/// A TOML string literal.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `mandate serve --config FILE`, where FILE holds `config` (a `[gateway]` section and
/// anything else of the serve config). The directory holding the file lives as long as the
/// returned guard.
pub fn serve_with_gateway(config: &str, envs: Vec<(String, String)>) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(Options { envs, ..Options::with_config(dir.path(), config) });
    (server, dir)
}

// ---------------------------------------------------------------------------------------------
// The gateway as its own process
// ---------------------------------------------------------------------------------------------

/// A remote gateway's identity: its private key file, made by the real `mandate gateway
/// keygen`, and its registration (the secrets it may open and its `pep` token).
pub struct GatewayIdentity {
    pub name: String,
    pub key_file: std::path::PathBuf,
    pub public_key: String,
    /// The `pep` token bound to the gateway.
    pub token: String,
    pub token_id: String,
    _dir: tempfile::TempDir,
}

impl GatewayIdentity {
    /// A key pair made by `mandate gateway keygen --out FILE`: the key file and the printed
    /// public key.
    pub fn keygen() -> (tempfile::TempDir, std::path::PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("gateway.key");
        let out = Command::new(env!("CARGO_BIN_EXE_mandate")).args(["gateway", "keygen", "--out"]).arg(&key_file).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        (dir, key_file, public)
    }

    /// A new key pair, registered as `name` with `secrets` through `admin`.
    pub async fn register(admin: &Client, name: &str, secrets: &[&str]) -> GatewayIdentity {
        let (dir, key_file, public_key) = Self::keygen();
        let req = mandate_proto::gateway::RegisterGatewayRequest {
            name: name.to_owned(),
            public_key: public_key.clone(),
            secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        };
        let r = admin.register_gateway(&req).await.unwrap();
        assert_eq!(r.gateway.public_key, public_key);
        GatewayIdentity { name: name.to_owned(), key_file, public_key, token: r.token, token_id: r.gateway.token_id, _dir: dir }
    }

    /// The gateway's private key, as its key file holds it.
    pub fn private_key(&self) -> mandate_secrets::GatewayPrivateKey {
        mandate_secrets::GatewayPrivateKey::from_base64(&std::fs::read_to_string(&self.key_file).unwrap()).unwrap()
    }

    /// The key file, as a string for `MANDATE_GATEWAY_KEY_FILE`.
    pub fn key_path(&self) -> String {
        self.key_file.display().to_string()
    }

    /// A client with the gateway's `pep` token.
    pub fn client(&self, url: &str) -> Client {
        Client::new(url, Some(self.token.clone())).unwrap()
    }
}

/// `mandate gateway --config FILE --listen 127.0.0.1:0`; killed on drop.
pub struct GatewayProcess {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// `mandate gateway --config DIR/gateway.toml --listen 127.0.0.1:0` (the file holding
    /// `config`), with none of this process's `MANDATE_*` variables, `MANDATE_LOG=log` if
    /// given, then `envs`; stdin closed, stdout and stderr piped.
    fn command(config: &str, log: Option<&str>, envs: &[(&str, &str)]) -> (tempfile::TempDir, Command) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mandate"));
        cmd.arg("gateway").arg("--config").arg(&path).args(["--listen", "127.0.0.1:0"]);
        for (k, _) in std::env::vars() {
            if k.starts_with("MANDATE_") {
                cmd.env_remove(k);
            }
        }
        if let Some(level) = log {
            cmd.env("MANDATE_LOG", level);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        (dir, cmd)
    }

    /// Starts the gateway with `config` (top-level gateway tables) and exactly the `MANDATE_*`
    /// variables in `envs` (none is inherited), and waits for its `listening on` line.
    pub fn start(config: &str, envs: &[(&str, &str)]) -> GatewayProcess {
        let (dir, mut cmd) = Self::command(config, Some("info"), envs);
        let mut child = cmd.spawn().expect("start mandate gateway");
        log_lines(child.stderr.take().unwrap(), dir.path().join("gateway.log"));
        let Some(url) = announced(child.stdout.take().unwrap(), "mandate gateway: listening on ", Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
            panic!("mandate gateway did not start:\n{log}");
        };
        GatewayProcess { url, child: Some(child), dir }
    }

    /// Starts the gateway as [`GatewayProcess::start`] does, expecting it to refuse to start:
    /// answers its exit status and what it wrote (stdout and stderr).
    pub fn refused(config: &str, envs: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
        let (_dir, mut cmd) = Self::command(config, None, envs);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mandate gateway started although it should have refused to");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (out.status, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// What the gateway wrote to stderr so far (its application log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 30 s) for the process to exit: the graceful path.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the gateway is not running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mandate gateway did not stop within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The Rust SDK's client
// ---------------------------------------------------------------------------------------------

pub type McpClient = RunningService<RoleClient, ClientConfig>;

/// Connects rmcp to `url` with the mandate as bearer, in `protocol` (`2025-11-25`: initialize
/// and a session; `2026-07-28`: server/discover, stateless), sending `headers` on every request.
pub async fn rmcp_connect(url: &str, mandate: &str, protocol: &str, headers: &[(&str, &str)]) -> Result<McpClient, String> {
    let mut custom = HashMap::new();
    for (k, v) in headers {
        custom.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(mandate).custom_headers(custom);
    let lifecycle = match protocol {
        "2025-11-25" => ClientLifecycleMode::Initialize,
        "2026-07-28" => ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
        other => panic!("unknown revision {other}"),
    };
    let transport = StreamableHttpClientTransport::from_config(config);
    bounded("connect", ClientConfig::default().serve_with_lifecycle(transport, lifecycle)).await.map_err(|e| e.to_string())
}

/// A call's outcome: the result, or the JSON-RPC error's code and data.
pub async fn call(client: &McpClient, name: &str, args: Value) -> Result<Value, (i32, Value)> {
    let Value::Object(args) = args else { panic!("arguments must be an object") };
    match bounded(name, client.call_tool(CallToolRequestParams::new(name.to_owned()).with_arguments(args))).await {
        Ok(r) => Ok(serde_json::to_value(r).unwrap()),
        Err(rmcp::ServiceError::McpError(e)) => Err((e.code.0, e.data.unwrap_or(Value::Null))),
        Err(other) => panic!("{name}: transport failure: {other}"),
    }
}

/// `data.reason` of a refusal.
pub fn reason(data: &Value) -> &str {
    data.get("reason").and_then(Value::as_str).unwrap_or("")
}

/// The tool names `tools/list` shows, sorted.
pub async fn tool_names(client: &McpClient) -> Vec<String> {
    let mut names: Vec<String> =
        bounded("list_tools", client.list_tools(None)).await.unwrap().tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    names
}

/// One stateless (2026-07-28) JSON-RPC request straight to an MCP endpoint, with the routing
/// headers the revision requires; the HTTP status and the JSON body. No client library, so no
/// client-side cache or retry stands between the test and the gateway.
pub async fn stateless_request(url: &str, mandate: &str, method: &str, name: Option<&str>, params: Value) -> (u16, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {mandate}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method)
        .json(&body);
    if let Some(n) = name {
        req = req.header("mcp-name", n);
    }
    let resp = bounded(method, req.send()).await.unwrap();
    let status = resp.status().as_u16();
    (status, bounded(method, resp.json::<Value>()).await.unwrap_or(Value::Null))
}

/// Sends one `GET` request line exactly as written (no client normalizes `target`) to
/// `server` with the mandate as bearer, and returns the answer's status.
pub async fn raw_status(server: &Server, target: &str, mandate: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.url.strip_prefix("http://").unwrap();
    let mut stream = bounded("connect", tokio::net::TcpStream::connect(addr)).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {mandate}\r\nConnection: close\r\n\r\n");
    bounded("write", stream.write_all(req.as_bytes())).await.unwrap();
    let mut buf = Vec::new();
    bounded("read", stream.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"))
}

// ---------------------------------------------------------------------------------------------
// The Rust demo tool server
// ---------------------------------------------------------------------------------------------

/// `mandate_demo_tools` on a free loopback port, answering 401 to requests without
/// `Authorization: Bearer <require_bearer>` when that is given.
pub async fn demo_tools(require_bearer: Option<&str>) -> mandate_demo_tools::DemoToolsHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = mandate_demo_tools::DemoToolsOptions { require_bearer: require_bearer.map(str::to_owned), ..Default::default() };
    mandate_demo_tools::spawn(listener, opts).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Evidence
// ---------------------------------------------------------------------------------------------

/// The `details` of the task's `tool.call` events, in trail order, once there are `n` of them
/// (the gateway queues them; they are durable a little after the answer). Asserts exactly `n`.
pub async fn tool_calls(admin: &Client, task: &str, n: usize) -> Vec<Value> {
    let calls = eventually(&format!("{n} tool.call events for {task}"), Duration::from_secs(10), || async {
        let trail = admin.audit_trail(task).await.unwrap();
        let calls: Vec<Value> = trail.events.iter().filter(|e| e["kind"] == "tool.call").map(|e| e["details"].clone()).collect();
        (calls.len() >= n).then_some(calls)
    })
    .await;
    assert_eq!(calls.len(), n, "{calls:#?}");
    calls
}

/// Like [`tool_calls`], counting also the events a remote gateway sent for the task without a
/// decision (refused before any, e.g. while the control plane was away): the control plane
/// keeps those out of the task's trail, with the task they claim in `details.claimed_task`.
/// In trail order.
#[allow(dead_code, reason = "not every test binary uses it")]
pub async fn claimed_tool_calls(admin: &Client, task: &str, n: usize) -> Vec<Value> {
    let calls = eventually(&format!("{n} tool.call events claiming {task}"), Duration::from_secs(10), || async {
        let all = admin.audit_events(&[("kind", "tool.call".to_owned()), ("limit", "10000".to_owned())]).await.unwrap().events;
        let calls: Vec<Value> =
            all.iter().filter(|e| e["task"] == task || e["details"]["claimed_task"] == task).map(|e| e["details"].clone()).collect();
        (calls.len() >= n).then_some(calls)
    })
    .await;
    assert_eq!(calls.len(), n, "{calls:#?}");
    calls
}

/// (tool, forwarded, reason) of each call, for comparing a trail with what happened.
pub fn summary(calls: &[Value]) -> Vec<(String, bool, String)> {
    calls
        .iter()
        .map(|d| (d["tool"].as_str().unwrap().to_owned(), d["forwarded"].as_bool().unwrap(), d["reason"].as_str().unwrap().to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Recording proxy and recording HTTP upstream
// ---------------------------------------------------------------------------------------------

/// Serves `app` on a free loopback port until the task is aborted: `http://127.0.0.1:PORT` and
/// the task.
pub async fn serve_router(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// One HTTP request as a recorder or proxy received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path exactly as it came on the request line (still percent-encoded).
    pub path: String,
    pub query: Option<String>,
    /// Every header, lowercased names, in order (repeated headers appear repeatedly).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of header `name`.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The JSON-RPC method of a POSTed message.
    pub fn rpc_method(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body).ok()?.get("method")?.as_str().map(str::to_owned)
    }

    /// Whether `needle` appears anywhere in the request: path, query, any header, the body.
    pub fn contains(&self, needle: &str) -> bool {
        self.path.contains(needle)
            || self.query.as_deref().is_some_and(|q| q.contains(needle))
            || self.headers.iter().any(|(k, v)| k.contains(needle) || v.contains(needle))
            || String::from_utf8_lossy(&self.body).contains(needle)
    }
}

async fn seen_of(req: Request) -> (Seen, axum::http::request::Parts) {
    let (parts, body) = req.into_parts();
    let body = bounded("request body", axum::body::to_bytes(body, 64 * 1024 * 1024)).await.unwrap().to_vec();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect(),
        body,
    };
    (seen, parts)
}

/// Runs before a request is forwarded, with what was received.
pub type Hook = Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
struct ProxyState {
    target: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    hook: Option<Hook>,
    http: reqwest::Client,
}

/// A reverse proxy to `target` on a free loopback port that records every request and
/// streams every answer back (SSE included). Stops when dropped.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`: requests to `URL/PATH` go to `TARGET/PATH`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// `target` is a base URL (`http://127.0.0.1:PORT`).
    pub async fn start(target: &str, hook: Option<Hook>) -> Proxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = ProxyState {
            target: target.trim_end_matches('/').to_owned(),
            seen: seen.clone(),
            hook,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        };
        let (url, task) = serve_router(axum::Router::new().fallback(forward).with_state(state)).await;
        Proxy { url, seen, task }
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const HOP: [&str; 6] = ["host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"];

async fn forward(State(st): State<ProxyState>, req: Request) -> Response {
    let (seen, parts) = seen_of(req).await;
    st.seen.lock().unwrap().push(seen.clone());
    if let Some(hook) = &st.hook {
        bounded("proxy hook", hook(seen.clone())).await;
    }
    let url = match &seen.query {
        Some(q) => format!("{}{}?{q}", st.target, seen.path),
        None => format!("{}{}", st.target, seen.path),
    };
    let mut out = st.http.request(parts.method.clone(), url).body(seen.body.clone());
    for (k, v) in &parts.headers {
        if !HOP.contains(&k.as_str()) {
            out = out.header(k, v);
        }
    }
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

#[derive(Clone)]
struct RecorderState {
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// A plain HTTP API on a free loopback port: records every request and answers
/// `{"upstream": "recorder", "method", "path", "query", "body"}` (200), or 500 with
/// `{"error": "boom"}` for any path containing `boom`. Stops when dropped.
pub struct Recorder {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (url, task) = serve_router(axum::Router::new().fallback(record).with_state(RecorderState { seen: seen.clone() })).await;
        Recorder { url, seen, task }
    }

    /// Every request received so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(st): State<RecorderState>, req: Request) -> Response {
    let (seen, _) = seen_of(req).await;
    st.seen.lock().unwrap().push(seen.clone());
    let body: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
    if seen.path.contains("boom") {
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": "boom"}))).into_response();
    }
    axum::Json(json!({"upstream": "recorder", "method": seen.method, "path": seen.path, "query": seen.query, "body": body})).into_response()
}

// ---------------------------------------------------------------------------------------------
// A TCP relay that can be cut: a network partition between a gateway and its control plane
// ---------------------------------------------------------------------------------------------

/// Relays TCP connections from a free loopback port to `target`; [`TcpRelay::cut`] drops every
/// open connection and refuses new ones until [`TcpRelay::reopen`]; [`TcpRelay::retarget`]
/// sends new connections elsewhere (a restarted server listens on another port).
pub struct TcpRelay {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    open: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    target: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

/// `HOST:PORT` of `http://HOST:PORT`.
fn host_port(url: &str) -> String {
    url.strip_prefix("http://").unwrap().trim_end_matches('/').to_owned()
}

impl TcpRelay {
    /// `target` is `http://HOST:PORT`.
    pub async fn start(target: &str) -> TcpRelay {
        use std::sync::atomic::Ordering;
        let target = Arc::new(Mutex::new(host_port(target)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (o, c, t) = (open.clone(), cut.clone(), target.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped at once: the connection is refused
                }
                let mut cut_rx = c.subscribe();
                let target = t.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        TcpRelay { url, open, cut, target, task }
    }

    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn reopen(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// New connections go to `target` (`http://HOST:PORT`); open ones stay where they are.
    pub fn retarget(&self, target: &str) {
        *self.target.lock().unwrap() = host_port(target);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
