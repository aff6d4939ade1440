//! Keeping this replica's in-memory view as current as a store other replicas write too.
//!
//! Two mechanisms, because either alone leaves a hole:
//!
//! - **Push.** The store announces every committed change ([`Store::changes`]): an agent, some
//!   tasks, the API tokens, the issuers, the entity data, a meta value (the key ring), an
//!   approval. [`follow`] re-reads the named record and applies it; an ended task or a disabled
//!   agent goes through the registry, which publishes it on this replica's revocation feed, so
//!   the gateways attached here end their sessions at once. When announcements may have been
//!   missed ([`Change::Resync`] after the listener reconnected, or a lagging receiver),
//!   everything is re-read ([`resync`]).
//! - **Read-through.** A record this view has never seen (an agent registered, a task opened a
//!   moment ago through another replica, racing its announcement) is read from the store on
//!   first use ([`ensure_task`], [`ensure_agent`]). Only a miss costs a read; a known record is
//!   only ever changed by push, so a decision still costs no query.
//!
//! A revocation therefore reaches this replica within one notification's latency, and is never
//! lost: a missed notification is covered by the resync after reconnecting and by the
//! periodic resync in the sweeper.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use mandate_store::{Change, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::state::AppState;

/// Applies the store's announcements to `state` until the store or the server goes away.
pub(crate) async fn follow(state: Weak<AppState>, mut rx: broadcast::Receiver<Change>) {
    loop {
        let change = match rx.recv().await {
            Ok(c) => c,
            // Some announcements were dropped here: re-read everything.
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "fell behind the store's change feed; re-reading everything");
                Change::Resync
            }
            Err(RecvError::Closed) => return,
        };
        let Some(state) = state.upgrade() else { return };
        if let Err(e) = apply(&state, &change).await {
            // The next resync (the sweeper's, or after a reconnect) repairs what this missed.
            tracing::warn!(error = %e, change = ?change, "could not apply a change from another replica");
            state.metrics.sync_failure();
        }
    }
}

/// Applies one announced change.
pub(crate) async fn apply(state: &AppState, change: &Change) -> Result<(), StoreError> {
    let now = state.clock.now_ms();
    match change {
        Change::Agent(name) => {
            if let Some(agent) = state.store.get_agent(name).await? {
                state.registry.sync_agent(agent);
            }
        }
        Change::Tasks(ids) => {
            for id in ids {
                if let Some(task) = state.store.get_task(id).await? {
                    state.registry.sync_task(&task, now);
                }
            }
            state.metrics.set_live_tasks(state.registry.live_task_count());
        }
        Change::ApiTokens => reload_api_tokens(state).await?,
        Change::Issuers => reload_issuers(state).await?,
        Change::Entities => reload_entities(state).await?,
        Change::Meta(key) if key == crate::keys::SHARED_RING_KEY => reload_keys(state).await,
        Change::Approval(id) => state.approvals.announce(id),
        Change::Resync => resync(state).await?,
        // Other meta values and secrets are read from the store where they are used.
        _ => {}
    }
    Ok(())
}

/// Re-reads everything this view keeps: every agent, the live tasks (and those this view holds
/// as live that the store has ended), the API tokens, the issuers, the entity data, the key ring.
pub async fn resync(state: &AppState) -> Result<(), StoreError> {
    let now = state.clock.now_ms();
    for agent in state.store.list_agents().await? {
        state.registry.sync_agent(agent);
    }
    let live = state.store.live_tasks().await?;
    let live_ids: HashSet<&str> = live.iter().map(|t| t.id.as_str()).collect();
    for id in state.registry.live_task_ids() {
        if !live_ids.contains(id.as_str())
            && let Some(task) = state.store.get_task(&id).await?
        {
            state.registry.sync_task(&task, now);
        }
    }
    for task in &live {
        state.registry.sync_task(task, now);
    }
    state.metrics.set_live_tasks(state.registry.live_task_count());
    reload_api_tokens(state).await?;
    reload_issuers(state).await?;
    reload_entities(state).await?;
    reload_keys(state).await;
    Ok(())
}

/// Makes sure the view knows task `id` and every task above it, with their agents, reading
/// from the store what it has never seen. Only for a shared store: alone on its store, this
/// process saw every task opened.
pub(crate) async fn ensure_task(state: &AppState, id: &str) -> Result<(), StoreError> {
    if !state.keys.is_shared() {
        return Ok(());
    }
    let now = state.clock.now_ms();
    let mut next = Some(id.to_owned());
    // Bounded like the liveness check's walk up the chain.
    for _ in 0..=64 {
        let Some(id) = next.take() else { break };
        let (agent, parent) = match state.registry.task(&id) {
            Some(t) => (t.agent, t.parent_id),
            None => match state.store.get_task(&id).await? {
                Some(task) => {
                    state.registry.sync_task(&task, now);
                    (task.agent.as_str().to_owned(), task.parent_id.clone())
                }
                None => break,
            },
        };
        ensure_agent(state, &agent).await?;
        next = parent;
    }
    Ok(())
}

/// Makes sure the view knows agent `name`, reading it from the store if it has never seen it
/// (registered through another replica). Only for a shared store.
pub(crate) async fn ensure_agent(state: &AppState, name: &str) -> Result<(), StoreError> {
    if !state.keys.is_shared() || state.registry.agent(name).is_some() {
        return Ok(());
    }
    if let Some(agent) = state.store.get_agent(name).await? {
        state.registry.sync_agent(agent);
    }
    Ok(())
}

async fn reload_api_tokens(state: &AppState) -> Result<(), StoreError> {
    let tokens = state.store.list_api_tokens().await?;
    let live = tokens.into_iter().filter(|t| t.revoked_at_ms.is_none()).map(|t| (t.secret_hash.clone(), t)).collect();
    *state.api_tokens.write() = live;
    Ok(())
}

async fn reload_issuers(state: &AppState) -> Result<(), StoreError> {
    let mut verifiers = std::collections::HashMap::new();
    for issuer in state.store.list_issuers().await? {
        match mandate_token::ExternalVerifier::new(&issuer) {
            Ok(v) => {
                verifiers.insert(issuer.issuer.clone(), Arc::new(v));
            }
            Err(e) => tracing::error!(issuer = %issuer.issuer, error = %e, "stored issuer is not usable"),
        }
    }
    *state.issuers.write() = verifiers;
    Ok(())
}

async fn reload_entities(state: &AppState) -> Result<(), StoreError> {
    if let Some(json) = state.store.get_entities().await? {
        match mandate_policy::EntityData::parse(&json, Some(&state.policy.current())) {
            Ok(e) => state.policy.set_entities(e),
            Err(e) => tracing::error!(error = %e, "the entity data another replica stored does not parse here; keeping the previous"),
        }
    }
    Ok(())
}

async fn reload_keys(state: &AppState) {
    if let Err(e) = state.keys.reload(state.clock.now_ms()).await {
        tracing::error!(error = %e, "cannot install the shared key ring; signing with the previous key");
    }
}
