//! Mandate's decision point: the Cedar schema for the agent domain, the mapping from a
//! Mandate request to Cedar entities, sliced evaluation, obligations, validation and policy
//! unit tests.
//!
//! The flow: [`PolicySources`] (text) compile into a [`PolicySnapshot`] (parsed, validated
//! against the schema in strict mode, indexed by scope). A [`DecisionInput`] evaluated
//! against a snapshot yields a [`Decision`], never an error: anything that goes wrong is a
//! deny that says why. [`PolicyEngine`] holds the enforced snapshot, an optional shadow
//! snapshot and the loaded [`EntityData`], each swapped atomically on reload.
//!
//! This crate is synchronous and does no I/O except reading and writing a policy directory.

#![warn(missing_docs)]

mod actions;
mod cache;
mod cases;
mod compile;
mod decision;
mod diagnostic;
mod engine;
mod entity_data;
mod error;
mod input;
mod mapping;
mod slice;
mod snapshot;
mod sources;

pub use cache::CACHE_CAPACITY;
pub use cases::{CaseReport, CaseResult, DEFAULT_CASE_NOW, run_cases};
pub use decision::{APPROVAL_ANNOTATION, Decision, ID_ANNOTATION, OBLIGATION_ANNOTATION, Obligation, Outcome, reason};
pub use diagnostic::Diagnostic;
pub use engine::{Evaluation, PolicyEngine};
pub use entity_data::EntityData;
pub use error::PolicyError;
pub use input::{ActionInput, ActionKind, ContextInput, DecisionInput, PrincipalInput, ResourceInput, TaskContext, UnknownActionKind};
pub use mapping::{RESERVED_CONTEXT_KEYS, arguments_view};
pub use snapshot::PolicySnapshot;
pub use sources::{PolicySources, STARTER_README, STARTER_TESTS};

/// Checks a policy set: parse, schema and strict validation. Empty means valid.
pub fn validate(src: &PolicySources) -> Vec<Diagnostic> {
    match PolicySnapshot::compile(src) {
        Ok(_) => Vec::new(),
        Err(diags) => diags,
    }
}
