//! The gateway's authorization hop for one `tools/call`, in process, with the embedded
//! control plane over a real `AppState` (SQLite store, the starter policies, the group-commit
//! audit writer running for real underneath):
//!
//! mandate check (`Embedded::check_mandate`, verified once then cached) → the typed request
//! the gateway builds for the call (`Ask::decision_request`) → the decision core's decision
//! (arguments turned into their policy view) → the decision event and the `tool.call` evidence event enqueued.
//!
//! Two variants:
//! - `enqueue`: the decision event is queued to the audit writer without waiting for it to be
//!   durable (the hop as the issue defines it);
//! - `durable`: `ControlPlane::decide`, which is what the gateway really awaits before it
//!   forwards a call: the decision is durable in the trail (one fsync per batch; one call at a
//!   time here, so at least one fsync per call);
//! - `durable_without_evidence`: the same without the `tool.call` event, to show what that
//!   event's own commit costs the next call's decision when calls come one at a time.
//!
//! `part/*` time the pieces of the hop apart, and `part/secret_reveal` what the embedded
//! gateway does next for a call it forwards (read and open the upstream's brokered secret).
//!
//! Criterion reports means and medians; the target is in percentiles, so after the criterion
//! groups the same hops are timed one by one (`HOP_SAMPLES`, 20,000 by default, after a
//! warm-up) and p50/p90/p99/p99.9/max printed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // bench code

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use criterion::Criterion;
use mandate_core::canonical::{Canonical, Limits};
use mandate_core::{Classification, Clock, SystemClock, TrustDomain};
use mandate_embedded::{ACTOR, Embedded};
use mandate_gateway::ControlPlane;
use mandate_gateway::authz::{Ask, CallRecord, Outcome};
use mandate_gateway::scrub::{Found, Scrubber};
use mandate_policy::ActionKind;
use mandate_server::{AppState, Settings, pipeline};
use mandate_store_sqlite::SqliteStore;
use mandate_token::VerifiedMandate;
use serde_json::{Map, Value, json};
use tower::ServiceExt;

/// The same allocator as the `mandate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "mdt_bench_admin_secret_0123456789";
const UPSTREAM: &str = "demo";
const TOOL: &str = "tickets.search";
const ACTION: &str = "demo.tickets.search";

#[derive(Clone, Copy)]
enum Variant {
    Enqueue,
    Durable,
    DurableNoEvidence,
}

struct Fixture {
    state: Arc<AppState>,
    control: Arc<Embedded>,
    token: String,
    arguments: Value,
    _tmp: tempfile::TempDir,
}

async fn call(app: &axum::Router, req: Request<Body>) -> Value {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A server state like `mandate serve`'s (starter policies, SQLite), an agent and a task whose
/// intent holds the demo upstream's `tickets.search`, and the embedded control plane over it.
async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    mandate_policy::PolicySources::starter().write_to(&dir).unwrap();
    let store = Arc::new(SqliteStore::open(&tmp.path().join("mandate.db")).unwrap());
    let issuer = "https://mandate.bench".to_owned();
    let mut settings = Settings::new(issuer.clone(), TrustDomain::parse("bench.local").unwrap(), tmp.path().join("keys"));
    settings.policy_dir = Some(dir);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (state, _bg) = AppState::start(settings, store, clock).await.unwrap();
    state.install_admin_secret(ADMIN).await.unwrap();
    let app = mandate_server::app(state.clone());

    let (private, public) = mandate_token::generate_agent_key(mandate_token::AgentKeyAlg::Ed25519).unwrap();
    let reg = Request::post("/v1/agents")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"name":"support-bot","owner":"o@example.com","purpose":"bench","public_jwk":public}).to_string()))
        .unwrap();
    let agent = call(&app, reg).await;
    let spiffe = agent["spiffe_id"].as_str().unwrap().to_owned();
    let att = mandate_token::sign_attestation(&private, &spiffe, &issuer, SystemClock.now_secs(), 60, "bench-1").unwrap();
    let details = json!([{"type":"agent_task","purpose":"bench","actions":[ACTION],"resources":["*"],"max_classification":"internal","lifetime_seconds":3600}]);
    let form = format!(
        "grant_type={}&subject_token={att}&subject_token_type={}&authorization_details={}",
        enc(mandate_proto::oauth::GRANT_TOKEN_EXCHANGE),
        enc(mandate_proto::oauth::TOKEN_TYPE_JWT),
        enc(&details.to_string())
    );
    let tok = Request::post("/oauth2/token").header("content-type", "application/x-www-form-urlencoded").body(Body::from(form)).unwrap();
    let token = call(&app, tok).await["access_token"].as_str().unwrap().to_owned();
    // The upstream's bearer, brokered: the embedded gateway opens it for every forwarded call.
    let put = Request::put("/v1/secrets/demo-tools-token")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"value":"upstream-secret-value","description":"bench"}).to_string()))
        .unwrap();
    call(&app, put).await;
    let control = Embedded::new(state.clone());
    let f = Fixture { state, control, token, arguments: json!({ "query": "checkout", "limit": 5 }), _tmp: tmp };
    // The measured call must be allowed, in both variants, and the mandate now cached.
    assert!(f.hop_enqueue().await, "the measured call must be allowed (enqueue)");
    assert!(f.hop_durable().await, "the measured call must be allowed (durable)");
    f
}

