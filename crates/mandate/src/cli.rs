//! The command line. Admin subcommands talk to a running server's API, found in
//! `MANDATE_URL` with the API token in `MANDATE_TOKEN` (flags override).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, FileConfig, ServeConfig};

#[derive(Debug, Parser)]
#[command(name = "mandate", version, about = "Identity and access control plane for autonomous AI agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "MANDATE_URL", default_value = "http://127.0.0.1:8480")]
    pub url: String,
    /// An API token (or, for some agent commands, none).
    #[arg(long, env = "MANDATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Register and manage agents; the agent side of attestation.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Create and revoke admin API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List, inspect, complete and revoke tasks.
    #[command(subcommand)]
    Task(TaskCmd),
    /// The queue of calls waiting for a person: list, approve, deny.
    #[command(subcommand)]
    Approval(ApprovalCmd),
    /// Trust external token issuers (Kubernetes, SPIRE, CI OIDC).
    #[command(subcommand)]
    Issuer(IssuerCmd),
    /// Store, rotate and delete brokered secrets (values are never shown again).
    #[command(subcommand)]
    Secret(SecretCmd),
    /// The per-task credentials minted from dynamic secrets (metadata only).
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Validate, test and reload policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Load Cedar entity data for non-agent subjects.
    #[command(subcommand)]
    Entities(EntitiesCmd),
    /// Rotate the signing key.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Verify, query and export the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Ask for one decision (an AuthZEN request body from a file, or `-` for stdin).
    Evaluate {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Run the whole story on a throwaway server: no set-up, no config.
    Demo(DemoArgs),
    /// Bring the store's schema up to date and exit (`mandate serve` also does it on start).
    Migrate(MigrateArgs),
    /// Run the enforcement gateway in front of MCP servers and HTTP APIs, apart from the
    /// control plane (or mount it in `mandate serve` with a `[gateway]` section); make a remote
    /// gateway's key, register, list and revoke remote gateways.
    Gateway(GatewayCmd),
}

/// `mandate gateway [--config F …]` runs a gateway; `mandate gateway ACTION` manages them.
#[derive(Debug, Args)]
#[command(subcommand_negates_reqs = true)]
pub struct GatewayCmd {
    #[command(subcommand)]
    pub action: Option<GatewayAction>,
    #[command(flatten)]
    pub run: GatewayArgs,
}

