//! A small MCP tool server with one tool of each kind, used by `mandate demo` and by the
//! gateway's tests as a realistic upstream.
//!
//! Tools (MCP streamable HTTP at `/mcp`):
//!
//! | tool                | kind    | what it does                                              |
//! |---------------------|---------|-----------------------------------------------------------|
//! | `tickets.search`    | read    | searches an in-memory ticket fixture                      |
//! | `tickets.export`    | read    | returns the full text of tickets (confidential data)      |
//! | `email.send`        | write   | records an email in an in-memory outbox                   |
//! | `deploy.production` | execute | records a production deployment                           |
//!
//! What the write and execute tools recorded is visible at `GET /_demo/outbox` and
//! `GET /_demo/deployments`. When [`DemoToolsOptions::require_bearer`] is set, every request to
//! `/mcp` must carry `Authorization: Bearer <secret>` or it is refused with 401; that is how a
//! test proves the gateway injected a brokered secret upstream.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json as AxumJson, Router};
use parking_lot::Mutex;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{Json, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The path of the MCP endpoint on the listener.
pub const MCP_PATH: &str = "/mcp";
/// The path that lists the emails `email.send` recorded.
pub const OUTBOX_PATH: &str = "/_demo/outbox";
/// The path that lists the deployments `deploy.production` recorded.
pub const DEPLOYMENTS_PATH: &str = "/_demo/deployments";

/// The names of the tools this server offers, in the order `tools/list` returns them.
pub const TOOL_NAMES: [&str; 4] = ["tickets.search", "tickets.export", "email.send", "deploy.production"];

/// How the demo tool server runs.
#[derive(Clone, Default)]
pub struct DemoToolsOptions {
    /// When set, requests to `/mcp` without `Authorization: Bearer <this value>` get 401.
    pub require_bearer: Option<String>,
    /// `Host` header values the MCP endpoint accepts (DNS-rebinding protection). Empty means
    /// the SDK default: loopback names only.
    pub allowed_hosts: Vec<String>,
}

impl std::fmt::Debug for DemoToolsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoToolsOptions")
            .field("require_bearer", &self.require_bearer.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// One email recorded by `email.send`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct SentEmail {
    /// The message id returned to the caller.
    pub message_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// One deployment recorded by `deploy.production`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Deployment {
    /// The deployment id returned to the caller.
    pub deployment_id: String,
    pub service: String,
    pub version: String,
    pub environment: String,
}

/// What the write and execute tools have recorded, shared by every MCP session.
#[derive(Debug, Default)]
pub struct DemoState {
    outbox: Mutex<Vec<SentEmail>>,
    deployments: Mutex<Vec<Deployment>>,
}

impl DemoState {
    /// Emails sent so far, oldest first.
    pub fn outbox(&self) -> Vec<SentEmail> {
        self.outbox.lock().clone()
    }

    /// Deployments made so far, oldest first.
    pub fn deployments(&self) -> Vec<Deployment> {
        self.deployments.lock().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

struct FixtureTicket {
    id: &'static str,
    title: &'static str,
    customer: &'static str,
    status: &'static str,
    body: &'static str,
}

const TICKETS: &[FixtureTicket] = &[
    FixtureTicket {
        id: "T-41",
        title: "Password reset email never arrives",
        customer: "Globex Corporation",
        status: "open",
        body: "Customer reports that password reset emails are not delivered to addresses at globex.example. \
               SPF record for the sending domain was updated last week. Contact: hank.scorpio@globex.example, \
               phone +1 555 0100.",
    },
    FixtureTicket {
        id: "T-42",
        title: "Checkout fails with 502 during peak hours",
        customer: "Initech",
        status: "open",
        body: "Between 17:00 and 19:00 UTC roughly 3% of checkout requests return 502 from the payments \
               service. Customer's account manager: bill.lumbergh@initech.example. Card data is not logged.",
    },
    FixtureTicket {
        id: "T-43",
        title: "Invoice PDF shows wrong VAT rate",
        customer: "Umbrella plc",
        status: "pending",
        body: "Invoices for EU customers show 19% VAT instead of 21%. Affects invoices INV-2291 to INV-2310. \
               Finance contact: a.wesker@umbrella.example, IBAN on file ends 4410.",
    },
    FixtureTicket {
        id: "T-44",
        title: "Request to export all account data (GDPR)",
        customer: "Stark Industries",
        status: "open",
        body: "Data subject access request from pepper.potts@stark.example for all personal data held. \
               Legal deadline in 30 days. Identity verified by passport scan (stored in vault).",
    },
    FixtureTicket {
        id: "T-45",
        title: "Checkout button misaligned on mobile",
        customer: "Wayne Enterprises",
        status: "closed",
        body: "On small screens the checkout button overlaps the footer. Fixed in web 4.12.1. \
               Reporter: lucius.fox@wayne.example.",
    },
];

const SNIPPET_CHARS: usize = 80;

fn find_ticket(id: &str) -> Option<&'static FixtureTicket> {
    TICKETS.iter().find(|t| t.id.eq_ignore_ascii_case(id))
}

// ---------------------------------------------------------------------------------------------
// Tool inputs and outputs
// ---------------------------------------------------------------------------------------------

/// Input of `tickets.search`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchTicketsInput {
    /// Words to look for in ticket titles, customers and text (case-insensitive; empty matches all).
    pub query: String,
}

/// A ticket as `tickets.search` shows it: no full text.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TicketSummary {
    pub id: String,
    pub title: String,
    pub customer: String,
    pub status: String,
    /// The first characters of the ticket text.
    pub snippet: String,
}

