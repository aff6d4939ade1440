//! The change feed between two stores sharing one schema: what one changes reaches the other
//! (and not itself), in commit order, complete, only when committed, and across a lost
//! listener connection (with a resync).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use std::time::Duration;

use mandate_core::{AgentStatus, ApiToken, ApprovalStatus, Issuer, Role, TaskStatus};
use mandate_store::{Change, SealedSecretBlob, SecretKind, SecretRecord, Store, StoreError};
use mandate_store_postgres::PgStore;
use serde_json::json;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use common::{T0, TestSchema, agent, approval, end, eventually, task};

/// The next change, waiting at most 10 s.
async fn next(rx: &mut Receiver<Change>) -> Change {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Ok(change)) => change,
        Ok(Err(e)) => panic!("the change feed failed: {e}"),
        Err(_) => panic!("no change arrived within 10 s"),
    }
}

/// Sends a marker change through `from` and returns what `rx` received before it: since
/// notifications arrive in commit order, that is everything committed earlier.
async fn drain_until_marker(from: &PgStore, rx: &mut Receiver<Change>) -> Vec<Change> {
    let marker = format!("marker-{:x}", rand::random::<u64>());
    from.put_meta(&marker, "x").await.unwrap();
    let mut before = Vec::new();
    loop {
        match next(rx).await {
            Change::Meta(key) if key == marker => return before,
            other => before.push(other),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_other_store_in_commit_order_and_not_the_writer() {
    let Some(schema) = TestSchema::new() else { return };
    let (a, b) = (schema.connect().await, schema.connect().await);
    let mut from_b = a.changes().expect("a shared store has a change feed");
    let mut from_a = b.changes().expect("a shared store has a change feed");

    let bot = agent("bot");
    a.insert_agent(&bot).await.unwrap();
    a.touch_agent("bot", T0 + 5).await.unwrap();
    assert!(a.set_agent_status("bot", AgentStatus::Disabled, T0 + 6).await.unwrap());
    assert!(!a.set_agent_status("nobody", AgentStatus::Disabled, T0 + 6).await.unwrap());
    a.insert_task(&task("t1", &bot)).await.unwrap();
    a.insert_task(&task("t2", &bot)).await.unwrap();
    let ended = a.end_tasks(&["t2".into(), "nope".into(), "t1".into()], &end(TaskStatus::Revoked)).await.unwrap();
    assert_eq!(ended, ["t2", "t1"]);
    assert!(a.end_tasks(&["t1".into()], &end(TaskStatus::Revoked)).await.unwrap().is_empty());
    let token = ApiToken {
        id: "tok_1".into(),
        role: Role::Admin,
        label: "ops".into(),
        secret_hash: "a".repeat(64),
        created_at_ms: T0,
        revoked_at_ms: None,
    };
    a.insert_api_token(&token).await.unwrap();
    assert!(a.revoke_api_token("tok_1", T0 + 1).await.unwrap());
    assert!(!a.revoke_api_token("tok_1", T0 + 2).await.unwrap());
    let issuer = Issuer {
        issuer: "https://idp.example.com".into(),
        audience: "mandate".into(),
        jwks: json!({"keys": []}),
        jwks_url: None,
        rules: vec![],
        created_at_ms: T0,
        max_token_lifetime_secs: None,
        allow_token_reuse: false,
    };
    a.upsert_issuer(&issuer).await.unwrap();
    assert!(a.delete_issuer(&issuer.issuer).await.unwrap());
    assert!(!a.delete_issuer(&issuer.issuer).await.unwrap());
    a.put_entities("[]").await.unwrap();
    a.put_meta("k", "v1").await.unwrap();
    assert!(a.swap_meta("k", Some("v1"), "v2").await.unwrap());
    assert!(!a.swap_meta("k", Some("v1"), "v3").await.unwrap());
    a.insert_task(&task("t3", &bot)).await.unwrap();
    a.insert_approval(&approval("apr_1", "t3", T0 + 10_000)).await.unwrap();
    let (_, moved) = a.decide_approval("apr_1", ApprovalStatus::Approved, "tok_1", "ops", "", T0 + 1).await.unwrap().unwrap();
    assert!(moved);
    let (_, moved) = a.decide_approval("apr_1", ApprovalStatus::Denied, "tok_1", "ops", "", T0 + 2).await.unwrap().unwrap();
    assert!(!moved);
    assert!(a.use_approval("apr_1", "dec-x", T0 + 3).await.unwrap().is_some());
    assert!(a.use_approval("apr_1", "dec-y", T0 + 4).await.unwrap().is_none());
    a.insert_approval(&approval("apr_2", "t3", T0 + 100)).await.unwrap();
    a.insert_approval(&approval("apr_3", "t3", T0 + 50)).await.unwrap();
    assert_eq!(a.expire_approvals(T0 + 200).await.unwrap().len(), 2);
    let secret = SecretRecord {
        name: "github".into(),
        version: 1,
        kind: SecretKind::Static,
        description: "token".into(),
        created_at_ms: T0,
        created_by: "tok_1".into(),
        sealed: SealedSecretBlob { wrapped_key: vec![1], key_nonce: vec![2], nonce: vec![3], ciphertext: vec![4] },
    };
    a.put_secret_version(&secret).await.unwrap();
    assert!(a.delete_secret("github").await.unwrap());
    assert!(!a.delete_secret("github").await.unwrap());
    assert!(a.consume_jti("iss", "j", T0 + 10, T0).await.unwrap());

    let expected = vec![
        Change::Agent("bot".into()),
        Change::Agent("bot".into()),
        Change::Tasks(vec!["t1".into()]),
        Change::Tasks(vec!["t2".into()]),
        Change::Tasks(vec!["t2".into(), "t1".into()]),
        Change::ApiTokens,
        Change::ApiTokens,
        Change::Issuers,
        Change::Issuers,
        Change::Entities,
        Change::Meta("k".into()),
        Change::Meta("k".into()),
        Change::Tasks(vec!["t3".into()]),
        Change::Approval("apr_1".into()),
        Change::Approval("apr_1".into()),
        Change::Approval("apr_1".into()),
        Change::Approval("apr_2".into()),
        Change::Approval("apr_3".into()),
        Change::Approval("apr_3".into()),
        Change::Approval("apr_2".into()),
        Change::Secret("github".into()),
        Change::Secret("github".into()),
    ];
    assert_eq!(drain_until_marker(&a, &mut from_a).await, expected, "B sees A's changes, each once, in commit order");

    // B's own changes reach A, and A never saw its own.
    let seen_by_a = drain_until_marker(&b, &mut from_b).await;
    assert!(seen_by_a.is_empty(), "a store's own changes never come back to it: {seen_by_a:?}");
    assert!(matches!(from_a.try_recv(), Err(TryRecvError::Empty)), "B's own marker did not come back to B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_many_tasks_arrives_complete_in_payloads_under_the_limit() {
    let Some(schema) = TestSchema::new() else { return };
    let (a, b) = (schema.connect().await, schema.connect().await);
    let mut rx = b.changes().unwrap();
    let mut raw = PgListener::connect(&schema.url).await.unwrap();
    raw.listen("mandate_changes").await.unwrap();

    let bot = agent("bulk-bot");
    a.insert_agent(&bot).await.unwrap();
    let ids: Vec<String> = (0..3_000).map(|i| format!("tsk_{i:05}_{}", "x".repeat(i % 30))).collect();
    for id in &ids {
        a.insert_task(&task(id, &bot)).await.unwrap();
    }
    let before = drain_until_marker(&a, &mut rx).await;
    assert_eq!(before.len(), 1 + ids.len(), "one change per insert (and the agent)");

    let ended = a.end_tasks(&ids, &end(TaskStatus::Revoked)).await.unwrap();
    assert_eq!(ended, ids);
    let after = drain_until_marker(&a, &mut rx).await;
    assert!(after.len() > 5, "a long list goes out in several notifications, got {}", after.len());
    let mut received = Vec::new();
    for change in after {
        let Change::Tasks(chunk) = change else { panic!("only task changes expected, got {change:?}") };
        received.extend(chunk);
    }
    assert_eq!(received, ids, "every ended id arrives once, in order");

    // Every payload sent was under the limit.
    let mut payloads = 0;
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(500), raw.try_recv()).await.unwrap_or(Ok(None)) {
        assert!(n.payload().len() <= 7_900, "payload of {} bytes", n.payload().len());
        payloads += 1;
    }
    assert!(payloads > ids.len(), "the raw listener saw the notifications ({payloads})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_reconnects_and_asks_for_a_resync() {
    let Some(schema) = TestSchema::new() else { return };
    let (a, b) = (schema.connect().await, schema.connect().await);
    let mut rx = b.changes().unwrap();
    let mut sql = schema.sql().await;
    let app = b.listener_application_name();

    let listeners = async |sql: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(b.listener_application_name())
            .fetch_one(sql)
            .await
            .unwrap()
    };
    assert_eq!(listeners(&mut sql).await, 1, "the store's listener has a connection of its own");

    let killed: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
        .bind(&app)
        .fetch_all(&mut sql)
        .await
        .unwrap();
    assert_eq!(killed, [true], "exactly this store's listener was terminated");
    assert_eq!(next(&mut rx).await, Change::Resync, "after reconnecting the listener asks for a resync");
    assert_eq!(listeners(&mut sql).await, 1, "the listener is back");

    a.put_meta("after-reconnect", "1").await.unwrap();
    assert_eq!(next(&mut rx).await, Change::Meta("after-reconnect".into()), "changes arrive again after the reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_notifies_nothing() {
    let Some(schema) = TestSchema::new() else { return };
    let (a, b) = (schema.connect().await, schema.connect().await);
    let mut rx = b.changes().unwrap();
    let bot = agent("refused-bot");
    a.insert_agent(&bot).await.unwrap();
    assert_eq!(next(&mut rx).await, Change::Agent("refused-bot".into()));

    assert!(matches!(a.insert_agent(&bot).await, Err(StoreError::Conflict(_))));
    assert!(matches!(a.insert_task(&task("t-orphan", &agent("no-such-agent"))).await, Err(StoreError::NotFound(_))));
    a.insert_task(&task("t1", &bot)).await.unwrap();
    assert!(matches!(a.insert_task(&task("t1", &bot)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(a.end_tasks(&["t1".into()], &end(TaskStatus::Live)).await, Err(StoreError::Invalid(_))));
    assert!(matches!(a.insert_approval(&approval("apr", "no-such-task", T0 + 1)).await, Err(StoreError::NotFound(_))));
    assert_eq!(drain_until_marker(&a, &mut rx).await, [Change::Tasks(vec!["t1".into()])], "only the committed change arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_unreadable_payloads() {
    let Some(schema) = TestSchema::new() else { return };
    let (a, b) = (schema.connect().await, schema.connect().await);
    let mut rx = b.changes().unwrap();
    let mut sql = schema.sql().await;
    let notify = async |sql: &mut sqlx::PgConnection, payload: &str| {
        sqlx::query("SELECT pg_notify('mandate_changes', $1)").bind(payload).execute(sql).await.unwrap();
    };
    // Another schema's change is not ours; one this release cannot read asks for a resync.
    // (Stores of other tests, in other schemas, ignore both.)
    notify(&mut sql, r#"{"origin":"elsewhere","schema":"another_schema","change":"api_tokens"}"#).await;
    let unknown = format!(r#"{{"origin":"elsewhere","schema":"{}","change":"from_a_newer_release","id":"x"}}"#, b.schema());
    notify(&mut sql, &unknown).await;
    let ours = format!(r#"{{"origin":"elsewhere","schema":"{}","change":"agent","id":"x"}}"#, b.schema());
    notify(&mut sql, &ours).await;
    assert_eq!(
        drain_until_marker(&a, &mut rx).await,
        [Change::Resync, Change::Agent("x".into())],
        "a foreign schema's change is dropped, an unreadable one becomes a resync"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_stops_with_the_last_clone() {
    let Some(schema) = TestSchema::new() else { return };
    let store = schema.connect().await;
    let app = store.listener_application_name();
    let mut rx = store.changes().unwrap();
    let clone = store.clone();
    drop(store);
    let mut sql = schema.sql().await;
    let count = async |sql: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1").bind(&app).fetch_one(sql).await.unwrap()
    };
    assert_eq!(count(&mut sql).await, 1, "a clone keeps the listener");
    drop(clone);
    assert!(
        matches!(tokio::time::timeout(Duration::from_secs(10), rx.recv()).await, Ok(Err(RecvError::Closed))),
        "receivers see the feed close"
    );
    assert!(eventually(10, async || count(&mut sql).await == 0).await, "the listener's connection is closed");
}