#[derive(Debug, Subcommand)]
pub enum GatewayAction {
    /// Make a remote gateway's X25519 key pair: the private key goes to FILE (mode 0600, never
    /// overwritten), the public key is printed, to register with `mandate gateway register`.
    Keygen {
        #[arg(long, default_value = "gateway.key")]
        out: PathBuf,
    },
    /// Register a remote gateway with its public key and the secrets it may open; prints the
    /// `pep` token bound to it, once.
    Register {
        /// 1 to 64 of `a-z0-9-_.`.
        name: String,
        /// The gateway's public key, as `mandate gateway keygen` printed it.
        #[arg(long)]
        public_key: String,
        /// A secret the gateway may open (repeat for more).
        #[arg(long = "secret")]
        secrets: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Registered gateways and the secrets each may open.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a gateway: it may open nothing more, and its `pep` token is revoked.
    Revoke {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// A TOML config file (its `data_dir` and `[database]` are used).
    #[arg(long, env = "MANDATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory whose SQLite store to migrate [default: ./mandate-data].
    #[arg(long, env = "MANDATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL (`postgres://…`): migrate that database instead.
    #[arg(long, env = "MANDATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The gateway's TOML config: `[[upstream]]` tables at the top level, or under `[gateway]`.
    #[arg(long, env = "MANDATE_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: the config's `listen`, else 127.0.0.1:8481].
    #[arg(long, env = "MANDATE_GATEWAY_LISTEN")]
    pub listen: Option<String>,
    /// The control plane's base URL [default: the config's `control_plane_url`].
    #[arg(long, env = "MANDATE_URL")]
    pub url: Option<String>,
    /// The gateway's `pep` API token.
    #[arg(long, env = "MANDATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The gateway's own private key (made by `mandate gateway keygen`, or on first start if
    /// the file does not exist) [default: `gateway.key` beside the config file].
    #[arg(long, env = "MANDATE_GATEWAY_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// No longer taken: a remote gateway never holds the control plane's master key. Given
    /// (or `MANDATE_MASTER_KEY` set), the gateway refuses to start and says how to migrate.
    #[arg(long, env = "MANDATE_MASTER_KEY_FILE", hide = true)]
    pub master_key_file: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (not recommended).
    #[arg(long, env = "MANDATE_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// Log format.
    #[arg(long, env = "MANDATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file; flags and environment override it.
    #[arg(long, env = "MANDATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the store, keys and default policies live [default: ./mandate-data].
    #[arg(long, env = "MANDATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8480].
    #[arg(long, env = "MANDATE_LISTEN")]
    pub listen: Option<String>,
    /// Keep the store in PostgreSQL (`postgres://user:password@host:5432/db`) instead of
    /// DATA_DIR/mandate.db. Every replica started with the same URL (and the same
    /// `MANDATE_MASTER_KEY`) is part of one service.
    #[arg(long, env = "MANDATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Policy directory (*.cedar and one *.cedarschema) [default: DATA_DIR/policies, seeded with the starter set].
    #[arg(long, env = "MANDATE_POLICY_DIR")]
    pub policy_dir: Option<PathBuf>,
    /// A shadow policy set: evaluated and recorded, never enforced.
    #[arg(long, env = "MANDATE_SHADOW_POLICY_DIR")]
    pub shadow_policy_dir: Option<PathBuf>,
    /// The URL clients reach this server at [default: the listen address].
    #[arg(long, env = "MANDATE_ISSUER_URL")]
    pub issuer_url: Option<String>,
    /// SPIFFE trust domain of agent IDs [default: mandate.local].
    #[arg(long, env = "MANDATE_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "MANDATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "MANDATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (not recommended).
    #[arg(long, env = "MANDATE_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
    /// Log format.
    #[arg(long, env = "MANDATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Register an agent; prints its SPIFFE ID.
    Register {
        #[arg(long)]
        name: String,
        /// The named human accountable for the agent.
        #[arg(long)]
        owner: String,
        /// What the agent is for.
        #[arg(long)]
        purpose: String,
        /// The agent's public JWK file (Ed25519 or P-256), for attestation with a registered key.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// An attribute visible to policy as a tag, `key=value` (repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List agents.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one agent.
    Show {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// The kill switch: disable an agent and revoke every live task it has.
    Disable {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Enable a disabled agent.
    Enable {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a key pair for an agent: NAME.jwk (private, mode 0600) and NAME.pub.jwk.
    Keygen {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: KeyAlg,
    },
    /// The agent side: sign an attestation, open a task with an intent, print the mandate.
    Token {
        #[arg(long)]
        name: String,
        /// The agent's private JWK file.
        #[arg(long)]
        key: PathBuf,
        /// The task's intent: a JSON `agent_task` object.
        #[arg(long)]
        intent: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delegate part of a task: exchange the parent's mandate and the child agent's
    /// attestation for the child's mandate, an attenuation of the parent's; print it.
    Delegate {
        /// The parent's mandate (the task to delegate from); `-` reads it from standard input.
        #[arg(long)]
        mandate: String,
        /// The agent to delegate to.
        #[arg(long)]
        to: String,
        /// That agent's private JWK file: it signs its own attestation.
        #[arg(long)]
        key: PathBuf,
        /// The sub-intent: a JSON `agent_task` object within the parent's.
        #[arg(long)]
        intent: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyAlg {
    Ed25519,
    P256,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token; the secret is printed once.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        label: String,
        #[command(flatten)]
        remote: Remote,
    },
    List {
        #[command(flatten)]
        remote: Remote,
    },
    Revoke {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    List {
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        remote: Remote,
    },
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a task and every task delegated from it; effective on the next request.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Mark a task completed; its mandate stops working at once.
    Complete {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCmd {
    /// Approval requests, newest first (pending ones by default).
    List {
        /// `pending`, `approved`, `denied`, `expired`, `used` or `all`.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        remote: Remote,
    },
    /// One approval request, with the exact call it is bound to.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Allow the identical call, once.
    Approve {
        id: String,
        /// Why (kept in the audit trail).
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Refuse the call.
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum IssuerCmd {
    /// Trust an issuer's tokens as attestations.
    Add {
        /// The issuer's `iss` value.
        #[arg(long)]
        issuer: String,
        /// The `aud` its tokens carry for this server.
        #[arg(long)]
        audience: String,
        #[arg(long, conflicts_with = "jwks_url")]
        jwks_file: Option<PathBuf>,
        #[arg(long)]
        jwks_url: Option<String>,
        /// `CLAIM=PATTERN` with one `{agent}` placeholder, e.g. `sub=system:serviceaccount:prod:{agent}` (repeatable).
        #[arg(long = "rule", required = true)]
        rules: Vec<String>,
        /// The longest a token may live, in seconds (`exp - iat`; default: the server's
        /// attestation limit, 300).
        #[arg(long, value_name = "SECS")]
        max_token_lifetime: Option<u64>,
        /// Accept tokens without `jti`, also more than once (each reuse is audited).
        #[arg(long)]
        allow_token_reuse: bool,
        #[command(flatten)]
        remote: Remote,
    },
    List {
        #[command(flatten)]
        remote: Remote,
    },
    Remove {
        issuer: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// Leases, newest first: role, task, expiry, and whether and why it was dropped.
    List {
        /// Only this task's leases.
        #[arg(long)]
        task: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Store a new secret; the value is read from standard input (one trailing newline is dropped).
    Put {
        name: String,
        /// What the secret is for.
        #[arg(long, default_value = "")]
        description: String,
        /// `static` (a value handed out as it is) or `postgres-dynamic` (the value is JSON
        /// `{"admin_url", "grants", "connect_url"}`: each task gets a database role of its own).
        #[arg(long, default_value = "static")]
        kind: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Store a new version of a secret; the value is read from standard input.
    Rotate {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List secrets (metadata only).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a secret's metadata (never its value).
    Show {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete every version of a secret.
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Parse and schema-validate a policy directory; errors name file and line.
    Validate { dir: PathBuf },
    /// Run policy test cases (TOML) against a policy directory.
    Test {
        cases: PathBuf,
        /// The policy directory [default: the built-in starter set].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Cedar entity data (JSON) for non-agent subjects.
        #[arg(long)]
        entities: Option<PathBuf>,
    },
    /// Write the starter policy set (schema, policies, tests) to a directory.
    Init { dir: PathBuf },
    /// Show the server's current policy set.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask the server to reload its policy directory now.
    Reload {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum EntitiesCmd {
    /// Replace the server's entity data with a Cedar JSON entities file.
    Load {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Make a new signing key; the old one stays in the JWKS until its tokens expire.
    Rotate {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Prove the trail is whole; exits 1 and names the first bad entry if not.
    Verify {
        /// Verify a data directory's store file directly, without a server.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// The evidence chain of one task (and the tasks delegated from it), in order.
    Trail {
        #[arg(long)]
        task: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Query events.
    Events {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        task: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Export the whole trail as JSON lines.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's data directory here instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Serve(a) => a.log_format,
        Command::Gateway(a) => a.run.log_format,
        _ => LogFormat::Text,
    };
    let service = matches!(&cli.command, Command::Serve(_)) || matches!(&cli.command, Command::Gateway(g) if g.action.is_none());
    init_tracing(log_format, service);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(crate::commands::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat, serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving { "info,tower_http=warn" } else { "warn" };
    let filter = EnvFilter::try_from_env("MANDATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

impl ServeArgs {
    /// File, then environment and flags (clap already merged those two).
    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let listen_s = self.listen.clone().or(file.listen).unwrap_or_else(|| config::DEFAULT_LISTEN.to_owned());
        let listen = listen_s.parse().map_err(|_| anyhow::anyhow!("`{listen_s}` is not a listen address like `127.0.0.1:8480`"))?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(config::TlsConfig { cert: cert.clone(), key: key.clone() }),
            _ => file.tls,
        };
        Ok(ServeConfig {
            listen,
            data_dir: self.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from(config::DEFAULT_DATA_DIR)),
            policy_dir: self.policy_dir.clone().or(file.policy_dir),
            shadow_policy_dir: self.shadow_policy_dir.clone().or(file.shadow_policy_dir),
            issuer_url: self.issuer_url.clone().or(file.issuer_url),
            trust_domain: self.trust_domain.clone().or(file.trust_domain).unwrap_or_else(|| config::DEFAULT_TRUST_DOMAIN.to_owned()),
            audience: file.audience.unwrap_or_else(|| "mandate".to_owned()),
            environment: file.environment.unwrap_or_else(|| "production".to_owned()),
            tls,
            allow_insecure_http: self.allow_insecure_http || file.allow_insecure_http.unwrap_or(false),
            // An unset default lifetime never exceeds the configured cap.
            default_ttl_secs: file.tasks.default_ttl_secs.unwrap_or_else(|| file.tasks.max_ttl_secs.unwrap_or(3600).min(600)),
            max_ttl_secs: file.tasks.max_ttl_secs.unwrap_or(3600),
            max_delegation_depth: file.tasks.max_delegation_depth.unwrap_or(3),
            attestation_max_lifetime_secs: file.attestation.max_lifetime_secs.unwrap_or(300),
            leeway_secs: file.attestation.leeway_secs.unwrap_or(60),
            checkpoint_every: file.audit.checkpoint_every.unwrap_or(1000),
            checkpoint_interval_secs: file.audit.checkpoint_interval_secs.unwrap_or(10),
            max_body_bytes: file.limits.max_body_bytes.unwrap_or(64 * 1024),
            approvals: file.approvals.clone(),
            database: config::DatabaseSettings {
                url: self.database_url.clone().filter(|u| !u.is_empty()).or_else(|| file.database.url.clone()),
                max_connections: file.database.max_connections.unwrap_or(16),
                acquire_timeout_secs: file.database.acquire_timeout_secs.unwrap_or(5),
            },
            gateway: match &file.gateway {
                Some(g) => Some(g.check().map_err(|e| anyhow::anyhow!("`[gateway]`: {e}"))?),
                None => None,
            },
        })
    }
}
