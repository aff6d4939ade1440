//! The in-memory view of what may act right now: which tasks are live and which agents are
//! active. Every decision reads it, so revocation is effective on the very next request; the
//! store stays the durable truth and this view is rebuilt from it on start.
//!
//! Every change that stops a task or an agent (and an agent enabled again) is published on the
//! revocation feed from here, after the view is updated, so no caller can forget to.

use std::collections::HashMap;
use std::sync::Arc;

use mandate_core::{Agent, AgentStatus, Task, TaskStatus};
use mandate_proto::gateway::{RevocationKind, RevocationStatus};
use parking_lot::RwLock;

use crate::revocations::RevocationFeed;

pub use mandate_pdp::TaskState;

/// How long an ended task is remembered (to say `task_revoked` rather than `task_unknown`).
const ENDED_MEMORY_MS: i64 = 24 * 3600 * 1000;

#[derive(Default)]
pub struct Registry {
    tasks: RwLock<HashMap<String, TaskState>>,
    agents: RwLock<HashMap<String, Arc<Agent>>>,
    feed: RevocationFeed,
}

impl Registry {
    pub(crate) fn load(agents: Vec<Agent>, live: Vec<Task>, feed: RevocationFeed) -> Self {
        let reg = Registry { feed, ..Registry::default() };
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

    /// What is known of task `id`: live or how it ended. A task that is `Live` but whose
    /// `expires_at_ms` has passed is expired (the sweeper ends it within a sweep interval).
    pub fn task(&self, id: &str) -> Option<TaskState> {
        self.tasks.read().get(id).cloned()
    }

    /// Agent `name` as registered, with its current status.
    pub fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.agents.read().get(name).cloned()
    }

    /// The feed of every change that stops a task or an agent.
    pub fn revocations(&self) -> &RevocationFeed {
        &self.feed
    }

    pub(crate) fn put_agent(&self, agent: Agent) {
        self.agents.write().insert(agent.name.as_str().to_owned(), Arc::new(agent));
    }

    /// Sets an agent's status; a change is published (`disabled` or `enabled`).
    pub(crate) fn set_agent_status(&self, name: &str, status: AgentStatus, at_ms: i64) {
        let mut agents = self.agents.write();
        if let Some(a) = agents.get_mut(name) {
            let changed = a.status != status;
            let mut updated = (**a).clone();
            updated.status = status;
            updated.updated_at_ms = at_ms;
            *a = Arc::new(updated);
            if changed {
                let published = match status {
                    AgentStatus::Disabled => RevocationStatus::Disabled,
                    AgentStatus::Active => RevocationStatus::Enabled,
                };
                self.feed.publish(RevocationKind::Agent, name, published, at_ms);
            }
        }
    }

    /// Takes an agent as the store has it (another replica changed it): its record replaces
    /// this view's, and a status change is published as [`set_agent_status`](Self::set_agent_status)
    /// does.
    pub(crate) fn sync_agent(&self, agent: Agent) {
        let (name, status, at) = (agent.name.as_str().to_owned(), agent.status, agent.updated_at_ms);
        let known = self.agents.read().get(&name).map(|a| a.status);
        match known {
            Some(before) if before != status => {
                self.set_agent_status(&name, status, at);
                self.put_agent(agent);
            }
            _ => self.put_agent(agent),
        }
    }

    /// Takes a task as the store has it (another replica opened or ended it): a live one is
    /// added, an ended one ends here too (and is published).
    pub(crate) fn sync_task(&self, task: &Task, now_ms: i64) {
        match task.status {
            TaskStatus::Live => {
                let mut tasks = self.tasks.write();
                tasks.entry(task.id.clone()).or_insert_with(|| state_of(task));
            }
            ended => {
                if !self.tasks.read().contains_key(&task.id) {
                    self.put_task(&Task { status: TaskStatus::Live, ..task.clone() });
                }
                self.end_tasks(std::slice::from_ref(&task.id), ended, task.ended.as_ref().map_or(now_ms, |e| e.at_ms));
            }
        }
    }

    /// The ids of every task this view holds as live.
    pub(crate) fn live_task_ids(&self) -> Vec<String> {
        self.tasks.read().iter().filter(|(_, t)| t.status == TaskStatus::Live).map(|(id, _)| id.clone()).collect()
    }

    pub(crate) fn put_task(&self, task: &Task) {
        self.tasks.write().insert(task.id.clone(), state_of(task));
    }

