//! OAuth endpoints: token exchange (attestation → task mandate), introspection, revocation.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mandate_audit::kinds;
use mandate_core::{Agent, AgentStatus, Intent, IntentRequest, SpiffeId, Task, TaskStatus};
use mandate_policy::{ActionInput, ContextInput, DecisionInput, ResourceInput, TaskContext};
use mandate_proto::oauth::{
    GRANT_TOKEN_EXCHANGE, IntrospectionResponse, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TokenExchangeForm, TokenExchangeResponse,
};
use mandate_token::{Actor, AttestationRules, MandateClaims};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth;
use crate::error::OAuthFailure;
use crate::extract::OAuthForm;
use crate::state::{AppState, new_id};
use crate::tasks;

mod delegation;

/// `POST /oauth2/token`: RFC 8693 token exchange. The subject token is the agent's
/// attestation, or for delegation the parent's mandate (with the child's attestation as the
/// actor token); `authorization_details` is the task's intent. Answers a task mandate.
pub async fn token(State(state): State<Arc<AppState>>, OAuthForm(form): OAuthForm<TokenExchangeForm>) -> Response {
    match exchange(&state, form).await {
        Ok(resp) => {
            state.metrics.mandate("issued");
            let mut r = Json(resp).into_response();
            r.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            state.metrics.mandate("refused");
            e.into_response()
        }
    }
}

async fn exchange(state: &AppState, form: TokenExchangeForm) -> Result<TokenExchangeResponse, OAuthFailure> {
    match form.grant_type.as_deref() {
        Some(GRANT_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(OAuthFailure::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant type `{}` is not supported; use token exchange", crate::error::short(other)),
                Some("unsupported_grant_type"),
            ));
        }
        None => return Err(OAuthFailure::invalid_request("`grant_type` is required", "missing_parameter")),
    }
    let subject_token = form
        .subject_token
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| OAuthFailure::invalid_request("`subject_token` is required", "missing_parameter"))?;
    match form.subject_token_type.as_deref() {
        Some(TOKEN_TYPE_JWT) => {}
        Some(TOKEN_TYPE_ACCESS_TOKEN) => return delegation::delegate(state, &form, subject_token).await,
        Some(other) => {
            return Err(OAuthFailure::invalid_request(
                format!(
                    "subject token type `{}` is not supported; use `{TOKEN_TYPE_JWT}` (an attestation) or `{TOKEN_TYPE_ACCESS_TOKEN}` (a mandate, to delegate)",
                    crate::error::short(other)
                ),
                "unsupported_token_type",
            ));
        }
        None => return Err(OAuthFailure::invalid_request("`subject_token_type` is required", "missing_parameter")),
    }
    if form.actor_token.is_some() {
        return Err(OAuthFailure::invalid_request("`actor_token` is only used for delegation", "unexpected_actor_token"));
    }
    check_target(state, &form)?;
    let (requested, intent, lifetime) = requested_intent(form.authorization_details.as_deref())?;

    let (agent, token_reused) = attest(state, subject_token).await?;
    let now_secs = state.clock.now_secs();
    let opening = Opening {
        agent,
        token_reused,
        task_id: new_id("task"),
        intent,
        requested,
        now_secs,
        exp: now_secs + task_lifetime(state, lifetime),
        delegation: None,
    };
    let decision = may_open(state, &opening).await?;
    issue(state, opening, decision).await
}

/// The token type asked for and the audience or resource named, if any, are what this server
/// issues.
fn check_target(state: &AppState, form: &TokenExchangeForm) -> Result<(), OAuthFailure> {
    if let Some(t) = form.requested_token_type.as_deref()
        && t != TOKEN_TYPE_ACCESS_TOKEN
    {
        return Err(OAuthFailure::invalid_request(format!("only `{TOKEN_TYPE_ACCESS_TOKEN}` can be requested"), "unsupported_token_type"));
    }
    for target in [form.audience.as_deref(), form.resource.as_deref()].into_iter().flatten() {
        if target != state.settings.audience {
            return Err(OAuthFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                format!("mandates from this server are for audience `{}` only", state.settings.audience),
                Some("invalid_target"),
            ));
        }
    }
    Ok(())
}

