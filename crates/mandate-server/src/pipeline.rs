//! The decision pipeline, in the order it runs:
//!
//! 1. verify the mandate (or take its verification from the cache),
//! 2. the task is live and the agent active (read from the registry: revocation is effective
//!    on the next request),
//! 3. the request lies inside the task's granted intent — a hard ceiling, checked before any
//!    policy runs, whatever the policies say,
//! 4. Cedar, over only the policies that can apply, with the shadow set evaluated alongside,
//! 5. the decision is made durable in the audit trail,
//! 6. the answer.
//!
//! Steps 1–4 are [`decide`]: synchronous, no I/O. Any error on the way is a deny. Step 5 is
//! [`finish`]. [`decide_all`] runs every step for a list of requests; the HTTP handlers and an
//! embedded gateway both go through it, so there is one way to reach an answer.

use std::sync::Arc;
use std::time::Instant;

use mandate_audit::{NewEvent, kinds};
use mandate_core::{AgentStatus, Classification, TaskStatus};
use mandate_policy::{ActionInput, ActionKind, ContextInput, Decision, DecisionInput, PrincipalInput, ResourceInput, TaskContext};
use mandate_proto::authzen::{DecisionContext, EvaluationRequest, EvaluationResponse, ItemError};
use serde_json::{Map, Value, json};

use crate::state::{AppState, new_id};

/// A request whose required AuthZEN members are present.
pub struct Checked<'a> {
    pub subject_type: &'a str,
    pub subject_id: &'a str,
    pub subject_props: Option<&'a Map<String, Value>>,
    pub action: &'a str,
    pub action_props: Option<&'a Map<String, Value>>,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub resource_props: Option<&'a Map<String, Value>>,
    pub context: Option<&'a Map<String, Value>>,
}

/// Checks AuthZEN's required members; the error is the spec's 400 with a message naming the
/// missing member.
pub fn check(req: &EvaluationRequest) -> Result<Checked<'_>, String> {
    let subject = req.subject.as_ref().ok_or("`subject` is required")?;
    let action = req.action.as_ref().ok_or("`action` is required")?;
    let resource = req.resource.as_ref().ok_or("`resource` is required")?;
    let nonempty = |v: &Option<String>, what: &str| -> Result<(), String> {
        match v {
            Some(s) if !s.is_empty() => Ok(()),
            _ => Err(format!("`{what}` is required")),
        }
    };
    nonempty(&subject.kind, "subject.type")?;
    nonempty(&subject.id, "subject.id")?;
    nonempty(&action.name, "action.name")?;
    nonempty(&resource.kind, "resource.type")?;
    nonempty(&resource.id, "resource.id")?;
    Ok(Checked {
        subject_type: subject.kind.as_deref().unwrap_or(""),
        subject_id: subject.id.as_deref().unwrap_or(""),
        subject_props: subject.properties.as_ref(),
        action: action.name.as_deref().unwrap_or(""),
        action_props: action.properties.as_ref(),
        resource_type: resource.kind.as_deref().unwrap_or(""),
        resource_id: resource.id.as_deref().unwrap_or(""),
        resource_props: resource.properties.as_ref(),
        context: req.context.as_ref(),
    })
}

/// What was decided, and everything the audit event and the response need.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision_id: String,
    pub allowed: bool,
    pub reason: String,
    pub error_code: Option<String>,
    pub policies: Vec<String>,
    pub policy_version: Option<String>,
    pub obligations: Vec<Value>,
    pub shadow: Option<Decision>,
    pub agent: Option<String>,
    pub task_id: Option<String>,
    pub subject: (String, String),
    pub action: String,
    pub resource: (String, String),
    pub classification: Option<Classification>,
    /// An approval-required decision, until [`crate::approvals::settle`] binds it.
    pub approval: Option<crate::approvals::ApprovalAsk>,
    /// The approval asked for (approval required) or used (allowed).
    pub approval_id: Option<String>,
    /// When deciding began, for the latency metric.
    started: Instant,
}

