//! The SQL behind each [`Store`](mandate_store::Store) method.
//!
//! A write that other processes keep a view of sends its notification in the same transaction
//! (usually the same statement, through [`notifying!`]), so that a notification goes out if and
//! only if the change commits.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod directory;
pub(crate) mod leases;
pub(crate) mod secrets;
pub(crate) mod tasks;

use mandate_store::{StoreError, StoreResult};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::error::{corrupt, db};

/// Wraps a data-changing statement ending in `RETURNING 1` so that, if it changed a row, it
/// also sends every payload of the `text[]` parameter `$n` on the change channel. The statement
/// returns one row per payload sent, and none if it changed nothing.
macro_rules! notifying {
    ($write:expr, $n:literal) => {
        concat!(
            "WITH w AS (",
            $write,
            ") SELECT pg_notify('mandate_changes', p) FROM unnest($",
            stringify!($n),
            "::text[]) AS p WHERE EXISTS (SELECT 1 FROM w)"
        )
    };
}
pub(crate) use notifying;

/// Sends `payloads` on the change channel as part of the transaction `conn` is in.
pub(crate) async fn notify(conn: &mut PgConnection, payloads: Vec<String>) -> StoreResult<()> {
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify('mandate_changes', p) FROM unnest($1::text[]) AS p").bind(payloads).execute(conn).await.map_err(db)?;
    Ok(())
}

/// A `LIMIT` parameter: counts beyond `i64::MAX` mean "no limit" anyway.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value as the JSON text stored in a column.
fn to_json<T: Serialize>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Invalid(format!("{what} cannot be stored: {e}")))
}

/// JSON text read from a column.
fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// Column `i` of `row`; a value of another type is corruption.
fn get<'r, T>(row: &'r PgRow, i: usize) -> StoreResult<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i).map_err(db)
}

/// One bound value of a query whose clauses depend on a filter.
enum Arg {
    Text(String),
    Int(i64),
}

/// A query built from optional clauses: `push` adds a value and returns its `$n`.
struct Args(Vec<Arg>);

impl Args {
    fn new() -> Self {
        Args(Vec::new())
    }

    fn push(&mut self, a: Arg) -> String {
        self.0.push(a);
        format!("${}", self.0.len())
    }

    fn bind<'q>(
        self,
        mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        for a in self.0 {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        q
    }
}
