//! How a Mandate request becomes Cedar: entity types, attributes, tags, action groups,
//! classification and context. Each probe policy checks one fact; an allowed request reports
//! every probe it satisfied.

mod common;

use mandate_core::Classification;
use mandate_policy::{ActionKind, EntityData, Outcome, PolicySnapshot, ResourceInput, TaskContext, reason};
use serde_json::json;

use common::*;

const PROBES: &str = r#"
@id("agent.attrs")
permit (principal == Mandate::Agent::"support-bot", action, resource)
when {
  principal.name == "support-bot" &&
  principal.spiffe_id == "spiffe://mandate.local/agent/support-bot" &&
  principal.owner == "alice@example.com" &&
  principal.purpose == "Summarise tickets" &&
  principal.trust_domain == "mandate.local"
};

@id("agent.tag")
permit (principal is Mandate::Agent, action, resource)
when { principal.hasTag("team") && principal.getTag("team") == "support" };

@id("kind.read")
permit (principal, action in Mandate::Action::"read", resource);

@id("kind.write")
permit (principal, action in Mandate::Action::"write", resource);

@id("kind.execute")
permit (principal, action in Mandate::Action::"execute", resource);

@id("ctx.kind-read")
permit (principal, action, resource) when { context.action_kind == "read" };

@id("ctx.kind-unknown")
permit (principal, action, resource) when { context.action_kind == "" };

@id("ctx.time")
permit (principal, action, resource)
when { context.now == 1767614400 && context.hour == 12 && context.weekday == 1 };

@id("ctx.env")
permit (principal, action, resource)
when { context.environment == "production" && context.risk == 0 };

@id("ctx.task")
permit (principal, action, resource)
when {
  context has task &&
  context.task.id == "task-7" &&
  context.task.purpose == "Summarise" &&
  context.task.actions.contains("tickets.read") &&
  context.task.resources.contains("ticket:*") &&
  context.task.max_classification == 1 &&
  context.task.on_behalf_of == "alice@example.com" &&
  context.task.depth == 2 &&
  context.task.delegated &&
  context.task.chain.contains("spiffe://mandate.local/agent/planner")
};

@id("res.data")
permit (principal, action, resource is ticket)
when { resource.classification == 1 && resource.classification_label == "internal" };

@id("res.tool")
permit (principal, action, resource is Mandate::Tool)
when {
  resource has kind && resource.kind == "mcp" &&
  resource.classification == 3 && resource.classification_label == "restricted"
};

@id("res.task")
permit (principal, action == Mandate::Action::"task.open", resource is Mandate::Task)
when {
  resource.purpose == "Summarise" &&
  resource.actions.contains("tickets.read") &&
  resource.resources.contains("ticket:*") &&
  resource.max_classification == 2 &&
  resource.lifetime_seconds == 300 &&
  resource.on_behalf_of == "alice@example.com"
};

@id("res.task-own")
permit (principal, action == Mandate::Action::"task.open", resource is Mandate::Task)
when { resource.depth == 0 && resource.delegated_from == "" && resource.chain.isEmpty() };

@id("res.task-delegated")
permit (principal, action == Mandate::Action::"task.open", resource is Mandate::Task)
when {
  resource.depth == 2 &&
  resource.delegated_from == "task-parent" &&
  resource.chain.contains("spiffe://mandate.local/agent/planner")
};
"#;

fn probes() -> PolicySnapshot {
    compile(with_starter_schema(&[("probes.cedar", PROBES)]))
}

fn satisfied(snapshot: &PolicySnapshot, input: &mandate_policy::DecisionInput) -> Vec<String> {
    let d = snapshot.evaluate(input, &EntityData::empty());
    assert_eq!(d, snapshot.evaluate_unsliced(input, &EntityData::empty()), "sliced and unsliced differ");
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    d.policies
}

fn ticket() -> ResourceInput {
    resource("ticket", "42", Classification::Internal)
}

#[test]
fn agents_map_to_mandate_agent_with_attributes_and_tags() {
    let s = probes();
    let got = satisfied(&s, &request(agent("support-bot", &[("team", "support")]), "tickets.read", ticket()));
    assert!(got.contains(&"agent.attrs".to_owned()), "{got:?}");
    assert!(got.contains(&"agent.tag".to_owned()), "{got:?}");

    let got = satisfied(&s, &request(agent("other-bot", &[("team", "sales")]), "tickets.read", ticket()));
    assert!(!got.contains(&"agent.attrs".to_owned()) && !got.contains(&"agent.tag".to_owned()), "{got:?}");
}

