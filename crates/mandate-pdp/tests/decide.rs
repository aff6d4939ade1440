//! The decision core, called directly: real mandates signed and verified with Mandate's keys,
//! the starter Cedar policies, a liveness view in memory and the clock as a number. Every
//! step's deny reason, the boundaries in time, and that a what-if and a real decision give
//! Cedar the same input (the drift the core exists to make impossible).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::collections::HashMap;
use std::sync::Arc;

use mandate_core::{Agent, AgentName, AgentStatus, Intent, IntentRequest, SpiffeId, TaskStatus, TrustDomain};
use mandate_pdp::{Authority, DenyReason, HypotheticalTask, Liveness, Outcome, Request, Subject, TaskState, View, decide, may_act};
use mandate_policy::{PolicyEngine, PolicySnapshot, PolicySources};
use mandate_token::{Actor, MandateClaims, MandateVerifier, Minter, SigningKey, VerifiedMandate};
use serde_json::{Map, Value, json};

const ISSUER: &str = "https://mandate.test";
const AUDIENCE: &str = "https://tools.test";
const NOW_MS: i64 = 1_790_000_000_000;

#[derive(Default)]
struct Live {
    tasks: HashMap<String, TaskState>,
    agents: HashMap<String, Arc<Agent>>,
}

impl Liveness for Live {
    fn task(&self, id: &str) -> Option<TaskState> {
        self.tasks.get(id).cloned()
    }
    fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.agents.get(name).cloned()
    }
}

fn spiffe(name: &str) -> String {
    SpiffeId::for_agent(&TrustDomain::parse("mandate.test").unwrap(), &AgentName::parse(name).unwrap()).as_str().to_owned()
}

impl Live {
    fn agent_(&mut self, name: &str, status: AgentStatus) {
        let a = Agent {
            name: AgentName::parse(name).unwrap(),
            spiffe_id: SpiffeId::parse(&spiffe(name)).unwrap(),
            owner: "owner@example.com".into(),
            purpose: "testing".into(),
            status,
            attributes: Default::default(),
            public_jwk: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_seen_ms: None,
        };
        self.agents.insert(name.into(), Arc::new(a));
    }
    fn task_(&mut self, id: &str, agent: &str, status: TaskStatus, parent: Option<&str>) {
        self.tasks.insert(
            id.into(),
            TaskState { agent: agent.into(), status, expires_at_ms: NOW_MS + 60_000, parent_id: parent.map(str::to_owned) },
        );
    }
}

fn intent() -> (Intent, Option<u64>) {
    let r: IntentRequest = serde_json::from_value(json!({
        "type": "agent_task", "purpose": "answer ticket 42",
        "actions": ["tickets.read", "payments.refund"], "resources": ["ticket:42", "payment:*"],
        "max_classification": "internal", "lifetime_seconds": 60
    }))
    .unwrap();
    r.validate().unwrap()
}

struct Keys {
    minter: Minter,
    verifier: MandateVerifier,
}

fn keys() -> Keys {
    let key = Arc::new(SigningKey::generate());
    let verifier = MandateVerifier::new(ISSUER, AUDIENCE, &[key.public_key()], 0);
    Keys { minter: Minter::new(key), verifier }
}

/// A mandate for `task`, acting as the last of `chain` (root first).
fn mandate(k: &Keys, task: &str, chain: &[&str], parent: Option<&str>) -> Arc<VerifiedMandate> {
    let (intent, lifetime) = intent();
    let acting = chain.last().unwrap();
    let mut act = None;
    for name in chain.iter().skip(1) {
        act = Some(Actor { sub: spiffe(name), act: act.map(Box::new) });
    }
    let claims = MandateClaims {
        iss: ISSUER.into(),
        sub: spiffe(chain[0]),
        aud: AUDIENCE.into(),
        client_id: spiffe(acting),
        iat: NOW_MS / 1000,
        nbf: NOW_MS / 1000,
        exp: NOW_MS / 1000 + 60,
        jti: format!("jti-{task}"),
        task_id: task.into(),
        agent: (*acting).into(),
        scope: MandateClaims::scope_for(&intent),
        authorization_details: vec![intent.to_authorization_detail(lifetime)],
        act,
        parent_task_id: parent.map(str::to_owned),
        depth: u32::try_from(chain.len() - 1).unwrap(),
    };
    let token = k.minter.mint(&claims).unwrap();
    Arc::new(k.verifier.verify(&token, NOW_MS / 1000).unwrap())
}

