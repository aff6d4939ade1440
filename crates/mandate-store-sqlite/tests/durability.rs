//! What a store acknowledged is there after re-opening, including after the process was killed
//! with SIGKILL mid-write. (Power loss is covered by `synchronous=FULL`, which fsyncs the
//! write-ahead log at every commit; a test cannot pull the plug.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step should stop the test loudly"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use mandate_audit::{NewEvent, kinds};
use mandate_core::{Agent, AgentName, AgentStatus, SpiffeId, TaskEnd, TaskStatus, TrustDomain};
use mandate_store::{Store, conformance, verify_audit};
use mandate_store_sqlite::SqliteStore;
use serde_json::json;

/// Set for the child process of [`acknowledged_appends_survive_sigkill`].
const CHILD_DB: &str = "MANDATE_DURABILITY_CHILD_DB";

fn batch(n: usize, ts_ms: i64) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            ts_ms,
            kind: kinds::DECISION.into(),
            actor: "agent:bot".into(),
            agent: Some("bot".into()),
            task: Some("task-1".into()),
            details: json!({"decision": true, "action": "tickets.read", "resource": {"type": "ticket", "id": i.to_string()}}),
        })
        .collect()
}

#[tokio::test]
async fn everything_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let (head, agent) = {
        let store = SqliteStore::open(&path).unwrap();
        let agent = durable_agent();
        store.insert_agent(&agent).await.unwrap();
        store.set_agent_status(agent.name.as_str(), AgentStatus::Disabled, 5).await.unwrap();
        store.append_audit(batch(100, 1)).await.unwrap();
        store.append_audit(batch(1, 2)).await.unwrap();
        (store.audit_head().await.unwrap(), agent)
    };

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.audit_head().await.unwrap(), head);
    assert_eq!(store.get_agent(agent.name.as_str()).await.unwrap().unwrap().status, AgentStatus::Disabled);
    let report = verify_audit(&store, conformance::trusted_keys()).await.unwrap().unwrap();
    assert_eq!(report.last_seq, 101);
    let end = TaskEnd { status: TaskStatus::Revoked, at_ms: 1, by: "system".into(), reason: "test".into() };
    assert!(store.end_tasks(&["unknown".into()], &end).await.unwrap().is_empty());
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["durability_child_process", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let mut acked: Option<(u64, String)> = None;
    let mut acks = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("acked ") {
            let (seq, hash) = rest.split_once(' ').unwrap();
            acked = Some((seq.parse().unwrap(), hash.to_owned()));
            acks += 1;
            if acks == 40 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructors, no clean close
    child.wait().unwrap();
    let (seq, hash) = acked.expect("the child acknowledged appends");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&path).unwrap();
        let head = store.audit_head().await.unwrap();
        assert!(head.seq >= seq, "acknowledged seq {seq} lost: head is {}", head.seq);
        let event = store.read_audit(seq - 1, 1).await.unwrap().remove(0);
        assert_eq!((event.seq, event.hash), (seq, hash), "the acknowledged event is the one stored");
        let report = verify_audit(&store, conformance::trusted_keys()).await.unwrap();
        assert!(report.is_ok(), "the trail verifies after the kill: {report:?}");
        // And the store takes writes again.
        store.append_audit(batch(1, 3)).await.unwrap();
    });
}

/// The child of [`acknowledged_appends_survive_sigkill`]: appends batches forever, printing each
/// acknowledged head, until it is killed. Does nothing when run as an ordinary test.
#[test]
fn durability_child_process() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(Path::new(&path)).unwrap();
        for i in 0.. {
            let sealed = store.append_audit(batch(1 + i % 32, i as i64)).await.unwrap();
            let last = sealed.last().unwrap();
            println!("acked {} {}", last.seq, last.hash);
        }
    });
}

fn durable_agent() -> Agent {
    let name = AgentName::parse("durable-bot").unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    Agent {
        spiffe_id: SpiffeId::for_agent(&td, &name),
        name,
        owner: "alice@example.com".into(),
        purpose: "tests durability".into(),
        status: AgentStatus::Active,
        attributes: Default::default(),
        public_jwk: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        last_seen_ms: None,
    }
}
