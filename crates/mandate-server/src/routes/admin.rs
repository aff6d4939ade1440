//! The admin API: agents, tasks, API tokens, trusted issuers, policies, entities, keys.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use mandate_audit::kinds;
use mandate_core::{Agent, AgentName, AgentStatus, ClaimRule, Issuer, Role, SpiffeId, Task, TaskStatus};
use mandate_policy::EntityData;
use mandate_proto::admin::{
    AddIssuerRequest, AgentStatusChange, AgentView, ClaimRuleView, CreateTokenRequest, CreateTokenResponse, EndTaskRequest,
    EndTaskResponse, EntitiesLoadResponse, IssuerView, KeyRotateResponse, PolicyStatus, RegisterAgentRequest, ReloadResponse, ServerInfo,
    TaskView, TokenView,
};
use mandate_store::TaskFilter;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::extract::{ApiJson, optional_json};
use crate::state::AppState;
use crate::{policy_reload, tasks};

const READERS: &[Role] = &[Role::Auditor, Role::Approver];

pub async fn info(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<ServerInfo>, ApiError> {
    let caller = auth::require(&state, &headers, &[Role::Auditor, Role::Approver, Role::Pep], "read server info").await?;
    Ok(Json(ServerInfo {
        issuer: state.settings.issuer.clone(),
        trust_domain: state.settings.trust_domain.as_str().to_owned(),
        audience: state.settings.audience.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        role: caller.role.as_str().to_owned(),
    }))
}

// ---- agents ----

pub async fn register_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterAgentRequest>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let caller = auth::require(&state, &headers, &[], "register agents").await?;
    let name = AgentName::parse(req.name.trim())?;
    let owner = req.owner.trim();
    if owner.is_empty() {
        return Err(ApiError::coded(StatusCode::BAD_REQUEST, "owner_required", "an agent needs a named human owner (`owner`)"));
    }
    let purpose = req.purpose.trim();
    if purpose.is_empty() {
        return Err(ApiError::coded(StatusCode::BAD_REQUEST, "purpose_required", "an agent needs a documented purpose (`purpose`)"));
    }
    if owner.len() > 256 || purpose.len() > 1024 {
        return Err(ApiError::invalid("`owner` may be at most 256 bytes and `purpose` at most 1024"));
    }
    if req.attributes.len() > 64 || req.attributes.iter().any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256) {
        return Err(ApiError::invalid("`attributes`: at most 64, keys 1 to 64 bytes, values at most 256 bytes"));
    }
    if let Some(jwk) = &req.public_jwk {
        mandate_token::validate_agent_jwk(jwk)
            .map_err(|e| ApiError::coded(StatusCode::BAD_REQUEST, e.code(), format!("`public_jwk`: {e}")))?;
    }
    let now = state.clock.now_ms();
    let agent = Agent {
        spiffe_id: SpiffeId::for_agent(&state.settings.trust_domain, &name),
        name,
        owner: owner.to_owned(),
        purpose: purpose.to_owned(),
        status: AgentStatus::Active,
        attributes: req.attributes,
        public_jwk: req.public_jwk,
        created_at_ms: now,
        updated_at_ms: now,
        last_seen_ms: None,
    };
    state.store.insert_agent(&agent).await.map_err(|e| match e {
        mandate_store::StoreError::Conflict(_) => {
            ApiError::coded(StatusCode::CONFLICT, "agent_exists", format!("agent `{}` is already registered", agent.name))
        }
        other => other.into(),
    })?;
    state.registry.put_agent(agent.clone());
    let ev = state.event(
        kinds::AGENT_REGISTERED,
        &caller.actor(),
        Some(agent.name.as_str()),
        None,
        json!({ "spiffe_id": agent.spiffe_id.as_str(), "owner": agent.owner, "purpose": agent.purpose,
                "attributes": agent.attributes, "attestation": if agent.public_jwk.is_some() { "registered_key" } else { "external_issuer" } }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(agent_view(&agent, None))))
}

pub async fn list_agents(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Vec<AgentView>>, ApiError> {
    auth::require(&state, &headers, READERS, "list agents").await?;
    let agents = state.store.list_agents().await?;
    Ok(Json(agents.iter().map(|a| agent_view(a, None)).collect()))
}

pub async fn get_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    auth::require(&state, &headers, READERS, "read agents").await?;
    let agent = state.store.get_agent(&name).await?.ok_or_else(|| ApiError::not_found("agent", &name))?;
    let live = state.store.live_task_ids_of_agent(&name).await?.len();
    Ok(Json(agent_view(&agent, Some(live))))
}

