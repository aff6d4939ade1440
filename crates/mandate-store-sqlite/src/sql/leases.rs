//! Dynamic credential leases.

use mandate_store::{Lease, LeaseFilter, SealedSecretBlob, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::limit;
use crate::error::{Constraint, constraint, corrupt, db};

const COLUMNS: &str = "id, secret, secret_version, task, role, credential_wrapped_key, credential_key_nonce, credential_nonce, \
                       credential_ciphertext, created_at_ms, expires_at_ms, dropped_at_ms, drop_reason";

pub(crate) fn insert(c: &mut Connection, l: &Lease) -> StoreResult<()> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let task_known = tx.query_row("SELECT 1 FROM tasks WHERE id = ?1", [&l.task_id], |_| Ok(())).optional().map_err(db)?.is_some();
    if !task_known {
        return Err(StoreError::NotFound(format!("task `{}`", l.task_id)));
    }
    let taken = tx
        .query_row(
            "SELECT id FROM leases WHERE id = ?1 OR (secret = ?2 AND task = ?3 AND dropped_at_ms IS NULL) LIMIT 1",
            params![l.id, l.secret, l.task_id],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map_err(db)?;
    if let Some(existing) = taken {
        return Err(if existing == l.id {
            StoreError::Conflict(format!("lease `{}`", l.id))
        } else {
            StoreError::Conflict(format!("an undropped lease of secret `{}` for task `{}`", l.secret, l.task_id))
        });
    }
    let b = &l.credential;
    let sql = format!("INSERT INTO leases ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    match tx.execute(
        &sql,
        params![
            l.id,
            l.secret,
            l.secret_version,
            l.task_id,
            l.role,
            b.wrapped_key,
            b.key_nonce,
            b.nonce,
            b.ciphertext,
            l.created_at_ms,
            l.expires_at_ms,
            l.dropped_at_ms,
            l.drop_reason
        ],
    ) {
        Ok(_) => {}
        Err(e) if constraint(&e) == Some(Constraint::Unique) => return Err(StoreError::Conflict(format!("lease `{}`", l.id))),
        Err(e) => return Err(db(e)),
    }
    tx.commit().map_err(db)
}

pub(crate) fn get(c: &Connection, id: &str) -> StoreResult<Option<Lease>> {
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE id = ?1");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([id], lease_row).optional()).map_err(db)?;
    row.map(LeaseRow::into_lease).transpose()
}

pub(crate) fn undropped(c: &Connection, secret: &str, task: &str) -> StoreResult<Option<Lease>> {
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE secret = ?1 AND task = ?2 AND dropped_at_ms IS NULL");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([secret, task], lease_row).optional()).map_err(db)?;
    row.map(LeaseRow::into_lease).transpose()
}

pub(crate) fn list(c: &Connection, f: &LeaseFilter) -> StoreResult<Vec<Lease>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM leases
         WHERE (?1 IS NULL OR task = ?1) AND (?2 IS NULL OR secret = ?2) AND (?3 = 0 OR dropped_at_ms IS NULL)
         ORDER BY created_at_ms DESC, id DESC LIMIT ?4"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db)?;
    let rows = stmt.query_map(params![f.task, f.secret, f.undropped, limit(f.limit)], lease_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(LeaseRow::into_lease)).collect()
}

pub(crate) fn due(c: &Connection, now_ms: i64) -> StoreResult<Vec<Lease>> {
    let columns = COLUMNS.split(", ").map(|col| format!("l.{}", col.trim())).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {columns} FROM leases l LEFT JOIN tasks t ON t.id = l.task
         WHERE l.dropped_at_ms IS NULL AND (l.expires_at_ms <= ?1 OR t.status IS NOT 'live')
         ORDER BY l.expires_at_ms, l.id"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db)?;
    let rows = stmt.query_map([now_ms], lease_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(LeaseRow::into_lease)).collect()
}

pub(crate) fn mark_dropped(c: &Connection, id: &str, at_ms: i64, reason: &str) -> StoreResult<bool> {
    let n = c
        .execute(
            "UPDATE leases SET dropped_at_ms = ?2, drop_reason = ?3 WHERE id = ?1 AND dropped_at_ms IS NULL",
            params![id, at_ms, reason],
        )
        .map_err(db)?;
    Ok(n > 0)
}

struct LeaseRow {
    id: String,
    secret: String,
    secret_version: i64,
    task: String,
    role: String,
    credential: SealedSecretBlob,
    created_at_ms: i64,
    expires_at_ms: i64,
    dropped_at_ms: Option<i64>,
    drop_reason: Option<String>,
}

fn lease_row(r: &Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok(LeaseRow {
        id: r.get(0)?,
        secret: r.get(1)?,
        secret_version: r.get(2)?,
        task: r.get(3)?,
        role: r.get(4)?,
        credential: SealedSecretBlob { wrapped_key: r.get(5)?, key_nonce: r.get(6)?, nonce: r.get(7)?, ciphertext: r.get(8)? },
        created_at_ms: r.get(9)?,
        expires_at_ms: r.get(10)?,
        dropped_at_ms: r.get(11)?,
        drop_reason: r.get(12)?,
    })
}

impl LeaseRow {
    fn into_lease(self) -> StoreResult<Lease> {
        let secret_version = u32::try_from(self.secret_version).map_err(|e| corrupt(&format!("lease `{}` secret version", self.id), e))?;
        Ok(Lease {
            id: self.id,
            secret: self.secret,
            secret_version,
            task_id: self.task,
            role: self.role,
            credential: self.credential,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            dropped_at_ms: self.dropped_at_ms,
            drop_reason: self.drop_reason,
        })
    }
}