fn engine() -> PolicyEngine {
    PolicyEngine::new(PolicySnapshot::compile(&PolicySources::starter()).unwrap(), None)
}

fn request(subject: Subject, action: &str, kind: &str, resource: (&str, &str), classification: Option<&str>) -> Request {
    let mut action_properties = Map::new();
    action_properties.insert("kind".into(), json!(kind));
    let mut resource_properties = Map::new();
    if let Some(c) = classification {
        resource_properties.insert("classification".into(), json!(c));
    }
    Request {
        subject,
        action: action.into(),
        action_properties,
        resource_type: resource.0.into(),
        resource_id: resource.1.into(),
        resource_properties,
        context: Map::new(),
    }
}

fn as_agent(m: &Arc<VerifiedMandate>) -> Subject {
    Subject::Agent { id: m.claims().actor_id().to_owned(), authority: Authority::Mandate(m.clone()) }
}

fn world() -> Live {
    let mut live = Live::default();
    for a in ["root-bot", "mid-bot", "leaf-bot"] {
        live.agent_(a, AgentStatus::Active);
    }
    live.task_("t-root", "root-bot", TaskStatus::Live, None);
    live.task_("t-mid", "mid-bot", TaskStatus::Live, Some("t-root"));
    live.task_("t-leaf", "leaf-bot", TaskStatus::Live, Some("t-mid"));
    live
}

fn view<'a>(policy: &'a PolicyEngine, live: &'a Live, now_ms: i64) -> View<'a> {
    View { policy, liveness: live, environment: "test", now_ms }
}

#[test]
fn a_read_inside_the_intent_is_allowed_with_the_input_it_evaluated() {
    let (k, policy, live) = (keys(), engine(), world());
    let m = mandate(&k, "t-root", &["root-bot"], None);
    let v = decide(&view(&policy, &live, NOW_MS), &request(as_agent(&m), "tickets.read", "read", ("ticket", "42"), Some("internal")));
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
    assert_eq!(v.policies, ["agents.read-within-task"]);
    assert_eq!(v.policy_version, policy.current().version());
    assert_eq!((v.agent.as_deref(), v.task_id.as_deref()), (Some("root-bot"), Some("t-root")));
    let input = v.input.unwrap();
    assert_eq!(input.context.environment, "test", "the default environment");
    assert_eq!(input.context.now_secs, NOW_MS / 1000);
    assert!(input.context.task.unwrap().chain.is_empty());
}

