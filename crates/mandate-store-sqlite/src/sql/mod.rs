//! The SQL behind each [`Store`](mandate_store::Store) method, as plain synchronous functions
//! over a connection. The async layer in [`crate::store`] moves them onto blocking threads.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod directory;
pub(crate) mod leases;
pub(crate) mod secrets;
pub(crate) mod tasks;

use mandate_store::StoreResult;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::corrupt;

/// A `LIMIT` parameter: counts beyond `i64::MAX` mean "no limit" anyway.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A value as the JSON text stored in a column.
fn to_json<T: Serialize>(what: &str, value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| mandate_store::StoreError::Invalid(format!("{what} cannot be stored: {e}")))
}

/// JSON text read from a column.
fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}
