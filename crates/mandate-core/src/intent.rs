use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{DomainError, clip, glob_match, glob_subsumes, validate_pattern};

/// The RFC 9396 `authorization_details` type that carries a task's intent.
pub const AGENT_TASK_TYPE: &str = "agent_task";

/// Most actions or resource patterns one intent may list.
pub const MAX_INTENT_ENTRIES: usize = 64;

/// Data classification, ordered from least to most sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    Public,
    Internal,
    Confidential,
    Restricted,
}

impl Classification {
    pub const ALL: [Classification; 4] =
        [Classification::Public, Classification::Internal, Classification::Confidential, Classification::Restricted];

    /// 0 (public) to 3 (restricted): the number policies compare.
    pub fn rank(self) -> i64 {
        match self {
            Classification::Public => 0,
            Classification::Internal => 1,
            Classification::Confidential => 2,
            Classification::Restricted => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Public => "public",
            Classification::Internal => "internal",
            Classification::Confidential => "confidential",
            Classification::Restricted => "restricted",
        }
    }
}

impl FromStr for Classification {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Classification::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| DomainError::UnknownClassification(s.chars().take(40).collect()))
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's intent as an agent asks for it: one RFC 9396 `authorization_details` object of type
/// `agent_task`. Unknown fields are refused so that nobody believes a field they misspelt
/// narrows their grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub purpose: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub max_classification: Classification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// A validated intent: what a task is granted. It is the hard ceiling of every decision made
/// under the task's mandate, checked before any policy runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub purpose: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub max_classification: Classification,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// Why a request lies outside a task's intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CeilingViolation {
    Action,
    Resource,
    Classification,
}

impl CeilingViolation {
    pub fn code(&self) -> &'static str {
        match self {
            CeilingViolation::Action => "action_outside_intent",
            CeilingViolation::Resource => "resource_outside_intent",
            CeilingViolation::Classification => "classification_above_intent",
        }
    }
}

impl IntentRequest {
    /// Validates the request and returns the intent to grant plus the lifetime asked for.
    pub fn validate(self) -> Result<(Intent, Option<u64>), DomainError> {
        let bad = |m: &str| DomainError::InvalidIntent(m.to_owned());
        if self.kind != AGENT_TASK_TYPE {
            return Err(bad("`type` must be `agent_task`"));
        }
        let purpose = self.purpose.trim();
        if purpose.is_empty() {
            return Err(bad("`purpose` must not be empty"));
        }
        if purpose.len() > 1024 {
            return Err(bad("`purpose` is longer than 1024 bytes"));
        }
        for (field, list) in [("actions", &self.actions), ("resources", &self.resources)] {
            if list.is_empty() {
                return Err(DomainError::InvalidIntent(format!("`{field}` must list at least one entry")));
            }
            if list.len() > MAX_INTENT_ENTRIES {
                return Err(DomainError::InvalidIntent(format!("`{field}` lists more than {MAX_INTENT_ENTRIES} entries")));
            }
            for p in list {
                validate_pattern(p)?;
            }
        }
        if self.lifetime_seconds == Some(0) {
            return Err(bad("`lifetime_seconds` must be at least 1"));
        }
        if let Some(obo) = &self.on_behalf_of
            && (obo.trim().is_empty() || obo.len() > 256)
        {
            return Err(bad("`on_behalf_of` must be 1 to 256 bytes"));
        }
        let mut actions = self.actions;
        actions.sort();
        actions.dedup();
        let mut resources = self.resources;
        resources.sort();
        resources.dedup();
        Ok((
            Intent {
                purpose: purpose.to_owned(),
                actions,
                resources,
                max_classification: self.max_classification,
                on_behalf_of: self.on_behalf_of,
            },
            self.lifetime_seconds,
        ))
    }
}

impl Intent {
    /// The `authorization_details` entry that describes this grant.
    pub fn to_authorization_detail(&self, lifetime_seconds: Option<u64>) -> IntentRequest {
        IntentRequest {
            kind: AGENT_TASK_TYPE.to_owned(),
            purpose: self.purpose.clone(),
            actions: self.actions.clone(),
            resources: self.resources.clone(),
            max_classification: self.max_classification,
            lifetime_seconds,
            on_behalf_of: self.on_behalf_of.clone(),
        }
    }