#[test]
fn every_step_before_policy_denies_with_its_reason() {
    let (k, policy) = (keys(), engine());
    let m = mandate(&k, "t-root", &["root-bot"], None);
    let read = |live: &Live, subject: Subject, resource: (&str, &str), classification: Option<&str>| {
        decide(&view(&policy, live, NOW_MS), &request(subject, "tickets.read", "read", resource, classification)).outcome
    };
    let deny = Outcome::Deny;
    let inside = (("ticket", "42"), Some("internal"));
    // The task's and the agent's state, from the view.
    for (status, reason) in [
        (TaskStatus::Revoked, DenyReason::TaskRevoked),
        (TaskStatus::Completed, DenyReason::TaskCompleted),
        (TaskStatus::Expired, DenyReason::TaskExpired),
    ] {
        let mut live = world();
        live.task_("t-root", "root-bot", status, None);
        assert_eq!(read(&live, as_agent(&m), inside.0, inside.1), deny(reason));
    }
    let mut live = world();
    live.tasks.remove("t-root");
    assert_eq!(read(&live, as_agent(&m), inside.0, inside.1), deny(DenyReason::TaskUnknown));
    let mut live = world();
    live.agent_("root-bot", AgentStatus::Disabled);
    assert_eq!(read(&live, as_agent(&m), inside.0, inside.1), deny(DenyReason::AgentDisabled));
    let mut live = world();
    live.agents.remove("root-bot");
    assert_eq!(read(&live, as_agent(&m), inside.0, inside.1), deny(DenyReason::AgentUnknown));
    let mut live = world();
    live.task_("t-root", "mid-bot", TaskStatus::Live, None);
    assert_eq!(read(&live, as_agent(&m), inside.0, inside.1), deny(DenyReason::SubjectMismatch), "the task is another agent's");
    let live = world();
    let other = Subject::Agent { id: spiffe("mid-bot"), authority: Authority::Mandate(m.clone()) };
    assert_eq!(read(&live, other, inside.0, inside.1), deny(DenyReason::SubjectMismatch), "the subject is not the mandate's actor");
    // The mandate itself.
    assert_eq!(
        read(&live, Subject::Agent { id: spiffe("root-bot"), authority: Authority::Missing }, inside.0, inside.1),
        deny(DenyReason::MandateRequired)
    );
    let v = decide(
        &view(&policy, &live, NOW_MS),
        &request(
            Subject::Agent { id: spiffe("root-bot"), authority: Authority::Invalid { code: "expired" } },
            "tickets.read",
            "read",
            inside.0,
            inside.1,
        ),
    );
    assert_eq!((v.outcome, v.error_code), (deny(DenyReason::InvalidMandate), Some("expired")));
    // The intent ceiling, whatever the policies say.
    assert_eq!(read(&live, as_agent(&m), ("ticket", "43"), Some("internal")), deny(DenyReason::ResourceOutsideIntent));
    assert_eq!(read(&live, as_agent(&m), ("ticket", "42"), Some("confidential")), deny(DenyReason::ClassificationAboveIntent));
    assert_eq!(
        read(&live, as_agent(&m), ("ticket", "42"), None),
        deny(DenyReason::ClassificationAboveIntent),
        "no classification is restricted"
    );
    assert_eq!(read(&live, as_agent(&m), ("ticket", "42"), Some("secret")), deny(DenyReason::UnknownClassification));
    let v = decide(&view(&policy, &live, NOW_MS), &request(as_agent(&m), "tickets.delete", "write", ("ticket", "42"), Some("internal")));
    assert_eq!(v.outcome, deny(DenyReason::ActionOutsideIntent));
    assert!(v.input.is_none(), "policy never ran");
    assert_eq!(v.policy_version, policy.current().version(), "a deny before policy still names the set");
}

#[test]
fn policy_decides_inside_the_ceiling() {
    let (k, policy, live) = (keys(), engine(), world());
    let m = mandate(&k, "t-root", &["root-bot"], None);
    let v = decide(&view(&policy, &live, NOW_MS), &request(as_agent(&m), "payments.refund", "execute", ("payment", "9"), Some("internal")));
    assert_eq!(v.outcome, Outcome::ApprovalRequired, "{v:?}");
    assert_eq!(v.policies, ["agents.execute-needs-approval"]);
}

#[test]
fn a_task_expires_at_its_instant_not_a_moment_later() {
    let (k, policy, live) = (keys(), engine(), world());
    let m = mandate(&k, "t-root", &["root-bot"], None);
    let expires = live.tasks["t-root"].expires_at_ms;
    let at = |now| {
        decide(&view(&policy, &live, now), &request(as_agent(&m), "tickets.read", "read", ("ticket", "42"), Some("internal"))).outcome
    };
    assert_eq!(at(expires - 1), Outcome::Allow);
    assert_eq!(at(expires), Outcome::Deny(DenyReason::TaskExpired));
}