pub async fn disable_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AgentStatusChange>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "disable agents").await?;
    let revoked = tasks::disable_agent(&state, &name, &caller.actor()).await?;
    let agent = state.store.get_agent(&name).await?.ok_or_else(|| ApiError::not_found("agent", &name))?;
    Ok(Json(AgentStatusChange { agent: agent_view(&agent, Some(0)), revoked_tasks: revoked }))
}

pub async fn enable_agent(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AgentStatusChange>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "enable agents").await?;
    let now = state.clock.now_ms();
    if !state.store.set_agent_status(&name, AgentStatus::Active, now).await? {
        return Err(ApiError::not_found("agent", &name));
    }
    state.registry.set_agent_status(&name, AgentStatus::Active, now);
    let ev = state.event(kinds::AGENT_ENABLED, &caller.actor(), Some(&name), None, json!({}));
    state.record(ev).await.map_err(ApiError::internal)?;
    let agent = state.store.get_agent(&name).await?.ok_or_else(|| ApiError::not_found("agent", &name))?;
    Ok(Json(AgentStatusChange { agent: agent_view(&agent, None), revoked_tasks: Vec::new() }))
}

fn agent_view(a: &Agent, live_tasks: Option<usize>) -> AgentView {
    AgentView {
        name: a.name.as_str().to_owned(),
        spiffe_id: a.spiffe_id.as_str().to_owned(),
        owner: a.owner.clone(),
        purpose: a.purpose.clone(),
        status: a.status.as_str().to_owned(),
        attributes: a.attributes.clone(),
        attestation: if a.public_jwk.is_some() { "registered_key" } else { "external_issuer" }.to_owned(),
        created_at_ms: a.created_at_ms,
        updated_at_ms: a.updated_at_ms,
        last_seen_ms: a.last_seen_ms,
        live_tasks,
    }
}

// ---- tasks ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    agent: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

pub async fn list_tasks(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TaskQuery>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    auth::require(&state, &headers, READERS, "list tasks").await?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(TaskStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(format!("status `{}` is not one of `live`, `completed`, `revoked`, `expired`", crate::error::short(s)))
        })?),
    };
    let filter = TaskFilter { agent: q.agent, status, root: None, limit: q.limit.unwrap_or(100).clamp(1, 1000) };
    let tasks = state.store.list_tasks(&filter).await?;
    Ok(Json(tasks.iter().map(task_view).collect()))
}

pub async fn get_task(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<TaskView>, ApiError> {
    auth::require(&state, &headers, READERS, "read tasks").await?;
    let task = state.store.get_task(&id).await?.ok_or_else(|| ApiError::not_found("task", &id))?;
    Ok(Json(task_view(&task)))
}

pub async fn revoke_task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EndTaskResponse>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "revoke tasks").await?;
    let body: EndTaskRequest = optional_json(&body)?;
    end(&state, &caller, &id, TaskStatus::Revoked, body).await
}

