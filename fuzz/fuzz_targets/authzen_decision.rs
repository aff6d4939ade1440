//! An AuthZEN evaluation body, as any PEP could send it, through the decision core: parsed once
//! into the typed request (with a real mandate substituted where the body says `"$MANDATE"`,
//! so the fuzzer reaches the agent path), decided against the starter policies and a fixed
//! liveness view. Never a panic; an allow always went through Cedar, and an agent's allow
//! always came from a verified mandate whose task is live and whose request lies inside the
//! intent; every reason is a stable code that parses back.
#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mandate_core::{Agent, AgentName, AgentStatus, Classification, IntentRequest, SpiffeId, TaskStatus, TrustDomain};
use mandate_pdp::{Authority, Liveness, Outcome, Subject, TaskState, View, decide, from_authzen};
use mandate_policy::{PolicyEngine, PolicySnapshot, PolicySources};
use mandate_proto::authzen::EvaluationRequest;
use mandate_token::{MandateClaims, MandateVerifier, Minter, SigningKey};

const NOW_MS: i64 = 1_790_000_000_000;

struct Fixture {
    policy: PolicyEngine,
    live: Live,
    verifier: MandateVerifier,
    token: String,
}

struct Live(HashMap<String, TaskState>, HashMap<String, Arc<Agent>>);

impl Liveness for Live {
    fn task(&self, id: &str) -> Option<TaskState> {
        self.0.get(id).cloned()
    }
    fn agent(&self, name: &str) -> Option<Arc<Agent>> {
        self.1.get(name).cloned()
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let td = TrustDomain::parse("mandate.test").unwrap();
        let name = AgentName::parse("support-bot").unwrap();
        let spiffe = SpiffeId::for_agent(&td, &name);
        let agent = Agent {
            name,
            spiffe_id: spiffe.clone(),
            owner: "o@example.com".into(),
            purpose: "fuzz".into(),
            status: AgentStatus::Active,
            attributes: Default::default(),
            public_jwk: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            last_seen_ms: None,
        };
        let task = TaskState { agent: "support-bot".into(), status: TaskStatus::Live, expires_at_ms: NOW_MS + 60_000, parent_id: None };
        let live = Live(HashMap::from([("task_fuzz".to_owned(), task)]), HashMap::from([("support-bot".to_owned(), Arc::new(agent))]));
        let (intent, lifetime) = serde_json::from_value::<IntentRequest>(serde_json::json!({
            "type": "agent_task", "purpose": "fuzz", "actions": ["tickets.*", "payments.refund"],
            "resources": ["ticket:*", "payment:9"], "max_classification": "internal", "lifetime_seconds": 60
        }))
        .unwrap()
        .validate()
        .unwrap();
        let key = Arc::new(SigningKey::generate());
        let claims = MandateClaims {
            iss: "https://mandate.test".into(),
            sub: spiffe.as_str().into(),
            aud: "https://tools.test".into(),
            client_id: spiffe.as_str().into(),
            iat: NOW_MS / 1000,
            nbf: NOW_MS / 1000,
            exp: NOW_MS / 1000 + 60,
            jti: "jti-fuzz".into(),
            task_id: "task_fuzz".into(),
            agent: "support-bot".into(),
            scope: MandateClaims::scope_for(&intent),
            authorization_details: vec![intent.to_authorization_detail(lifetime)],
            act: None,
            parent_task_id: None,
            depth: 0,
        };
        let token = Minter::new(key.clone()).mint(&claims).unwrap();
        let verifier = MandateVerifier::new("https://mandate.test", "https://tools.test", &[key.public_key()], 0);
        let policy = PolicyEngine::new(PolicySnapshot::compile(&PolicySources::starter()).unwrap(), None);
        Fixture { policy, live, verifier, token }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(mut req) = serde_json::from_slice::<EvaluationRequest>(data) else { return };
    if let Some(props) = req.subject.as_mut().and_then(|s| s.properties.as_mut())
        && props.get("mandate").and_then(|m| m.as_str()) == Some("$MANDATE")
    {
        props.insert("mandate".into(), f.token.clone().into());
    }
    let Ok(req) = from_authzen(req, |t| f.verifier.verify(t, NOW_MS / 1000).map(Arc::new)) else { return };
    let view = View { policy: &f.policy, liveness: &f.live, environment: "fuzz", now_ms: NOW_MS };
    let v = decide(&view, &req);
    assert_eq!(v.outcome.reason().parse::<Outcome>().unwrap(), v.outcome, "every reason is a stable code");
    if v.outcome.allowed() {
        let input = v.input.as_ref().expect("an allow went through Cedar");
        assert!(!v.policies.is_empty(), "an allow names its policies");
        if let Subject::Agent { authority, .. } = &req.subject {
            let Authority::Mandate(m) = authority else { panic!("an agent is allowed only with a verified mandate") };
            assert_eq!(v.task_id.as_deref(), Some("task_fuzz"));
            let class = v.classification.expect("an allow read the classification");
            assert!(class <= Classification::Internal, "never above the intent's ceiling");
            assert!(m.intent().check(&req.action, &req.resource_type, &req.resource_id, class).is_ok(), "inside the intent");
            assert!(input.context.task.is_some());
        }
    }
});