impl Fixture {
    /// The AuthZEN request the gateway builds for `tools/call tickets.search`, as
    /// `Call::ask` in the handler does it (context: protocol, method, tool; `Ask::request`
    /// adds upstream, environment and the arguments' policy view).
    fn ask<'a>(&'a self, mandate: &'a Arc<VerifiedMandate>, arguments: &'a Value) -> Ask<'a> {
        let mut context = Map::new();
        context.insert("protocol".into(), json!("mcp"));
        context.insert("method".into(), json!("tools/call"));
        context.insert("tool".into(), json!(TOOL));
        Ask {
            token: &self.token,
            mandate,
            upstream: UPSTREAM,
            action: ACTION,
            kind: ActionKind::Read,
            classification: Classification::Internal,
            resource: ("tool".into(), ACTION.into()),
            context,
            arguments: Some(arguments),
        }
    }

    /// The `tool.call` evidence event for an allowed, forwarded call.
    fn evidence(&self, mandate: &VerifiedMandate, outcome: &Outcome, started: Instant) -> mandate_audit::NewEvent {
        CallRecord {
            mandate: Some(mandate),
            upstream: UPSTREAM,
            protocol: "mcp",
            method: "tools/call",
            tool: TOOL,
            action: ACTION,
            kind: ActionKind::Read,
            outcome,
            forwarded: true,
            result: "ok",
            status: None,
            arguments: Some(&self.arguments),
            log_arguments: false,
            redact: &[],
            latency_us: started.elapsed().as_micros() as u64,
            response_bytes: 512,
            secret: Some(("demo-tools-token", 1)),
            request_id: None,
            request_sha256: None,
        }
        .event(self.state.clock.now_ms())
    }

    /// The hop with the decision event enqueued, not awaited.
    async fn hop_enqueue(&self) -> bool {
        let started = Instant::now();
        let mandate = self.control.check_mandate(&self.token).await.unwrap();
        let environment = self.control.environment();
        // As `decide_call` does: the arguments in their canonical form, decided and forwarded.
        let arguments = Canonical::new(&self.arguments, Limits::ARGUMENTS).unwrap().into_value();
        let request = self.ask(&mandate, &arguments).decision_request(environment.as_deref());
        let verdict = pipeline::decide(&self.state, &request);
        let _ack = self.state.audit.enqueue(verdict.event(&self.state, ACTOR, None)).await.unwrap();
        let outcome = mandate_embedded::outcome(&verdict);
        self.control.record(self.evidence(&mandate, &outcome, started));
        outcome.allowed
    }

    /// The hop as the gateway runs it: `ControlPlane::decide` returns once the decision is
    /// durable; the evidence event is queued.
    async fn hop_durable(&self) -> bool {
        self.durable(true).await
    }

    /// `hop_durable` without the evidence event: one commit per hop instead of two.
    async fn hop_durable_no_evidence(&self) -> bool {
        self.durable(false).await
    }

    async fn durable(&self, evidence: bool) -> bool {
        let started = Instant::now();
        let mandate = self.control.check_mandate(&self.token).await.unwrap();
        let environment = self.control.environment();
        // As `decide_call` does: the arguments in their canonical form, decided and forwarded.
        let arguments = Canonical::new(&self.arguments, Limits::ARGUMENTS).unwrap().into_value();
        let ask = self.ask(&mandate, &arguments);
        let answers = self.control.decide(std::slice::from_ref(&ask), environment.as_deref(), None).await;
        let outcome = answers.into_iter().next().unwrap();
        if evidence {
            self.control.record(self.evidence(&mandate, &outcome, started));
        }
        outcome.allowed
    }

    async fn hop(&self, variant: Variant) -> bool {
        match variant {
            Variant::Enqueue => self.hop_enqueue().await,
            Variant::Durable => self.hop_durable().await,
            Variant::DurableNoEvidence => self.hop_durable_no_evidence().await,
        }
    }
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, f: &Fixture) {
    let mut group = c.benchmark_group("gateway_hop");
    group.bench_function("enqueue", |b| b.to_async(rt).iter(|| f.hop_enqueue()));
    group.bench_function("durable", |b| b.to_async(rt).iter(|| f.hop_durable()));
    group.bench_function("durable_without_evidence", |b| b.to_async(rt).iter(|| f.hop_durable_no_evidence()));
    // The parts, to see where the time goes.
    group
        .bench_function("part/check_mandate_cached", |b| b.to_async(rt).iter(|| async { f.control.check_mandate(&f.token).await.is_ok() }));
    let mandate = rt.block_on(f.control.check_mandate(&f.token)).unwrap();
    let env = f.control.environment();
    group.bench_function("part/canonical_arguments", |b| b.iter(|| Canonical::new(&f.arguments, Limits::ARGUMENTS).unwrap()));
    group.bench_function("part/ask_request", |b| b.iter(|| f.ask(&mandate, &f.arguments).decision_request(env.as_deref())));
    let request = f.ask(&mandate, &f.arguments).decision_request(env.as_deref());
    group.bench_function("part/pipeline_decide", |b| b.iter(|| pipeline::decide(&f.state, &request).allowed()));
    let outcome = Outcome {
        allowed: true,
        reason: "allowed".into(),
        decision_id: Some("dec_x".into()),
        error_code: None,
        policies: vec![],
        approval_id: None,
        receipt: None,
    };
    group.bench_function("part/evidence_event", |b| b.iter(|| f.evidence(&mandate, &outcome, Instant::now())));
    // On every answer from an upstream that was given a secret: the answer's strings searched
    // for the secret in all its encodings (the scrubber itself is built once per value).
    let secret = b"ghp_16C7e42F292c6912E7710c838347Ae178B4a";
    let header = format!("Bearer {}", std::str::from_utf8(secret).unwrap());
    group.bench_function("part/scrubber_build", |b| b.iter(|| Scrubber::new(&[secret, header.as_bytes()])));
    let scrubber = Scrubber::new(&[secret, header.as_bytes()]);
    let answer = json!({"jsonrpc": "2.0", "id": 3, "result": {"content": [{"type": "text",
        "text": "3 tickets match `checkout`: T-1 refund on order 1001, T-2 checkout fails on Safari, T-3 coupon rejected"}],
        "structuredContent": {"tickets": [{"id": "T-1", "title": "refund on order 1001"}, {"id": "T-2", "title": "checkout fails on Safari"},
        {"id": "T-3", "title": "coupon rejected"}]}, "isError": false}});
    group.bench_function("part/scrub_answer", |b| {
        b.iter(|| {
            let mut v = answer.clone();
            let mut found = Found::default();
            scrubber.value(&mut v, &mut found)
        })
    });
    // Not part of the hop, but on every forwarded call of the embedded gateway: the brokered
    // secret read from the store (a blocking-pool hop to SQLite) and opened.
    group.bench_function("part/secret_reveal", |b| {
        b.to_async(rt).iter(|| async { f.control.secret("demo-tools-token", None).await.unwrap().0 })
    });
    group.finish();
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Each hop timed on its own; percentiles over `n` hops after `n / 10` warm-up hops.
fn percentiles(rt: &tokio::runtime::Runtime, f: &Fixture, n: usize) {
    let variants = [("enqueue", Variant::Enqueue), ("durable", Variant::Durable), ("durable_without_evidence", Variant::DurableNoEvidence)];
    for (name, variant) in variants {
        let mut samples = rt.block_on(async {
            let mut out = Vec::with_capacity(n);
            for i in 0..n + n / 10 {
                let t = Instant::now();
                let allowed = f.hop(variant).await;
                let d = t.elapsed();
                assert!(allowed);
                if i >= n / 10 {
                    out.push(d);
                }
            }
            out
        });
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "gateway_hop/{name:<24} n={n}  p50 {:>7.1} µs  p90 {:>7.1} µs  p99 {:>7.1} µs  p99.9 {:>7.1} µs  max {:>8.1} µs",
            us(percentile(&samples, 0.50)),
            us(percentile(&samples, 0.90)),
            us(percentile(&samples, 0.99)),
            us(percentile(&samples, 0.999)),
            us(samples[samples.len() - 1]),
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let f = rt.block_on(fixture());
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &rt, &f);
    c.final_summary();
    // `cargo test --benches` runs each bench once in test mode: no timing loop there.
    if std::env::args().any(|a| a == "--bench") {
        let n = std::env::var("HOP_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
        percentiles(&rt, &f, n);
    }
}
