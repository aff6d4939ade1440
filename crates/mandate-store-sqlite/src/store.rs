//! [`SqliteStore`]: opening the database and the async [`Store`] implementation.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use mandate_audit::{ChainHead, Checkpoint, NewEvent, SealedEvent};
use mandate_core::{Agent, AgentStatus, ApiToken, Approval, ApprovalStatus, Issuer, Task, TaskEnd};
use mandate_store::{ApprovalFilter, AuditQuery, Lease, LeaseFilter, SecretRecord, Store, StoreError, StoreResult, TaskFilter};
use rusqlite::Connection;

use crate::error::db;
use crate::migrate::migrate;
use crate::pool::{Pool, open_writer};
use crate::sql::{approvals, audit, directory, leases, secrets, tasks};

/// Mandate's embedded store: one SQLite database file in WAL mode.
///
/// Writes go through a single connection, one at a time, each committed with
/// `synchronous=FULL`: when a call returns `Ok`, its data survives the process being killed and
/// the machine losing power. Reads use a small pool of read-only connections and never wait for
/// writers. Every call runs on a blocking thread (`tokio::task::spawn_blocking`), so the async
/// runtime is never stalled by disk I/O.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
    path: PathBuf,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file and its parent directory if needed, and
    /// brings its schema up to date. Refuses a database whose schema is newer than this release
    /// ([`StoreError::SchemaTooNew`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Backend(format!("cannot create directory `{}`: {e}", dir.display())))?;
        }
        let mut writer = open_writer(path)?;
        let migrated = migrate(&mut writer)?;
        let pool = Pool::new(path, writer)?;
        tracing::info!(path = %path.display(), from = migrated.from, to = migrated.to, "opened sqlite store");
        Ok(SqliteStore { pool: Arc::new(pool), path: path.to_owned() })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || pool.read(f)).await.map_err(worker_failed)?
    }

    /// Runs `f` on the writer connection on a blocking thread.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let pool = Arc::clone(&self.pool);
        tokio::task::spawn_blocking(move || pool.write(f)).await.map_err(worker_failed)?
    }
}

