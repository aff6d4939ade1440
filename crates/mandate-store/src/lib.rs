//! Mandate's storage contract: the [`Store`] trait every backend implements, the filters its
//! queries take, the one error type it returns, and the [`conformance`] suite every backend must
//! pass. Beside it, the [`credentials`] contract: what dynamic credentials ask of a database.
//!
//! Nothing here names a database: backends (`mandate-store-sqlite`, later PostgreSQL) live in
//! their own crates and only the binary chooses one.

mod change;
pub mod conformance;
pub mod credentials;
mod error;
mod query;
mod secret;
mod store;
mod verify;

pub use change::Change;
pub use error::{StoreError, StoreResult};
pub use query::{ApprovalFilter, AuditQuery, DEFAULT_LIMIT, LeaseFilter, TaskFilter};
pub use secret::{Lease, SealedSecretBlob, SecretKind, SecretRecord};
pub use store::Store;
pub use verify::{VERIFY_PAGE, verify_audit};
