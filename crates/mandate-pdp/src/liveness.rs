//! The liveness rule: may this task of this agent act right now? Read from a view the caller
//! gives (the control plane's in-memory registry), so a revocation counts from the very next
//! decision, and so the rule is the same for every caller.

use std::sync::Arc;

use mandate_core::{Agent, AgentStatus, TaskStatus};

use crate::DenyReason;

/// What a decision needs to know about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// The name of the agent the task was opened for.
    pub agent: String,
    pub status: TaskStatus,
    pub expires_at_ms: i64,
    /// The task it was delegated from, if any.
    pub parent_id: Option<String>,
}

/// A read-only view of which tasks are live and which agents active. Implementations answer
/// from memory: deciding does no I/O.
pub trait Liveness {
    /// Task `id` as known now (live, or how it ended); `None` for a task never heard of.
    fn task(&self, id: &str) -> Option<TaskState>;
    /// Agent `name` as registered, with its current status.
    fn agent(&self, name: &str) -> Option<Arc<Agent>>;
}

/// An agent that may act, and the chain of agents its task was delegated through.
#[derive(Debug, Clone)]
pub struct Acting {
    pub agent: Arc<Agent>,
    /// The SPIFFE ids of the agents who delegated, root first and the immediate delegator last
    /// (what policies read as `context.task.chain`); empty for a task the agent opened itself.
    pub chain: Vec<String>,
}

/// Longest chain of parent tasks followed before a task is refused; far beyond any depth a
/// server allows, it only guards against a loop.
pub const MAX_ANCESTORS: usize = 64;

/// Whether task `task_id` of agent `agent` may act at `now_ms`: the task is live and unexpired,
/// its agent active, and, for a delegated task, every task it was delegated from is live too
/// and run by an active agent (else `task_revoked`: revoking or completing a task revokes
/// those delegated from it, and this holds even before that cascade has reached them).
pub fn may_act(view: &dyn Liveness, task_id: &str, agent: &str, now_ms: i64) -> Result<Acting, DenyReason> {
    let task = view.task(task_id).ok_or(DenyReason::TaskUnknown)?;
    if task.agent != agent {
        return Err(DenyReason::SubjectMismatch);
    }
    match task.status {
        TaskStatus::Live if task.expires_at_ms > now_ms => {}
        TaskStatus::Live | TaskStatus::Expired => return Err(DenyReason::TaskExpired),
        TaskStatus::Completed => return Err(DenyReason::TaskCompleted),
        TaskStatus::Revoked => return Err(DenyReason::TaskRevoked),
    }
    let acting = view.agent(agent).ok_or(DenyReason::AgentUnknown)?;
    if acting.status != AgentStatus::Active {
        return Err(DenyReason::AgentDisabled);
    }
    let mut chain = Vec::new();
    let mut parent = task.parent_id;
    while let Some(id) = parent {
        if chain.len() >= MAX_ANCESTORS {
            return Err(DenyReason::TaskRevoked);
        }
        let above = view.task(&id).ok_or(DenyReason::TaskRevoked)?;
        let by = view.agent(&above.agent).filter(|a| a.status == AgentStatus::Active).ok_or(DenyReason::TaskRevoked)?;
        if above.status != TaskStatus::Live || above.expires_at_ms <= now_ms {
            return Err(DenyReason::TaskRevoked);
        }
        chain.push(by.spiffe_id.as_str().to_owned());
        parent = above.parent_id;
    }
    chain.reverse();
    Ok(Acting { agent: acting, chain })
}
