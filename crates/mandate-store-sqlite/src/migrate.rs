//! Schema migrations: numbered SQL files compiled into the binary, applied at open in order, one
//! transaction each, and recorded in `schema_migrations`.
//!
//! A migration, once released, never changes; a new schema is a new file. A database whose
//! schema is newer than the code is refused rather than guessed at.

use std::time::{SystemTime, UNIX_EPOCH};

use mandate_store::{StoreError, StoreResult};
use rusqlite::{Connection, TransactionBehavior, params};

use crate::error::db;

/// One schema change.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in version order, from 1 without gaps.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial", sql: include_str!("../migrations/0001_initial.sql") },
    Migration { version: 2, name: "secrets", sql: include_str!("../migrations/0002_secrets.sql") },
    Migration { version: 3, name: "approvals", sql: include_str!("../migrations/0003_approvals.sql") },
    Migration { version: 4, name: "leases", sql: include_str!("../migrations/0004_leases.sql") },
    Migration { version: 5, name: "issuer_limits", sql: include_str!("../migrations/0005_issuer_limits.sql") },
];

/// The schema version this code writes and reads.
pub(crate) const LATEST_VERSION: i64 = 5;

/// What [`migrate`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Migrated {
    /// The version the database had.
    pub(crate) from: i64,
    /// The version it has now ([`LATEST_VERSION`]).
    pub(crate) to: i64,
}

/// Brings the database up to [`LATEST_VERSION`]. Refuses a database written by newer code, and
/// one whose recorded migrations are not the ones this code has.
pub(crate) fn migrate(conn: &mut Connection) -> StoreResult<Migrated> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY,
            name          TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        ) STRICT",
    )
    .map_err(db)?;
    let from = current_version(conn)?;
    check_applied(conn)?;
    for m in MIGRATIONS {
        // Another process may migrate at the same time: decide inside the write lock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        if current_version(&tx)? >= m.version {
            continue;
        }
        tx.execute_batch(m.sql)
            .map_err(|e| StoreError::Backend(format!("schema migration {} `{}` failed: {}", m.version, m.name, db(e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, now_ms()],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        tracing::info!(version = m.version, name = m.name, "applied schema migration");
    }
    Ok(Migrated { from, to: current_version(conn)? })
}

/// The highest applied version; 0 for a new database. [`StoreError::SchemaTooNew`] if it is
/// beyond [`LATEST_VERSION`].
fn current_version(conn: &Connection) -> StoreResult<i64> {
    let version =
        conn.query_row("SELECT max(version) FROM schema_migrations", [], |row| row.get::<_, Option<i64>>(0)).map_err(db)?.unwrap_or(0);
    if version > LATEST_VERSION {
        return Err(StoreError::SchemaTooNew { found: version, supported: LATEST_VERSION });
    }
    Ok(version)
}

/// Every recorded migration must be one of ours, under the same name.
fn check_applied(conn: &Connection) -> StoreResult<()> {
    let mut stmt = conn.prepare("SELECT version, name FROM schema_migrations ORDER BY version").map_err(db)?;
    let rows = stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))).map_err(db)?;
    for row in rows {
        let (version, name) = row.map_err(db)?;
        let known = MIGRATIONS.iter().find(|m| m.version == version);
        if known.is_none_or(|m| m.name != name) {
            return Err(StoreError::Corrupt(format!("schema migration {version} `{name}` is not one this release knows")));
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "migration `{}`", m.name);
        }
        assert_eq!(MIGRATIONS.last().unwrap().version, LATEST_VERSION);
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), Migrated { from: 0, to: LATEST_VERSION });
        assert_eq!(migrate(&mut conn).unwrap(), Migrated { from: LATEST_VERSION, to: LATEST_VERSION });
        let rows: i64 = conn.query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, LATEST_VERSION);
    }

    #[test]
    fn an_unknown_migration_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute("UPDATE schema_migrations SET name = 'other' WHERE version = 1", []).unwrap();
        assert_eq!(migrate(&mut conn).unwrap_err().code(), "store_corrupt");
    }
}
