//! Mandate's wire types: the JSON bodies of the admin API, the AuthZEN decision API, the OAuth
//! endpoints and the endpoints remote gateways use, plus the stable error codes every endpoint
//! answers with.
//!
//! Serde only: no HTTP, no I/O. The server and the typed client both speak these types, so a
//! field renamed here is renamed for both at once.

pub mod admin;
pub mod authzen;
pub mod error;
pub mod gateway;
pub mod oauth;

pub use error::{ApiErrorBody, ErrorCode, ErrorDetail};
