//! Task lifecycle after opening: complete, revoke (with every task delegated from it), the
//! kill switch for an agent, and the sweeper that expires tasks whose time is up.

use std::sync::{Arc, Weak};

use mandate_audit::kinds;
use mandate_core::{AgentStatus, TaskEnd, TaskStatus};

use crate::error::ApiError;
use crate::state::AppState;

/// Ends a task and, transitively, every task delegated from it. Returns the ids it ended
/// (empty when the task had already ended). The task ends as `status`; the tasks delegated
/// from it end as revoked (whether it was revoked or completed), with a reason that names it.
/// Effective on the very next decision: the in-memory registry is updated before this returns.
pub async fn end_task(state: &AppState, id: &str, status: TaskStatus, by: &str, reason: &str) -> Result<Vec<String>, ApiError> {
    let mut ended = end_many(state, vec![id.to_owned()], status, by, reason).await?;
    ended.extend(end_descendants(state, id, status, by).await?);
    Ok(ended)
}

/// Revokes every task delegated from `id`, directly or not, as the consequence of `id` ending
/// as `status`. The tree is read twice: a task delegated from `id` while the first read ran is
/// caught by the second (and one delegated after that finds `id` ended in the store, and ends
/// itself: see the delegation's `parent_still_live`).
async fn end_descendants(state: &AppState, id: &str, status: TaskStatus, by: &str) -> Result<Vec<String>, ApiError> {
    let reason = format!("parent task `{id}` {}", status.as_str());
    let mut ended = Vec::new();
    for _ in 0..2 {
        let below = state.store.descendant_task_ids(id).await?;
        ended.extend(end_cascade(state, below, by, &reason, id).await?);
    }
    Ok(ended)
}

/// Ends the given tasks (those still live), updates the registry, audits each.
pub async fn end_many(state: &AppState, ids: Vec<String>, status: TaskStatus, by: &str, reason: &str) -> Result<Vec<String>, ApiError> {
    end_with(state, ids, status, by, reason, None).await
}

/// [`end_many`] for tasks revoked because task `from` ended: each event names it as
/// `cascade_from`.
async fn end_cascade(state: &AppState, ids: Vec<String>, by: &str, reason: &str, from: &str) -> Result<Vec<String>, ApiError> {
    end_with(state, ids, TaskStatus::Revoked, by, reason, Some(from)).await
}

async fn end_with(
    state: &AppState,
    ids: Vec<String>,
    status: TaskStatus,
    by: &str,
    reason: &str,
    cascade_from: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let now = state.clock.now_ms();
    let end = TaskEnd { status, at_ms: now, by: by.to_owned(), reason: reason.to_owned() };
    let ended = state.store.end_tasks(&ids, &end).await?;
    state.registry.end_tasks(&ended, status, now);
    // Their dynamic credentials go at once (the sweep is the backstop).
    crate::dyncreds::tasks_ended(state, &ended, status);
    state.metrics.set_live_tasks(state.registry.live_task_count());
    let kind = match status {
        TaskStatus::Completed => kinds::TASK_COMPLETED,
        TaskStatus::Expired => kinds::TASK_EXPIRED,
        _ => kinds::TASK_REVOKED,
    };
    let events = ended
        .iter()
        .map(|tid| {
            let agent = state.registry.task(tid).map(|t| t.agent);
            state.event(kind, by, agent.as_deref(), Some(tid), serde_json::json!({ "reason": reason, "cascade_from": cascade_from }))
        })
        .collect();
    state.audit.record_all(events).await.map_err(ApiError::internal)?;
    Ok(ended)
}

/// The kill switch: disables the agent and revokes every live task it has.
pub async fn disable_agent(state: &AppState, name: &str, by: &str) -> Result<Vec<String>, ApiError> {
    let now = state.clock.now_ms();
    if !state.store.set_agent_status(name, AgentStatus::Disabled, now).await? {
        return Err(ApiError::not_found("agent", name));
    }
    // The registry first, so that no decision after this point sees the agent as active.
    state.registry.set_agent_status(name, AgentStatus::Disabled, now);
    let live = state.store.live_task_ids_of_agent(name).await?;
    let mut below = 0;
    for id in &live {
        below += state.store.descendant_task_ids(id).await?.len();
    }
    let ev = state.event(kinds::AGENT_DISABLED, by, Some(name), None, serde_json::json!({ "revoked_tasks": live.len() + below }));
    state.record(ev).await.map_err(ApiError::internal)?;
    let mut ended = end_many(state, live.clone(), TaskStatus::Revoked, by, "agent disabled").await?;
    for id in &live {
        ended.extend(end_descendants(state, id, TaskStatus::Revoked, by).await?);
    }
    Ok(ended)
}

/// How often a replica on a shared store re-reads everything it keeps in memory.
const RESYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Expires live tasks whose time is up, and retires signing keys whose overlap has passed,
/// once per sweep interval, while the server lives.
pub async fn sweep_loop(state: Weak<AppState>) {
    let interval = match state.upgrade() {
        Some(s) => s.settings.sweep_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_resync = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        // On a shared store, a full re-read now and then: the backstop should an announcement
        // of another replica's change ever be lost without the feed noticing.
        if state.keys.is_shared() && last_resync.elapsed() >= RESYNC_INTERVAL {
            last_resync = tokio::time::Instant::now();
            if let Err(e) = crate::sync::resync(&state).await {
                tracing::warn!(error = %e, "periodic resync with the shared store failed; will retry");
            }
        }
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!(error = %e.message, "task sweep failed; will retry");
        }
        crate::dyncreds::sweep(&state);
        if let Err(e) = crate::approvals::sweep(&state).await {
            tracing::warn!(error = %e.message, "approval sweep failed; will retry");
        }
        // Retired signing keys leave the JWKS and the verifier once their overlap has passed.
        if let Err(e) = state.keys.refresh(state.clock.now_ms()) {
            tracing::warn!(error = %e, "could not refresh the published signing keys; will retry");
        }
    }
}

pub async fn sweep_once(state: &Arc<AppState>) -> Result<Vec<String>, ApiError> {
    let now = state.clock.now_ms();
    let expired = state.store.expired_live_task_ids(now).await?;
    if expired.is_empty() {
        return Ok(expired);
    }
    end_many(state, expired, TaskStatus::Expired, "system", "lifetime elapsed").await
}
