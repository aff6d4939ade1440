//! A typed HTTP client for the Mandate API, used by the CLI, remote gateways and the
//! end-to-end tests.

pub mod revocations;

use std::time::Duration;

use mandate_proto::admin::{
    AddIssuerRequest, AgentStatusChange, AgentView, ApprovalDecisionRequest, ApprovalView, AuditEventsResponse, AuditVerifyResponse,
    CreateTokenRequest, CreateTokenResponse, EndTaskRequest, EndTaskResponse, EntitiesLoadResponse, IssuerView, KeyRotateResponse,
    LeaseView, PolicyStatus, PutSecretRequest, RegisterAgentRequest, ReloadResponse, RotateSecretRequest, SecretView, ServerInfo, TaskView,
    TokenView,
};
use mandate_proto::authzen::{EvaluationRequest, EvaluationResponse, EvaluationsRequest, EvaluationsResponse};
use mandate_proto::gateway::{
    EvidenceEvent, EvidenceResponse, GatewaySealedView, GatewayView, LeaseGrant, LeaseRequest, RegisterGatewayRequest,
    RegisterGatewayResponse,
};
use mandate_proto::oauth::{
    GRANT_TOKEN_EXCHANGE, IntrospectionResponse, JwkSet, OAuthError, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TokenExchangeResponse,
};
use mandate_proto::{ApiErrorBody, ErrorDetail};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a request may take in all, unless the call says otherwise ([`Client::within`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot reach the server at `{url}`: {reason}")]
    Connect { url: String, reason: String },
    /// The server refused with its stable error `code` (`{"error":{"code":…}}`).
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    /// The server answered with JSON, but not the JSON this call expects (for a refusal: one
    /// without an error code).
    #[error("unexpected answer from the server (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
    /// The server's answer is not JSON at all (or could not be read in full).
    #[error("the server's answer is not JSON (HTTP {status}): {body}")]
    NotJson { status: u16, body: String },
    #[error("`{0}` is not a valid server URL")]
    BadUrl(String),
}

impl ClientError {
    /// The server's stable error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status the server answered with; `None` when there was no answer. A success
    /// status here means the server did what was asked but its answer did not decode.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } | ClientError::NotJson { status, .. } => Some(*status),
            ClientError::Connect { .. } | ClientError::BadUrl(_) => None,
        }
    }
}

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// How long a request may take in all, unless the call says otherwise
    /// ([`Client::within`]).
    pub timeout: Duration,
    /// How long connecting may take; `None`: the operating system's limit.
    pub connect_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: DEFAULT_TIMEOUT, connect_timeout: None }
    }
}

impl ClientOptions {
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// The total timeout of every request this handle makes, instead of the client's.
    call_timeout: Option<Duration>,
}

impl Client {
    pub fn new(base_url: &str, token: Option<String>) -> Result<Self> {
        Self::with_options(base_url, token, ClientOptions::default())
    }

