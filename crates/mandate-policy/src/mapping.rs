//! From a Mandate request to a Cedar one: entity uids, request entities, the context record.
//!
//! Everything here refuses what Cedar cannot represent faithfully (floats, out-of-range
//! integers, malformed type names) instead of approximating it; the caller turns the refusal
//! into a deny.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use mandate_core::{Classification, clip};
use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::{ActionKind, ContextInput, EntityData, PrincipalInput, ResourceInput, TaskContext};

/// AuthZEN resource type of a tool: `Mandate::Tool`.
pub(crate) const TOOL_KIND: &str = "tool";
/// AuthZEN resource type of a task: `Mandate::Task`.
pub(crate) const TASK_KIND: &str = "task";
/// AuthZEN resource type of an agent: `Mandate::Agent`.
pub(crate) const AGENT_KIND: &str = "agent";

/// Context keys Mandate sets. A caller's context keys with these names are dropped, so
/// a caller can neither override them nor supply one Mandate left out (such as `task`).
pub const RESERVED_CONTEXT_KEYS: [&str; 7] = ["environment", "risk", "now", "hour", "weekday", "action_kind", "task"];

/// Deepest nesting of JSON arrays and objects accepted in properties and context.
const MAX_DEPTH: usize = 32;
/// Most verbatim entity type names remembered per snapshot.
const TYPE_CACHE_CAPACITY: usize = 1024;

/// The Cedar names of Mandate's own types, parsed once per snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub agent: EntityTypeName,
    pub tool: EntityTypeName,
    pub task: EntityTypeName,
    pub action: EntityTypeName,
}

impl Names {
    pub fn new() -> Result<Self, String> {
        let parse = |s: &str| EntityTypeName::from_str(s).map_err(|e| format!("entity type `{s}`: {e}"));
        Ok(Names {
            agent: parse("Mandate::Agent")?,
            tool: parse("Mandate::Tool")?,
            task: parse("Mandate::Task")?,
            action: parse("Mandate::Action")?,
        })
    }

    /// `Mandate::Action::"<name>"`.
    pub fn action_uid(&self, name: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.action.clone(), EntityId::new(name))
    }
}

/// Parsed verbatim entity type names (`ticket`, `PhotoApp::Photo`), so that a hot request
/// path does not run the Cedar parser.
#[derive(Debug, Default)]
pub(crate) struct TypeCache(RwLock<HashMap<String, EntityTypeName>>);

impl TypeCache {
    /// The Cedar entity type for a caller's type name. Refuses names that are not in
    /// canonical Cedar form and names of action types.
    pub fn resolve(&self, kind: &str) -> Result<EntityTypeName, String> {
        if let Some(t) = self.0.read().get(kind) {
            return Ok(t.clone());
        }
        let parsed = EntityTypeName::from_str(kind)
            .ok()
            .filter(|t| t.to_string() == kind)
            .ok_or_else(|| format!("invalid entity type `{}`: use a Cedar type name such as `ticket` or `PhotoApp::Photo`", clip(kind)))?;
        if parsed.basename() == "Action" {
            return Err(format!("entity type `{}` is reserved for actions", clip(kind)));
        }
        let mut map = self.0.write();
        if map.len() < TYPE_CACHE_CAPACITY {
            map.insert(kind.to_owned(), parsed.clone());
        }
        Ok(parsed)
    }
}

/// A request's principal or resource as Cedar sees it.
pub(crate) struct Resolved {
    pub uid: EntityUid,
    pub entity: Entity,
    /// Taken from the loaded entity data (its references are followed), not built.
    pub from_data: bool,
}

/// `Mandate::Agent::"<name>"` for an agent, `<kind>::"<id>"` for anyone else.
pub(crate) fn principal_uid(input: &PrincipalInput, names: &Names, types: &TypeCache) -> Result<EntityUid, String> {
    Ok(match input {
        PrincipalInput::Agent { name, .. } => EntityUid::from_type_name_and_id(names.agent.clone(), EntityId::new(name)),
        PrincipalInput::Other { kind, id, .. } => EntityUid::from_type_name_and_id(types.resolve(kind)?, EntityId::new(id)),
    })
}

