//! The shared state behind every handler, and how it is built on start.

use std::collections::HashMap;
use std::sync::Arc;

use mandate_audit::NewEvent;
use mandate_core::{ApiToken, Clock, Role};
use mandate_policy::{EntityData, PolicyEngine, PolicySnapshot, PolicySources};
use mandate_secrets::MasterKey;
use mandate_store::Store;
use mandate_token::ExternalVerifier;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::audit_sink::{AuditSink, AuditUnavailable, AuditWriter, AuditWriterConfig};
use crate::cache::MandateCache;
use crate::keys::KeyManager;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::revocations::RevocationFeed;
use crate::settings::Settings;

pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub keys: Arc<KeyManager>,
    pub policy: PolicyEngine,
    pub registry: Registry,
    pub audit: AuditSink,
    pub cache: MandateCache,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// Verifiers for trusted external issuers, by `iss`.
    pub issuers: RwLock<HashMap<String, Arc<ExternalVerifier>>>,
    /// API tokens by secret hash, so that authenticating a decision request costs no query.
    pub api_tokens: RwLock<HashMap<String, ApiToken>>,
    /// Where the current policy set came from, for status output.
    pub policy_source: String,
    /// When each external issuer's JWKS was last re-fetched (rate limit).
    pub jwks_refreshed_at: parking_lot::Mutex<HashMap<String, i64>>,
    /// Wraps every secret's data key. Never logged, never leaves the process.
    pub(crate) master_key: MasterKey,
    /// Who waits on which approval, and the approval webhook.
    pub approvals: crate::approvals::Approvals,
    /// Who is logged in to the web console.
    pub(crate) console: crate::console::Sessions,
    /// Dynamic credentials being minted or dropped by this process.
    pub(crate) leases: crate::dyncreds::Leases,
}

/// The meta key holding a value sealed under the master key, so that a server started with
/// another master key than the one the store's secrets were sealed with refuses to start
/// instead of failing on every secret later.
const MASTER_KEY_CHECK: &str = "secrets.master_key_check";

async fn check_master_key(store: &dyn Store, master: &MasterKey) -> Result<(), StartError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let fail = |m: &str| StartError::Other(format!("the master key check in the store is not valid: {m}"));
    if let Some(text) = store.get_meta(MASTER_KEY_CHECK).await? {
        let parts: Vec<Vec<u8>> = text.split('.').map(|p| b64.decode(p)).collect::<Result<_, _>>().map_err(|e| fail(&e.to_string()))?;
        let [wrapped_key, key_nonce, nonce, ciphertext] = <[Vec<u8>; 4]>::try_from(parts).map_err(|_| fail("it has the wrong shape"))?;
        let sealed = mandate_secrets::SealedSecret { wrapped_key, key_nonce, nonce, ciphertext };
        return match mandate_secrets::open(master, "master-key-check", 1, &sealed) {
            Ok(_) => Ok(()),
            Err(_) => Err(StartError::Other(
                "this master key is not the one the store was set up with: start every replica with the same `MANDATE_MASTER_KEY` \
                 (or the same `keys/master.key`)"
                    .into(),
            )),
        };
    }
    let sealed = mandate_secrets::seal(master, "master-key-check", 1, b"mandate").map_err(|e| fail(&e.to_string()))?;
    let text = [&sealed.wrapped_key, &sealed.key_nonce, &sealed.nonce, &sealed.ciphertext].map(|p| b64.encode(p)).join(".");
    // Of replicas starting together on a new store, one sets it; the others check against it.
    if !store.swap_meta(MASTER_KEY_CHECK, None, &text).await? {
        return Box::pin(check_master_key(store, master)).await;
    }
    Ok(())
}

/// The background work a running server owns; `shutdown` stops it without losing an event.
pub struct Background {
    audit_writer: AuditWriter,
    sweeper: JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] mandate_store::StoreError),
    #[error("{0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("policy set `{path}` is not valid:\n{diagnostics}")]
    Policy { path: String, diagnostics: String },
    #[error("{0}")]
    Other(String),
}

