//! The shared storage conformance suite, run against PostgreSQL in a fresh schema, and appends
//! from two stores sharing one schema forming one chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use mandate_audit::{NewEvent, kinds};
use mandate_core::{ApprovalStatus, TaskStatus};
use mandate_store::{Lease, SealedSecretBlob, Store, StoreError, conformance, verify_audit};
use serde_json::json;

use common::{T0, TestSchema, agent, approval, end, task};

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

/// One-shot moves raced from two stores (two servers): each has exactly one winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_servers_get_one_winner() {
    let Some(schema) = TestSchema::new() else { return };
    let stores = [Arc::new(schema.connect().await), Arc::new(schema.connect().await)];
    let racers = |n: usize| (0..n).map(|i| Arc::clone(&stores[i % 2])).collect::<Vec<_>>();
    async fn wins<F: std::future::Future<Output = bool> + Send + 'static>(calls: Vec<F>) -> usize {
        let handles: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
        let mut n = 0;
        for h in handles {
            n += usize::from(h.await.unwrap());
        }
        n
    }

    let first_use = racers(16).into_iter().map(|s| async move { s.consume_jti("https://idp", "j1", T0 + 10, T0).await.unwrap() });
    assert_eq!(wins(first_use.collect()).await, 1, "one first use of an attestation id");
    let after_expiry = racers(16).into_iter().map(|s| async move { s.consume_jti("https://idp", "j1", T0 + 99, T0 + 11).await.unwrap() });
    assert_eq!(wins(after_expiry.collect()).await, 1, "one first use after the entry expired");

    stores[0].put_meta("ring", "v1").await.unwrap();
    let swaps =
        racers(16).into_iter().enumerate().map(|(i, s)| async move { s.swap_meta("ring", Some("v1"), &format!("v2-{i}")).await.unwrap() });
    assert_eq!(wins(swaps.collect()).await, 1, "one compare-and-set from a value");

    let bot = agent("racer");
    stores[0].insert_agent(&bot).await.unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("race-{i}")).collect();
    for id in &ids {
        stores[1].insert_task(&task(id, &bot)).await.unwrap();
    }
    let ends = racers(6).into_iter().enumerate().map(|(i, s)| {
        let mut ids = ids.clone();
        if i % 2 == 1 {
            ids.reverse();
        }
        async move { s.end_tasks(&ids, &end(TaskStatus::Revoked)).await.unwrap() }
    });
    let handles: Vec<_> = ends.map(tokio::spawn).collect();
    let mut ended = Vec::new();
    for h in handles {
        ended.extend(h.await.unwrap());
    }
    ended.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(ended, expected, "every task ended exactly once");

    stores[0].insert_approval(&approval("apr", &ids[0], T0 + 60_000)).await.unwrap();
    let decisions = racers(8).into_iter().enumerate().map(|(i, s)| async move {
        let to = if i % 2 == 0 { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
        s.decide_approval("apr", to, "tok", "ops", "", T0 + 1).await.unwrap().unwrap().1
    });
    assert_eq!(wins(decisions.collect()).await, 1, "one decision moves an approval");
    stores[1].insert_approval(&approval("apr-use", &ids[0], T0 + 60_000)).await.unwrap();
    stores[1].decide_approval("apr-use", ApprovalStatus::Approved, "tok", "ops", "", T0 + 1).await.unwrap().unwrap();
    let uses = racers(8)
        .into_iter()
        .enumerate()
        .map(|(i, s)| async move { s.use_approval("apr-use", &format!("dec-{i}"), T0 + 2).await.unwrap().is_some() });
    assert_eq!(wins(uses.collect()).await, 1, "one use of an approval");

    let leases = racers(8).into_iter().enumerate().map(|(i, s)| {
        let lease = Lease {
            id: format!("lease_{i}"),
            secret: "orders-db".into(),
            secret_version: 1,
            task_id: ids[1].clone(),
            role: format!("mandate_role_{i}"),
            credential: SealedSecretBlob { wrapped_key: vec![1], key_nonce: vec![2], nonce: vec![3], ciphertext: vec![4] },
            created_at_ms: T0,
            expires_at_ms: T0 + 60_000,
            dropped_at_ms: None,
            drop_reason: None,
        };
        async move {
            match s.insert_lease(&lease).await {
                Ok(()) => true,
                Err(StoreError::Conflict(_)) => false,
                Err(e) => panic!("a racing lease insert failed otherwise: {e}"),
            }
        }
    });
    assert_eq!(wins(leases.collect()).await, 1, "one undropped lease per (secret, task)");
    let lease = stores[0].undropped_lease("orders-db", &ids[1]).await.unwrap().expect("the winner");
    let drops = racers(8).into_iter().map(|s| {
        let id = lease.id.clone();
        async move { s.drop_lease(&id, T0 + 5, "task_revoked").await.unwrap() }
    });
    assert_eq!(wins(drops.collect()).await, 1, "one drop marks a lease");
}