    pub fn allows_action(&self, action: &str) -> bool {
        self.actions.iter().any(|p| glob_match(p, action))
    }

    /// Resources are matched as `type:id`.
    pub fn allows_resource(&self, resource_type: &str, resource_id: &str) -> bool {
        let key = format!("{resource_type}:{resource_id}");
        self.resources.iter().any(|p| glob_match(p, &key))
    }

    /// The ceiling check: is this request inside what the task declared?
    pub fn check(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        classification: Classification,
    ) -> Result<(), CeilingViolation> {
        if !self.allows_action(action) {
            return Err(CeilingViolation::Action);
        }
        if !self.allows_resource(resource_type, resource_id) {
            return Err(CeilingViolation::Resource);
        }
        if classification > self.max_classification {
            return Err(CeilingViolation::Classification);
        }
        Ok(())
    }

    /// Is `narrow` an attenuation of `self`? Every action and resource pattern of `narrow`
    /// must lie within one of `self`'s, its classification may not be higher, and it may act on
    /// behalf of nobody else (a `narrow` that names nobody is read as acting for the same person:
    /// see [`Intent::attenuate`]). Returns the first field that is wider, with the value.
    pub fn covers(&self, narrow: &Intent) -> Result<(), Wider> {
        for a in &narrow.actions {
            if !self.actions.iter().any(|w| glob_subsumes(w, a)) {
                return Err(Wider::Action(a.clone()));
            }
        }
        for r in &narrow.resources {
            if !self.resources.iter().any(|w| glob_subsumes(w, r)) {
                return Err(Wider::Resource(r.clone()));
            }
        }
        if narrow.max_classification > self.max_classification {
            return Err(Wider::Classification { asked: narrow.max_classification, granted: self.max_classification });
        }
        if let Some(obo) = &narrow.on_behalf_of
            && self.on_behalf_of.as_ref() != Some(obo)
        {
            return Err(Wider::OnBehalfOf { asked: obo.clone(), granted: self.on_behalf_of.clone() });
        }
        Ok(())
    }

    /// `narrow` as a delegated grant of `self`: checked with [`Intent::covers`], and acting on
    /// behalf of the same person as `self` when it names nobody.
    pub fn attenuate(&self, mut narrow: Intent) -> Result<Intent, Wider> {
        self.covers(&narrow)?;
        if narrow.on_behalf_of.is_none() {
            narrow.on_behalf_of.clone_from(&self.on_behalf_of);
        }
        Ok(narrow)
    }
}

/// The first way a delegated intent asks for more than the intent it is delegated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wider {
    /// An action pattern no pattern of the parent covers.
    Action(String),
    /// A resource pattern no pattern of the parent covers.
    Resource(String),
    /// A classification above the parent's.
    Classification { asked: Classification, granted: Classification },
    /// Someone other than the parent acts for.
    OnBehalfOf { asked: String, granted: Option<String> },
}

impl Wider {
    /// The intent field that is wider: `actions`, `resources`, `max_classification` or
    /// `on_behalf_of`.
    pub fn field(&self) -> &'static str {
        match self {
            Wider::Action(_) => "actions",
            Wider::Resource(_) => "resources",
            Wider::Classification { .. } => "max_classification",
            Wider::OnBehalfOf { .. } => "on_behalf_of",
        }
    }
}

