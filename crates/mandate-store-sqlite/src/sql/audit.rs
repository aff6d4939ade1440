//! The audit trail and its checkpoints.

use mandate_audit::{ChainHead, Checkpoint, NewEvent, SealedEvent, seal};
use mandate_store::{AuditQuery, StoreError, StoreResult};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};

use super::{limit, to_json};
use crate::error::{Constraint, constraint, corrupt, db};

const EVENT_COLUMNS: &str = "seq, ts_ms, kind, actor, agent, task, body, prev_hash, hash";

/// Reads the head, seals `events` onto it and inserts them, in one write transaction: no other
/// writer (in this process or another) can seal onto the same head, and a failure leaves no row.
pub(crate) fn append(c: &mut Connection, events: Vec<NewEvent>) -> StoreResult<Vec<SealedEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let sealed = seal(&head(&tx)?, events);
    {
        let sql = format!("INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
        let mut stmt = tx.prepare_cached(&sql).map_err(db)?;
        for e in &sealed {
            let seq = i64::try_from(e.seq).map_err(|_| StoreError::Backend("the audit trail is full".into()))?;
            stmt.execute(params![seq, e.ts_ms, e.kind, e.actor, e.agent, e.task, e.body, e.prev_hash, e.hash]).map_err(db)?;
        }
    }
    tx.commit().map_err(db)?;
    Ok(sealed)
}

/// The last event's seq and hash, or genesis.
pub(crate) fn head(c: &Connection) -> StoreResult<ChainHead> {
    let row = c
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))).optional())
        .map_err(db)?;
    match row {
        None => Ok(ChainHead::genesis()),
        Some((seq, hash)) => Ok(ChainHead { seq: seq_from_db(seq)?, hash }),
    }
}

/// Events after `after_seq`, ascending. From the start (`after_seq = 0`) there is no lower
/// bound at all, so a row smuggled in at seq 0 or below is read, and verification fails on it.
pub(crate) fn read(c: &Connection, after_seq: u64, n: usize) -> StoreResult<Vec<SealedEvent>> {
    let Some(lower) = lower_bound(Some(after_seq)) else {
        return Ok(Vec::new());
    };
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2");
    query_events(c, &sql, params![lower, limit(n)])
}

pub(crate) fn query(c: &Connection, q: &AuditQuery) -> StoreResult<Vec<SealedEvent>> {
    let Some(lower) = lower_bound(q.after_seq) else {
        return Ok(Vec::new());
    };
    let mut values: Vec<SqlValue> = vec![SqlValue::Integer(lower)];
    let mut clauses = vec!["seq > ?1".to_owned()];
    for (column, value) in [("kind", &q.kind), ("agent", &q.agent), ("task", &q.task)] {
        if let Some(v) = value {
            values.push(SqlValue::Text(v.clone()));
            clauses.push(format!("{column} = ?{}", values.len()));
        }
    }
    if let Some(since) = q.since_ms {
        values.push(SqlValue::Integer(since));
        clauses.push(format!("ts_ms >= ?{}", values.len()));
    }
    values.push(SqlValue::Integer(limit(q.limit)));
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE {} ORDER BY seq LIMIT ?{}", clauses.join(" AND "), values.len());
    query_events(c, &sql, params_from_iter(values))
}

/// Every event about any of `task_ids`. The ids go in as one JSON array parameter, so any
/// number of them fits in one statement.
pub(crate) fn for_tasks(c: &Connection, task_ids: &[String]) -> StoreResult<Vec<SealedEvent>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = to_json("task ids", &task_ids)?;
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE task IN (SELECT value FROM json_each(?1)) ORDER BY seq");
    query_events(c, &sql, params![ids])
}

pub(crate) fn insert_checkpoint(c: &Connection, cp: &Checkpoint) -> StoreResult<()> {
    let seq = i64::try_from(cp.seq).map_err(|_| StoreError::Invalid(format!("checkpoint seq {} is out of range", cp.seq)))?;
    let result = c.execute(
        "INSERT INTO audit_checkpoints (seq, hash, ts_ms, kid, signature) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![seq, cp.hash, cp.ts_ms, cp.kid, cp.signature],
    );
    match result {
        Ok(_) => Ok(()),
        Err(e) if constraint(&e) == Some(Constraint::Unique) => Err(StoreError::Conflict(format!("audit checkpoint at seq {}", cp.seq))),
        Err(e) => Err(db(e)),
    }
}

pub(crate) fn list_checkpoints(c: &Connection) -> StoreResult<Vec<Checkpoint>> {
    let mut stmt = c.prepare("SELECT seq, hash, ts_ms, kid, signature FROM audit_checkpoints ORDER BY seq").map_err(db)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))).map_err(db)?;
    rows.map(|r| {
        let (seq, hash, ts_ms, kid, signature) = r.map_err(db)?;
        Ok(Checkpoint { seq: seq_from_db(seq)?, hash, ts_ms, kid, signature })
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

fn query_events(c: &Connection, sql: &str, values: impl rusqlite::Params) -> StoreResult<Vec<SealedEvent>> {
    let mut stmt = c.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(values, event_row).map_err(db)?;
    rows.map(|r| {
        let (seq, e) = r.map_err(db)?;
        Ok(SealedEvent { seq: seq_from_db(seq)?, ..e })
    })
    .collect()
}

/// A row as an event; the seq is returned apart so that a negative one is reported as
/// corruption rather than a conversion error.
fn event_row(r: &Row<'_>) -> rusqlite::Result<(i64, SealedEvent)> {
    let seq: i64 = r.get(0)?;
    Ok((
        seq,
        SealedEvent {
            seq: 0,
            ts_ms: r.get(1)?,
            kind: r.get(2)?,
            actor: r.get(3)?,
            agent: r.get(4)?,
            task: r.get(5)?,
            body: r.get(6)?,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
        },
    ))
}
