//! Delegation (RFC 8693 token exchange with a mandate as the subject token): an agent hands
//! part of its task to another agent. The subject token is the parent's mandate, the actor token
//! the child agent's attestation, `authorization_details` the sub-intent.
//!
//! The child's mandate can only narrow: its actions, resources and classification lie within
//! the parent's granted intent, it acts for the same person, it expires no later than the
//! parent, and the chain is recorded in nested `act` claims (the acting agent outermost, the
//! root agent as `sub`) and in the store (`parent_id`, `root_id`, `depth`). The checks, in order,
//! each refusing with its own stable code and nothing stored:
//!
//! 1. the form: an actor token of type JWT; the audience; the sub-intent is a valid intent;
//! 2. the parent mandate verifies with this server's keys (`invalid_grant`, the token's code);
//! 3. the parent may act right now: its task live, its agent active, every task above it live
//!    (`invalid_grant`, `task_revoked`, `task_expired`, …);
//! 4. the depth stays within `max_delegation_depth` (`delegation_depth_exceeded`);
//! 5. the sub-intent is an attenuation of the parent's (`intent_wider`, naming the field);
//! 6. the actor token attests an active agent (the same checks as opening a task; its `jti` is
//!    consumed even when a later check refuses);
//! 7. that agent is not already in the chain (`delegation_cycle`);
//! 8. policy lets the child agent open the task (`task.open`, with the chain);
//!
//! then the task is stored and its mandate issued as for any task.

use mandate_token::VerifiedMandate;

use super::*;

/// Answers a delegation request: the child's mandate and task id, or why not.
pub(super) async fn delegate(
    state: &AppState,
    form: &TokenExchangeForm,
    subject_token: &str,
) -> Result<TokenExchangeResponse, OAuthFailure> {
    let actor_token = form.actor_token.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        OAuthFailure::invalid_request("delegation needs `actor_token`: the attestation of the agent to delegate to", "missing_parameter")
    })?;
    match form.actor_token_type.as_deref() {
        Some(TOKEN_TYPE_JWT) => {}
        Some(other) => {
            return Err(OAuthFailure::invalid_request(
                format!("actor token type `{}` is not supported; use `{TOKEN_TYPE_JWT}`", crate::error::short(other)),
                "unsupported_token_type",
            ));
        }
        None => return Err(OAuthFailure::invalid_request("`actor_token_type` is required with `actor_token`", "missing_parameter")),
    }
    check_target(state, form)?;
    let (requested, intent, lifetime) = requested_intent(form.authorization_details.as_deref())?;

    let parent = match crate::pipeline::verified_mandate(state, subject_token) {
        Ok(m) => m,
        Err(e) => {
            let message = format!("the subject token is not a valid mandate of this server: {e}");
            return Err(refuse(state, None, OAuthFailure::invalid_grant(message, e.code())).await);
        }
    };
    let claims = parent.claims();
    if let Err(reason) = crate::pipeline::may_act_now(state, &parent).await {
        let message = format!("task `{}` cannot delegate: {}", claims.task_id, why_not(reason));
        return Err(refuse(state, Some(&parent), OAuthFailure::invalid_grant(message, reason.as_str())).await);
    }

    let max = state.settings.max_delegation_depth;
    let depth = claims.depth.saturating_add(1);
    if depth > max {
        let message = if max == 0 {
            "delegation is turned off on this server (`max_delegation_depth` is 0)".to_owned()
        } else {
            format!("task `{}` is at delegation depth {}; this server allows at most {max}", claims.task_id, claims.depth)
        };
        return Err(refuse(state, Some(&parent), OAuthFailure::invalid_request(message, "delegation_depth_exceeded")).await);
    }

    let now_secs = state.clock.now_secs();
    let remaining = claims.exp - now_secs;
    let wider = |message: String| {
        OAuthFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_authorization_details",
            format!("the sub-intent is wider than task `{}` granted: {message}", claims.task_id),
            Some("intent_wider"),
        )
    };
    let intent = match parent.intent().attenuate(intent) {
        Ok(i) => i,
        Err(w) => return Err(refuse(state, Some(&parent), wider(w.to_string())).await),
    };
    if let Some(asked) = lifetime
        && i64::try_from(asked).unwrap_or(i64::MAX) > remaining
    {
        let message = format!("lifetime_seconds `{asked}` is beyond the parent's remaining lifetime of {remaining} s");
        return Err(refuse(state, Some(&parent), wider(message)).await);
    }

    let (child, token_reused) = attest(state, actor_token).await?;
    let chain = claims.chain_with_actor();
    let child_id = child.spiffe_id.as_str();
    if chain.iter().any(|a| a == child_id) {
        let message = format!("agent `{}` is already in the delegation chain ({})", child.name, chain.join(" → "));
        return Err(refuse(state, Some(&parent), OAuthFailure::invalid_request(message, "delegation_cycle")).await);
    }
    let Some(parent_task) = state.store.get_task(&claims.task_id).await? else {
        let message = format!("task `{}` cannot delegate: it is not known", claims.task_id);
        return Err(refuse(state, Some(&parent), OAuthFailure::invalid_grant(message, "task_unknown")).await);
    };

    let opening = Opening {
        token_reused,
        task_id: new_id("task"),
        intent,
        requested,
        now_secs,
        exp: claims.exp.min(now_secs + task_lifetime(state, lifetime)),
        delegation: Some(Delegation {
            parent_task_id: claims.task_id.clone(),
            root_task_id: parent_task.root_id,
            depth,
            sub: claims.sub.clone(),
            act: Actor { sub: child_id.to_owned(), act: claims.act.clone().map(Box::new) },
            chain,
            delegated_by: claims.agent.clone(),
            parent: TaskContext {
                id: claims.task_id.clone(),
                intent: parent.intent().clone(),
                depth: claims.depth,
                chain: claims.delegators(),
            },
        }),
        agent: child,
    };
    let decision = may_open(state, &opening).await?;
    issue(state, opening, decision).await
}

