//! Conformance of dynamic credential leases: one undropped lease per (secret, task), what is
//! due, and dropping exactly once.

use mandate_core::{TaskEnd, TaskStatus};

use super::{T0, agent, join_all, task, unique};
use crate::{Lease, LeaseFilter, SealedSecretBlob, Store, StoreError};

fn lease(id: &str, secret: &str, task_id: &str, created_at_ms: i64, expires_at_ms: i64) -> Lease {
    Lease {
        id: id.to_owned(),
        secret: secret.to_owned(),
        secret_version: 3,
        task_id: task_id.to_owned(),
        role: format!("mandate_{}", id.replace('-', "")),
        credential: SealedSecretBlob {
            wrapped_key: vec![7; 48],
            key_nonce: vec![1; 12],
            nonce: vec![2; 12],
            ciphertext: vec![0, 255, 9, 0, 128],
        },
        created_at_ms,
        expires_at_ms,
        dropped_at_ms: None,
        drop_reason: None,
    }
}

fn ids(leases: &[Lease]) -> Vec<&str> {
    leases.iter().map(|l| l.id.as_str()).collect()
}

/// Insert and read back (bytes included); conflicts on the id and on an undropped (secret,
/// task); unknown tasks; the undropped lease of (secret, task); list filters and order; what is
/// due (expiry, or a task no longer live); dropping once, keeping the first time and reason; a
/// dropped lease frees (secret, task) for a new one.
pub async fn leases(store: &dyn Store) {
    let owner = agent(&unique("lease-agent"));
    store.insert_agent(&owner).await.unwrap();
    let t1 = task(&unique("t"), &owner, T0, T0 + 3_600_000);
    let t2 = task(&unique("t"), &owner, T0 + 10, T0 + 60_000);
    store.insert_task(&t1).await.unwrap();
    store.insert_task(&t2).await.unwrap();
    let db = unique("orders-db");
    let other = unique("other-db");

    let l1 = lease(&unique("lease"), &db, &t1.id, T0 + 1_000, t1.expires_at_ms);
    store.insert_lease(&l1).await.unwrap();
    assert_eq!(store.get_lease(&l1.id).await.unwrap(), Some(l1.clone()), "leases: round-trip");
    assert_eq!(store.get_lease("no-such-lease").await.unwrap(), None, "leases: unknown reads None");
    assert_eq!(store.undropped_lease(&db, &t1.id).await.unwrap(), Some(l1.clone()), "leases: the undropped lease of (secret, task)");
    assert_eq!(store.undropped_lease(&db, &t2.id).await.unwrap(), None, "leases: another task has none");
    assert_eq!(store.undropped_lease(&other, &t1.id).await.unwrap(), None, "leases: another secret has none");

    assert!(matches!(store.insert_lease(&l1).await, Err(StoreError::Conflict(_))), "leases: the same id twice is a conflict");
    let twin = lease(&unique("lease"), &db, &t1.id, T0 + 1_001, t1.expires_at_ms);
    assert!(
        matches!(store.insert_lease(&twin).await, Err(StoreError::Conflict(_))),
        "leases: a second undropped lease of the same (secret, task) is a conflict"
    );
    assert_eq!(store.get_lease(&twin.id).await.unwrap(), None, "leases: a refused insert leaves nothing");
    let orphan = lease(&unique("lease"), &db, "no-such-task", T0, T0 + 1);
    assert!(matches!(store.insert_lease(&orphan).await, Err(StoreError::NotFound(_))), "leases: an unknown task is not found");
    assert_eq!(store.get_lease(&orphan.id).await.unwrap(), None, "leases: a refused insert for an unknown task leaves nothing");

    let l2 = lease(&unique("lease"), &other, &t1.id, T0 + 2_000, t1.expires_at_ms);
    let l3 = lease(&unique("lease"), &db, &t2.id, T0 + 3_000, t2.expires_at_ms);
    store.insert_lease(&l2).await.unwrap();
    store.insert_lease(&l3).await.unwrap();

    // Listing: newest first, filtered by task, secret and undropped.
    let mine = |v: Vec<Lease>| -> Vec<Lease> { v.into_iter().filter(|l| [&l1.id, &l2.id, &l3.id].contains(&&l.id)).collect() };
    let all = mine(store.list_leases(&LeaseFilter { limit: 10_000, ..LeaseFilter::default() }).await.unwrap());
    assert_eq!(ids(&all), [l3.id.as_str(), &l2.id, &l1.id], "leases: list is newest first");
    let of_t1 = store.list_leases(&LeaseFilter { task: Some(t1.id.clone()), ..LeaseFilter::default() }).await.unwrap();
    assert_eq!(ids(&of_t1), [l2.id.as_str(), &l1.id], "leases: list by task");
    let of_db = store.list_leases(&LeaseFilter { secret: Some(db.clone()), ..LeaseFilter::default() }).await.unwrap();
    assert_eq!(ids(&of_db), [l3.id.as_str(), &l1.id], "leases: list by secret");
    let both = LeaseFilter { task: Some(t1.id.clone()), secret: Some(db.clone()), ..LeaseFilter::default() };
    assert_eq!(ids(&store.list_leases(&both).await.unwrap()), [l1.id.as_str()], "leases: filters combine");
    let one = LeaseFilter { task: Some(t1.id.clone()), limit: 1, ..LeaseFilter::default() };
    assert_eq!(ids(&store.list_leases(&one).await.unwrap()), [l2.id.as_str()], "leases: limit caps the count");
    let none = LeaseFilter { limit: 0, ..LeaseFilter::default() };
    assert!(store.list_leases(&none).await.unwrap().is_empty(), "leases: limit 0 returns nothing");

    // Due: by expiry while the task is live.
    let due = |v: Vec<Lease>| -> Vec<String> { mine(v).into_iter().map(|l| l.id).collect() };
    assert!(due(store.due_leases(T0 + 59_999).await.unwrap()).is_empty(), "leases: nothing is due before expiry while tasks are live");
    assert_eq!(due(store.due_leases(T0 + 60_000).await.unwrap()), vec![l3.id.clone()], "leases: due once expires_at_ms <= now");
    let mut same_expiry = vec![l1.id.clone(), l2.id.clone()];
    same_expiry.sort();
    let mut expected = vec![l3.id.clone()];
    expected.extend(same_expiry.iter().cloned());
    assert_eq!(due(store.due_leases(T0 + 3_600_000).await.unwrap()), expected, "leases: due soonest expiry first, then id");

    // Due: the task ended, long before the lease's expiry.
    let end = TaskEnd { status: TaskStatus::Completed, at_ms: T0 + 5_000, by: "system".into(), reason: "done".into() };
    assert_eq!(store.end_tasks(std::slice::from_ref(&t1.id), &end).await.unwrap(), vec![t1.id.clone()]);
    assert_eq!(due(store.due_leases(T0 + 5_001).await.unwrap()), same_expiry, "leases: an ended task's leases are due at once");

    // Dropping: once, the first time and reason stay.
    assert!(store.drop_lease(&l1.id, T0 + 6_000, "task_completed").await.unwrap(), "leases: the first drop marks it");
    assert!(!store.drop_lease(&l1.id, T0 + 7_000, "lease_expired").await.unwrap(), "leases: a second drop does nothing");
    assert!(!store.drop_lease("no-such-lease", T0, "x").await.unwrap(), "leases: dropping an unknown lease is false");
    let dropped = store.get_lease(&l1.id).await.unwrap().unwrap();
    assert_eq!(
        (dropped.dropped_at_ms, dropped.drop_reason.as_deref()),
        (Some(T0 + 6_000), Some("task_completed")),
        "leases: first drop kept"
    );
    assert!(!dropped.is_undropped());
    assert_eq!(Lease { dropped_at_ms: None, drop_reason: None, ..dropped.clone() }, l1, "leases: a drop changes nothing else");
    assert_eq!(store.undropped_lease(&db, &t1.id).await.unwrap(), None, "leases: a dropped lease is not the undropped one");
    assert_eq!(due(store.due_leases(T0 + 5_001).await.unwrap()), vec![l2.id.clone()], "leases: a dropped lease is not due");
    let undropped = LeaseFilter { task: Some(t1.id.clone()), undropped: true, ..LeaseFilter::default() };
    assert_eq!(ids(&store.list_leases(&undropped).await.unwrap()), [l2.id.as_str()], "leases: list only the undropped");
    let listed = store.list_leases(&LeaseFilter { task: Some(t1.id.clone()), ..LeaseFilter::default() }).await.unwrap();
    assert_eq!(ids(&listed), [l2.id.as_str(), &l1.id], "leases: list holds dropped ones too");

    // A dropped lease frees its (secret, task) for a new one (a store does not judge liveness).
    let again = lease(&unique("lease"), &db, &t1.id, T0 + 8_000, t1.expires_at_ms);
    store.insert_lease(&again).await.expect("leases: a new lease once the old one is dropped");
    assert_eq!(store.undropped_lease(&db, &t1.id).await.unwrap(), Some(again.clone()));

    for l in [&l2, &l3, &again] {
        assert!(store.drop_lease(&l.id, T0 + 9_000, "cleanup").await.unwrap());
    }
    assert!(due(store.due_leases(i64::MAX).await.unwrap()).is_empty(), "leases: nothing dropped is due");
}

