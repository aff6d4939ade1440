//! The in-memory view of what may act right now: which tasks are live and which agents are
//! active. Every decision reads it, so revocation is effective on the very next request; the
//! store stays the durable truth and this view is rebuilt from it on start.

use std::collections::HashMap;
use std::sync::Arc;

use mandate_core::{Agent, AgentStatus, Task, TaskStatus};
use parking_lot::RwLock;

/// What a decision needs to know about a task.
#[derive(Debug, Clone)]
pub struct TaskState {
    pub agent: String,
    pub status: TaskStatus,
    pub expires_at_ms: i64,
    pub parent_id: Option<String>,
}

/// How long an ended task is remembered (to say `task_revoked` rather than `task_unknown`).
const ENDED_MEMORY_MS: i64 = 24 * 3600 * 1000;

#[derive(Default)]
pub struct Registry {
    tasks: RwLock<HashMap<String, TaskState>>,
    agents: RwLock<HashMap<String, Arc<Agent>>>,
}

impl Registry {
    pub fn load(agents: Vec<Agent>, live: Vec<Task>) -> Self {
        let reg = Registry::default();
        {
            let mut a = reg.agents.write();
            for agent in agents {
                a.insert(agent.name.as_str().to_owned(), Arc::new(agent));
            }
            let mut t = reg.tasks.write();
            for task in live {
                t.insert(task.id.clone(), state_of(&task));
            }
        }
        reg
    }

    pub fn task(&self, id: &str) -> Option<TaskState> {
        self.tasks.read().get(id).cloned()
    }

    pub fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.agents.read().get(name).cloned()
    }

    pub fn put_agent(&self, agent: Agent) {
        self.agents.write().insert(agent.name.as_str().to_owned(), Arc::new(agent));
    }

    pub fn set_agent_status(&self, name: &str, status: AgentStatus, at_ms: i64) {
        let mut agents = self.agents.write();
        if let Some(a) = agents.get_mut(name) {
            let mut updated = (**a).clone();
            updated.status = status;
            updated.updated_at_ms = at_ms;
            *a = Arc::new(updated);
        }
    }

    pub fn put_task(&self, task: &Task) {
        self.tasks.write().insert(task.id.clone(), state_of(task));
    }

    /// Marks tasks ended; forgets ended tasks that are long past.
    pub fn end_tasks(&self, ids: &[String], status: TaskStatus, now_ms: i64) {
        let mut tasks = self.tasks.write();
        for id in ids {
            if let Some(t) = tasks.get_mut(id) {
                t.status = status;
            }
        }
        if tasks.len() > 10_000 {
            tasks.retain(|_, t| t.status == TaskStatus::Live || t.expires_at_ms + ENDED_MEMORY_MS > now_ms);
        }
    }

    pub fn live_task_count(&self) -> usize {
        self.tasks.read().values().filter(|t| t.status == TaskStatus::Live).count()
    }
}

fn state_of(task: &Task) -> TaskState {
    TaskState {
        agent: task.agent.as_str().to_owned(),
        status: task.status,
        expires_at_ms: task.expires_at_ms,
        parent_id: task.parent_id.clone(),
    }
}
