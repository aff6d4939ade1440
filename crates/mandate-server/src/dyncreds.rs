//! Dynamic database credentials: a `postgres-dynamic` secret holds an admin connection and a
//! role template; each task that needs it gets a login role of its own, minted on first use,
//! valid until the task's expiry, and dropped as soon as the task ends.
//!
//! The lifecycle, and why it is safe across crashes and replicas:
//!
//! 1. **The lease row first.** Before any role exists, a [`Lease`] (role name, the sealed
//!    credential) is stored. A process that dies right after `CREATE ROLE` has thus left a row
//!    saying which role to drop, and the row is due once the task ends or expires.
//! 2. **One transaction at the database.** `CREATE ROLE … LOGIN NOINHERIT VALID UNTIL <task
//!    expiry>` and every grant of the template run in one transaction: either the role exists
//!    with exactly the template's grants, or not at all. The password goes over the wire only
//!    as a SCRAM-SHA-256 verifier, so it is in no statement the database could log.
//! 3. **Dropping.** When a task ends, its leases are dropped at once (in a task of their own,
//!    so ending stays fast); every sweep also drops every due lease, so a lease outlives a
//!    restart, and any replica drops a crashed one's leases. A drop is `NOLOGIN`, ending the
//!    role's sessions, `DROP OWNED BY`, `DROP ROLE IF EXISTS` (idempotent), then marking the
//!    lease dropped (once). An unreachable database leaves the lease due: the next sweep
//!    retries.
//!
//! No password, admin URL or credential URL reaches a log, an error, an answer or the trail.
//!
//! This module speaks no SQL: the database side of steps 2 and 3 (the statements, their
//! transactions and timeouts, an already dropped role) is a [`CredentialProvider`]'s, given
//! in [`Settings::dynamic_credentials`](crate::Settings::dynamic_credentials); the binary gives
//! the PostgreSQL one, `mandate_dyncreds_postgres::PgCredentials`. Its [`CredentialError`]s
//! become [`LeaseError`]s with the same codes and messages.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use mandate_audit::kinds;
use mandate_core::TaskStatus;
use mandate_secrets::{SealedSecret, SecretError};
pub use mandate_store::credentials::{CredentialError, CredentialProvider};
use mandate_store::credentials::{NewRole, ROLE_PLACEHOLDER};
use mandate_store::{Lease, LeaseFilter, SealedSecretBlob, SecretKind, StoreError};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::state::{AppState, new_id, random_b64, random_hex};

/// Every minted role's name starts with this; the rest is random lowercase hex.
pub const ROLE_PREFIX: &str = "mandate_";
/// At most this many grants in a template, each at most this long.
const MAX_GRANTS: usize = 64;
const MAX_GRANT_BYTES: usize = 4096;

/// The configuration of a `postgres-dynamic` secret, checked. Its `Debug` shows no URL.
pub struct PgDynamicConfig {
    admin: Zeroizing<String>,
    grants: Vec<String>,
    connect: url::Url,
}

impl fmt::Debug for PgDynamicConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgDynamicConfig").field("admin", &"<redacted>").field("grants", &self.grants.len()).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    admin_url: String,
    grants: Vec<String>,
    #[serde(default)]
    connect_url: Option<String>,
}

/// Why a `postgres-dynamic` configuration was refused. The message never holds a URL.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub const CODE: &'static str = "invalid_dynamic_secret";
}

fn refuse(m: impl Into<String>) -> ConfigError {
    ConfigError(m.into())
}

