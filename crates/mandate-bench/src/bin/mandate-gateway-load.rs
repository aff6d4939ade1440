//! Load driver for the gateway: `tools/call` over loopback through `mandate`'s gateway and,
//! in the same run, straight to the same upstream, so the gateway's added latency and its
//! effect on the calls/s ceiling are measured on the same machine at the same moment.
//!
//! It starts the real binaries itself: the demo tool server (`mandate-demo-tools
//! --require-bearer`), then per mode
//! - `embedded`: `mandate serve` with a `[gateway]` section (one process, one port);
//! - `remote`: `mandate serve`, and `mandate gateway` apart, with a `pep` token and the master
//!   key, following the revocation feed;
//!
//! stores the upstream's bearer with `mandate secret put`, registers an agent and opens a
//! task whose intent holds `demo.tickets.search`. Calls are stateless 2026-07-28 JSON-RPC
//! POSTs (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` headers and the `_meta` keys),
//! `Accept: application/json` to the gateway, over HTTP/1.1 keep-alive.
//!
//! Measurements:
//! - fixed rate, open loop: calls are scheduled at `--rate` per second and each latency is
//!   measured from its scheduled send time (no coordinated omission);
//! - fixed concurrency, closed loop: `--concurrency` callers with one call in flight each;
//! - revocation: `--revocations` times, a task is opened, a caller issues calls back to back
//!   through the gateway, the task is revoked (`POST /v1/tasks/{id}/revoke`), and the time
//!   from the revoke's response to the first refused call's response is recorded.
//!
//! Bounded: every run stops after its duration or `--max-requests`, the whole driver after
//! `--max-total-secs`; every server listens on 127.0.0.1 and is stopped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // bench code

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use mandate_client::Client;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Drive tools/call through Mandate's gateway and straight to the upstream, over loopback")]
struct Args {
    /// The `mandate` binary (`cargo build --release -p mandate`).
    #[arg(long, default_value = "target/release/mandate")]
    mandate_bin: PathBuf,
    /// The demo tool server (`cargo build --release -p mandate-demo-tools`).
    #[arg(long, default_value = "target/release/mandate-demo-tools")]
    tools_bin: PathBuf,
    /// Modes to measure, comma-separated: `embedded`, `remote`.
    #[arg(long, default_value = "embedded,remote", value_delimiter = ',')]
    modes: Vec<String>,
    /// Calls per second of the open-loop run (0 skips it).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Closed-loop concurrencies, comma-separated (empty skips them).
    #[arg(long, default_value = "1,32", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds before each measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Hard cap on measured calls per closed-loop run.
    #[arg(long, default_value_t = 1_000_000)]
    max_requests: u64,
    /// Revocation repetitions per mode (0 skips them).
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// Modes in which revocation is measured, comma-separated.
    #[arg(long, default_value = "remote", value_delimiter = ',')]
    revocation_modes: Vec<String>,
    /// Skip the direct-to-upstream runs.
    #[arg(long)]
    no_direct: bool,
    /// Where the servers' data directories are made (default: the system's temp dir). A
    /// tmpfs here (`/dev/shm`) makes fsync nearly free: not a real deployment, but it shows
    /// what the trail's durability costs.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// The whole driver stops after this many seconds, whatever is left.
    #[arg(long, default_value_t = 1200)]
    max_total_secs: u64,
}

const ADMIN: &str = "mdt_gwload_admin_secret_0123456789";
const SECRET_NAME: &str = "demo-tools-token";
const TOOL: &str = "tickets.search";
const ACTION: &str = "demo.tickets.search";
const STATELESS: &str = "2026-07-28";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = Duration::from_secs(args.max_total_secs);
    match tokio::time::timeout(limit, run(&args)).await {
        Ok(r) => r,
        Err(_) => bail!("stopped after --max-total-secs {}", args.max_total_secs),
    }
}

// ------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------

/// A child process, killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {}", self.name);
    }
}

