//! What one process tells the others sharing its store: which record changed, so that they
//! re-read it. A change names the record only; the store stays the one truth.

use serde::{Deserialize, Serialize};

/// A committed change another process may keep a view of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", content = "id", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// An agent was registered or its status changed.
    Agent(String),
    /// Tasks were opened or ended.
    Tasks(Vec<String>),
    /// An API token was created or revoked.
    ApiTokens,
    /// A trusted issuer was added, replaced or removed.
    Issuers,
    /// The Cedar entity data was replaced.
    Entities,
    /// A meta setting was set (its key).
    Meta(String),
    /// An approval was created, decided, used or expired.
    Approval(String),
    /// A secret version was stored or a secret deleted.
    Secret(String),
    /// Changes may have been missed: re-read everything.
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_stable() {
        let c = Change::Tasks(vec!["t1".into(), "t2".into()]);
        assert_eq!(serde_json::to_string(&c).unwrap_or_default(), r#"{"change":"tasks","id":["t1","t2"]}"#);
        assert_eq!(serde_json::to_string(&Change::Resync).unwrap_or_default(), r#"{"change":"resync"}"#);
        let back: Change = serde_json::from_str(r#"{"change":"agent","id":"bot"}"#).unwrap_or(Change::Resync);
        assert_eq!(back, Change::Agent("bot".into()));
    }
}
