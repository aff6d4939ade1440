//! The storage trait every backend implements.

use async_trait::async_trait;
use mandate_audit::{ChainHead, Checkpoint, NewEvent, SealedEvent};
use mandate_core::{Agent, AgentStatus, ApiToken, Approval, ApprovalStatus, Issuer, Task, TaskEnd};

use crate::{ApprovalFilter, AuditQuery, Change, Lease, LeaseFilter, SecretRecord, StoreResult, TaskFilter};

/// Everything Mandate keeps. Used as `Arc<dyn Store>`.
///
/// Contract shared by every method: a call either happens completely or not at all (changes of
/// several rows run in one transaction); a call that returns `Ok` is durable; nothing panics on
/// stored data, which is reported as [`StoreError::Corrupt`](crate::StoreError::Corrupt). The
/// [`conformance`](crate::conformance) suite checks each of these promises.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Succeeds when the backend can serve reads and writes.
    async fn ping(&self) -> StoreResult<()>;

    /// A server setting kept with the data (`None` if never set).
    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;

    /// Sets a server setting, replacing any earlier value.
    async fn put_meta(&self, key: &str, value: &str) -> StoreResult<()>;

    /// Sets `key` to `value` only if its current value is `expected` (`None`: only if it is
    /// unset). `true` if this call set it. Of racing calls with the same `expected`, at most one
    /// succeeds: processes sharing a store coordinate through it (the signing key ring).
    async fn swap_meta(&self, key: &str, expected: Option<&str>, value: &str) -> StoreResult<bool>;

    /// What other processes sharing this store change, as each change commits, so that every
    /// process keeps its in-memory view (agents, live tasks, tokens, keys) as current as the
    /// store. `None` for a store only this process writes (the embedded SQLite store). A
    /// [`Change::Resync`] says notifications may have been missed (the listener lost its
    /// connection and is back): the receiver re-reads everything it keeps.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Change>> {
        None
    }

    /// Stores an admin API token (its secret's hash only). `Conflict` if the id or the secret
    /// hash exists.
    async fn insert_api_token(&self, t: &ApiToken) -> StoreResult<()>;

    /// The token whose secret hashes to `secret_hash`, revoked or not.
    async fn api_token_by_hash(&self, secret_hash: &str) -> StoreResult<Option<ApiToken>>;

    /// Every token, oldest first (then by id).
    async fn list_api_tokens(&self) -> StoreResult<Vec<ApiToken>>;

    /// Marks a token revoked at `at_ms`. `true` if it was live and is now revoked; `false` if
    /// unknown or already revoked (the first revocation time stays).
    async fn revoke_api_token(&self, id: &str, at_ms: i64) -> StoreResult<bool>;

    /// Registers an agent. `Conflict` if the name exists.
    async fn insert_agent(&self, a: &Agent) -> StoreResult<()>;

    /// The agent of that name.
    async fn get_agent(&self, name: &str) -> StoreResult<Option<Agent>>;

    /// Every agent, by name.
    async fn list_agents(&self) -> StoreResult<Vec<Agent>>;

    /// Sets an agent's status and `updated_at_ms`. `false` if the agent is unknown.
    async fn set_agent_status(&self, name: &str, status: AgentStatus, at_ms: i64) -> StoreResult<bool>;

    /// Records that the agent was seen at `at_ms` (`last_seen_ms`). `NotFound` if unknown.
    async fn touch_agent(&self, name: &str, at_ms: i64) -> StoreResult<()>;

    /// Stores a task. `Conflict` if the id exists; `NotFound` if its agent or parent task does
    /// not exist.
    async fn insert_task(&self, t: &Task) -> StoreResult<()>;

    /// The task with that id.
    async fn get_task(&self, id: &str) -> StoreResult<Option<Task>>;

    /// Tasks matching `f`, newest first (by `created_at_ms`, then id descending).
    async fn list_tasks(&self, f: &TaskFilter) -> StoreResult<Vec<Task>>;

    /// Every live task, newest first.
    async fn live_tasks(&self) -> StoreResult<Vec<Task>>;

    /// Ends those of `ids` that are still live, all in one transaction, and returns the ids it
    /// ended (each once, in the order given). Unknown and already ended ids are skipped, so the
    /// call is idempotent and two racing calls never both end the same task. `Invalid` if
    /// `end.status` is `live`.
    async fn end_tasks(&self, ids: &[String], end: &TaskEnd) -> StoreResult<Vec<String>>;

    /// The ids of the agent's live tasks, newest first.
    async fn live_task_ids_of_agent(&self, agent: &str) -> StoreResult<Vec<String>>;

    /// The ids of live tasks whose expiry has come (`expires_at_ms <= now_ms`), soonest expiry
    /// first.
    async fn expired_live_task_ids(&self, now_ms: i64) -> StoreResult<Vec<String>>;

    /// Every task delegated from `id`, directly or transitively (not `id` itself), ordered by
    /// depth, then `created_at_ms`, then id. Empty for an unknown id.
    async fn descendant_task_ids(&self, id: &str) -> StoreResult<Vec<String>>;

    /// Attestation replay protection. First purges entries with `expires_at_ms < now_ms`, then
    /// records `(issuer, jti)`: `true` on first use, `false` if it was seen (and not purged).
    async fn consume_jti(&self, issuer: &str, jti: &str, expires_at_ms: i64, now_ms: i64) -> StoreResult<bool>;

    /// Adds a trusted issuer or replaces the one with the same `issuer`.
    async fn upsert_issuer(&self, i: &Issuer) -> StoreResult<()>;

    /// The trusted issuer with that `iss`.
    async fn get_issuer(&self, issuer: &str) -> StoreResult<Option<Issuer>>;

    /// Every trusted issuer, by `iss`.
    async fn list_issuers(&self) -> StoreResult<Vec<Issuer>>;

    /// Removes a trusted issuer. `false` if unknown.
    async fn delete_issuer(&self, issuer: &str) -> StoreResult<bool>;

    /// Replaces the Cedar entity data for non-agent subjects (JSON text, stored as given).
    async fn put_entities(&self, json: &str) -> StoreResult<()>;

    /// The Cedar entity data, if any was put.
    async fn get_entities(&self) -> StoreResult<Option<String>>;

    /// Stores one version of a secret. `Conflict` if that name and version exist.
    async fn put_secret_version(&self, s: &SecretRecord) -> StoreResult<()>;

    /// The highest version of the secret of that name.
    async fn latest_secret(&self, name: &str) -> StoreResult<Option<SecretRecord>>;

    /// The latest version of every secret, by name.
    async fn list_secrets(&self) -> StoreResult<Vec<SecretRecord>>;

    /// Removes every version of a secret. `false` if unknown.
    async fn delete_secret(&self, name: &str) -> StoreResult<bool>;

    /// Stores a new lease (undropped: `dropped_at_ms` and `drop_reason` are stored as given, so a
    /// caller passes `None`). `Conflict` if the id exists or the (secret, task) has an undropped
    /// lease already; `NotFound` if the task does not exist. Two racing inserts for the same
    /// (secret, task) never both succeed.
    async fn insert_lease(&self, l: &Lease) -> StoreResult<()>;

    /// The lease with that id, dropped or not.
    async fn get_lease(&self, id: &str) -> StoreResult<Option<Lease>>;

    /// The undropped lease of (secret, task), if any.
    async fn undropped_lease(&self, secret: &str, task_id: &str) -> StoreResult<Option<Lease>>;

    /// Leases matching `f`, newest first (by `created_at_ms`, then id descending).
    async fn list_leases(&self, f: &LeaseFilter) -> StoreResult<Vec<Lease>>;

    /// Every undropped lease that is due at `now_ms`: its task is no longer live, or
    /// `expires_at_ms <= now_ms`. Soonest expiry first (then id).
    async fn due_leases(&self, now_ms: i64) -> StoreResult<Vec<Lease>>;

    /// Marks an undropped lease dropped at `at_ms` for `reason`. `true` if this call did; `false`
    /// if it was dropped already (the first time and reason stay) or is unknown. Of racing calls
    /// exactly one returns `true`.
    async fn drop_lease(&self, id: &str, at_ms: i64, reason: &str) -> StoreResult<bool>;

    /// Seals `events` onto the trail and stores them, atomically and durably: the head is read,
    /// [`mandate_audit::seal`] applied and the rows inserted in one write transaction, so that
    /// concurrent calls produce one gap-free chain. Returns the sealed events (empty for an
    /// empty batch). Callers batch events (group commit) so one call carries many.
    async fn append_audit(&self, events: Vec<NewEvent>) -> StoreResult<Vec<SealedEvent>>;

    /// The last event's seq and hash ([`ChainHead::genesis`] for an empty trail).
    async fn audit_head(&self) -> StoreResult<ChainHead>;

    /// At most `limit` events with `seq > after_seq`, ascending. `after_seq = 0` reads from the
    /// start.
    async fn read_audit(&self, after_seq: u64, limit: usize) -> StoreResult<Vec<SealedEvent>>;

    /// Events matching `q`, ascending seq.
    async fn query_audit(&self, q: &AuditQuery) -> StoreResult<Vec<SealedEvent>>;

    /// Every event about any of `task_ids`, ascending seq, each once.
    async fn audit_for_tasks(&self, task_ids: &[String]) -> StoreResult<Vec<SealedEvent>>;

    /// Stores a new approval request. `Conflict` if the id exists; `NotFound` if its task does
    /// not exist.
    async fn insert_approval(&self, a: &Approval) -> StoreResult<()>;

    /// The approval with that id.
    async fn get_approval(&self, id: &str) -> StoreResult<Option<Approval>>;

    /// Approvals matching `f`, newest first (by `created_at_ms`, then id descending).
    async fn list_approvals(&self, f: &ApprovalFilter) -> StoreResult<Vec<Approval>>;

    /// The newest approval with this `binding` that is still open at `now_ms` (pending or
    /// approved, not expired): what an identical request may reuse or consume.
    async fn open_approval_by_binding(&self, binding: &str, now_ms: i64) -> StoreResult<Option<Approval>>;

    /// Moves a pending, unexpired approval to `to` (`approved` or `denied`), recording who, when
    /// and the comment. Returns the approval as it is afterwards, and whether this call moved it
    /// (`false`: it was not pending, or had expired, and nothing changed). `None` if unknown.
    /// `Invalid` if `to` is not `approved` or `denied`. Two racing calls never both move it.
    async fn decide_approval(
        &self,
        id: &str,
        to: ApprovalStatus,
        by: &str,
        by_label: &str,
        comment: &str,
        at_ms: i64,
    ) -> StoreResult<Option<(Approval, bool)>>;

    /// Uses an approved, unexpired approval for the decision `decision_id`: exactly one call
    /// ever succeeds. The used approval, or `None` if it was not approved, had expired, was
    /// used already, or is unknown.
    async fn use_approval(&self, id: &str, decision_id: &str, at_ms: i64) -> StoreResult<Option<Approval>>;

    /// Marks every pending or approved approval whose expiry has come (`expires_at_ms <=
    /// now_ms`) expired, and returns them as they are afterwards, soonest expiry first.
    async fn expire_approvals(&self, now_ms: i64) -> StoreResult<Vec<Approval>>;

    /// Stores a signed checkpoint. `Conflict` if one exists at its seq.
    async fn insert_checkpoint(&self, c: &Checkpoint) -> StoreResult<()>;

    /// Every checkpoint, ascending seq.
    async fn list_checkpoints(&self) -> StoreResult<Vec<Checkpoint>>;
}