    pub fn with_options(base_url: &str, token: Option<String>, options: ClientOptions) -> Result<Self> {
        let parsed = url::Url::parse(base_url).map_err(|_| ClientError::BadUrl(base_url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl(base_url.to_owned()));
        }
        let mut builder = reqwest::Client::builder().timeout(options.timeout);
        if let Some(d) = options.connect_timeout {
            builder = builder.connect_timeout(d);
        }
        let http = builder.build().map_err(|e| ClientError::Connect { url: base_url.to_owned(), reason: root_cause(&e) })?;
        Ok(Client { base: base_url.trim_end_matches('/').to_owned(), token, http, call_timeout: None })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The same client with another bearer credential.
    pub fn with_token(&self, token: Option<String>) -> Self {
        Client { token, ..self.clone() }
    }

    /// The same client (sharing its connections), each of whose requests must be answered in
    /// full within `timeout`; a request that is not fails with [`ClientError::Connect`]
    /// (`timed out`). This replaces the client's timeout and, for
    /// [`get_approval`](Client::get_approval), the one derived from the wait.
    pub fn within(&self, timeout: Duration) -> Self {
        Client { call_timeout: Some(timeout), ..self.clone() }
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let b = self.timed(self.http.request(method, format!("{}{}", self.base, path)));
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// A request without this client's credential.
    fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.timed(self.http.request(method, format!("{}{}", self.base, path)))
    }

    fn timed(&self, b: RequestBuilder) -> RequestBuilder {
        match self.call_timeout {
            Some(t) => b.timeout(t),
            None => b,
        }
    }

    async fn send(&self, b: RequestBuilder) -> Result<Response> {
        b.send().await.map_err(|e| ClientError::Connect { url: self.base.clone(), reason: root_cause(&e) })
    }

    async fn json<T: DeserializeOwned>(&self, b: RequestBuilder) -> Result<T> {
        let resp = self.send(b).await?;
        decode(resp).await
    }

    async fn empty(&self, b: RequestBuilder) -> Result<()> {
        let resp = self.send(b).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(error_of(resp).await)
    }

    // ---- discovery ----

    pub async fn info(&self) -> Result<ServerInfo> {
        self.json(self.req(Method::GET, "/v1/info")).await
    }

    pub async fn oauth_metadata(&self) -> Result<Value> {
        self.json(self.req(Method::GET, "/.well-known/oauth-authorization-server")).await
    }

    pub async fn jwks(&self) -> Result<Value> {
        self.json(self.req(Method::GET, "/.well-known/jwks.json")).await
    }

    /// The control plane's signing keys, as a typed key set.
    pub async fn jwk_set(&self) -> Result<JwkSet> {
        self.json(self.req(Method::GET, "/.well-known/jwks.json")).await
    }

    // ---- agents ----

    pub async fn register_agent(&self, r: &RegisterAgentRequest) -> Result<AgentView> {
        self.json(self.req(Method::POST, "/v1/agents").json(r)).await
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentView>> {
        self.json(self.req(Method::GET, "/v1/agents")).await
    }

    pub async fn get_agent(&self, name: &str) -> Result<AgentView> {
        self.json(self.req(Method::GET, &format!("/v1/agents/{}", seg(name)))).await
    }

    pub async fn disable_agent(&self, name: &str) -> Result<AgentStatusChange> {
        self.json(self.req(Method::POST, &format!("/v1/agents/{}/disable", seg(name)))).await
    }

    pub async fn enable_agent(&self, name: &str) -> Result<AgentStatusChange> {
        self.json(self.req(Method::POST, &format!("/v1/agents/{}/enable", seg(name)))).await
    }

    // ---- tasks ----

    /// RFC 8693 token exchange: an attestation and an intent for a task mandate.
    pub async fn exchange(&self, attestation: &str, intent: &Value) -> Result<TokenExchangeResponse> {
        let details = serde_json::to_string(&[intent]).unwrap_or_default();
        let form = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", attestation),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("authorization_details", details.as_str()),
        ];
        let resp = self.send(self.anonymous(Method::POST, "/oauth2/token").form(&form)).await?;
        decode_oauth(resp).await
    }

    /// Delegation (RFC 8693): the parent's `mandate` as the subject token, the child agent's
    /// `attestation` as the actor token, `intent` the sub-intent. Answers the child's mandate.
    pub async fn delegate(&self, mandate: &str, attestation: &str, intent: &Value) -> Result<TokenExchangeResponse> {
        let details = serde_json::to_string(&[intent]).unwrap_or_default();
        let form = [
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", mandate),
            ("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN),
            ("actor_token", attestation),
            ("actor_token_type", TOKEN_TYPE_JWT),
            ("authorization_details", details.as_str()),
        ];
        let resp = self.send(self.anonymous(Method::POST, "/oauth2/token").form(&form)).await?;
        decode_oauth(resp).await
    }

    pub async fn list_tasks(&self, agent: Option<&str>, status: Option<&str>, limit: Option<usize>) -> Result<Vec<TaskView>> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(a) = agent {
            q.push(("agent", a.to_owned()));
        }
        if let Some(s) = status {
            q.push(("status", s.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        self.json(self.req(Method::GET, "/v1/tasks").query(&q)).await
    }

    pub async fn get_task(&self, id: &str) -> Result<TaskView> {
        self.json(self.req(Method::GET, &format!("/v1/tasks/{}", seg(id)))).await
    }

    pub async fn revoke_task(&self, id: &str, reason: Option<String>) -> Result<EndTaskResponse> {
        self.json(self.req(Method::POST, &format!("/v1/tasks/{}/revoke", seg(id))).json(&EndTaskRequest { reason })).await
    }

    pub async fn complete_task(&self, id: &str, reason: Option<String>) -> Result<EndTaskResponse> {
        self.json(self.req(Method::POST, &format!("/v1/tasks/{}/complete", seg(id))).json(&EndTaskRequest { reason })).await
    }

    // ---- approvals ----

    /// `status`: `pending` (the server's default), `approved`, `denied`, `expired`, `used` or `all`.
    pub async fn list_approvals(&self, status: Option<&str>, limit: Option<usize>) -> Result<Vec<ApprovalView>> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = status {
            q.push(("status", s.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        self.json(self.req(Method::GET, "/v1/approvals").query(&q)).await
    }

    /// One approval; with `wait_secs`, once it is no longer pending or the wait is over (the
    /// request may then take `wait_secs` + 10 s, unless made [`within`](Client::within) a
    /// timeout).
    pub async fn get_approval(&self, id: &str, wait_secs: Option<u64>) -> Result<ApprovalView> {
        let mut b = self.req(Method::GET, &format!("/v1/approvals/{}", seg(id)));
        if let Some(w) = wait_secs {
            b = b.query(&[("wait", w.to_string())]);
            if self.call_timeout.is_none() {
                b = b.timeout(Duration::from_secs(w.saturating_add(10)));
            }
        }
        self.json(b).await
    }

    pub async fn approve(&self, id: &str, comment: Option<String>) -> Result<ApprovalView> {
        self.json(self.req(Method::POST, &format!("/v1/approvals/{}/approve", seg(id))).json(&ApprovalDecisionRequest { comment })).await
    }

    pub async fn deny(&self, id: &str, comment: Option<String>) -> Result<ApprovalView> {
        self.json(self.req(Method::POST, &format!("/v1/approvals/{}/deny", seg(id))).json(&ApprovalDecisionRequest { comment })).await
    }

    // ---- decisions ----

    pub async fn evaluate(&self, r: &EvaluationRequest) -> Result<EvaluationResponse> {
        self.json(self.req(Method::POST, "/access/v1/evaluation").json(r)).await
    }

    pub async fn evaluate_batch(&self, r: &EvaluationsRequest) -> Result<EvaluationsResponse> {
        self.evaluate_batch_traced(r, None).await
    }

    /// [`Client::evaluate_batch`] on behalf of a request the caller is serving: `request_id`
    /// is sent as `x-request-id`, so the control plane's log and trail name it.
    pub async fn evaluate_batch_traced(&self, r: &EvaluationsRequest, request_id: Option<&str>) -> Result<EvaluationsResponse> {
        let mut b = self.req(Method::POST, "/access/v1/evaluations").json(r);
        if let Some(id) = request_id {
            b = b.header("x-request-id", id);
        }
        self.json(b).await
    }

    pub async fn introspect(&self, token: &str) -> Result<IntrospectionResponse> {
        let resp = self.send(self.req(Method::POST, "/oauth2/introspect").form(&[("token", token)])).await?;
        decode_oauth(resp).await
    }

    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        let resp = self.send(self.anonymous(Method::POST, "/oauth2/revoke").form(&[("token", token)])).await?;
        if resp.status().is_success() { Ok(()) } else { Err(error_of(resp).await) }
    }

    // ---- API tokens ----

    pub async fn create_token(&self, role: &str, label: &str) -> Result<CreateTokenResponse> {
        self.json(self.req(Method::POST, "/v1/tokens").json(&CreateTokenRequest { role: role.to_owned(), label: label.to_owned() })).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenView>> {
        self.json(self.req(Method::GET, "/v1/tokens")).await
    }

    pub async fn revoke_api_token(&self, id: &str) -> Result<()> {
        self.empty(self.req(Method::POST, &format!("/v1/tokens/{}/revoke", seg(id)))).await
    }

    // ---- secrets ----

    /// Stores version 1 of a new secret (`secret_exists` if it exists; rotate instead).
    pub async fn put_secret(&self, name: &str, value: &str, description: &str) -> Result<SecretView> {
        self.put_secret_of_kind(name, value, description, None).await
    }

    /// [`Client::put_secret`] of a kind: `static` (`None`: the default) or `postgres-dynamic`
    /// (`value` is its JSON configuration).
    pub async fn put_secret_of_kind(&self, name: &str, value: &str, description: &str, kind: Option<&str>) -> Result<SecretView> {
        let body = PutSecretRequest { value: value.to_owned(), description: description.to_owned(), kind: kind.map(str::to_owned) };
        self.json(self.req(Method::PUT, &format!("/v1/secrets/{}", seg(name))).json(&body)).await
    }

    /// Stores the next version of an existing secret.
    pub async fn rotate_secret(&self, name: &str, value: &str) -> Result<SecretView> {
        let body = RotateSecretRequest { value: value.to_owned() };
        self.json(self.req(Method::POST, &format!("/v1/secrets/{}/rotate", seg(name))).json(&body)).await
    }

    /// Metadata of every secret (latest versions), by name.
    pub async fn list_secrets(&self) -> Result<Vec<SecretView>> {
        self.json(self.req(Method::GET, "/v1/secrets")).await
    }

    /// Metadata of one secret's latest version.
    pub async fn get_secret(&self, name: &str) -> Result<SecretView> {
        self.json(self.req(Method::GET, &format!("/v1/secrets/{}", seg(name)))).await
    }

    /// The latest version of a secret, sealed to the calling gateway (a `pep` token bound to a
    /// registered gateway that was granted the secret). Open it with
    /// `mandate_secrets::open_for_gateway` and the gateway's private key, after decoding each
    /// field as base64url.
    pub async fn sealed_secret(&self, name: &str) -> Result<GatewaySealedView> {
        self.json(self.req(Method::GET, &format!("/v1/secrets/{}/sealed", seg(name)))).await
    }

    /// The credential of dynamic secret `name` for live task `task` (a registered gateway's
    /// `pep` token), minted on first use: the lease and its credential sealed to the gateway
    /// (under the secret's name and version, bound to the task).
    pub async fn lease(&self, name: &str, task: &str) -> Result<LeaseGrant> {
        let body = LeaseRequest { task: task.to_owned() };
        self.json(self.req(Method::POST, &format!("/v1/secrets/{}/leases", seg(name))).json(&body)).await
    }

    /// Leases, newest first, optionally of one task; metadata only.
    pub async fn list_leases(&self, task: Option<&str>) -> Result<Vec<LeaseView>> {
        let q: Vec<(&str, &str)> = task.map(|t| ("task", t)).into_iter().collect();
        self.json(self.req(Method::GET, "/v1/leases").query(&q)).await
    }

    /// Deletes every version of a secret.
    pub async fn delete_secret(&self, name: &str) -> Result<()> {
        self.empty(self.req(Method::DELETE, &format!("/v1/secrets/{}", seg(name)))).await
    }

    // ---- remote gateways ----

    /// Registers a remote gateway with its public key and the secrets it may open; the answer
    /// holds its new `pep` token, shown this once.
    pub async fn register_gateway(&self, r: &RegisterGatewayRequest) -> Result<RegisterGatewayResponse> {
        self.json(self.req(Method::POST, "/v1/gateways").json(r)).await
    }

    /// Every registered gateway (revoked ones too), by name.
    pub async fn list_gateways(&self) -> Result<Vec<GatewayView>> {
        self.json(self.req(Method::GET, "/v1/gateways")).await
    }

    /// Revokes a gateway and its `pep` token.
    pub async fn revoke_gateway(&self, name: &str) -> Result<GatewayView> {
        self.json(self.req(Method::POST, &format!("/v1/gateways/{}/revoke", seg(name)))).await
    }

    /// The registration of the gateway this client's `pep` token is bound to.
    pub async fn gateway_self(&self) -> Result<GatewayView> {
        self.json(self.req(Method::GET, "/v1/gateways/self")).await
    }

    // ---- evidence ----

    /// Records `tool.call` events in the trail (`pep` tokens only, at most 512 at a time);
    /// answers once they are durable.
    pub async fn submit_evidence(&self, events: &[EvidenceEvent]) -> Result<EvidenceResponse> {
        #[derive(Serialize)]
        struct Body<'a> {
            events: &'a [EvidenceEvent],
        }
        self.json(self.req(Method::POST, "/v1/evidence").json(&Body { events })).await
    }

    // ---- issuers ----

    pub async fn add_issuer(&self, r: &AddIssuerRequest) -> Result<IssuerView> {
        self.json(self.req(Method::POST, "/v1/issuers").json(r)).await
    }

    pub async fn list_issuers(&self) -> Result<Vec<IssuerView>> {
        self.json(self.req(Method::GET, "/v1/issuers")).await
    }

    pub async fn remove_issuer(&self, issuer: &str) -> Result<()> {
        self.empty(self.req(Method::DELETE, "/v1/issuers").query(&[("issuer", issuer)])).await
    }

    // ---- policies, entities, keys ----

    pub async fn policy_status(&self) -> Result<PolicyStatus> {
        self.json(self.req(Method::GET, "/v1/policies")).await
    }

    pub async fn reload_policies(&self) -> Result<ReloadResponse> {
        self.json(self.req(Method::POST, "/v1/policies/reload")).await
    }

    pub async fn load_entities(&self, json: String) -> Result<EntitiesLoadResponse> {
        self.json(self.req(Method::POST, "/v1/entities").header("content-type", "application/json").body(json)).await
    }

    pub async fn rotate_key(&self) -> Result<KeyRotateResponse> {
        self.json(self.req(Method::POST, "/v1/keys/rotate")).await
    }

    // ---- audit ----

    pub async fn audit_verify(&self) -> Result<AuditVerifyResponse> {
        self.json(self.req(Method::GET, "/v1/audit/verify")).await
    }

    pub async fn audit_trail(&self, task: &str) -> Result<AuditEventsResponse> {
        self.json(self.req(Method::GET, "/v1/audit/trail").query(&[("task", task)])).await
    }

    pub async fn audit_events(&self, query: &[(&str, String)]) -> Result<AuditEventsResponse> {
        self.json(self.req(Method::GET, "/v1/audit/events").query(query)).await
    }

    /// The whole trail as JSON lines (`jsonl` or `ocsf`).
    pub async fn audit_export(&self, format: &str) -> Result<String> {
        let resp = self.send(self.req(Method::GET, "/v1/audit/export").query(&[("format", format)])).await?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        let status = resp.status().as_u16();
        resp.text().await.map_err(|e| ClientError::Unexpected { status, body: e.to_string() })
    }

    /// A raw GET, for health endpoints.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let resp = self.send(self.req(Method::GET, path)).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// A raw JSON POST, for tests that send what the typed methods would not.
    pub async fn post_json<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<(u16, Value)> {
        let resp = self.send(self.req(Method::POST, path).json(body)).await?;
        let status = resp.status().as_u16();
        let v = resp.json().await.unwrap_or(Value::Null);
        Ok((status, v))
    }
}

/// The innermost cause, e.g. `connection refused (os error 111)`, instead of reqwest's
/// nested repetition of the URL.
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => "unknown error".to_owned(),
    }
}

fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T> {
    let status = resp.status();
    if !status.is_success() {
        return Err(error_of(resp).await);
    }
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str(&text).map_err(|_| {
        let (status, body) = (status.as_u16(), truncate(&text));
        if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
            ClientError::Unexpected { status, body }
        } else {
            ClientError::NotJson { status, body }
        }
    })
}

async fn decode_oauth<T: DeserializeOwned>(resp: Response) -> Result<T> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|_| ClientError::Unexpected { status: status.as_u16(), body: truncate(&text) });
    }
    if let Ok(e) = serde_json::from_str::<OAuthError>(&text) {
        return Err(ClientError::Api {
            status: status.as_u16(),
            code: e.mandate_error.unwrap_or(e.error),
            message: e.error_description.unwrap_or_default(),
        });
    }
    if let Ok(ApiErrorBody { error: ErrorDetail { code, message, .. } }) = serde_json::from_str(&text) {
        return Err(ClientError::Api { status: status.as_u16(), code, message });
    }
    Err(ClientError::Unexpected { status: status.as_u16(), body: truncate(&text) })
}

/// A refusal's stable code, read leniently: an [`ApiErrorBody`] without its `message` still
/// names the code.
#[derive(Deserialize)]
struct CodedError {
    error: CodedDetail,
}

#[derive(Deserialize)]
struct CodedDetail {
    code: String,
    #[serde(default)]
    message: String,
}

/// A refusal (any status that is not a success): [`ClientError::Api`] when the body carries a
/// stable code, else [`ClientError::Unexpected`] (JSON) or [`ClientError::NotJson`]; a 404
/// without a code (a proxy's, say) reads as `not_found`.
async fn error_of(resp: Response) -> ClientError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if let Ok(CodedError { error: CodedDetail { code, message } }) = serde_json::from_str(&text) {
        return ClientError::Api { status: status.as_u16(), code, message };
    }
    if status == StatusCode::NOT_FOUND {
        return ClientError::Api { status: 404, code: "not_found".into(), message: "not found".into() };
    }
    if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
        ClientError::Unexpected { status: status.as_u16(), body: truncate(&text) }
    } else {
        ClientError::NotJson { status: status.as_u16(), body: truncate(&text) }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}
