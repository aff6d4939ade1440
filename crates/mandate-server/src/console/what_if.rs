//! The policy page: the policy set in force, and a what-if form that evaluates a request
//! against it the way a real decision would, without enforcing or recording anything.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use mandate_core::Classification;
use mandate_pdp::{Authority, DenyReason, HypotheticalTask, Subject};
use mandate_policy::Decision;
use maud::{Markup, html};
use serde_json::{Map, Value};

use super::pages::session;
use super::view::{self, Nav, badge, csrf_field};
use super::{Form, Viewer, guard_post};
use crate::pipeline;
use crate::state::AppState;

/// Longest context JSON accepted.
const MAX_CONTEXT: usize = 16 * 1024;

/// The what-if form's fields, as typed.
#[derive(Debug, Default, Clone)]
struct Request {
    subject_type: String,
    subject_id: String,
    task: String,
    action: String,
    kind: String,
    resource_type: String,
    resource_id: String,
    classification: String,
    context: String,
}

impl Request {
    fn from_form(f: &Form) -> Request {
        let field = |k: &str| f.get(k).trim().to_owned();
        Request {
            subject_type: field("subject_type"),
            subject_id: field("subject_id"),
            task: field("task"),
            action: field("action"),
            kind: field("kind"),
            resource_type: field("resource_type"),
            resource_id: field("resource_id"),
            classification: field("classification"),
            context: f.get("context").trim().to_owned(),
        }
    }
}

/// One step a real decision would take, and what it found.
struct Step {
    what: &'static str,
    ok: bool,
    note: String,
}

/// What the what-if found.
struct Outcome {
    steps: Vec<Step>,
    /// The decision core's verdict: what a real request would get, and the policies' part
    /// (`input` is `None` when a step before policy decided: a real request stops there).
    verdict: mandate_pdp::Verdict,
    synthetic_task: bool,
}

/// `GET /console/policy`.
pub async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let v = session!(state, headers);
    let req = Request { subject_type: "agent".into(), classification: "internal".into(), ..Request::default() };
    super::html(StatusCode::OK, render(&state, &v, &req, None))
}

/// `POST /console/policy`: the what-if. Reading, not acting: every role may.
pub async fn evaluate(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
    let (v, form) = match guard_post(
        &state,
        &headers,
        &uri,
        &body,
        &[mandate_core::Role::Approver, mandate_core::Role::Auditor],
        "evaluate what-if requests",
    )
    .await
    {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let req = Request::from_form(&form);
    let result = what_if(&state, &req).await;
    let status = if result.is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    super::html(status, render(&state, &v, &req, Some(result)))
}

/// Runs the request through the decision core, exactly as a real decision would go (the
/// registry's liveness, the delegation chain, the intent ceiling, the policies and the shadow
/// set), under a hypothetical authority: the named task, or none. `Err` is a form that cannot
/// be evaluated: a stable code and a message.
async fn what_if(state: &AppState, r: &Request) -> Result<Outcome, (&'static str, String)> {
    let required =
        [("subject", &r.subject_id), ("action", &r.action), ("resource type", &r.resource_type), ("resource id", &r.resource_id)];
    if let Some((name, _)) = required.iter().find(|(_, v)| v.is_empty()) {
        return Err(("invalid_request", format!("the {name} is required")));
    }
    let subject_type = if r.subject_type.is_empty() { "agent" } else { r.subject_type.as_str() };
    if r.context.len() > MAX_CONTEXT {
        return Err(("invalid_context", format!("the context may be at most {MAX_CONTEXT} bytes")));
    }
    let context: Map<String, Value> = if r.context.is_empty() {
        Map::new()
    } else {
        match serde_json::from_str(&r.context) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(("invalid_context", "the context must be a JSON object, e.g. {\"environment\": \"staging\"}".into())),
            Err(e) => return Err(("invalid_context", format!("the context is not valid JSON: {e}"))),
        }
    };
    let mut action_properties = Map::new();
    if !r.kind.is_empty() {
        if r.kind.parse::<mandate_policy::ActionKind>().is_err() {
            return Err((
                "unknown_action_kind",
                format!("action kind `{}` is not one of read, write, execute", crate::error::short(&r.kind)),
            ));
        }
        action_properties.insert("kind".into(), Value::String(r.kind.clone()));
    }
    let mut resource_properties = Map::new();
    if !r.classification.is_empty() {
        if r.classification.parse::<Classification>().is_err() {
            return Err(("unknown_classification", format!("classification `{}` is not known", crate::error::short(&r.classification))));
        }
        resource_properties.insert("classification".into(), Value::String(r.classification.clone()));
    }

    let mut agent_shown = None;
    let subject = if subject_type == "agent" {
        let name = r.subject_id.rsplit_once("/agent/").map_or(r.subject_id.as_str(), |(_, n)| n);
        let agent =
            state.registry.agent(name).ok_or(("agent_not_found", format!("agent `{}` is not registered", crate::error::short(name))))?;
        let task = if r.task.is_empty() {
            None
        } else {
            // The task's granted intent is read from the store (the registry keeps only what
            // liveness needs); whether it may act is the decision core's, from the registry.
            let Some(t) =
                state.store.get_task(&r.task).await.map_err(|_| ("unavailable", "the store is unavailable; try again".to_owned()))?
            else {
                return Err(("task_not_found", format!("task `{}` not found", crate::error::short(&r.task))));
            };
            if t.agent.as_str() != agent.name.as_str() {
                return Err((
                    "subject_mismatch",
                    format!("task `{}` belongs to agent `{}`, not `{}`", t.id, t.agent.as_str(), agent.name.as_str()),
                ));
            }
            Some(HypotheticalTask { id: t.id, intent: t.intent, depth: t.depth })
        };
        agent_shown = Some(agent.clone());
        Subject::Agent {
            id: agent.spiffe_id.as_str().to_owned(),
            authority: Authority::Hypothetical { agent: agent.name.as_str().to_owned(), task },
        }
    } else {
        if !r.task.is_empty() {
            return Err(("invalid_request", "only agents act under tasks: leave the task empty for other subjects".into()));
        }
        Subject::Other { kind: subject_type.to_owned(), id: r.subject_id.clone(), properties: Map::new() }
    };
    let req = mandate_pdp::Request {
        subject,
        action: r.action.clone(),
        action_properties,
        resource_type: r.resource_type.clone(),
        resource_id: r.resource_id.clone(),
        resource_properties,
        context,
    };
    let verdict = mandate_pdp::decide(&pipeline::view(state), &req);
    Ok(Outcome {
        steps: steps(state, r, agent_shown.as_deref(), &verdict),
        verdict,
        synthetic_task: agent_shown.is_some() && r.task.is_empty(),
    })
}

