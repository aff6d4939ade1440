//! A task's evidence timeline: every audit event of the task and of the tasks delegated from
//! it, in trail order, each rendered by kind (intent, decisions, tool calls, approvals,
//! delegations, the end), with the hash-chain verification of the whole trail on top.

use std::collections::HashMap;

use mandate_audit::{DecisionDetails, SealedEvent, ToolCallDetails, kinds};
use mandate_core::Task;
use mandate_proto::admin::AuditVerifyResponse;
use maud::{Markup, html};
use serde_json::Value;

use super::view::{badge, kv, pairs, plain, seg, short, time};

/// The phase of a task's life an event belongs to (its colour on the timeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Intent,
    Decision,
    ToolCall,
    Approval,
    Delegation,
    End,
    Other,
}

impl Phase {
    fn of(e: &SealedEvent, delegated: bool) -> Phase {
        match e.kind.as_str() {
            kinds::TASK_OPENED if delegated => Phase::Delegation,
            kinds::TASK_OPENED | kinds::TOKEN_ISSUED => Phase::Intent,
            kinds::DECISION => Phase::Decision,
            kinds::TOOL_CALL | kinds::SECRET_ECHO_REDACTED => Phase::ToolCall,
            kinds::TASK_REVOKED | kinds::TASK_COMPLETED | kinds::TASK_EXPIRED => Phase::End,
            k if k.starts_with("approval.") => Phase::Approval,
            k if k.contains("delegat") => Phase::Delegation,
            _ => Phase::Other,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Phase::Intent => "ev-intent",
            Phase::Decision => "ev-decision",
            Phase::ToolCall => "ev-tool",
            Phase::Approval => "ev-approval",
            Phase::Delegation => "ev-delegation",
            Phase::End => "ev-end",
            Phase::Other => "ev-other",
        }
    }
}

/// The verification banner, a summary by phase, and one row per event. `ids[0]` is the task
/// the page is about; `tree` its whole delegation tree (for agent names and parents).
pub fn render(events: &[SealedEvent], verify: &AuditVerifyResponse, ids: &[String], tree: &[Task]) -> Markup {
    let by_id: HashMap<&str, &Task> = tree.iter().map(|t| (t.id.as_str(), t)).collect();
    let this = ids.first().map_or("", String::as_str);
    let delegated = |e: &SealedEvent| e.task.as_deref().and_then(|t| by_id.get(t)).is_some_and(|t| t.parent_id.is_some());
    let phases: Vec<Phase> = events.iter().map(|e| Phase::of(e, delegated(e))).collect();
    let count = |p: Phase| phases.iter().filter(|x| **x == p).count();
    let decisions: Vec<&SealedEvent> = events.iter().filter(|e| e.kind == kinds::DECISION).collect();
    let allowed = decisions.iter().filter(|e| DecisionDetails::of(e).is_some_and(|d| d.decision)).count();
    let verified_to = if verify.ok { verify.last_seq } else { verify.bad_seq.map(|b| b.saturating_sub(1)) };
    html! {
        section.timeline {
            div.head {
                h2 { "Evidence timeline" }
                p.sub {
                    "This task" @if ids.len() > 1 { " and the " (ids.len() - 1) " task(s) delegated from it" } ": "
                    (events.len()) " events."
                }
            }
            (banner(verify))
            ul.summary {
                li.ev-intent { b { (count(Phase::Intent)) } " intent" }
                li.ev-decision { b { (decisions.len()) } " decisions (" (allowed) " allowed, " (decisions.len() - allowed) " not)" }
                li.ev-tool { b { (count(Phase::ToolCall)) } " tool calls" }
                li.ev-approval { b { (count(Phase::Approval)) } " approval events" }
                li.ev-delegation { b { (count(Phase::Delegation)) } " delegations" }
                li.ev-end { b { (count(Phase::End)) } " ended" }
            }
            @if events.is_empty() {
                p.empty { "No events are recorded for this task." }
            } @else {
                ol.events {
                    @for (e, phase) in events.iter().zip(&phases) {
                        (row(e, *phase, this, &by_id, verified_to))
                    }
                }
            }
        }
    }
}

