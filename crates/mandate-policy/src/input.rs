//! What a decision is asked about: the request as Mandate sees it, before it becomes Cedar.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use mandate_core::{Classification, Intent};
use serde::{Deserialize, Serialize};

/// The kind of an action: reads, writes and executions are told apart by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Looks, changes nothing.
    Read,
    /// Changes data.
    Write,
    /// Makes something happen: a payment, a deployment, a command.
    Execute,
}

impl ActionKind {
    /// Every kind, least powerful first.
    pub const ALL: [ActionKind; 3] = [ActionKind::Read, ActionKind::Write, ActionKind::Execute];

    /// `read`, `write` or `execute`: also the id of the action group `Mandate::Action::"<kind>"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Read => "read",
            ActionKind::Write => "write",
            ActionKind::Execute => "execute",
        }
    }
}

impl FromStr for ActionKind {
    type Err = UnknownActionKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownActionKind(s.chars().take(40).collect()))
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action kind that is not `read`, `write` or `execute`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action kind `{0}`: use read, write or execute")]
pub struct UnknownActionKind(pub String);

impl UnknownActionKind {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        "unknown_action_kind"
    }
}

/// One decision request: may this principal take this action on this resource, here and now?
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInput {
    /// Who asks.
    pub principal: PrincipalInput,
    /// What they want to do.
    pub action: ActionInput,
    /// What they want to do it to.
    pub resource: ResourceInput,
    /// When, where, and under which task.
    pub context: ContextInput,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq)]
pub enum PrincipalInput {
    /// A registered agent: `Mandate::Agent::"<name>"`. `tags` are the agent's attributes.
    Agent {
        /// The agent's registered name, the entity id.
        name: String,
        /// `spiffe://<trust-domain>/agent/<name>`.
        spiffe_id: String,
        /// The accountable human.
        owner: String,
        /// The registered purpose.
        purpose: String,
        /// The SPIFFE trust domain.
        trust_domain: String,
        /// The agent's free-form attributes, Cedar tags.
        tags: BTreeMap<String, String>,
    },
    /// Any other subject (a person, a service): `<kind>::"<id>"`, taken from the loaded
    /// entity data when it is there, built from `properties` otherwise.
    Other {
        /// The AuthZEN subject type, used verbatim as the Cedar entity type.
        kind: String,
        /// The entity id.
        id: String,
        /// Attributes for a subject that is not loaded; ignored for one that is.
        properties: serde_json::Map<String, serde_json::Value>,
    },
}

/// What is being done. `kind` places an action the schema does not declare in its group;
/// for a declared action the schema's hierarchy wins and `kind` is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionInput {
    /// The action id: `Mandate::Action::"<name>"`.
    pub name: String,
    /// The caller's idea of the action's kind, for actions the schema does not declare.
    pub kind: Option<ActionKind>,
}

impl ActionInput {
    /// An action known by name only.
    pub fn named(name: impl Into<String>) -> Self {
        ActionInput { name: name.into(), kind: None }
    }
}

/// What it is done to. `kind` is the AuthZEN resource type: `tool`, `task`, `agent`, or a
/// data entity type used verbatim (`ticket`, `PhotoApp::Photo`).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInput {
    /// The AuthZEN resource type.
    pub kind: String,
    /// The entity id.
    pub id: String,
    /// The effective classification. When a resource's classification is unknown the caller
    /// passes `Restricted`.
    pub classification: Classification,
    /// Attributes for a resource that is not loaded; ignored for one that is.
    pub properties: serde_json::Map<String, serde_json::Value>,
}

impl ResourceInput {
    /// A task being opened (`Mandate::Task`), described by its intent and lifetime.
    pub fn task(id: impl Into<String>, intent: &Intent, lifetime_seconds: u64) -> Self {
        let mut properties = serde_json::Map::new();
        properties.insert("purpose".into(), intent.purpose.clone().into());
        properties.insert("actions".into(), intent.actions.clone().into());
        properties.insert("resources".into(), intent.resources.clone().into());
        properties.insert("max_classification".into(), intent.max_classification.as_str().into());
        properties.insert("lifetime_seconds".into(), lifetime_seconds.into());
        if let Some(obo) = &intent.on_behalf_of {
            properties.insert("on_behalf_of".into(), obo.clone().into());
        }
        ResourceInput { kind: crate::mapping::TASK_KIND.to_owned(), id: id.into(), classification: intent.max_classification, properties }
    }

    /// The same task as delegated from task `parent`: its `depth` and `chain` (the SPIFFE IDs
    /// of the agents who delegated, root first), which policies read as `resource.depth`,
    /// `resource.delegated_from` and `resource.chain`.
    pub fn delegated_from(mut self, parent: &str, depth: u32, chain: &[String]) -> Self {
        self.properties.insert("delegated_from".into(), parent.into());
        self.properties.insert("depth".into(), depth.into());
        self.properties.insert("chain".into(), chain.to_vec().into());
        self
    }
}

/// The circumstances of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextInput {
    /// Unix seconds; policies also see the UTC hour and ISO weekday derived from it.
    pub now_secs: i64,
    /// Where the request runs, e.g. `production`.
    pub environment: String,
    /// The caller's risk score.
    pub risk: i64,
    /// The task the request is made under, if any.
    pub task: Option<TaskContext>,
    /// The caller's own context keys (AuthZEN `context`). Keys Mandate sets
    /// ([`RESERVED_CONTEXT_KEYS`](crate::RESERVED_CONTEXT_KEYS)) are dropped from it.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The task a request is made under.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskContext {
    /// The task id.
    pub id: String,
    /// What the task was granted.
    pub intent: Intent,
    /// Delegation depth: 0 for a task the agent opened itself.
    pub depth: u32,
    /// SPIFFE ids of the agents who delegated, root first and the immediate delegator last
    /// (`depth` of them); empty for a task the agent opened itself.
    pub chain: Vec<String>,
}
