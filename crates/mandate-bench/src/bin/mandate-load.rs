//! Load driver for `POST /access/v1/evaluation`, over loopback, at fixed concurrency.
//!
//! For each policy count it starts the real `mandate serve` (fresh data dir, the starter
//! policies plus N generated ones), registers an agent, opens a task, and drives decisions
//! with every decision durably audited. With `--cedar-agent-bin` it starts cedar-agent, loads
//! the same number of policies, and drives the equivalent requests in the same run, so the
//! two are compared on the same machine at the same moment.
//!
//! With `--database-url` (a PostgreSQL server whose user may create databases) it runs the
//! same measurement on PostgreSQL instead: for each `--replicas` count, a fresh database and
//! that many `mandate serve` replicas on it (one master key, one issuer URL, as behind a load
//! balancer), the workers spread evenly across them. With two or more replicas it then
//! measures revocation propagation: a task revoked through the first replica, timed until the
//! entry appears on the second replica's revocation feed, `--propagation` times.
//!
//! Bounded: each run stops after `--duration` seconds or `--max-requests` requests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "Drive Mandate's decision API (and optionally cedar-agent) over loopback")]
struct Args {
    /// The `mandate` binary (build with `cargo build --release -p mandate`).
    #[arg(long, default_value = "target/release/mandate")]
    mandate_bin: PathBuf,
    /// A `cedar-agent` binary to compare against (optional).
    #[arg(long)]
    cedar_agent_bin: Option<PathBuf>,
    /// Policy counts to measure, comma-separated.
    #[arg(long, default_value = "10,1000,10000", value_delimiter = ',')]
    policies: Vec<usize>,
    /// Concurrent in-flight requests.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Hard cap on requests per run.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Measure on PostgreSQL: a server URL whose user may create (and drop) databases.
    #[arg(long, env = "MANDATE_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Replica counts to measure on PostgreSQL, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    replicas: Vec<usize>,
    /// Revocations timed between two replicas (0: none).
    #[arg(long, default_value_t = 200)]
    propagation: usize,
}

/// The issuer URL every replica is given: what clients reach the service at.
const REPLICA_ISSUER: &str = "http://mandate.load.test";

struct Report {
    target: String,
    policies: usize,
    requests: u64,
    errors: u64,
    rps: f64,
    p50_us: u64,
    p99_us: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut reports = Vec::new();
    if let Some(db) = &args.database_url {
        let n = args.policies.first().copied().unwrap_or(10);
        for &replicas in &args.replicas {
            reports.push(run_replicas(&args, db, n, replicas).await?);
        }
    } else {
        for &n in &args.policies {
            reports.push(run_mandate(&args, n).await?);
            if let Some(bin) = &args.cedar_agent_bin {
                reports.push(run_cedar_agent(&args, bin, n).await?);
            }
        }
    }
    println!("\n| target | policies | concurrency | decisions/s | p50 µs | p99 µs | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &reports {
        println!("| {} | {} | {} | {:.0} | {} | {} | {} |", r.target, r.policies, args.concurrency, r.rps, r.p50_us, r.p99_us, r.errors);
        let _ = r.requests;
    }
    Ok(())
}

/// `n` generated per-agent policies that never match the measured agent, the shape a fleet of
/// many agents produces. For Mandate they are validated against its schema (`resource is
/// ticket`); cedar-agent's older Cedar has no `is`, so its copies leave the resource open.
fn generated_policies(n: usize, namespaced: bool) -> String {
    let (agent, action, resource) =
        if namespaced { ("Mandate::Agent", "Mandate::Action", "resource is ticket") } else { ("Agent", "Action", "resource") };
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "@id(\"gen-{i}\")\npermit (principal == {agent}::\"fleet-agent-{i}\", action == {action}::\"tickets.read\", {resource}) when {{ resource.classification <= {} }};\n",
            i % 4
        ));
    }
    out
}

