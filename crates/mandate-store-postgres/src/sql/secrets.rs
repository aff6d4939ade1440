//! Brokered secret versions.

use mandate_store::{Change, SealedSecretBlob, SecretKind, SecretRecord, StoreError, StoreResult};
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use super::{get, notifying};
use crate::error::{Constraint, constraint, corrupt, db};
use crate::notify::Envelope;

const COLUMNS: &str = "name, version, description, created_at_ms, created_by, wrapped_key, key_nonce, nonce, ciphertext, kind";

pub(crate) async fn put_version(pool: &PgPool, env: &Envelope, s: &SecretRecord) -> StoreResult<()> {
    const SQL: &str = notifying!(
        "INSERT INTO secrets (name, version, description, created_at_ms, created_by, wrapped_key, key_nonce, nonce, ciphertext, kind)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING 1",
        11
    );
    let b = &s.sealed;
    let result = sqlx::query(SQL)
        .bind(&s.name)
        .bind(i64::from(s.version))
        .bind(&s.description)
        .bind(s.created_at_ms)
        .bind(&s.created_by)
        .bind(&b.wrapped_key)
        .bind(&b.key_nonce)
        .bind(&b.nonce)
        .bind(&b.ciphertext)
        .bind(s.kind.as_str())
        .bind(env.payloads(&Change::Secret(s.name.clone())))
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(constraint(&e), Some(Constraint::Unique(_))) => {
            Err(StoreError::Conflict(format!("secret `{}` version {}", s.name, s.version)))
        }
        Err(e) => Err(db(e)),
    }
}

pub(crate) async fn latest(pool: &PgPool, name: &str) -> StoreResult<Option<SecretRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM secrets WHERE name = $1 ORDER BY version DESC LIMIT 1");
    let row = sqlx::query(&sql).bind(name).fetch_optional(pool).await.map_err(db)?;
    row.as_ref().map(secret_row).transpose()
}

pub(crate) async fn list(pool: &PgPool) -> StoreResult<Vec<SecretRecord>> {
    let sql = format!("SELECT DISTINCT ON (name) {COLUMNS} FROM secrets ORDER BY name, version DESC");
    let rows = sqlx::query(&sql).fetch_all(pool).await.map_err(db)?;
    rows.iter().map(secret_row).collect()
}

pub(crate) async fn delete(pool: &PgPool, env: &Envelope, name: &str) -> StoreResult<bool> {
    const SQL: &str = notifying!("DELETE FROM secrets WHERE name = $1 RETURNING 1", 2);
    let rows = sqlx::query(SQL).bind(name).bind(env.payloads(&Change::Secret(name.to_owned()))).fetch_all(pool).await.map_err(db)?;
    Ok(!rows.is_empty())
}

fn secret_row(r: &PgRow) -> StoreResult<SecretRecord> {
    let name: String = get(r, 0)?;
    let version: i64 = get(r, 1)?;
    let version = u32::try_from(version).map_err(|e| corrupt(&format!("secret `{name}` version"), e))?;
    let kind: String = get(r, 9)?;
    let kind = SecretKind::parse(&kind).ok_or_else(|| corrupt(&format!("secret `{name}` kind"), &kind))?;
    Ok(SecretRecord {
        name,
        version,
        kind,
        description: get(r, 2)?,
        created_at_ms: get(r, 3)?,
        created_by: get(r, 4)?,
        sealed: SealedSecretBlob { wrapped_key: get(r, 5)?, key_nonce: get(r, 6)?, nonce: get(r, 7)?, ciphertext: get(r, 8)? },
    })
}