impl fmt::Display for Wider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wider::Action(a) => write!(f, "action `{}` is not within the parent's actions", clip(a)),
            Wider::Resource(r) => write!(f, "resource `{}` is not within the parent's resources", clip(r)),
            Wider::Classification { asked, granted } => {
                write!(f, "max_classification `{asked}` is above the parent's `{granted}`")
            }
            Wider::OnBehalfOf { asked, granted: Some(g) } => {
                write!(f, "on_behalf_of `{}` is not the parent's `{}`", clip(asked), clip(g))
            }
            Wider::OnBehalfOf { asked, granted: None } => {
                write!(f, "on_behalf_of `{}`: the parent acts on behalf of nobody", clip(asked))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> IntentRequest {
        serde_json::from_value(serde_json::json!({
            "type": "agent_task",
            "purpose": "Summarise ticket 42",
            "actions": ["tickets.read", "tickets.read"],
            "resources": ["ticket:*"],
            "max_classification": "internal",
            "lifetime_seconds": 300
        }))
        .unwrap()
    }

    #[test]
    fn validates_and_normalises() {
        let (intent, life) = req().validate().unwrap();
        assert_eq!(intent.actions, vec!["tickets.read"]);
        assert_eq!(life, Some(300));
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let v = serde_json::json!({"type":"agent_task","purpose":"x","actions":["a"],"resources":["r"],
            "max_classification":"internal","extra":1});
        assert!(serde_json::from_value::<IntentRequest>(v).is_err());
        let mut r = req();
        r.kind = "other".into();
        assert_eq!(r.validate().unwrap_err().code(), "invalid_intent");
        let mut r = req();
        r.actions.clear();
        assert!(r.validate().is_err());
        let mut r = req();
        r.purpose = "  ".into();
        assert!(r.validate().is_err());
        let v = serde_json::json!({"type":"agent_task","purpose":"x","actions":["a"],"resources":["r"],
            "max_classification":"secret"});
        assert!(serde_json::from_value::<IntentRequest>(v).is_err());
    }

    #[test]
    fn ceiling_checks_action_resource_and_classification() {
        let (intent, _) = req().validate().unwrap();
        assert!(intent.check("tickets.read", "ticket", "42", Classification::Internal).is_ok());
        assert_eq!(intent.check("tickets.write", "ticket", "42", Classification::Public), Err(CeilingViolation::Action));
        assert_eq!(intent.check("tickets.read", "invoice", "42", Classification::Public), Err(CeilingViolation::Resource));
        assert_eq!(intent.check("tickets.read", "ticket", "42", Classification::Confidential), Err(CeilingViolation::Classification));
    }

    #[test]
    fn covers_names_the_wider_field() {
        let (parent, _) = req().validate().unwrap();
        let mut child = parent.clone();
        child.resources = vec!["ticket:42".into()];
        assert!(parent.covers(&child).is_ok());
        child.max_classification = Classification::Restricted;
        let wider = parent.covers(&child).unwrap_err();
        assert_eq!(wider.field(), "max_classification");
        assert_eq!(wider.to_string(), "max_classification `restricted` is above the parent's `internal`");
        let mut child = parent.clone();
        child.actions = vec!["tickets.*".into()];
        assert_eq!(parent.covers(&child).unwrap_err(), Wider::Action("tickets.*".into()));
        let mut child = parent.clone();
        child.resources = vec!["invoice:1".into()];
        assert_eq!(parent.covers(&child).unwrap_err().field(), "resources");
        // The same intent covers itself; fewer actions, a lower classification are narrower.
        assert!(parent.covers(&parent).is_ok());
        let mut child = parent.clone();
        child.max_classification = Classification::Public;
        assert!(parent.covers(&child).is_ok());
    }

    #[test]
    fn attenuation_keeps_the_person_acted_for() {
        let (mut parent, _) = req().validate().unwrap();
        parent.on_behalf_of = Some("bob@example.com".into());
        let mut child = parent.clone();
        child.on_behalf_of = None;
        assert_eq!(parent.attenuate(child).unwrap().on_behalf_of.as_deref(), Some("bob@example.com"));
        let mut child = parent.clone();
        child.on_behalf_of = Some("eve@example.com".into());
        let wider = parent.attenuate(child).unwrap_err();
        assert_eq!(wider.field(), "on_behalf_of");
        assert!(wider.to_string().contains("eve@example.com"), "{wider}");
        parent.on_behalf_of = None;
        let mut child = parent.clone();
        child.on_behalf_of = Some("bob@example.com".into());
        assert_eq!(parent.covers(&child).unwrap_err().field(), "on_behalf_of");
    }

    #[test]
    fn classification_order() {
        assert!(Classification::Public < Classification::Restricted);
        assert_eq!("confidential".parse::<Classification>().unwrap().rank(), 2);
    }
}
