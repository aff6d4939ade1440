//! Mandate tokens: mint and verify task mandates, verify agents' attestations and tokens of
//! trusted external issuers, and manage Mandate's signing keys and JWKS.
//!
//! - [`Minter`] and [`MandateVerifier`]: task mandates, RFC 9068 JWT access tokens signed
//!   with EdDSA whose `authorization_details` carry the task's intent.
//! - [`verify_agent_attestation`]: an agent proving possession of its registered key
//!   (RFC 7523 `private_key_jwt` shape); [`sign_attestation`] and [`generate_agent_key`] are
//!   the agent's side.
//! - [`ExternalVerifier`]: Kubernetes service account tokens, SPIRE JWT-SVIDs and CI OIDC
//!   tokens, mapped to agents by the issuer's claim rules.
//! - [`SigningKey`], [`PublicKey`], [`jwks`]: Mandate's Ed25519 keys, identified by their
//!   RFC 7638 thumbprints.
//!
//! Every verifier follows RFC 8725: a fixed algorithm allow-list per use (the token header
//! never chooses the algorithm), key type and algorithm must agree, `typ` is checked so one
//! kind of token cannot pass for another, and `iss`, `aud` and time are always checked. Time
//! is passed in; this crate does no I/O.

mod agent_key;
mod attest;
mod claims;
mod error;
mod external;
mod jwk;
mod jws;
mod keys;
mod mandate;

#[cfg(test)]
mod testing;

pub use agent_key::{AgentKeyAlg, generate_agent_key, sign_attestation};
pub use attest::{
    Attestation, AttestationRules, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_LIFETIME_SECS, MAX_JTI_BYTES, UnverifiedJwt, peek, validate_agent_jwk,
    verify_agent_attestation,
};
pub use error::TokenError;
pub use external::{ExternalAttestation, ExternalVerifier};
pub use jws::MAX_TOKEN_BYTES;
pub use keys::{PublicKey, SigningKey, jwks};
pub use mandate::{Actor, MANDATE_TYP, MandateClaims, MandateVerifier, Minter, VerifiedMandate};
