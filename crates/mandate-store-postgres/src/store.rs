//! [`PgStore`]: connecting, migrating, and the async [`Store`] implementation.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use mandate_audit::{ChainHead, Checkpoint, NewEvent, SealedEvent};
use mandate_core::{Agent, AgentStatus, ApiToken, Approval, ApprovalStatus, Issuer, Task, TaskEnd};
use mandate_store::{ApprovalFilter, AuditQuery, Change, Lease, LeaseFilter, SecretRecord, Store, StoreError, StoreResult, TaskFilter};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use tokio::sync::{broadcast, oneshot};

use crate::error::{db, redact};
use crate::notify::Envelope;
use crate::sql::{approvals, audit, directory, leases, secrets, tasks};
use crate::{PgOptions, listener, migrations};

/// How many changes a slow [`changes()`](Store::changes) receiver may fall behind before it
/// gets `RecvError::Lagged`.
const CHANGES_CAPACITY: usize = 4096;

/// The `application_name` of pooled connections.
const APPLICATION_NAME: &str = "mandate";

/// Mandate's shared store: one PostgreSQL database (or one schema of it) that several Mandate
/// servers use at once.
///
/// Every call runs on a pooled connection; writes that span rows run in one transaction, and
/// return once committed (durable under the server's default `synchronous_commit`). Each store
/// also holds a listener connection that forwards what the other stores change (see
/// [`Store::changes`] and the crate docs). Clones share the pool and the listener; the listener
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    shared: Arc<Shared>,
}

struct Shared {
    envelope: Envelope,
    changes: broadcast::Sender<Change>,
    redacted_url: String,
    /// Dropped with the last clone, which stops the listener.
    _stop_listener: oneshot::Sender<()>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.shared.redacted_url)
            .field("schema", &self.shared.envelope.schema)
            .field("origin", &self.shared.envelope.origin)
            .finish_non_exhaustive()
    }
}

/// Brings the database's schema up to [`SCHEMA_VERSION`](crate::SCHEMA_VERSION) (creating
/// `opts.schema` if it is set and missing) and returns the versions before and after. This is
/// what [`PgStore::connect`] does first; it is safe to run while servers are starting.
pub async fn migrate(opts: &PgOptions) -> Result<(i64, i64), StoreError> {
    let options = opts.connect_options(APPLICATION_NAME)?;
    migrations::run(&options, &opts.session_setup(), opts.schema.as_deref()).await.map_err(|e| hide_password(e, opts))
}

impl PgStore {
    /// Connects to the database, brings its schema up to date, and starts the change listener,
    /// which is LISTENing when this returns. Refuses a schema newer than this release
    /// ([`StoreError::SchemaTooNew`]). Must be called within a Tokio runtime.
    pub async fn connect(opts: &PgOptions) -> Result<PgStore, StoreError> {
        Self::open(opts).await.map_err(|e| hide_password(e, opts))
    }

    async fn open(opts: &PgOptions) -> StoreResult<PgStore> {
        let options = opts.connect_options(APPLICATION_NAME)?;
        let setup = opts.session_setup();
        let (from, to) = migrations::run(&options, &setup, opts.schema.as_deref()).await?;
        let pool = pool_options(&setup)
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(db)?;
        let row = sqlx::query("SELECT coalesce(current_schema(), '')").fetch_one(&pool).await.map_err(db)?;
        let schema: String = row.try_get(0).map_err(db)?;
        let origin = format!("{:016x}", rand::random::<u64>());
        let envelope = Envelope { origin: origin.clone(), schema: schema.clone() };
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let listener_options = opts.connect_options(&listener_application_name(&origin))?;
        let stop = listener::start(pool_options(&setup), listener_options, opts.acquire_timeout, envelope.clone(), changes.clone()).await?;
        tracing::info!(url = %opts.redacted_url(), schema = %schema, origin = %origin, from, to, "opened postgres store");
        Ok(PgStore { pool, shared: Arc::new(Shared { envelope, changes, redacted_url: opts.redacted_url(), _stop_listener: stop }) })
    }

    /// This store's origin id: the random id its change notifications carry (and its listener
    /// drops when they come back).
    pub fn origin(&self) -> &str {
        &self.shared.envelope.origin
    }

    /// The schema the store's tables are in.
    pub fn schema(&self) -> &str {
        &self.shared.envelope.schema
    }

    /// The `application_name` of this store's listener connection.
    pub fn listener_application_name(&self) -> String {
        listener_application_name(self.origin())
    }

    fn env(&self) -> &Envelope {
        &self.shared.envelope
    }
}

