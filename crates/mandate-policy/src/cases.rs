//! Policy unit tests: a TOML file of requests and the outcome each must get
//! (`mandate policy test CASES`). The format is documented in `policies/README.md`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use mandate_core::{AGENT_TASK_TYPE, Classification, IntentRequest};
use serde::{Deserialize, Serialize};

use crate::error::lowercase_first;
use crate::{
    ActionInput, ActionKind, ContextInput, DecisionInput, EntityData, Outcome, PolicyError, PolicySnapshot, PrincipalInput, ResourceInput,
    TaskContext,
};

/// `now` when a case does not set it: Monday 2026-01-05 12:00:00 UTC.
pub const DEFAULT_CASE_NOW: i64 = 1_767_614_400;

const DEFAULT_TRUST_DOMAIN: &str = "mandate.local";

/// The outcome of every case in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseReport {
    /// Every case, in file order.
    pub cases: Vec<CaseResult>,
}

/// One case's expected and actual outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case's `name`.
    pub name: String,
    /// The case's `expect`.
    pub expected: Outcome,
    /// The outcome the request got.
    pub actual: Outcome,
    /// The decision's reason code, or the intent ceiling's (`action_outside_intent`, ...).
    pub reason: String,
    /// The determining policies.
    pub policies: Vec<String>,
    /// Evaluation errors.
    pub errors: Vec<String>,
    /// When the case lists `expect_policies`: the ids it expected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_policies: Option<Vec<String>>,
    /// Whether the outcome (and the policies, when listed) matched.
    pub passed: bool,
}

impl CaseReport {
    /// How many cases got their expected outcome (and policies, when listed).
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    /// How many cases did not.
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
}

