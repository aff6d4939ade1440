//! Mandate's decision core: **one pure function decides every request** ([`decide`]).
//!
//! It takes a typed [`Request`] (the verified mandate or a non-agent subject, the action and
//! resource with their properties, the context), a read-only [`Liveness`] view and the clock
//! (as [`View::now_ms`]), and returns a typed [`Verdict`]. It does no I/O, is not async and
//! knows no HTTP: the control plane's AuthZEN handlers, the embedded gateway and the console's
//! what-if all call it, so they cannot disagree.
//!
//! The steps, in order, each a deny when it fails:
//!
//! 1. the mandate verified (the caller verifies it, once, and passes the result),
//! 2. the task is live and the agent active, and every task it was delegated from too
//!    ([`may_act`]),
//! 3. the request lies inside the task's granted intent: a hard ceiling, checked before any
//!    policy runs, whatever the policies say,
//! 4. Cedar, over only the policies that can apply, with the shadow set evaluated alongside.
//!
//! What happens next (the approval binding, the durable record, the answer) is the caller's:
//! this crate never writes anything.

mod liveness;
mod reason;
mod wire;

use std::sync::Arc;

use mandate_core::{Classification, Intent};
use mandate_policy::{
    ActionInput, ActionKind, ContextInput, Decision, DecisionInput, Obligation, PolicyEngine, PrincipalInput, ResourceInput, TaskContext,
};
use mandate_token::VerifiedMandate;
use serde_json::{Map, Value};

pub use liveness::{Acting, Liveness, MAX_ANCESTORS, TaskState, may_act};
pub use reason::{ALLOWED, APPROVAL_REQUIRED, DenyReason, Outcome, UnknownReason};
pub use wire::from_authzen;

/// JSON properties or context, as AuthZEN carries them.
pub type Props = Map<String, Value>;

/// One request: may this subject take this action on this resource, now?
#[derive(Debug, Clone)]
pub struct Request {
    pub subject: Subject,
    /// The action's name (`tickets.read`, `github.create_issue`).
    pub action: String,
    /// The action's properties; `kind` (`read`, `write`, `execute`) places an action the
    /// schema does not declare.
    pub action_properties: Props,
    /// The resource's type and id.
    pub resource_type: String,
    pub resource_id: String,
    /// The resource's properties; `classification` is the one the intent ceiling reads (a
    /// resource that names none is `restricted`).
    pub resource_properties: Props,
    /// The PEP's context: `environment` and `risk` are read, `arguments` shown to policy as
    /// Cedar can hold it, the rest passed through.
    pub context: Props,
}

/// Who asks.
#[derive(Debug, Clone)]
pub enum Subject {
    /// An agent, with what it acts under. `id` is the subject id the PEP sent: for a mandate,
    /// it must be the acting agent's SPIFFE id.
    Agent { id: String, authority: Authority },
    /// Any other subject (a person, a service), decided by Cedar against the loaded entities.
    Other { kind: String, id: String, properties: Props },
}

/// What an agent acts under.
#[derive(Debug, Clone)]
pub enum Authority {
    /// No mandate was presented.
    Missing,
    /// A mandate was presented and did not verify; `code` is the token error's (`expired`,
    /// `bad_signature`, …).
    Invalid { code: &'static str },
    /// A mandate that verified.
    Mandate(Arc<VerifiedMandate>),
    /// A what-if only, never from the wire: agent `agent` under task `task` as the liveness
    /// view knows it, with the intent it was granted (`None`: a task whose intent covers
    /// exactly this request, for trying a policy before any task exists).
    Hypothetical { agent: String, task: Option<HypotheticalTask> },
}

/// A task a what-if is evaluated under.
#[derive(Debug, Clone)]
pub struct HypotheticalTask {
    pub id: String,
    pub intent: Intent,
    pub depth: u32,
}

/// Everything a decision reads besides the request: the policies, liveness, the default
/// environment and the time.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub policy: &'a PolicyEngine,
    pub liveness: &'a dyn Liveness,
    /// The `environment` of a request whose context names none.
    pub environment: &'a str,
    pub now_ms: i64,
}