fn banner(verify: &AuditVerifyResponse) -> Markup {
    html! {
        @if verify.ok {
            div.verify.ok {
                (badge("verified"))
                " The whole trail is intact: events 1 to " (verify.last_seq.unwrap_or(0)) " are hash-chained without a gap"
                @match verify.checkpoints {
                    0 => { " (no checkpoint signed yet)." }
                    1 => { ", and the signed checkpoint agrees." }
                    n => { ", and all " (n) " signed checkpoints agree." }
                }
                @if let Some(h) = &verify.last_hash { " Head " code { (short(h)) } "." }
            }
        } @else {
            div.verify.broken role="alert" {
                (badge("broken"))
                " The trail does not verify"
                @if let Some(seq) = verify.bad_seq { " at event " b { (seq) } }
                ": " (verify.message.as_deref().unwrap_or("")) " "
                @if let Some(code) = &verify.code { span.code { "(" (code) ")" } }
                " Events before it are verified; this one and those after it are not."
            }
        }
    }
}

fn row(e: &SealedEvent, phase: Phase, this: &str, by_id: &HashMap<&str, &Task>, verified_to: Option<u64>) -> Markup {
    let d = e.details();
    let verified = verified_to.is_some_and(|to| e.seq <= to);
    let other_task = e.task.as_deref().filter(|t| *t != this);
    html! {
        li class={ "event " (phase.class()) } {
            div.meta {
                span.seq title=(e.hash) {
                    "#" (e.seq) " "
                    @if verified { span.chain.ok title="hash-chained and verified" { "✓ verified" } } @else { span.chain title="recorded after the verification ran, or after a break" { "not verified" } }
                }
                span.when { (time(e.ts_ms)) }
            }
            div.what {
                div.title {
                    (title(e, &d, phase))
                    @if let Some(t) = other_task {
                        " " span.in { "in "
                            @if let Some(task) = by_id.get(t) { b { (task.agent.as_str()) } " · " }
                            a href={ "/console/tasks/" (seg(t)) } title=(t) { code { (short(t)) } }
                        }
                    }
                }
                (body(e, &d))
                div.by { "by " code { (e.actor) } }
                details {
                    summary { "record" }
                    pre { (serde_json::to_string_pretty(&e.to_json()).unwrap_or_default()) }
                }
            }
        }
    }
}

fn title(e: &SealedEvent, d: &Value, phase: Phase) -> Markup {
    let s = |k: &str| d.get(k).map(plain).unwrap_or_default();
    html! {
        @match e.kind.as_str() {
            kinds::TASK_OPENED if phase == Phase::Delegation => { "Delegated task opened" }
            kinds::TASK_OPENED => { "Task opened" }
            kinds::TOKEN_ISSUED => { "Mandate issued" }
            kinds::DECISION => {
                @let decision = DecisionDetails::from_details(d);
                @let outcome = match &decision {
                    Some(x) if x.reason == "approval_required" => "approval required",
                    Some(x) if x.decision => "allow",
                    _ => "deny",
                };
                "Decision " (badge(outcome)) " " code { (decision.map(|x| x.action).unwrap_or_default()) }
            }
            kinds::TOOL_CALL => {
                @let call = ToolCallDetails::from_details(d).unwrap_or_default();
                "Tool call " code { (call.tool) }
                @if call.forwarded { " " (badge("forwarded")) } @else { " " (badge("refused")) }
            }
            kinds::SECRET_ECHO_REDACTED => {
                "Secret echo " (badge("redacted")) " " code { (s("tool")) }
            }
            kinds::TASK_REVOKED => { "Task " (badge("revoked")) }
            kinds::TASK_COMPLETED => { "Task " (badge("completed")) }
            kinds::TASK_EXPIRED => { "Task " (badge("expired")) }
            kinds::AGENT_DISABLED => { "Agent " (badge("disabled")) }
            k => {
                @if let Some(rest) = k.strip_prefix("approval.") { "Approval " (badge(rest)) } @else { code { (k) } }
            }
        }
    }
}