impl AppState {
    /// Opens everything the server needs: keys, policies, the registry view, the audit writer.
    pub async fn start(
        mut settings: Settings,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Arc<AppState>, Background), StartError> {
        let now = clock.now_ms();
        let master_key = match settings.master_key.take() {
            Some(key) => key,
            None => crate::keys::load_or_create_master_key(&settings.key_dir)?,
        };
        // Replicas sharing a store (it announces changes) share one key ring, kept in it.
        let changes = store.changes();
        if let Err(e) = check_master_key(store.as_ref(), &master_key).await {
            // Replicas cannot work with different keys (the shared key ring is sealed with it):
            // refuse. A server alone on its store starts, and says its secrets will not open.
            if changes.is_some() {
                return Err(e);
            }
            tracing::error!(error = %e, "brokered secrets sealed with the previous master key will not open");
        }
        let keys = Arc::new(match changes {
            Some(_) => {
                KeyManager::open_shared(
                    store.clone(),
                    master_key.clone(),
                    &settings.issuer,
                    &settings.audience,
                    settings.leeway_secs(),
                    now,
                )
                .await?
            }
            None => KeyManager::open(&settings.key_dir, &settings.issuer, &settings.audience, settings.leeway_secs(), now)?,
        });
        let (sources, policy_source) = match &settings.policy_dir {
            Some(dir) => (
                PolicySources::from_dir(dir)
                    .map_err(|e| StartError::Policy { path: dir.display().to_string(), diagnostics: e.to_string() })?,
                dir.display().to_string(),
            ),
            None => (PolicySources::starter(), "built-in starter set".to_owned()),
        };
        let current = compile(&sources, &policy_source)?;
        let shadow = match &settings.shadow_policy_dir {
            Some(dir) => {
                let src = PolicySources::from_dir(dir)
                    .map_err(|e| StartError::Policy { path: dir.display().to_string(), diagnostics: e.to_string() })?;
                Some(compile(&src, &dir.display().to_string())?)
            }
            None => None,
        };
        let policy = PolicyEngine::new(current, shadow);
        if let Some(json) = store.get_entities().await? {
            match EntityData::parse(&json, Some(&policy.current())) {
                Ok(e) => policy.set_entities(e),
                Err(e) => tracing::error!(error = %e, "stored entity data no longer parses; starting with none"),
            }
        }
        let feed = RevocationFeed::new(settings.revocations_retained);
        let registry = Registry::load(store.list_agents().await?, store.live_tasks().await?, feed);
        let mut issuers = HashMap::new();
        for issuer in store.list_issuers().await? {
            match ExternalVerifier::new(&issuer) {
                Ok(v) => {
                    issuers.insert(issuer.issuer.clone(), Arc::new(v));
                }
                Err(e) => tracing::error!(issuer = %issuer.issuer, error = %e, "stored issuer is not usable"),
            }
        }
        let api_tokens =
            store.list_api_tokens().await?.into_iter().filter(|t| t.revoked_at_ms.is_none()).map(|t| (t.secret_hash.clone(), t)).collect();
        let metrics = Arc::new(Metrics::new());
        metrics.set_live_tasks(registry.live_task_count());
        let (audit, audit_writer) = AuditSink::start(
            store.clone(),
            keys.clone(),
            clock.clone(),
            metrics.clone(),
            AuditWriterConfig {
                batch_max: settings.audit_batch_max,
                checkpoint_every: settings.checkpoint_every,
                checkpoint_interval: settings.checkpoint_interval,
            },
        );
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| StartError::Other(format!("cannot build the HTTP client: {e}")))?;
        let webhook = settings.approval_webhook.clone();
        let state = Arc::new_cyclic(|weak| AppState {
            approvals: crate::approvals::Approvals::new(crate::webhook::Webhook::start(weak.clone(), webhook)),
            cache: MandateCache::new(settings.mandate_cache_capacity),
            settings,
            store,
            clock,
            keys,
            policy,
            registry,
            audit,
            metrics,
            http,
            issuers: RwLock::new(issuers),
            api_tokens: RwLock::new(api_tokens),
            policy_source,
            jwks_refreshed_at: parking_lot::Mutex::new(HashMap::new()),
            master_key,
            console: crate::console::Sessions::default(),
            leases: crate::dyncreds::Leases::new(weak.clone()),
        });
        let sweeper = tokio::spawn(crate::tasks::sweep_loop(Arc::downgrade(&state)));
        if let Some(rx) = changes {
            tokio::spawn(crate::sync::follow(Arc::downgrade(&state), rx));
        }
        Ok((state, Background { audit_writer, sweeper }))
    }

    /// Records an audit event and waits until it is durable.
    pub async fn record(&self, event: NewEvent) -> Result<u64, AuditUnavailable> {
        self.audit.record(event).await
    }

    /// Queues an audit event without waiting until it is durable, for records that answer no
    /// request (a gateway's tool-call outcomes). If the queue is full the event waits for room
    /// in a task of its own; if the trail has stopped it is lost, and the loss is logged (kind,
    /// agent and task only, never the details).
    pub fn enqueue_event(&self, ev: NewEvent) {
        // A refusal is logged where it happens; there is no one to answer.
        let _ = self.audit.enqueue_detached(ev);
    }

    /// The feed of every change that stops a task or an agent (and an agent enabled again).
    pub fn revocations(&self) -> &RevocationFeed {
        self.registry.revocations()
    }

    /// Builds an event stamped now.
    pub fn event(&self, kind: &str, actor: &str, agent: Option<&str>, task: Option<&str>, details: serde_json::Value) -> NewEvent {
        NewEvent {
            ts_ms: self.clock.now_ms(),
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            agent: agent.map(str::to_owned),
            task: task.map(str::to_owned),
            details,
        }
    }

    /// Makes a new API token; returns the secret, which is never stored.
    pub async fn create_api_token(&self, role: Role, label: &str) -> Result<(ApiToken, String), mandate_store::StoreError> {
        let secret = format!("mdt_{}", random_b64(32));
        let token = ApiToken {
            id: format!("tok_{}", random_hex(8)),
            role,
            label: label.to_owned(),
            secret_hash: hash_secret(&secret),
            created_at_ms: self.clock.now_ms(),
            revoked_at_ms: None,
        };
        self.store.insert_api_token(&token).await?;
        self.api_tokens.write().insert(token.secret_hash.clone(), token.clone());
        Ok((token, secret))
    }

    /// Installs a fixed bootstrap secret (from `MANDATE_ADMIN_TOKEN`) as an admin token.
    pub async fn install_admin_secret(&self, secret: &str) -> Result<ApiToken, mandate_store::StoreError> {
        let token = ApiToken {
            id: format!("tok_{}", random_hex(8)),
            role: Role::Admin,
            label: "bootstrap".to_owned(),
            secret_hash: hash_secret(secret),
            created_at_ms: self.clock.now_ms(),
            revoked_at_ms: None,
        };
        let token = match self.store.insert_api_token(&token).await {
            Ok(()) => token,
            // Another replica starting on the same new store installed the same secret first.
            Err(mandate_store::StoreError::Conflict(_)) => match self.store.api_token_by_hash(&token.secret_hash).await? {
                Some(existing) => existing,
                None => return Err(mandate_store::StoreError::Conflict("an api token with this secret".into())),
            },
            Err(e) => return Err(e),
        };
        self.api_tokens.write().insert(token.secret_hash.clone(), token.clone());
        Ok(token)
    }
}

impl Background {
    /// Stops the sweeper, then waits for the audit writer to drain. Call after the HTTP
    /// server has stopped and the state's last reference is about to go.
    pub async fn shutdown(self, state: Arc<AppState>) {
        state.revocations().close();
        self.sweeper.abort();
        let _ = self.sweeper.await;
        let ev = state.event(mandate_audit::kinds::SERVER_STOPPED, "system", None, None, serde_json::json!({}));
        if state.record(ev).await.is_err() {
            tracing::error!("could not record the server stop");
        }
        drop(state);
        self.audit_writer.stop().await;
    }
}

fn compile(src: &PolicySources, name: &str) -> Result<PolicySnapshot, StartError> {
    PolicySnapshot::compile(src).map_err(|diags| StartError::Policy {
        path: name.to_owned(),
        diagnostics: diags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"),
    })
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn random_b64(n: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut buf);
    hex::encode(buf)
}

/// A sortable unique id: milliseconds then randomness.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}