/// The `agent_task` intent of `authorization_details`: as asked (for the trail), validated, and
/// the lifetime asked for.
fn requested_intent(raw: Option<&str>) -> Result<(IntentRequest, Intent, Option<u64>), OAuthFailure> {
    let requested = parse_intent(raw)?;
    let (intent, lifetime) = requested
        .clone()
        .validate()
        .map_err(|e| OAuthFailure::new(StatusCode::BAD_REQUEST, "invalid_authorization_details", e.to_string(), Some(e.code())))?;
    Ok((requested, intent, lifetime))
}

/// A task's lifetime in seconds: the one asked for, else the default, at most the maximum.
fn task_lifetime(state: &AppState, asked: Option<u64>) -> i64 {
    let max = i64::try_from(state.settings.max_task_ttl.as_secs()).unwrap_or(3600);
    let default = i64::try_from(state.settings.default_task_ttl.as_secs()).unwrap_or(600);
    asked.map_or(default, |l| i64::try_from(l).unwrap_or(i64::MAX)).min(max)
}

/// A task about to be opened, and everything its mandate, its record and its events need.
struct Opening {
    /// The agent that will act in the task.
    agent: Agent,
    /// The agent attested with a trusted issuer's token (without `jti`) that was already used.
    token_reused: bool,
    task_id: String,
    /// What the task is to be granted.
    intent: Intent,
    /// The intent as it was asked for, for the trail when the opening is refused.
    requested: IntentRequest,
    now_secs: i64,
    /// The task's expiry (seconds since the epoch).
    exp: i64,
    /// Where the task is delegated from; `None` for a task the agent opens itself.
    delegation: Option<Delegation>,
}

/// Where a delegated task comes from.
struct Delegation {
    parent_task_id: String,
    root_task_id: String,
    /// The new task's depth: the parent's plus one.
    depth: u32,
    /// The SPIFFE ID of the root task's agent: the `sub` of every mandate of the tree.
    sub: String,
    /// The new mandate's `act`: the acting agent outermost, the parent's actors nested.
    act: Actor,
    /// The SPIFFE IDs of the agents who delegated, root first (`depth` of them).
    chain: Vec<String>,
    /// The name of the agent that delegated (the parent mandate's acting agent).
    delegated_by: String,
    /// The parent task, as policy sees the task a request is made under.
    parent: TaskContext,
}

impl Opening {
    /// The task's lifetime from now, in seconds.
    fn lifetime_secs(&self) -> i64 {
        self.exp - self.now_secs
    }

    /// Who opens the task, for the trail: the agent itself, or the agent that delegates it.
    fn actor(&self) -> String {
        format!("agent:{}", self.delegation.as_ref().map_or(self.agent.name.as_str(), |d| d.delegated_by.as_str()))
    }
}

/// Policy decides whether the agent may open this task (`task.open`). A refusal is audited
/// and answered `policy_denied`.
async fn may_open(state: &AppState, o: &Opening) -> Result<mandate_policy::Decision, OAuthFailure> {
    let lifetime = u64::try_from(o.lifetime_secs()).unwrap_or(0);
    let mut resource = ResourceInput::task(o.task_id.clone(), &o.intent, lifetime);
    let mut task = None;
    if let Some(d) = &o.delegation {
        resource = resource.delegated_from(&d.parent_task_id, d.depth, &d.chain);
        task = Some(d.parent.clone());
    }
    let input = DecisionInput {
        principal: crate::pipeline::agent_principal(&o.agent),
        action: ActionInput { name: "task.open".into(), kind: None },
        resource,
        context: ContextInput { now_secs: o.now_secs, environment: state.settings.environment.clone(), risk: 0, task, extra: Map::new() },
    };
    let decision = state.policy.evaluate(&input).enforced;
    if decision.allowed() {
        return Ok(decision);
    }
    let mut details = json!({ "reason": decision.reason, "policies": decision.policies, "policy_version": decision.version,
                              "intent": o.requested });
    // A delegation refused is recorded on the parent task, so the root task's evidence has it.
    let (mut agent, mut task) = (o.agent.name.as_str(), None);
    if let (Some(d), Value::Object(m)) = (&o.delegation, &mut details) {
        m.insert("delegation".into(), json!({ "parent_task_id": d.parent_task_id, "depth": d.depth, "to": o.agent.name.as_str() }));
        (agent, task) = (d.delegated_by.as_str(), Some(d.parent_task_id.as_str()));
    }
    let ev = state.event(kinds::TASK_OPEN_DENIED, &o.actor(), Some(agent), task, details);
    state.record(ev).await.map_err(OAuthFailure::server_error)?;
    Err(OAuthFailure::new(
        StatusCode::BAD_REQUEST,
        "invalid_authorization_details",
        format!("policy does not let agent `{}` open this task ({})", o.agent.name, decision.reason),
        Some("policy_denied"),
    ))
}