/// The steps before policy, as the decision core took them.
fn steps(state: &AppState, r: &Request, agent: Option<&mandate_core::Agent>, v: &mandate_pdp::Verdict) -> Vec<Step> {
    let Some(agent) = agent else { return Vec::new() };
    let reason = v.outcome.deny_reason();
    let mut steps = Vec::new();
    let agent_ok = !matches!(reason, Some(DenyReason::AgentDisabled | DenyReason::AgentUnknown));
    steps.push(Step { what: "agent", ok: agent_ok, note: format!("`{}` is {}", agent.name.as_str(), agent.status.as_str()) });
    let task_ok = !reason.is_some_and(|r| r.is_liveness() && !matches!(r, DenyReason::AgentDisabled | DenyReason::AgentUnknown));
    if r.task.is_empty() {
        steps.push(Step {
            what: "task",
            ok: true,
            note: "none given: evaluated as if under a live task whose intent covers exactly this request".into(),
        });
    } else {
        let note = match (task_ok, reason) {
            (true, _) => format!("`{}` is live", r.task),
            (false, Some(reason)) => {
                let known = state.registry.task(&r.task).map_or("unknown", |t| t.status.as_str());
                format!("`{}` may not act ({}): it is {known}", r.task, reason.as_str())
            }
            (false, None) => format!("`{}` may not act", r.task),
        };
        steps.push(Step { what: "task", ok: task_ok, note });
    }
    match reason {
        Some(r) if r.is_ceiling() => {
            steps.push(Step { what: "intent ceiling", ok: false, note: format!("outside the task's intent: {r}") })
        }
        _ if v.input.is_some() => steps.push(Step { what: "intent ceiling", ok: true, note: "inside the task's intent".into() }),
        _ => steps.push(Step { what: "intent ceiling", ok: false, note: "not reached".into() }),
    }
    steps
}

fn outcome_word(o: mandate_pdp::Outcome) -> &'static str {
    match o {
        mandate_pdp::Outcome::Allow => "allow",
        mandate_pdp::Outcome::Deny(_) => "deny",
        mandate_pdp::Outcome::ApprovalRequired => "approval required",
    }
}

fn shadow_word(d: &Decision) -> &'static str {
    outcome_word(mandate_pdp::Outcome::of_policy(d))
}