impl PgDynamicConfig {
    /// Parses and checks a configuration: `{"admin_url", "grants", "connect_url"?}`.
    pub fn parse(value: &[u8]) -> Result<Self, ConfigError> {
        let file: ConfigFile = serde_json::from_slice(value).map_err(|e| {
            // serde's message may quote a value (an URL with its password): only field names
            // and positions are repeated.
            let text = e.to_string();
            let detail = if text.starts_with("unknown field") || text.starts_with("missing field") {
                text.split(" at line").next().unwrap_or_default().to_owned()
            } else {
                format!("line {}, column {}", e.line(), e.column())
            };
            refuse(format!(
                "a postgres-dynamic secret is JSON `{{\"admin_url\": \"postgres://…\", \"grants\": [\"GRANT … TO {{role}}\", …], \
                 \"connect_url\": \"postgres://…\" (optional)}}`: {detail}"
            ))
        })?;
        let admin = Zeroizing::new(file.admin_url);
        let admin_url = pg_url("admin_url", &admin)?;
        if !mandate_store::credentials::admin_url_parses(&admin) {
            return Err(refuse("`admin_url` is not a PostgreSQL connection URL"));
        }
        let connect = match file.connect_url {
            Some(text) => {
                let url = pg_url("connect_url", &text)?;
                if !url.username().is_empty() || url.password().is_some() {
                    return Err(refuse("`connect_url` names no user or password: each task's role and password are filled in"));
                }
                url
            }
            None => {
                let mut url = admin_url;
                let _ = url.set_username("");
                let _ = url.set_password(None);
                url
            }
        };
        if file.grants.is_empty() {
            return Err(refuse("`grants` needs at least one statement, e.g. `GRANT SELECT ON app.orders TO {role}`"));
        }
        if file.grants.len() > MAX_GRANTS {
            return Err(refuse(format!("`grants` may hold at most {MAX_GRANTS} statements")));
        }
        for (i, g) in file.grants.iter().enumerate() {
            let n = i + 1;
            if g.len() > MAX_GRANT_BYTES {
                return Err(refuse(format!("grant {n} is longer than {MAX_GRANT_BYTES} bytes")));
            }
            if !g.contains(ROLE_PLACEHOLDER) {
                return Err(refuse(format!("grant {n} does not name the role: write `{ROLE_PLACEHOLDER}` where it goes")));
            }
            if g.replace(ROLE_PLACEHOLDER, "").contains(['{', '}']) {
                return Err(refuse(format!("grant {n} holds a placeholder other than `{ROLE_PLACEHOLDER}`; only the role is filled in")));
            }
            if g.contains(';') {
                return Err(refuse(format!("grant {n} holds `;`: each grant is one statement")));
            }
        }
        Ok(PgDynamicConfig { admin, grants: file.grants, connect })
    }

    /// The URL a task's tools connect with: the connect URL with the role and its password.
    fn credential_url(&self, role: &str, password: &str) -> Result<Zeroizing<String>, LeaseError> {
        let mut url = self.connect.clone();
        url.set_username(role).map_err(|()| LeaseError::Config)?;
        url.set_password(Some(password)).map_err(|()| LeaseError::Config)?;
        Ok(Zeroizing::new(url.to_string()))
    }
}

fn pg_url(field: &str, text: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text).map_err(|_| refuse(format!("`{field}` is not a URL")))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(refuse(format!("`{field}` must be a `postgres://` URL")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(refuse(format!("`{field}` names no host")));
    }
    Ok(url)
}

/// Why a lease could not be had or dropped. Messages never hold a URL or password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    #[error("secret `{0}` not found")]
    SecretNotFound(String),
    #[error("secret `{0}` is not a postgres-dynamic secret; it has no per-task credentials")]
    NotDynamic(String),
    /// The task may not act: `task_unknown`, `task_revoked`, `task_completed`, `task_expired`,
    /// `agent_disabled`, ….
    #[error("task `{1}` may not get credentials: {0}")]
    Task(&'static str, String),
    #[error("the stored postgres-dynamic configuration is not usable; store a valid one with `mandate secret rotate`")]
    Config,
    #[error("the admin database cannot be reached: {0}")]
    Unreachable(String),
    #[error("the admin database refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("the audit trail is unavailable")]
    Audit,
}

impl LeaseError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            LeaseError::SecretNotFound(_) => "secret_not_found",
            LeaseError::NotDynamic(_) => "secret_not_dynamic",
            LeaseError::Task(reason, _) => reason,
            LeaseError::Config => "dynamic_secret_unusable",
            LeaseError::Unreachable(_) => "lease_database_unreachable",
            LeaseError::Refused(_) => "lease_refused_by_database",
            LeaseError::Store(e) => e.code(),
            LeaseError::Secret(e) => e.code(),
            LeaseError::Audit => "audit_unavailable",
        }
    }
}

