//! One decision through the in-process pipeline — mandate check (cached after the first
//! verification) + intent ceiling + sliced Cedar evaluation + audit enqueue — with 10, 1,000
//! and 10,000 policies. The audit writer runs for real underneath (SQLite, group commit), so
//! backpressure from durable appends is part of what is measured.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // bench code

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use mandate_core::{Clock, SystemClock, TrustDomain};
use mandate_proto::authzen::EvaluationRequest;
use mandate_server::{AppState, Settings, pipeline};
use mandate_store_sqlite::SqliteStore;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The same allocator as the `mandate` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "mdt_bench_admin_secret_0123456789";

fn generated(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "@id(\"gen-{i}\")\npermit (principal == Mandate::Agent::\"fleet-agent-{i}\", action == Mandate::Action::\"tickets.read\", resource is ticket) when {{ resource.classification <= {} }};\n",
                i % 4
            )
        })
        .collect()
}

struct Fixture {
    state: Arc<AppState>,
    request: EvaluationRequest,
    _tmp: tempfile::TempDir,
}

async fn call(app: &axum::Router, req: Request<Body>) -> Value {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    assert!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&bytes));
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

async fn fixture(policies: usize) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policies");
    mandate_policy::PolicySources::starter().write_to(&dir).unwrap();
    let starter = mandate_policy::PolicySources::starter().policies.iter().map(|(_, t)| t.matches("@id(").count()).sum::<usize>();
    std::fs::write(dir.join("generated.cedar"), generated(policies.saturating_sub(starter))).unwrap();
    let store = Arc::new(SqliteStore::open(&tmp.path().join("mandate.db")).unwrap());
    let issuer = "https://mandate.bench".to_owned();
    let mut settings = Settings::new(issuer.clone(), TrustDomain::parse("bench.local").unwrap(), tmp.path().join("keys"));
    settings.policy_dir = Some(dir);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (state, _bg) = AppState::start(settings, store, clock).await.unwrap();
    state.install_admin_secret(ADMIN).await.unwrap();
    assert_eq!(state.policy.current().policy_count(), policies.max(starter));
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
    let details = json!([{"type":"agent_task","purpose":"bench","actions":["tickets.read"],"resources":["ticket:*"],"max_classification":"internal","lifetime_seconds":3600}]);
    let form = format!(
        "grant_type={}&subject_token={att}&subject_token_type={}&authorization_details={}",
        enc(mandate_proto::oauth::GRANT_TOKEN_EXCHANGE),
        enc(mandate_proto::oauth::TOKEN_TYPE_JWT),
        enc(&details.to_string())
    );
    let tok = Request::post("/oauth2/token").header("content-type", "application/x-www-form-urlencoded").body(Body::from(form)).unwrap();
    let mandate = call(&app, tok).await["access_token"].as_str().unwrap().to_owned();
    let request: EvaluationRequest = serde_json::from_value(json!({
        "subject": { "type": "agent", "id": spiffe, "properties": { "mandate": mandate } },
        "action": { "name": "tickets.read" },
        "resource": { "type": "ticket", "id": "42", "properties": { "classification": "internal" } }
    }))
    .unwrap();
    let v = pipeline::decide(&state, &pipeline::parse(&state, request.clone()).unwrap());
    assert!(v.allowed(), "the measured request must be allowed: {}", v.reason());
    let _ = StatusCode::OK;
    Fixture { state, request, _tmp: tmp }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group("decision_pipeline");
    for n in [10usize, 1_000, 10_000] {
        let f = rt.block_on(fixture(n));
        group.bench_with_input(BenchmarkId::new("in_process", n), &n, |b, _| {
            // The wire request is the handler's to consume: cloned outside the timing.
            b.to_async(&rt).iter_batched(
                || f.request.clone(),
                |request| async {
                    let verdict = pipeline::decide(&f.state, &pipeline::parse(&f.state, request).unwrap());
                    let event = verdict.event(&f.state, "token:bench", None);
                    let _ack = f.state.audit.enqueue(event).await.unwrap();
                    verdict.allowed()
                },
                BatchSize::SmallInput,
            );
        });
        group.bench_with_input(BenchmarkId::new("in_process_durable", n), &n, |b, _| {
            b.to_async(&rt).iter_batched(
                || f.request.clone(),
                |request| async {
                    let verdict = pipeline::decide(&f.state, &pipeline::parse(&f.state, request).unwrap());
                    let event = verdict.event(&f.state, "token:bench", None);
                    f.state.audit.record(event).await.unwrap();
                    verdict.allowed()
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