/// The principal's entity: the loaded one when there is one, otherwise built from the request.
pub(crate) fn principal(input: &PrincipalInput, uid: EntityUid, data: &EntityData) -> Result<Resolved, String> {
    if let Some(entity) = data.get(&uid) {
        return Ok(Resolved { uid, entity: entity.clone(), from_data: true });
    }
    let entity = match input {
        PrincipalInput::Agent { name, spiffe_id, owner, purpose, trust_domain, tags } => {
            let attrs = [("name", name), ("spiffe_id", spiffe_id), ("owner", owner), ("purpose", purpose), ("trust_domain", trust_domain)]
                .map(|(k, v)| (k.to_owned(), RestrictedExpression::new_string(v.clone())));
            let tags = tags.iter().map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
            entity(uid.clone(), attrs, tags)?
        }
        PrincipalInput::Other { properties, .. } => {
            entity(uid.clone(), object_attrs(properties, Segment::Root("subject.properties"))?, [])?
        }
    };
    Ok(Resolved { uid, entity, from_data: false })
}

/// `Mandate::Tool`, `Mandate::Task`, `Mandate::Agent` or the caller's type verbatim.
pub(crate) fn resource(input: &ResourceInput, names: &Names, types: &TypeCache, data: &EntityData) -> Result<Resolved, String> {
    let type_name = match input.kind.as_str() {
        TOOL_KIND => names.tool.clone(),
        TASK_KIND => names.task.clone(),
        AGENT_KIND => names.agent.clone(),
        other => types.resolve(other)?,
    };
    let uid = EntityUid::from_type_name_and_id(type_name, EntityId::new(&input.id));
    if let Some(entity) = data.get(&uid) {
        return Ok(Resolved { uid, entity: entity.clone(), from_data: true });
    }
    let root = Segment::Root("resource.properties");
    let mut tags = Vec::new();
    let attrs = match input.kind.as_str() {
        TASK_KIND => task_attrs(&input.properties)?,
        AGENT_KIND => {
            let mut props = input.properties.clone();
            if let Some(value) = props.remove("tags") {
                tags = string_map(&value, "resource.properties.tags")?;
            }
            let mut attrs = object_attrs(&props, root)?;
            attrs.entry("name".into()).or_insert_with(|| RestrictedExpression::new_string(input.id.clone()));
            for key in ["spiffe_id", "owner", "purpose", "trust_domain"] {
                attrs.entry(key.into()).or_insert_with(|| RestrictedExpression::new_string(String::new()));
            }
            classify(&mut attrs, input.classification);
            attrs
        }
        _ => {
            let mut attrs = object_attrs(&input.properties, root)?;
            classify(&mut attrs, input.classification);
            attrs
        }
    };
    let entity = entity(uid.clone(), attrs, tags)?;
    Ok(Resolved { uid, entity, from_data: false })
}

/// The context record: the caller's keys, then Mandate's (which win).
pub(crate) fn context(input: &ContextInput, kind: Option<ActionKind>) -> Result<Context, String> {
    let mut pairs = object_attrs(&input.extra, Segment::Root("context"))?;
    for key in RESERVED_CONTEXT_KEYS {
        pairs.remove(key);
    }
    let days = input.now_secs.div_euclid(86_400);
    let hour = input.now_secs.rem_euclid(86_400) / 3_600;
    // 1970-01-01 was a Thursday (ISO weekday 4).
    let weekday = (days + 3).rem_euclid(7) + 1;
    let mut put = |k: &str, v: RestrictedExpression| {
        pairs.insert(k.to_owned(), v);
    };
    put("environment", RestrictedExpression::new_string(input.environment.clone()));
    put("risk", RestrictedExpression::new_long(input.risk));
    put("now", RestrictedExpression::new_long(input.now_secs));
    put("hour", RestrictedExpression::new_long(hour));
    put("weekday", RestrictedExpression::new_long(weekday));
    put("action_kind", RestrictedExpression::new_string(kind.map_or("", ActionKind::as_str).to_owned()));
    if let Some(task) = &input.task {
        put("task", task_record(task)?);
    }
    Context::from_pairs(pairs).map_err(|e| format!("invalid context: {e}"))
}

