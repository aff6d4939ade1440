//! Decision latency: one `evaluate` for an agent request against 10, 1,000 and 10,000
//! policies (the starter set plus generated per-agent, per-action policies), next to Cedar
//! given every policy (unsliced) for comparison.
//!
//! `cargo bench -p mandate-policy --bench decision`

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "a benchmark stops loudly on a broken fixture")]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request, RestrictedExpression};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mandate_core::{Classification, Intent};
use mandate_policy::{
    ActionInput, ContextInput, DecisionInput, EntityData, PolicySnapshot, PolicySources, PrincipalInput, ResourceInput, TaskContext,
};

const ACTIONS: [(&str, &str); 7] = [
    ("tickets.read", "ticket"),
    ("tickets.search", "ticket"),
    ("tickets.export", "ticket"),
    ("tickets.write", "ticket"),
    ("email.send", "customer"),
    ("deploy.production", "service"),
    ("payments.refund", "payment"),
];

/// The starter set plus `total - starter` generated policies: for agent after agent, one
/// policy per demo action (a permit, every fifth a forbid), each with a condition.
fn sources(total: usize) -> PolicySources {
    let mut src = PolicySources::starter();
    let starter = PolicySnapshot::compile(&src).map(|s| s.policy_count()).unwrap_or(0);
    let mut text = String::new();
    for n in 0..total.saturating_sub(starter) {
        let agent = n / ACTIONS.len();
        let (action, resource) = ACTIONS[n % ACTIONS.len()];
        let (effect, risk) = if n % 5 == 4 { ("forbid", "context.risk >= 9") } else { ("permit", "context.risk < 5") };
        text.push_str(&format!(
            "@id(\"gen.agent-{agent}.{action}\")\n{effect} (\n  principal == Mandate::Agent::\"agent-{agent}\",\n  \
             action == Mandate::Action::\"{action}\",\n  resource is {resource}\n)\nwhen {{\n  context has task &&\n  \
             resource.classification <= context.task.max_classification &&\n  {risk}\n}};\n\n"
        ));
    }
    src.policies.push(("generated.cedar".to_owned(), text));
    src
}

fn request(agent: &str) -> DecisionInput {
    let intent = Intent {
        purpose: "Summarise ticket 42".into(),
        actions: vec!["tickets.read".into()],
        resources: vec!["ticket:*".into()],
        max_classification: Classification::Internal,
        on_behalf_of: Some("alice@example.com".into()),
    };
    DecisionInput {
        principal: PrincipalInput::Agent {
            name: agent.into(),
            spiffe_id: format!("spiffe://mandate.local/agent/{agent}"),
            owner: "alice@example.com".into(),
            purpose: "Summarise tickets".into(),
            trust_domain: "mandate.local".into(),
            tags: BTreeMap::from([("team".into(), "support".into())]),
        },
        action: ActionInput::named("tickets.read"),
        resource: ResourceInput {
            kind: "ticket".into(),
            id: "42".into(),
            classification: Classification::Internal,
            properties: serde_json::Map::new(),
        },
        context: ContextInput {
            now_secs: 1_767_614_400,
            environment: "production".into(),
            risk: 1,
            task: Some(TaskContext { id: "task-1".into(), intent, depth: 0, chain: vec![] }),
            extra: serde_json::Map::new(),
        },
    }
}