/// What the database said, as the lease error it is: the same codes and messages whatever
/// speaks to the database.
impl From<CredentialError> for LeaseError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Unreachable(what) => LeaseError::Unreachable(what),
            CredentialError::Refused { sqlstate, message } => LeaseError::Refused(format!("{message} (SQLSTATE {sqlstate})")),
            CredentialError::Config => LeaseError::Config,
        }
    }
}

/// Per-process lease bookkeeping: which leases are being minted or dropped right now (so a
/// drop never races a mint in this process), and whether a sweep is running.
pub(crate) struct Leases {
    me: Weak<AppState>,
    busy: parking_lot::Mutex<HashSet<String>>,
    sweeping: AtomicBool,
}

impl Leases {
    pub(crate) fn new(me: Weak<AppState>) -> Self {
        Leases { me, busy: parking_lot::Mutex::new(HashSet::new()), sweeping: AtomicBool::new(false) }
    }

    /// Claims `id`; `None` if another call in this process holds it.
    fn claim(&self, id: &str) -> Option<Claim<'_>> {
        self.busy.lock().insert(id.to_owned()).then(|| Claim { leases: self, id: id.to_owned() })
    }
}

struct Claim<'a> {
    leases: &'a Leases,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.leases.busy.lock().remove(&self.id);
    }
}