fn task_record(task: &TaskContext) -> Result<RestrictedExpression, String> {
    let strings = |v: &[String]| RestrictedExpression::new_set(v.iter().cloned().map(RestrictedExpression::new_string));
    let intent = &task.intent;
    RestrictedExpression::new_record([
        ("id".to_owned(), RestrictedExpression::new_string(task.id.clone())),
        ("purpose".to_owned(), RestrictedExpression::new_string(intent.purpose.clone())),
        ("actions".to_owned(), strings(&intent.actions)),
        ("resources".to_owned(), strings(&intent.resources)),
        ("max_classification".to_owned(), RestrictedExpression::new_long(intent.max_classification.rank())),
        ("on_behalf_of".to_owned(), RestrictedExpression::new_string(intent.on_behalf_of.clone().unwrap_or_default())),
        ("depth".to_owned(), RestrictedExpression::new_long(i64::from(task.depth))),
        ("delegated".to_owned(), RestrictedExpression::new_bool(task.depth > 0)),
        ("chain".to_owned(), strings(&task.chain)),
    ])
    .map_err(|e| format!("invalid task context: {e}"))
}

/// A task's attributes: its intent, read strictly from the resource properties.
fn task_attrs(props: &Map<String, Value>) -> Result<HashMap<String, RestrictedExpression>, String> {
    let field = |key: &str| props.get(key).filter(|v| !v.is_null());
    let missing = |key: &str, what: &str| format!("task resource needs `properties.{key}` ({what})");
    let string = |key: &str| match field(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(missing(key, "a string")),
    };
    let strings = |key: &str| match field(key) {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(|s| RestrictedExpression::new_string(s.to_owned())))
            .collect::<Option<Vec<_>>>()
            .map(RestrictedExpression::new_set)
            .ok_or_else(|| missing(key, "an array of strings")),
        _ => Err(missing(key, "an array of strings")),
    };
    let max_classification = match field("max_classification") {
        Some(Value::String(s)) => Classification::from_str(s).map_err(|e| e.to_string())?.rank(),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|r| (0..=3).contains(r))
            .ok_or_else(|| missing("max_classification", "a classification or its rank 0 to 3"))?,
        _ => return Err(missing("max_classification", "a classification")),
    };
    let lifetime = field("lifetime_seconds")
        .and_then(Value::as_i64)
        .filter(|s| *s >= 0)
        .ok_or_else(|| missing("lifetime_seconds", "a non-negative integer"))?;
    let on_behalf_of = match field("on_behalf_of") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(missing("on_behalf_of", "a string")),
    };
    // Delegation: absent for a task an agent opens itself.
    let depth = match field("depth") {
        None => 0,
        Some(v) => v.as_i64().filter(|d| *d >= 0).ok_or_else(|| missing("depth", "a non-negative integer"))?,
    };
    let delegated_from = match field("delegated_from") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(missing("delegated_from", "a string")),
    };
    let chain = match field("chain") {
        None => RestrictedExpression::new_set([]),
        Some(_) => strings("chain")?,
    };

    let mut attrs = object_attrs(props, Segment::Root("resource.properties"))?;
    attrs.insert("purpose".into(), RestrictedExpression::new_string(string("purpose")?));
    attrs.insert("actions".into(), strings("actions")?);
    attrs.insert("resources".into(), strings("resources")?);
    attrs.insert("max_classification".into(), RestrictedExpression::new_long(max_classification));
    attrs.insert("lifetime_seconds".into(), RestrictedExpression::new_long(lifetime));
    attrs.insert("on_behalf_of".into(), RestrictedExpression::new_string(on_behalf_of));
    attrs.insert("depth".into(), RestrictedExpression::new_long(depth));
    attrs.insert("delegated_from".into(), RestrictedExpression::new_string(delegated_from));
    attrs.insert("chain".into(), chain);
    Ok(attrs)
}

/// Adds `classification` (its rank) and `classification_label`, replacing any property of
/// the same name: the caller's effective classification is the one that counts.
fn classify(attrs: &mut HashMap<String, RestrictedExpression>, c: Classification) {
    attrs.insert("classification".into(), RestrictedExpression::new_long(c.rank()));
    attrs.insert("classification_label".into(), RestrictedExpression::new_string(c.as_str().to_owned()));
}

