//! Brokered secret versions.

use mandate_store::{SealedSecretBlob, SecretKind, SecretRecord, StoreError, StoreResult};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{Constraint, constraint, corrupt, db};

const COLUMNS: &str = "name, version, description, created_at_ms, created_by, wrapped_key, key_nonce, nonce, ciphertext, kind";

pub(crate) fn put_version(c: &Connection, s: &SecretRecord) -> StoreResult<()> {
    let sql = format!("INSERT INTO secrets ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    let b = &s.sealed;
    match c.execute(
        &sql,
        params![
            s.name,
            s.version,
            s.description,
            s.created_at_ms,
            s.created_by,
            b.wrapped_key,
            b.key_nonce,
            b.nonce,
            b.ciphertext,
            s.kind.as_str()
        ],
    ) {
        Ok(_) => Ok(()),
        Err(e) if constraint(&e) == Some(Constraint::Unique) => {
            Err(StoreError::Conflict(format!("secret `{}` version {}", s.name, s.version)))
        }
        Err(e) => Err(db(e)),
    }
}

pub(crate) fn latest(c: &Connection, name: &str) -> StoreResult<Option<SecretRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM secrets WHERE name = ?1 ORDER BY version DESC LIMIT 1");
    let row = c.prepare_cached(&sql).and_then(|mut s| s.query_row([name], secret_row).optional()).map_err(db)?;
    row.map(SecretRow::into_record).transpose()
}

pub(crate) fn list(c: &Connection) -> StoreResult<Vec<SecretRecord>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM secrets s
         WHERE version = (SELECT max(version) FROM secrets WHERE name = s.name)
         ORDER BY name"
    );
    let mut stmt = c.prepare(&sql).map_err(db)?;
    let rows = stmt.query_map([], secret_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(SecretRow::into_record)).collect()
}

pub(crate) fn delete(c: &Connection, name: &str) -> StoreResult<bool> {
    let n = c.execute("DELETE FROM secrets WHERE name = ?1", [name]).map_err(db)?;
    Ok(n > 0)
}

struct SecretRow {
    name: String,
    version: i64,
    description: String,
    created_at_ms: i64,
    created_by: String,
    sealed: SealedSecretBlob,
    kind: String,
}

fn secret_row(r: &Row<'_>) -> rusqlite::Result<SecretRow> {
    Ok(SecretRow {
        name: r.get(0)?,
        version: r.get(1)?,
        description: r.get(2)?,
        created_at_ms: r.get(3)?,
        created_by: r.get(4)?,
        sealed: SealedSecretBlob { wrapped_key: r.get(5)?, key_nonce: r.get(6)?, nonce: r.get(7)?, ciphertext: r.get(8)? },
        kind: r.get(9)?,
    })
}

impl SecretRow {
    fn into_record(self) -> StoreResult<SecretRecord> {
        let version = u32::try_from(self.version).map_err(|e| corrupt(&format!("secret `{}` version", self.name), e))?;
        let kind = SecretKind::parse(&self.kind).ok_or_else(|| corrupt(&format!("secret `{}` kind", self.name), &self.kind))?;
        Ok(SecretRecord {
            name: self.name,
            version,
            kind,
            description: self.description,
            created_at_ms: self.created_at_ms,
            created_by: self.created_by,
            sealed: self.sealed,
        })
    }
}
