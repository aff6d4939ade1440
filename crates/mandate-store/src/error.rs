//! The one error type every store returns.

/// Why a store call failed.
///
/// Every variant has a stable snake_case [`code`](StoreError::code). Messages name the thing
/// concerned (`agent \`bot\``) and never carry backend types or SQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing being created exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// The thing named (or one it refers to) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request cannot be carried out as asked (a caller bug, not bad data).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend failed: unreachable, busy past its timeout, out of disk, and the like.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// Stored data cannot be read back as what it should be.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The stored schema was written by a newer release.
    #[error("store schema version {found} is newer than this release supports (at most {supported}); upgrade mandate")]
    SchemaTooNew {
        /// The version found in the store.
        found: i64,
        /// The newest version this release knows.
        supported: i64,
    },
}

impl StoreError {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Conflict(_) => "conflict",
            StoreError::NotFound(_) => "not_found",
            StoreError::Invalid(_) => "invalid_store_request",
            StoreError::Backend(_) => "store_unavailable",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::SchemaTooNew { .. } => "store_schema_too_new",
        }
    }
}

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages_are_stable() {
        let e = StoreError::Conflict("agent `bot`".into());
        assert_eq!((e.code(), e.to_string().as_str()), ("conflict", "agent `bot` already exists"));
        let e = StoreError::NotFound("task `t1`".into());
        assert_eq!((e.code(), e.to_string().as_str()), ("not_found", "task `t1` not found"));
        assert_eq!(StoreError::Backend("disk full".into()).code(), "store_unavailable");
        assert_eq!(StoreError::Corrupt("x".into()).code(), "store_corrupt");
        assert_eq!(StoreError::Invalid("x".into()).code(), "invalid_store_request");
        let e = StoreError::SchemaTooNew { found: 9, supported: 1 };
        assert_eq!(e.code(), "store_schema_too_new");
        assert!(e.to_string().starts_with("store schema version 9 is newer"));
    }
}