/// After the child task is stored: its parent is still live in the store. A revocation of the
/// parent that ran while the child was being opened may have read the parent's descendants
/// before the child existed; if so the parent has ended by now, and the child is ended here.
/// (A decision for the child is refused either way: the pipeline checks every task above it.)
pub(super) async fn parent_still_live(state: &AppState, child: &str, parent: &str) -> Result<(), OAuthFailure> {
    let status = match state.store.get_task(parent).await {
        Ok(Some(t)) => t.status,
        Ok(None) => TaskStatus::Revoked,
        Err(e) => {
            let _ = tasks::end_many(state, vec![child.to_owned()], TaskStatus::Revoked, "system", "parent task unreadable").await;
            return Err(e.into());
        }
    };
    if status == TaskStatus::Live {
        return Ok(());
    }
    let reason = format!("parent task `{parent}` ended while delegating");
    tasks::end_many(state, vec![child.to_owned()], TaskStatus::Revoked, "system", &reason).await.map_err(|e| {
        tracing::error!(error = %e.message, "could not end a task whose parent ended");
        OAuthFailure::unavailable()
    })?;
    let code = match status {
        TaskStatus::Completed => "task_completed",
        TaskStatus::Expired => "task_expired",
        _ => "task_revoked",
    };
    Err(OAuthFailure::invalid_grant(format!("task `{parent}` cannot delegate: it ended ({})", status.as_str()), code))
}

/// A refused delegation, audited as `task.open_denied` on the parent task (when the subject
/// token is a mandate of this server), so the root task's evidence holds it.
async fn refuse(state: &AppState, parent: Option<&VerifiedMandate>, failure: OAuthFailure) -> OAuthFailure {
    let reason = failure.body.mandate_error.clone().unwrap_or_else(|| failure.body.error.clone());
    let message = failure.body.error_description.clone().unwrap_or_default();
    let claims = parent.map(|p| p.claims());
    let actor = claims.map_or_else(|| "anonymous".to_owned(), |c| format!("agent:{}", c.agent));
    let details = json!({
        "reason": reason,
        "message": message,
        "delegation": claims.map(|c| json!({ "parent_task_id": c.task_id, "depth": c.depth.saturating_add(1) })),
    });
    let ev = state.event(kinds::TASK_OPEN_DENIED, &actor, claims.map(|c| c.agent.as_str()), claims.map(|c| c.task_id.as_str()), details);
    match state.record(ev).await {
        Ok(_) => failure,
        Err(e) => OAuthFailure::server_error(e),
    }
}

/// Words for why a mandate's task may not act ([`crate::pipeline::may_act`]'s reasons).
fn why_not(reason: mandate_pdp::DenyReason) -> &'static str {
    use mandate_pdp::DenyReason as R;
    match reason {
        R::TaskRevoked => "it (or a task it was delegated from) was revoked",
        R::TaskCompleted => "it was completed",
        R::TaskExpired => "it has expired",
        R::AgentDisabled => "its agent is disabled",
        R::TaskUnknown => "it is not known",
        _ => "it may not act",
    }
}