/// Starts `cmd` and waits for the line starting with `prefix` on its stdout; the rest of its
/// stdout is drained in a thread.
fn spawn_until(name: &'static str, mut cmd: Command, prefix: &str) -> anyhow::Result<(Proc, String)> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().with_context(|| format!("cannot start {name}"))?;
    let mut p = Proc { name, child };
    let stdout = p.child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let rest = rest.trim().to_owned();
                    std::thread::spawn(move || for _ in lines {});
                    return Ok((p, rest));
                }
            }
            _ => bail!("{name} exited before listening"),
        }
    }
}

fn spawn_tools(bin: &Path, secret: &str) -> anyhow::Result<(Proc, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0"]).env("DEMO_TOOLS_BEARER", secret);
    spawn_until("mandate-demo-tools", cmd, "mandate-demo-tools: listening on ")
}

fn spawn_serve(bin: &Path, dir: &Path, config: Option<&Path>, master_key: Option<&str>) -> anyhow::Result<(Proc, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .env("MANDATE_ADMIN_TOKEN", ADMIN)
        .env("MANDATE_LOG", "warn")
        .env_remove("MANDATE_CONFIG");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    if let Some(k) = master_key {
        cmd.env("MANDATE_MASTER_KEY", k);
    }
    spawn_until("mandate serve", cmd, "mandate: listening on ")
}

async fn spawn_gateway(bin: &Path, config: &Path, cp_url: &str, pep: &str, master_key: &str) -> anyhow::Result<(Proc, String)> {
    let mut cmd = Command::new(bin);
    cmd.args(["gateway", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("MANDATE_URL", cp_url)
        .env("MANDATE_TOKEN", pep)
        .env("MANDATE_MASTER_KEY", master_key)
        .env("MANDATE_LOG", "warn");
    let (p, url) = spawn_until("mandate gateway", cmd, "mandate gateway: listening on ")?;
    // Ready once it follows the control plane's revocation feed.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the gateway did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((p, url))
}

/// `mandate secret put NAME`, the value on stdin, as an operator would.
fn secret_put(bin: &Path, url: &str, value: &str) -> anyhow::Result<()> {
    let mut child = Command::new(bin)
        .args(["secret", "put", SECRET_NAME, "--description", "demo tool server bearer"])
        .env("MANDATE_URL", url)
        .env("MANDATE_TOKEN", ADMIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child.stdin.take().context("no stdin")?.write_all(value.as_bytes())?;
    if !child.wait()?.success() {
        bail!("`mandate secret put` failed");
    }
    Ok(())
}

fn gateway_tables(mcp_url: &str, prefix: &str) -> String {
    format!(
        r#"
[[{prefix}upstream]]
name = "demo"
type = "mcp"
url = "{mcp_url}"
[{prefix}upstream.inject]
header = "Authorization"
secret = "{SECRET_NAME}"
format = "Bearer {{}}"
[{prefix}upstream.tools."tickets.search"]
kind = "read"
classification = "internal"
"#
    )
}

// ------------------------------------------------------------------------------------------
// Agents and tasks
// ------------------------------------------------------------------------------------------

struct Agent {
    spiffe: String,
    private: Value,
}

async fn register(admin: &Client) -> anyhow::Result<Agent> {
    let (private, public) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519)?;
    let agent = admin
        .register_agent(&mandate_proto::admin::RegisterAgentRequest {
            name: "support-bot".into(),
            owner: "load@example.com".into(),
            purpose: "gateway load test".into(),
            public_jwk: Some(public),
            attributes: Default::default(),
        })
        .await?;
    Ok(Agent { spiffe: agent.spiffe_id, private })
}

/// A new task for `demo.tickets.search`: (mandate, task id).
async fn open_task(anon: &Client, url: &str, agent: &Agent) -> anyhow::Result<(String, String)> {
    let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
    let att = mandate_token::sign_attestation(&agent.private, &agent.spiffe, url, now, 60, &uuid::Uuid::new_v4().to_string())?;
    let intent = json!({ "type": "agent_task", "purpose": "gateway load", "actions": [ACTION], "resources": ["*"],
                         "max_classification": "internal", "lifetime_seconds": 3600 });
    let r = anon.exchange(&att, &intent).await?;
    Ok((r.access_token, r.task_id))
}

// ------------------------------------------------------------------------------------------
// Calls
// ------------------------------------------------------------------------------------------

/// Where calls go and how they are dressed.
#[derive(Clone)]
struct Target {
    label: String,
    url: String,
    headers: HeaderMap,
}

impl Target {
    fn new(label: &str, url: String, bearer: &str, accept: &'static str) -> Target {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {bearer}")).unwrap());
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static(accept));
        headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("mcp-protocol-version"), HeaderValue::from_static(STATELESS));
        headers.insert(HeaderName::from_static("mcp-method"), HeaderValue::from_static("tools/call"));
        headers.insert(HeaderName::from_static("mcp-name"), HeaderValue::from_static(TOOL));
        Target { label: label.to_owned(), url, headers }
    }

    /// Through the gateway: the agent's mandate as the bearer, JSON answers.
    fn gateway(label: &str, base: &str, mandate: &str) -> Target {
        Target::new(label, format!("{base}/mcp/demo"), mandate, "application/json")
    }

    /// Straight to the upstream with its own bearer; it answers stateless requests as SSE.
    fn direct(mcp_url: &str, secret: &str) -> Target {
        Target::new("direct", mcp_url.to_owned(), secret, "application/json, text/event-stream")
    }
}

