//! The control plane's side of a decision, around the one decision core
//! ([`mandate_pdp::decide`]):
//!
//! 1. the wire request is parsed once into the core's typed request, its mandate verified
//!    (or taken from the cache) — [`parse`];
//! 2. the core decides, against the registry (liveness), the policy engine and the clock —
//!    [`decide`]; an approval-required decision is bound to the canonical call it was for;
//! 3. approvals are settled, and the decision is made durable in the audit trail — [`finish`];
//! 4. the answer.
//!
//! Steps 1–2 are synchronous and do no I/O. Any error on the way is a deny. [`decide_all`]
//! runs every step for a list of requests; the HTTP handlers and an embedded gateway both go
//! through [`decide_requests`], so there is one way to reach an answer.

use std::sync::Arc;
use std::time::Instant;

use mandate_audit::{DecisionDetails, EntityRef, NewEvent, ObligationDetails, ShadowDetails, kinds};
use mandate_core::Classification;
use mandate_pdp::{Authority, DenyReason, Outcome, Request, Subject, View};
use mandate_policy::Decision;
use mandate_proto::authzen::{DecisionContext, EvaluationRequest, EvaluationResponse, ItemError};
use serde_json::{Value, json};

use crate::state::{AppState, new_id};

pub use mandate_pdp::agent_principal;

/// Parses an AuthZEN request once into the decision core's request: AuthZEN's required
/// members present (the error is the spec's 400 with a message naming the missing one), and
/// an agent's mandate verified by this server's keys (from the cache when it was verified
/// before).
pub fn parse(state: &AppState, req: EvaluationRequest) -> Result<Request, String> {
    mandate_pdp::from_authzen(req, |token| verified_mandate(state, token))
}

/// What the decision core reads of this server: the policy engine, the registry, the default
/// environment, the clock.
pub fn view(state: &AppState) -> View<'_> {
    View { policy: &state.policy, liveness: &state.registry, environment: &state.settings.environment, now_ms: state.clock.now_ms() }
}

/// What was decided, and everything the audit event and the response need.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision_id: String,
    /// The decision core's verdict: outcome, policies, version, obligations, the input.
    pub decided: mandate_pdp::Verdict,
    pub subject: (String, String),
    pub action: String,
    pub resource: (String, String),
    /// An approval-required decision, until [`crate::approvals::settle`] binds it.
    pub approval: Option<crate::approvals::ApprovalAsk>,
    /// The approval asked for (approval required) or used (allowed).
    pub approval_id: Option<String>,
    /// When deciding began, for the latency metric.
    started: Instant,
}

impl Verdict {
    /// True only for an allow.
    pub fn allowed(&self) -> bool {
        self.decided.outcome.allowed()
    }

    /// The outcome, as typed.
    pub fn outcome(&self) -> Outcome {
        self.decided.outcome
    }

    /// The stable reason code.
    pub fn reason(&self) -> &'static str {
        self.decided.outcome.reason()
    }

    pub fn agent(&self) -> Option<&str> {
        self.decided.agent.as_deref()
    }

    pub fn task_id(&self) -> Option<&str> {
        self.decided.task_id.as_deref()
    }

    pub fn classification(&self) -> Option<Classification> {
        self.decided.classification
    }

    pub fn policies(&self) -> &[String] {
        &self.decided.policies
    }

    /// Turns the verdict into a deny for `reason` (a step after the core refused it).
    pub fn deny(&mut self, reason: DenyReason) {
        self.decided.outcome = Outcome::Deny(reason);
    }

    /// An approval was used: the verdict is an allow.
    pub(crate) fn allow(&mut self) {
        self.decided.outcome = Outcome::Allow;
    }

    /// The same decision as a deny because the trail could not record it.
    fn audit_unavailable(mut self) -> Self {
        self.deny(DenyReason::AuditUnavailable);
        self
    }

    fn obligations(&self) -> Vec<Value> {
        self.decided.obligations.iter().map(|o| json!({ "type": o.kind, "policy": o.policy, "value": o.value })).collect()
    }

    /// The audit event that records this decision.
    pub fn event(&self, state: &AppState, actor: &str, request_id: Option<&str>) -> NewEvent {
        let d = &self.decided;
        let details = DecisionDetails {
            decision_id: self.decision_id.clone(),
            decision: self.allowed(),
            reason: self.reason().to_owned(),
            subject: EntityRef::new(&self.subject.0, &self.subject.1),
            action: self.action.clone(),
            resource: EntityRef::new(&self.resource.0, &self.resource.1),
            policies: d.policies.clone(),
            policy_version: Some(d.policy_version.clone()),
            classification: d.classification.map(|c| c.as_str().to_owned()),
            error_code: d.error_code.map(str::to_owned),
            approval_id: self.approval_id.clone(),
            obligations: d
                .obligations
                .iter()
                .map(|o| ObligationDetails { kind: o.kind.clone(), policy: o.policy.clone(), value: o.value.clone() })
                .collect(),
            shadow: d.shadow.as_ref().map(|s| ShadowDetails {
                decision: s.allowed(),
                reason: s.reason.clone(),
                policies: s.policies.clone(),
                policy_version: s.version.clone(),
            }),
            request_id: request_id.map(str::to_owned),
        };
        state.event(kinds::DECISION, actor, d.agent.as_deref(), d.task_id.as_deref(), details.into_details())
    }

    pub fn response(&self) -> EvaluationResponse {
        let d = &self.decided;
        let ctx = DecisionContext {
            decision_id: self.decision_id.clone(),
            reason: self.reason().to_owned(),
            policies: d.policies.clone(),
            policy_version: Some(d.policy_version.clone()),
            obligations: self.obligations(),
            error_code: d.error_code.map(str::to_owned),
            error: None,
            task_id: d.task_id.clone(),
            approval_id: self.approval_id.clone(),
            receipt: None,
        };
        EvaluationResponse { decision: self.allowed(), context: serde_json::to_value(ctx).ok() }
    }

    /// The shadow set's decision, if one is loaded.
    pub fn shadow(&self) -> Option<&Decision> {
        self.decided.shadow.as_ref()
    }
}

