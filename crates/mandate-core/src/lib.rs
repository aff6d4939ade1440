//! Mandate's domain vocabulary: agents, tasks and their declared intent, SPIFFE ids, data
//! classification, the glob patterns an intent is written in, and the injected clock.
//!
//! This crate does no I/O and knows nothing of HTTP, databases or async runtimes.

mod approval;
pub mod canonical;
mod clock;
mod error;
mod ids;
mod intent;
mod model;
mod pattern;

pub use approval::{Approval, ApprovalStatus};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::DomainError;
pub use ids::{AgentName, SpiffeId, TrustDomain};
pub use intent::{AGENT_TASK_TYPE, CeilingViolation, Classification, Intent, IntentRequest, MAX_INTENT_ENTRIES, Wider};
pub use model::{Agent, AgentStatus, ApiToken, ClaimRule, Issuer, Role, Task, TaskEnd, TaskStatus};
pub use pattern::{glob_match, glob_subsumes, validate_pattern};

/// User input quoted in an error message, cut to at most 80 bytes on a character boundary
/// (with `…` when cut), so that a hostile value cannot flood logs or responses.
pub fn clip(value: &str) -> String {
    const MAX: usize = 80;
    if value.len() <= MAX {
        return value.to_owned();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", value.get(..end).unwrap_or(""))
}