/// Mints the task's mandate, stores the task, makes `task.opened` and `token.issued` durable,
/// and answers the mandate. Nothing is handed out that the trail does not know about.
async fn issue(state: &AppState, o: Opening, decision: mandate_policy::Decision) -> Result<TokenExchangeResponse, OAuthFailure> {
    let lifetime_secs = o.lifetime_secs();
    let granted = o.intent.to_authorization_detail(Some(u64::try_from(lifetime_secs).unwrap_or(0)));
    let jti = new_id("mdt");
    let spiffe_id = o.agent.spiffe_id.as_str().to_owned();
    let claims = MandateClaims {
        iss: state.settings.issuer.clone(),
        sub: o.delegation.as_ref().map_or_else(|| spiffe_id.clone(), |d| d.sub.clone()),
        aud: state.settings.audience.clone(),
        client_id: spiffe_id.clone(),
        iat: o.now_secs,
        nbf: o.now_secs,
        exp: o.exp,
        jti: jti.clone(),
        task_id: o.task_id.clone(),
        agent: o.agent.name.as_str().to_owned(),
        scope: MandateClaims::scope_for(&o.intent),
        authorization_details: vec![granted.clone()],
        act: o.delegation.as_ref().map(|d| d.act.clone()),
        parent_task_id: o.delegation.as_ref().map(|d| d.parent_task_id.clone()),
        depth: o.delegation.as_ref().map_or(0, |d| d.depth),
    };
    let signing = state.keys.signing();
    let token = signing.minter.mint(&claims).map_err(|e| match e.code() {
        "token_too_large" => OAuthFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_authorization_details",
            "the intent is too large to fit in a mandate; declare fewer or shorter actions and resources",
            Some("intent_too_large"),
        ),
        _ => OAuthFailure::server_error(e),
    })?;
    let task = Task {
        id: o.task_id.clone(),
        agent: o.agent.name.clone(),
        intent: o.intent.clone(),
        status: TaskStatus::Live,
        created_at_ms: state.clock.now_ms(),
        expires_at_ms: o.exp * 1000,
        mandate_jti: jti.clone(),
        parent_id: claims.parent_task_id.clone(),
        root_id: o.delegation.as_ref().map_or_else(|| o.task_id.clone(), |d| d.root_task_id.clone()),
        depth: claims.depth,
        ended: None,
    };
    state.store.insert_task(&task).await?;
    state.registry.put_task(&task);
    state.metrics.set_live_tasks(state.registry.live_task_count());
    let mut opened = json!({ "intent": granted, "policies": decision.policies, "policy_version": decision.version,
                             "spiffe_id": spiffe_id, "attestation": agent_attestation_kind(&o.agent) });
    if let (true, Value::Object(m)) = (o.token_reused, &mut opened) {
        // The issuer allows tokens without `jti`; this one was presented before.
        m.insert("attestation_reused".into(), json!(true));
    }
    if let (Some(d), Value::Object(m)) = (&o.delegation, &mut opened) {
        m.insert("parent_task_id".into(), json!(d.parent_task_id));
        m.insert("root_task_id".into(), json!(d.root_task_id));
        m.insert("depth".into(), json!(d.depth));
        m.insert("delegated_by".into(), json!(d.delegated_by));
        m.insert("chain".into(), json!(d.chain));
    }
    let mut issued = json!({ "jti": jti, "kid": signing.key.kid(), "exp": o.exp, "aud": state.settings.audience, "scope": claims.scope });
    if let (Some(act), Value::Object(m)) = (&claims.act, &mut issued) {
        m.insert("sub".into(), json!(claims.sub));
        m.insert("act".into(), json!(act));
    }
    let agent_name = o.agent.name.as_str();
    let events = vec![
        state.event(kinds::TASK_OPENED, &o.actor(), Some(agent_name), Some(&o.task_id), opened),
        state.event(kinds::TOKEN_ISSUED, "system", Some(agent_name), Some(&o.task_id), issued),
    ];
    if let Err(e) = state.audit.record_all(events).await {
        // Never hand out a mandate the trail does not know about.
        let _ = tasks::end_many(state, vec![o.task_id.clone()], TaskStatus::Revoked, "system", "audit unavailable").await;
        return Err(OAuthFailure::server_error(e));
    }
    if let Some(d) = &o.delegation {
        delegation::parent_still_live(state, &o.task_id, &d.parent_task_id).await?;
    }
    if let Err(e) = state.store.touch_agent(agent_name, state.clock.now_ms()).await {
        tracing::warn!(error = %e, "could not record when the agent was last seen");
    }
    Ok(TokenExchangeResponse {
        access_token: token,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: lifetime_secs,
        scope: claims.scope,
        task_id: o.task_id,
        authorization_details: vec![serde_json::to_value(&granted).unwrap_or(Value::Null)],
    })
}

