//! `mandate serve`'s configuration: a TOML file, overridden by environment variables and
//! flags (flags win). Every table refuses unknown keys, so a misspelt setting is an error at
//! start rather than a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
pub const DEFAULT_DATA_DIR: &str = "./mandate-data";
pub const DEFAULT_TRUST_DOMAIN: &str = "mandate.local";
/// The deepest delegation a server may allow: every hop adds an `act` to the mandate.
pub const MAX_DELEGATION_DEPTH: u32 = 16;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub policy_dir: Option<PathBuf>,
    pub shadow_policy_dir: Option<PathBuf>,
    /// The public URL clients reach this server at (the `iss` of mandates).
    pub issuer_url: Option<String>,
    pub trust_domain: Option<String>,
    pub audience: Option<String>,
    pub environment: Option<String>,
    pub allow_insecure_http: Option<bool>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub tasks: TasksConfig,
    #[serde(default)]
    pub attestation: AttestationConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    /// The enforcement gateway mounted on this listener (`/mcp/NAME`, `/api/NAME/…`).
    pub gateway: Option<mandate_gateway::GatewayFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    pub default_ttl_secs: Option<u64>,
    pub max_ttl_secs: Option<u64>,
    /// How many times a task may be handed on; 0 turns delegation off.
    pub max_delegation_depth: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    pub max_lifetime_secs: Option<u64>,
    pub leeway_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub checkpoint_every: Option<u64>,
    pub checkpoint_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: Option<usize>,
}

/// `[approvals]`: how long a request for a person stays open, who may not decide it, and the
/// webhook that announces it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// How long an approval request (and a granted one not yet used) stays open. Default 900.
    pub ttl_secs: Option<u64>,
    /// Refuse a decision from a token whose label is the agent's owner. Default false.
    pub forbid_owner: Option<bool>,
    /// POSTed a signed JSON body for every new approval request.
    pub webhook_url: Option<String>,
    /// A file holding the HMAC-SHA256 key (or `MANDATE_APPROVAL_WEBHOOK_SECRET`, which wins).
    pub webhook_secret_file: Option<PathBuf>,
    /// Tries per announcement, the first included. Default 5.
    pub webhook_attempts: Option<u32>,
}

/// `[database]`: where the store lives when it is not DATA_DIR/mandate.db.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:5432/db` (`--database-url` and `MANDATE_DATABASE_URL`
    /// win). Unset: the embedded SQLite store.
    pub url: Option<String>,
    /// Connections in each replica's pool. Default 16.
    pub max_connections: Option<u32>,
    /// How long a request waits for a free connection before failing closed. Default 5.
    pub acquire_timeout_secs: Option<u64>,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("DatabaseConfig").field("url", &self.url.as_ref().map(|_| "<set>")).finish_non_exhaustive()
    }
}

/// The resolved `[database]` settings.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub url: Option<String>,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &self.url.as_ref().map(|_| "<set>"))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_secs", &self.acquire_timeout_secs)
            .finish()
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file `{}`", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file `{}` is not valid", path.display()))
    }
}

/// The server's settings after file, environment and flags are merged and checked.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub policy_dir: Option<PathBuf>,
    pub shadow_policy_dir: Option<PathBuf>,
    pub issuer_url: Option<String>,
    pub trust_domain: String,
    pub audience: String,
    pub environment: String,
    pub tls: Option<TlsConfig>,
    pub allow_insecure_http: bool,
    pub default_ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub max_delegation_depth: u32,
    pub attestation_max_lifetime_secs: u64,
    pub leeway_secs: u64,
    pub checkpoint_every: u64,
    pub checkpoint_interval_secs: u64,
    pub max_body_bytes: usize,
    pub approvals: ApprovalsConfig,
    pub database: DatabaseSettings,
    /// The embedded gateway, when the config has a `[gateway]` section.
    pub gateway: Option<mandate_gateway::GatewayConfig>,
}

impl ServeConfig {
    /// Checks what can be checked before anything is opened.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.allow_insecure_http {
            bail!(
                "refusing to serve plain HTTP on non-loopback address `{}`: configure TLS (`--tls-cert`, `--tls-key`) or pass `--allow-insecure-http`",
                self.listen
            );
        }
        if self.max_ttl_secs == 0 || self.max_ttl_secs > 24 * 3600 {
            bail!("`tasks.max_ttl_secs` must be between 1 and 86400");
        }
        if self.default_ttl_secs == 0 || self.default_ttl_secs > self.max_ttl_secs {
            bail!("`tasks.default_ttl_secs` must be between 1 and `tasks.max_ttl_secs`");
        }
        if self.max_delegation_depth > MAX_DELEGATION_DEPTH {
            bail!("`tasks.max_delegation_depth` may be at most {MAX_DELEGATION_DEPTH}");
        }
        if self.attestation_max_lifetime_secs == 0 || self.attestation_max_lifetime_secs > 3600 {
            bail!("`attestation.max_lifetime_secs` must be between 1 and 3600");
        }
        if self.leeway_secs > 300 {
            bail!("`attestation.leeway_secs` may be at most 300");
        }
        if self.checkpoint_every == 0 {
            bail!("`audit.checkpoint_every` must be at least 1");
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 16 * 1024 * 1024 {
            bail!("`limits.max_body_bytes` must be between 1024 and 16777216");
        }
        if let Some(u) = &self.database.url
            && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
        {
            bail!("the database URL must start with `postgres://` (unset it to use DATA_DIR/mandate.db)");
        }
        if !(1..=1000).contains(&self.database.max_connections) {
            bail!("`database.max_connections` must be between 1 and 1000");
        }
        if !(1..=300).contains(&self.database.acquire_timeout_secs) {
            bail!("`database.acquire_timeout_secs` must be between 1 and 300");
        }
        if let Some(t) = self.approvals.ttl_secs
            && !(1..=7 * 24 * 3600).contains(&t)
        {
            bail!("`approvals.ttl_secs` must be between 1 and 604800");
        }
        if let Some(n) = self.approvals.webhook_attempts
            && !(1..=20).contains(&n)
        {
            bail!("`approvals.webhook_attempts` must be between 1 and 20");
        }
        if let Some(u) = &self.approvals.webhook_url {
            match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                _ => bail!("`approvals.webhook_url` must be an http(s) URL"),
            }
        }
        Ok(())
    }
}
