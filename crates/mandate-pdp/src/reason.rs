//! The stable codes a decision answers with, as types: [`Outcome`] is what the enforcement
//! point must do, [`DenyReason`] why it must refuse. Each serializes to the code the README
//! lists (`context.reason` on the wire, `reason` in the trail), and parses back from it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! deny_reasons {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)+) => {
        /// Why a request is refused. Every variant is a stable code; nothing else is ever
        /// given as a reason for a deny.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DenyReason {
            $($(#[$doc])* $variant,)+
        }

        impl DenyReason {
            /// Every reason, in the order the README lists them.
            pub const ALL: &'static [DenyReason] = &[$(DenyReason::$variant,)+];

            /// The stable code.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(DenyReason::$variant => $code,)+
                }
            }
        }
    };
}

deny_reasons! {
    /// The action is not one of the task's granted `actions`.
    ActionOutsideIntent => "action_outside_intent",
    /// `type:id` matches none of the task's granted `resources`.
    ResourceOutsideIntent => "resource_outside_intent",
    /// The resource's classification is above the task's `max_classification`.
    ClassificationAboveIntent => "classification_above_intent",
    /// No permit matched: denied by default.
    NoPolicyPermits => "no_policy_permits",
    /// A forbid matched.
    ForbiddenByPolicy => "forbidden_by_policy",
    /// The mandate's task was revoked, or a task it was delegated from ended.
    TaskRevoked => "task_revoked",
    /// The mandate's task was completed.
    TaskCompleted => "task_completed",
    /// The mandate's task expired.
    TaskExpired => "task_expired",
    /// The mandate names a task this control plane does not know.
    TaskUnknown => "task_unknown",
    /// The mandate's agent is not registered.
    AgentUnknown => "agent_unknown",
    /// The agent is disabled.
    AgentDisabled => "agent_disabled",
    /// The subject is not the agent the mandate (or the task) is for.
    SubjectMismatch => "subject_mismatch",
    /// The mandate did not verify (the detail is the verdict's `error_code`).
    InvalidMandate => "invalid_mandate",
    /// An agent subject came without `subject.properties.mandate`.
    MandateRequired => "mandate_required",
    /// The resource's classification is not one Mandate knows.
    UnknownClassification => "unknown_classification",
    /// A policy failed to evaluate.
    EvaluationError => "evaluation_error",
    /// The request cannot be expressed in Cedar (a malformed type name, …).
    InvalidInput => "invalid_input",
    /// The decision could not be made durable in the trail: nothing is allowed that is not
    /// recorded.
    AuditUnavailable => "audit_unavailable",
    /// The approval store failed while binding an approval.
    ApprovalUnavailable => "approval_unavailable",
    /// A call to be approved whose arguments nest deeper than the canonical form allows.
    ArgumentsTooDeep => "arguments_too_deep",
    /// A call to be approved whose arguments are larger than the canonical form allows.
    ArgumentsTooLarge => "arguments_too_large",
    /// A call to be approved with a number that has no exact canonical form.
    ArgumentsNotCanonical => "arguments_not_canonical",
    /// A shared store could not be read to learn of the mandate's task.
    StoreUnavailable => "store_unavailable",
}

impl DenyReason {
    /// The reason of a Cedar decision's stable code ([`mandate_policy::reason`]); a code this
    /// core does not know is an `evaluation_error`, never an allow.
    pub fn of_policy(code: &str) -> DenyReason {
        match code {
            mandate_policy::reason::NO_POLICY_PERMITS => DenyReason::NoPolicyPermits,
            mandate_policy::reason::FORBIDDEN_BY_POLICY => DenyReason::ForbiddenByPolicy,
            mandate_policy::reason::INVALID_INPUT => DenyReason::InvalidInput,
            _ => DenyReason::EvaluationError,
        }
    }

    /// The reason of an intent-ceiling violation.
    pub fn of_ceiling(v: mandate_core::CeilingViolation) -> DenyReason {
        match v {
            mandate_core::CeilingViolation::Action => DenyReason::ActionOutsideIntent,
            mandate_core::CeilingViolation::Resource => DenyReason::ResourceOutsideIntent,
            mandate_core::CeilingViolation::Classification => DenyReason::ClassificationAboveIntent,
        }
    }