impl Verdict {
    fn deny(c: &Checked<'_>, reason: &str) -> Self {
        Verdict {
            decision_id: new_id("dec"),
            allowed: false,
            reason: reason.to_owned(),
            error_code: None,
            policies: Vec::new(),
            policy_version: None,
            obligations: Vec::new(),
            shadow: None,
            agent: None,
            task_id: None,
            subject: (c.subject_type.to_owned(), c.subject_id.to_owned()),
            action: c.action.to_owned(),
            resource: (c.resource_type.to_owned(), c.resource_id.to_owned()),
            classification: None,
            approval: None,
            approval_id: None,
            started: Instant::now(),
        }
    }

    /// The same decision as a deny because the trail could not record it.
    fn audit_unavailable(mut self) -> Self {
        self.allowed = false;
        self.reason = "audit_unavailable".into();
        self
    }

    /// The audit event that records this decision.
    pub fn event(&self, state: &AppState, actor: &str, request_id: Option<&str>) -> NewEvent {
        let mut details = json!({
            "decision_id": self.decision_id,
            "decision": self.allowed,
            "reason": self.reason,
            "subject": { "type": self.subject.0, "id": self.subject.1 },
            "action": self.action,
            "resource": { "type": self.resource.0, "id": self.resource.1 },
            "policies": self.policies,
        });
        if let Value::Object(m) = &mut details {
            if let Some(v) = &self.policy_version {
                m.insert("policy_version".into(), json!(v));
            }
            if let Some(c) = self.classification {
                m.insert("classification".into(), json!(c.as_str()));
            }
            if let Some(code) = &self.error_code {
                m.insert("error_code".into(), json!(code));
            }
            if let Some(id) = &self.approval_id {
                m.insert("approval_id".into(), json!(id));
            }
            if !self.obligations.is_empty() {
                m.insert("obligations".into(), json!(self.obligations));
            }
            if let Some(s) = &self.shadow {
                m.insert(
                    "shadow".into(),
                    json!({ "decision": s.allowed(), "reason": s.reason, "policies": s.policies, "policy_version": s.version }),
                );
            }
            if let Some(r) = request_id {
                m.insert("request_id".into(), json!(r));
            }
        }
        state.event(kinds::DECISION, actor, self.agent.as_deref(), self.task_id.as_deref(), details)
    }

    pub fn response(&self) -> EvaluationResponse {
        let ctx = DecisionContext {
            decision_id: self.decision_id.clone(),
            reason: self.reason.clone(),
            policies: self.policies.clone(),
            policy_version: self.policy_version.clone(),
            obligations: self.obligations.clone(),
            error_code: self.error_code.clone(),
            error: None,
            task_id: self.task_id.clone(),
            approval_id: self.approval_id.clone(),
            receipt: None,
        };
        EvaluationResponse { decision: self.allowed, context: serde_json::to_value(ctx).ok() }
    }
}

/// An item-level error response (batch) or the body of a 400.
pub fn item_error(status: u16, message: &str) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: Some(json!({ "reason": "invalid_request", "error": ItemError { status, message: message.to_owned() } })),
    }
}

/// Steps 1–4: decide without I/O. Every decision names the policy-set version in force, also
/// one denied before policy ran (intent ceiling, task or agent state), so the trail always
/// says which set was deciding.
pub fn decide(state: &AppState, c: &Checked<'_>) -> Verdict {
    let started = Instant::now();
    let mut v = if c.subject_type == "agent" { decide_agent(state, c) } else { decide_other(state, c) };
    if v.policy_version.is_none() {
        v.policy_version = Some(state.policy.current().version().to_owned());
    }
    v.started = started;
    v
}

/// Step 5: records every decision's event in one `record_all` and returns the verdicts once
/// they are durable, in the same order. If the trail cannot take them, every verdict becomes an
/// `audit_unavailable` deny: nothing is allowed that is not recorded. Counts each in the
/// metrics.
pub async fn finish(state: &AppState, verdicts: Vec<Verdict>, actor: &str, request_id: Option<&str>) -> Vec<Verdict> {
    finish_with(state, verdicts, Vec::new(), actor, request_id).await
}