fn agent_attestation_kind(agent: &Agent) -> &'static str {
    if agent.public_jwk.is_some() { "registered_key" } else { "external_issuer" }
}

fn parse_intent(raw: Option<&str>) -> Result<IntentRequest, OAuthFailure> {
    let bad = |m: String| OAuthFailure::new(StatusCode::BAD_REQUEST, "invalid_authorization_details", m, Some("invalid_intent"));
    let raw = raw.ok_or_else(|| bad("`authorization_details` is required: a JSON array holding one `agent_task` object".into()))?;
    let list: Vec<Value> = serde_json::from_str(raw).map_err(|e| bad(format!("`authorization_details` is not a JSON array: {e}")))?;
    let mut tasks: Vec<Value> =
        list.into_iter().filter(|v| v.get("type").and_then(Value::as_str) == Some(mandate_core::AGENT_TASK_TYPE)).collect();
    if tasks.len() != 1 {
        return Err(bad("`authorization_details` must hold exactly one object of type `agent_task`".into()));
    }
    let one = tasks.pop().unwrap_or(Value::Null);
    serde_json::from_value(one).map_err(|e| bad(format!("the `agent_task` object is not valid: {e}")))
}

/// Verifies the attestation and returns the active agent it proves, and whether the token was
/// used before (a trusted issuer's token without `jti`, which the issuer lets be reused).
/// Every refusal is audited.
async fn attest(state: &AppState, token: &str) -> Result<(Agent, bool), OAuthFailure> {
    let result = attest_inner(state, token).await;
    if let Err((code, agent, message)) = &result {
        let ev = state.event(
            kinds::ATTESTATION_REFUSED,
            agent.as_deref().map_or("anonymous".to_owned(), |a| format!("agent:{a}")).as_str(),
            agent.as_deref(),
            None,
            json!({ "reason": code, "message": message }),
        );
        state.record(ev).await.map_err(OAuthFailure::server_error)?;
    }
    result.map_err(|(code, _, message)| OAuthFailure::invalid_grant(message, &code))
}

type Refusal = (String, Option<String>, String);