/// A prebuilt Cedar request and entities for the same decision, to time Cedar alone.
fn raw_cedar(agent: &str) -> (Request, Entities) {
    let uid = |s: &str| EntityUid::from_str(s).unwrap();
    let s = |v: &str| RestrictedExpression::new_string(v.into());
    let principal = uid(&format!("Mandate::Agent::\"{agent}\""));
    let action = uid("Mandate::Action::\"tickets.read\"");
    let resource = uid("ticket::\"42\"");
    let agent_entity = Entity::new_with_tags(
        principal.clone(),
        [
            ("name".into(), s(agent)),
            ("spiffe_id".into(), s("spiffe://mandate.local/agent/x")),
            ("owner".into(), s("alice@example.com")),
            ("purpose".into(), s("Summarise tickets")),
            ("trust_domain".into(), s("mandate.local")),
        ],
        [],
        [("team".into(), s("support"))],
    )
    .unwrap();
    let action_entity = Entity::new_no_attrs(action.clone(), [uid("Mandate::Action::\"read\"")].into());
    let ticket = Entity::new(
        resource.clone(),
        [("classification".into(), RestrictedExpression::new_long(1)), ("classification_label".into(), s("internal"))].into(),
        Default::default(),
    )
    .unwrap();
    let context = Context::from_json_value(
        serde_json::json!({"environment": "production", "risk": 1, "now": 1_767_614_400, "hour": 12, "weekday": 1,
            "action_kind": "read", "task": {"id": "task-1", "purpose": "Summarise ticket 42",
            "actions": ["tickets.read"], "resources": ["ticket:*"], "max_classification": 1,
            "on_behalf_of": "alice@example.com", "depth": 0, "delegated": false, "chain": []}}),
        None,
    )
    .unwrap();
    let request = Request::new(principal, action, resource, context, None).unwrap();
    let entities = Entities::from_entities([agent_entity, action_entity, ticket], None).unwrap();
    (request, entities)
}

fn all_policies(src: &PolicySources) -> PolicySet {
    let mut set = PolicySet::new();
    for (_, text) in &src.policies {
        let parsed = PolicySet::from_str(text).unwrap();
        for p in parsed.policies() {
            let id = format!("p{}", set.num_of_policies());
            set.add(p.new_id(cedar_policy::PolicyId::new(id))).unwrap();
        }
    }
    set
}

fn decision(c: &mut Criterion) {
    let entities = EntityData::empty();
    let mut group = c.benchmark_group("decision");
    for total in [10, 1_000, 10_000] {
        let src = sources(total);
        let snapshot = PolicySnapshot::compile(&src).unwrap();
        assert_eq!(snapshot.policy_count(), total);
        let agent = "agent-7";
        let input = request(agent);
        let d = snapshot.evaluate(&input, &entities);
        assert!(d.allowed(), "{d:?}");
        assert_eq!(d, snapshot.evaluate_unsliced(&input, &entities));

        group.bench_with_input(BenchmarkId::new("evaluate", total), &input, |b, input| {
            b.iter(|| snapshot.evaluate(black_box(input), &entities))
        });
        // A new resource and a new second on every call: the context and resource entity are
        // built afresh each time; only the slice and the agent's entities come from the cache.
        let varied: Vec<DecisionInput> = (0..64)
            .map(|i| {
                let mut v = input.clone();
                v.resource.id = format!("{}", 1000 + i);
                v
            })
            .collect();
        let mut tick = 0i64;
        group.bench_function(BenchmarkId::new("evaluate_varied", total), |b| {
            b.iter(|| {
                tick += 1;
                let mut v = varied[(tick % 64) as usize].clone();
                v.context.now_secs += tick;
                snapshot.evaluate(black_box(&v), &entities)
            })
        });
        group.bench_with_input(BenchmarkId::new("evaluate_slice_miss", total), &input, |b, input| {
            b.iter(|| snapshot.evaluate_uncached(black_box(input), &entities))
        });
        if total <= 1_000 {
            group.bench_with_input(BenchmarkId::new("evaluate_unsliced", total), &input, |b, input| {
                b.iter(|| snapshot.evaluate_unsliced(black_box(input), &entities))
            });
            let set = all_policies(&src);
            let (request, cedar_entities) = raw_cedar(agent);
            let authorizer = Authorizer::new();
            group.bench_function(BenchmarkId::new("cedar_raw_unsliced", total), |b| {
                b.iter(|| authorizer.is_authorized(black_box(&request), &set, &cedar_entities))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
