//! Mandate's audit trail: the event model, the canonical encoding events are hashed in, the
//! hash chain, signed checkpoints, verification, and export as OCSF.
//!
//! The trail is append-only and tamper-evident. Each event's body is canonical JSON holding the
//! previous event's hash, so editing, deleting, inserting or reordering rows breaks the chain;
//! checkpoints signed with the server's Ed25519 key pin the chain's hash at a seq, so cutting off
//! the tail or rewriting it wholesale is detected as well. This crate does no I/O: stores seal
//! with [`seal`] inside their write transaction, and readers stream rows through a [`Verifier`].

mod chain;
mod checkpoint;
mod details;
mod event;
mod ocsf;
mod timefmt;
mod verify;

pub use chain::{canonical_json, seal};
pub use checkpoint::{CHECKPOINT_CONTEXT, Checkpoint, sign_checkpoint};
pub use details::{DecisionDetails, EntityRef, ObligationDetails, SecretRef, ShadowDetails, ToolCallDetails};
pub use event::{ChainHead, GENESIS_HASH, NewEvent, SealedEvent, kinds};
pub use ocsf::{OCSF_VERSION, to_ocsf};
pub use timefmt::rfc3339_ms;
pub use verify::{Verifier, VerifyFailure, VerifyReport, codes};
