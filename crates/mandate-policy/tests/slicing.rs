//! Slicing is exactly sound: for generated policy sets and requests, the sliced decision
//! (cached or not) equals the decision with every policy handed to Cedar: same outcome,
//! same determining policies, same obligations, same errors.

#![allow(clippy::indexing_slicing, reason = "the generator indexes fixed tables")]

mod common;

use mandate_core::Classification;
use mandate_policy::{ActionInput, ActionKind, ContextInput, DecisionInput, EntityData, PolicySnapshot, PolicySources, ResourceInput};
use serde_json::json;

use common::*;

const SCHEMA: &str = r#"
entity group in [group];
entity user in [group];
entity folder in [folder] = { classification: Long, classification_label: String };
entity document in [folder] = { classification: Long, classification_label: String };

namespace Mandate {
  entity Agent = { name: String, spiffe_id: String, owner: String, purpose: String, trust_domain: String } tags String;
  entity Tool = { classification: Long, classification_label: String };
  type RequestContext = { environment: String, risk: Long, now: Long, hour: Long, weekday: Long, action_kind: String };
  action "read", "write", "execute";
  action "docs.read", "docs.list" in [Action::"read"] appliesTo {
    principal: [Agent, user], resource: [Tool, document, folder], context: RequestContext,
  };
  action "docs.write" in [Action::"write"] appliesTo {
    principal: [Agent, user], resource: [Tool, document, folder], context: RequestContext,
  };
  action "docs.run" in [Action::"execute"] appliesTo {
    principal: [Agent, user], resource: [Tool, document, folder], context: RequestContext,
  };
}
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "group", "id": "g2"}, "attrs": {}, "parents": []},
  {"uid": {"type": "group", "id": "g1"}, "attrs": {}, "parents": [{"type": "group", "id": "g2"}]},
  {"uid": {"type": "group", "id": "g0"}, "attrs": {}, "parents": [{"type": "group", "id": "g1"}]},
  {"uid": {"type": "user", "id": "u0"}, "attrs": {}, "parents": [{"type": "group", "id": "g0"}]},
  {"uid": {"type": "user", "id": "u1"}, "attrs": {}, "parents": [{"type": "group", "id": "g1"}, {"type": "group", "id": "g2"}]},
  {"uid": {"type": "user", "id": "u2"}, "attrs": {}, "parents": []},
  {"uid": {"type": "folder", "id": "f1"}, "attrs": {"classification": 0, "classification_label": "public"}, "parents": []},
  {"uid": {"type": "folder", "id": "f0"}, "attrs": {"classification": 1, "classification_label": "internal"}, "parents": [{"type": "folder", "id": "f1"}]},
  {"uid": {"type": "folder", "id": "f2"}, "attrs": {"classification": 2, "classification_label": "confidential"}, "parents": []},
  {"uid": {"type": "document", "id": "d0"}, "attrs": {"classification": 1, "classification_label": "internal"}, "parents": [{"type": "folder", "id": "f0"}]},
  {"uid": {"type": "document", "id": "d1"}, "attrs": {"classification": 3, "classification_label": "restricted"}, "parents": [{"type": "folder", "id": "f1"}]},
  {"uid": {"type": "document", "id": "d2"}, "attrs": {"classification": 0, "classification_label": "public"}, "parents": [{"type": "folder", "id": "f2"}]}
]"#;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn policy(rng: &mut Rng) -> String {
    let k = |rng: &mut Rng, n: usize| rng.below(n);
    let principal = match k(rng, 9) {
        0 | 1 => "principal".to_owned(),
        2 => format!("principal == Mandate::Agent::\"a{}\"", k(rng, 3)),
        3 => format!("principal == user::\"u{}\"", k(rng, 4)),
        4 => format!("principal in group::\"g{}\"", k(rng, 3)),
        5 => "principal is Mandate::Agent".to_owned(),
        6 => "principal is user".to_owned(),
        7 => format!("principal is user in group::\"g{}\"", k(rng, 3)),
        _ => format!("principal in user::\"u{}\"", k(rng, 4)),
    };
    let action = match k(rng, 6) {
        0 => "action".to_owned(),
        1 | 2 => format!("action == Mandate::Action::\"{}\"", rng.pick(&["docs.read", "docs.list", "docs.write", "docs.run"])),
        3 | 4 => format!("action in Mandate::Action::\"{}\"", rng.pick(&["read", "write", "execute"])),
        _ => format!(
            "action in [Mandate::Action::\"{}\", Mandate::Action::\"{}\"]",
            rng.pick(&["docs.read", "docs.run", "read"]),
            rng.pick(&["write", "execute", "docs.list"])
        ),
    };
    let resource = match k(rng, 8) {
        0 | 1 => "resource".to_owned(),
        2 => format!("resource == document::\"d{}\"", k(rng, 4)),
        3 => format!("resource in folder::\"f{}\"", k(rng, 3)),
        4 => "resource is document".to_owned(),
        5 => "resource is Mandate::Tool".to_owned(),
        6 => format!("resource is document in folder::\"f{}\"", k(rng, 3)),
        _ => format!("resource == Mandate::Tool::\"t{}\"", k(rng, 2)),
    };
    let condition = match k(rng, 7) {
        0 | 1 => String::new(),
        2 => format!("when {{ context.risk > {} }}", k(rng, 10)),
        3 => format!("when {{ resource.classification <= {} }}", k(rng, 4)),
        // Overflows, so errors, once risk reaches 8.
        4 => "when { context.risk + 9223372036854775800 > 0 }".to_owned(),
        5 => format!("unless {{ principal in group::\"g{}\" }}", k(rng, 3)),
        _ => "when { context.action_kind == \"read\" }".to_owned(),
    };
    let effect = if rng.chance(70) { "permit" } else { "forbid" };
    let mut annotations = String::new();
    if rng.chance(20) {
        annotations.push_str("@approval(\"required\")\n");
    }
    if rng.chance(20) {
        annotations.push_str("@obligation(\"notification\")\n");
    }
    format!("{annotations}{effect} ({principal}, {action}, {resource}) {condition};\n")
}