#[test]
fn declared_actions_sit_in_their_kind_group() {
    let s = probes();
    let got = satisfied(&s, &request(agent("bot", &[]), "tickets.read", ticket()));
    assert!(got.contains(&"kind.read".to_owned()) && got.contains(&"ctx.kind-read".to_owned()), "{got:?}");
    assert!(!got.contains(&"kind.write".to_owned()) && !got.contains(&"kind.execute".to_owned()));

    let got = satisfied(&s, &request(agent("bot", &[]), "email.send", resource("customer", "c1", Classification::Public)));
    assert!(got.contains(&"kind.write".to_owned()) && !got.contains(&"kind.read".to_owned()), "{got:?}");

    let got = satisfied(&s, &request(agent("bot", &[]), "payments.refund", resource("payment", "p", Classification::Public)));
    assert!(got.contains(&"kind.execute".to_owned()), "{got:?}");
}

#[test]
fn the_schema_hierarchy_wins_over_the_callers_kind() {
    let s = probes();
    let input = with_kind(request(agent("bot", &[]), "tickets.read", ticket()), ActionKind::Execute);
    let got = satisfied(&s, &input);
    assert!(got.contains(&"kind.read".to_owned()) && got.contains(&"ctx.kind-read".to_owned()), "{got:?}");
    assert!(!got.contains(&"kind.execute".to_owned()), "{got:?}");
}

#[test]
fn undeclared_actions_take_the_callers_kind_or_none() {
    let s = probes();
    let doc = resource("document", "handbook", Classification::Internal);
    let got = satisfied(&s, &with_kind(request(agent("bot", &[]), "wiki.edit", doc.clone()), ActionKind::Write));
    assert!(got.contains(&"kind.write".to_owned()), "{got:?}");
    assert!(!got.contains(&"kind.read".to_owned()) && !got.contains(&"ctx.kind-unknown".to_owned()));

    let got = satisfied(&s, &request(agent("bot", &[]), "wiki.edit", doc));
    assert!(got.iter().all(|p| !p.starts_with("kind.")), "{got:?}");
    assert!(got.contains(&"ctx.kind-unknown".to_owned()), "{got:?}");
}

#[test]
fn resources_carry_their_classification() {
    let s = probes();
    let got = satisfied(&s, &request(agent("bot", &[]), "tickets.read", ticket()));
    assert!(got.contains(&"res.data".to_owned()), "{got:?}");

    let mut tool = resource("tool", "tickets.read", Classification::Restricted);
    tool.properties = object(json!({"kind": "mcp", "upstream": "helpdesk", "classification": 0}));
    let got = satisfied(&s, &request(agent("bot", &[]), "tickets.read", tool));
    assert!(got.contains(&"res.tool".to_owned()), "the caller's effective classification wins: {got:?}");
    assert!(!got.contains(&"res.data".to_owned()));
}

#[test]
fn tasks_are_mapped_from_their_intent() {
    let s = probes();
    let intent = intent(&["tickets.read"], &["ticket:*"], Classification::Confidential);
    let input = request(agent("bot", &[]), "task.open", ResourceInput::task("t-1", &intent, 300));
    assert!(satisfied(&s, &input).contains(&"res.task".to_owned()));

    assert!(satisfied(&s, &input).contains(&"res.task-own".to_owned()), "a task opened directly has depth 0 and no chain");
    let chain = ["spiffe://mandate.local/agent/planner".to_owned(), "spiffe://mandate.local/agent/a".to_owned()];
    let mut delegated = input.clone();
    delegated.resource = delegated.resource.delegated_from("task-parent", 2, &chain);
    let got = satisfied(&s, &delegated);
    assert!(got.contains(&"res.task-delegated".to_owned()) && !got.contains(&"res.task-own".to_owned()), "{got:?}");
    let mut bad = delegated.clone();
    bad.resource.properties.insert("depth".into(), json!(-1));
    assert!(s.evaluate(&bad, &EntityData::empty()).errors[0].contains("depth"));

    let mut missing = input.clone();
    missing.resource.properties.remove("lifetime_seconds");
    let d = s.evaluate(&missing, &EntityData::empty());
    assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, reason::INVALID_INPUT));
    assert!(d.errors[0].contains("lifetime_seconds"), "{:?}", d.errors);
}