fn body(id: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {
            "name": TOOL,
            "arguments": { "query": "checkout" },
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": STATELESS,
                "io.modelcontextprotocol/clientInfo": { "name": "mandate-gateway-load", "version": "1" },
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    }))
    .unwrap()
}

/// What a call came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// A JSON-RPC error: code and `data.reason`.
    Refused(i64, String),
    Failed(String),
}

/// The JSON-RPC answer in a JSON or SSE body.
fn answer(bytes: &[u8]) -> Option<Value> {
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return Some(v);
    }
    let text = std::str::from_utf8(bytes).ok()?;
    text.split("\n\n").find_map(|event| {
        let data: String = event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect::<Vec<_>>().join("\n");
        serde_json::from_str::<Value>(&data).ok().filter(|v| v.get("result").is_some() || v.get("error").is_some())
    })
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn call(http: &reqwest::Client, t: &Target) -> Outcome {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut resp = match http.post(&t.url).headers(t.headers.clone()).body(body(id)).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("send: {e}")),
    };
    let status = resp.status();
    let sse = resp.headers().get(reqwest::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // JSON is read whole. An event stream is read up to the event that answers, as the
    // gateway reads its upstream: the server may end the stream after it, or not at once.
    let mut bytes = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                bytes.extend_from_slice(&c);
                if sse && bytes.windows(2).any(|w| w == b"\n\n") && answer(&bytes).is_some() {
                    // The rest is read apart, so the connection goes back to the pool when
                    // the server ends the stream instead of being closed here.
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_millis(200), async { while let Ok(Some(_)) = resp.chunk().await {} }).await;
                    });
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => return Outcome::Failed(format!("body: {e}")),
        }
    }
    match answer(&bytes) {
        Some(v) => match (v.get("result"), v.get("error")) {
            (Some(r), _) if r.get("isError") != Some(&json!(true)) => Outcome::Ok,
            (Some(_), _) => Outcome::Failed("the tool reported an error".into()),
            (_, Some(e)) => Outcome::Refused(
                e.get("code").and_then(Value::as_i64).unwrap_or(0),
                e.pointer("/data/reason").and_then(Value::as_str).unwrap_or("").to_owned(),
            ),
            _ => Outcome::Failed(format!("HTTP {status}: not a JSON-RPC answer")),
        },
        None => Outcome::Failed(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)]))),
    }
}

