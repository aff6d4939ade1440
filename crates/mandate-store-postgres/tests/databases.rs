//! Throwaway databases (for benchmarks and tests): made, usable, dropped with their sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

mod common;

use mandate_store::StoreError;
use mandate_store_postgres::{create_database, drop_database};
use sqlx::{Connection, PgConnection};

async fn exists(admin: &str, name: &str) -> bool {
    let mut c = PgConnection::connect(admin).await.unwrap();
    let n: (i64,) = sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname = $1").bind(name).fetch_one(&mut c).await.unwrap();
    n.0 == 1
}

#[tokio::test]
async fn a_throwaway_database_is_created_and_dropped_with_its_sessions() {
    let Some(admin) = common::database_url() else { return };
    let name = format!("mandate_scratch_{:016x}", rand::random::<u64>());
    create_database(&admin, &name).await.unwrap();
    assert!(exists(&admin, &name).await);
    assert!(matches!(create_database(&admin, &name).await, Err(StoreError::Backend(_))), "it exists already");

    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    let mut open = PgConnection::connect(url.as_str()).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut open).await.unwrap();

    drop_database(&admin, &name).await.unwrap();
    assert!(!exists(&admin, &name).await);
    assert!(sqlx::query("SELECT 1").execute(&mut open).await.is_err(), "its open session was ended");
    drop_database(&admin, &name).await.unwrap();
}
