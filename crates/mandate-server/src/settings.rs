//! The runtime settings the binary hands the server, already validated.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mandate_core::TrustDomain;
use mandate_secrets::MasterKey;
use mandate_store::credentials::CredentialProvider;

/// Everything the server needs to know that is not state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This server's issuer identifier: the `iss` of mandates and the `aud` attestations name.
    pub issuer: String,
    pub trust_domain: TrustDomain,
    /// The `aud` of every mandate: who may accept it (the decision API and gateways).
    pub audience: String,
    /// The `environment` decisions see when the enforcement point does not say.
    pub environment: String,
    /// Lifetime of a task whose intent asks for none.
    pub default_task_ttl: Duration,
    /// The cap on any task's lifetime.
    pub max_task_ttl: Duration,
    /// How many times a task may be handed on (delegation depth); 0 turns delegation off.
    pub max_delegation_depth: u32,
    /// Longest `exp - iat` an attestation may have.
    pub max_attestation_lifetime: Duration,
    /// Clock skew tolerated on every time claim.
    pub leeway: Duration,
    /// A checkpoint is signed after this many events...
    pub checkpoint_every: u64,
    /// ...or this long after the last one, whichever comes first.
    pub checkpoint_interval: Duration,
    /// How often expired tasks are swept.
    pub sweep_interval: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Where policies come from (`None`: the built-in starter set).
    pub policy_dir: Option<PathBuf>,
    pub shadow_policy_dir: Option<PathBuf>,
    /// Where signing keys live.
    pub key_dir: PathBuf,
    /// Largest group-commit batch of audit events.
    pub audit_batch_max: usize,
    /// Most verified mandates kept in the cache.
    pub mandate_cache_capacity: usize,
    /// The key that wraps every secret's data key (from `MANDATE_MASTER_KEY`). `None`: read
    /// `master.key` in the key directory, generating it on first start. Taken out on start.
    pub master_key: Option<MasterKey>,
    /// How many entries the revocation feed keeps for subscribers that resume.
    pub revocations_retained: usize,
    /// How often an open revocation stream gets a keep-alive comment.
    pub revocation_keepalive: Duration,
    /// How long an approval request stays open, and a granted one usable (never past its
    /// task's expiry).
    pub approval_ttl: Duration,
    /// Refuse an approval or denial from a token whose label is the agent's owner.
    pub approval_forbid_owner: bool,
    /// Where new approval requests are announced.
    pub approval_webhook: Option<crate::webhook::WebhookSettings>,
    /// Mark the console's cookies `Secure` (the server is reached over HTTPS).
    pub console_secure_cookie: bool,
    /// What creates and drops the per-task roles of `postgres-dynamic` secrets at their
    /// databases (`mandate serve` gives `mandate_dyncreds_postgres::PgCredentials`). `None`:
    /// leasing fails as if every such database were unreachable (`lease_database_unreachable`).
    pub dynamic_credentials: Option<Arc<dyn CredentialProvider>>,
}

impl Settings {
    /// Defaults for a server whose issuer and key directory are known.
    pub fn new(issuer: String, trust_domain: TrustDomain, key_dir: PathBuf) -> Self {
        Settings {
            issuer,
            trust_domain,
            audience: "mandate".to_owned(),
            environment: "production".to_owned(),
            default_task_ttl: Duration::from_secs(600),
            max_task_ttl: Duration::from_secs(3600),
            max_delegation_depth: 3,
            max_attestation_lifetime: Duration::from_secs(300),
            leeway: Duration::from_secs(60),
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(1),
            max_body_bytes: 64 * 1024,
            policy_dir: None,
            shadow_policy_dir: None,
            key_dir,
            audit_batch_max: 1024,
            mandate_cache_capacity: 100_000,
            master_key: None,
            revocations_retained: crate::revocations::RETAINED,
            revocation_keepalive: Duration::from_secs(15),
            approval_ttl: Duration::from_secs(900),
            approval_forbid_owner: false,
            approval_webhook: None,
            console_secure_cookie: false,
            dynamic_credentials: None,
        }
    }

    pub fn leeway_secs(&self) -> i64 {
        i64::try_from(self.leeway.as_secs()).unwrap_or(60)
    }
}