/// What was decided.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The detail of an `invalid_mandate` (the token error's code).
    pub error_code: Option<&'static str>,
    /// The determining policies: the permits that allowed, or the forbids that denied.
    pub policies: Vec<String>,
    /// The enforced policy set's version; also for a deny before policy ran, so the trail
    /// always says which set was deciding.
    pub policy_version: String,
    pub obligations: Vec<Obligation>,
    /// What the shadow set would have decided (never enforced).
    pub shadow: Option<Decision>,
    /// Cedar's evaluation errors (each made the outcome a deny).
    pub policy_errors: Vec<String>,
    /// The agent acting and its task, once the mandate verified.
    pub agent: Option<String>,
    pub task_id: Option<String>,
    /// The effective classification, once read.
    pub classification: Option<Classification>,
    /// The exact input Cedar evaluated; `None` when a step before policy decided.
    pub input: Option<DecisionInput>,
}

impl Verdict {
    fn deny(reason: DenyReason, version: &str) -> Verdict {
        Verdict {
            outcome: Outcome::Deny(reason),
            error_code: None,
            policies: Vec::new(),
            policy_version: version.to_owned(),
            obligations: Vec::new(),
            shadow: None,
            policy_errors: Vec::new(),
            agent: None,
            task_id: None,
            classification: None,
            input: None,
        }
    }

    /// True only for an allow.
    pub fn allowed(&self) -> bool {
        self.outcome.allowed()
    }
}

/// Decides `req` against `view`. Never fails: anything that goes wrong is a deny with its
/// stable reason.
pub fn decide(view: &View<'_>, req: &Request) -> Verdict {
    match &req.subject {
        Subject::Agent { id, authority } => decide_agent(view, req, id, authority),
        Subject::Other { kind, id, properties } => {
            let classification = match classification_of(req) {
                Ok(c) => c,
                Err(r) => return Verdict::deny(r, view.policy.current().version()),
            };
            let principal = PrincipalInput::Other { kind: kind.clone(), id: id.clone(), properties: properties.clone() };
            let mut v = evaluate(view, input_of(view, req, principal, classification, None));
            v.classification = Some(classification);
            v
        }
    }
}

fn decide_agent(view: &View<'_>, req: &Request, subject_id: &str, authority: &Authority) -> Verdict {
    let version = || view.policy.current().version().to_owned();
    let deny = |r: DenyReason, agent: Option<&str>, task: Option<&str>| {
        let mut v = Verdict::deny(r, &version());
        v.agent = agent.map(str::to_owned);
        v.task_id = task.map(str::to_owned);
        v
    };
    // Who acts, under which task and intent.
    let (agent, task, intent, depth) = match authority {
        Authority::Missing => return deny(DenyReason::MandateRequired, None, None),
        Authority::Invalid { code } => {
            let mut v = deny(DenyReason::InvalidMandate, None, None);
            v.error_code = Some(code);
            return v;
        }
        Authority::Mandate(m) => {
            let c = m.claims();
            // The subject is the agent acting: for a delegated mandate the current actor, not `sub`.
            if subject_id != c.actor_id() {
                return deny(DenyReason::SubjectMismatch, Some(&c.agent), Some(&c.task_id));
            }
            (c.agent.as_str(), Some(c.task_id.as_str()), Some(m.intent()), c.depth)
        }
        Authority::Hypothetical { agent, task } => match task {
            Some(t) => (agent.as_str(), Some(t.id.as_str()), Some(&t.intent), t.depth),
            None => (agent.as_str(), None, None, 0),
        },
    };
    let acting = match task {
        Some(task_id) => match may_act(view.liveness, task_id, agent, view.now_ms) {
            Ok(a) => a,
            Err(r) => return deny(r, Some(agent), Some(task_id)),
        },
        None => match view.liveness.agent(agent) {
            Some(a) if a.status == mandate_core::AgentStatus::Active => Acting { agent: a, chain: Vec::new() },
            Some(_) => return deny(DenyReason::AgentDisabled, Some(agent), None),
            None => return deny(DenyReason::AgentUnknown, Some(agent), None),
        },
    };
    let classification = match classification_of(req) {
        Ok(c) => c,
        Err(r) => return deny(r, Some(agent), task),
    };
    let exact;
    let intent = match intent {
        Some(i) => i,
        None => {
            exact = Intent {
                purpose: "what-if".into(),
                actions: vec![req.action.clone()],
                resources: vec![format!("{}:{}", req.resource_type, req.resource_id)],
                max_classification: classification,
                on_behalf_of: None,
            };
            &exact
        }
    };
    if let Err(violation) = intent.check(&req.action, &req.resource_type, &req.resource_id, classification) {
        let mut v = deny(DenyReason::of_ceiling(violation), Some(agent), task);
        v.classification = Some(classification);
        return v;
    }
    let task_context = TaskContext { id: task.unwrap_or("what-if").to_owned(), intent: intent.clone(), depth, chain: acting.chain };
    let principal = agent_principal(&acting.agent);
    let mut v = evaluate(view, input_of(view, req, principal, classification, Some(task_context)));
    v.agent = Some(agent.to_owned());
    v.task_id = task.map(str::to_owned);
    v.classification = Some(classification);
    v
}