#[test]
fn a_delegated_task_acts_only_while_every_task_above_it_may() {
    let mut live = world();
    assert_eq!(may_act(&live, "t-leaf", "leaf-bot", NOW_MS).unwrap().chain, [spiffe("root-bot"), spiffe("mid-bot")], "root first");
    live.task_("t-root", "root-bot", TaskStatus::Completed, None);
    assert_eq!(may_act(&live, "t-leaf", "leaf-bot", NOW_MS).unwrap_err(), DenyReason::TaskRevoked);
    let mut live = world();
    live.agent_("mid-bot", AgentStatus::Disabled);
    assert_eq!(may_act(&live, "t-leaf", "leaf-bot", NOW_MS).unwrap_err(), DenyReason::TaskRevoked);
    let mut live = world();
    live.tasks.remove("t-mid");
    assert_eq!(may_act(&live, "t-leaf", "leaf-bot", NOW_MS).unwrap_err(), DenyReason::TaskRevoked);
    // A loop of parents is refused, not followed for ever.
    let mut live = world();
    live.task_("t-root", "root-bot", TaskStatus::Live, Some("t-leaf"));
    assert_eq!(may_act(&live, "t-leaf", "leaf-bot", NOW_MS).unwrap_err(), DenyReason::TaskRevoked);
}

/// A what-if under a task and a real decision with that task's mandate give Cedar the very
/// same input, also for a task delegated twice (the chain, its order, the depth).
#[test]
fn a_what_if_evaluates_exactly_what_a_real_decision_would() {
    let (k, policy, live) = (keys(), engine(), world());
    let m = mandate(&k, "t-leaf", &["root-bot", "mid-bot", "leaf-bot"], Some("t-mid"));
    assert_eq!(m.claims().delegators(), [spiffe("root-bot"), spiffe("mid-bot")]);
    let mut real = request(as_agent(&m), "tickets.read", "read", ("ticket", "42"), Some("internal"));
    real.context.insert("risk".into(), json!(3));
    real.context.insert("arguments".into(), json!({ "q": "refund", "limit": 2.5, "none": null }));
    let mut what_if = real.clone();
    what_if.subject = Subject::Agent {
        id: spiffe("leaf-bot"),
        authority: Authority::Hypothetical {
            agent: "leaf-bot".into(),
            task: Some(HypotheticalTask { id: "t-leaf".into(), intent: intent().0, depth: 2 }),
        },
    };
    let v = view(&policy, &live, NOW_MS);
    let (a, b) = (decide(&v, &real), decide(&v, &what_if));
    assert_eq!(a.outcome, Outcome::Allow, "{a:?}");
    assert_eq!(a.outcome, b.outcome);
    let (ia, ib) = (a.input.unwrap(), b.input.unwrap());
    assert_eq!(ia, ib);
    let task = ia.context.task.unwrap();
    assert_eq!((task.depth, task.chain), (2, m.claims().delegators()));
    assert_eq!(ia.context.risk, 3);
    assert_eq!(ia.context.extra["arguments"], json!({ "q": "refund", "limit": "2.5" }), "arguments as Cedar can hold them");
}

#[test]
fn a_what_if_without_a_task_is_bounded_by_exactly_its_request() {
    let (policy, mut live) = (engine(), world());
    let subject =
        |agent: &str| Subject::Agent { id: spiffe(agent), authority: Authority::Hypothetical { agent: agent.into(), task: None } };
    let v = decide(&view(&policy, &live, NOW_MS), &request(subject("root-bot"), "kb.search", "read", ("kb", "faq"), Some("public")));
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
    live.agent_("root-bot", AgentStatus::Disabled);
    let v = decide(&view(&policy, &live, NOW_MS), &request(subject("root-bot"), "kb.search", "read", ("kb", "faq"), Some("public")));
    assert_eq!(v.outcome, Outcome::Deny(DenyReason::AgentDisabled));
}

#[test]
fn other_subjects_are_decided_by_policy_alone() {
    let (policy, live) = (engine(), Live::default());
    let subject = Subject::Other { kind: "user".into(), id: "alice".into(), properties: Map::new() };
    let mut req = request(subject, "tickets.read", "read", ("ticket", "42"), Some("internal"));
    req.context.insert("environment".into(), Value::from("staging"));
    let v = decide(&view(&policy, &live, NOW_MS), &req);
    assert_eq!(v.outcome, Outcome::Deny(DenyReason::NoPolicyPermits), "the starter set permits no people");
    assert_eq!(v.input.unwrap().context.environment, "staging", "the request's environment wins");
}