async fn attest_inner(state: &AppState, token: &str) -> Result<(Agent, bool), Refusal> {
    let refuse = |code: &str, agent: Option<&str>, msg: String| (code.to_owned(), agent.map(str::to_owned), msg);
    let peeked = mandate_token::peek(token).map_err(|e| refuse(e.code(), None, format!("the subject token is not a valid JWT: {e}")))?;
    let iss = peeked.claims.get("iss").and_then(Value::as_str).unwrap_or_default().to_owned();
    let now = state.clock.now_secs();
    let leeway = state.settings.leeway_secs();
    let max_lifetime = i64::try_from(state.settings.max_attestation_lifetime.as_secs()).unwrap_or(300);
    let (agent_name, jti, exp, issuer_key) = if iss.starts_with("spiffe://") {
        // A registered key: the agent signs its own attestation.
        let id = SpiffeId::parse(&iss).map_err(|e| refuse("invalid_issuer", None, e.to_string()))?;
        if id.trust_domain() != state.settings.trust_domain.as_str() {
            return Err(refuse("foreign_trust_domain", None, format!("trust domain `{}` is not this server's", id.trust_domain())));
        }
        let name = id.agent_name().ok_or_else(|| refuse("unknown_agent", None, "the issuer is not an agent SPIFFE ID".into()))?;
        crate::sync::ensure_agent(state, name.as_str())
            .await
            .map_err(|e| refuse("store_unavailable", None, format!("cannot read the agent from the store: {e}")))?;
        let agent = state
            .registry
            .agent(name.as_str())
            .ok_or_else(|| refuse("unknown_agent", None, format!("agent `{name}` is not registered")))?;
        let jwk = agent
            .public_jwk
            .as_ref()
            .ok_or_else(|| refuse("no_registered_key", Some(name.as_str()), format!("agent `{name}` has no registered key")))?;
        let rules = AttestationRules { audience: state.settings.issuer.clone(), max_lifetime_secs: max_lifetime, leeway_secs: leeway };
        let att = mandate_token::verify_agent_attestation(token, jwk, agent.spiffe_id.as_str(), &rules, now)
            .map_err(|e| refuse(e.code(), Some(name.as_str()), format!("the attestation is not valid: {e}")))?;
        (name, Use::Once(att.jti), att.exp, iss.clone())
    } else {
        let verifier = state.issuers.read().get(&iss).cloned();
        let Some(verifier) = verifier else {
            return Err(refuse("unknown_issuer", None, format!("issuer `{}` is not trusted", crate::error::short(&iss))));
        };
        let verifier = match &peeked.kid {
            Some(kid) if !verifier.has_kid(kid) => refresh_issuer(state, &iss).await.unwrap_or(verifier),
            _ => verifier,
        };
        let att = verifier
            .verify_for_attestation(token, now, leeway, max_lifetime)
            .map_err(|e| refuse(e.code(), None, format!("the token from `{}` is not valid: {e}", crate::error::short(&iss))))?;
        (att.agent, att.jti.map(Use::Once).unwrap_or_else(|| Use::Reusable(token_digest(token))), att.exp, iss.clone())
    };
    crate::sync::ensure_agent(state, agent_name.as_str())
        .await
        .map_err(|e| refuse("store_unavailable", None, format!("cannot read the agent from the store: {e}")))?;
    let agent = state
        .registry
        .agent(agent_name.as_str())
        .ok_or_else(|| refuse("unknown_agent", None, format!("agent `{agent_name}` is not registered")))?;
    if agent.status != AgentStatus::Active {
        return Err(refuse("agent_disabled", Some(agent_name.as_str()), format!("agent `{agent_name}` is disabled")));
    }
    // Each `jti` once; a token without one (its issuer allows reuse) is remembered by its
    // digest, so that every use after the first is known, and audited, as a reuse.
    let key = match &jti {
        Use::Once(jti) => jti.clone(),
        Use::Reusable(digest) => format!("sha256:{digest}"),
    };
    let first = state
        .store
        .consume_jti(&issuer_key, &key, (exp + leeway) * 1000, state.clock.now_ms())
        .await
        .map_err(|e| refuse("store_unavailable", Some(agent_name.as_str()), format!("cannot check the attestation for replay: {e}")))?;
    if !first && matches!(jti, Use::Once(_)) {
        return Err(refuse(
            "replayed_jti",
            Some(agent_name.as_str()),
            "this attestation was already used; sign a new one with a fresh `jti`".into(),
        ));
    }
    Ok(((*agent).clone(), !first))
}

/// How often an attestation may be used: once (its `jti`), or again while it is valid (a
/// trusted issuer's token without `jti`, by the SHA-256 of the token, hex).
enum Use {
    Once(String),
    Reusable(String),
}

