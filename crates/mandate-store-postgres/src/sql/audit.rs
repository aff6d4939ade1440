//! The audit trail and its checkpoints.

use mandate_audit::{ChainHead, Checkpoint, NewEvent, SealedEvent, seal};
use mandate_store::{AuditQuery, StoreError, StoreResult};
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::{Arg, Args, get, limit};
use crate::error::{Constraint, constraint, corrupt, db};

const EVENT_COLUMNS: &str = "seq, ts_ms, kind, actor, agent, task, body, prev_hash, hash";

/// The advisory lock class (the first of two 32-bit keys) appends take; the second key is the
/// schema's hash, so trails in different schemas of one database do not wait for each other.
const AUDIT_LOCK_CLASS: i32 = 0x4d41_4e44;

/// Takes the trail's advisory lock, reads the head, seals `events` onto it and inserts them,
/// all in one transaction: every server sharing the database appends to one chain, one
/// append at a time, and a failure (or a killed process) leaves no row of the batch. The
/// primary key on `seq` refuses a fork even if something bypassed the lock.
pub(crate) async fn append(pool: &PgPool, events: Vec<NewEvent>) -> StoreResult<Vec<SealedEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))")
        .bind(AUDIT_LOCK_CLASS)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let sealed = seal(&head_in(&mut tx).await?, events);
    let n = sealed.len();
    let (mut seq, mut ts_ms) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut kind, mut actor, mut agent, mut task) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut body, mut prev_hash, mut hash) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for e in &sealed {
        seq.push(i64::try_from(e.seq).map_err(|_| StoreError::Backend("the audit trail is full".into()))?);
        ts_ms.push(e.ts_ms);
        kind.push(e.kind.as_str());
        actor.push(e.actor.as_str());
        agent.push(e.agent.as_deref());
        task.push(e.task.as_deref());
        body.push(e.body.as_str());
        prev_hash.push(e.prev_hash.as_str());
        hash.push(e.hash.as_str());
    }
    sqlx::query(
        "INSERT INTO audit_events (seq, ts_ms, kind, actor, agent, task, body, prev_hash, hash)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
    )
    .bind(seq)
    .bind(ts_ms)
    .bind(kind)
    .bind(actor)
    .bind(agent)
    .bind(task)
    .bind(body)
    .bind(prev_hash)
    .bind(hash)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(sealed)
}

const HEAD_SQL: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// The last event's seq and hash, or genesis.
pub(crate) async fn head(pool: &PgPool) -> StoreResult<ChainHead> {
    let row = sqlx::query(HEAD_SQL).fetch_optional(pool).await.map_err(db)?;
    head_of(row)
}

async fn head_in(conn: &mut sqlx::PgConnection) -> StoreResult<ChainHead> {
    let row = sqlx::query(HEAD_SQL).fetch_optional(conn).await.map_err(db)?;
    head_of(row)
}

fn head_of(row: Option<PgRow>) -> StoreResult<ChainHead> {
    match row {
        None => Ok(ChainHead::genesis()),
        Some(r) => Ok(ChainHead { seq: seq_from_db(get(&r, 0)?)?, hash: get(&r, 1)? }),
    }
}

/// Events after `after_seq`, ascending. From the start (`after_seq = 0`) there is no lower
/// bound at all, so a row smuggled in at seq 0 or below is read, and verification fails on it.
pub(crate) async fn read(pool: &PgPool, after_seq: u64, n: usize) -> StoreResult<Vec<SealedEvent>> {
    let Some(lower) = lower_bound(Some(after_seq)) else {
        return Ok(Vec::new());
    };
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2");
    let rows = sqlx::query(&sql).bind(lower).bind(limit(n)).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(event_row).collect()
}

pub(crate) async fn query(pool: &PgPool, q: &AuditQuery) -> StoreResult<Vec<SealedEvent>> {
    let Some(lower) = lower_bound(q.after_seq) else {
        return Ok(Vec::new());
    };
    let mut args = Args::new();
    let mut clauses = vec![format!("seq > {}", args.push(Arg::Int(lower)))];
    for (column, value) in [("kind", &q.kind), ("agent", &q.agent), ("task", &q.task)] {
        if let Some(v) = value {
            clauses.push(format!("{column} = {}", args.push(Arg::Text(v.clone()))));
        }
    }
    if let Some(since) = q.since_ms {
        clauses.push(format!("ts_ms >= {}", args.push(Arg::Int(since))));
    }
    let n = args.push(Arg::Int(limit(q.limit)));
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE {} ORDER BY seq LIMIT {n}", clauses.join(" AND "));
    let rows = args.bind(sqlx::query(&sql)).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(event_row).collect()
}

/// Every event about any of `task_ids`, the ids going in as one array parameter.
pub(crate) async fn for_tasks(pool: &PgPool, task_ids: &[String]) -> StoreResult<Vec<SealedEvent>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE task = ANY($1) ORDER BY seq");
    let rows = sqlx::query(&sql).bind(task_ids).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(event_row).collect()
}

pub(crate) async fn insert_checkpoint(pool: &PgPool, cp: &Checkpoint) -> StoreResult<()> {
    let seq = i64::try_from(cp.seq).map_err(|_| StoreError::Invalid(format!("checkpoint seq {} is out of range", cp.seq)))?;
    let result = sqlx::query("INSERT INTO audit_checkpoints (seq, hash, ts_ms, kid, signature) VALUES ($1, $2, $3, $4, $5)")
        .bind(seq)
        .bind(&cp.hash)
        .bind(cp.ts_ms)
        .bind(&cp.kid)
        .bind(&cp.signature)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(constraint(&e), Some(Constraint::Unique(_))) => {
            Err(StoreError::Conflict(format!("audit checkpoint at seq {}", cp.seq)))
        }
        Err(e) => Err(db(e)),
    }
}

pub(crate) async fn list_checkpoints(pool: &PgPool) -> StoreResult<Vec<Checkpoint>> {
    let rows =
        sqlx::query("SELECT seq, hash, ts_ms, kid, signature FROM audit_checkpoints ORDER BY seq").fetch_all(pool).await.map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(Checkpoint { seq: seq_from_db(get(r, 0)?)?, hash: get(r, 1)?, ts_ms: get(r, 2)?, kid: get(r, 3)?, signature: get(r, 4)? })
        })
        .collect()
}

/// The exclusive lower seq bound as stored; `None` when nothing can lie beyond it.
fn lower_bound(after_seq: Option<u64>) -> Option<i64> {
    match after_seq {
        None | Some(0) => Some(i64::MIN),
        Some(after) => i64::try_from(after).ok(),
    }
}

fn seq_from_db(seq: i64) -> StoreResult<u64> {
    u64::try_from(seq).map_err(|_| corrupt("audit trail", format!("an event has seq {seq}")))
}

fn event_row(r: &PgRow) -> StoreResult<SealedEvent> {
    Ok(SealedEvent {
        seq: seq_from_db(get(r, 0)?)?,
        ts_ms: get(r, 1)?,
        kind: get(r, 2)?,
        actor: get(r, 3)?,
        agent: get(r, 4)?,
        task: get(r, 5)?,
        body: get(r, 6)?,
        prev_hash: get(r, 7)?,
        hash: get(r, 8)?,
    })
}
