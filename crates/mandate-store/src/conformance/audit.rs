//! Conformance of the audit trail: sealing, continuity, reads, queries, checkpoints, and
//! concurrent appends.

use std::collections::BTreeSet;

use mandate_audit::{ChainHead, GENESIS_HASH, NewEvent, SealedEvent, Verifier, kinds, sign_checkpoint};

use super::{CHECKPOINT_KID, T0, checkpoint_key, decision, join_all, trusted_keys, unique};
use crate::{AuditQuery, Store, StoreError, verify_audit};

/// Appends seal onto the stored head, continue across calls, and read back unchanged.
pub async fn audit_append(store: &dyn Store) {
    let head = store.audit_head().await.unwrap();
    let agent = unique("audit-agent");
    let task = unique("audit-task");
    let batch: Vec<NewEvent> = (0..3).map(|n| decision(kinds::DECISION, Some(&agent), Some(&task), T0 + n as i64, n)).collect();
    let sealed = store.append_audit(batch.clone()).await.unwrap();
    assert_eq!(sealed.len(), 3, "audit_append: one sealed event per event");
    let expected = mandate_audit::seal(&head, batch.clone());
    assert_eq!(sealed, expected, "audit_append: events are sealed onto the stored head with mandate_audit::seal");
    if head.seq == 0 {
        assert_eq!(sealed[0].prev_hash, GENESIS_HASH, "audit_append: the first event links to genesis");
    }
    for (e, original) in sealed.iter().zip(&batch) {
        assert_eq!(e.details(), original.details, "audit_append: details survive sealing");
    }

    let after_first = store.audit_head().await.unwrap();
    assert_eq!(after_first, ChainHead { seq: head.seq + 3, hash: sealed[2].hash.clone() }, "audit_append: head is the last appended event");

    let more = store.append_audit(vec![decision(kinds::TASK_COMPLETED, Some(&agent), Some(&task), T0 + 9, 9)]).await.unwrap();
    assert_eq!(more[0].seq, head.seq + 4, "audit_append: the next call continues the seq");
    assert_eq!(more[0].prev_hash, sealed[2].hash, "audit_append: the next call links to the last hash");

    assert!(store.append_audit(Vec::new()).await.unwrap().is_empty(), "audit_append: an empty batch seals nothing");
    assert_eq!(store.audit_head().await.unwrap().seq, head.seq + 4, "audit_append: an empty batch leaves the head");

    let read = store.read_audit(head.seq, 100).await.unwrap();
    let mut appended = sealed.clone();
    appended.extend(more);
    assert_eq!(read, appended, "audit_append: events read back exactly as sealed");

    let odd = NewEvent {
        ts_ms: -1,
        kind: kinds::SERVER_STARTED.into(),
        actor: "system".into(),
        agent: None,
        task: None,
        details: serde_json::json!({"big": u64::MAX, "neg": i64::MIN, "float": 0.1, "nested": {"b": [], "a": {}}}),
    };
    let sealed_odd = store.append_audit(vec![odd.clone()]).await.unwrap();
    let read_odd = store.read_audit(head.seq + 4, 10).await.unwrap();
    assert_eq!(read_odd, sealed_odd, "audit_append: unusual values read back exactly");
    assert_eq!(read_odd[0].details(), odd.details, "audit_append: unusual details survive");
}

/// Paging, filters and per-task evidence, all in ascending seq.
pub async fn audit_reads(store: &dyn Store) {
    let base = store.audit_head().await.unwrap().seq;
    let (k1, k2) = (unique("conformance.kind"), unique("conformance.kind"));
    let (a, b) = (unique("reads-agent"), unique("reads-agent"));
    let (t1, t2) = (unique("reads-task"), unique("reads-task"));
    let events = vec![
        decision(&k1, Some(&a), Some(&t1), T0 + 1_000, 1),
        decision(&k2, Some(&a), Some(&t2), T0 + 2_000, 2),
        decision(&k1, Some(&b), Some(&t1), T0 + 3_000, 3),
        decision(&k1, None, None, T0 + 4_000, 4),
    ];
    let sealed = store.append_audit(events).await.unwrap();
    let seqs = |es: &[SealedEvent]| es.iter().map(|e| e.seq).collect::<Vec<_>>();
    let s = seqs(&sealed);

    assert_eq!(seqs(&store.read_audit(base, 2).await.unwrap()), s[..2], "audit_reads: first page");
    assert_eq!(seqs(&store.read_audit(s[1], 2).await.unwrap()), s[2..], "audit_reads: next page");
    assert!(store.read_audit(s[3], 10).await.unwrap().is_empty(), "audit_reads: nothing after the head");
    assert!(store.read_audit(base, 0).await.unwrap().is_empty(), "audit_reads: limit 0 returns nothing");
    assert!(store.read_audit(u64::MAX, 10).await.unwrap().is_empty(), "audit_reads: far past the head");
    let from_start = store.read_audit(0, 1).await.unwrap();
    assert_eq!(from_start[0].seq, 1, "audit_reads: after_seq 0 reads from seq 1");

    let mine = AuditQuery { after_seq: Some(base), ..AuditQuery::default() };
    let by_kind = AuditQuery { kind: Some(k1.clone()), ..mine.clone() };
    let by_agent = AuditQuery { agent: Some(a.clone()), ..mine.clone() };
    let cases: Vec<(&str, AuditQuery, Vec<u64>)> = vec![
        ("by kind", by_kind.clone(), vec![s[0], s[2], s[3]]),
        ("by agent", by_agent.clone(), vec![s[0], s[1]]),
        ("by task", AuditQuery { task: Some(t1.clone()), ..mine.clone() }, vec![s[0], s[2]]),
        ("filters combine", AuditQuery { agent: Some(a.clone()), ..by_kind.clone() }, vec![s[0]]),
        ("since_ms is inclusive", AuditQuery { since_ms: Some(T0 + 3_000), ..by_kind.clone() }, vec![s[2], s[3]]),
        ("after_seq is exclusive", AuditQuery { after_seq: Some(s[2]), ..by_kind.clone() }, vec![s[3]]),
        ("limit keeps the lowest seqs", AuditQuery { limit: 2, ..by_kind.clone() }, vec![s[0], s[2]]),
        ("limit 0 returns nothing", AuditQuery { limit: 0, ..by_kind.clone() }, vec![]),
        ("no after_seq searches the whole trail", AuditQuery { kind: Some(k2.clone()), ..AuditQuery::default() }, vec![s[1]]),
    ];
    for (what, query, expected) in cases {
        assert_eq!(seqs(&store.query_audit(&query).await.unwrap()), expected, "audit_reads: query {what}");
    }
    let full = store.query_audit(&by_agent).await.unwrap();
    assert_eq!(full, sealed[..2], "audit_reads: query returns whole events");

    let evidence = store.audit_for_tasks(&[t2.clone(), t1.clone(), t1.clone()]).await.unwrap();
    assert_eq!(seqs(&evidence), [s[0], s[1], s[2]], "audit_reads: evidence of several tasks, ascending, each once");
    assert_eq!(evidence[1], sealed[1], "audit_reads: evidence returns whole events");
    assert!(store.audit_for_tasks(&[]).await.unwrap().is_empty(), "audit_reads: no tasks, no evidence");
    assert!(store.audit_for_tasks(&["no-such-task".into()]).await.unwrap().is_empty());
}