/// Cedar, enforced and shadow sets, over `input`.
fn evaluate(view: &View<'_>, input: DecisionInput) -> Verdict {
    let eval = view.policy.evaluate(&input);
    let d = eval.enforced;
    Verdict {
        outcome: Outcome::of_policy(&d),
        error_code: None,
        policies: d.policies,
        policy_version: d.version,
        obligations: d.obligations,
        shadow: eval.shadow,
        policy_errors: d.errors,
        agent: None,
        task_id: None,
        classification: None,
        input: Some(input),
    }
}

/// An agent as Cedar's principal: its attributes, with its free-form attributes as tags.
pub fn agent_principal(agent: &mandate_core::Agent) -> PrincipalInput {
    PrincipalInput::Agent {
        name: agent.name.as_str().to_owned(),
        spiffe_id: agent.spiffe_id.as_str().to_owned(),
        owner: agent.owner.clone(),
        purpose: agent.purpose.clone(),
        trust_domain: agent.spiffe_id.trust_domain().to_owned(),
        tags: agent.attributes.clone(),
    }
}

/// The effective classification: the resource's, or `restricted` when it names none.
pub fn classification_of(req: &Request) -> Result<Classification, DenyReason> {
    match req.resource_properties.get("classification") {
        None | Some(Value::Null) => Ok(Classification::Restricted),
        Some(Value::String(s)) => s.parse().map_err(|_| DenyReason::UnknownClassification),
        Some(_) => Err(DenyReason::UnknownClassification),
    }
}

fn input_of(
    view: &View<'_>,
    req: &Request,
    principal: PrincipalInput,
    classification: Classification,
    task: Option<TaskContext>,
) -> DecisionInput {
    let kind = req.action_properties.get("kind").and_then(Value::as_str).and_then(|k| k.parse::<ActionKind>().ok());
    let mut properties = req.resource_properties.clone();
    properties.remove("classification");
    let environment = match req.context.get("environment") {
        Some(Value::String(s)) => s.clone(),
        _ => view.environment.to_owned(),
    };
    let risk = req.context.get("risk").and_then(Value::as_i64).unwrap_or(0);
    // The rest of the context passes through, but a tool call's arguments, which arrive whole
    // (canonical, nulls and floats included), are shown to policy as Cedar can hold them:
    // built once from the request's value, never copied first.
    let extra = req
        .context
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "environment" | "risk"))
        .map(|(k, v)| (k.clone(), if k == "arguments" { mandate_policy::arguments_view(v) } else { v.clone() }))
        .collect();
    DecisionInput {
        principal,
        action: ActionInput { name: req.action.clone(), kind },
        resource: ResourceInput { kind: req.resource_type.clone(), id: req.resource_id.clone(), classification, properties },
        context: ContextInput { now_secs: view.now_ms.div_euclid(1000), environment, risk, task, extra },
    }
}
