//! Mandate's domain vocabulary: agents, tasks and their declared intent, SPIFFE ids, data
//! classification, the glob patterns an intent is written in, and the injected clock.
//!
//! This crate does no I/O and knows nothing of HTTP, databases or async runtimes.

mod clock;
mod error;
mod ids;
mod intent;
mod model;
mod pattern;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::DomainError;
pub use ids::{AgentName, SpiffeId, TrustDomain};
pub use intent::{AGENT_TASK_TYPE, CeilingViolation, Classification, Intent, IntentRequest, MAX_INTENT_ENTRIES};
pub use model::{Agent, AgentStatus, ApiToken, ClaimRule, Issuer, Role, Task, TaskEnd, TaskStatus};
pub use pattern::{glob_match, glob_subsumes, validate_pattern};