impl AppState {
    /// The credential of dynamic secret `secret` for task `task_id`, minted on first use: the
    /// lease, its credential still sealed (open it with [`AppState::open_lease`]). The task
    /// must be live and its agent active; a second call for the same task returns the same
    /// lease. `actor` is recorded as who asked.
    pub async fn lease(&self, secret: &str, task_id: &str, actor: &str) -> Result<Lease, LeaseError> {
        if crate::sync::ensure_task(self, task_id).await.is_err() {
            return Err(LeaseError::Store(StoreError::Backend("cannot read the task".into())));
        }
        let task = self.registry.task(task_id).ok_or_else(|| LeaseError::Task("task_unknown", mandate_core::clip(task_id)))?;
        crate::pipeline::task_may_act(self, task_id, &task.agent).map_err(|r| LeaseError::Task(r.as_str(), mandate_core::clip(task_id)))?;
        let record = self.store.latest_secret(secret).await?.ok_or_else(|| LeaseError::SecretNotFound(mandate_core::clip(secret)))?;
        if record.kind != SecretKind::PostgresDynamic {
            return Err(LeaseError::NotDynamic(mandate_core::clip(secret)));
        }
        if let Some(existing) = self.store.undropped_lease(secret, task_id).await? {
            return Ok(existing);
        }
        let config = self.dynamic_config(&record.name, record.version, &record.sealed)?;

        let id = new_id("lease");
        let role = format!("{ROLE_PREFIX}{}", random_hex(12));
        let password = Zeroizing::new(random_b64(32));
        let url = config.credential_url(&role, &password)?;
        let sealed = mandate_secrets::seal(&self.master_key, &id, 1, url.as_bytes())?;
        let lease = Lease {
            id: id.clone(),
            secret: record.name.clone(),
            secret_version: record.version,
            task_id: task_id.to_owned(),
            role: role.clone(),
            credential: SealedSecretBlob {
                wrapped_key: sealed.wrapped_key,
                key_nonce: sealed.key_nonce,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
            },
            created_at_ms: self.clock.now_ms(),
            expires_at_ms: task.expires_at_ms,
            dropped_at_ms: None,
            drop_reason: None,
        };
        let claim = self.leases.claim(&id);
        match self.store.insert_lease(&lease).await {
            Ok(()) => {}
            // Another request for the same task stored its lease first: that one is the task's.
            Err(StoreError::Conflict(_)) => {
                return self.store.undropped_lease(secret, task_id).await?.ok_or_else(|| LeaseError::Task("task_revoked", task_id.into()));
            }
            Err(e) => return Err(e.into()),
        }
        let details = |extra: serde_json::Value| {
            let mut d = json!({
                "lease_id": id, "secret": record.name, "version": record.version, "role": role, "expires_at_ms": lease.expires_at_ms,
            });
            if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
                d.extend(extra.clone());
            }
            d
        };
        if let Err(e) = self.create_role(&config, &role, &password, lease.expires_at_ms).await {
            tracing::warn!(secret = %record.name, task = %task_id, role = %role, code = e.code(), error = %e, "could not mint a database role");
            if let Err(se) = self.store.drop_lease(&id, self.clock.now_ms(), "mint_failed").await {
                tracing::error!(lease = %id, error = %se, "could not mark a failed lease dropped; the sweep will drop it");
            }
            let ev = self.event(
                kinds::SECRET_LEASE_FAILED,
                actor,
                Some(&task.agent),
                Some(task_id),
                details(json!({ "error": e.code(), "message": e.to_string() })),
            );
            if self.record(ev).await.is_err() {
                tracing::error!(lease = %id, "could not record a failed lease");
            }
            return Err(e);
        }
        let ev = self.event(kinds::SECRET_LEASE_CREATED, actor, Some(&task.agent), Some(task_id), details(json!({})));
        if self.record(ev).await.is_err() {
            // Not handed out unrecorded: the role goes again.
            drop(claim);
            self.drop_lease(&lease, "audit_unavailable").await;
            return Err(LeaseError::Audit);
        }
        drop(claim);
        // The task may have ended while the role was being made (its end skipped this lease,
        // which was busy): drop it now rather than at the next sweep.
        if let Err(reason) = crate::pipeline::task_may_act(self, task_id, &task.agent) {
            self.drop_lease(&lease, reason.as_str()).await;
            return Err(LeaseError::Task(reason.as_str(), mandate_core::clip(task_id)));
        }
        Ok(lease)
    }

    /// A lease's credential (a connection URL), decrypted; zeroized when dropped.
    pub fn open_lease(&self, lease: &Lease) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let c = &lease.credential;
        let sealed = SealedSecret {
            wrapped_key: c.wrapped_key.clone(),
            key_nonce: c.key_nonce.clone(),
            nonce: c.nonce.clone(),
            ciphertext: c.ciphertext.clone(),
        };
        mandate_secrets::open(&self.master_key, &lease.id, 1, &sealed)
    }

    fn dynamic_config(&self, name: &str, version: u32, sealed: &SealedSecretBlob) -> Result<PgDynamicConfig, LeaseError> {
        let s = SealedSecret {
            wrapped_key: sealed.wrapped_key.clone(),
            key_nonce: sealed.key_nonce.clone(),
            nonce: sealed.nonce.clone(),
            ciphertext: sealed.ciphertext.clone(),
        };
        let value = mandate_secrets::open(&self.master_key, name, version, &s)?;
        PgDynamicConfig::parse(&value).map_err(|_| LeaseError::Config)
    }

    /// What speaks to the databases of dynamic secrets ([`Settings::dynamic_credentials`]).
    ///
    /// [`Settings::dynamic_credentials`]: crate::Settings::dynamic_credentials
    fn credentials(&self) -> Result<&dyn CredentialProvider, LeaseError> {
        self.settings
            .dynamic_credentials
            .as_deref()
            .ok_or_else(|| LeaseError::Unreachable("this server was started without a driver for dynamic credentials".into()))
    }

    /// The task's role at the database, with the template's grants, valid until `expires_at_ms`.
    async fn create_role(&self, config: &PgDynamicConfig, role: &str, password: &str, expires_at_ms: i64) -> Result<(), LeaseError> {
        let new = NewRole { name: role, password, valid_until_ms: expires_at_ms, grants: &config.grants };
        Ok(self.credentials()?.create_role(&config.admin, &new).await?)
    }

    /// Drops one lease's role and marks it dropped; `true` when it is dropped (by this call or
    /// before). Failures are logged and leave the lease due for the next sweep.
    pub(crate) async fn drop_lease(&self, lease: &Lease, reason: &str) -> bool {
        match self.try_drop_lease(lease, reason).await {
            Ok(()) => true,
            Err(e) => {
                self.metrics.lease_drop_failure();
                tracing::warn!(lease = %lease.id, secret = %lease.secret, role = %lease.role, code = e.code(), error = %e, "could not drop a lease; will retry");
                false
            }
        }
    }

    async fn try_drop_lease(&self, lease: &Lease, reason: &str) -> Result<(), LeaseError> {
        let Some(_claim) = self.leases.claim(&lease.id) else { return Ok(()) };
        if !valid_role(&lease.role) {
            return Err(LeaseError::Store(StoreError::Corrupt(format!("lease `{}` names an invalid role", lease.id))));
        }
        match self.store.latest_secret(&lease.secret).await? {
            Some(record) if record.kind == SecretKind::PostgresDynamic => {
                let config = self.dynamic_config(&record.name, record.version, &record.sealed)?;
                self.credentials()?.drop_role(&config.admin, &lease.role).await?;
            }
            // Deleting a secret with undropped leases is refused; should one be gone anyway, no
            // database is known to drop the role from (it still expires at `expires_at_ms`).
            _ => tracing::error!(lease = %lease.id, secret = %lease.secret, "the secret of a lease is gone; its role cannot be dropped"),
        }
        if self.store.drop_lease(&lease.id, self.clock.now_ms(), reason).await? {
            let agent = self.registry.task(&lease.task_id).map(|t| t.agent);
            let ev = self.event(
                kinds::SECRET_LEASE_DROPPED,
                "system",
                agent.as_deref(),
                Some(&lease.task_id),
                json!({ "lease_id": lease.id, "secret": lease.secret, "version": lease.secret_version, "role": lease.role, "reason": reason }),
            );
            if self.record(ev).await.is_err() {
                tracing::error!(lease = %lease.id, "could not record a dropped lease");
            }
        }
        Ok(())
    }
}