async fn run_mandate(args: &Args, n: usize) -> anyhow::Result<Report> {
    let tmp = tempfile::tempdir()?;
    let policy_dir = tmp.path().join("policies");
    let status = Command::new(&args.mandate_bin).args(["policy", "init"]).arg(&policy_dir).stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("`mandate policy init` failed");
    }
    // The starter set holds 8 policies; generate the rest.
    let starter = 8;
    std::fs::write(policy_dir.join("generated.cedar"), generated_policies(n.saturating_sub(starter), true))?;
    let admin = "mdt_load_admin_secret_0123456789";
    let (mut child, url) = spawn_mandate(&args.mandate_bin, tmp.path(), &policy_dir, admin)?;
    let result = async {
        let client = mandate_client::Client::new(&url, Some(admin.to_owned()))?;
        let (private, public) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519)?;
        let agent = client
            .register_agent(&mandate_proto::admin::RegisterAgentRequest {
                name: "support-bot".into(),
                owner: "load@example.com".into(),
                purpose: "load test".into(),
                public_jwk: Some(public),
                attributes: Default::default(),
            })
            .await?;
        let pep = client.create_token("pep", "load").await?.token;
        let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
        let att = mandate_token::sign_attestation(&private, &agent.spiffe_id, &url, now, 60, &uuid::Uuid::new_v4().to_string())?;
        let intent = json!({ "type": "agent_task", "purpose": "load", "actions": ["tickets.read"], "resources": ["ticket:*"],
                             "max_classification": "internal", "lifetime_seconds": 3600 });
        let mandate = client.exchange(&att, &intent).await?.access_token;
        let body = json!({
            "subject": { "type": "agent", "id": agent.spiffe_id, "properties": { "mandate": mandate } },
            "action": { "name": "tickets.read" },
            "resource": { "type": "ticket", "id": "42", "properties": { "classification": "internal" } }
        });
        let check: Value =
            reqwest::Client::new().post(format!("{url}/access/v1/evaluation")).bearer_auth(&pep).json(&body).send().await?.json().await?;
        if check.get("decision") != Some(&json!(true)) {
            bail!("the measured request is not allowed: {check}");
        }
        let endpoint = format!("{url}/access/v1/evaluation");
        drive(args, "mandate (audited)", n, endpoint, Some(format!("Bearer {pep}")), body, |v: &Value| {
            v.get("decision") == Some(&json!(true))
        })
        .await
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn spawn_mandate(bin: &Path, dir: &Path, policy_dir: &Path, admin: &str) -> anyhow::Result<(Child, String)> {
    spawn_mandate_with(bin, dir, policy_dir, admin, &[], &[])
}

fn spawn_mandate_with(
    bin: &Path,
    dir: &Path,
    policy_dir: &Path,
    admin: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--policy-dir")
        .arg(policy_dir)
        .args(extra)
        .envs(envs.iter().copied())
        .env("MANDATE_ADMIN_TOKEN", admin)
        .env("MANDATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start `{}`", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("mandate: listening on ") {
                    let url = url.to_owned();
                    std::thread::spawn(move || for _ in lines {});
                    return Ok((child, url));
                }
            }
            _ => bail!("mandate serve exited before listening"),
        }
    }
}