impl fmt::Display for CaseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.cases {
            if c.passed {
                writeln!(f, "ok    {}", c.name)?;
                continue;
            }
            write!(f, "FAIL  {}: expected {}, got {} ({})", c.name, c.expected.as_str(), c.actual.as_str(), c.reason)?;
            if let Some(expected) = &c.expected_policies {
                write!(f, "; expected policies [{}], got [{}]", expected.join(", "), c.policies.join(", "))?;
            }
            for e in &c.errors {
                write!(f, "; {e}")?;
            }
            writeln!(f)?;
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs every `[[case]]` of `cases_toml` against `snapshot` with `entities` loaded.
///
/// A case with a `task` is first held to the task's intent ceiling
/// ([`mandate_core::Intent::check`]), as Mandate's server does, and only then evaluated.
pub fn run_cases(snapshot: &PolicySnapshot, entities: &EntityData, cases_toml: &str) -> Result<CaseReport, PolicyError> {
    let file: CaseFile = toml::from_str(cases_toml).map_err(|e| PolicyError::InvalidCases(lowercase_first(e.message())))?;
    if file.case.is_empty() {
        return Err(PolicyError::InvalidCases("no `[[case]]` entries".to_owned()));
    }
    let mut names = HashSet::new();
    let mut cases = Vec::with_capacity(file.case.len());
    for (i, raw) in file.case.into_iter().enumerate() {
        let label = raw.get("name").and_then(toml::Value::as_str).map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let bad = |message: String| PolicyError::InvalidCase { case: label.clone(), message };
        let spec: CaseSpec = raw.try_into().map_err(|e: toml::de::Error| bad(lowercase_first(e.message())))?;
        if !names.insert(spec.name.clone()) {
            return Err(bad("case names must be unique".to_owned()));
        }
        cases.push(run_case(snapshot, entities, spec).map_err(bad)?);
    }
    Ok(CaseReport { cases })
}

fn run_case(snapshot: &PolicySnapshot, entities: &EntityData, spec: CaseSpec) -> Result<CaseResult, String> {
    let input = spec.to_input()?;
    let ceiling =
        input.context.task.as_ref().and_then(|t| {
            t.intent.check(&input.action.name, &input.resource.kind, &input.resource.id, input.resource.classification).err()
        });
    let (actual, reason, policies, errors) = match ceiling {
        Some(violation) => (Outcome::Deny, violation.code().to_owned(), Vec::new(), Vec::new()),
        None => {
            let d = snapshot.evaluate(&input, entities);
            (d.outcome, d.reason, d.policies, d.errors)
        }
    };
    let expected_policies = spec.expect_policies.map(|mut p| {
        p.sort();
        p
    });
    let policies_ok = expected_policies.as_ref().is_none_or(|p| *p == policies);
    Ok(CaseResult {
        name: spec.name,
        expected: spec.expect,
        passed: actual == spec.expect && policies_ok,
        actual,
        reason,
        policies,
        errors,
        expected_policies,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    case: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    principal: PrincipalSpec,
    action: ActionSpec,
    resource: ResourceSpec,
    #[serde(default)]
    context: ContextSpec,
    task: Option<TaskSpec>,
    expect: Outcome,
    expect_policies: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalSpec {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    owner: Option<String>,
    purpose: Option<String>,
    spiffe_id: Option<String>,
    trust_domain: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    properties: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ActionSpec {
    Name(String),
    Full(ActionTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionTable {
    name: String,
    kind: Option<ActionKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceSpec {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    classification: Option<Classification>,
    properties: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextSpec {
    environment: Option<String>,
    risk: Option<i64>,
    now: Option<toml::Value>,
    extra: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskSpec {
    id: Option<String>,
    purpose: String,
    actions: Vec<String>,
    resources: Vec<String>,
    max_classification: Classification,
    on_behalf_of: Option<String>,
    #[serde(default)]
    depth: u32,
    #[serde(default)]
    chain: Vec<String>,
}

impl CaseSpec {
    fn to_input(&self) -> Result<DecisionInput, String> {
        let principal = self.principal.to_input()?;
        let action = match &self.action {
            ActionSpec::Name(name) => ActionInput { name: name.clone(), kind: None },
            ActionSpec::Full(a) => ActionInput { name: a.name.clone(), kind: a.kind },
        };
        let resource = ResourceInput {
            kind: self.resource.kind.clone(),
            id: self.resource.id.clone(),
            classification: self.resource.classification.unwrap_or(Classification::Restricted),
            properties: json_object(self.resource.properties.as_ref()),
        };
        let task = self.task.as_ref().map(TaskSpec::to_input).transpose()?;
        let context = ContextInput {
            now_secs: match &self.context.now {
                None => DEFAULT_CASE_NOW,
                Some(v) => unix_seconds(v)?,
            },
            environment: self.context.environment.clone().unwrap_or_default(),
            risk: self.context.risk.unwrap_or(0),
            task,
            extra: json_object(self.context.extra.as_ref()),
        };
        Ok(DecisionInput { principal, action, resource, context })
    }
}

impl PrincipalSpec {
    fn to_input(&self) -> Result<PrincipalInput, String> {
        if self.kind != "agent" {
            let agent_only = [
                ("owner", self.owner.is_some()),
                ("purpose", self.purpose.is_some()),
                ("spiffe_id", self.spiffe_id.is_some()),
                ("trust_domain", self.trust_domain.is_some()),
                ("tags", self.tags.is_some()),
            ];
            if let Some((key, _)) = agent_only.iter().find(|(_, set)| *set) {
                return Err(format!("`principal.{key}` is for agents; put a subject's attributes in `properties`"));
            }
            return Ok(PrincipalInput::Other {
                kind: self.kind.clone(),
                id: self.id.clone(),
                properties: json_object(self.properties.as_ref()),
            });
        }
        if self.properties.is_some() {
            return Err("an agent has no `properties`; use `tags` for its attributes".to_owned());
        }
        let trust_domain = self.trust_domain.clone().unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
        Ok(PrincipalInput::Agent {
            name: self.id.clone(),
            spiffe_id: self.spiffe_id.clone().unwrap_or_else(|| format!("spiffe://{trust_domain}/agent/{}", self.id)),
            owner: self.owner.clone().unwrap_or_default(),
            purpose: self.purpose.clone().unwrap_or_default(),
            trust_domain,
            tags: self.tags.clone().unwrap_or_default(),
        })
    }
}

impl TaskSpec {
    fn to_input(&self) -> Result<TaskContext, String> {
        let request = IntentRequest {
            kind: AGENT_TASK_TYPE.to_owned(),
            purpose: self.purpose.clone(),
            actions: self.actions.clone(),
            resources: self.resources.clone(),
            max_classification: self.max_classification,
            lifetime_seconds: None,
            on_behalf_of: self.on_behalf_of.clone(),
        };
        let (intent, _) = request.validate().map_err(|e| format!("task: {e}"))?;
        Ok(TaskContext {
            id: self.id.clone().unwrap_or_else(|| "case-task".to_owned()),
            intent,
            depth: self.depth,
            chain: self.chain.clone(),
        })
    }
}

fn json_object(table: Option<&toml::Table>) -> serde_json::Map<String, serde_json::Value> {
    table.map(|t| t.iter().map(|(k, v)| (k.clone(), json(v))).collect()).unwrap_or_default()
}

/// TOML to JSON. Floats stay floats, so the decision refuses them as a request would.
fn json(value: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(items) => J::Array(items.iter().map(json).collect()),
        toml::Value::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
    }
}

/// Unix seconds from an integer or a date-time with an offset (`2026-01-05T12:00:00Z`, bare
/// or quoted).
fn unix_seconds(value: &toml::Value) -> Result<i64, String> {
    let bad = || "`context.now` must be unix seconds or a date-time with an offset, like 2026-01-05T12:00:00Z".to_owned();
    let datetime = match value {
        toml::Value::Integer(i) => return Ok(*i),
        toml::Value::Datetime(dt) => *dt,
        // A date-time inside a table read as a whole arrives as its text.
        toml::Value::String(s) => toml::value::Datetime::from_str(s).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let (Some(date), Some(time), Some(offset)) = (datetime.date, datetime.time, datetime.offset) else {
        return Err(bad());
    };
    let offset_minutes = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    let secs = i64::from(time.hour) * 3600 + i64::from(time.minute) * 60 + i64::from(time.second);
    Ok(days * 86_400 + secs - offset_minutes * 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 5) * 86_400 + 12 * 3600, DEFAULT_CASE_NOW);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn now_accepts_integers_and_offset_datetimes() {
        let v: toml::Table = toml::from_str("a = 2026-01-05T14:00:00+02:00\nb = 5\nc = 2026-01-05").unwrap();
        assert_eq!(unix_seconds(&v["a"]).unwrap(), DEFAULT_CASE_NOW);
        assert_eq!(unix_seconds(&v["b"]).unwrap(), 5);
        assert!(unix_seconds(&v["c"]).is_err());
    }
}
