//! Filters for listing tasks and querying the audit trail.

use mandate_core::{ApprovalStatus, TaskStatus};

/// The `limit` a default filter carries.
pub const DEFAULT_LIMIT: usize = 100;

/// Which tasks [`Store::list_tasks`](crate::Store::list_tasks) returns. Every filter set must
/// match; `limit` caps the count (0 returns nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this agent's tasks.
    pub agent: Option<String>,
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this delegation tree (its root task included).
    pub root: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl Default for TaskFilter {
    /// No filter, at most [`DEFAULT_LIMIT`].
    fn default() -> Self {
        TaskFilter { agent: None, status: None, root: None, limit: DEFAULT_LIMIT }
    }
}

/// Which events [`Store::query_audit`](crate::Store::query_audit) returns. Every filter set must
/// match; `limit` caps the count (0 returns nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events of this kind.
    pub kind: Option<String>,
    /// Only events about this agent.
    pub agent: Option<String>,
    /// Only events about this task.
    pub task: Option<String>,
    /// Only events with `ts_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only events with `seq > after_seq` (for paging).
    pub after_seq: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

impl Default for AuditQuery {
    /// No filter, at most [`DEFAULT_LIMIT`].
    fn default() -> Self {
        AuditQuery { kind: None, agent: None, task: None, since_ms: None, after_seq: None, limit: DEFAULT_LIMIT }
    }
}

/// Which approvals [`Store::list_approvals`](crate::Store::list_approvals) returns. Every filter
/// set must match; `limit` caps the count (0 returns nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalFilter {
    /// Only approvals in this status.
    pub status: Option<ApprovalStatus>,
    /// Only approvals for this task.
    pub task: Option<String>,
    /// At most this many.
    pub limit: usize,
}

impl Default for ApprovalFilter {
    /// No filter, at most [`DEFAULT_LIMIT`].
    fn default() -> Self {
        ApprovalFilter { status: None, task: None, limit: DEFAULT_LIMIT }
    }
}

/// Which leases [`Store::list_leases`](crate::Store::list_leases) returns. Every filter set must
/// match; `limit` caps the count (0 returns nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFilter {
    /// Only leases of this task.
    pub task: Option<String>,
    /// Only leases minted from this secret.
    pub secret: Option<String>,
    /// Only leases not dropped yet.
    pub undropped: bool,
    /// At most this many.
    pub limit: usize,
}

impl Default for LeaseFilter {
    /// No filter, at most [`DEFAULT_LIMIT`].
    fn default() -> Self {
        LeaseFilter { task: None, secret: None, undropped: false, limit: DEFAULT_LIMIT }
    }
}