fn entity(
    uid: EntityUid,
    attrs: impl IntoIterator<Item = (String, RestrictedExpression)>,
    tags: impl IntoIterator<Item = (String, RestrictedExpression)>,
) -> Result<Entity, String> {
    Entity::new_with_tags(uid, attrs, [], tags).map_err(|e| format!("invalid entity: {e}"))
}

fn string_map(value: &Value, path: &str) -> Result<Vec<(String, RestrictedExpression)>, String> {
    let bad = || format!("`{path}` must be an object of strings");
    let Value::Object(map) = value else {
        return Err(bad());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), RestrictedExpression::new_string(s.clone()))),
            _ => Err(bad()),
        })
        .collect()
}

/// A tool call's arguments as Cedar can hold them, for `context.arguments`: null members and
/// null array items dropped (Cedar has no null; a missing member is what `has` sees), and
/// numbers that are not 64-bit signed integers turned into their decimal text (Cedar has no
/// floats). Nothing is cut off: the mapping refuses a value nested deeper than Cedar's limit,
/// and the gateway refuses such arguments before they are decided. Only the policy sees this
/// view; approvals and evidence bind the arguments' canonical form, nulls and all.
pub fn arguments_view(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.as_i64().is_none() => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.iter().filter(|i| !i.is_null()).map(arguments_view).collect()),
        Value::Object(m) => Value::Object(m.iter().filter(|(_, i)| !i.is_null()).map(|(k, i)| (k.clone(), arguments_view(i))).collect()),
        other => other.clone(),
    }
}

/// Converts a JSON object into Cedar attributes. Null members are left out (absent, as
/// `has` sees it).
pub(crate) fn object_attrs(map: &Map<String, Value>, root: Segment<'_>) -> Result<HashMap<String, RestrictedExpression>, String> {
    let mut out = HashMap::with_capacity(map.len());
    for (key, value) in map {
        let path = Segment::Key(&root, key);
        if let Some(v) = json_value(value, &path, 1)? {
            out.insert(key.clone(), v);
        }
    }
    Ok(out)
}

/// JSON to a Cedar value. `None` for null. Floats and integers outside a Cedar long are
/// refused: Cedar has no floating-point numbers, and truncating would change the meaning.
fn json_value(value: &Value, path: &Segment<'_>, depth: usize) -> Result<Option<RestrictedExpression>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("`{path}` is nested more than {MAX_DEPTH} levels deep"));
    }
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None if n.is_u64() => {
                return Err(format!("`{path}`: {n} is too large; Cedar integers are 64-bit signed"));
            }
            None => {
                return Err(format!("`{path}`: {n} is not an integer; Cedar has no floating-point numbers, send a string or an integer"));
            }
        },
        Value::Array(items) => {
            let mut set = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = Segment::Index(path, i);
                match json_value(item, &item_path, depth + 1)? {
                    Some(v) => set.push(v),
                    None => return Err(format!("`{item_path}`: null is not a Cedar value")),
                }
            }
            RestrictedExpression::new_set(set)
        }
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (key, item) in map {
                if let Some(v) = json_value(item, &Segment::Key(path, key), depth + 1)? {
                    fields.push((key.clone(), v));
                }
            }
            RestrictedExpression::new_record(fields).map_err(|e| format!("`{path}`: {e}"))?
        }
    }))
}

/// Where a JSON value sits, formatted only when an error names it.
pub(crate) enum Segment<'a> {
    Root(&'a str),
    Key(&'a Segment<'a>, &'a str),
    Index(&'a Segment<'a>, usize),
}

impl fmt::Display for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Root(name) => f.write_str(name),
            Segment::Key(parent, key) => write!(f, "{parent}.{}", clip(key)),
            Segment::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_view_fits_cedar_and_cuts_nothing() {
        let v = arguments_view(&json!({"x": 1.5, "n": null, "l": [1, null, 18446744073709551615u64], "ok": 3}));
        assert_eq!(v, json!({"x": "1.5", "l": [1, "18446744073709551615"], "ok": 3}));
        let mut deep = json!("leaf");
        for _ in 0..20 {
            deep = json!({ "x": deep });
        }
        assert_eq!(arguments_view(&deep), deep, "no depth is cut off");
    }
}