/// A role name this module made: the prefix and lowercase hex, nothing to quote.
fn valid_role(role: &str) -> bool {
    role.strip_prefix(ROLE_PREFIX).is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// What a task's end means for its leases' `drop_reason`.
fn reason_of(status: TaskStatus) -> String {
    format!("task_{}", status.as_str())
}

/// Drops the leases of tasks that just ended, in a task of its own (ending stays fast). What
/// fails here stays due and the sweep retries it.
pub(crate) fn tasks_ended(state: &AppState, ids: &[String], status: TaskStatus) {
    let Some(state) = state.leases.me.upgrade() else { return };
    let ids = ids.to_vec();
    tokio::spawn(async move {
        for id in ids {
            let filter = LeaseFilter { task: Some(id.clone()), undropped: true, limit: usize::MAX, ..LeaseFilter::default() };
            match state.store.list_leases(&filter).await {
                Ok(leases) => {
                    for lease in leases {
                        state.drop_lease(&lease, &reason_of(status)).await;
                    }
                }
                Err(e) => tracing::warn!(task = %id, error = %e, "could not read an ended task's leases; the sweep will drop them"),
            }
        }
    });
}

/// Drops every due lease: of a task no longer live (ended here, on another replica, or while
/// no process ran), or past its expiry. Runs in a task of its own, one at a time; a database
/// that cannot be reached is tried once per sweep, its other leases wait for the next one.
pub(crate) fn sweep(state: &Arc<AppState>) {
    if state.leases.sweeping.swap(true, Ordering::SeqCst) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let now = state.clock.now_ms();
        match state.store.due_leases(now).await {
            Ok(due) => {
                let mut unreachable: HashSet<String> = HashSet::new();
                for lease in due {
                    if unreachable.contains(&lease.secret) {
                        continue;
                    }
                    let reason = match state.store.get_task(&lease.task_id).await {
                        Ok(Some(t)) if t.status != TaskStatus::Live => reason_of(t.status),
                        Ok(Some(_)) => "lease_expired".to_owned(),
                        Ok(None) => "task_unknown".to_owned(),
                        Err(_) => continue,
                    };
                    if !state.drop_lease(&lease, &reason).await {
                        unreachable.insert(lease.secret.clone());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read due leases; will retry"),
        }
        state.leases.sweeping.store(false, Ordering::SeqCst);
    });
}

/// Whether secret `name` has undropped leases (it may then not be deleted).
pub(crate) async fn in_use(state: &AppState, name: &str) -> Result<bool, StoreError> {
    let f = LeaseFilter { secret: Some(name.to_owned()), undropped: true, limit: 1, ..LeaseFilter::default() };
    Ok(!state.store.list_leases(&f).await?.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
    use super::*;

    fn parse(v: serde_json::Value) -> Result<PgDynamicConfig, ConfigError> {
        PgDynamicConfig::parse(v.to_string().as_bytes())
    }

    #[test]
    fn a_good_config_parses_and_connects_without_the_admin() {
        let c = parse(json!({
            "admin_url": "postgres://admin:s3cret@db.internal:6432/app?sslmode=require",
            "grants": ["GRANT USAGE ON SCHEMA app TO {role}", "GRANT SELECT ON app.orders TO {role}"],
        }))
        .unwrap();
        assert_eq!(c.connect.as_str(), "postgres://db.internal:6432/app?sslmode=require");
        let url = c.credential_url("mandate_ab12", "pw-_x").unwrap();
        assert_eq!(url.as_str(), "postgres://mandate_ab12:pw-_x@db.internal:6432/app?sslmode=require");
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = parse(json!({
            "admin_url": "postgres://admin:s3cret@10.0.0.1/app",
            "grants": ["GRANT SELECT ON t TO {role}"],
            "connect_url": "postgresql://pgbouncer.internal:6432/app",
        }))
        .unwrap();
        assert_eq!(c.connect.as_str(), "postgresql://pgbouncer.internal:6432/app");
    }

    #[test]
    fn bad_configs_are_refused_without_echoing_urls() {
        let admin = "postgres://admin:s3cret@db/app";
        let cases = [
            (json!({"admin_url": admin, "grants": []}), "at least one"),
            (json!({"admin_url": admin, "grants": ["GRANT SELECT ON t TO bob"]}), "does not name the role"),
            (json!({"admin_url": admin, "grants": ["GRANT SELECT ON {table} TO {role}"]}), "placeholder other than"),
            (json!({"admin_url": admin, "grants": ["GRANT SELECT ON t TO {role}; DROP TABLE t"]}), "one statement"),
            (json!({"admin_url": "http://admin:s3cret@db/app", "grants": ["GRANT x TO {role}"]}), "postgres://"),
            (json!({"admin_url": "not a url s3cret", "grants": ["GRANT x TO {role}"]}), "not a URL"),
            (
                json!({"admin_url": "postgres://admin:s3cret@db/app?sslmode=bogus", "grants": ["GRANT x TO {role}"]}),
                "not a PostgreSQL connection URL",
            ),
            (json!({"admin_url": admin, "grants": ["GRANT x TO {role}"], "connect_url": "postgres://u:s3cret@db/app"}), "no user"),
            (json!({"admin_url": admin, "grants": ["GRANT x TO {role}"], "other": 1}), "unknown field `other`"),
            (json!({"grants": ["GRANT x TO {role}"]}), "missing field `admin_url`"),
            (json!({"admin_url": admin, "grants": "GRANT s3cret TO {role}"}), "line 1"),
        ];
        for (v, expected) in cases {
            let e = parse(v.clone()).unwrap_err().to_string();
            assert!(e.contains(expected), "{v}: {e}");
            assert!(!e.contains("s3cret"), "{v}: {e}");
        }
        assert!(PgDynamicConfig::parse(b"{not json").is_err());
    }

    #[test]
    fn roles_are_prefix_and_hex() {
        assert!(valid_role("mandate_0af9"));
        for bad in ["mandate_", "mandate_AB", "bob", "mandate_1\"; DROP", "xmandate_1"] {
            assert!(!valid_role(bad), "{bad}");
        }
    }

    #[test]
    fn database_errors_keep_their_codes_and_messages() {
        let cases = [
            (
                CredentialError::Unreachable("connection refused".into()),
                "lease_database_unreachable",
                "the admin database cannot be reached: connection refused",
            ),
            (
                CredentialError::Refused { sqlstate: "42501".into(), message: "permission denied for schema app".into() },
                "lease_refused_by_database",
                "the admin database refused: permission denied for schema app (SQLSTATE 42501)",
            ),
            (
                CredentialError::Refused { sqlstate: "28P01".into(), message: "the admin login was refused".into() },
                "lease_refused_by_database",
                "the admin database refused: the admin login was refused (SQLSTATE 28P01)",
            ),
            (
                CredentialError::Config,
                "dynamic_secret_unusable",
                "the stored postgres-dynamic configuration is not usable; store a valid one with `mandate secret rotate`",
            ),
        ];
        for (e, code, message) in cases {
            let what = format!("{e:?}");
            let e = LeaseError::from(e);
            assert_eq!((e.code(), e.to_string().as_str()), (code, message), "{what}");
        }
    }
}
