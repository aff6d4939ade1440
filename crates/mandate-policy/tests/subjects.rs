//! Non-agent subjects and loaded entities: parents through `in`, attributes that reference
//! other entities, entity literals in policies, and loaded entities winning over request
//! properties.

#![allow(clippy::unwrap_used, reason = "fixtures are known to parse")]

mod common;

use mandate_core::Classification;
use mandate_policy::{ActionKind, EntityData, Outcome, PolicySnapshot, PolicySources, reason};
use serde_json::json;

use common::*;

const SCHEMA: &str = r#"
entity group in [group] = { level?: Long };
entity user in [group] = { department?: String, manager?: user };
entity folder in [folder] = { classification: Long, classification_label: String };
entity document in [folder] = { classification: Long, classification_label: String, owner?: user };

namespace Mandate {
  entity Agent = { name: String, spiffe_id: String, owner: String, purpose: String, trust_domain: String } tags String;
  entity Tool = { classification: Long, classification_label: String };
  type RequestContext = { environment: String, risk: Long, now: Long, hour: Long, weekday: Long, action_kind: String };
  action "read", "write", "execute";
  action "docs.read" in [Action::"read"] appliesTo {
    principal: [Agent, user], resource: [Tool, document, folder], context: RequestContext,
  };
  action "docs.write" in [Action::"write"] appliesTo {
    principal: [Agent, user], resource: [Tool, document, folder], context: RequestContext,
  };
}
"#;

const POLICIES: &str = r#"
@id("support-reads-shared")
permit (principal in group::"support", action in Mandate::Action::"read", resource in folder::"shared");

@id("owner-writes")
permit (principal is user, action == Mandate::Action::"docs.write", resource is document)
when { resource has owner && resource.owner == principal };

@id("manager-reads")
permit (principal is user, action == Mandate::Action::"docs.read", resource is document)
when { resource has owner && resource.owner has manager && resource.owner.manager == principal };

@id("vip-reads")
permit (principal in group::"vip", action in Mandate::Action::"read", resource)
when { group::"vip" has level && group::"vip".level >= 3 };

@id("eng-writes-folders")
permit (principal is user, action == Mandate::Action::"docs.write", resource is folder)
when { principal has department && principal.department == "eng" };

@id("no-restricted")
forbid (principal, action, resource is document) when { resource.classification >= 3 };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "group", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "group", "id": "support"}, "attrs": {}, "parents": [{"type": "group", "id": "staff"}]},
  {"uid": {"type": "group", "id": "vip"}, "attrs": {"level": 5}, "parents": []},
  {"uid": {"type": "user", "id": "alice"}, "attrs": {"department": "eng"}, "parents": [{"type": "group", "id": "support"}]},
  {"uid": {"type": "user", "id": "bob"}, "attrs": {"manager": {"__entity": {"type": "user", "id": "alice"}}}, "parents": []},
  {"uid": {"type": "user", "id": "carol"}, "attrs": {}, "parents": [{"type": "group", "id": "vip"}]},
  {"uid": {"type": "folder", "id": "shared"}, "attrs": {"classification": 0, "classification_label": "public"}, "parents": []},
  {"uid": {"type": "folder", "id": "team"}, "attrs": {"classification": 1, "classification_label": "internal"}, "parents": [{"type": "folder", "id": "shared"}]},
  {"uid": {"type": "document", "id": "d1"}, "attrs": {"classification": 1, "classification_label": "internal", "owner": {"__entity": {"type": "user", "id": "bob"}}}, "parents": [{"type": "folder", "id": "team"}]},
  {"uid": {"type": "document", "id": "secret"}, "attrs": {"classification": 3, "classification_label": "restricted"}, "parents": [{"type": "folder", "id": "team"}]},
  {"uid": {"type": "Mandate::Action", "id": "docs.read"}, "attrs": {}, "parents": []}
]"#;

fn setup() -> (PolicySnapshot, EntityData) {
    let snapshot = compile(PolicySources::new("schema.cedarschema", SCHEMA, vec![("people.cedar".into(), POLICIES.into())]));
    let data = EntityData::parse(ENTITIES, None).unwrap();
    (snapshot, data)
}

fn decide(s: &PolicySnapshot, data: &EntityData, who: &str, action: &str, kind: &str, id: &str) -> (Outcome, Vec<String>) {
    let input = request(subject("user", who, json!({})), action, resource(kind, id, Classification::Restricted));
    let d = s.evaluate(&input, data);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    let unsliced = s.evaluate_unsliced(&input, data);
    assert_eq!(d, unsliced, "sliced and unsliced differ");
    (d.outcome, d.policies)
}

