//! Human approval as a policy obligation.
//!
//! A decision whose determining permit is annotated `@approval("required")` is not an allow:
//! it answers `approval_required` with an `approval_id`. The approval request is bound to the
//! exact call — the task and its mandate, the action, the resource and the SHA-256 of the
//! canonical JSON of `context.arguments` — and expires. An approver (an `approver` or `admin`
//! token) approves or denies it once. The identical request made after the approval is allowed
//! exactly once (the use is atomic in the store); any other request — other arguments, another
//! resource, the same call a second time — asks again.
//!
//! An identical request while one is pending gets the same approval id, so a client that
//! retries does not flood the approvers' queue.

use std::time::Duration;

use mandate_audit::{NewEvent, canonical_json, kinds};
use mandate_core::canonical::{Canonical, CanonicalError, Limits};
use mandate_core::{Approval, ApprovalStatus, Role, TaskStatus};
use mandate_store::ApprovalFilter;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pipeline::Verdict;
use crate::state::{AppState, new_id};
use crate::webhook::Webhook;

/// Longest a caller may wait on one approval in one request.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Longest comment an approver may leave.
pub const MAX_COMMENT: usize = 1024;
/// Arguments larger than this (as canonical JSON) are bound by digest but not kept for display.
const MAX_KEPT_ARGUMENTS: usize = 16 * 1024;
/// How often a waiter looks at the store even without a local announcement (another replica
/// may have decided).
const POLL: Duration = Duration::from_millis(500);

/// The server's approval machinery: who waits on which approval, and the webhook.
pub struct Approvals {
    changed: broadcast::Sender<String>,
    pub(crate) webhook: Webhook,
}

impl Approvals {
    pub fn new(webhook: Webhook) -> Self {
        Approvals { changed: broadcast::channel(256).0, webhook }
    }

    /// Wakes whoever waits on approval `id` here: another replica changed it.
    pub(crate) fn announce(&self, id: &str) {
        self.changed(id);
    }

    fn changed(&self, id: &str) {
        // No receiver is fine: nobody waits.
        let _ = self.changed.send(id.to_owned());
    }
}

/// What an approval-required decision is about, kept on its verdict until [`settle`] binds it
/// to an approval.
#[derive(Debug, Clone)]
pub struct ApprovalAsk {
    pub task_id: String,
    pub agent: String,
    pub mandate_jti: String,
    /// `context.arguments`, whole and canonical: what the approver is shown.
    pub arguments: Value,
    /// SHA-256 of the arguments' RFC 8785 form (the `arguments_sha256` of the tool call's
    /// evidence).
    pub arguments_digest: String,
    /// SHA-256 of the RFC 8785 form of the whole context the PEP sent: for an HTTP call its
    /// method, normalized path, every query pair and the body's digest; for an MCP call the
    /// tool, upstream and arguments.
    pub context_digest: String,
}

/// How large a context an approval may be bound to.
const BINDING_LIMITS: Limits = Limits { max_depth: 32, max_bytes: 4 << 20 };

impl ApprovalAsk {
    /// The ask of a mandate's call with this context. `Err` when the context has no canonical
    /// form (nested too deep, too large, an integer a double cannot hold): such a call cannot
    /// be bound, so it cannot be approved.
    pub fn new(claims: &mandate_token::MandateClaims, context: Option<&Map<String, Value>>) -> Result<Self, CanonicalError> {
        let arguments = context.and_then(|m| m.get("arguments")).cloned().unwrap_or(Value::Null);
        let arguments = Canonical::new(&arguments, BINDING_LIMITS)?;
        let context = Canonical::new(&context.map(|m| Value::Object(m.clone())).unwrap_or(Value::Null), BINDING_LIMITS)?;
        Ok(ApprovalAsk {
            task_id: claims.task_id.clone(),
            agent: claims.agent.clone(),
            mandate_jti: claims.jti.clone(),
            arguments_digest: arguments.digest().to_owned(),
            arguments: arguments.into_value(),
            context_digest: context.digest().to_owned(),
        })
    }
}

/// What "the identical request" means, as one digest: the task and mandate, the action, the
/// resource, and the canonical digests of the arguments and of the whole context.
fn binding(ask: &ApprovalAsk, v: &Verdict) -> String {
    let bound = json!({
        "task": ask.task_id,
        "mandate": ask.mandate_jti,
        "action": v.action,
        "resource": { "type": v.resource.0, "id": v.resource.1 },
        "arguments": ask.arguments_digest,
        "context": ask.context_digest,
    });
    hex::encode(Sha256::digest(canonical_json(&bound).as_bytes()))
}