fn token_digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Re-fetches an issuer's JWKS from its URL (when it has one) after an unknown `kid`, at most
/// once a minute per issuer: the trigger is unauthenticated, so it must not let anyone make
/// this server hammer the issuer.
async fn refresh_issuer(state: &AppState, iss: &str) -> Option<Arc<mandate_token::ExternalVerifier>> {
    const MIN_INTERVAL_MS: i64 = 60_000;
    let now = state.clock.now_ms();
    {
        let mut last = state.jwks_refreshed_at.lock();
        if last.get(iss).is_some_and(|t| now - t < MIN_INTERVAL_MS) {
            return None;
        }
        last.insert(iss.to_owned(), now);
    }
    let mut issuer = state.store.get_issuer(iss).await.ok()??;
    let url = issuer.jwks_url.clone()?;
    let jwks = match crate::jwks_fetch::fetch_jwks(&state.http, &url).await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(issuer = %iss, error = %e, "could not refresh an issuer's JWKS");
            return None;
        }
    };
    issuer.jwks = jwks;
    let verifier = Arc::new(mandate_token::ExternalVerifier::new(&issuer).ok()?);
    if let Err(e) = state.store.upsert_issuer(&issuer).await {
        tracing::warn!(error = %e, "could not store a refreshed JWKS");
    }
    state.issuers.write().insert(iss.to_owned(), verifier.clone());
    Some(verifier)
}

/// RFC 7662 / RFC 7009 form. `token_type_hint` is accepted and ignored: only one kind of
/// token exists here.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    token: Option<String>,
}

/// `POST /oauth2/introspect` (RFC 7662), for enforcement points and admins.
pub async fn introspect(State(state): State<Arc<AppState>>, headers: HeaderMap, OAuthForm(form): OAuthForm<TokenForm>) -> Response {
    if let Err(e) = auth::require(&state, &headers, &[mandate_core::Role::Pep, mandate_core::Role::Auditor], "introspect tokens").await {
        return OAuthFailure::new(
            e.status,
            if e.status == StatusCode::FORBIDDEN { "access_denied" } else { "invalid_client" },
            e.message,
            Some(&e.code),
        )
        .into_response();
    }
    let Some(token) = form.token.filter(|t| !t.is_empty()) else {
        return OAuthFailure::invalid_request("`token` is required", "missing_parameter").into_response();
    };
    let inactive = || Json(IntrospectionResponse { active: false, ..Default::default() }).into_response();
    let now = state.clock.now_secs();
    let Ok(m) = state.keys.signing().verifier.verify(&token, now) else { return inactive() };
    let c = m.claims();
    // The same liveness rule as decisions: the task, its agent, and every task above it.
    if crate::pipeline::may_act_now(&state, &m).await.is_err() {
        return inactive();
    }
    Json(IntrospectionResponse {
        active: true,
        scope: Some(c.scope.clone()),
        client_id: Some(c.client_id.clone()),
        sub: Some(c.sub.clone()),
        aud: Some(c.aud.clone()),
        iss: Some(c.iss.clone()),
        exp: Some(c.exp),
        iat: Some(c.iat),
        jti: Some(c.jti.clone()),
        token_type: Some("Bearer".into()),
        task_id: Some(c.task_id.clone()),
        authorization_details: Some(c.authorization_details.iter().filter_map(|d| serde_json::to_value(d).ok()).collect()),
        act: c.act.as_ref().and_then(|a| serde_json::to_value(a).ok()),
    })
    .into_response()
}

/// `POST /oauth2/revoke` (RFC 7009). Revoking a mandate revokes its task (and every task
/// delegated from it). Always 200 for a well-formed request, even for an unknown token. The
/// holder of a mandate may revoke it; an admin token may revoke any.
pub async fn revoke(State(state): State<Arc<AppState>>, OAuthForm(form): OAuthForm<TokenForm>) -> Response {
    let Some(token) = form.token.filter(|t| !t.is_empty()) else {
        return OAuthFailure::invalid_request("`token` is required", "missing_parameter").into_response();
    };
    // The signature proves the token is ours; expiry does not matter for revocation.
    if let Ok(m) = state.keys.signing().verifier.verify(&token, state.clock.now_secs()) {
        let c = m.claims();
        let by = format!("agent:{}", c.agent);
        if let Err(e) = tasks::end_task(&state, &c.task_id, TaskStatus::Revoked, &by, "token revoked (RFC 7009)").await {
            tracing::error!(error = %e.message, "revocation failed");
            return OAuthFailure::unavailable().into_response();
        }
    }
    StatusCode::OK.into_response()
}
