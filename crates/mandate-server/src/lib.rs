//! Mandate's control plane as a library: the axum router, the decision pipeline, the OAuth
//! endpoints, the audit writer. The binary chooses the store and the listener; this crate
//! never does.

pub mod approvals;
mod audit_sink;
mod auth;
mod cache;
mod console;
pub mod dyncreds;
mod error;
mod extract;
mod gateways;
mod jwks_fetch;
mod keys;
mod metrics;
pub mod pipeline;
mod policy_reload;
mod receipts;
mod registry;
mod revocations;
mod routes;
mod secrets;
mod settings;
mod state;
mod sync;
mod tasks;
mod verify;
pub mod webhook;

pub use audit_sink::{AuditSink, AuditUnavailable};
pub use cache::MandateCache;
pub use error::ApiError;
pub use keys::{KeyError, KeyManager, MASTER_KEY_FILE, Signing, read_public_keys};
pub use policy_reload::reload as reload_policies;
pub use registry::{Registry, TaskState};
pub use revocations::{FeedItem, Gap, RETAINED as REVOCATIONS_RETAINED, RevocationFeed, Subscription};
pub use routes::app;
pub use secrets::RevealError;
pub use settings::Settings;
pub use state::{AppState, Background, StartError, hash_secret};
pub use tasks::sweep_once;
pub use verify::verify_trail;