/// [`finish`], with other events (approval requests and uses) made durable in the same commit,
/// before the decisions.
async fn finish_with(
    state: &AppState,
    verdicts: Vec<Verdict>,
    mut events: Vec<NewEvent>,
    actor: &str,
    request_id: Option<&str>,
) -> Vec<Verdict> {
    if verdicts.is_empty() {
        return verdicts;
    }
    events.extend(verdicts.iter().map(|v| v.event(state, actor, request_id)));
    let verdicts = match state.audit.record_all(events).await {
        Ok(_) => verdicts,
        Err(_) => verdicts.into_iter().map(Verdict::audit_unavailable).collect(),
    };
    for v in &verdicts {
        state.metrics.decision(v.allowed, &v.reason, v.started.elapsed().as_secs_f64());
    }
    verdicts
}

/// Every step for each request, in order: `Err` is a request that lacks a required AuthZEN
/// member (the message [`check`] gives; nothing is decided or recorded for it), `Ok` a verdict
/// that is durable in the trail (or turned into an `audit_unavailable` deny). All the decision
/// events go into one group commit. `actor` is who asked (`Caller::actor`, e.g. `token:<id>`).
pub async fn decide_all(
    state: &AppState,
    requests: &[EvaluationRequest],
    actor: &str,
    request_id: Option<&str>,
) -> Vec<Result<Verdict, String>> {
    decide_until(state, requests, actor, request_id, |_| false).await
}

/// [`decide_all`], stopping after the first request for which `stop` says so (AuthZEN's
/// `deny_on_first_deny` and `permit_on_first_permit`); requests after it are not decided.
pub(crate) async fn decide_until(
    state: &AppState,
    requests: &[EvaluationRequest],
    actor: &str,
    request_id: Option<&str>,
    stop: impl Fn(Result<&Verdict, &str>) -> bool,
) -> Vec<Result<Verdict, String>> {
    prefetch(state, requests).await;
    let mut slots: Vec<Result<(), String>> = Vec::with_capacity(requests.len());
    let mut verdicts = Vec::with_capacity(requests.len());
    for req in requests {
        let halt = match check(req) {
            Ok(checked) => {
                let v = decide(state, &checked);
                let halt = stop(Ok(&v));
                verdicts.push(v);
                slots.push(Ok(()));
                halt
            }
            Err(message) => {
                let halt = stop(Err(&message));
                slots.push(Err(message));
                halt
            }
        };
        if halt {
            break;
        }
    }
    let approval_events = crate::approvals::settle(state, &mut verdicts, actor).await;
    let mut finished = finish_with(state, verdicts, approval_events, actor, request_id).await.into_iter();
    slots
        .into_iter()
        .filter_map(|slot| match slot {
            Ok(()) => finished.next().map(Ok),
            Err(message) => Some(Err(message)),
        })
        .collect()
}

/// On a shared store, reads the tasks (and agents) of the requests' mandates that this replica
/// has never seen — opened a moment ago through another replica — so that deciding needs no
/// I/O. A failed read leaves the task unknown, which denies.
async fn prefetch(state: &AppState, requests: &[EvaluationRequest]) {
    if !state.keys.is_shared() {
        return;
    }
    for req in requests {
        let token = req.subject.as_ref().and_then(|s| s.properties.as_ref()).and_then(|p| p.get("mandate")).and_then(Value::as_str);
        if let Some(m) = token.and_then(|t| verified_mandate(state, t).ok())
            && let Err(e) = crate::sync::ensure_task(state, &m.claims().task_id).await
        {
            tracing::warn!(error = %e, "cannot read a task from the shared store; its decision is a deny");
        }
    }
}

/// [`may_act`], first reading from a shared store a task this replica has never seen.
pub async fn may_act_now(state: &AppState, mandate: &mandate_token::VerifiedMandate) -> Result<Arc<mandate_core::Agent>, &'static str> {
    if crate::sync::ensure_task(state, &mandate.claims().task_id).await.is_err() {
        return Err("store_unavailable");
    }
    may_act(state, mandate)
}

/// A mandate verified by this server's keys (EdDSA, `typ`, issuer, audience, times), from the
/// cache when it was verified before.
pub fn verified_mandate(state: &AppState, token: &str) -> Result<Arc<mandate_token::VerifiedMandate>, mandate_token::TokenError> {
    let now_secs = state.clock.now_secs();
    if let Some(m) = state.cache.get(token, now_secs) {
        return Ok(m);
    }
    let m = Arc::new(state.keys.signing().verifier.verify(token, now_secs)?);
    state.cache.put(token, m.clone(), now_secs);
    Ok(m)
}

