//! Choosing the store: the data directory's SQLite file, or PostgreSQL when a database URL is
//! given (`--database-url`, `MANDATE_DATABASE_URL`, `[database] url`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mandate_store::Store;
use mandate_store_postgres::{PgOptions, PgStore};
use mandate_store_sqlite::SqliteStore;

use crate::config::DatabaseSettings;

/// Opens the store `mandate serve` uses, bringing its schema up to date.
pub async fn open(data_dir: &Path, db: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    match pg_options(db) {
        None => {
            let path = data_dir.join("mandate.db");
            let store = SqliteStore::open(&path).with_context(|| format!("cannot open the store in `{}`", data_dir.display()))?;
            Ok(Arc::new(store))
        }
        Some(opts) => {
            // The error never holds the password; the URL is named without it.
            let store = PgStore::connect(&opts).await.with_context(|| format!("cannot open the store at `{}`", opts.redacted_url()))?;
            tracing::info!(database = %opts.redacted_url(), pool = opts.max_connections, "opened the PostgreSQL store");
            Ok(Arc::new(store))
        }
    }
}

/// `mandate migrate`: applies the store's migrations and says where it stands.
pub async fn migrate(data_dir: &Path, db: &DatabaseSettings) -> anyhow::Result<String> {
    match pg_options(db) {
        None => {
            let path = data_dir.join("mandate.db");
            SqliteStore::open(&path).with_context(|| format!("cannot open the store in `{}`", data_dir.display()))?;
            Ok(format!("the SQLite store `{}` is up to date", path.display()))
        }
        Some(opts) => {
            let (from, to) =
                mandate_store_postgres::migrate(&opts).await.with_context(|| format!("cannot migrate `{}`", opts.redacted_url()))?;
            Ok(if from == to {
                format!("the PostgreSQL store `{}` is up to date (schema version {to})", opts.redacted_url())
            } else {
                format!("the PostgreSQL store `{}` is up to date: migrated from schema version {from} to {to}", opts.redacted_url())
            })
        }
    }
}

fn pg_options(db: &DatabaseSettings) -> Option<PgOptions> {
    let url = db.url.as_ref()?;
    Some(PgOptions {
        max_connections: db.max_connections,
        acquire_timeout: Duration::from_secs(db.acquire_timeout_secs),
        ..PgOptions::new(url.clone())
    })
}