/// Pool options whose new connections run `setup` first.
fn pool_options(setup: &str) -> PgPoolOptions {
    let setup: Arc<str> = Arc::from(setup);
    PgPoolOptions::new().after_connect(move |conn, _| {
        let setup = Arc::clone(&setup);
        Box::pin(async move {
            conn.execute(&*setup).await?;
            Ok(())
        })
    })
}

fn listener_application_name(origin: &str) -> String {
    format!("mandate-listener-{origin}")
}

/// `e` with the URL's password masked wherever it might appear.
fn hide_password(e: StoreError, opts: &PgOptions) -> StoreError {
    let password = opts.password();
    let hide = |m: String| redact(&m, password.as_deref());
    match e {
        StoreError::Conflict(m) => StoreError::Conflict(hide(m)),
        StoreError::NotFound(m) => StoreError::NotFound(hide(m)),
        StoreError::Invalid(m) => StoreError::Invalid(hide(m)),
        StoreError::Backend(m) => StoreError::Backend(hide(m)),
        StoreError::Corrupt(m) => StoreError::Corrupt(hide(m)),
        other => other,
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        directory::get_meta(&self.pool, key).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        directory::put_meta(&self.pool, self.env(), key, value).await
    }

    async fn swap_meta(&self, key: &str, expected: Option<&str>, value: &str) -> StoreResult<bool> {
        directory::swap_meta(&self.pool, self.env(), key, expected, value).await
    }

    fn changes(&self) -> Option<broadcast::Receiver<Change>> {
        Some(self.shared.changes.subscribe())
    }

    async fn insert_api_token(&self, t: &ApiToken) -> StoreResult<()> {
        directory::insert_api_token(&self.pool, self.env(), t).await
    }

    async fn api_token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>> {
        directory::api_token_by_hash(&self.pool, secret_hash).await
    }

    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        directory::list_api_tokens(&self.pool).await
    }

    async fn revoke_api_token(&self, id: &str, at_ms: i64) -> StoreResult<bool> {
        directory::revoke_api_token(&self.pool, self.env(), id, at_ms).await
    }

    async fn insert_agent(&self, a: &Agent) -> StoreResult<()> {
        directory::insert_agent(&self.pool, self.env(), a).await
    }

    async fn get_agent(&self, name: &str) -> StoreResult<Option<Agent>> {
        directory::get_agent(&self.pool, name).await
    }

    async fn list_agents(&self) -> StoreResult<Vec<Agent>> {
        directory::list_agents(&self.pool).await
    }

    async fn set_agent_status(&self, name: &str, status: AgentStatus, at_ms: i64) -> StoreResult<bool> {
        directory::set_agent_status(&self.pool, self.env(), name, status, at_ms).await
    }

    async fn touch_agent(&self, name: &str, at_ms: i64) -> StoreResult<()> {
        directory::touch_agent(&self.pool, name, at_ms).await
    }

    async fn insert_task(&self, t: &Task) -> StoreResult<()> {
        tasks::insert_task(&self.pool, self.env(), t).await
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        tasks::get_task(&self.pool, id).await
    }

    async fn list_tasks(&self, f: &TaskFilter) -> StoreResult<Vec<Task>> {
        tasks::list_tasks(&self.pool, f).await
    }

    async fn live_tasks(&self) -> StoreResult<Vec<Task>> {
        tasks::live_tasks(&self.pool).await
    }

    async fn end_tasks(&self, ids: &[String], end: &TaskEnd) -> StoreResult<Vec<String>> {
        tasks::end_tasks(&self.pool, self.env(), ids, end).await
    }

    async fn live_task_ids_of_agent(&self, agent: &str) -> StoreResult<Vec<String>> {
        tasks::live_task_ids_of_agent(&self.pool, agent).await
    }

    async fn expired_live_task_ids(&self, now_ms: i64) -> StoreResult<Vec<String>> {
        tasks::expired_live_task_ids(&self.pool, now_ms).await
    }

    async fn descendant_task_ids(&self, id: &str) -> StoreResult<Vec<String>> {
        tasks::descendant_task_ids(&self.pool, id).await
    }

    async fn consume_jti(&self, issuer: &str, jti: &str, expires_at_ms: i64, now_ms: i64) -> StoreResult<bool> {
        tasks::consume_jti(&self.pool, issuer, jti, expires_at_ms, now_ms).await
    }

    async fn upsert_issuer(&self, i: &Issuer) -> StoreResult<()> {
        directory::upsert_issuer(&self.pool, self.env(), i).await
    }

    async fn get_issuer(&self, issuer: &str) -> StoreResult<Option<Issuer>> {
        directory::get_issuer(&self.pool, issuer).await
    }

    async fn list_issuers(&self) -> StoreResult<Vec<Issuer>> {
        directory::list_issuers(&self.pool).await
    }

    async fn delete_issuer(&self, issuer: &str) -> StoreResult<bool> {
        directory::delete_issuer(&self.pool, self.env(), issuer).await
    }

    async fn put_entities(&self, json: &str) -> StoreResult<()> {
        directory::put_entities(&self.pool, self.env(), json).await
    }

    async fn get_entities(&self) -> StoreResult<Option<String>> {
        directory::get_entities(&self.pool).await
    }

    async fn put_secret_version(&self, s: &SecretRecord) -> StoreResult<()> {
        secrets::put_version(&self.pool, self.env(), s).await
    }

    async fn latest_secret(&self, name: &str) -> StoreResult<Option<SecretRecord>> {
        secrets::latest(&self.pool, name).await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
        secrets::list(&self.pool).await
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        secrets::delete(&self.pool, self.env(), name).await
    }

    async fn insert_lease(&self, l: &Lease) -> StoreResult<()> {
        leases::insert(&self.pool, l).await
    }

    async fn get_lease(&self, id: &str) -> StoreResult<Option<Lease>> {
        leases::get_one(&self.pool, id).await
    }

    async fn undropped_lease(&self, secret: &str, task_id: &str) -> StoreResult<Option<Lease>> {
        leases::undropped(&self.pool, secret, task_id).await
    }

    async fn list_leases(&self, f: &LeaseFilter) -> StoreResult<Vec<Lease>> {
        leases::list(&self.pool, f).await
    }

    async fn due_leases(&self, now_ms: i64) -> StoreResult<Vec<Lease>> {
        leases::due(&self.pool, now_ms).await
    }

    async fn drop_lease(&self, id: &str, at_ms: i64, reason: &str) -> StoreResult<bool> {
        leases::mark_dropped(&self.pool, id, at_ms, reason).await
    }

    async fn append_audit(&self, events: Vec<NewEvent>) -> StoreResult<Vec<SealedEvent>> {
        audit::append(&self.pool, events).await
    }

    async fn audit_head(&self) -> StoreResult<ChainHead> {
        audit::head(&self.pool).await
    }

    async fn read_audit(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<SealedEvent>> {
        audit::read(&self.pool, after_seq, limit).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<SealedEvent>> {
        audit::query(&self.pool, q).await
    }

    async fn audit_for_tasks(&self, task_ids: &[String]) -> StoreResult<Vec<SealedEvent>> {
        audit::for_tasks(&self.pool, task_ids).await
    }

    async fn insert_approval(&self, a: &Approval) -> StoreResult<()> {
        approvals::insert(&self.pool, self.env(), a).await
    }

    async fn get_approval(&self, id: &str) -> StoreResult<Option<Approval>> {
        approvals::get_one(&self.pool, id).await
    }

    async fn list_approvals(&self, f: &ApprovalFilter) -> StoreResult<Vec<Approval>> {
        approvals::list(&self.pool, f).await
    }

    async fn open_approval_by_binding(&self, binding: &str, now_ms: i64) -> StoreResult<Option<Approval>> {
        approvals::open_by_binding(&self.pool, binding, now_ms).await
    }

    async fn decide_approval(
        &self,
        id: &str,
        to: ApprovalStatus,
        by: &str,
        by_label: &str,
        comment: &str,
        at_ms: i64,
    ) -> StoreResult<Option<(Approval, bool)>> {
        approvals::decide(&self.pool, self.env(), id, to, by, by_label, comment, at_ms).await
    }

    async fn use_approval(&self, id: &str, decision_id: &str, at_ms: i64) -> StoreResult<Option<Approval>> {
        approvals::use_once(&self.pool, self.env(), id, decision_id, at_ms).await
    }

    async fn expire_approvals(&self, now_ms: i64) -> StoreResult<Vec<Approval>> {
        approvals::expire(&self.pool, self.env(), now_ms).await
    }

    async fn insert_checkpoint(&self, c: &Checkpoint) -> StoreResult<()> {
        audit::insert_checkpoint(&self.pool, c).await
    }

    async fn list_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        audit::list_checkpoints(&self.pool).await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgConnectOptions;

    use super::*;

    fn send<T: Send>(_: &T) {}

    #[allow(dead_code, reason = "compiled only: the futures must be Send to be spawned")]
    fn futures_are_send(opts: &PgOptions, o: PgConnectOptions) {
        send(&migrations::run(&o, "", None));
        send(&PgStore::connect(opts));
        send(&migrate(opts));
    }
}