fn input(rng: &mut Rng) -> DecisionInput {
    let principal =
        if rng.chance(40) { agent(&format!("a{}", rng.below(3)), &[]) } else { subject("user", &format!("u{}", rng.below(4)), json!({})) };
    let name = rng.pick(&["docs.read", "docs.list", "docs.write", "docs.run", "read", "x.read", "x.do"]);
    let kind = match rng.below(4) {
        0 => Some(ActionKind::Read),
        1 => Some(ActionKind::Write),
        2 => Some(ActionKind::Execute),
        _ => None,
    };
    let (kind_name, id) = match rng.below(3) {
        0 => ("document", format!("d{}", rng.below(4))),
        1 => ("folder", format!("f{}", rng.below(3))),
        _ => ("tool", format!("t{}", rng.below(2))),
    };
    let classification = Classification::ALL[rng.below(4)];
    let mut context = ContextInput { risk: rng.below(11) as i64, ..context(None) };
    context.now_secs += rng.below(100_000) as i64;
    DecisionInput {
        principal,
        action: ActionInput { name: name.into(), kind },
        resource: ResourceInput { kind: kind_name.into(), id, classification, properties: Default::default() },
        context,
    }
}

fn check(snapshot: &PolicySnapshot, data: &EntityData, input: &DecisionInput, text: &str) {
    let reference = snapshot.evaluate_unsliced(input, data);
    for (label, got) in [
        ("sliced", snapshot.evaluate(input, data)),
        ("sliced again (cached)", snapshot.evaluate(input, data)),
        ("sliced without cache", snapshot.evaluate_uncached(input, data)),
    ] {
        assert_eq!(got, reference, "{label} decision differs for {input:#?}\npolicies:\n{text}");
    }
}

#[test]
fn sliced_decisions_equal_unsliced_ones() {
    let data = EntityData::parse(ENTITIES, None).unwrap();
    let empty = EntityData::empty();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut allowed, mut denied, mut errored, mut approvals) = (0, 0, 0, 0);
    for _ in 0..60 {
        let count = 1 + rng.below(30);
        let text: String = (0..count).map(|_| policy(&mut rng)).collect();
        let src = PolicySources::new("schema.cedarschema", SCHEMA, vec![("gen.cedar".into(), text.clone())]);
        let snapshot = match PolicySnapshot::compile(&src) {
            Ok(s) => s,
            Err(diags) => panic!("generated policies do not validate:\n{}\n{text}", lines(&diags)),
        };
        for _ in 0..40 {
            let input = input(&mut rng);
            for d in [&data, &empty] {
                check(&snapshot, d, &input, &text);
            }
            let d = snapshot.evaluate(&input, &data);
            match (d.outcome, d.errors.is_empty()) {
                (_, false) => errored += 1,
                (mandate_policy::Outcome::Allow, _) => allowed += 1,
                (mandate_policy::Outcome::ApprovalRequired, _) => approvals += 1,
                (mandate_policy::Outcome::Deny, _) => denied += 1,
            }
        }
    }
    // The generator must exercise every kind of outcome, or the comparison proves little.
    assert!(allowed > 100 && denied > 100 && errored > 20 && approvals > 20, "{allowed} {denied} {errored} {approvals}");
}

#[test]
fn the_cache_never_serves_another_principal() {
    let text = "@id(\"support\")\npermit (principal is Mandate::Agent, action, resource)\nwhen { principal.hasTag(\"team\") && principal.getTag(\"team\") == \"support\" };\n";
    let s = compile(PolicySources::new("schema.cedarschema", SCHEMA, vec![("a.cedar".into(), text.into())]));
    let tool = resource("tool", "t0", Classification::Public);
    let support = request(agent("a0", &[("team", "support")]), "docs.read", tool.clone());
    let sales = request(agent("a0", &[("team", "sales")]), "docs.read", tool);
    for _ in 0..3 {
        assert!(s.evaluate(&support, &EntityData::empty()).allowed());
        assert!(!s.evaluate(&sales, &EntityData::empty()).allowed());
    }
    assert_eq!(s.cached_slices(), 1);

    // A new entity data generation gets its own slices.
    let data = EntityData::parse(ENTITIES, None).unwrap();
    assert!(s.evaluate(&support, &data).allowed());
    assert_eq!(s.cached_slices(), 2);
}

#[test]
fn group_membership_through_loaded_entities_is_never_sliced_away() {
    let text =
        "@id(\"g2\")\npermit (principal in group::\"g2\", action in Mandate::Action::\"read\", resource is document in folder::\"f1\");\n";
    let s = compile(PolicySources::new("schema.cedarschema", SCHEMA, vec![("a.cedar".into(), text.into())]));
    let data = EntityData::parse(ENTITIES, None).unwrap();
    // u0 is in g0, in g1, in g2; d0 is in f0, in f1.
    let input = request(subject("user", "u0", json!({})), "docs.list", resource("document", "d0", Classification::Public));
    assert_eq!(s.evaluate(&input, &data).policies, vec!["g2".to_owned()]);
    let input = request(subject("user", "u2", json!({})), "docs.list", resource("document", "d0", Classification::Public));
    assert!(!s.evaluate(&input, &data).allowed());
}
