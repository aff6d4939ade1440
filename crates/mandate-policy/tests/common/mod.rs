//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use mandate_core::{Classification, Intent};
use mandate_policy::{
    ActionInput, ActionKind, ContextInput, DecisionInput, Diagnostic, PolicySnapshot, PolicySources, PrincipalInput, ResourceInput,
    TaskContext,
};
use serde_json::{Map, Value};

/// Monday 2026-01-05 12:00:00 UTC.
pub const NOON_MONDAY: i64 = 1_767_614_400;

pub fn starter() -> PolicySnapshot {
    compile(PolicySources::starter())
}

pub fn compile(src: PolicySources) -> PolicySnapshot {
    match PolicySnapshot::compile(&src) {
        Ok(s) => s,
        Err(diags) => panic!("policy set does not compile:\n{}", lines(&diags)),
    }
}

/// The starter schema with the given policy files.
pub fn with_starter_schema(files: &[(&str, &str)]) -> PolicySources {
    let mut src = PolicySources::starter();
    src.policies = files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
    src
}

pub fn lines(diags: &[Diagnostic]) -> String {
    diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

pub fn agent(name: &str, tags: &[(&str, &str)]) -> PrincipalInput {
    PrincipalInput::Agent {
        name: name.into(),
        spiffe_id: format!("spiffe://mandate.local/agent/{name}"),
        owner: "alice@example.com".into(),
        purpose: "Summarise tickets".into(),
        trust_domain: "mandate.local".into(),
        tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
    }
}

pub fn subject(kind: &str, id: &str, properties: Value) -> PrincipalInput {
    PrincipalInput::Other { kind: kind.into(), id: id.into(), properties: object(properties) }
}

pub fn resource(kind: &str, id: &str, classification: Classification) -> ResourceInput {
    ResourceInput { kind: kind.into(), id: id.into(), classification, properties: Map::new() }
}

pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => panic!("not an object: {other}"),
    }
}

pub fn intent(actions: &[&str], resources: &[&str], max: Classification) -> Intent {
    Intent {
        purpose: "Summarise".into(),
        actions: actions.iter().map(|s| (*s).to_owned()).collect(),
        resources: resources.iter().map(|s| (*s).to_owned()).collect(),
        max_classification: max,
        on_behalf_of: Some("alice@example.com".into()),
    }
}

pub fn task(max: Classification) -> TaskContext {
    TaskContext { id: "task-1".into(), intent: intent(&["*"], &["*"], max), depth: 0, chain: vec![] }
}

pub fn context(task: Option<TaskContext>) -> ContextInput {
    ContextInput { now_secs: NOON_MONDAY, environment: "production".into(), risk: 0, task, extra: Map::new() }
}

/// A request with a production context and no task.
pub fn request(principal: PrincipalInput, action: &str, resource: ResourceInput) -> DecisionInput {
    DecisionInput { principal, action: ActionInput::named(action), resource, context: context(None) }
}

pub fn with_kind(mut input: DecisionInput, kind: ActionKind) -> DecisionInput {
    input.action.kind = Some(kind);
    input
}

pub fn with_task(mut input: DecisionInput, task: TaskContext) -> DecisionInput {
    input.context.task = Some(task);
    input
}
