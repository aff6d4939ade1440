//! A fresh schema per test in the database named by `MANDATE_TEST_DATABASE_URL`, dropped when
//! the test ends (passing or not).

#![allow(dead_code, reason = "each test file uses a part")]

use std::collections::BTreeMap;
use std::time::Duration;

use mandate_core::{
    Agent, AgentName, AgentStatus, Approval, ApprovalStatus, Classification, Intent, SpiffeId, Task, TaskEnd, TaskStatus, TrustDomain,
};
use mandate_store_postgres::{PgOptions, PgStore};
use serde_json::json;
use sqlx::{Connection, PgConnection};

pub const URL_VAR: &str = "MANDATE_TEST_DATABASE_URL";

/// The test database's URL, or `None` (having said so) when it is not set.
pub fn database_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: {URL_VAR} is not set (PostgreSQL store tests)");
            None
        }
    }
}

/// A schema of its own; dropped (with everything in it) on drop.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// A new schema name (the schema itself is created by the first connect), or `None` when
    /// no test database is configured.
    pub fn new() -> Option<TestSchema> {
        let url = database_url()?;
        let name = format!("mandate_test_{:016x}", rand::random::<u64>());
        Some(TestSchema { url, name })
    }

    pub fn options(&self) -> PgOptions {
        PgOptions { schema: Some(self.name.clone()), max_connections: 8, ..PgOptions::new(self.url.clone()) }
    }

    pub async fn connect(&self) -> PgStore {
        PgStore::connect(&self.options()).await.unwrap_or_else(|e| panic!("connecting to the test database: {e}"))
    }

    /// A plain connection with the schema on its search path.
    pub async fn sql(&self) -> PgConnection {
        let mut conn = PgConnection::connect(&self.url).await.unwrap();
        sqlx::raw_sql(&format!("SET search_path TO {}", self.name)).execute(&mut conn).await.unwrap();
        conn
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // A runtime of its own: this may run while the test's runtime is shutting down.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop test schema {}", self.name);
        }
    }
}

/// Waits at most `secs` for `f` to hold.
pub async fn eventually(secs: u64, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub const T0: i64 = 1_750_000_000_000;

pub fn agent(name: &str) -> Agent {
    let name = AgentName::parse(name).unwrap();
    let td = TrustDomain::parse("changes.test").unwrap();
    Agent {
        spiffe_id: SpiffeId::for_agent(&td, &name),
        name,
        owner: "alice@example.com".into(),
        purpose: "tests the change feed".into(),
        status: AgentStatus::Active,
        attributes: BTreeMap::new(),
        public_jwk: None,
        created_at_ms: T0,
        updated_at_ms: T0,
        last_seen_ms: None,
    }
}

pub fn task(id: &str, agent: &Agent) -> Task {
    Task {
        id: id.to_owned(),
        agent: agent.name.clone(),
        intent: Intent {
            purpose: "triage".into(),
            actions: vec!["tickets.read".into()],
            resources: vec!["ticket:1".into()],
            max_classification: Classification::Internal,
            on_behalf_of: None,
        },
        status: TaskStatus::Live,
        created_at_ms: T0,
        expires_at_ms: T0 + 60_000,
        mandate_jti: format!("jti-{id}"),
        parent_id: None,
        root_id: id.to_owned(),
        depth: 0,
        ended: None,
    }
}

pub fn approval(id: &str, task_id: &str, expires_at_ms: i64) -> Approval {
    Approval {
        id: id.to_owned(),
        task_id: task_id.to_owned(),
        agent: "bot".into(),
        mandate_jti: "jti".into(),
        action: "payments.refund".into(),
        resource_type: "payment".into(),
        resource_id: "1".into(),
        classification: None,
        arguments: json!({}),
        arguments_digest: "ab".repeat(32),
        binding: format!("binding-{id}"),
        decision_id: format!("dec-{id}"),
        policies: vec![],
        status: ApprovalStatus::Pending,
        created_at_ms: T0,
        expires_at_ms,
        decided_by: None,
        decided_by_label: None,
        decided_at_ms: None,
        comment: None,
        used_at_ms: None,
        used_by_decision: None,
    }
}

pub fn end(status: TaskStatus) -> TaskEnd {
    TaskEnd { status, at_ms: T0 + 1, by: "system".into(), reason: "test".into() }
}