/// Checkpoints are stored once per seq, listed ascending, and verify against the trail.
pub async fn checkpoints(store: &dyn Store) {
    let key = checkpoint_key();
    store.append_audit(vec![decision(kinds::DECISION, None, None, T0, 1)]).await.unwrap();
    let first_head = store.audit_head().await.unwrap();
    let first = sign_checkpoint(&first_head, T0 + 1, CHECKPOINT_KID, &key);
    store.append_audit(vec![decision(kinds::DECISION, None, None, T0, 2)]).await.unwrap();
    let second = sign_checkpoint(&store.audit_head().await.unwrap(), T0 + 2, CHECKPOINT_KID, &key);
    store.insert_checkpoint(&second).await.unwrap();
    store.insert_checkpoint(&first).await.unwrap();

    let listed = store.list_checkpoints().await.unwrap();
    let seqs: Vec<u64> = listed.iter().map(|c| c.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(seqs, sorted, "checkpoints: listed in ascending seq");
    assert!(listed.contains(&first) && listed.contains(&second), "checkpoints: read back exactly");

    let again = sign_checkpoint(&first_head, T0 + 3, CHECKPOINT_KID, &key);
    assert!(
        matches!(store.insert_checkpoint(&again).await, Err(StoreError::Conflict(_))),
        "checkpoints: a second checkpoint at the same seq must be a conflict"
    );

    let report = verify_audit(store, trusted_keys()).await.unwrap().expect("checkpoints: trail and checkpoints verify");
    assert!(report.checkpoints >= 2, "checkpoints: every checkpoint was checked");
}

/// Appends racing from several writers form one gap-free chain that verifies.
pub async fn concurrent_appends(store: &dyn Store) {
    const WRITERS: u64 = 8;
    const CALLS: u64 = 25;
    let start = store.audit_head().await.unwrap();

    let writer = |w: u64| async move {
        let agent = format!("writer-{w}");
        let mut seqs = Vec::new();
        for call in 0..CALLS {
            let batch: Vec<NewEvent> = (0..=(call % 3))
                .map(|i| decision(kinds::DECISION, Some(&agent), None, T0 + (call * 10 + i) as i64, w * 1_000 + call))
                .collect();
            let len = batch.len();
            let sealed = store.append_audit(batch).await.unwrap();
            assert_eq!(sealed.len(), len, "concurrent_appends: every event sealed");
            assert!(
                sealed.windows(2).all(|p| p[1].seq == p[0].seq + 1 && p[1].prev_hash == p[0].hash),
                "concurrent_appends: one call's events are contiguous"
            );
            seqs.extend(sealed.iter().map(|e| e.seq));
        }
        seqs
    };
    let results = join_all((0..WRITERS).map(writer).collect()).await;

    let all: Vec<u64> = results.into_iter().flatten().collect();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "concurrent_appends: no seq handed out twice");
    let head = store.audit_head().await.unwrap();
    assert_eq!(head.seq, start.seq + all.len() as u64, "concurrent_appends: head counts every event");
    let expected: BTreeSet<u64> = (start.seq + 1..=head.seq).collect();
    assert_eq!(distinct, expected, "concurrent_appends: the seqs are exactly the new range");

    let mut verifier = Verifier::new(trusted_keys());
    let mut after = 0;
    loop {
        let page = store.read_audit(after, 97).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            verifier.push(e).unwrap_or_else(|f| panic!("concurrent_appends: trail fails verification: {f}"));
        }
    }
    let checkpoints = store.list_checkpoints().await.unwrap();
    let report = verifier.finish(&checkpoints).unwrap_or_else(|f| panic!("concurrent_appends: checkpoints fail: {f}"));
    assert_eq!((report.last_seq, report.last_hash), (head.seq, head.hash), "concurrent_appends: verified up to the head");
}
