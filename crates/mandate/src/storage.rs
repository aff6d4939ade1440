//! Choosing the store: the data directory's SQLite file, or PostgreSQL when a database URL is
//! given (`--database-url`, `MANDATE_DATABASE_URL`, `[database] url`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use mandate_store::Store;
use mandate_store_sqlite::SqliteStore;

use crate::config::DatabaseSettings;

/// Opens the store `mandate serve` uses, bringing its schema up to date.
pub async fn open(data_dir: &Path, db: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    match &db.url {
        None => {
            let path = data_dir.join("mandate.db");
            let store = SqliteStore::open(&path).with_context(|| format!("cannot open the store in `{}`", data_dir.display()))?;
            Ok(Arc::new(store))
        }
        Some(_) => anyhow::bail!("PostgreSQL support is not built yet"),
    }
}

/// `mandate migrate`: applies the store's migrations and says where it stands.
pub async fn migrate(data_dir: &Path, db: &DatabaseSettings) -> anyhow::Result<String> {
    match &db.url {
        None => {
            let path = data_dir.join("mandate.db");
            SqliteStore::open(&path).with_context(|| format!("cannot open the store in `{}`", data_dir.display()))?;
            Ok(format!("the SQLite store `{}` is up to date", path.display()))
        }
        Some(_) => anyhow::bail!("PostgreSQL support is not built yet"),
    }
}
