//! Connecting: schema creation, migrating once, refusing schemas from the future, and keeping
//! the password out of everything shown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use mandate_store::{SecretKind, Store, StoreError};
use mandate_store_postgres::{PgOptions, PgStore, SCHEMA_VERSION, migrate};

use common::TestSchema;

async fn recorded(schema: &TestSchema) -> Vec<(i64, String)> {
    let mut sql = schema.sql().await;
    sqlx::query_as("SELECT version, name FROM schema_migrations ORDER BY version").fetch_all(&mut sql).await.unwrap()
}

#[tokio::test]
async fn connecting_creates_the_schema_and_migrates_once() {
    let Some(schema) = TestSchema::new() else { return };
    let store = schema.connect().await;
    assert_eq!(store.schema(), schema.name, "the tables live in the schema asked for");
    store.put_meta("trust_domain", "example.org").await.unwrap();
    let first = recorded(&schema).await;
    assert_eq!(first, [(1, "initial".to_owned()), (2, "leases".to_owned()), (3, "issuer_limits".to_owned())]);
    assert_eq!(first.len() as i64, SCHEMA_VERSION);

    let again = schema.connect().await;
    assert_eq!(again.get_meta("trust_domain").await.unwrap().as_deref(), Some("example.org"), "the data is shared");
    assert_eq!(recorded(&schema).await, first, "connecting again applies nothing twice");
    assert_eq!(migrate(&schema.options()).await.unwrap(), (SCHEMA_VERSION, SCHEMA_VERSION), "migrate on a current schema is a no-op");
}

#[tokio::test]
async fn migrate_reports_what_it_did() {
    let Some(schema) = TestSchema::new() else { return };
    assert_eq!(migrate(&schema.options()).await.unwrap(), (0, SCHEMA_VERSION));
    assert_eq!(migrate(&schema.options()).await.unwrap(), (SCHEMA_VERSION, SCHEMA_VERSION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once() {
    let Some(schema) = TestSchema::new() else { return };
    let opts = schema.options();
    let starts: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn({
                let opts = opts.clone();
                async move { PgStore::connect(&opts).await }
            })
        })
        .collect();
    for s in starts {
        s.await.unwrap().expect("every server starts");
    }
    assert_eq!(recorded(&schema).await.len() as i64, SCHEMA_VERSION);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(schema) = TestSchema::new() else { return };
    drop(schema.connect().await);
    let mut sql = schema.sql().await;
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, 'from the future', 0)")
        .bind(SCHEMA_VERSION + 1)
        .execute(&mut sql)
        .await
        .unwrap();

    let err = PgStore::connect(&schema.options()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(err.code(), "store_schema_too_new");
    assert!(matches!(migrate(&schema.options()).await, Err(StoreError::SchemaTooNew { .. })));
}

#[tokio::test]
async fn an_unknown_migration_is_refused() {
    let Some(schema) = TestSchema::new() else { return };
    drop(schema.connect().await);
    let mut sql = schema.sql().await;
    sqlx::query("UPDATE schema_migrations SET name = 'other' WHERE version = 1").execute(&mut sql).await.unwrap();
    assert_eq!(PgStore::connect(&schema.options()).await.unwrap_err().code(), "store_corrupt");
}

#[tokio::test]
async fn the_password_never_shows() {
    let Some(schema) = TestSchema::new() else { return };
    let mut url = url::Url::parse(&schema.url).unwrap();
    url.set_password(Some("pw-that-must-not-show")).unwrap();
    let with_password = PgOptions { url: url.to_string(), ..schema.options() };
    assert!(!format!("{with_password:?}").contains("pw-that-must-not-show"));
    // The test server may trust the connection and ignore the password, or refuse it: either
    // way nothing shown carries it.
    match PgStore::connect(&with_password).await {
        Ok(store) => assert!(!format!("{store:?}").contains("pw-that-must-not-show")),
        Err(e) => assert!(!e.to_string().contains("pw-that-must-not-show"), "{e}"),
    }

    url.set_port(Some(1)).unwrap();
    let unreachable = PgOptions { url: url.to_string(), acquire_timeout: std::time::Duration::from_secs(2), ..schema.options() };
    let err = PgStore::connect(&unreachable).await.unwrap_err();
    assert_eq!(err.code(), "store_unavailable", "{err}");
    assert!(!err.to_string().contains("pw-that-must-not-show"), "{err}");
}

#[tokio::test]
async fn a_bad_schema_name_is_refused() {
    let Some(schema) = TestSchema::new() else { return };
    let bad = PgOptions { schema: Some("Robert'); DROP TABLE".into()), ..schema.options() };
    assert!(matches!(PgStore::connect(&bad).await, Err(StoreError::Invalid(_))));
}

/// A store written by the first release is brought up to date in place: its data stays, and
/// what it stored before secrets had kinds reads as static.
#[tokio::test]
async fn a_first_release_schema_is_upgraded_in_place() {
    let Some(schema) = TestSchema::new() else { return };
    let mut sql = schema.sql().await;
    sqlx::raw_sql(&format!("CREATE SCHEMA {0}; SET search_path TO {0}", schema.name)).execute(&mut sql).await.unwrap();
    sqlx::raw_sql(include_str!("../migrations/0001_initial.sql")).execute(&mut sql).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL);
         INSERT INTO schema_migrations VALUES (1, 'initial', 0);
         INSERT INTO secrets (name, version, description, created_at_ms, created_by, wrapped_key, key_nonce, nonce, ciphertext)
             VALUES ('github', 1, 'token', 5, 'tok_1', '\\x01', '\\x02', '\\x03', '\\x04');",
    )
    .execute(&mut sql)
    .await
    .unwrap();

    assert_eq!(migrate(&schema.options()).await.unwrap(), (1, SCHEMA_VERSION));
    let store = schema.connect().await;
    let secret = store.latest_secret("github").await.unwrap().expect("the data stays");
    assert_eq!((secret.kind, secret.sealed.ciphertext), (SecretKind::Static, vec![4]));
}

/// `sslmode=require` speaks TLS on every connection (the pool's and the listener's).
#[tokio::test]
async fn tls_is_used_when_required() {
    let Some(schema) = TestSchema::new() else { return };
    let mut sql = schema.sql().await;
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut sql).await.unwrap();
    if ssl != "on" {
        eprintln!("skipped: the test PostgreSQL server does not offer TLS (TLS store test)");
        return;
    }
    let mut url = url::Url::parse(&schema.url).unwrap();
    url.query_pairs_mut().append_pair("sslmode", "require");
    let store = PgStore::connect(&PgOptions { url: url.to_string(), ..schema.options() }).await.unwrap();
    store.put_meta("over", "tls").await.unwrap();
    assert_eq!(store.get_meta("over").await.unwrap().as_deref(), Some("tls"));
    let encrypted: Vec<bool> =
        sqlx::query_scalar("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1")
            .bind(store.listener_application_name())
            .fetch_all(&mut sql)
            .await
            .unwrap();
    assert_eq!(encrypted, [true], "the listener's connection is encrypted");
}
