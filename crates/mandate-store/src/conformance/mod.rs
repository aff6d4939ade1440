//! The conformance suite every [`Store`] backend must pass, written once against the trait so
//! that each backend runs it unchanged from its own tests:
//!
//! ```ignore
//! #[tokio::test]
//! async fn conforms() {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = Arc::new(MyStore::open(dir.path()).unwrap());
//!     mandate_store::conformance::run_all(store).await;
//! }
//! ```
//!
//! Each area is a public function that works on any store holding data written by the other
//! areas (ids are unique per call, audit checks are relative to the head they start from), so a
//! backend can also run them one by one. Only [`empty_store`] needs a store nobody has written
//! to. Failures panic with a message naming the area and the promise broken.
//!
//! This module is test code shipped in the library so that backend crates can call it; it
//! asserts instead of returning errors.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a broken promise must stop the suite with a clear message"
)]

mod approvals;
mod audit;
mod directory;
mod leases;
mod secrets;
mod tasks;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use mandate_audit::NewEvent;
use mandate_core::{Agent, AgentName, AgentStatus, Classification, Intent, SpiffeId, Task, TaskStatus, TrustDomain};
use serde_json::json;

use crate::Store;

pub use approvals::approvals;
pub use audit::{audit_append, audit_reads, checkpoints, concurrent_appends};
pub use directory::{agents, api_tokens, empty_store, entities, issuers, meta};
pub use leases::{concurrent_lease_drops, leases};
pub use secrets::secrets;
pub use tasks::{jti_replay, task_endings, task_tree, tasks};

/// The key id conformance checkpoints are signed with.
pub const CHECKPOINT_KID: &str = "conformance";

/// Runs every area against `store`, which must be empty (freshly created).
pub async fn run_all(store: Arc<dyn Store>) {
    let s = store.as_ref();
    empty_store(s).await;
    meta(s).await;
    api_tokens(s).await;
    agents(s).await;
    issuers(s).await;
    entities(s).await;
    secrets(s).await;
    tasks(s).await;
    leases(s).await;
    concurrent_lease_drops(s).await;
    task_endings(s).await;
    task_tree(s).await;
    jti_replay(s).await;
    approvals(s).await;
    audit_append(s).await;
    audit_reads(s).await;
    checkpoints(s).await;
    concurrent_appends(s).await;
}

/// The key conformance checkpoints are signed with.
pub fn checkpoint_key() -> SigningKey {
    SigningKey::from_bytes(&[0x4d; 32])
}

/// The keys a verifier of a conformance-written trail trusts.
pub fn trusted_keys() -> Vec<(String, VerifyingKey)> {
    vec![(CHECKPOINT_KID.to_owned(), checkpoint_key().verifying_key())]
}

/// A base time for fixtures (mid 2025).
const T0: i64 = 1_750_000_000_000;

/// A name no other call has produced: valid as an agent name, task id, issuer or kind.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{n}-{nanos}")
}

/// An active agent with attributes and a registered key.
fn agent(name: &str) -> Agent {
    let name = AgentName::parse(name).expect("fixture agent name");
    let td = TrustDomain::parse("conformance.test").expect("fixture trust domain");
    Agent {
        spiffe_id: SpiffeId::for_agent(&td, &name),
        name,
        owner: "alice@example.com".into(),
        purpose: "answers support tickets".into(),
        status: AgentStatus::Active,
        attributes: BTreeMap::from([("team".into(), "support".into()), ("env".into(), "prod".into())]),
        public_jwk: Some(json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})),
        created_at_ms: T0,
        updated_at_ms: T0,
        last_seen_ms: None,
    }
}

/// A live root task of `agent`.
fn task(id: &str, agent: &Agent, created_at_ms: i64, expires_at_ms: i64) -> Task {
    Task {
        id: id.to_owned(),
        agent: agent.name.clone(),
        intent: Intent {
            purpose: "triage ticket 42".into(),
            actions: vec!["tickets.read".into(), "tickets.comment".into()],
            resources: vec!["ticket:42".into()],
            max_classification: Classification::Internal,
            on_behalf_of: Some("user:bob".into()),
        },
        status: TaskStatus::Live,
        created_at_ms,
        expires_at_ms,
        mandate_jti: format!("jti-{id}"),
        parent_id: None,
        root_id: id.to_owned(),
        depth: 0,
        ended: None,
    }
}

/// A live task delegated from `parent`, by the same agent.
fn child(id: &str, parent: &Task, created_at_ms: i64) -> Task {
    Task {
        id: id.to_owned(),
        created_at_ms,
        mandate_jti: format!("jti-{id}"),
        parent_id: Some(parent.id.clone()),
        root_id: parent.root_id.clone(),
        depth: parent.depth + 1,
        ..parent.clone()
    }
}

/// A realistic decision event.
fn decision(kind: &str, agent: Option<&str>, task: Option<&str>, ts_ms: i64, n: u64) -> NewEvent {
    let allowed = !n.is_multiple_of(3);
    NewEvent {
        ts_ms,
        kind: kind.to_owned(),
        actor: agent.map_or_else(|| "system".to_owned(), |a| format!("agent:{a}")),
        agent: agent.map(str::to_owned),
        task: task.map(str::to_owned),
        details: json!({
            "decision_id": format!("dec-{n}"),
            "decision": allowed,
            "reason": if allowed { "permitted by support-read" } else { "no policy permits" },
            "action": "tickets.read",
            "resource": {"type": "ticket", "id": n.to_string()},
            "policies": ["support-read"],
            "policy_version": "sha256:5f1c",
            "obligations": [],
            "note": "ünïcödé \"quoted\" \n newline",
        }),
    }
}

/// Polls every future until all are done, interleaved on the calling task: concurrency without
/// depending on any runtime's spawn.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future completed")).collect()
}
