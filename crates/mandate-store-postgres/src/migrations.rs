//! Schema migrations: numbered SQL files compiled into the binary, applied in order, one
//! transaction each, and recorded in `schema_migrations`.
//!
//! Several servers may start at once against one database: each migrates while holding a
//! session-level advisory lock, so one applies the migrations and the others find them applied.
//! A migration, once released, never changes; a new schema is a new file. A database whose
//! schema is newer than the code is refused rather than guessed at.

use std::time::{SystemTime, UNIX_EPOCH};

use mandate_store::{StoreError, StoreResult};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, Row};

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
    Migration { version: 2, name: "leases", sql: include_str!("../migrations/0002_leases.sql") },
    Migration { version: 3, name: "issuer_limits", sql: include_str!("../migrations/0003_issuer_limits.sql") },
];

/// The schema version this code writes and reads.
pub(crate) const LATEST_VERSION: i64 = 3;

/// The advisory lock (one 64-bit key, database-wide) held while migrating.
const MIGRATION_LOCK: i64 = 0x4d41_4e44_4154_4531;

/// Connects once, brings the schema up to [`LATEST_VERSION`] under the migration lock, and
/// disconnects. Returns the versions before and after.
pub(crate) async fn run(options: &PgConnectOptions, setup: &str, schema: Option<&str>) -> StoreResult<(i64, i64)> {
    let mut conn = PgConnection::connect_with(options).await.map_err(db)?;
    conn.execute(setup).await.map_err(db)?;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await.map_err(db)?;
    let result = migrate(&mut conn, schema).await;
    // Closing the session releases the lock even if unlocking fails.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut conn).await;
    let _ = conn.close().await;
    let migrated = result?;
    unlocked.map_err(db)?;
    Ok(migrated)
}

async fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> StoreResult<(i64, i64)> {
    if let Some(schema) = schema {
        // The name was checked to need no quoting.
        let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
        conn.execute(create.as_str()).await.map_err(db)?;
    }
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       BIGINT PRIMARY KEY,
            name          TEXT NOT NULL,
            applied_at_ms BIGINT NOT NULL
        )",
    )
    .await
    .map_err(db)?;
    let from = current_version(conn).await?;
    check_applied(conn).await?;
    for m in MIGRATIONS {
        if m.version <= from {
            continue;
        }
        let mut tx = conn.begin().await.map_err(db)?;
        tx.execute(m.sql)
            .await
            .map_err(|e| StoreError::Backend(format!("schema migration {} `{}` failed: {}", m.version, m.name, db(e))))?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::info!(version = m.version, name = m.name, "applied schema migration");
    }
    Ok((from, current_version(conn).await?))
}

/// The highest applied version; 0 for a new database. [`StoreError::SchemaTooNew`] if it is
/// beyond [`LATEST_VERSION`].
async fn current_version(conn: &mut PgConnection) -> StoreResult<i64> {
    let row = sqlx::query("SELECT max(version) FROM schema_migrations").fetch_one(&mut *conn).await.map_err(db)?;
    let version = row.try_get::<Option<i64>, _>(0).map_err(db)?.unwrap_or(0);
    if version > LATEST_VERSION {
        return Err(StoreError::SchemaTooNew { found: version, supported: LATEST_VERSION });
    }
    Ok(version)
}

/// Every recorded migration must be one of ours, under the same name.
async fn check_applied(conn: &mut PgConnection) -> StoreResult<()> {
    let rows = sqlx::query("SELECT version, name FROM schema_migrations ORDER BY version").fetch_all(&mut *conn).await.map_err(db)?;
    for row in rows {
        let version: i64 = row.try_get(0).map_err(db)?;
        let name: String = row.try_get(1).map_err(db)?;
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
}