    /// Marks tasks ended and publishes each that was live (or unknown here); forgets ended
    /// tasks that are long past.
    pub(crate) fn end_tasks(&self, ids: &[String], status: TaskStatus, now_ms: i64) {
        let published = match status {
            TaskStatus::Revoked => Some(RevocationStatus::Revoked),
            TaskStatus::Completed => Some(RevocationStatus::Completed),
            TaskStatus::Expired => Some(RevocationStatus::Expired),
            TaskStatus::Live => None,
        };
        let mut tasks = self.tasks.write();
        for id in ids {
            let ended_now = match tasks.get_mut(id) {
                // A task ends once; its first ending stands, as in the store.
                Some(t) if t.status == TaskStatus::Live => {
                    t.status = status;
                    true
                }
                Some(_) => false,
                None => true,
            };
            if let (true, Some(published)) = (ended_now, published) {
                self.feed.publish(RevocationKind::Task, id, published, now_ms);
            }
        }
        if tasks.len() > 10_000 {
            tasks.retain(|_, t| t.status == TaskStatus::Live || t.expires_at_ms + ENDED_MEMORY_MS > now_ms);
        }
    }

    /// How many tasks are live.
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

/// The registry is the decision core's view of liveness: read from memory, updated at once.
impl mandate_pdp::Liveness for Registry {
    fn task(&self, id: &str) -> Option<TaskState> {
        Registry::task(self, id)
    }

    fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        Registry::agent(self, name)
    }
}

#[cfg(test)]
mod tests {
    use mandate_core::{AgentName, Classification, Intent, SpiffeId, TrustDomain};
    use mandate_proto::gateway::RevocationEntry;

    use super::*;

    fn agent(name: &str) -> Agent {
        let name = AgentName::parse(name).unwrap();
        Agent {
            spiffe_id: SpiffeId::for_agent(&TrustDomain::parse("test.local").unwrap(), &name),
            name,
            owner: "o".into(),
            purpose: "p".into(),
            status: AgentStatus::Active,
            attributes: Default::default(),
            public_jwk: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_seen_ms: None,
        }
    }

    fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            agent: AgentName::parse("bot").unwrap(),
            intent: Intent {
                purpose: "p".into(),
                actions: vec!["a".into()],
                resources: vec!["r:*".into()],
                max_classification: Classification::Internal,
                on_behalf_of: None,
            },
            status: TaskStatus::Live,
            created_at_ms: 0,
            expires_at_ms: 100,
            mandate_jti: "j".into(),
            parent_id: None,
            root_id: id.into(),
            depth: 0,
            ended: None,
        }
    }

    fn published(reg: &Registry) -> Vec<(RevocationKind, String, RevocationStatus, i64)> {
        reg.revocations()
            .since(0)
            .unwrap()
            .into_iter()
            .map(|RevocationEntry { kind, id, status, at_ms, .. }| (kind, id, status, at_ms))
            .collect()
    }

    #[test]
    fn every_change_that_stops_something_is_published_once() {
        let reg = Registry::load(vec![agent("bot")], vec![task("t1"), task("t2")], RevocationFeed::new(16));
        reg.set_agent_status("bot", AgentStatus::Disabled, 5);
        reg.set_agent_status("bot", AgentStatus::Disabled, 6);
        reg.set_agent_status("nobody", AgentStatus::Disabled, 7);
        reg.set_agent_status("bot", AgentStatus::Active, 8);
        reg.end_tasks(&["t1".to_owned(), "t2".to_owned()], TaskStatus::Expired, 9);
        reg.end_tasks(&["t1".to_owned()], TaskStatus::Revoked, 10);
        // A task the registry does not know is published: the store, which ended it, knows.
        reg.end_tasks(&["t3".to_owned()], TaskStatus::Completed, 11);
        assert_eq!(
            published(&reg),
            vec![
                (RevocationKind::Agent, "bot".into(), RevocationStatus::Disabled, 5),
                (RevocationKind::Agent, "bot".into(), RevocationStatus::Enabled, 8),
                (RevocationKind::Task, "t1".into(), RevocationStatus::Expired, 9),
                (RevocationKind::Task, "t2".into(), RevocationStatus::Expired, 9),
                (RevocationKind::Task, "t3".into(), RevocationStatus::Completed, 11),
            ]
        );
        assert_eq!(reg.task("t1").unwrap().status, TaskStatus::Expired);
        assert_eq!(reg.agent("bot").unwrap().status, AgentStatus::Active);
    }
}