fn http_client(pool: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn hist() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()
}

// ------------------------------------------------------------------------------------------
// Runs
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RunReport {
    mode: String,
    target: String,
    /// `rate 1000/s` or `c=32`.
    load: String,
    calls: u64,
    errors: u64,
    calls_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    /// Open loop: how late the driver sent calls behind schedule (p50, p99).
    lateness_us: Option<(u64, u64)>,
}

fn report(
    mode: &str,
    t: &Target,
    load: String,
    h: &Histogram<u64>,
    errors: u64,
    secs: f64,
    lateness: Option<&Histogram<u64>>,
) -> RunReport {
    let r = RunReport {
        mode: mode.to_owned(),
        target: t.label.clone(),
        load,
        calls: h.len(),
        errors,
        calls_per_sec: h.len() as f64 / secs,
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        lateness_us: lateness.map(|l| (l.value_at_quantile(0.5), l.value_at_quantile(0.99))),
    };
    eprintln!(
        "{:<8} {:<8} {:<11} {:>8.0} calls/s  p50 {:>6} µs  p90 {:>6}  p99 {:>6}  p99.9 {:>6}  max {:>7}  errors {}{}",
        r.mode,
        r.target,
        r.load,
        r.calls_per_sec,
        r.p50_us,
        r.p90_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.errors,
        r.lateness_us.map(|(a, b)| format!("  (sent late p50 {a} µs, p99 {b} µs)")).unwrap_or_default()
    );
    r
}

/// Open loop at `rate` calls/s: a scheduler thread spawns each call at its time; latency is
/// from the scheduled time to the answer, so a stall delays every call behind it in the
/// numbers too.
async fn fixed_rate(args: &Args, mode: &str, t: &Target, rate: u64) -> anyhow::Result<RunReport> {
    let http = http_client(256)?;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let warm = rate * args.warmup;
    let total = warm + rate * args.duration;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Duration, Duration, bool)>();
    let handle = tokio::runtime::Handle::current();
    let target = Arc::new(t.clone());
    let start = Instant::now() + Duration::from_millis(20);
    let scheduler = std::thread::spawn(move || {
        for i in 0..total {
            let at = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            let (http, target, tx) = (http.clone(), target.clone(), tx.clone());
            handle.spawn(async move {
                let late = at.elapsed();
                let ok = call(&http, &target).await == Outcome::Ok;
                let _ = tx.send((i, at.elapsed(), late, ok));
            });
        }
    });
    let mut h = hist();
    let mut lateness = hist();
    let mut errors = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.warmup + args.duration + 30);
    let mut received = 0;
    while received < total {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, lat, late, ok))) => {
                received += 1;
                if i >= warm {
                    h.record(u64::try_from(lat.as_micros()).unwrap_or(u64::MAX).max(1))?;
                    lateness.record(u64::try_from(late.as_micros()).unwrap_or(u64::MAX).max(1))?;
                    if !ok {
                        errors += 1;
                    }
                }
            }
            _ => break,
        }
    }
    let _ = scheduler.join();
    errors += total - received;
    // The offered rate is what was achieved if every call came back.
    Ok(report(mode, t, format!("rate {rate}/s"), &h, errors, args.duration as f64, Some(&lateness)))
}

