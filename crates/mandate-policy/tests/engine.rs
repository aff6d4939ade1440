//! The live decision point: hot swap, shadow evaluation, loaded entities.

mod common;

use mandate_core::Classification;
use mandate_policy::{EntityData, Outcome, PolicyEngine, reason};

use common::*;

const DENY_ALL: &str = "@id(\"lockdown\")\nforbid (principal, action, resource);\n";

fn read() -> mandate_policy::DecisionInput {
    with_task(
        request(agent("support-bot", &[]), "tickets.read", resource("ticket", "42", Classification::Internal)),
        task(Classification::Internal),
    )
}

#[test]
fn shadow_decisions_are_returned_but_never_enforced() {
    let lockdown = compile(with_starter_schema(&[("lockdown.cedar", DENY_ALL)]));
    let shadow_version = lockdown.version().to_owned();
    let engine = PolicyEngine::new(starter(), Some(lockdown));
    let e = engine.evaluate(&read());
    assert_eq!(e.enforced.outcome, Outcome::Allow);
    let shadow = e.shadow.unwrap();
    assert_eq!((shadow.outcome, shadow.reason.as_str()), (Outcome::Deny, reason::FORBIDDEN_BY_POLICY));
    assert_eq!(shadow.version, shadow_version);
    assert_ne!(e.enforced.version, shadow.version);

    engine.swap_shadow(None);
    assert!(engine.evaluate(&read()).shadow.is_none());
    assert!(engine.shadow().is_none());
}

#[test]
fn a_swap_takes_effect_on_the_next_request() {
    let engine = PolicyEngine::new(starter(), None);
    assert!(engine.evaluate(&read()).enforced.allowed());
    let held = engine.current();
    engine.swap(compile(with_starter_schema(&[("lockdown.cedar", DENY_ALL)])));
    let d = engine.evaluate(&read()).enforced;
    assert_eq!(d.policies, vec!["lockdown".to_owned()]);
    assert_eq!(d.version, engine.current().version());
    // A snapshot held by a request in flight is unaffected.
    assert!(held.evaluate(&read(), &EntityData::empty()).allowed());
}

#[test]
fn loaded_entities_are_swapped_too() {
    let engine = PolicyEngine::new(starter(), None);
    assert!(engine.entities().is_empty());
    let data = EntityData::parse(
        r#"[{"uid": {"type": "ticket", "id": "42"}, "attrs": {"classification": 3, "classification_label": "restricted"}, "parents": []}]"#,
        None,
    )
    .unwrap();
    engine.set_entities(data);
    assert_eq!(engine.entities().len(), 1);
    // The loaded ticket's own classification now counts, not the request's.
    let d = engine.evaluate(&read()).enforced;
    assert_eq!(d.reason, reason::NO_POLICY_PERMITS, "{d:?}");
}

#[test]
fn everything_shared_across_threads_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<PolicyEngine>();
    shared::<mandate_policy::PolicySnapshot>();
    shared::<EntityData>();
    shared::<mandate_policy::Decision>();
}

#[test]
fn concurrent_requests_agree_with_one_thread() {
    let engine = std::sync::Arc::new(PolicyEngine::new(starter(), None));
    let expected = engine.evaluate(&read()).enforced;
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let engine = std::sync::Arc::clone(&engine);
            std::thread::spawn(move || (0..200).all(|_| engine.evaluate(&read()).enforced.allowed()))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    assert!(expected.allowed());
}
