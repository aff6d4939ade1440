//! The approvals queue: every call a policy holds for a person, shown as the exact call it is
//! bound to (action, resource, arguments, agent, task), with approve and deny; and what was
//! decided recently. Deciding goes through `approvals::decide`, as the API does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use mandate_core::{Approval, ApprovalStatus, Role};
use maud::{Markup, html};

use super::pages::session;
use super::view::{self, Nav, badge, csrf_field, seg, short, time, time_or_dash};
use super::{Viewer, error_page, guard_post};
use crate::approvals;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Most pending approvals shown.
const PENDING_LIMIT: usize = 200;
/// Most decided approvals shown.
const RECENT_LIMIT: usize = 50;

/// `GET /console/approvals`.
pub async fn page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let v = session!(state, headers);
    let pending = match approvals::list(&state, Some(ApprovalStatus::Pending), PENDING_LIMIT).await {
        Ok(p) => p,
        Err(e) => return error_page(Some(&v), &e),
    };
    let recent = match approvals::list(&state, None, RECENT_LIMIT + PENDING_LIMIT).await {
        Ok(r) => r.into_iter().filter(|a| a.status != ApprovalStatus::Pending).take(RECENT_LIMIT).collect::<Vec<_>>(),
        Err(e) => return error_page(Some(&v), &e),
    };
    let now = state.clock.now_ms();
    let body = html! {
        div.head {
            h1 { "Approvals" }
            p.sub { "Calls a policy holds for a person. An approval allows the identical call once, before it expires; a denial refuses it." }
        }
        h2 { "Waiting (" (pending.len()) ")" }
        @if pending.is_empty() {
            p.empty { "Nothing is waiting for a decision." }
        }
        @for a in &pending { (card(&v, a, now)) }
        h2.spaced { "Decided recently" }
        @if recent.is_empty() {
            p.empty { "No approval has been decided yet." }
        } @else {
            table.grid {
                thead { tr { th { "Call" } th { "Agent" } th { "Task" } th { "Status" } th { "By" } th { "Comment" } th { "Decided" } th { "Used" } } }
                tbody {
                    @for a in &recent {
                        tr {
                            td { code { (a.action) } " " span.muted { (a.resource_type) ":" (a.resource_id) } }
                            td { a href={ "/console/agents/" (seg(&a.agent)) } { (a.agent) } }
                            td { a href={ "/console/tasks/" (seg(&a.task_id)) } title=(a.task_id) { code { (short(&a.task_id)) } } }
                            td { (badge(a.status.as_str())) }
                            td { (a.decided_by_label.as_deref().unwrap_or("—")) }
                            td.purpose { (a.comment.as_deref().unwrap_or("")) }
                            td.when { (time_or_dash(a.decided_at_ms)) }
                            td.when { (time_or_dash(a.used_at_ms)) }
                        }
                    }
                }
            }
        }
    };
    super::html(StatusCode::OK, view::layout("Approvals", Some(&v), Nav::Approvals, body))
}

/// One pending call, exactly as it will be allowed if approved.
fn card(v: &Viewer, a: &Approval, now: i64) -> Markup {
    let minutes = (a.expires_at_ms - now).max(0) / 60_000;
    let arguments = match &a.arguments {
        serde_json::Value::Null => None,
        args => Some(serde_json::to_string_pretty(args).unwrap_or_default()),
    };
    html! {
        article.approval id={ "approval-" (a.id) } {
            p.call { (a.action) " → " (a.resource_type) ":" (a.resource_id)
                @if let Some(c) = &a.classification { " " span.badge { (c) } }
            }
            dl.kv {
                dt { "Agent" } dd { a href={ "/console/agents/" (seg(&a.agent)) } { (a.agent) } }
                dt { "Task" } dd { a href={ "/console/tasks/" (seg(&a.task_id)) } { code { (a.task_id) } } }
                dt { "Arguments" } dd {
                    @match &arguments {
                        Some(text) => pre { (text) },
                        None => span.muted { "none" },
                    }
                }
                dt { "Arguments digest" } dd { code { (a.arguments_digest) } }
                dt { "Held by" } dd { @for (i, p) in a.policies.iter().enumerate() { @if i > 0 { ", " } code { (p) } } }
                dt { "Requested" } dd { (time(a.created_at_ms)) }
                dt { "Expires" } dd {
                    (time(a.expires_at_ms))
                    @if a.expires_at_ms > now { " (in " (minutes) " min)" } @else { " " (badge("expired")) }
                }
                dt { "Approval" } dd { code { (a.id) } }
            }
            @if v.may_decide() && a.expires_at_ms > now {
                form method="post" action={ "/console/approvals/" (seg(&a.id)) "/decide" } {
                    (csrf_field(v))
                    label { "Comment (recorded with your decision)" input type="text" name="comment" maxlength="1024" placeholder="checked with the customer"; }
                    button.good type="submit" name="decision" value="approve" { "Approve this call" }
                    button.danger type="submit" name="decision" value="deny" { "Deny" }
                }
            } @else if !v.may_decide() {
                p.muted { "Only an approver or an admin can decide." }
            }
        }
    }
}

/// `POST /console/approvals/{id}/decide` (approver, admin): `decision` is `approve` or `deny`.
pub async fn decide(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri, Path(id): Path<String>, body: Bytes) -> Response {
    let (v, form) = match guard_post(&state, &headers, &uri, &body, &[Role::Approver], "decide approvals").await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let approve = match form.get("decision") {
        "approve" => true,
        "deny" => false,
        other => {
            return error_page(
                Some(&v),
                &ApiError::invalid(format!("decision `{}` is not `approve` or `deny`", crate::error::short(other))),
            );
        }
    };
    let caller = Caller { token_id: v.token_id.clone(), role: v.role, label: v.label.clone() };
    match approvals::decide(&state, &id, approve, &caller, form.get("comment")).await {
        Ok(a) => {
            let msg = if approve {
                format!("Approved `{}` on `{}:{}`: the agent's identical call is allowed once.", a.action, a.resource_type, a.resource_id)
            } else {
                format!("Denied `{}` on `{}:{}`.", a.action, a.resource_type, a.resource_id)
            };
            state.console.set_flash(&v.hash, msg);
            Redirect::to("/console/approvals").into_response()
        }
        Err(e) => error_page(Some(&v), &e),
    }
}