/// Closed loop: `concurrency` callers, each with one call in flight.
async fn fixed_concurrency(args: &Args, mode: &str, t: &Target, concurrency: usize) -> anyhow::Result<RunReport> {
    let http = http_client(concurrency)?;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, t, stop, measuring, count, errors) =
            (http.clone(), t.clone(), stop.clone(), measuring.clone(), count.clone(), errors.clone());
        let max = args.max_requests;
        workers.push(tokio::spawn(async move {
            let mut h = hist();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let ok = call(&http, &t).await == Outcome::Ok;
                if measuring.load(Ordering::Relaxed) {
                    let _ = h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if count.fetch_add(1, Ordering::Relaxed) + 1 >= max {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            h
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let mut total = hist();
    for w in workers {
        total.add(w.await?)?;
    }
    Ok(report(mode, t, format!("c={concurrency}"), &total, errors.load(Ordering::Relaxed), secs, None))
}

// ------------------------------------------------------------------------------------------
// Revocation
// ------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct RevocationReport {
    mode: String,
    reps: usize,
    /// Revoke response → first refused call's response, µs (negative: refused before the
    /// revoke call returned).
    propagation_us: Vec<i64>,
    /// Revoke response → the entry reaching a feed subscriber in the driver, µs.
    feed_us: Vec<i64>,
    /// The revoke call itself, µs.
    revoke_call_us: Vec<i64>,
    /// Calls allowed whose answer came after the revoke response.
    allowed_after: Vec<usize>,
    reasons: std::collections::BTreeMap<String, usize>,
    timeouts: usize,
}

async fn revocations(
    args: &Args,
    mode: &str,
    cp_url: &str,
    gw_url: &str,
    admin: &Client,
    pep: &str,
    agent: &Agent,
) -> anyhow::Result<RevocationReport> {
    let anon = Client::new(cp_url, None)?;
    let http = http_client(4)?;
    // A subscriber of the revocation feed in the driver, as a remote gateway follows it.
    let feed_seen: Arc<Seen> = Arc::default();
    let feed_client = Client::new(cp_url, Some(pep.to_owned()))?;
    let seen = feed_seen.clone();
    let feed = tokio::spawn(async move {
        let mut sub = mandate_client::revocations::subscribe(&feed_client, None);
        loop {
            if let mandate_client::revocations::FeedEvent::Revocation(e) = sub.next().await {
                seen.put(e.id, Instant::now());
            }
        }
    });
    let mut out = RevocationReport { mode: mode.to_owned(), ..Default::default() };
    for rep in 0..args.revocations {
        let (mandate, task) = open_task(&anon, cp_url, agent).await?;
        let target = Target::gateway("gateway", gw_url, &mandate);
        match call(&http, &target).await {
            Outcome::Ok => {}
            other => bail!("rep {rep}: the first call was not allowed: {other:?}"),
        }
        let (h, t) = (http.clone(), target.clone());
        let caller = tokio::spawn(async move {
            let mut log = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let o = call(&h, &t).await;
                let at = Instant::now();
                let refused = matches!(o, Outcome::Refused(..));
                log.push((at, o));
                if refused || Instant::now() > deadline {
                    return log;
                }
            }
        });
        // Revoke at a random point of a call.
        let jitter = 3 + (uuid::Uuid::new_v4().as_u128() % 12) as u64;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        let asked = Instant::now();
        admin.revoke_task(&task, Some("gateway load: revocation".into())).await?;
        let revoked = Instant::now();
        let log = caller.await?;
        let us = |a: Instant, b: Instant| -> i64 {
            if a >= b {
                i64::try_from((a - b).as_micros()).unwrap_or(i64::MAX)
            } else {
                -i64::try_from((b - a).as_micros()).unwrap_or(i64::MAX)
            }
        };
        out.revoke_call_us.push(us(revoked, asked));
        match log.iter().find(|(_, o)| matches!(o, Outcome::Refused(..))) {
            Some((at, Outcome::Refused(code, reason))) => {
                out.propagation_us.push(us(*at, revoked));
                *out.reasons.entry(format!("{code} {reason}")).or_default() += 1;
            }
            _ => out.timeouts += 1,
        }
        out.allowed_after.push(log.iter().filter(|(at, o)| *at > revoked && *o == Outcome::Ok).count());
        // The feed entry, if it came (it usually has by now).
        let wait_until = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(at) = feed_seen.get(&task) {
                out.feed_us.push(us(at, revoked));
                break;
            }
            if Instant::now() > wait_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        out.reps += 1;
    }
    feed.abort();
    let mut p = out.propagation_us.clone();
    p.sort_unstable();
    eprintln!(
        "{mode:<8} revocation  reps {}  propagation p50 {} µs  p99 {} µs  max {} µs  timeouts {}",
        out.reps,
        pct(&p, 0.5),
        pct(&p, 0.99),
        p.last().copied().unwrap_or(0),
        out.timeouts
    );
    Ok(out)
}

/// When each feed entry reached the driver's subscriber, by task id.
#[derive(Default)]
struct Seen(std::sync::Mutex<std::collections::HashMap<String, Instant>>);

impl Seen {
    fn put(&self, id: String, at: Instant) {
        self.0.lock().unwrap().entry(id).or_insert(at);
    }

    fn get(&self, id: &str) -> Option<Instant> {
        self.0.lock().unwrap().get(id).copied()
    }
}

fn pct(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ------------------------------------------------------------------------------------------
// Modes
// ------------------------------------------------------------------------------------------

struct Env {
    _procs: Vec<Proc>,
    cp_url: String,
    gw_url: String,
    admin: Client,
    pep: String,
    agent: Agent,
    mandate: String,
    _tmp: tempfile::TempDir,
}

async fn start_mode(args: &Args, mode: &str, mcp_url: &str, upstream_secret: &str) -> anyhow::Result<Env> {
    let tmp = match &args.data_root {
        Some(root) => tempfile::tempdir_in(root)?,
        None => tempfile::tempdir()?,
    };
    let mut procs = Vec::new();
    let (cp_url, gw_url, pep) = match mode {
        "embedded" => {
            let cfg = tmp.path().join("mandate.toml");
            std::fs::write(&cfg, format!("[gateway]\n{}", gateway_tables(mcp_url, "gateway.")))?;
            let (p, url) = spawn_serve(&args.mandate_bin, tmp.path(), Some(&cfg), None)?;
            procs.push(p);
            secret_put(&args.mandate_bin, &url, upstream_secret)?;
            let pep = Client::new(&url, Some(ADMIN.to_owned()))?.create_token("pep", "load feed").await?.token;
            (url.clone(), url, pep)
        }
        "remote" => {
            let master = mandate_secrets::MasterKey::generate();
            let master = master.to_base64();
            let (p, url) = spawn_serve(&args.mandate_bin, tmp.path(), None, Some(&master))?;
            procs.push(p);
            secret_put(&args.mandate_bin, &url, upstream_secret)?;
            let pep = Client::new(&url, Some(ADMIN.to_owned()))?.create_token("pep", "load gateway").await?.token;
            let cfg = tmp.path().join("gateway.toml");
            std::fs::write(&cfg, gateway_tables(mcp_url, ""))?;
            let (g, gw) = spawn_gateway(&args.mandate_bin, &cfg, &url, &pep, &master).await?;
            procs.push(g);
            (url, gw, pep)
        }
        other => bail!("unknown mode `{other}` (embedded, remote)"),
    };
    let admin = Client::new(&cp_url, Some(ADMIN.to_owned()))?;
    let agent = register(&admin).await?;
    let (mandate, _) = open_task(&Client::new(&cp_url, None)?, &cp_url, &agent).await?;
    let check = call(&http_client(1)?, &Target::gateway("gateway", &gw_url, &mandate)).await;
    if check != Outcome::Ok {
        bail!("{mode}: the measured call is not allowed through the gateway: {check:?}");
    }
    Ok(Env { _procs: procs, cp_url, gw_url, admin, pep, agent, mandate, _tmp: tmp })
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let upstream_secret = format!("upstream-{}", uuid::Uuid::new_v4().simple());
    let (tools, mcp_url) = spawn_tools(&args.tools_bin, &upstream_secret)?;
    eprintln!("upstream: {mcp_url}");
    let direct = Target::direct(&mcp_url, &upstream_secret);
    let check = call(&http_client(1)?, &direct).await;
    if check != Outcome::Ok {
        bail!("the upstream does not answer the measured call: {check:?}");
    }
    let mut runs = Vec::new();
    let mut revs = Vec::new();
    for mode in &args.modes {
        let env = start_mode(args, mode, &mcp_url, &upstream_secret).await?;
        eprintln!("{mode}: control plane {}, gateway {}", env.cp_url, env.gw_url);
        let gw = Target::gateway("gateway", &env.gw_url, &env.mandate);
        // The same load straight to the upstream, then through the gateway, back to back.
        if args.rate > 0 {
            if !args.no_direct {
                runs.push(fixed_rate(args, mode, &direct, args.rate).await?);
            }
            runs.push(fixed_rate(args, mode, &gw, args.rate).await?);
        }
        for &c in &args.concurrency {
            if !args.no_direct {
                runs.push(fixed_concurrency(args, mode, &direct, c).await?);
            }
            runs.push(fixed_concurrency(args, mode, &gw, c).await?);
        }
        if args.revocations > 0 && args.revocation_modes.iter().any(|m| m == mode) {
            revs.push(revocations(args, mode, &env.cp_url, &env.gw_url, &env.admin, &env.pep, &env.agent).await?);
        }
        drop(env);
    }
    drop(tools);
    print_tables(&runs, &revs);
    Ok(())
}

fn print_tables(runs: &[RunReport], revs: &[RevocationReport]) {
    println!("\n| mode | target | load | calls | calls/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | sent late p50/p99 µs |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            r.mode,
            r.target,
            r.load,
            r.calls,
            r.calls_per_sec,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.errors,
            r.lateness_us.map(|(a, b)| format!("{a} / {b}")).unwrap_or_else(|| "–".into())
        );
    }
    // Added by the gateway: the gateway's percentile minus the direct one, same load.
    let pairs: Vec<(&RunReport, &RunReport)> = runs
        .iter()
        .filter(|r| r.target == "gateway")
        .filter_map(|g| runs.iter().find(|d| d.target == "direct" && d.mode == g.mode && d.load == g.load).map(|d| (g, d)))
        .collect();
    if !pairs.is_empty() {
        println!("\n| mode | load | added p50 µs | added p99 µs | calls/s gateway / direct |");
        println!("|---|---|---:|---:|---:|");
        for (g, d) in pairs {
            println!(
                "| {} | {} | {} | {} | {:.0} / {:.0} ({:.0}%) |",
                g.mode,
                g.load,
                g.p50_us as i64 - d.p50_us as i64,
                g.p99_us as i64 - d.p99_us as i64,
                g.calls_per_sec,
                d.calls_per_sec,
                100.0 * g.calls_per_sec / d.calls_per_sec.max(1.0)
            );
        }
    }
    if !revs.is_empty() {
        println!(
            "\n| mode | reps | revoke → first refused p50 / p99 / max ms | refused before the revoke returned | feed entry p50 / p99 ms | revoke call p50 ms | allowed after revoke (max) | timeouts | reasons |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in revs {
            let mut p = r.propagation_us.clone();
            p.sort_unstable();
            let mut f = r.feed_us.clone();
            f.sort_unstable();
            let mut c = r.revoke_call_us.clone();
            c.sort_unstable();
            let ms = |v: i64| v as f64 / 1000.0;
            println!(
                "| {} | {} | {:.2} / {:.2} / {:.2} | {} | {:.2} / {:.2} | {:.2} | {} | {} | {} |",
                r.mode,
                r.reps,
                ms(pct(&p, 0.5)),
                ms(pct(&p, 0.99)),
                ms(p.last().copied().unwrap_or(0)),
                p.iter().filter(|v| **v <= 0).count(),
                ms(pct(&f, 0.5)),
                ms(pct(&f, 0.99)),
                ms(pct(&c, 0.5)),
                r.allowed_after.iter().max().copied().unwrap_or(0),
                r.timeouts,
                r.reasons.iter().map(|(k, v)| format!("{k} ×{v}")).collect::<Vec<_>>().join(", ")
            );
        }
    }
}