fn worker_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Backend(format!("store worker failed: {e}"))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db)).await?;
        self.write(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db)).await
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_owned();
        self.read(move |c| directory::get_meta(c, &key)).await
    }

    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write(move |c| directory::put_meta(c, &key, &value)).await
    }

    async fn swap_meta(&self, key: &str, expected: Option<&str>, value: &str) -> StoreResult<bool> {
        let (key, expected, value) = (key.to_owned(), expected.map(str::to_owned), value.to_owned());
        self.write(move |c| directory::swap_meta(c, &key, expected.as_deref(), &value)).await
    }

    async fn insert_api_token(&self, t: &ApiToken) -> StoreResult<()> {
        let t = t.clone();
        self.write(move |c| directory::insert_api_token(c, &t)).await
    }

    async fn api_token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>> {
        let secret_hash = secret_hash.to_owned();
        self.read(move |c| directory::api_token_by_hash(c, &secret_hash)).await
    }

    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>> {
        self.read(directory::list_api_tokens).await
    }

    async fn revoke_api_token(&self, id: &str, at_ms: i64) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |c| directory::revoke_api_token(c, &id, at_ms)).await
    }

    async fn insert_agent(&self, a: &Agent) -> StoreResult<()> {
        let a = a.clone();
        self.write(move |c| directory::insert_agent(c, &a)).await
    }

    async fn get_agent(&self, name: &str) -> StoreResult<Option<Agent>> {
        let name = name.to_owned();
        self.read(move |c| directory::get_agent(c, &name)).await
    }

    async fn list_agents(&self) -> StoreResult<Vec<Agent>> {
        self.read(directory::list_agents).await
    }

    async fn set_agent_status(&self, name: &str, status: AgentStatus, at_ms: i64) -> StoreResult<bool> {
        let name = name.to_owned();
        self.write(move |c| directory::set_agent_status(c, &name, status, at_ms)).await
    }

    async fn touch_agent(&self, name: &str, at_ms: i64) -> StoreResult<()> {
        let name = name.to_owned();
        self.write(move |c| directory::touch_agent(c, &name, at_ms)).await
    }

    async fn insert_task(&self, t: &Task) -> StoreResult<()> {
        let t = t.clone();
        self.write(move |c| tasks::insert_task(c, &t)).await
    }

    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>> {
        let id = id.to_owned();
        self.read(move |c| tasks::get_task(c, &id)).await
    }

    async fn list_tasks(&self, f: &TaskFilter) -> StoreResult<Vec<Task>> {
        let f = f.clone();
        self.read(move |c| tasks::list_tasks(c, &f)).await
    }

    async fn live_tasks(&self) -> StoreResult<Vec<Task>> {
        self.read(tasks::live_tasks).await
    }

    async fn end_tasks(&self, ids: &[String], end: &TaskEnd) -> StoreResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, end) = (ids.to_vec(), end.clone());
        self.write(move |c| tasks::end_tasks(c, &ids, &end)).await
    }

    async fn live_task_ids_of_agent(&self, agent: &str) -> StoreResult<Vec<String>> {
        let agent = agent.to_owned();
        self.read(move |c| tasks::live_task_ids_of_agent(c, &agent)).await
    }

    async fn expired_live_task_ids(&self, now_ms: i64) -> StoreResult<Vec<String>> {
        self.read(move |c| tasks::expired_live_task_ids(c, now_ms)).await
    }

    async fn descendant_task_ids(&self, id: &str) -> StoreResult<Vec<String>> {
        let id = id.to_owned();
        self.read(move |c| tasks::descendant_task_ids(c, &id)).await
    }

    async fn consume_jti(&self, issuer: &str, jti: &str, expires_at_ms: i64, now_ms: i64) -> StoreResult<bool> {
        let (issuer, jti) = (issuer.to_owned(), jti.to_owned());
        self.write(move |c| tasks::consume_jti(c, &issuer, &jti, expires_at_ms, now_ms)).await
    }

    async fn upsert_issuer(&self, i: &Issuer) -> StoreResult<()> {
        let i = i.clone();
        self.write(move |c| directory::upsert_issuer(c, &i)).await
    }

    async fn get_issuer(&self, issuer: &str) -> StoreResult<Option<Issuer>> {
        let issuer = issuer.to_owned();
        self.read(move |c| directory::get_issuer(c, &issuer)).await
    }

    async fn list_issuers(&self) -> StoreResult<Vec<Issuer>> {
        self.read(directory::list_issuers).await
    }

    async fn delete_issuer(&self, issuer: &str) -> StoreResult<bool> {
        let issuer = issuer.to_owned();
        self.write(move |c| directory::delete_issuer(c, &issuer)).await
    }

    async fn put_entities(&self, json: &str) -> StoreResult<()> {
        let json = json.to_owned();
        self.write(move |c| directory::put_entities(c, &json)).await
    }

    async fn get_entities(&self) -> StoreResult<Option<String>> {
        self.read(directory::get_entities).await
    }

    async fn put_secret_version(&self, s: &SecretRecord) -> StoreResult<()> {
        let s = s.clone();
        self.write(move |c| secrets::put_version(c, &s)).await
    }

    async fn latest_secret(&self, name: &str) -> StoreResult<Option<SecretRecord>> {
        let name = name.to_owned();
        self.read(move |c| secrets::latest(c, &name)).await
    }

    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>> {
        self.read(secrets::list).await
    }

    async fn delete_secret(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.write(move |c| secrets::delete(c, &name)).await
    }

    async fn insert_lease(&self, l: &Lease) -> StoreResult<()> {
        let l = l.clone();
        self.write(move |c| leases::insert(c, &l)).await
    }

    async fn get_lease(&self, id: &str) -> StoreResult<Option<Lease>> {
        let id = id.to_owned();
        self.read(move |c| leases::get(c, &id)).await
    }

    async fn undropped_lease(&self, secret: &str, task_id: &str) -> StoreResult<Option<Lease>> {
        let (secret, task_id) = (secret.to_owned(), task_id.to_owned());
        self.read(move |c| leases::undropped(c, &secret, &task_id)).await
    }

    async fn list_leases(&self, f: &LeaseFilter) -> StoreResult<Vec<Lease>> {
        let f = f.clone();
        self.read(move |c| leases::list(c, &f)).await
    }

    async fn due_leases(&self, now_ms: i64) -> StoreResult<Vec<Lease>> {
        self.read(move |c| leases::due(c, now_ms)).await
    }

    async fn drop_lease(&self, id: &str, at_ms: i64, reason: &str) -> StoreResult<bool> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| leases::mark_dropped(c, &id, at_ms, &reason)).await
    }

    async fn append_audit(&self, events: Vec<NewEvent>) -> StoreResult<Vec<SealedEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |c| audit::append(c, events)).await
    }

    async fn audit_head(&self) -> StoreResult<ChainHead> {
        self.read(audit::head).await
    }

    async fn read_audit(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<SealedEvent>> {
        self.read(move |c| audit::read(c, after_seq, limit)).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<SealedEvent>> {
        let q = q.clone();
        self.read(move |c| audit::query(c, &q)).await
    }

    async fn audit_for_tasks(&self, task_ids: &[String]) -> StoreResult<Vec<SealedEvent>> {
        let task_ids = task_ids.to_vec();
        self.read(move |c| audit::for_tasks(c, &task_ids)).await
    }

    async fn insert_approval(&self, a: &Approval) -> StoreResult<()> {
        let a = a.clone();
        self.write(move |c| approvals::insert(c, &a)).await
    }

    async fn get_approval(&self, id: &str) -> StoreResult<Option<Approval>> {
        let id = id.to_owned();
        self.read(move |c| approvals::get(c, &id)).await
    }

    async fn list_approvals(&self, f: &ApprovalFilter) -> StoreResult<Vec<Approval>> {
        let f = f.clone();
        self.read(move |c| approvals::list(c, &f)).await
    }

    async fn open_approval_by_binding(&self, binding: &str, now_ms: i64) -> StoreResult<Option<Approval>> {
        let binding = binding.to_owned();
        self.read(move |c| approvals::open_by_binding(c, &binding, now_ms)).await
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
        let (id, by, by_label, comment) = (id.to_owned(), by.to_owned(), by_label.to_owned(), comment.to_owned());
        self.write(move |c| approvals::decide(c, &id, to, &by, &by_label, &comment, at_ms)).await
    }

    async fn use_approval(&self, id: &str, decision_id: &str, at_ms: i64) -> StoreResult<Option<Approval>> {
        let (id, decision_id) = (id.to_owned(), decision_id.to_owned());
        self.write(move |c| approvals::use_once(c, &id, &decision_id, at_ms)).await
    }

    async fn expire_approvals(&self, now_ms: i64) -> StoreResult<Vec<Approval>> {
        self.write(move |c| approvals::expire(c, now_ms)).await
    }

    async fn insert_checkpoint(&self, cp: &Checkpoint) -> StoreResult<()> {
        let cp = cp.clone();
        self.write(move |c| audit::insert_checkpoint(c, &cp)).await
    }

    async fn list_checkpoints(&self) -> StoreResult<Vec<Checkpoint>> {
        self.read(audit::list_checkpoints).await
    }
}
