//! Request data of every shape reaching the decision point (resource properties, caller
//! context, names): evaluation never panics, and a request with no matching permit is never
//! allowed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mandate_core::Classification;
use mandate_policy::{ActionInput, ContextInput, DecisionInput, EntityData, PolicySnapshot, PolicySources, PrincipalInput, ResourceInput};
use serde_json::{Map, Value};

fn snapshot() -> &'static PolicySnapshot {
    static S: OnceLock<PolicySnapshot> = OnceLock::new();
    S.get_or_init(|| PolicySnapshot::compile(&PolicySources::starter()).unwrap())
}

fn obj(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("x").to_owned();
    let principal = if v.get("agent").is_some() {
        PrincipalInput::Agent {
            name: s("name"),
            spiffe_id: s("spiffe"),
            owner: s("owner"),
            purpose: s("purpose"),
            trust_domain: s("td"),
            tags: Default::default(),
        }
    } else {
        PrincipalInput::Other { kind: s("ptype"), id: s("pid"), properties: obj(v.get("pprops")) }
    };
    let input = DecisionInput {
        principal,
        action: ActionInput { name: s("action"), kind: None },
        resource: ResourceInput {
            kind: s("rtype"),
            id: s("rid"),
            classification: Classification::Public,
            properties: obj(v.get("rprops")),
        },
        context: ContextInput {
            now_secs: v.get("now").and_then(Value::as_i64).unwrap_or(0),
            environment: s("env"),
            risk: v.get("risk").and_then(Value::as_i64).unwrap_or(0),
            task: None,
            extra: obj(v.get("context")),
        },
    };
    let d = snapshot().evaluate(&input, &EntityData::empty());
    // The starter set permits agents only inside a task; there is none here.
    if matches!(input.principal, PrincipalInput::Agent { .. }) && input.action.name != "task.open" {
        assert!(!d.allowed(), "allowed without a task: {d:?}");
    }
});