/// Binds every approval-required verdict to an approval: uses a granted one (the verdict
/// becomes an allow), joins a pending one, or opens a new one. Returns the audit events to make
/// durable with the decisions. A store failure turns the verdict into an `approval_unavailable`
/// deny.
pub async fn settle(state: &AppState, verdicts: &mut [Verdict], actor: &str) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for v in verdicts.iter_mut() {
        let Some(ask) = v.approval.take() else { continue };
        if v.outcome() != mandate_pdp::Outcome::ApprovalRequired {
            continue;
        }
        if let Err(e) = settle_one(state, v, &ask, actor, &mut events).await {
            tracing::error!(error = %e.message, "approval store unavailable: denied");
            v.deny(mandate_pdp::DenyReason::ApprovalUnavailable);
            v.approval_id = None;
        }
    }
    events
}

async fn settle_one(state: &AppState, v: &mut Verdict, ask: &ApprovalAsk, actor: &str, events: &mut Vec<NewEvent>) -> Result<(), ApiError> {
    let now = state.clock.now_ms();
    let digest = ask.arguments_digest.clone();
    let bound = binding(ask, v);
    if let Some(open) = state.store.open_approval_by_binding(&bound, now).await? {
        match open.status {
            ApprovalStatus::Approved => {
                if let Some(used) = state.store.use_approval(&open.id, &v.decision_id, now).await? {
                    v.allow();
                    v.approval_id = Some(used.id.clone());
                    events.push(state.event(
                        kinds::APPROVAL_USED,
                        &format!("agent:{}", ask.agent),
                        Some(&ask.agent),
                        Some(&ask.task_id),
                        json!({ "approval_id": used.id, "decision_id": v.decision_id, "action": v.action,
                                "resource": { "type": v.resource.0, "id": v.resource.1 },
                                "approved_by": used.decided_by, "approver": used.decided_by_label }),
                    ));
                    state.approvals.changed(&used.id);
                    return Ok(());
                }
                // Used by a concurrent identical call a moment ago: this one asks anew.
            }
            _ => {
                v.approval_id = Some(open.id);
                return Ok(());
            }
        }
    }
    let task_expiry = state.registry.task(&ask.task_id).map_or(now, |t| t.expires_at_ms);
    let ttl = i64::try_from(state.settings.approval_ttl.as_millis()).unwrap_or(i64::MAX);
    let kept = if canonical_json(&ask.arguments).len() <= MAX_KEPT_ARGUMENTS {
        ask.arguments.clone()
    } else {
        json!("[too large to show; bound by its digest]")
    };
    let approval = Approval {
        id: new_id("apr"),
        task_id: ask.task_id.clone(),
        agent: ask.agent.clone(),
        mandate_jti: ask.mandate_jti.clone(),
        action: v.action.clone(),
        resource_type: v.resource.0.clone(),
        resource_id: v.resource.1.clone(),
        classification: v.classification().map(|c| c.as_str().to_owned()),
        arguments: kept,
        arguments_digest: digest,
        binding: bound,
        decision_id: v.decision_id.clone(),
        policies: v.policies().to_vec(),
        status: ApprovalStatus::Pending,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(ttl).min(task_expiry),
        decided_by: None,
        decided_by_label: None,
        decided_at_ms: None,
        comment: None,
        used_at_ms: None,
        used_by_decision: None,
    };
    state.store.insert_approval(&approval).await?;
    v.approval_id = Some(approval.id.clone());
    events.push(state.event(
        kinds::APPROVAL_REQUESTED,
        actor,
        Some(&ask.agent),
        Some(&ask.task_id),
        json!({ "approval_id": approval.id, "decision_id": v.decision_id, "action": v.action,
                "resource": { "type": v.resource.0, "id": v.resource.1 }, "arguments_digest": approval.arguments_digest,
                "policies": v.policies(), "expires_at_ms": approval.expires_at_ms }),
    ));
    state.approvals.webhook.announce(state, &approval);
    Ok(())
}

/// Approvals, newest first.
pub async fn list(state: &AppState, status: Option<ApprovalStatus>, limit: usize) -> Result<Vec<Approval>, ApiError> {
    Ok(state.store.list_approvals(&ApprovalFilter { status, task: None, limit }).await?)
}

/// One approval.
pub async fn get(state: &AppState, id: &str) -> Result<Approval, ApiError> {
    state.store.get_approval(id).await?.ok_or_else(|| ApiError::not_found("approval", id))
}