/// An item-level error response (batch) or the body of a 400.
pub fn item_error(status: u16, message: &str) -> EvaluationResponse {
    EvaluationResponse {
        decision: false,
        context: Some(json!({ "reason": "invalid_request", "error": ItemError { status, message: message.to_owned() } })),
    }
}

/// Steps 1–2 for one parsed request: the decision core decides; an approval-required
/// decision is bound to the canonical form of everything the PEP said about the call (a call
/// that has none — too deep, too large, an inexact number — cannot be approved).
pub fn decide(state: &AppState, req: &Request) -> Verdict {
    let started = Instant::now();
    let mut decided = mandate_pdp::decide(&view(state), req);
    if let Some(e) = decided.policy_errors.first() {
        tracing::debug!(errors = ?decided.policy_errors, first = %e, "policy evaluation errors (denied)");
    }
    let mut approval = None;
    if decided.outcome == Outcome::ApprovalRequired
        && let Subject::Agent { authority: Authority::Mandate(m), .. } = &req.subject
    {
        match crate::approvals::ApprovalAsk::new(m.claims(), Some(&req.context)) {
            Ok(ask) => approval = Some(ask),
            Err(e) => decided.outcome = Outcome::Deny(DenyReason::of_canonical(&e)),
        }
    }
    let (subject_type, subject_id) = match &req.subject {
        Subject::Agent { id, .. } => ("agent".to_owned(), id.clone()),
        Subject::Other { kind, id, .. } => (kind.clone(), id.clone()),
    };
    Verdict {
        decision_id: new_id("dec"),
        decided,
        subject: (subject_type, subject_id),
        action: req.action.clone(),
        resource: (req.resource_type.clone(), req.resource_id.clone()),
        approval,
        approval_id: None,
        started,
    }
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
        state.metrics.decision(v.allowed(), v.reason(), v.started.elapsed().as_secs_f64());
    }
    verdicts
}

/// Every step for each request, in order: `Err` is a request that lacks a required AuthZEN
/// member (the message [`parse`] gives; nothing is decided or recorded for it), `Ok` a verdict
/// that is durable in the trail (or turned into an `audit_unavailable` deny). All the decision
/// events go into one group commit. `actor` is who asked (`Caller::actor`, e.g. `token:<id>`).
pub async fn decide_all(
    state: &AppState,
    requests: &[EvaluationRequest],
    actor: &str,
    request_id: Option<&str>,
) -> Vec<Result<Verdict, String>> {
    let parsed = requests.iter().cloned().map(|r| parse(state, r)).collect();
    decide_requests(state, parsed, actor, request_id, |_| false).await
}

/// Every step for requests already parsed (an `Err` is passed through, undecided), stopping
/// after the first for which `stop` says so (AuthZEN's `deny_on_first_deny` and
/// `permit_on_first_permit`); requests after it are not decided.
pub async fn decide_requests(
    state: &AppState,
    requests: Vec<Result<Request, String>>,
    actor: &str,
    request_id: Option<&str>,
    stop: impl Fn(Result<&Verdict, &str>) -> bool,
) -> Vec<Result<Verdict, String>> {
    prefetch(state, &requests).await;
    let mut slots: Vec<Result<(), String>> = Vec::with_capacity(requests.len());
    let mut verdicts = Vec::with_capacity(requests.len());
    for req in requests {
        let halt = match req {
            Ok(req) => {
                let v = decide(state, &req);
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
async fn prefetch(state: &AppState, requests: &[Result<Request, String>]) {
    if !state.keys.is_shared() {
        return;
    }
    for req in requests {
        if let Ok(Request { subject: Subject::Agent { authority: Authority::Mandate(m), .. }, .. }) = req
            && let Err(e) = crate::sync::ensure_task(state, &m.claims().task_id).await
        {
            tracing::warn!(error = %e, "cannot read a task from the shared store; its decision is a deny");
        }
    }
}

/// [`may_act`], first reading from a shared store a task this replica has never seen.
pub async fn may_act_now(state: &AppState, mandate: &mandate_token::VerifiedMandate) -> Result<Arc<mandate_core::Agent>, DenyReason> {
    if crate::sync::ensure_task(state, &mandate.claims().task_id).await.is_err() {
        return Err(DenyReason::StoreUnavailable);
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
pub fn may_act(state: &AppState, mandate: &mandate_token::VerifiedMandate) -> Result<Arc<mandate_core::Agent>, DenyReason> {
    let claims = mandate.claims();
    task_may_act(state, &claims.task_id, &claims.agent)
}

/// The decision core's liveness rule ([`mandate_pdp::may_act`]) against this server's
/// registry, now.
pub fn task_may_act(state: &AppState, task_id: &str, agent: &str) -> Result<Arc<mandate_core::Agent>, DenyReason> {
    mandate_pdp::may_act(&state.registry, task_id, agent, state.clock.now_ms()).map(|a| a.agent)
}
