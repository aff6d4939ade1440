//! A delegated task acts only while every task above it may (`pipeline::task_may_act`), even
//! when the store holds a state the cascade should have prevented: a live task under an ended
//! one (a crash between the two), or under a task whose agent was disabled. The registry is
//! loaded from the store on start, as after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::sync::Arc;

use mandate_core::{
    Agent, AgentName, AgentStatus, Classification, Clock, Intent, SpiffeId, SystemClock, Task, TaskEnd, TaskStatus, TrustDomain,
};
use mandate_server::{AppState, Settings, pipeline};
use mandate_store::Store;
use mandate_store_sqlite::SqliteStore;

fn agent(name: &str, status: AgentStatus) -> Agent {
    let name = AgentName::parse(name).unwrap();
    Agent {
        spiffe_id: SpiffeId::for_agent(&TrustDomain::parse("test.local").unwrap(), &name),
        name,
        owner: "alice@example.com".into(),
        purpose: "p".into(),
        status,
        attributes: Default::default(),
        public_jwk: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        last_seen_ms: None,
    }
}

fn task(id: &str, agent: &str, parent: Option<(&str, u32)>, expires_at_ms: i64) -> Task {
    Task {
        id: id.into(),
        agent: AgentName::parse(agent).unwrap(),
        intent: Intent {
            purpose: "p".into(),
            actions: vec!["tickets.read".into()],
            resources: vec!["ticket:*".into()],
            max_classification: Classification::Internal,
            on_behalf_of: None,
        },
        status: TaskStatus::Live,
        created_at_ms: 0,
        expires_at_ms,
        mandate_jti: format!("jti-{id}"),
        parent_id: parent.map(|(p, _)| p.into()),
        root_id: "root".into(),
        depth: parent.map_or(0, |(_, d)| d),
        ended: None,
    }
}

#[tokio::test]
async fn a_task_acts_only_while_every_task_above_it_may() {
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&tmp.path().join("mandate.db")).unwrap());
    for a in [
        agent("a-bot", AgentStatus::Active),
        agent("b-bot", AgentStatus::Active),
        agent("c-bot", AgentStatus::Active),
        // Disabled while its task is still live (as if the server stopped before revoking it).
        agent("d-bot", AgentStatus::Disabled),
    ] {
        store.insert_agent(&a).await.unwrap();
    }
    let later = SystemClock.now_ms() + 600_000;
    for t in [
        task("root", "a-bot", None, later),
        task("child", "b-bot", Some(("root", 1)), later),
        task("grandchild", "c-bot", Some(("child", 2)), later),
        // Under a task that ended without its subtree (as if the server stopped in between).
        task("ended", "a-bot", None, later),
        task("orphan", "b-bot", Some(("ended", 1)), later),
        task("orphan-child", "c-bot", Some(("orphan", 2)), later),
        // Under a task whose agent is disabled.
        task("held", "d-bot", None, later),
        task("under-held", "c-bot", Some(("held", 1)), later),
    ] {
        store.insert_task(&t).await.unwrap();
    }
    let end = TaskEnd { status: TaskStatus::Completed, at_ms: 0, by: "test".into(), reason: "test".into() };
    assert_eq!(store.end_tasks(&["ended".to_owned()], &end).await.unwrap(), ["ended"]);

    let settings = Settings::new("http://127.0.0.1".into(), TrustDomain::parse("test.local").unwrap(), tmp.path().join("keys"));
    let (state, _bg) = AppState::start(settings, store, Arc::new(SystemClock)).await.unwrap();

    assert_eq!(pipeline::task_may_act(&state, "grandchild", "c-bot").unwrap().name.as_str(), "c-bot");
    assert_eq!(pipeline::task_may_act(&state, "grandchild", "b-bot").unwrap_err(), "subject_mismatch");
    assert_eq!(pipeline::task_may_act(&state, "orphan", "b-bot").unwrap_err(), "task_revoked");
    assert_eq!(pipeline::task_may_act(&state, "orphan-child", "c-bot").unwrap_err(), "task_revoked");

    assert_eq!(pipeline::task_may_act(&state, "under-held", "c-bot").unwrap_err(), "task_revoked");
    assert_eq!(pipeline::task_may_act(&state, "held", "d-bot").unwrap_err(), "agent_disabled");
}