/// Whether the mandate's task is live and its agent active right now (the registry, so a
/// revocation counts from the very next call): the agent, or the stable reason it may not act.
/// See [`task_may_act`].
pub fn may_act(state: &AppState, mandate: &mandate_token::VerifiedMandate) -> Result<Arc<mandate_core::Agent>, &'static str> {
    let claims = mandate.claims();
    task_may_act(state, &claims.task_id, &claims.agent)
}

/// Longest chain of parent tasks followed before a task is refused; far beyond any depth a
/// server allows, it only guards against a loop.
const MAX_ANCESTORS: usize = 64;

/// Whether task `task_id` of agent `agent` may act right now: the task is live and unexpired,
/// its agent active, and, for a delegated task, every task it was delegated from is live too
/// and run by an active agent (else `task_revoked`: revoking or completing a task revokes
/// those delegated from it, and this holds even before that cascade has reached them).
pub fn task_may_act(state: &AppState, task_id: &str, agent: &str) -> Result<Arc<mandate_core::Agent>, &'static str> {
    let now_ms = state.clock.now_ms();
    let task = state.registry.task(task_id).ok_or("task_unknown")?;
    if task.agent != agent {
        return Err("subject_mismatch");
    }
    match task.status {
        TaskStatus::Live if task.expires_at_ms > now_ms => {}
        TaskStatus::Live | TaskStatus::Expired => return Err("task_expired"),
        TaskStatus::Completed => return Err("task_completed"),
        TaskStatus::Revoked => return Err("task_revoked"),
    }
    let acting = state.registry.agent(agent).ok_or("agent_unknown")?;
    if acting.status != AgentStatus::Active {
        return Err("agent_disabled");
    }
    let mut parent = task.parent_id;
    let mut hops = 0;
    while let Some(id) = parent {
        hops += 1;
        let above = state.registry.task(&id).filter(|_| hops <= MAX_ANCESTORS).ok_or("task_revoked")?;
        let active = state.registry.agent(&above.agent).is_some_and(|a| a.status == AgentStatus::Active);
        if above.status != TaskStatus::Live || above.expires_at_ms <= now_ms || !active {
            return Err("task_revoked");
        }
        parent = above.parent_id;
    }
    Ok(acting)
}