fn body(e: &SealedEvent, d: &Value) -> Markup {
    match e.kind.as_str() {
        kinds::TASK_OPENED => {
            // The intent and the rest of the details, as one list.
            let mut all = d.get("intent").and_then(Value::as_object).cloned().unwrap_or_default();
            if let Some(rest) = d.as_object() {
                all.extend(rest.iter().filter(|(k, _)| *k != "intent").map(|(k, v)| (k.clone(), v.clone())));
            }
            kv(
                &Value::Object(all),
                &[
                    ("purpose", "Purpose"),
                    ("actions", "Actions"),
                    ("resources", "Resources"),
                    ("max_classification", "Up to"),
                    ("on_behalf_of", "On behalf of"),
                    ("parent_task_id", "Delegated from"),
                    ("delegated_by", "Delegated by"),
                    ("depth", "Depth"),
                    ("chain", "Chain"),
                    ("policies", "Allowed by"),
                    ("policy_version", "Policy set"),
                    ("attestation", "Attested by"),
                ],
            )
        }
        kinds::TOKEN_ISSUED => kv(d, &[("jti", "Token id"), ("aud", "Audience"), ("scope", "Scope"), ("kid", "Signing key")]),
        kinds::DECISION => match DecisionDetails::from_details(d) {
            Some(x) => {
                let resource = if x.resource.is_empty() { String::new() } else { format!("{}:{}", x.resource.kind, x.resource.id) };
                let obligations: Vec<String> = x.obligations.iter().map(|o| format!("{} {} ({})", o.kind, o.value, o.policy)).collect();
                pairs(&[
                    ("Resource", resource),
                    ("Classification", x.classification.unwrap_or_default()),
                    ("Reason", x.reason),
                    ("Error", x.error_code.unwrap_or_default()),
                    ("Policies", x.policies.join(", ")),
                    ("Policy set", x.policy_version.unwrap_or_default()),
                    ("Obligations", obligations.join("; ")),
                    ("Decision id", x.decision_id),
                ])
            }
            // Not a decision record (no verdict): what it holds, as it is.
            None => kv(d, &[("reason", "Reason"), ("decision_id", "Decision id")]),
        },
        kinds::TOOL_CALL => {
            let x = ToolCallDetails::from_details(d).unwrap_or_default();
            // A record without a latency (one a remote gateway left it out of) shows none.
            let latency = if x.latency_us == 0 { String::new() } else { x.latency_us.to_string() };
            pairs(&[
                ("Upstream", x.upstream),
                ("Action", x.action),
                ("Kind", x.kind),
                ("Decision", x.reason),
                ("Outcome", x.result),
                ("Latency (µs)", latency),
                ("Arguments digest", x.arguments_sha256.unwrap_or_default()),
                ("Decision id", x.decision_id.unwrap_or_default()),
            ])
        }
        kinds::SECRET_ECHO_REDACTED => {
            let mut all = d.as_object().cloned().unwrap_or_default();
            if let Some(sec) = d.get("secret") {
                let text =
                    format!("{} v{}", sec.get("name").map(plain).unwrap_or_default(), sec.get("version").map(plain).unwrap_or_default());
                all.insert("secret".into(), Value::String(text));
            }
            kv(
                &Value::Object(all),
                &[
                    ("upstream", "Upstream"),
                    ("secret", "Secret"),
                    ("place", "Found in"),
                    ("matches", "Matches"),
                    ("encodings", "Encodings"),
                    ("decision_id", "Decision id"),
                ],
            )
        }
        kinds::TASK_REVOKED | kinds::TASK_COMPLETED | kinds::TASK_EXPIRED => {
            kv(d, &[("reason", "Why"), ("cascade_from", "Because it ended")])
        }
        k if k.starts_with("approval.") => {
            let mut all = d.as_object().cloned().unwrap_or_default();
            if let Some(r) = d.get("resource") {
                let text = format!("{}:{}", r.get("type").map(plain).unwrap_or_default(), r.get("id").map(plain).unwrap_or_default());
                all.insert("resource".into(), Value::String(text));
            }
            if let Some(ms) = d.get("expires_at_ms").and_then(Value::as_i64) {
                all.insert("expires_at_ms".into(), Value::String(time(ms)));
            }
            kv(
                &Value::Object(all),
                &[
                    ("action", "Action"),
                    ("resource", "Resource"),
                    ("approver", "Approver"),
                    ("comment", "Comment"),
                    ("arguments_digest", "Arguments digest"),
                    ("policies", "Held by"),
                    ("expires_at_ms", "Expires"),
                    ("approval_id", "Approval"),
                    ("decision_id", "Decision id"),
                ],
            )
        }
        _ => kv(d, &[("reason", "Reason"), ("child_task", "Delegated task"), ("agent", "Agent"), ("to", "To")]),
    }
}
