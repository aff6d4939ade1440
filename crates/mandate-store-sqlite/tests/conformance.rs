//! The shared storage conformance suite, run against a fresh SQLite store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step should stop the test loudly"
)]

use std::sync::Arc;

use mandate_store::{Store, conformance};
use mandate_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("mandate.db")).unwrap());
    conformance::run_all(store).await;
}

#[tokio::test]
async fn sqlite_store_conforms_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("nested/dir/mandate.db")).unwrap());
    conformance::run_all(store).await;
}