async fn run_cedar_agent(args: &Args, bin: &Path, n: usize) -> anyhow::Result<Report> {
    let port = free_port()?;
    let mut child = Command::new(bin)
        .args(["--addr", "127.0.0.1", "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start `{}`", bin.display()))?;
    let result = async {
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{url}/v1/")).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("cedar-agent did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The same shape: one policy that allows the measured request, the rest generated.
        let mut policies = vec![json!({ "id": "allow-read", "content":
            "permit (principal == Agent::\"support-bot\", action == Action::\"tickets.read\", resource) when { resource.classification <= 1 };" })];
        for (i, p) in generated_policies(n.saturating_sub(1), false).split("@id").filter(|s| !s.is_empty()).enumerate() {
            let body = p.split_once('\n').map(|(_, b)| b).unwrap_or(p);
            policies.push(json!({ "id": format!("gen-{i}"), "content": body.trim() }));
        }
        // Its body limit refuses thousands of policies in one PUT: the first part replaces the
        // store, the rest are added one by one.
        let rest = policies.split_off(policies.len().min(500));
        let r = http.put(format!("{url}/v1/policies")).json(&policies).send().await?;
        if !r.status().is_success() {
            bail!("cedar-agent refused the policies: {}", r.text().await.unwrap_or_default());
        }
        for p in rest {
            let r = http.post(format!("{url}/v1/policies")).json(&p).send().await?;
            if !r.status().is_success() {
                bail!("cedar-agent refused a policy: {}", r.text().await.unwrap_or_default());
            }
        }
        let data = json!([{ "uid": { "type": "ticket", "id": "42" }, "attrs": { "classification": 1 }, "parents": [] }]);
        let r = http.put(format!("{url}/v1/data")).json(&data).send().await?;
        if !r.status().is_success() {
            bail!("cedar-agent refused the data: {}", r.text().await.unwrap_or_default());
        }
        let body = json!({ "principal": "Agent::\"support-bot\"", "action": "Action::\"tickets.read\"", "resource": "ticket::\"42\"", "context": {} });
        let check: Value = http.post(format!("{url}/v1/is_authorized")).json(&body).send().await?.json().await?;
        if check.get("decision") != Some(&json!("Allow")) {
            bail!("cedar-agent does not allow the measured request: {check}");
        }
        drive(args, "cedar-agent", n, format!("{url}/v1/is_authorized"), None, body, |v: &Value| v.get("decision") == Some(&json!("Allow"))).await
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Fixed concurrency: `concurrency` workers, each with one request in flight.
async fn drive(
    args: &Args,
    target: &str,
    policies: usize,
    endpoint: String,
    auth: Option<String>,
    body: Value,
    ok: fn(&Value) -> bool,
) -> anyhow::Result<Report> {
    drive_many(args, target, policies, &[endpoint], auth, body, ok).await
}

/// [`drive`] across several endpoints: worker `i` sends to `endpoints[i % len]`.
async fn drive_many(
    args: &Args,
    target: &str,
    policies: usize,
    endpoints: &[String],
    auth: Option<String>,
    body: Value,
    ok: fn(&Value) -> bool,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let body = Arc::new(serde_json::to_vec(&body)?);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for i in 0..args.concurrency {
        let endpoint = endpoints.get(i % endpoints.len().max(1)).cloned().context("no endpoint to drive")?;
        let (http, body, stop, measuring, count, errors, auth) =
            (http.clone(), body.clone(), stop.clone(), measuring.clone(), count.clone(), errors.clone(), auth.clone());
        let max = args.max_requests;
        workers.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let mut req = http.post(&endpoint).header("content-type", "application/json").body((*body).clone());
                if let Some(a) = &auth {
                    req = req.header("authorization", a);
                }
                let good = match req.send().await {
                    Ok(r) => r.json::<Value>().await.map(|v| ok(&v)).unwrap_or(false),
                    Err(_) => false,
                };
                if measuring.load(Ordering::Relaxed) {
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if let Some(h) = hist.as_mut() {
                        let _ = h.record(us.max(1));
                    }
                    if !good {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if count.fetch_add(1, Ordering::Relaxed) + 1 >= max {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for w in workers {
        if let Some(h) = w.await? {
            total.add(h)?;
        }
    }
    let requests = count.load(Ordering::Relaxed);
    let report = Report {
        target: target.to_owned(),
        policies,
        requests,
        errors: errors.load(Ordering::Relaxed),
        rps: requests as f64 / elapsed,
        p50_us: total.value_at_quantile(0.5),
        p99_us: total.value_at_quantile(0.99),
    };
    eprintln!(
        "{target:<18} policies={policies:<6} {:>8.0} decisions/s  p50 {:>6} µs  p99 {:>6} µs  errors {}",
        report.rps, report.p50_us, report.p99_us, report.errors
    );
    Ok(report)
}

/// `replicas` replicas of `mandate serve` on a fresh PostgreSQL database, driven together.
async fn run_replicas(args: &Args, server_url: &str, n: usize, replicas: usize) -> anyhow::Result<Report> {
    let name = format!("mandate_load_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    mandate_store_postgres::create_database(server_url, &name).await.context("cannot create a database on the benchmark's PostgreSQL")?;
    let mut db_url = url::Url::parse(server_url)?;
    db_url.set_path(&format!("/{name}"));
    let db_url = db_url.to_string();
    let tmp = tempfile::tempdir()?;
    let policy_dir = tmp.path().join("policies");
    let status = Command::new(&args.mandate_bin).args(["policy", "init"]).arg(&policy_dir).stdout(Stdio::null()).status()?;
    if !status.success() {
        bail!("`mandate policy init` failed");
    }
    std::fs::write(policy_dir.join("generated.cedar"), generated_policies(n.saturating_sub(8), true))?;
    let admin = "mdt_load_admin_secret_0123456789";
    let master = mandate_secrets::MasterKey::generate().to_base64().to_string();
    let mut children = Vec::new();
    let mut urls = Vec::new();
    let result = async {
        for i in 0..replicas.max(1) {
            let dir = tmp.path().join(format!("replica-{i}"));
            let (child, url) = spawn_mandate_with(
                &args.mandate_bin,
                &dir,
                &policy_dir,
                admin,
                &["--database-url", &db_url, "--issuer-url", REPLICA_ISSUER],
                &[("MANDATE_MASTER_KEY", &master)],
            )?;
            children.push(child);
            urls.push(url);
        }
        let first = urls.first().context("no replica")?.clone();
        let client = mandate_client::Client::new(&first, Some(admin.to_owned()))?;
        let (private, public) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519)?;
        let agent = client
            .register_agent(&mandate_proto::admin::RegisterAgentRequest {
                name: "support-bot".into(),
                owner: "load@example.com".into(),
                purpose: "load test".into(),
                public_jwk: Some(public),
                attributes: Default::default(),
            })
            .await?;
        let pep = client.create_token("pep", "load").await?.token;
        let intent = json!({ "type": "agent_task", "purpose": "load", "actions": ["tickets.read"], "resources": ["ticket:*"],
                             "max_classification": "internal", "lifetime_seconds": 3600 });
        let open = |client: mandate_client::Client| {
            let (private, spiffe, intent) = (private.clone(), agent.spiffe_id.clone(), intent.clone());
            async move {
                let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs())?;
                let att = mandate_token::sign_attestation(&private, &spiffe, REPLICA_ISSUER, now, 60, &uuid::Uuid::new_v4().to_string())?;
                anyhow::Ok(client.exchange(&att, &intent).await?)
            }
        };
        let mandate = open(client.clone()).await?.access_token;
        let body = json!({
            "subject": { "type": "agent", "id": agent.spiffe_id, "properties": { "mandate": mandate } },
            "action": { "name": "tickets.read" },
            "resource": { "type": "ticket", "id": "42", "properties": { "classification": "internal" } }
        });
        for url in &urls {
            let check: Value = reqwest::Client::new()
                .post(format!("{url}/access/v1/evaluation"))
                .bearer_auth(&pep)
                .json(&body)
                .send()
                .await?
                .json()
                .await?;
            if check.get("decision") != Some(&json!(true)) {
                bail!("the measured request is not allowed at {url}: {check}");
            }
        }
        let endpoints: Vec<String> = urls.iter().map(|u| format!("{u}/access/v1/evaluation")).collect();
        let target = format!("mandate on PostgreSQL, {} replica{}", urls.len(), if urls.len() == 1 { "" } else { "s" });
        let report = drive_many(args, &target, n, &endpoints, Some(format!("Bearer {pep}")), body, |v: &Value| {
            v.get("decision") == Some(&json!(true))
        })
        .await?;
        if let (Some(second), true) = (urls.get(1), args.propagation > 0) {
            propagation(args, &client, &mandate_client::Client::new(second, Some(pep.clone()))?, || open(client.clone())).await?;
        }
        Ok(report)
    }
    .await;
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = mandate_store_postgres::drop_database(server_url, &name).await;
    result
}

/// Revokes tasks through `a` (admin) and times each until it is on `b`'s revocation feed.
async fn propagation<F, Fut>(args: &Args, a: &mandate_client::Client, b_pep: &mandate_client::Client, open: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<mandate_proto::oauth::TokenExchangeResponse>>,
{
    use mandate_client::revocations::FeedEvent;
    let mut feed = mandate_client::revocations::subscribe(b_pep, None);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), feed.next()).await {
            Ok(FeedEvent::Hello(_)) => break,
            Ok(FeedEvent::Disconnected { error, .. }) => bail!("cannot follow the second replica's revocation feed: {error}"),
            Ok(_) => {}
            Err(_) => bail!("the second replica's revocation feed did not answer"),
        }
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..args.propagation {
        let task = open().await?.task_id;
        let started = Instant::now();
        a.revoke_task(&task, Some("propagation benchmark".into())).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), feed.next()).await {
                Ok(FeedEvent::Revocation(e)) if e.id == task => break,
                Ok(FeedEvent::Disconnected { error, .. }) => bail!("the second replica's revocation feed dropped: {error}"),
                Ok(_) => {}
                Err(_) => bail!("revocation of `{task}` never reached the second replica"),
            }
        }
        let _ = hist.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
    }
    eprintln!(
        "revocation through replica 1, on replica 2's feed: n={} p50 {} µs  p99 {} µs  max {} µs (from sending the revoke)",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    println!(
        "\n| revocation propagation between replicas | n | p50 µs | p99 µs | max µs |\n|---|---:|---:|---:|---:|\n| revoke via replica 1 → entry on replica 2's feed | {} | {} | {} | {} |",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max()
    );
    Ok(())
}
