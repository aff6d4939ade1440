//! Mandate's embedded default store: one SQLite file (WAL, `synchronous=FULL`) behind the
//! [`mandate_store::Store`] trait, with its schema kept by numbered migrations.
//!
//! This is the only crate that speaks SQL to SQLite; nothing SQLite-specific crosses the trait.

mod error;
mod migrate;
mod pool;
mod sql;
mod store;
mod wal;

pub use store::SqliteStore;

/// The schema version this release reads and writes.
pub const SCHEMA_VERSION: i64 = migrate::LATEST_VERSION;
