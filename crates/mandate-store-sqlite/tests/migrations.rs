//! Opening: schema creation, re-opening, and refusing schemas from the future.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed step should stop the test loudly"
)]

use mandate_store::{Store, StoreError};
use mandate_store_sqlite::{SCHEMA_VERSION, SqliteStore};
use rusqlite::Connection;

fn migrations(path: &std::path::Path) -> Vec<(i64, String)> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT version, name FROM schema_migrations ORDER BY version").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn open_creates_the_schema_and_reopen_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/mandate.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.put_meta("trust_domain", "example.org").await.unwrap();
    }
    assert_eq!(
        migrations(&path),
        [
            (1, "initial".to_owned()),
            (2, "secrets".to_owned()),
            (3, "approvals".to_owned()),
            (4, "leases".to_owned()),
            (5, "issuer_limits".to_owned())
        ]
    );

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_meta("trust_domain").await.unwrap().as_deref(), Some("example.org"));
    drop(store);
    assert_eq!(migrations(&path).len() as i64, SCHEMA_VERSION, "re-opening applies nothing twice");
}

#[test]
fn the_journal_is_write_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    let _store = SqliteStore::open(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, 'from the future', 0)", [SCHEMA_VERSION + 1])
        .unwrap();
    drop(conn);

    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(err.code(), "store_schema_too_new");
    assert!(err.to_string().contains("newer than this release supports"), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    std::fs::write(&path, b"this is not an sqlite database, just some text that is long enough").unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert_eq!(err.code(), "store_corrupt", "{err}");
}

#[tokio::test]
async fn secrets_stored_before_kinds_existed_are_static() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    {
        // A database as the release before leases left it: migrations 1 to 3 and one secret.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL) STRICT",
        )
        .unwrap();
        for (version, name, sql) in [
            (1, "initial", include_str!("../migrations/0001_initial.sql")),
            (2, "secrets", include_str!("../migrations/0002_secrets.sql")),
            (3, "approvals", include_str!("../migrations/0003_approvals.sql")),
        ] {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, ?2, 0)", rusqlite::params![version, name]).unwrap();
        }
        conn.execute("INSERT INTO secrets VALUES ('github-token', 1, 'd', 0, 'token:t', x'01', x'02', x'03', x'04')", []).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let s = store.latest_secret("github-token").await.unwrap().unwrap();
    assert_eq!((s.version, s.kind), (1, mandate_store::SecretKind::Static));
    assert!(store.list_leases(&mandate_store::LeaseFilter::default()).await.unwrap().is_empty());
}

/// An issuer stored before per-issuer token rules existed reads with the defaults: the server's
/// lifetime limit and no reuse.
#[tokio::test]
async fn an_issuer_stored_before_token_rules_gets_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mandate.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
        )
        .unwrap();
        let files = [
            (1, "initial", include_str!("../migrations/0001_initial.sql")),
            (2, "secrets", include_str!("../migrations/0002_secrets.sql")),
            (3, "approvals", include_str!("../migrations/0003_approvals.sql")),
            (4, "leases", include_str!("../migrations/0004_leases.sql")),
        ];
        for (version, name, sql) in files {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, 0)",
                rusqlite::params![version, name],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO issuers (issuer, audience, jwks, jwks_url, rules, created_at_ms) VALUES (?1, 'mandate', ?2, NULL, ?3, 7)",
            ["https://old.example.com", r#"{"keys":[]}"#, r#"[{"claim":"sub","pattern":"{agent}"}]"#],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let issuer = store.get_issuer("https://old.example.com").await.unwrap().unwrap();
    assert_eq!((issuer.max_token_lifetime_secs, issuer.allow_token_reuse), (None, false));
    assert_eq!(issuer.created_at_ms, 7);
    assert_eq!(migrations(&path).len() as i64, SCHEMA_VERSION);
}
