//! The console's read pages: agents, one agent, tasks, one task (its chain and evidence).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use mandate_core::{Agent, Task, TaskStatus};
use mandate_store::TaskFilter;
use maud::{Markup, html};

use super::view::{self, Nav, badge, csrf_field, seg, short, time, time_or_dash};
use super::{Viewer, error_page, query_param};
use crate::error::ApiError;
use crate::state::AppState;

/// Most tasks a table shows.
const TABLE_LIMIT: usize = 200;
/// Most tasks of one delegation tree shown as its chain.
const TREE_LIMIT: usize = 1000;

macro_rules! try_page {
    ($v:expr, $e:expr) => {
        match $e {
            Ok(x) => x,
            Err(e) => return error_page(Some(&$v), &ApiError::from(e)),
        }
    };
}

macro_rules! session {
    ($state:expr, $headers:expr) => {
        match super::viewer(&$state, &$headers, true).await {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}
pub(crate) use session;

/// `GET /console`, `/console/agents`.
pub async fn agents(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let v = session!(state, headers);
    let agents = try_page!(v, state.store.list_agents().await);
    let live = try_page!(v, live_counts(&state).await);
    let active = agents.iter().filter(|a| a.status == mandate_core::AgentStatus::Active).count();
    let live_total: usize = live.values().sum();
    let body = html! {
        div.head {
            h1 { "Agents" }
            p.sub { (agents.len()) " registered · " (active) " active · " (live_total) " live tasks" }
        }
        @if agents.is_empty() {
            p.empty { "No agents are registered yet. Register one with " code { "mandate agent register" } "." }
        } @else {
            table.grid {
                thead { tr { th { "Agent" } th { "Owner" } th { "Purpose" } th { "Status" } th.num { "Live tasks" } th { "Last seen" } th {} } }
                tbody {
                    @for a in &agents {
                        @let n = live.get(a.name.as_str()).copied().unwrap_or(0);
                        tr {
                            td { a href={ "/console/agents/" (seg(a.name.as_str())) } { b { (a.name.as_str()) } } }
                            td { (a.owner) }
                            td.purpose { (a.purpose) }
                            td { (badge(a.status.as_str())) }
                            td.num {
                                @if n > 0 { a href={ "/console/tasks?agent=" (seg(a.name.as_str())) "&status=live" } { (n) } } @else { span.muted { "0" } }
                            }
                            td.when { (time_or_dash(a.last_seen_ms)) }
                            td.actions { (disable_button(&v, a, n)) }
                        }
                    }
                }
            }
        }
    };
    super::html(StatusCode::OK, view::layout("Agents", Some(&v), Nav::Agents, body))
}

/// `GET /console/agents/{name}`.
pub async fn agent(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let v = session!(state, headers);
    let Some(agent) = try_page!(v, state.store.get_agent(&name).await) else {
        return error_page(Some(&v), &ApiError::not_found("agent", &name));
    };
    let filter = TaskFilter { agent: Some(name.clone()), status: None, root: None, limit: TABLE_LIMIT };
    let tasks = try_page!(v, state.store.list_tasks(&filter).await);
    let live = tasks.iter().filter(|t| t.status == TaskStatus::Live).count();
    let body = html! {
        div.head {
            p.crumbs { a href="/console/agents" { "Agents" } " / " }
            h1 { (agent.name.as_str()) " " (badge(agent.status.as_str())) }
            p.sub { (agent.purpose) }
        }
        div.cols {
            section.card {
                h2 { "Identity" }
                dl.kv {
                    dt { "SPIFFE ID" } dd { code { (agent.spiffe_id.as_str()) } }
                    dt { "Owner" } dd { (agent.owner) }
                    dt { "Purpose" } dd { (agent.purpose) }
                    dt { "Attests with" } dd { (if agent.public_jwk.is_some() { "its registered key" } else { "a trusted external issuer" }) }
                    dt { "Registered" } dd { (time(agent.created_at_ms)) }
                    dt { "Last seen" } dd { (time_or_dash(agent.last_seen_ms)) }
                    @for (k, val) in &agent.attributes {
                        dt { "Attribute " code { (k) } } dd { (val) }
                    }
                }
            }
            section.card {
                h2 { "Kill switch" }
                @if agent.status == mandate_core::AgentStatus::Active {
                    p { "Disabling the agent refuses its next request everywhere and revokes its " (live) " live task(s) and every task delegated from them." }
                    (disable_button(&v, &agent, live))
                    @if !v.may_admin() { p.muted { "Only an admin can disable an agent." } }
                } @else {
                    p { "This agent is disabled: every request it makes is refused. " "Enable it again with " code { "mandate agent enable " (agent.name.as_str()) } "." }
                }
            }
        }
        section {
            h2 { "Tasks" }
            (task_table(&v, &tasks, false))
        }
    };
    super::html(StatusCode::OK, view::layout(agent.name.as_str(), Some(&v), Nav::Agents, body))
}

/// `GET /console/tasks?agent=&status=`.
pub async fn tasks(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let v = session!(state, headers);
    let agent = query_param(&uri, "agent");
    let status_text = query_param(&uri, "status");
    let status = match status_text.as_str() {
        "" => None,
        s => match TaskStatus::parse(s) {
            Some(st) => Some(st),
            None => {
                let e = ApiError::invalid(format!(
                    "status `{}` is not one of `live`, `completed`, `revoked`, `expired`",
                    crate::error::short(s)
                ));
                return error_page(Some(&v), &e);
            }
        },
    };
    let filter = TaskFilter { agent: (!agent.is_empty()).then(|| agent.clone()), status, root: None, limit: TABLE_LIMIT };
    let tasks = try_page!(v, state.store.list_tasks(&filter).await);
    let agents = try_page!(v, state.store.list_agents().await);
    let body = html! {
        div.head {
            h1 { "Tasks" }
            p.sub { "Live and recent tasks, newest first (at most " (TABLE_LIMIT) ")." }
        }
        form.filters method="get" action="/console/tasks" {
            label { "Agent "
                select name="agent" {
                    option value="" selected[agent.is_empty()] { "any" }
                    @for a in &agents {
                        option value=(a.name.as_str()) selected[a.name.as_str() == agent] { (a.name.as_str()) }
                    }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" selected[status.is_none()] { "any" }
                    @for s in [TaskStatus::Live, TaskStatus::Completed, TaskStatus::Revoked, TaskStatus::Expired] {
                        option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
            @if !agent.is_empty() || status.is_some() { a.clear href="/console/tasks" { "clear" } }
        }
        (task_table(&v, &tasks, true))
    };
    super::html(StatusCode::OK, view::layout("Tasks", Some(&v), Nav::Tasks, body))
}

/// `GET /console/tasks/{id}`: the task, its chain of agents, and the evidence timeline of it
/// and every task delegated from it, with the trail's verification.
pub async fn task(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let v = session!(state, headers);
    let Some(task) = try_page!(v, state.store.get_task(&id).await) else {
        return error_page(Some(&v), &ApiError::not_found("task", &id));
    };
    let mut tree = try_page!(
        v,
        state.store.list_tasks(&TaskFilter { root: Some(task.root_id.clone()), limit: TREE_LIMIT, ..TaskFilter::default() }).await
    );
    // A tree larger than the limit loses its oldest tasks first: keep the path from the root.
    let mut up = Some(task.id.clone());
    while let Some(id) = up.take() {
        if tree.len() > TREE_LIMIT + 64 {
            break;
        }
        let t = match tree.iter().find(|t| t.id == id) {
            Some(t) => t.clone(),
            None => match try_page!(v, state.store.get_task(&id).await) {
                Some(t) => {
                    tree.push(t.clone());
                    t
                }
                None => break,
            },
        };
        up = t.parent_id;
    }
    let mut ids = vec![task.id.clone()];
    ids.extend(try_page!(v, state.store.descendant_task_ids(&task.id).await));
    // Verified first, read after: an event appended in between shows as not yet verified.
    let verify = try_page!(v, crate::verify::verify_trail(state.store.as_ref(), &state.keys.all_public_keys()).await);
    let events = try_page!(v, state.store.audit_for_tasks(&ids).await);
    let live_below = tree.iter().filter(|t| ids.contains(&t.id) && t.id != task.id && t.status == TaskStatus::Live).count();
    let body = html! {
        div.head {
            p.crumbs { a href="/console/tasks" { "Tasks" } " / " }
            h1 { "Task " code.id { (task.id) } " " (badge(task.status.as_str())) }
            p.sub { (task.intent.purpose) }
        }
        div.cols {
            section.card {
                h2 { "Intent" }
                dl.kv {
                    dt { "Agent" } dd { a href={ "/console/agents/" (seg(task.agent.as_str())) } { (task.agent.as_str()) } }
                    dt { "Actions" } dd { (task.intent.actions.join(", ")) }
                    dt { "Resources" } dd { (task.intent.resources.join(", ")) }
                    dt { "Up to" } dd { (task.intent.max_classification.as_str()) }
                    @if let Some(obo) = &task.intent.on_behalf_of { dt { "On behalf of" } dd { (obo) } }
                    dt { "Opened" } dd { (time(task.created_at_ms)) }
                    dt { "Expires" } dd { (time(task.expires_at_ms)) }
                    @if let Some(end) = &task.ended {
                        dt { "Ended" } dd { (badge(end.status.as_str())) " " (time(end.at_ms)) }
                        dt { "By" } dd { code { (end.by) } }
                        dt { "Why" } dd { (end.reason) }
                    }
                }
            }
            section.card {
                h2 { "Chain of agents" }
                (chain(&tree, &task))
                @if task.status == TaskStatus::Live && v.may_admin() {
                    form.revoke method="post" action={ "/console/tasks/" (seg(&task.id)) "/revoke" } {
                        (csrf_field(&v))
                        label for="reason" { "Reason (optional)" }
                        input #reason type="text" name="reason" maxlength="512" placeholder="revoked from the console";
                        button.danger type="submit" {
                            @if live_below > 0 { "Revoke this task and " (live_below) " delegated" } @else { "Revoke this task" }
                        }
                        p.muted { "Every mandate of the chain below this task is refused from its next request on." }
                    }
                }
                @if task.parent_id.is_some() {
                    p.muted { "To stop the whole chain, revoke its root task: " a href={ "/console/tasks/" (seg(&task.root_id)) } { code { (short(&task.root_id)) } } "." }
                }
            }
        }
        (super::timeline::render(&events, &verify, &ids, &tree))
    };
    super::html(StatusCode::OK, view::layout("Task", Some(&v), Nav::Tasks, body))
}

/// Live tasks per agent.
async fn live_counts(state: &AppState) -> Result<HashMap<String, usize>, mandate_store::StoreError> {
    let filter = TaskFilter { status: Some(TaskStatus::Live), limit: 100_000, ..TaskFilter::default() };
    let mut counts = HashMap::new();
    for t in state.store.list_tasks(&filter).await? {
        *counts.entry(t.agent.as_str().to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

fn disable_button(v: &Viewer, a: &Agent, live: usize) -> Markup {
    html! {
        @if v.may_admin() && a.status == mandate_core::AgentStatus::Active {
            form.inline method="post" action={ "/console/agents/" (seg(a.name.as_str())) "/disable" } {
                (csrf_field(v))
                button.danger type="submit" title={ "disable and revoke " (live) " live task(s)" } { "Disable" }
            }
        }
    }
}

fn task_table(v: &Viewer, tasks: &[Task], show_agent: bool) -> Markup {
    html! {
        @if tasks.is_empty() {
            p.empty { "No tasks match." }
        } @else {
            table.grid {
                thead { tr {
                    th { "Task" } @if show_agent { th { "Agent" } } th { "Purpose" } th { "Status" } th { "Delegated from" } th { "Opened" } th { "Expires / ended" } th {}
                } }
                tbody {
                    @for t in tasks {
                        tr {
                            td { a href={ "/console/tasks/" (seg(&t.id)) } title=(t.id) { code { (short(&t.id)) } } }
                            @if show_agent { td { a href={ "/console/agents/" (seg(t.agent.as_str())) } { (t.agent.as_str()) } } }
                            td.purpose { (t.intent.purpose) }
                            td { (badge(t.status.as_str())) }
                            td {
                                @if let Some(p) = &t.parent_id { a href={ "/console/tasks/" (seg(p)) } title=(p) { code { (short(p)) } } " · depth " (t.depth) } @else { span.muted { "—" } }
                            }
                            td.when { (time(t.created_at_ms)) }
                            td.when { (time(t.ended.as_ref().map_or(t.expires_at_ms, |e| e.at_ms))) }
                            td.actions {
                                @if v.may_admin() && t.status == TaskStatus::Live {
                                    form.inline method="post" action={ "/console/tasks/" (seg(&t.id)) "/revoke" } {
                                        (csrf_field(v))
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The delegation tree the task belongs to, from its root, the task itself marked.
fn chain(tree: &[Task], current: &Task) -> Markup {
    let mut children: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in tree {
        if let Some(p) = &t.parent_id {
            children.entry(p.as_str()).or_default().push(t);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|t| t.created_at_ms);
    }
    let root = tree.iter().find(|t| t.id == current.root_id);
    html! {
        @match root {
            Some(r) => ul.tree { (node(r, &children, &current.id, 0)) },
            None => p.muted { "The root task of this chain is not known here." },
        }
    }
}

fn node(t: &Task, children: &BTreeMap<&str, Vec<&Task>>, current: &str, depth: usize) -> Markup {
    html! {
        li class=[(t.id == current).then_some("current")] {
            span.node {
                a href={ "/console/agents/" (seg(t.agent.as_str())) } { b { (t.agent.as_str()) } }
                " · "
                a href={ "/console/tasks/" (seg(&t.id)) } title=(t.id) { code { (short(&t.id)) } }
                " " (badge(t.status.as_str()))
                @if t.id == current { " " span.here { "this task" } }
            }
            // Delegation depth is bounded by policy; the cut-off only guards the page.
            @if let Some(kids) = children.get(t.id.as_str()).filter(|_| depth < 32) {
                ul { @for k in kids { (node(k, children, current, depth + 1)) } }
            }
        }
    }
}
