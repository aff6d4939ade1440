//! `mandate audit verify --data-dir DIR`: verify a store file directly, with the public keys
//! from the same data directory, no server needed (e.g. on a copy taken for an investigation).

use std::path::Path;

use anyhow::Context;
use mandate_proto::admin::AuditVerifyResponse;
use mandate_store_sqlite::SqliteStore;

pub async fn verify_data_dir(dir: &Path) -> anyhow::Result<AuditVerifyResponse> {
    let db = dir.join("mandate.db");
    if !db.exists() {
        anyhow::bail!("`{}` holds no Mandate store (no mandate.db)", dir.display());
    }
    let store = SqliteStore::open(&db).with_context(|| format!("cannot open `{}`", db.display()))?;
    let keys = mandate_server::read_public_keys(&dir.join("keys")).context("cannot read the data directory's public keys")?;
    Ok(mandate_server::verify_trail(&store, &keys).await?)
}