fn decide_agent(state: &AppState, c: &Checked<'_>) -> Verdict {
    let Some(token) = c.subject_props.and_then(|p| p.get("mandate")).and_then(Value::as_str) else {
        return Verdict::deny(c, "mandate_required");
    };
    let now_secs = state.clock.now_secs();
    let mandate = match verified_mandate(state, token) {
        Ok(m) => m,
        Err(e) => {
            let mut v = Verdict::deny(c, "invalid_mandate");
            v.error_code = Some(e.code().to_owned());
            return v;
        }
    };
    let claims = mandate.claims();
    let mut v = Verdict::deny(c, "");
    v.agent = Some(claims.agent.clone());
    v.task_id = Some(claims.task_id.clone());
    // The subject is the agent acting: for a delegated mandate the current actor, not `sub`.
    if c.subject_id != claims.actor_id() {
        v.reason = "subject_mismatch".into();
        return v;
    }
    let agent = match may_act(state, &mandate) {
        Ok(a) => a,
        Err(reason) => {
            v.reason = reason.into();
            return v;
        }
    };
    let classification = match classification_of(c) {
        Ok(cl) => cl,
        Err(reason) => {
            v.reason = reason;
            return v;
        }
    };
    v.classification = Some(classification);
    let intent = mandate.intent();
    if let Err(violation) = intent.check(c.action, c.resource_type, c.resource_id, classification) {
        v.reason = violation.code().to_owned();
        return v;
    }
    let input = DecisionInput {
        principal: agent_principal(&agent),
        action: action_input(c),
        resource: resource_input(c, classification),
        context: context_input(
            state,
            c,
            now_secs,
            Some(TaskContext { id: claims.task_id.clone(), intent: intent.clone(), depth: claims.depth, chain: claims.delegators() }),
        ),
    };
    let mut v = apply_policy(state, &input, v);
    if v.reason == mandate_policy::reason::APPROVAL_REQUIRED {
        // Bound to the canonical form of everything the PEP said about the call; a call
        // that has none (too deep, too large, an inexact number) cannot be approved.
        match crate::approvals::ApprovalAsk::new(claims, c.context) {
            Ok(ask) => v.approval = Some(ask),
            Err(e) => {
                v.allowed = false;
                v.reason = e.code().to_owned();
            }
        }
    }
    v
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

fn decide_other(state: &AppState, c: &Checked<'_>) -> Verdict {
    let v = Verdict::deny(c, "");
    let classification = match classification_of(c) {
        Ok(cl) => cl,
        Err(reason) => {
            let mut v = v;
            v.reason = reason;
            return v;
        }
    };
    let input = DecisionInput {
        principal: PrincipalInput::Other {
            kind: c.subject_type.to_owned(),
            id: c.subject_id.to_owned(),
            properties: c.subject_props.cloned().unwrap_or_default(),
        },
        action: action_input(c),
        resource: resource_input(c, classification),
        context: context_input(state, c, state.clock.now_secs(), None),
    };
    let mut v = apply_policy(state, &input, v);
    v.classification = Some(classification);
    v
}

fn apply_policy(state: &AppState, input: &DecisionInput, mut v: Verdict) -> Verdict {
    let eval = state.policy.evaluate(input);
    let d = eval.enforced;
    v.allowed = d.allowed();
    v.reason = d.reason.clone();
    v.policies = d.policies.clone();
    v.policy_version = Some(d.version.clone());
    v.obligations = d.obligations.iter().map(|o| json!({ "type": o.kind, "policy": o.policy, "value": o.value })).collect();
    if !d.errors.is_empty() {
        tracing::debug!(errors = ?d.errors, "policy evaluation errors (denied)");
    }
    v.shadow = eval.shadow;
    v
}

/// The effective classification: the resource's, or `restricted` when it names none.
fn classification_of(c: &Checked<'_>) -> Result<Classification, String> {
    match c.resource_props.and_then(|p| p.get("classification")) {
        None | Some(Value::Null) => Ok(Classification::Restricted),
        Some(Value::String(s)) => s.parse().map_err(|_| "unknown_classification".to_owned()),
        Some(_) => Err("unknown_classification".to_owned()),
    }
}

fn action_input(c: &Checked<'_>) -> ActionInput {
    let kind = c.action_props.and_then(|p| p.get("kind")).and_then(Value::as_str).and_then(|k| k.parse::<ActionKind>().ok());
    ActionInput { name: c.action.to_owned(), kind }
}

fn resource_input(c: &Checked<'_>, classification: Classification) -> ResourceInput {
    let mut properties = c.resource_props.cloned().unwrap_or_default();
    properties.remove("classification");
    ResourceInput { kind: c.resource_type.to_owned(), id: c.resource_id.to_owned(), classification, properties }
}

fn context_input(state: &AppState, c: &Checked<'_>, now_secs: i64, task: Option<TaskContext>) -> ContextInput {
    let mut extra = c.context.cloned().unwrap_or_default();
    // A tool call's arguments arrive whole (canonical, nulls and floats included); policy
    // sees them as Cedar can hold them.
    if let Some(args) = extra.get_mut("arguments") {
        *args = mandate_policy::arguments_view(args);
    }
    let environment = match extra.remove("environment") {
        Some(Value::String(s)) => s,
        _ => state.settings.environment.clone(),
    };
    let risk = extra.remove("risk").and_then(|v| v.as_i64()).unwrap_or(0);
    ContextInput { now_secs, environment, risk, task, extra }
}

/// The decision input a request would have, for a what-if evaluation that is never enforced
/// nor recorded (the console's policy page): the same action, resource and context mapping as
/// a real decision, with the principal and task given by the caller. `Err` is the stable
/// reason a real decision would deny it with before policy runs (`unknown_classification`).
pub(crate) fn what_if_input(
    state: &AppState,
    c: &Checked<'_>,
    principal: PrincipalInput,
    task: Option<TaskContext>,
) -> Result<DecisionInput, String> {
    let classification = classification_of(c)?;
    Ok(DecisionInput {
        principal,
        action: action_input(c),
        resource: resource_input(c, classification),
        context: context_input(state, c, state.clock.now_secs(), task),
    })
}
