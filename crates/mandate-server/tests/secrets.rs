//! The in-process secret reveal the gateway uses: values survive a restart under the same
//! master key (from the key file or given), and another master key fails cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mandate_core::{Clock, SystemClock, TrustDomain};
use mandate_secrets::MasterKey;
use mandate_server::{AppState, Background, Settings, app};
use mandate_store::Store;
use mandate_store_sqlite::SqliteStore;
use tower::ServiceExt;

const ADMIN: &str = "mdt_server_test_admin_secret_0123";

async fn start(dir: &Path, master_key: Option<MasterKey>) -> (Arc<AppState>, Background) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("mandate.db")).unwrap());
    let mut settings = Settings::new("http://127.0.0.1".into(), TrustDomain::parse("test.local").unwrap(), dir.join("keys"));
    settings.master_key = master_key;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    AppState::start(settings, store, clock).await.unwrap()
}

async fn put(state: &Arc<AppState>, name: &str, value: &str) -> StatusCode {
    if state.store.list_api_tokens().await.unwrap().is_empty() {
        state.install_admin_secret(ADMIN).await.unwrap();
    }
    let req = Request::put(format!("/v1/secrets/{name}"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::json!({ "value": value, "description": "test" }).to_string()))
        .unwrap();
    app(state.clone()).oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn reveal_survives_a_restart_with_the_same_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (state, bg) = start(tmp.path(), None).await;
    assert_eq!(put(&state, "api-key", "s3cr3t-value").await, StatusCode::CREATED);
    let (version, value) = state.reveal_secret("api-key").await.unwrap();
    assert_eq!((version, value.as_slice()), (1, b"s3cr3t-value".as_slice()));
    let missing = state.reveal_secret("missing").await.unwrap_err();
    assert_eq!(missing.code(), "secret_not_found");
    bg.shutdown(state).await;

    let (state, bg) = start(tmp.path(), None).await;
    let (version, value) = state.reveal_secret("api-key").await.unwrap();
    assert_eq!((version, value.as_slice()), (1, b"s3cr3t-value".as_slice()));
    bg.shutdown(state).await;

    // Another master key opens the store but cannot open the secret.
    let (state, bg) = start(tmp.path(), Some(MasterKey::generate())).await;
    let err = state.reveal_secret("api-key").await.unwrap_err();
    assert_eq!(err.code(), "secret_undecryptable");
    assert!(!err.to_string().contains("s3cr3t"), "{err}");
    bg.shutdown(state).await;
}

#[tokio::test]
async fn a_given_master_key_is_used_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let (state, bg) = start(tmp.path(), Some(key.clone())).await;
    assert_eq!(put(&state, "db.password", "hunter2-long").await, StatusCode::CREATED);
    bg.shutdown(state).await;
    assert!(!tmp.path().join("keys/master.key").exists(), "a given key writes no key file");

    let (state, bg) = start(tmp.path(), Some(key)).await;
    let (version, value) = state.reveal_secret("db.password").await.unwrap();
    assert_eq!((version, value.as_slice()), (1, b"hunter2-long".as_slice()));
    bg.shutdown(state).await;

    // Falling back to a (newly generated) key file means another key: a clean failure.
    let (state, bg) = start(tmp.path(), None).await;
    assert_eq!(state.reveal_secret("db.password").await.unwrap_err().code(), "secret_undecryptable");
    bg.shutdown(state).await;
}