/// Completing is open to an admin, or to the agent itself presenting the task's mandate.
pub async fn complete_task(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EndTaskResponse>, ApiError> {
    let body: EndTaskRequest = optional_json(&body)?;
    if let Some(token) = auth::bearer(&headers)
        && let Ok(m) = state.keys.signing().verifier.verify(token, state.clock.now_secs())
    {
        if m.claims().task_id != id {
            return Err(ApiError::forbidden("a mandate may complete only its own task"));
        }
        let agent_caller = Caller { token_id: format!("agent:{}", m.claims().agent), role: Role::Pep, label: m.claims().agent.clone() };
        return end(&state, &agent_caller, &id, TaskStatus::Completed, body).await;
    }
    let caller = auth::require(&state, &headers, &[], "complete tasks").await?;
    end(&state, &caller, &id, TaskStatus::Completed, body).await
}

async fn end(
    state: &AppState,
    caller: &Caller,
    id: &str,
    status: TaskStatus,
    body: EndTaskRequest,
) -> Result<Json<EndTaskResponse>, ApiError> {
    let task = state.store.get_task(id).await?.ok_or_else(|| ApiError::not_found("task", id))?;
    if task.status != TaskStatus::Live {
        return Err(ApiError::coded(
            StatusCode::CONFLICT,
            "task_not_live",
            format!("task `{id}` has already ended ({})", task.status.as_str()),
        ));
    }
    let actor = if caller.token_id.starts_with("agent:") { caller.token_id.clone() } else { caller.actor() };
    let reason = body
        .reason
        .unwrap_or_else(|| if status == TaskStatus::Completed { "completed".into() } else { "revoked by an administrator".into() });
    if reason.len() > 512 {
        return Err(ApiError::invalid("`reason` may be at most 512 bytes"));
    }
    let ended = tasks::end_task(state, id, status, &actor, &reason).await?;
    let task = state.store.get_task(id).await?.ok_or_else(|| ApiError::not_found("task", id))?;
    Ok(Json(EndTaskResponse { task: task_view(&task), ended }))
}

pub fn task_view(t: &Task) -> TaskView {
    TaskView {
        id: t.id.clone(),
        agent: t.agent.as_str().to_owned(),
        status: t.status.as_str().to_owned(),
        purpose: t.intent.purpose.clone(),
        actions: t.intent.actions.clone(),
        resources: t.intent.resources.clone(),
        max_classification: t.intent.max_classification.as_str().to_owned(),
        on_behalf_of: t.intent.on_behalf_of.clone(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
        parent_id: t.parent_id.clone(),
        root_id: t.root_id.clone(),
        depth: t.depth,
        ended_at_ms: t.ended.as_ref().map(|e| e.at_ms),
        ended_by: t.ended.as_ref().map(|e| e.by.clone()),
        ended_reason: t.ended.as_ref().map(|e| e.reason.clone()),
    }
}

// ---- API tokens ----

pub async fn create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreateTokenResponse>), ApiError> {
    let caller = auth::require(&state, &headers, &[], "create API tokens").await?;
    let role: Role = req.role.parse()?;
    if req.label.len() > 128 {
        return Err(ApiError::invalid("`label` may be at most 128 bytes"));
    }
    let (token, secret) = state.create_api_token(role, &req.label).await?;
    let ev = state.event(
        kinds::API_TOKEN_CREATED,
        &caller.actor(),
        None,
        None,
        json!({ "id": token.id, "role": role.as_str(), "label": token.label }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(CreateTokenResponse { id: token.id, role: role.as_str().to_owned(), label: token.label, token: secret })))
}

pub async fn list_tokens(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Vec<TokenView>>, ApiError> {
    auth::require(&state, &headers, &[], "list API tokens").await?;
    let tokens = state.store.list_api_tokens().await?;
    Ok(Json(
        tokens
            .into_iter()
            .map(|t| TokenView {
                id: t.id,
                role: t.role.as_str().to_owned(),
                label: t.label,
                created_at_ms: t.created_at_ms,
                revoked_at_ms: t.revoked_at_ms,
            })
            .collect(),
    ))
}

pub async fn revoke_token(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let caller = auth::require(&state, &headers, &[], "revoke API tokens").await?;
    if !state.store.revoke_api_token(&id, state.clock.now_ms()).await? {
        return Err(ApiError::not_found("token", &id));
    }
    state.api_tokens.write().retain(|_, t| t.id != id);
    let ev = state.event(kinds::API_TOKEN_REVOKED, &caller.actor(), None, None, json!({ "id": id }));
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- trusted issuers ----

/// The longest `max_token_lifetime_secs` an issuer may be given: a day.
const MAX_TOKEN_LIFETIME_SECS: u64 = 86_400;

pub async fn add_issuer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AddIssuerRequest>,
) -> Result<(StatusCode, Json<IssuerView>), ApiError> {
    let caller = auth::require(&state, &headers, &[], "add trusted issuers").await?;
    if req.issuer.is_empty() || req.issuer.len() > 512 || req.issuer.starts_with("spiffe://") && req.issuer.contains("/agent/") {
        return Err(ApiError::invalid("`issuer` must be the issuer's `iss` value (1 to 512 bytes)"));
    }
    if req.audience.is_empty() {
        return Err(ApiError::invalid("`audience` is required: the `aud` the issuer's tokens carry for this server"));
    }
    if req.rules.is_empty() {
        return Err(ApiError::invalid("at least one claim rule is required to map tokens to agents"));
    }
    let rules = req.rules.iter().map(|r| ClaimRule::new(&r.claim, &r.pattern)).collect::<Result<Vec<_>, _>>()?;
    let jwks = match (req.jwks, &req.jwks_url) {
        (Some(j), None) => j,
        (None, Some(url)) => crate::jwks_fetch::fetch_jwks(&state.http, url)
            .await
            .map_err(|m| ApiError::coded(StatusCode::BAD_REQUEST, "jwks_unavailable", m))?,
        _ => return Err(ApiError::invalid("give exactly one of `jwks` and `jwks_url`")),
    };
    if let Some(secs) = req.max_token_lifetime_secs
        && !(1..=MAX_TOKEN_LIFETIME_SECS).contains(&secs)
    {
        return Err(ApiError::invalid(format!("`max_token_lifetime_secs` must be between 1 and {MAX_TOKEN_LIFETIME_SECS}, not {secs}")));
    }
    let issuer = Issuer {
        issuer: req.issuer,
        audience: req.audience,
        jwks,
        jwks_url: req.jwks_url,
        rules,
        created_at_ms: state.clock.now_ms(),
        max_token_lifetime_secs: req.max_token_lifetime_secs,
        allow_token_reuse: req.allow_token_reuse,
    };
    let verifier = mandate_token::ExternalVerifier::new(&issuer)
        .map_err(|e| ApiError::coded(StatusCode::BAD_REQUEST, e.code(), format!("`jwks`: {e}")))?;
    state.store.upsert_issuer(&issuer).await?;
    state.issuers.write().insert(issuer.issuer.clone(), Arc::new(verifier));
    let ev = state.event(
        kinds::ISSUER_ADDED,
        &caller.actor(),
        None,
        None,
        json!({ "issuer": issuer.issuer, "audience": issuer.audience, "jwks_url": issuer.jwks_url, "rules": issuer.rules,
                "max_token_lifetime_secs": issuer.max_token_lifetime_secs, "allow_token_reuse": issuer.allow_token_reuse }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(issuer_view(&issuer))))
}

pub async fn list_issuers(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Vec<IssuerView>>, ApiError> {
    auth::require(&state, &headers, READERS, "list issuers").await?;
    Ok(Json(state.store.list_issuers().await?.iter().map(issuer_view).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerQuery {
    issuer: String,
}

pub async fn remove_issuer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<IssuerQuery>,
) -> Result<StatusCode, ApiError> {
    let caller = auth::require(&state, &headers, &[], "remove issuers").await?;
    if !state.store.delete_issuer(&q.issuer).await? {
        return Err(ApiError::not_found("issuer", &q.issuer));
    }
    state.issuers.write().remove(&q.issuer);
    let ev = state.event(kinds::ISSUER_REMOVED, &caller.actor(), None, None, json!({ "issuer": q.issuer }));
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

fn issuer_view(i: &Issuer) -> IssuerView {
    IssuerView {
        issuer: i.issuer.clone(),
        audience: i.audience.clone(),
        jwks_url: i.jwks_url.clone(),
        keys: i.jwks.get("keys").and_then(|k| k.as_array()).map_or(0, Vec::len),
        rules: i.rules.iter().map(|r| ClaimRuleView { claim: r.claim.clone(), pattern: r.pattern.clone() }).collect(),
        created_at_ms: i.created_at_ms,
        max_token_lifetime_secs: i.max_token_lifetime_secs,
        allow_token_reuse: i.allow_token_reuse,
    }
}

// ---- policies, entities, keys ----

pub async fn policy_status(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<PolicyStatus>, ApiError> {
    auth::require(&state, &headers, READERS, "read the policy set").await?;
    let current = state.policy.current();
    Ok(Json(PolicyStatus {
        version: current.version().to_owned(),
        policies: current.policy_ids(),
        source: Some(state.policy_source.clone()),
        shadow_version: state.policy.shadow().map(|s| s.version().to_owned()),
        entities: state.policy.entities().len(),
    }))
}

pub async fn reload_policies(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<ReloadResponse>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "reload policies").await?;
    Ok(Json(policy_reload::reload(&state, &caller.actor()).await))
}

pub async fn load_entities(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<EntitiesLoadResponse>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "load entities").await?;
    let current = state.policy.current();
    let data = EntityData::parse(&body, Some(&current)).map_err(|e| ApiError::coded(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let n = data.len();
    state.store.put_entities(&body).await?;
    state.policy.set_entities(data);
    let ev = state.event(kinds::ENTITIES_LOADED, &caller.actor(), None, None, json!({ "entities": n }));
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(Json(EntitiesLoadResponse { entities: n }))
}

pub async fn rotate_key(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<KeyRotateResponse>, ApiError> {
    let caller = auth::require(&state, &headers, &[], "rotate signing keys").await?;
    let overlap = i64::try_from((state.settings.max_task_ttl + state.settings.leeway).as_millis()).unwrap_or(i64::MAX);
    let (kid, previous_kid, retires) = match state.keys.rotate(state.clock.now_ms(), overlap).await {
        Ok(r) => r,
        Err(e @ crate::keys::KeyError::RotationRaced(_)) => {
            return Err(ApiError::coded(StatusCode::CONFLICT, "rotation_raced", e.to_string()));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let ev = state.event(
        kinds::KEY_ROTATED,
        &caller.actor(),
        None,
        None,
        json!({ "kid": kid, "previous_kid": previous_kid, "previous_retires_at_ms": retires }),
    );
    state.record(ev).await.map_err(ApiError::internal)?;
    Ok(Json(KeyRotateResponse { kid, previous_kid, previous_retires_at_ms: retires }))
}
