//! Dynamic credential leases.
//!
//! The partial unique index on undropped (secret, task) makes racing inserts for one task
//! conflict, whichever server they come from; a drop is a conditional update, so of racing
//! drops exactly one marks the lease.

use mandate_store::{Lease, LeaseFilter, SealedSecretBlob, StoreError, StoreResult};
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::{Arg, Args, get, limit};
use crate::error::{Constraint, constraint, corrupt, db};

const COLUMNS: &str = "id, secret, secret_version, task, role, credential_wrapped_key, credential_key_nonce, credential_nonce, \
                       credential_ciphertext, created_at_ms, expires_at_ms, dropped_at_ms, drop_reason";

pub(crate) async fn insert(pool: &PgPool, l: &Lease) -> StoreResult<()> {
    let sql = format!("INSERT INTO leases ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)");
    let b = &l.credential;
    let result = sqlx::query(&sql)
        .bind(&l.id)
        .bind(&l.secret)
        .bind(i64::from(l.secret_version))
        .bind(&l.task_id)
        .bind(&l.role)
        .bind(&b.wrapped_key)
        .bind(&b.key_nonce)
        .bind(&b.nonce)
        .bind(&b.ciphertext)
        .bind(l.created_at_ms)
        .bind(l.expires_at_ms)
        .bind(l.dropped_at_ms)
        .bind(&l.drop_reason)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => Err(match constraint(&e) {
            Some(Constraint::Unique("leases_undropped_by_secret_task")) => {
                StoreError::Conflict(format!("an undropped lease of secret `{}` for task `{}`", l.secret, l.task_id))
            }
            Some(Constraint::Unique(_)) => StoreError::Conflict(format!("lease `{}`", l.id)),
            Some(Constraint::ForeignKey(_)) => StoreError::NotFound(format!("task `{}`", l.task_id)),
            None => db(e),
        }),
    }
}

pub(crate) async fn get_one(pool: &PgPool, id: &str) -> StoreResult<Option<Lease>> {
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(lease_row).transpose()
}

pub(crate) async fn undropped(pool: &PgPool, secret: &str, task: &str) -> StoreResult<Option<Lease>> {
    let sql = format!("SELECT {COLUMNS} FROM leases WHERE secret = $1 AND task = $2 AND dropped_at_ms IS NULL");
    let row = sqlx::query(&sql).bind(secret).bind(task).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(lease_row).transpose()
}

pub(crate) async fn list(pool: &PgPool, f: &LeaseFilter) -> StoreResult<Vec<Lease>> {
    let mut args = Args::new();
    let mut clauses = Vec::new();
    if let Some(task) = &f.task {
        clauses.push(format!("task = {}", args.push(Arg::Text(task.clone()))));
    }
    if let Some(secret) = &f.secret {
        clauses.push(format!("secret = {}", args.push(Arg::Text(secret.clone()))));
    }
    if f.undropped {
        clauses.push("dropped_at_ms IS NULL".to_owned());
    }
    let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let n = args.push(Arg::Int(limit(f.limit)));
    let sql = format!("SELECT {COLUMNS} FROM leases {filter} ORDER BY created_at_ms DESC, id DESC LIMIT {n}");
    let rows = args.bind(sqlx::query(&sql)).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(lease_row).collect()
}

/// Undropped leases whose expiry has come or whose task is no longer live (or gone).
pub(crate) async fn due(pool: &PgPool, now_ms: i64) -> StoreResult<Vec<Lease>> {
    let columns = COLUMNS.split(',').map(|c| format!("l.{}", c.trim())).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {columns} FROM leases l LEFT JOIN tasks t ON t.id = l.task
         WHERE l.dropped_at_ms IS NULL AND (l.expires_at_ms <= $1 OR t.status IS DISTINCT FROM 'live')
         ORDER BY l.expires_at_ms, l.id"
    );
    let rows = sqlx::query(&sql).bind(now_ms).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(lease_row).collect()
}

pub(crate) async fn mark_dropped(pool: &PgPool, id: &str, at_ms: i64, reason: &str) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE leases SET dropped_at_ms = $2, drop_reason = $3 WHERE id = $1 AND dropped_at_ms IS NULL")
        .bind(id)
        .bind(at_ms)
        .bind(reason)
        .execute(pool)
        .await
        .map_err(db)?;
    Ok(done.rows_affected() > 0)
}

fn lease_row(r: &PgRow) -> StoreResult<Lease> {
    let id: String = get(r, 0)?;
    let secret_version: i64 = get(r, 2)?;
    let secret_version = u32::try_from(secret_version).map_err(|e| corrupt(&format!("lease `{id}` secret version"), e))?;
    Ok(Lease {
        secret: get(r, 1)?,
        secret_version,
        task_id: get(r, 3)?,
        role: get(r, 4)?,
        credential: SealedSecretBlob { wrapped_key: get(r, 5)?, key_nonce: get(r, 6)?, nonce: get(r, 7)?, ciphertext: get(r, 8)? },
        created_at_ms: get(r, 9)?,
        expires_at_ms: get(r, 10)?,
        dropped_at_ms: get(r, 11)?,
        drop_reason: get(r, 12)?,
        id,
    })
}