fn render(state: &AppState, v: &Viewer, r: &Request, result: Option<Result<Outcome, (&'static str, String)>>) -> Markup {
    let current = state.policy.current();
    let shadow = state.policy.shadow();
    let ids = current.policy_ids();
    let body = html! {
        div.head {
            h1 { "Policy" }
            p.sub { "The Cedar policy set deciding every request, and a what-if to try one against it." }
        }
        @if let Some(result) = &result { (outcome(result)) }
        div.cols {
            section.card {
                h2 { "Policy set in force" }
                dl.kv {
                    dt { "Version" } dd { code { (current.version()) } }
                    dt { "Source" } dd { code { (state.policy_source) } }
                    dt { "Policies" } dd { (current.policy_count()) }
                    dt { "Shadow set" } dd { @if let Some(s) = &shadow { code { (s.version()) } " (evaluated, never enforced)" } @else { "none" } }
                    dt { "Entities loaded" } dd { (state.policy.entities().len()) }
                }
                ul.ids { @for id in &ids { li { code { (id) } } } }
            }
            section.card {
                h2 { "What if…" }
                p.muted { "Evaluates a request against the policies in force, as a real decision would. Nothing is enforced and nothing is recorded." }
                form.whatif method="post" action="/console/policy" {
                    (csrf_field(v))
                    div.row {
                        label { "Subject type" input type="text" name="subject_type" value=(r.subject_type) placeholder="agent"; }
                        label { "Agent name (or subject id)" input type="text" name="subject_id" value=(r.subject_id) placeholder="support-bot" required; }
                    }
                    label { "Under task (optional)" input type="text" name="task" value=(r.task) placeholder="task id: its intent is the ceiling"; }
                    div.row {
                        label { "Action" input type="text" name="action" value=(r.action) placeholder="tickets.read" required; }
                        label { "Action kind"
                            select name="kind" {
                                option value="" selected[r.kind.is_empty()] { "from the schema" }
                                @for k in ["read", "write", "execute"] { option value=(k) selected[r.kind == k] { (k) } }
                            }
                        }
                    }
                    div.row {
                        label { "Resource type" input type="text" name="resource_type" value=(r.resource_type) placeholder="ticket" required; }
                        label { "Resource id" input type="text" name="resource_id" value=(r.resource_id) placeholder="4411" required; }
                        label { "Classification"
                            select name="classification" {
                                option value="" selected[r.classification.is_empty()] { "none (restricted)" }
                                @for c in Classification::ALL { option value=(c.as_str()) selected[r.classification == c.as_str()] { (c.as_str()) } }
                            }
                        }
                    }
                    label { "Context (JSON object)" textarea name="context" rows="3" placeholder="{\"environment\": \"production\", \"risk\": 0}" { (r.context) } }
                    button.primary type="submit" { "Evaluate" }
                }
            }
        }
    };
    view::layout("Policy", Some(v), Nav::Policy, body)
}

fn outcome(result: &Result<Outcome, (&'static str, String)>) -> Markup {
    html! {
        section.card.result {
            h2 { "Result" }
            @match result {
                Err((code, message)) => {
                    p.error role="alert" { (message) " " span.code { "(" (code) ")" } }
                }
                Ok(o) => {
                    p.verdict { "A real request would get: " (badge(outcome_word(o.verdict.outcome))) " " code { (o.verdict.outcome.reason()) } }
                    ol.steps {
                        @for s in &o.steps {
                            li class=(if s.ok { "ok" } else { "bad" }) { b { (s.what) } ": " (s.note) }
                        }
                        @if o.verdict.input.is_some() {
                            @let v = &o.verdict;
                            li class=(if v.allowed() { "ok" } else { "bad" }) {
                                b { "policies" } ": " (badge(outcome_word(v.outcome))) " " code { (v.outcome.reason()) }
                                @if !v.policies.is_empty() { " by " @for (i, p) in v.policies.iter().enumerate() { @if i > 0 { ", " } code { (p) } } }
                                " (set " code { (v.policy_version) } ")"
                                @if !v.obligations.is_empty() {
                                    ul { @for ob in &v.obligations { li { "obligation " code { (ob.kind) } " from " code { (ob.policy) } @if !ob.value.is_empty() { ": " (ob.value) } } } }
                                }
                                @if !v.policy_errors.is_empty() {
                                    ul.errors { @for e in &v.policy_errors { li { (e) } } }
                                }
                            }
                            @if let Some(s) = &v.shadow {
                                li.shadow { b { "shadow set" } ": " (badge(shadow_word(s))) " " code { (s.reason) } " (set " code { (s.version) } ", not enforced)" }
                            }
                        }
                    }
                    @if o.synthetic_task { p.muted { "No task was named, so the intent ceiling was taken to cover exactly this request." } }
                }
            }
        }
    }
}
