//! Mandate's shared store: PostgreSQL behind the [`mandate_store::Store`] trait, so that several
//! Mandate servers can serve one deployment from one database.
//!
//! ```no_run
//! # async fn open() -> Result<(), mandate_store::StoreError> {
//! use mandate_store_postgres::{PgOptions, PgStore};
//!
//! let opts = PgOptions { schema: Some("mandate".into()), ..PgOptions::new("postgres://mandate:pw@db.internal/mandate?sslmode=require") };
//! let store = PgStore::connect(&opts).await?;
//! # Ok(()) }
//! ```
//!
//! # What is shared, and how
//!
//! - **The schema** is kept by numbered migrations compiled into the binary, applied by
//!   [`PgStore::connect`] (or [`migrate`]) while holding an advisory lock, so servers starting
//!   together do not race. A schema newer than this release is refused
//!   ([`StoreError::SchemaTooNew`](mandate_store::StoreError::SchemaTooNew)). With
//!   [`PgOptions::schema`] set, everything lives in that schema (created if missing).
//! - **The audit trail** is one hash chain for all servers: an append takes a transaction-scoped
//!   advisory lock, reads the head, seals onto it and inserts the batch in one transaction, so
//!   appends from every server line up into one gap-free chain, and a server killed mid-append
//!   leaves nothing of its batch.
//! - **One-shot moves** (ending tasks, deciding and using approvals, consuming attestation ids,
//!   compare-and-set of meta settings) are conditional updates or row-locked read-modify-writes:
//!   of racing calls from any servers, exactly one wins.
//!
//! # The change feed
//!
//! Servers keep views in memory (agents, live tasks, tokens, keys). Every write another server
//! may keep a view of sends `pg_notify('mandate_changes', …)` in the same transaction as the
//! write, so a notification is delivered if and only if the change committed. The payload is the
//! serde form of [`Change`](mandate_store::Change) plus the sending store's random `origin` id
//! and its `schema`; each stays under 7,900 bytes (a long list of ended tasks goes out in
//! several notifications).
//!
//! Each [`PgStore`] runs a listener on a connection of its own (`application_name`
//! `mandate-listener-<origin>`), LISTENing before [`PgStore::connect`] returns. It drops the
//! store's own changes (the writer knows them already) and changes made in another schema, and
//! forwards the rest to every [`changes()`](mandate_store::Store::changes) receiver. To miss
//! nothing, subscribe before loading a view: every change committed after the subscription
//! arrives. When the listener loses its connection (or a connection check after 30 s of quiet
//! fails), it reconnects with backoff (100 ms doubling to 5 s) and then sends
//! [`Change::Resync`](mandate_store::Change::Resync): what was sent meanwhile is lost, and the
//! receiver re-reads everything it keeps. A payload that cannot be read (from a newer release,
//! say) also becomes a `Resync`.
//!
//! **A receiver that gets `RecvError::Lagged` must treat it as a `Resync`**: it fell more than
//! 4,096 changes behind and missed some. The listener stops when the last clone of the store is
//! dropped; receivers then get `RecvError::Closed`.

mod databases;
mod error;
mod listener;
mod migrations;
mod notify;
mod options;
mod sql;
mod store;

pub use databases::{create_database, drop_database};
pub use options::PgOptions;
pub use store::{PgStore, migrate};

/// The schema version this release reads and writes.
pub const SCHEMA_VERSION: i64 = migrations::LATEST_VERSION;
