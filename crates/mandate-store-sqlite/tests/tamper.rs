//! Tampering with the trail through plain SQL is caught by verification, at the first bad seq.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step should stop the test loudly"
)]

use mandate_audit::{NewEvent, codes, kinds, sign_checkpoint};
use mandate_store::{Store, conformance, verify_audit};
use mandate_store_sqlite::SqliteStore;
use rusqlite::Connection;
use serde_json::json;

/// A store with 20 events and a checkpoint at seq 15.
async fn trail() -> (tempfile::TempDir, std::path::PathBuf, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let store = SqliteStore::open(&path).unwrap();
    for batch in 0..4 {
        let events = (0..5)
            .map(|i| NewEvent {
                ts_ms: 1_750_000_000_000 + batch * 10 + i,
                kind: kinds::DECISION.into(),
                actor: "agent:bot".into(),
                agent: Some("bot".into()),
                task: Some(format!("task-{batch}")),
                details: json!({"decision": i % 2 == 0, "action": "tickets.read", "resource": {"type": "ticket", "id": i.to_string()}}),
            })
            .collect();
        store.append_audit(events).await.unwrap();
        if batch == 2 {
            let head = store.audit_head().await.unwrap();
            let cp = sign_checkpoint(&head, 1, conformance::CHECKPOINT_KID, &conformance::checkpoint_key());
            store.insert_checkpoint(&cp).await.unwrap();
        }
    }
    (dir, path, store)
}

async fn verdict(store: &SqliteStore) -> Result<u64, (u64, &'static str)> {
    match verify_audit(store, conformance::trusted_keys()).await {
        Ok(Ok(report)) => Ok(report.last_seq),
        Ok(Err(f)) => Err((f.seq, f.code)),
        Err(e) => panic!("reading the trail failed: {e}"),
    }
}

fn sql(path: &std::path::Path, statements: &str) {
    Connection::open(path).unwrap().execute_batch(statements).unwrap();
}

#[tokio::test]
async fn an_untouched_trail_verifies() {
    let (_dir, _path, store) = trail().await;
    assert_eq!(verdict(&store).await, Ok(20));
}

#[tokio::test]
async fn an_edited_column_is_caught() {
    for (column, value) in [("kind", "'task.opened'"), ("actor", "'agent:mallory'"), ("agent", "NULL"), ("task", "'x'"), ("ts_ms", "0")] {
        let (_dir, path, store) = trail().await;
        sql(&path, &format!("UPDATE audit_events SET {column} = {value} WHERE seq = 7"));
        assert_eq!(verdict(&store).await, Err((7, codes::BODY_MISMATCH)), "{column}");
    }
}

#[tokio::test]
async fn an_edited_body_is_caught() {
    let (_dir, path, store) = trail().await;
    sql(&path, "UPDATE audit_events SET body = replace(body, 'tickets.read', 'tickets.wipe') WHERE seq = 8");
    assert_eq!(verdict(&store).await, Err((8, codes::HASH_MISMATCH)));
}

#[tokio::test]
async fn a_deleted_row_is_caught() {
    let (_dir, path, store) = trail().await;
    sql(&path, "DELETE FROM audit_events WHERE seq = 12");
    assert_eq!(verdict(&store).await, Err((12, codes::SEQUENCE_GAP)));
}

#[tokio::test]
async fn an_inserted_row_is_caught() {
    let (_dir, path, store) = trail().await;
    // Make room at seq 5 by moving every later row up one, then copy row 4 into the gap.
    sql(
        &path,
        "UPDATE audit_events SET seq = -seq WHERE seq >= 5;
         UPDATE audit_events SET seq = 1 - seq WHERE seq < 0;
         INSERT INTO audit_events SELECT 5, ts_ms, kind, actor, agent, task, body, prev_hash, hash FROM audit_events WHERE seq = 4;",
    );
    assert_eq!(verdict(&store).await, Err((5, codes::BODY_MISMATCH)));
}

#[tokio::test]
async fn a_row_at_seq_zero_is_caught() {
    let (_dir, path, store) = trail().await;
    sql(&path, "INSERT INTO audit_events SELECT 0, ts_ms, kind, actor, agent, task, body, prev_hash, hash FROM audit_events WHERE seq = 1");
    assert_eq!(verdict(&store).await, Err((1, codes::SEQUENCE_GAP)));
}

#[tokio::test]
async fn reordered_rows_are_caught() {
    let (_dir, path, store) = trail().await;
    sql(
        &path,
        "UPDATE audit_events SET seq = -1 WHERE seq = 9;
         UPDATE audit_events SET seq = 9 WHERE seq = 10;
         UPDATE audit_events SET seq = 10 WHERE seq = -1;",
    );
    assert_eq!(verdict(&store).await, Err((9, codes::BODY_MISMATCH)));
}

#[tokio::test]
async fn truncating_below_a_checkpoint_is_caught() {
    let (_dir, path, store) = trail().await;
    sql(&path, "DELETE FROM audit_events WHERE seq > 13");
    assert_eq!(verdict(&store).await, Err((14, codes::TRUNCATED)));
}

#[tokio::test]
async fn truncating_above_the_last_checkpoint_is_not_evidence() {
    let (_dir, path, store) = trail().await;
    sql(&path, "DELETE FROM audit_events WHERE seq > 15");
    assert_eq!(verdict(&store).await, Ok(15));
}

#[tokio::test]
async fn an_edited_checkpoint_is_caught() {
    let (_dir, path, store) = trail().await;
    sql(&path, "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_events WHERE seq = 14)");
    assert_eq!(verdict(&store).await, Err((15, codes::BAD_CHECKPOINT_SIGNATURE)));
}

#[tokio::test]
async fn appends_continue_after_a_tampered_head_is_read_as_is() {
    // The store seals onto whatever the last row says; verification is what judges the trail.
    let (_dir, path, store) = trail().await;
    sql(&path, "UPDATE audit_events SET hash = 'x' WHERE seq = 20");
    let next = store
        .append_audit(vec![NewEvent {
            ts_ms: 0,
            kind: kinds::SERVER_STOPPED.into(),
            actor: "system".into(),
            agent: None,
            task: None,
            details: json!({}),
        }])
        .await
        .unwrap();
    assert_eq!((next[0].seq, next[0].prev_hash.as_str()), (21, "x"));
    assert_eq!(verdict(&store).await, Err((20, codes::HASH_MISMATCH)));
}
