//! Audit trail throughput: durable appends to SQLite in batches (group commit), and chain
//! verification, both in events per second.
//!
//! `cargo bench -p mandate-store-sqlite --bench audit`

#![allow(clippy::expect_used, reason = "benchmark set-up: a failure should stop the run loudly")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mandate_audit::{ChainHead, NewEvent, SealedEvent, Verifier, kinds, seal};
use mandate_store::{Store, conformance, verify_audit};
use mandate_store_sqlite::SqliteStore;
use rand::Rng;
use serde_json::json;

/// Events verified per iteration.
const VERIFY_EVENTS: usize = 100_000;

/// A stream of decisions shaped like production traffic: 50 agents, about 200 live tasks at
/// any time with time-ordered ids (UUIDv7-like), each task making many decisions; about 550
/// bytes of body per event.
struct Traffic {
    n: u64,
    rng: rand::rngs::ThreadRng,
}

impl Traffic {
    fn new() -> Self {
        Traffic { n: 0, rng: rand::thread_rng() }
    }

    fn next(&mut self) -> NewEvent {
        self.n += 1;
        let rng = &mut self.rng;
        let task_no = self.n / 50 + rng.gen_range(0..200);
        let allowed = rng.gen_bool(0.8);
        NewEvent {
            ts_ms: 1_750_000_000_000 + self.n as i64,
            kind: kinds::DECISION.into(),
            actor: "pep:gateway-1".into(),
            agent: Some(format!("support-bot-{}", task_no % 50)),
            task: Some(format!("0197a3c2-{task_no:012x}")),
            details: json!({
                "decision_id": format!("dec_{:032x}", rng.r#gen::<u128>()),
                "decision": allowed,
                "reason": if allowed { "permitted by policy support-read" } else { "no policy permits this action" },
                "action": if rng.gen_bool(0.7) { "tickets.read" } else { "tickets.comment" },
                "resource": {"type": "ticket", "id": rng.gen_range(1..100_000).to_string()},
                "policies": if allowed { json!(["support-read", "business-hours"]) } else { json!([]) },
                "policy_version": "sha256:9f2b6c1e0d4a7b3c",
                "obligations": if rng.gen_bool(0.1) { json!([{"type": "approval", "approvers": ["role:support-lead"]}]) } else { json!([]) },
                "context": {"tool": "zendesk", "classification": "internal", "environment": "prod"},
            }),
        }
    }

    fn take(&mut self, n: usize) -> Vec<NewEvent> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn durable_append(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("bench.db")).expect("open store");

    let mut group = c.benchmark_group("audit_append_durable");
    group.measurement_time(Duration::from_secs(8));
    let mut traffic = Traffic::new();
    // Start from a trail that already holds 200k decisions, so indexes are deep.
    rt.block_on(async {
        for _ in 0..200 {
            store.append_audit(traffic.take(1_000)).await.expect("append");
        }
    });
    for batch in [1usize, 64, 256, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch_{batch}"), |b| {
            b.iter_batched(
                || traffic.take(batch),
                |events| rt.block_on(store.append_audit(events)).expect("append"),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn sealed_trail(n: usize) -> Vec<SealedEvent> {
    seal(&ChainHead::genesis(), Traffic::new().take(n))
}

fn verify(c: &mut Criterion) {
    let trail = sealed_trail(VERIFY_EVENTS);
    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(10);
    group.throughput(Throughput::Elements(VERIFY_EVENTS as u64));
    group.bench_function("verifier_push_100k", |b| {
        b.iter(|| {
            let mut v = Verifier::new(conformance::trusted_keys());
            for e in &trail {
                v.push(e).expect("genuine trail");
            }
            black_box(v.finish(&[]).expect("genuine trail"))
        });
    });

    // The same, read back from SQLite page by page: what `mandate audit verify` costs.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("verify.db")).expect("open store");
    rt.block_on(async {
        let mut traffic = Traffic::new();
        for _ in 0..VERIFY_EVENTS / 1_000 {
            store.append_audit(traffic.take(1_000)).await.expect("append");
        }
    });
    group.bench_function("sqlite_read_and_verify_100k", |b| {
        b.iter(|| {
            let report = rt.block_on(verify_audit(&store, conformance::trusted_keys())).expect("read");
            black_box(report.expect("genuine trail"))
        });
    });
    group.finish();
}

criterion_group!(benches, durable_append, verify);
criterion_main!(benches);
