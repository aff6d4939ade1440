//! The trail is tamper-evident: each kind of edit to the store file is caught by
//! `mandate audit verify`, which names the first bad sequence number; an untouched trail
//! passes; a kill -9 under load loses no acknowledged decision.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

fn config_with_checkpoints(dir: &Path, every: u64) -> Options {
    Options::with_config(dir, &format!("[audit]\ncheckpoint_every = {every}\ncheckpoint_interval_secs = 1\n"))
}

/// A data directory holding a trail of some 40 events with checkpoints, server stopped.
async fn trail_fixture() -> (tempfile::TempDir, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(tmp.path(), config_with_checkpoints(tmp.path(), 5));
    let agent = register_agent(&server.admin(), "bot", &[]).await;
    let pep = pep(&server).await;
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    for i in 0..30 {
        let action = if i % 3 == 0 { "tickets.write" } else { "tickets.read" };
        pep.evaluate(&evaluation(&agent, &mandate, action, "ticket", &i.to_string(), "public")).await.unwrap();
    }
    server.stop();
    let db = Connection::open(tmp.path().join("data/mandate.db")).unwrap();
    let max: u64 = db.query_row("SELECT max(seq) FROM audit_events", [], |r| r.get(0)).unwrap();
    (tmp, max)
}

fn verify_offline(dir: &Path) -> (bool, String) {
    let out =
        assert_cmd::Command::cargo_bin("mandate").unwrap().args(["audit", "verify", "--data-dir"]).arg(dir.join("data")).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("data/mandate.db")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn untouched_trail_verifies_offline_and_online() {
    let (tmp, max) = trail_fixture().await;
    let (ok, out) = verify_offline(tmp.path());
    assert!(ok, "{out}");
    assert!(out.contains(&format!("head {max} ")), "{out}");
    let server = Server::start_in(tmp.path(), Options::default());
    let r = server.admin().audit_verify().await.unwrap();
    assert!(r.ok, "{r:?}");
    assert!(r.checkpoints >= 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_body_is_caught_at_its_sequence() {
    let (tmp, _) = trail_fixture().await;
    let n = db(tmp.path())
        .execute("UPDATE audit_events SET body = replace(body, '\"decision\":false', '\"decision\":true') WHERE seq = 12", [])
        .unwrap();
    assert_eq!(n, 1);
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok);
    assert!(out.contains("at seq 12"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edited_column_is_caught_at_its_sequence() {
    let (tmp, _) = trail_fixture().await;
    db(tmp.path()).execute("UPDATE audit_events SET agent = 'someone-else' WHERE seq = 9", []).unwrap();
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok);
    assert!(out.contains("at seq 9"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_row_is_caught() {
    let (tmp, _) = trail_fixture().await;
    db(tmp.path()).execute("DELETE FROM audit_events WHERE seq = 15", []).unwrap();
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok);
    assert!(out.contains("at seq 15") || out.contains("at seq 16"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_inserted_row_is_caught() {
    let (tmp, _) = trail_fixture().await;
    let c = db(tmp.path());
    c.execute("UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= 20", []).unwrap();
    c.execute("UPDATE audit_events SET seq = seq - 1000000 + 1 WHERE seq >= 1000000", []).unwrap();
    let (body, prev, hash): (String, String, String) = c
        .query_row("SELECT body, prev_hash, hash FROM audit_events WHERE seq = 21", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    // A forged row that chains correctly onto 19, as an attacker with the file would write it.
    let forged = body.replace("tickets.read", "tickets.export");
    let forged_hash = hex::encode(Sha256::digest(forged.as_bytes()));
    c.execute(
        "INSERT INTO audit_events (seq, ts_ms, kind, actor, agent, task, body, prev_hash, hash)
         SELECT 20, ts_ms, kind, actor, agent, task, ?1, ?2, ?3 FROM audit_events WHERE seq = 21",
        rusqlite::params![forged, prev, forged_hash],
    )
    .unwrap();
    let _ = hash;
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok);
    assert!(out.contains("at seq 20") || out.contains("at seq 21"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reordered_rows_are_caught() {
    let (tmp, _) = trail_fixture().await;
    let c = db(tmp.path());
    c.execute("UPDATE audit_events SET seq = -1 WHERE seq = 10", []).unwrap();
    c.execute("UPDATE audit_events SET seq = 10 WHERE seq = 11", []).unwrap();
    c.execute("UPDATE audit_events SET seq = 11 WHERE seq = -1", []).unwrap();
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok);
    assert!(out.contains("at seq 10"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_tail_is_caught_by_the_checkpoints() {
    let (tmp, max) = trail_fixture().await;
    db(tmp.path()).execute("DELETE FROM audit_events WHERE seq > ?1", [max - 8]).unwrap();
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("truncated"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_chain_is_caught_by_the_signed_checkpoints() {
    let (tmp, max) = trail_fixture().await;
    let c = db(tmp.path());
    // The strongest attacker with the file: edit one event, then re-hash every later event
    // so the chain itself is consistent again. Only the signed checkpoints can tell.
    let mut prev_new: Option<(String, String)> = None;
    for seq in 12..=max {
        let (mut body, prev, hash): (String, String, String) = c
            .query_row("SELECT body, prev_hash, hash FROM audit_events WHERE seq = ?1", [seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        if seq == 12 {
            body = body.replace("\"decision\":false", "\"decision\":true");
        }
        let mut new_prev = prev.clone();
        if let Some((old, new)) = &prev_new {
            assert_eq!(&prev, old);
            body = body.replace(old.as_str(), new.as_str());
            new_prev = new.clone();
        }
        let new_hash = hex::encode(Sha256::digest(body.as_bytes()));
        c.execute(
            "UPDATE audit_events SET body = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
            rusqlite::params![body, new_prev, new_hash, seq],
        )
        .unwrap();
        prev_new = Some((hash, new_hash));
    }
    let (ok, out) = verify_offline(tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("checkpoint"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_acknowledged_decision() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(tmp.path(), config_with_checkpoints(tmp.path(), 50));
    let agent = Arc::new(register_agent(&server.admin(), "bot", &[]).await);
    let pep = pep(&server).await;
    let (mandate, _) = open_task(&server, &agent, &read_intent()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (pep, agent, mandate, stop) = (pep.clone(), agent.clone(), mandate.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 5000 {
                i += 1;
                match pep.evaluate(&evaluation(&agent, &mandate, "tickets.read", "ticket", &format!("{w}-{i}"), "public")).await {
                    Ok(r) => acked.push(r.context.unwrap()["decision_id"].as_str().unwrap().to_owned()),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 50, "the load made only {} decisions", acked.len());
    let (ok, out) = verify_offline(tmp.path());
    assert!(ok, "{out}");
    let c = db(tmp.path());
    let mut stmt = c.prepare("SELECT json_extract(body, '$.details.decision_id') FROM audit_events WHERE kind = 'decision'").unwrap();
    let recorded: std::collections::HashSet<String> = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect();
    let missing: Vec<&String> = acked.iter().filter(|d| !recorded.contains(*d)).collect();
    assert!(missing.is_empty(), "{} acknowledged decisions are not in the trail", missing.len());
}