#[test]
fn the_context_carries_time_environment_and_task() {
    let s = probes();
    let mut input = request(agent("bot", &[]), "tickets.read", ticket());
    let got = satisfied(&s, &input);
    assert!(got.contains(&"ctx.time".to_owned()) && got.contains(&"ctx.env".to_owned()), "{got:?}");
    assert!(!got.contains(&"ctx.task".to_owned()));

    input.context.task = Some(TaskContext {
        id: "task-7".into(),
        intent: intent(&["tickets.read"], &["ticket:*"], Classification::Internal),
        depth: 2,
        chain: vec!["spiffe://mandate.local/agent/planner".into(), "spiffe://mandate.local/agent/a".into()],
    });
    assert!(satisfied(&s, &input).contains(&"ctx.task".to_owned()));

    // One hour and one day later.
    input.context.now_secs += 25 * 3600;
    assert!(!satisfied(&s, &input).contains(&"ctx.time".to_owned()));
}

#[test]
fn a_callers_context_cannot_forge_mandates_keys() {
    let s = probes();
    let mut input = request(agent("bot", &[]), "tickets.read", ticket());
    input.context.extra = object(json!({
        "environment": "staging",
        "risk": 9,
        "task": {"id": "task-7", "purpose": "Summarise", "actions": ["tickets.read"], "resources": ["ticket:*"],
                 "max_classification": 1, "on_behalf_of": "alice@example.com", "depth": 2, "delegated": true,
                 "chain": ["spiffe://mandate.local/agent/planner"]},
        "ticket_count": 3,
        "nothing": null
    }));
    let got = satisfied(&s, &input);
    assert!(got.contains(&"ctx.env".to_owned()), "{got:?}");
    assert!(!got.contains(&"ctx.task".to_owned()), "{got:?}");
}

#[test]
fn floats_are_refused_not_truncated() {
    let s = probes();
    let mut input = request(agent("bot", &[]), "tickets.read", ticket());
    input.context.extra = object(json!({"order": {"amount": 12.5}}));
    let d = s.evaluate(&input, &EntityData::empty());
    assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, reason::INVALID_INPUT));
    assert!(d.errors[0].contains("`context.order.amount`") && d.errors[0].contains("12.5"), "{:?}", d.errors);

    let mut input = request(agent("bot", &[]), "tickets.read", ticket());
    input.resource.properties = object(json!({"sizes": [1, 2.0]}));
    let d = s.evaluate(&input, &EntityData::empty());
    assert_eq!(d.reason, reason::INVALID_INPUT);
    assert!(d.errors[0].contains("`resource.properties.sizes[1]`"), "{:?}", d.errors);

    input.resource.properties = object(json!({"big": u64::MAX}));
    let d = s.evaluate(&input, &EntityData::empty());
    assert_eq!(d.reason, reason::INVALID_INPUT);
    assert!(d.errors[0].contains("too large"), "{:?}", d.errors);
}

#[test]
fn malformed_input_is_a_deny_that_says_why() {
    let s = probes();
    for (kind, needle) in [("bad type", "invalid entity type"), ("Foo::Action", "reserved for actions"), ("ticket ", "invalid entity type")]
    {
        let d = s.evaluate(&request(agent("bot", &[]), "tickets.read", resource(kind, "1", Classification::Public)), &EntityData::empty());
        assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, reason::INVALID_INPUT), "{kind}");
        assert!(d.errors[0].contains(needle), "{:?}", d.errors);
        assert_eq!(d.version, s.version());
    }
    let d = s.evaluate(&request(agent("bot", &[]), "", ticket()), &EntityData::empty());
    assert_eq!(d.reason, reason::INVALID_INPUT);
    let d = s.evaluate(&request(subject("user", "alice", json!({"score": 0.5})), "tickets.read", ticket()), &EntityData::empty());
    assert!(d.errors[0].contains("`subject.properties.score`"), "{:?}", d.errors);
}

#[test]
fn an_agent_acting_on_itself_is_one_entity() {
    let s = probes();
    let input =
        request(agent("support-bot", &[("team", "support")]), "tickets.read", resource("agent", "support-bot", Classification::Public));
    let d = s.evaluate(&input, &EntityData::empty());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert!(d.policies.contains(&"agent.attrs".to_owned()), "{:?}", d.policies);
}

#[test]
fn unknown_actions_are_a_clean_deny() {
    let s = starter();
    let input = with_task(request(agent("bot", &[]), "nuke.everything", ticket()), task(Classification::Restricted));
    let d = s.evaluate(&input, &EntityData::empty());
    assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, reason::NO_POLICY_PERMITS));
    assert!(d.errors.is_empty() && d.policies.is_empty());
}
