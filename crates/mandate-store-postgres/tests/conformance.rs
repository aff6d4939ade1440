//! The shared storage conformance suite, run against PostgreSQL in a fresh schema, and appends
//! from two stores sharing one schema forming one chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use mandate_audit::{NewEvent, kinds};
use mandate_store::{Store, conformance, verify_audit};
use serde_json::json;

use common::TestSchema;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    let Some(schema) = TestSchema::new() else { return };
    let store: Arc<dyn Store> = Arc::new(schema.connect().await);
    conformance::run_all(store).await;
}

#[tokio::test]
async fn postgres_store_conforms_on_a_current_thread_runtime() {
    let Some(schema) = TestSchema::new() else { return };
    let store: Arc<dyn Store> = Arc::new(schema.connect().await);
    conformance::run_all(store).await;
}

/// Two stores (two servers) appending at once, from 8 tasks of 50 batches each, build one chain:
/// every seq once, no gaps, and it verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_appending_at_once_build_one_chain() {
    let Some(schema) = TestSchema::new() else { return };
    let stores = [Arc::new(schema.connect().await), Arc::new(schema.connect().await)];
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let store = Arc::clone(&stores[(w % 2) as usize]);
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for batch in 0..50u64 {
                let events: Vec<NewEvent> = (0..=(batch % 4))
                    .map(|i| NewEvent {
                        ts_ms: 1_750_000_000_000 + (batch * 10 + i) as i64,
                        kind: kinds::DECISION.into(),
                        actor: format!("agent:writer-{w}"),
                        agent: Some(format!("writer-{w}")),
                        task: Some(format!("task-{w}-{batch}")),
                        details: json!({"writer": w, "batch": batch, "i": i, "note": "ünï \"q\""}),
                    })
                    .collect();
                let n = events.len();
                let sealed = store.append_audit(events).await.unwrap();
                assert_eq!(sealed.len(), n);
                assert!(sealed.windows(2).all(|p| p[1].seq == p[0].seq + 1 && p[1].prev_hash == p[0].hash), "a batch is contiguous");
                seqs.extend(sealed.iter().map(|e| e.seq));
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "no seq handed out twice");
    assert_eq!(distinct, (1..=all.len() as u64).collect(), "the seqs are 1..=n without gaps");
    for store in &stores {
        let head = store.audit_head().await.unwrap();
        assert_eq!(head.seq, all.len() as u64, "both stores see one head");
        let report = verify_audit(store.as_ref(), conformance::trusted_keys()).await.unwrap().expect("the shared trail verifies");
        assert_eq!((report.events, report.last_seq, report.last_hash), (all.len() as u64, head.seq, head.hash));
    }
}

/// A batch PostgreSQL refuses part of (a NUL in a text column) is refused whole: nothing of it
/// is stored and the head stays, and the next batch continues the chain.
#[tokio::test]
async fn a_refused_batch_leaves_nothing() {
    let Some(schema) = TestSchema::new() else { return };
    let store = schema.connect().await;
    let event = |kind: &str| NewEvent {
        ts_ms: 1_750_000_000_000,
        kind: kind.into(),
        actor: "system".into(),
        agent: None,
        task: None,
        details: json!({}),
    };
    store.append_audit(vec![event(kinds::SERVER_STARTED)]).await.unwrap();
    let head = store.audit_head().await.unwrap();
    let err = store.append_audit(vec![event(kinds::DECISION), event("bad\0kind"), event(kinds::DECISION)]).await.unwrap_err();
    assert_eq!(err.code(), "invalid_store_request", "{err}");
    assert_eq!(store.audit_head().await.unwrap(), head, "the head stays");
    assert_eq!(store.read_audit(0, 10).await.unwrap().len(), 1, "nothing of the batch is stored");
    let next = store.append_audit(vec![event(kinds::DECISION)]).await.unwrap();
    assert_eq!((next[0].seq, next[0].prev_hash.as_str()), (head.seq + 1, head.hash.as_str()), "the chain goes on from the head");
    verify_audit(&store, conformance::trusted_keys()).await.unwrap().expect("the trail verifies");
}