/// Racing inserts for one (secret, task): exactly one succeeds. Racing drops of one lease:
/// exactly one returns `true`.
pub async fn concurrent_lease_drops(store: &dyn Store) {
    let owner = agent(&unique("lease-race-agent"));
    store.insert_agent(&owner).await.unwrap();
    let t = task(&unique("t"), &owner, T0, T0 + 60_000);
    store.insert_task(&t).await.unwrap();
    let secret = unique("race-db");

    let candidates: Vec<Lease> = (0..8).map(|i| lease(&unique("lease"), &secret, &t.id, T0 + i, t.expires_at_ms)).collect();
    let inserted = join_all(candidates.iter().map(|l| store.insert_lease(l)).collect()).await;
    let won: Vec<&Lease> = candidates.iter().zip(&inserted).filter(|(_, r)| r.is_ok()).map(|(l, _)| l).collect();
    assert_eq!(won.len(), 1, "concurrent_lease_drops: exactly one of racing inserts for one (secret, task) succeeds");
    for r in &inserted {
        assert!(matches!(r, Ok(()) | Err(StoreError::Conflict(_))), "concurrent_lease_drops: the losers are conflicts, got {r:?}");
    }
    let winner = won.into_iter().next().unwrap().clone();

    let drops = join_all((0..8).map(|i| store.drop_lease(&winner.id, T0 + 100 + i, "task_revoked")).collect()).await;
    let marked = drops.into_iter().map(|r| r.unwrap()).filter(|d| *d).count();
    assert_eq!(marked, 1, "concurrent_lease_drops: exactly one of racing drops marks the lease");
    assert!(store.get_lease(&winner.id).await.unwrap().unwrap().dropped_at_ms.is_some());
}