    /// The reason of a canonical-form error.
    pub fn of_canonical(e: &mandate_core::canonical::CanonicalError) -> DenyReason {
        use mandate_core::canonical::CanonicalError;
        match e {
            CanonicalError::TooDeep { .. } => DenyReason::ArgumentsTooDeep,
            CanonicalError::TooLarge { .. } => DenyReason::ArgumentsTooLarge,
            CanonicalError::UnsafeInteger { .. } => DenyReason::ArgumentsNotCanonical,
        }
    }

    /// True for the reasons that say the task or agent may not act at all (as opposed to
    /// this one request being outside what it may do).
    pub fn is_liveness(self) -> bool {
        matches!(
            self,
            DenyReason::TaskRevoked
                | DenyReason::TaskCompleted
                | DenyReason::TaskExpired
                | DenyReason::TaskUnknown
                | DenyReason::AgentUnknown
                | DenyReason::AgentDisabled
                | DenyReason::SubjectMismatch
                | DenyReason::StoreUnavailable
        )
    }

    /// True for the three intent-ceiling reasons.
    pub fn is_ceiling(self) -> bool {
        matches!(self, DenyReason::ActionOutsideIntent | DenyReason::ResourceOutsideIntent | DenyReason::ClassificationAboveIntent)
    }
}

/// A code that is not a [`DenyReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownReason(pub String);

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a decision reason", self.0)
    }
}

impl std::error::Error for UnknownReason {}

impl FromStr for DenyReason {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DenyReason::ALL.iter().copied().find(|r| r.as_str() == s).ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DenyReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DenyReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the enforcement point must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Go ahead (`allowed`).
    Allow,
    /// Allowed once a person approves this exact request (`approval_required`).
    ApprovalRequired,
    /// Refuse, for this reason.
    Deny(DenyReason),
}

/// The code of [`Outcome::Allow`].
pub const ALLOWED: &str = "allowed";
/// The code of [`Outcome::ApprovalRequired`].
pub const APPROVAL_REQUIRED: &str = "approval_required";

impl Outcome {
    /// Only [`Outcome::Allow`] lets the request through: an approval-required one does not.
    pub fn allowed(self) -> bool {
        self == Outcome::Allow
    }

    /// The stable code: `allowed`, `approval_required`, or the deny reason.
    pub fn reason(self) -> &'static str {
        match self {
            Outcome::Allow => ALLOWED,
            Outcome::ApprovalRequired => APPROVAL_REQUIRED,
            Outcome::Deny(r) => r.as_str(),
        }
    }

    /// The deny reason, if this is a deny.
    pub fn deny_reason(self) -> Option<DenyReason> {
        match self {
            Outcome::Deny(r) => Some(r),
            _ => None,
        }
    }

    /// The outcome of a Cedar decision.
    pub fn of_policy(d: &mandate_policy::Decision) -> Outcome {
        match d.outcome {
            mandate_policy::Outcome::Allow if d.reason == mandate_policy::reason::ALLOWED => Outcome::Allow,
            mandate_policy::Outcome::ApprovalRequired => Outcome::ApprovalRequired,
            _ => Outcome::Deny(DenyReason::of_policy(&d.reason)),
        }
    }
}

impl FromStr for Outcome {
    type Err = UnknownReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            ALLOWED => Ok(Outcome::Allow),
            APPROVAL_REQUIRED => Ok(Outcome::ApprovalRequired),
            other => other.parse().map(Outcome::Deny),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.reason())
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl PartialEq<&str> for DenyReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.reason() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in DenyReason::ALL {
            assert!(seen.insert(r.as_str()), "{r} twice");
            assert_eq!(r.as_str().parse::<DenyReason>().unwrap(), *r);
            let json = serde_json::to_string(&Outcome::Deny(*r)).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), Outcome::Deny(*r));
        }
        assert!(!seen.contains(ALLOWED) && !seen.contains(APPROVAL_REQUIRED));
        assert_eq!("allowed".parse::<Outcome>().unwrap(), Outcome::Allow);
        assert!("denied".parse::<Outcome>().is_err());
    }

    #[test]
    fn an_unknown_policy_code_is_an_evaluation_error() {
        assert_eq!(DenyReason::of_policy("something_new"), DenyReason::EvaluationError);
        assert_eq!(DenyReason::of_policy("allowed"), DenyReason::EvaluationError);
    }
}