/// Output of `tickets.search`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SearchTicketsOutput {
    pub tickets: Vec<TicketSummary>,
}

/// Input of `tickets.export`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportTicketsInput {
    /// Ticket ids, e.g. `["T-42"]`.
    pub ids: Vec<String>,
}

/// A ticket with its full text.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TicketExport {
    pub id: String,
    pub title: String,
    pub customer: String,
    pub status: String,
    pub body: String,
}

/// Output of `tickets.export`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ExportTicketsOutput {
    pub tickets: Vec<TicketExport>,
    /// Requested ids that do not exist.
    pub not_found: Vec<String>,
}

/// Input of `email.send`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SendEmailInput {
    /// Recipient address.
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Output of `email.send`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SendEmailOutput {
    pub message_id: String,
    pub status: String,
}

/// Input of `deploy.production`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeployInput {
    /// Service to deploy, e.g. `payments`.
    pub service: String,
    /// Version to deploy, e.g. `4.12.1`.
    pub version: String,
}

/// Output of `deploy.production`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeployOutput {
    pub deployment_id: String,
    pub service: String,
    pub version: String,
    pub environment: String,
    pub status: String,
}

// ---------------------------------------------------------------------------------------------
// MCP server
// ---------------------------------------------------------------------------------------------

/// The MCP server handler. One instance per MCP session; all share one [`DemoState`].
#[derive(Debug, Clone)]
pub struct DemoTools {
    state: Arc<DemoState>,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl DemoTools {
    /// A handler recording into `state`.
    pub fn new(state: Arc<DemoState>) -> Self {
        Self { state, tool_router: Self::tool_router() }
    }

    #[tool(
        name = "tickets.search",
        description = "Search support tickets by words in their title, customer or text. Returns ticket summaries, not full text.",
        annotations(
            title = "Search tickets",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn tickets_search(&self, Parameters(input): Parameters<SearchTicketsInput>) -> Json<SearchTicketsOutput> {
        let words: Vec<String> = input.query.split_whitespace().map(str::to_lowercase).collect();
        let tickets = TICKETS
            .iter()
            .filter(|t| {
                let haystack = format!("{} {} {} {}", t.id, t.title, t.customer, t.body).to_lowercase();
                words.iter().all(|w| haystack.contains(w.as_str()))
            })
            .map(|t| TicketSummary {
                id: t.id.to_owned(),
                title: t.title.to_owned(),
                customer: t.customer.to_owned(),
                status: t.status.to_owned(),
                snippet: t.body.chars().take(SNIPPET_CHARS).collect(),
            })
            .collect();
        Json(SearchTicketsOutput { tickets })
    }

    #[tool(
        name = "tickets.export",
        description = "Export the full text of support tickets, including customer contact details (confidential).",
        annotations(
            title = "Export tickets",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn tickets_export(&self, Parameters(input): Parameters<ExportTicketsInput>) -> Json<ExportTicketsOutput> {
        let mut tickets = Vec::new();
        let mut not_found = Vec::new();
        for id in input.ids {
            match find_ticket(&id) {
                Some(t) => tickets.push(TicketExport {
                    id: t.id.to_owned(),
                    title: t.title.to_owned(),
                    customer: t.customer.to_owned(),
                    status: t.status.to_owned(),
                    body: t.body.to_owned(),
                }),
                None => not_found.push(id),
            }
        }
        Json(ExportTicketsOutput { tickets, not_found })
    }

    #[tool(
        name = "email.send",
        description = "Send an email. The message is recorded in the demo outbox and a message id is returned.",
        annotations(
            title = "Send email",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn email_send(&self, Parameters(input): Parameters<SendEmailInput>) -> Result<Json<SendEmailOutput>, String> {
        let to = input.to.trim();
        if to.is_empty() || !to.contains('@') {
            return Err(format!("not an email address: {to:?}"));
        }
        let message_id = format!("msg_{}", uuid::Uuid::now_v7().simple());
        self.state.outbox.lock().push(SentEmail {
            message_id: message_id.clone(),
            to: to.to_owned(),
            subject: input.subject,
            body: input.body,
        });
        Ok(Json(SendEmailOutput { message_id, status: "sent".to_owned() }))
    }

    #[tool(
        name = "deploy.production",
        description = "Deploy a version of a service to production. Records the deployment and returns its id.",
        annotations(
            title = "Deploy to production",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn deploy_production(&self, Parameters(input): Parameters<DeployInput>) -> Result<Json<DeployOutput>, String> {
        let service = input.service.trim();
        let version = input.version.trim();
        if service.is_empty() || version.is_empty() {
            return Err("service and version must not be empty".to_owned());
        }
        let deployment_id = format!("dep_{}", uuid::Uuid::now_v7().simple());
        let environment = "production".to_owned();
        self.state.deployments.lock().push(Deployment {
            deployment_id: deployment_id.clone(),
            service: service.to_owned(),
            version: version.to_owned(),
            environment: environment.clone(),
        });
        Ok(Json(DeployOutput {
            deployment_id,
            service: service.to_owned(),
            version: version.to_owned(),
            environment,
            status: "deployed".to_owned(),
        }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mandate-demo-tools", env!("CARGO_PKG_VERSION")))
            .with_instructions("Demo support-desk tools: search and export tickets, send email, deploy to production.")
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct BearerGuard {
    expected: Arc<str>,
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(token.trim().as_bytes(), expected.as_bytes())
}

async fn require_bearer(State(guard): State<BearerGuard>, request: Request, next: Next) -> Response {
    if bearer_matches(request.headers(), &guard.expected) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"mandate-demo-tools\"")],
            AxumJson(serde_json::json!({"error": "unauthorized", "message": "missing or wrong bearer secret"})),
        )
            .into_response()
    }
}

async fn outbox(State(state): State<Arc<DemoState>>) -> AxumJson<Vec<SentEmail>> {
    AxumJson(state.outbox())
}

async fn deployments(State(state): State<Arc<DemoState>>) -> AxumJson<Vec<Deployment>> {
    AxumJson(state.deployments())
}

/// The axum router: MCP at [`MCP_PATH`], the recorded effects at [`OUTBOX_PATH`] and
/// [`DEPLOYMENTS_PATH`]. `cancel` ends open MCP sessions when cancelled.
pub fn router(state: Arc<DemoState>, opts: &DemoToolsOptions, cancel: CancellationToken) -> Router {
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(cancel);
    if !opts.allowed_hosts.is_empty() {
        config = config.with_allowed_hosts(opts.allowed_hosts.iter().cloned());
    }
    let session_state = Arc::clone(&state);
    let mcp: StreamableHttpService<DemoTools, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(DemoTools::new(Arc::clone(&session_state))), Default::default(), config);

    let mut mcp_router = Router::new().nest_service(MCP_PATH, mcp);
    if let Some(secret) = &opts.require_bearer {
        let guard = BearerGuard { expected: Arc::from(secret.as_str()) };
        mcp_router = mcp_router.layer(middleware::from_fn_with_state(guard, require_bearer));
    }

    Router::new().route(OUTBOX_PATH, get(outbox)).route(DEPLOYMENTS_PATH, get(deployments)).with_state(state).merge(mcp_router)
}

/// Serves the demo tools on `listener` until `shutdown` completes.
pub async fn serve_with_shutdown<F>(listener: TcpListener, opts: DemoToolsOptions, shutdown: F) -> anyhow::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let cancel = CancellationToken::new();
    let app = router(Arc::new(DemoState::default()), &opts, cancel.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await;
    Ok(result?)
}

/// Serves the demo tools on `listener` until the process ends.
pub async fn serve(listener: TcpListener, opts: DemoToolsOptions) -> anyhow::Result<()> {
    serve_with_shutdown(listener, opts, std::future::pending()).await
}

/// A demo tool server running on a background task.
#[derive(Debug)]
pub struct DemoToolsHandle {
    addr: SocketAddr,
    state: Arc<DemoState>,
    cancel: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl DemoToolsHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint, `http://ADDR/mcp`.
    pub fn mcp_url(&self) -> String {
        format!("http://{}{MCP_PATH}", self.addr)
    }

    /// What the tools have recorded (the same data as the `/_demo/*` endpoints).
    pub fn state(&self) -> &Arc<DemoState> {
        &self.state
    }

    /// Stops accepting requests, ends open sessions and waits for the server task.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.cancel.cancel();
        self.task.await?
    }
}

/// Starts the demo tools on `listener` in a background task.
pub fn spawn(listener: TcpListener, opts: DemoToolsOptions) -> anyhow::Result<DemoToolsHandle> {
    let addr = listener.local_addr()?;
    let state = Arc::new(DemoState::default());
    let cancel = CancellationToken::new();
    let app = router(Arc::clone(&state), &opts, cancel.child_token());
    let stop = cancel.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled_owned().await }).await?;
        Ok(())
    });
    Ok(DemoToolsHandle { addr, state, cancel, task })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

    use super::*;

    #[test]
    fn bearer_check() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
    }

    #[test]
    fn tool_list_matches_names() {
        let tools = DemoTools::new(Arc::default()).tool_router.list_all();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        let mut expected: Vec<_> = TOOL_NAMES.iter().map(|s| s.to_string()).collect();
        let mut got = names.clone();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
    }
}