#[test]
fn parents_come_from_loaded_entities_transitively() {
    let (s, data) = setup();
    assert_eq!(data.len(), 10, "action entities are never taken from entity data");
    let (outcome, policies) = decide(&s, &data, "alice", "docs.read", "document", "d1");
    assert_eq!(outcome, Outcome::Allow);
    assert!(policies.contains(&"support-reads-shared".to_owned()), "{policies:?}");
    // Bob is in no group.
    let (outcome, _) = decide(&s, &data, "bob", "docs.read", "folder", "team");
    assert_eq!(outcome, Outcome::Deny);
}

#[test]
fn attributes_can_reference_other_loaded_entities() {
    let (s, data) = setup();
    assert_eq!(decide(&s, &data, "bob", "docs.write", "document", "d1"), (Outcome::Allow, vec!["owner-writes".to_owned()]));
    // d1's owner is bob, whose manager is alice: two hops through attributes.
    let (outcome, policies) = decide(&s, &data, "alice", "docs.read", "document", "d1");
    assert_eq!(outcome, Outcome::Allow);
    assert_eq!(policies, vec!["manager-reads".to_owned(), "support-reads-shared".to_owned()]);
}

#[test]
fn entities_named_in_policies_are_available() {
    let (s, data) = setup();
    let mut other = resource("document", "elsewhere", Classification::Internal);
    other.properties = serde_json::Map::new();
    let input = request(subject("user", "carol", json!({})), "docs.read", other);
    let d = s.evaluate(&input, &data);
    assert_eq!((d.outcome, d.policies.clone()), (Outcome::Allow, vec!["vip-reads".to_owned()]), "{d:?}");
}

#[test]
fn loaded_entities_win_over_request_properties() {
    let (s, data) = setup();
    let shared = resource("folder", "shared", Classification::Restricted);
    let input = request(subject("user", "alice", json!({"department": "sales"})), "docs.write", shared.clone());
    assert_eq!(s.evaluate(&input, &data).policies, vec!["eng-writes-folders".to_owned()]);

    // Dave is not loaded: he is built from the request, with no parents.
    let input = request(subject("user", "dave", json!({"department": "eng"})), "docs.write", shared.clone());
    assert!(s.evaluate(&input, &data).allowed());
    let input = request(subject("user", "dave", json!({"department": "eng"})), "docs.read", shared);
    assert_eq!(s.evaluate(&input, &data).reason, reason::NO_POLICY_PERMITS);
}

#[test]
fn a_forbid_on_loaded_data_wins() {
    let (s, data) = setup();
    let (outcome, policies) = decide(&s, &data, "alice", "docs.read", "document", "secret");
    assert_eq!((outcome, policies), (Outcome::Deny, vec!["no-restricted".to_owned()]));
}

#[test]
fn without_entities_nobody_is_in_a_group() {
    let (s, _) = setup();
    let (outcome, _) = decide(&s, &EntityData::empty(), "alice", "docs.read", "folder", "shared");
    assert_eq!(outcome, Outcome::Deny);
}

#[test]
fn agents_and_people_share_a_policy_set() {
    let (s, data) = setup();
    let input = with_kind(request(agent("bot", &[]), "docs.read", resource("folder", "team", Classification::Public)), ActionKind::Read);
    let d = s.evaluate(&input, &data);
    assert_eq!(d.reason, reason::NO_POLICY_PERMITS, "{d:?}");
}

#[test]
fn entity_data_is_checked_against_the_schema_when_asked() {
    let (s, _) = setup();
    // With a schema, an action entity must match the schema's declaration exactly.
    let err = EntityData::parse(ENTITIES, Some(&s)).unwrap_err();
    assert!(err.to_string().contains("docs.read"), "{err}");
    let without_action = ENTITIES.replace(
        r#",
  {"uid": {"type": "Mandate::Action", "id": "docs.read"}, "attrs": {}, "parents": []}"#,
        "",
    );
    let data = EntityData::parse(&without_action, Some(&s)).unwrap();
    assert_eq!(data.len(), 10);
    let bad = r#"[{"uid": {"type": "user", "id": "x"}, "attrs": {"department": 7}, "parents": []}]"#;
    let err = EntityData::parse(bad, Some(&s)).unwrap_err();
    assert_eq!(err.code(), "invalid_entities");
    assert!(err.to_string().starts_with("invalid entity data: "), "{err}");
    assert!(EntityData::parse(bad, None).is_ok());
    assert_eq!(EntityData::parse("not json", None).unwrap_err().code(), "invalid_entities");
    assert_ne!(EntityData::parse(ENTITIES, None).unwrap().version(), EntityData::empty().version());
}
