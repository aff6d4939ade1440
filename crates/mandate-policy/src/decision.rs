//! The answer: an outcome, the policies that decided it, and what the enforcer must also do.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{Effect, Policy, PolicyId, Response};
use serde::{Deserialize, Serialize};

/// Annotation that makes a permit ask for human approval: `@approval("required")`.
pub const APPROVAL_ANNOTATION: &str = "approval";
/// Annotation that attaches an obligation: `@obligation("<kind>")` or
/// `@obligation("<kind>:<value>")`, e.g. `@obligation("notification")`.
pub const OBLIGATION_ANNOTATION: &str = "obligation";
/// Annotation that names a policy: `@id("...")`.
pub const ID_ANNOTATION: &str = "id";

/// What the enforcement point must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Go ahead.
    Allow,
    /// Refuse.
    Deny,
    /// Allowed once a human approves this exact request.
    ApprovalRequired,
}

impl Outcome {
    /// `allow`, `deny` or `approval_required`, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::ApprovalRequired => "approval_required",
        }
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Outcome::Allow, Outcome::Deny, Outcome::ApprovalRequired]
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown outcome `{s}`: use allow, deny or approval_required"))
    }
}

/// Something the enforcement point must do along with the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Obligation {
    /// `approval`, `notification`, or any kind a policy names.
    pub kind: String,
    /// The id of the policy that imposed it.
    pub policy: String,
    /// The annotation's value after the kind (`required` for approval), or empty.
    pub value: String,
}

/// Stable codes for [`Decision::reason`].
pub mod reason {
    /// A permit matched and no forbid did.
    pub const ALLOWED: &str = "allowed";
    /// No permit matched: denied by default.
    pub const NO_POLICY_PERMITS: &str = "no_policy_permits";
    /// A forbid matched.
    pub const FORBIDDEN_BY_POLICY: &str = "forbidden_by_policy";
    /// A matching permit asks for human approval.
    pub const APPROVAL_REQUIRED: &str = "approval_required";
    /// A policy failed to evaluate, or the request could not be assembled.
    pub const EVALUATION_ERROR: &str = "evaluation_error";
    /// The request cannot be expressed in Cedar (a float, a malformed type name, ...).
    pub const INVALID_INPUT: &str = "invalid_input";
}

/// A decision. Never an error: anything that goes wrong while deciding is a deny that
/// carries the error text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// Ids of the determining policies: the permits that allowed, or the forbids that denied.
    pub policies: Vec<String>,
    /// What the enforcement point must also do.
    pub obligations: Vec<Obligation>,
    /// Evaluation errors. Any error makes the outcome a deny.
    pub errors: Vec<String>,
    /// Version of the policy set that decided.
    pub version: String,
    /// Stable code, one of [`reason`]'s constants.
    pub reason: String,
}

impl Decision {
    /// `true` only for [`Outcome::Allow`]: an approval-required decision is not an allow.
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// A deny because the request could not be turned into a Cedar request.
    pub fn invalid_input(version: &str, message: String) -> Self {
        Decision::deny(version, reason::INVALID_INPUT, vec![message])
    }

    /// A deny because something failed while deciding.
    pub fn evaluation_error(version: &str, message: String) -> Self {
        Decision::deny(version, reason::EVALUATION_ERROR, vec![message])
    }

    fn deny(version: &str, reason: &str, errors: Vec<String>) -> Self {
        Decision {
            outcome: Outcome::Deny,
            policies: Vec::new(),
            obligations: Vec::new(),
            errors,
            version: version.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// What a policy's annotations ask of the enforcer, read once at compile time.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyMeta {
    pub approval: bool,
    pub obligation: Option<(String, String)>,
}

impl PolicyMeta {
    pub fn of(policy: &Policy) -> Self {
        let approval = policy.effect() == Effect::Permit && policy.annotation(APPROVAL_ANNOTATION).is_some_and(|v| v.trim() == "required");
        let obligation = policy.annotation(OBLIGATION_ANNOTATION).map(|v| {
            let (kind, value) = v.split_once(':').unwrap_or((v, ""));
            (kind.trim().to_owned(), value.trim().to_owned())
        });
        PolicyMeta { approval, obligation }
    }
}

/// Turns Cedar's response into a decision. A forbid wins; any error is a deny; an allow
/// whose determining permits ask for approval becomes [`Outcome::ApprovalRequired`].
pub(crate) fn decide(response: &Response, meta: &HashMap<PolicyId, PolicyMeta>, version: &str) -> Decision {
    let diagnostics = response.diagnostics();
    let mut determining: Vec<&PolicyId> = diagnostics.reason().collect();
    determining.sort_unstable_by(|a, b| id_str(a).cmp(id_str(b)));
    let mut errors: Vec<String> = diagnostics.errors().map(|e| e.to_string()).collect();
    errors.sort_unstable();
    let allowed = response.decision() == cedar_policy::Decision::Allow;

    let (outcome, reason) = if allowed && errors.is_empty() {
        if determining.iter().any(|id| meta.get(*id).is_some_and(|m| m.approval)) {
            (Outcome::ApprovalRequired, reason::APPROVAL_REQUIRED)
        } else {
            (Outcome::Allow, reason::ALLOWED)
        }
    } else if !allowed && !determining.is_empty() {
        (Outcome::Deny, reason::FORBIDDEN_BY_POLICY)
    } else if !errors.is_empty() {
        (Outcome::Deny, reason::EVALUATION_ERROR)
    } else {
        (Outcome::Deny, reason::NO_POLICY_PERMITS)
    };

    // An allow that errors elsewhere is a deny with no determining policy: the permits that
    // matched did not decide it.
    if outcome == Outcome::Deny && allowed {
        determining.clear();
    }
    let mut obligations = Vec::new();
    for id in &determining {
        let Some(m) = meta.get(*id) else { continue };
        if m.approval && outcome == Outcome::ApprovalRequired {
            obligations.push(Obligation { kind: "approval".to_owned(), policy: id_str(id).to_owned(), value: "required".to_owned() });
        }
        if let Some((kind, value)) = &m.obligation {
            obligations.push(Obligation { kind: kind.clone(), policy: id_str(id).to_owned(), value: value.clone() });
        }
    }
    Decision {
        outcome,
        policies: determining.iter().map(|id| id_str(id).to_owned()).collect(),
        obligations,
        errors,
        version: version.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A policy id as written, without the escaping its `Display` adds.
pub(crate) fn id_str(id: &PolicyId) -> &str {
    AsRef::<str>::as_ref(id)
}