/// Waits until the approval is no longer pending (or its time is up), at most `wait`.
pub async fn wait(state: &AppState, id: &str, wait: Duration) -> Result<Approval, ApiError> {
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    let mut rx = state.approvals.changed.subscribe();
    loop {
        let a = get(state, id).await?;
        if a.status != ApprovalStatus::Pending || a.expires_at_ms <= state.clock.now_ms() {
            return Ok(a);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(a);
        }
        let nap = (deadline - now).min(POLL);
        tokio::select! {
            r = rx.recv() => {
                // A lagged receiver just looks again.
                if let Ok(changed) = r && changed != id {
                    continue;
                }
            }
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// An approver's yes or no. Refused (and nothing changed) when the caller may not approve,
/// the approval is unknown, already decided, expired, its task has ended, or — with
/// `approval_forbid_owner` — the approver is the agent's owner.
pub async fn decide(state: &AppState, id: &str, approve: bool, caller: &Caller, comment: &str) -> Result<Approval, ApiError> {
    if !matches!(caller.role, Role::Approver | Role::Admin) {
        return Err(ApiError::forbidden(format!("a `{}` token may not decide approvals", caller.role)));
    }
    let comment = comment.trim();
    if comment.len() > MAX_COMMENT {
        return Err(ApiError::invalid(format!("`comment` may be at most {MAX_COMMENT} bytes")));
    }
    let now = state.clock.now_ms();
    let current = get(state, id).await?;
    refuse_unless_open(&current, now)?;
    match state.registry.task(&current.task_id) {
        Some(t) if t.status == TaskStatus::Live && t.expires_at_ms > now => {}
        Some(t) => {
            return Err(ApiError::coded(
                axum::http::StatusCode::CONFLICT,
                "task_not_live",
                format!("task `{}` has ended ({}): its approvals can no longer be decided", current.task_id, t.status.as_str()),
            ));
        }
        None => return Err(ApiError::not_found("task", &current.task_id)),
    }
    if state.settings.approval_forbid_owner
        && let Some(agent) = state.registry.agent(&current.agent)
        && agent.owner.eq_ignore_ascii_case(caller.label.trim())
    {
        return Err(ApiError::forbidden(format!(
            "`{}` owns agent `{}` and may not decide its approvals (approval_forbid_owner)",
            caller.label, current.agent
        ))
        .with_code("approver_is_owner"));
    }
    let to = if approve { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
    let Some((after, moved)) = state.store.decide_approval(id, to, &caller.actor(), &caller.label, comment, now).await? else {
        return Err(ApiError::not_found("approval", id));
    };
    if !moved {
        // Lost a race with another approver or the expiry.
        refuse_unless_open(&after, now)?;
        return Err(ApiError::internal(format!("approval `{id}` did not move and is still open")));
    }
    let kind = if approve { kinds::APPROVAL_APPROVED } else { kinds::APPROVAL_DENIED };
    let ev = state.event(
        kind,
        &caller.actor(),
        Some(&after.agent),
        Some(&after.task_id),
        json!({ "approval_id": after.id, "approver": caller.label, "role": caller.role.as_str(), "comment": after.comment,
                "action": after.action, "resource": { "type": after.resource_type, "id": after.resource_id },
                "arguments_digest": after.arguments_digest, "decision_id": after.decision_id }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    state.approvals.changed(id);
    Ok(after)
}

fn refuse_unless_open(a: &Approval, now: i64) -> Result<(), ApiError> {
    let conflict = |code: &str, m: String| ApiError::coded(axum::http::StatusCode::CONFLICT, code, m);
    match a.status {
        ApprovalStatus::Pending if a.expires_at_ms > now => Ok(()),
        ApprovalStatus::Pending | ApprovalStatus::Expired => {
            Err(conflict("approval_expired", format!("approval `{}` has expired; the agent must ask again", a.id)))
        }
        s => Err(conflict("approval_decided", format!("approval `{}` was already decided ({})", a.id, s.as_str()))),
    }
}

/// Expires approvals whose time has come, and audits each.
pub async fn sweep(state: &AppState) -> Result<usize, ApiError> {
    let expired = state.store.expire_approvals(state.clock.now_ms()).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let events = expired
        .iter()
        .map(|a| {
            state.event(
                kinds::APPROVAL_EXPIRED,
                "system",
                Some(&a.agent),
                Some(&a.task_id),
                json!({ "approval_id": a.id, "action": a.action, "decided": a.decided_at_ms.is_some() }),
            )
        })
        .collect();
    state.audit.record_all(events).await.map_err(ApiError::internal)?;
    for a in &expired {
        state.approvals.changed(&a.id);
    }
    Ok(expired.len())
}
