//! Outcomes from annotations: approval, notifications, forbids winning, errors denying.

mod common;

use mandate_core::Classification;
use mandate_policy::{Decision, EntityData, Obligation, Outcome, reason};

use common::*;

fn refund(risk: i64) -> mandate_policy::DecisionInput {
    let mut input = with_task(
        request(agent("billing-bot", &[]), "payments.refund", resource("payment", "p-9", Classification::Confidential)),
        task(Classification::Confidential),
    );
    input.context.risk = risk;
    input
}

#[test]
fn an_approval_permit_asks_for_a_human() {
    let s = starter();
    let d = s.evaluate(&refund(2), &EntityData::empty());
    assert_eq!(d.outcome, Outcome::ApprovalRequired);
    assert!(!d.allowed());
    assert_eq!(d.reason, reason::APPROVAL_REQUIRED);
    assert_eq!(d.policies, vec!["agents.execute-needs-approval".to_owned()]);
    assert_eq!(
        d.obligations,
        vec![Obligation { kind: "approval".into(), policy: "agents.execute-needs-approval".into(), value: "required".into() }]
    );
    assert_eq!(d.version, s.version());
}

#[test]
fn a_forbid_wins_over_an_approval_permit() {
    let s = starter();
    let d = s.evaluate(&refund(7), &EntityData::empty());
    assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, reason::FORBIDDEN_BY_POLICY));
    assert_eq!(d.policies, vec!["guards.no-risky-production-execute".to_owned()]);
    assert!(d.obligations.is_empty());
}

#[test]
fn a_notification_obligation_leaves_the_outcome_alone() {
    let s = starter();
    let input = with_task(
        request(agent("support-bot", &[]), "tickets.export", resource("ticket", "42", Classification::Internal)),
        task(Classification::Internal),
    );
    let d = s.evaluate(&input, &EntityData::empty());
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(
        d.obligations,
        vec![Obligation { kind: "notification".into(), policy: "agents.export-notifies-owner".into(), value: String::new() }]
    );
}

const ANNOTATED: &str = r#"
@id("read")
permit (principal, action in Mandate::Action::"read", resource);

@id("watch-exports")
@obligation("notification:#security")
forbid (principal, action == Mandate::Action::"tickets.export", resource) when { resource.classification >= 2 };

@id("overflow")
permit (principal, action == Mandate::Action::"tickets.search", resource)
when { context.risk * 9223372036854775807 > 1 };

@id("approval-not-required")
@approval("optional")
permit (principal, action == Mandate::Action::"tickets.write", resource);
"#;

#[test]
fn obligations_come_from_whichever_policies_decided() {
    let s = compile(with_starter_schema(&[("a.cedar", ANNOTATED)]));
    let export = |c| request(agent("bot", &[]), "tickets.export", resource("ticket", "1", c));
    let d = s.evaluate(&export(Classification::Confidential), &EntityData::empty());
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.obligations[0].kind, "notification");
    assert_eq!(d.obligations[0].value, "#security");
    let d = s.evaluate(&export(Classification::Public), &EntityData::empty());
    assert_eq!((d.outcome, d.obligations.len()), (Outcome::Allow, 0));
    let d = s.evaluate(&request(agent("bot", &[]), "tickets.write", resource("ticket", "1", Classification::Public)), &EntityData::empty());
    assert_eq!(d.outcome, Outcome::Allow, "only @approval(\"required\") asks for approval");
}

#[test]
fn an_evaluation_error_is_a_deny_even_when_a_permit_matches() {
    let s = compile(with_starter_schema(&[("a.cedar", ANNOTATED)]));
    let mut input = request(agent("bot", &[]), "tickets.search", resource("ticket", "1", Classification::Public));
    input.context.risk = 2;
    let d = s.evaluate(&input, &EntityData::empty());
    assert_eq!((d.outcome, d.reason.as_str()), (Outcome::Deny, reason::EVALUATION_ERROR));
    assert!(d.policies.is_empty());
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].contains("overflow"), "{:?}", d.errors);

    input.context.risk = 0;
    assert!(s.evaluate(&input, &EntityData::empty()).allowed());
}

#[test]
fn decisions_serialize_with_stable_names() {
    let s = starter();
    let d = s.evaluate(&refund(2), &EntityData::empty());
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["outcome"], "approval_required");
    assert_eq!(json["reason"], "approval_required");
    assert_eq!(serde_json::from_value::<Decision>(json).unwrap(), d);
}
