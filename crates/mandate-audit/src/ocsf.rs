//! Export of sealed events as OCSF 1.8.0 shaped JSON, one object per event.
//!
//! | Mandate kinds | OCSF class | activity |
//! |---|---|---|
//! | `decision` | API Activity (6003) | from the action's verb: Create, Read, Update, Delete, else Other |
//! | `tool.call` | API Activity (6003) | from the tool's kind: `read` Read, `write` Update, `execute` Create, else Other |
//! | `task.opened`, `task.open_denied`, `token.issued` | API Activity (6003) | Create |
//! | `task.completed`, `task.revoked`, `task.expired` | API Activity (6003) | Update |
//! | `agent.*`, `policy.*`, `entities.loaded`, `api_token.created`, `issuer.*`, `key.rotated` | API Activity (6003) | Create, Update or Delete |
//! | `admin.auth_failed`, `attestation.refused`, `console.csrf_refused` | Authentication (3002) | Logon, failed |
//! | `console.login`, `console.logout` | Authentication (3002) | Logon, Logoff |
//! | `secret.echo_redacted` | API Activity (6003) | Update (the gateway changed the answer) |
//! | `server.started`, `server.stopped` | Application Lifecycle (6002) | Start, Stop |
//! | anything else | API Activity (6003) | Other |
//!
//! Events that carry a policy decision (`decision`, `task.opened`, `task.open_denied`) add the
//! `security_control` profile (`action_id` 1 Allowed / 2 Denied, `disposition_id` 1 Allowed /
//! 2 Blocked) and put the decision and each determining policy in `actor.authorizations`. A
//! `tool.call` carries it too: Allowed when the gateway forwarded the call, Denied otherwise.
//! Its `api.operation` is the tool (or the HTTP method and path), `api.service.name` the
//! upstream, and `api.request.uid` the id of the decision it enforced, as for `decision`.
//! `metadata.uid` is the event hash and `metadata.sequence` its seq. Every Mandate field, the
//! details included, is kept under `unmapped`, which is enough to rebuild the body and check
//! the hash chain from an export alone.

use serde_json::{Map, Value, json};

use crate::kinds;
use crate::timefmt::rfc3339_ms;
use crate::{DecisionDetails, SealedEvent, ToolCallDetails};

/// The OCSF schema version the export follows.
pub const OCSF_VERSION: &str = "1.8.0";

/// The product name in `metadata.product`.
const PRODUCT: &str = "Mandate";

/// `event` as an OCSF 1.8.0 event object.
pub fn to_ocsf(event: &SealedEvent) -> Value {
    let details = event.details();
    let typed = Typed::read(&event.kind, &details);
    let shape = Shape::of(&event.kind, &typed);
    let (category_uid, category_name) = shape.class.category();
    let (activity_id, activity_name) = shape.activity;
    let class_uid = shape.class.uid();

    let mut out = Map::new();
    out.insert("category_uid".into(), json!(category_uid));
    out.insert("category_name".into(), json!(category_name));
    out.insert("class_uid".into(), json!(class_uid));
    out.insert("class_name".into(), json!(shape.class.name()));
    out.insert("activity_id".into(), json!(activity_id));
    out.insert("activity_name".into(), json!(activity_name));
    out.insert("type_uid".into(), json!(u64::from(class_uid) * 100 + u64::from(activity_id)));
    out.insert("type_name".into(), json!(format!("{}: {activity_name}", shape.class.name())));
    out.insert("time".into(), json!(event.ts_ms));
    if let Some(dt) = rfc3339_ms(event.ts_ms) {
        out.insert("time_dt".into(), json!(dt));
    }
    let (severity_id, severity) = shape.severity();
    out.insert("severity_id".into(), json!(severity_id));
    out.insert("severity".into(), json!(severity));
    let (status_id, status) = if shape.failed() { (2, "Failure") } else { (1, "Success") };
    out.insert("status_id".into(), json!(status_id));
    out.insert("status".into(), json!(status));
    if let Some(reason) = typed.reason(&details) {
        out.insert("status_detail".into(), json!(reason));
    }
    out.insert("message".into(), json!(message(event, &typed, &details, &shape)));
    out.insert("metadata".into(), metadata(event, &shape));

    match shape.class {
        Class::ApiActivity => api_activity(&mut out, event, &typed, &details, &shape),
        Class::Authentication => authentication(&mut out, event, &details),
        Class::ApplicationLifecycle => {
            out.insert("app".into(), app(&details));
        }
    }
    if let Control::Decided(allowed) = shape.control {
        security_control(&mut out, allowed);
    }
    out.insert("unmapped".into(), unmapped(event, details));
    Value::Object(out)
}

/// The details of the kinds that have a type, read once; every other kind is read from its
/// JSON.
enum Typed {
    /// `None`: a decision event whose details do not read as one (no verdict).
    Decision(Option<DecisionDetails>),
    /// A tool call whose details do not read as one reads as an empty one (not forwarded).
    ToolCall(ToolCallDetails),
    Other,
}

impl Typed {
    fn read(kind: &str, details: &Value) -> Typed {
        match kind {
            kinds::DECISION => Typed::Decision(DecisionDetails::from_details(details)),
            kinds::TOOL_CALL => Typed::ToolCall(ToolCallDetails::from_details(details).unwrap_or_default()),
            _ => Typed::Other,
        }
    }

    /// The stable reason code, when the event states one.
    fn reason<'a>(&'a self, details: &'a Value) -> Option<&'a str> {
        match self {
            Typed::Decision(d) => d.as_ref().and_then(|d| non_empty(&d.reason)),
            Typed::ToolCall(c) => non_empty(&c.reason),
            Typed::Other => str_field(details, "reason"),
        }
    }

    /// The id of the decision the event is or enforced.
    fn decision_id<'a>(&'a self, details: &'a Value) -> Option<&'a str> {
        match self {
            Typed::Decision(d) => d.as_ref().and_then(|d| non_empty(&d.decision_id)),
            Typed::ToolCall(c) => c.decision_id.as_deref(),
            Typed::Other => str_field(details, "decision_id"),
        }
    }
}

/// The OCSF classes Mandate events map to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    ApiActivity,
    ApplicationLifecycle,
    Authentication,
}

impl Class {
    fn uid(self) -> u32 {
        match self {
            Class::ApiActivity => 6003,
            Class::ApplicationLifecycle => 6002,
            Class::Authentication => 3002,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::ApiActivity => "API Activity",
            Class::ApplicationLifecycle => "Application Lifecycle",
            Class::Authentication => "Authentication",
        }
    }

    fn category(self) -> (u32, &'static str) {
        match self {
            Class::ApiActivity | Class::ApplicationLifecycle => (6, "Application Activity"),
            Class::Authentication => (3, "Identity & Access Management"),
        }
    }
}

/// Whether a policy decision is part of the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    /// No decision: an administrative or lifecycle event.
    None,
    /// A decision whose outcome the details do not state.
    Unknown,
    /// A decision: allowed (`true`) or denied.
    Decided(bool),
}

const CREATE: (u32, &str) = (1, "Create");
const READ: (u32, &str) = (2, "Read");
const UPDATE: (u32, &str) = (3, "Update");
const DELETE: (u32, &str) = (4, "Delete");
const OTHER: (u32, &str) = (99, "Other");

/// How one event maps: class, activity, and outcome.
#[derive(Clone, Copy, Debug)]
struct Shape {
    class: Class,
    activity: (u32, &'static str),
    control: Control,
    /// The event records something that failed (a refused reload, a refused login).
    failure: bool,
}

impl Shape {
    fn of(kind: &str, typed: &Typed) -> Shape {
        let api = |activity| Shape { class: Class::ApiActivity, activity, control: Control::None, failure: false };
        match typed {
            Typed::Decision(Some(d)) => Shape { control: Control::Decided(d.decision), ..api(activity_of_action(&d.action)) },
            Typed::Decision(None) => Shape { control: Control::Unknown, ..api(OTHER) },
            Typed::ToolCall(c) => Shape { control: Control::Decided(c.forwarded), ..api(activity_of_tool_kind(&c.kind)) },
            Typed::Other => Shape::of_other(kind),
        }
    }

    /// The kinds without typed details: the kind alone says how they map.
    fn of_other(kind: &str) -> Shape {
        let api = |activity| Shape { class: Class::ApiActivity, activity, control: Control::None, failure: false };
        match kind {
            kinds::TASK_OPENED => Shape { control: Control::Decided(true), ..api(CREATE) },
            kinds::TASK_OPEN_DENIED => Shape { control: Control::Decided(false), ..api(CREATE) },
            kinds::TOKEN_ISSUED | kinds::AGENT_REGISTERED | kinds::API_TOKEN_CREATED | kinds::ISSUER_ADDED | kinds::SECRET_PUT => {
                api(CREATE)
            }
            kinds::SECRET_LEASE_CREATED => api(CREATE),
            kinds::SECRET_ECHO_REDACTED => api(UPDATE),
            kinds::SECRET_LEASE_FAILED => Shape { failure: true, ..api(CREATE) },
            kinds::GATEWAY_REGISTERED => api(CREATE),
            kinds::SECRET_SEALED => api(READ),
            kinds::SECRET_SEAL_REFUSED => Shape { failure: true, ..api(READ) },
            kinds::TASK_COMPLETED
            | kinds::TASK_REVOKED
            | kinds::TASK_EXPIRED
            | kinds::AGENT_DISABLED
            | kinds::AGENT_ENABLED
            | kinds::POLICY_RELOADED
            | kinds::ENTITIES_LOADED
            | kinds::KEY_ROTATED
            | kinds::SECRET_ROTATED => api(UPDATE),
            kinds::POLICY_RELOAD_FAILED => Shape { failure: true, ..api(UPDATE) },
            kinds::APPROVAL_REQUESTED => api(CREATE),
            kinds::APPROVAL_APPROVED => Shape { control: Control::Decided(true), ..api(UPDATE) },
            kinds::APPROVAL_DENIED => Shape { control: Control::Decided(false), ..api(UPDATE) },
            kinds::APPROVAL_USED | kinds::APPROVAL_EXPIRED => api(UPDATE),
            kinds::APPROVAL_NOTIFY_FAILED => Shape { failure: true, ..api(CREATE) },
            kinds::ISSUER_REMOVED
            | kinds::SECRET_DELETED
            | kinds::SECRET_LEASE_DROPPED
            | kinds::API_TOKEN_REVOKED
            | kinds::GATEWAY_REVOKED => api(DELETE),
            kinds::ADMIN_AUTH_FAILED | kinds::ATTESTATION_REFUSED | kinds::CONSOLE_CSRF_REFUSED => {
                Shape { class: Class::Authentication, activity: (1, "Logon"), control: Control::None, failure: true }
            }
            kinds::CONSOLE_LOGIN => Shape { class: Class::Authentication, activity: (1, "Logon"), control: Control::None, failure: false },
            kinds::CONSOLE_LOGOUT => {
                Shape { class: Class::Authentication, activity: (2, "Logoff"), control: Control::None, failure: false }
            }
            kinds::SERVER_STARTED => Shape { class: Class::ApplicationLifecycle, activity: (3, "Start"), ..api(OTHER) },
            kinds::SERVER_STOPPED => Shape { class: Class::ApplicationLifecycle, activity: (4, "Stop"), ..api(OTHER) },
            _ => api(OTHER),
        }
    }

    fn failed(&self) -> bool {
        self.failure || self.control == Control::Decided(false)
    }

    /// Informational, except denials and failures (Low) and refused logins (Medium).
    fn severity(&self) -> (u32, &'static str) {
        if self.class == Class::Authentication && self.failure {
            (3, "Medium")
        } else if self.failed() {
            (2, "Low")
        } else {
            (1, "Informational")
        }
    }
}

/// The CRUD activity an action's last segment names (`tickets.read` reads); Other when the
/// verb is not a CRUD verb.
fn activity_of_action(action: &str) -> (u32, &'static str) {
    let verb = action.rsplit(['.', ':', '/']).next().unwrap_or(action).to_ascii_lowercase();
    match verb.as_str() {
        "create" | "add" | "insert" | "new" | "post" => CREATE,
        "read" | "get" | "list" | "search" | "query" | "view" | "describe" | "fetch" => READ,
        "write" | "update" | "edit" | "modify" | "put" | "patch" | "set" => UPDATE,
        "delete" | "remove" | "destroy" | "purge" => DELETE,
        _ => OTHER,
    }
}

/// The activity of a tool call from the kind of its tool: executing a tool makes something.
fn activity_of_tool_kind(kind: &str) -> (u32, &'static str) {
    match kind {
        "read" => READ,
        "write" => UPDATE,
        "execute" => CREATE,
        _ => OTHER,
    }
}

fn metadata(event: &SealedEvent, shape: &Shape) -> Value {
    let mut profiles = vec!["datetime"];
    if shape.control != Control::None {
        profiles.push("security_control");
    }
    let mut m = json!({
        "version": OCSF_VERSION,
        "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": env!("CARGO_PKG_VERSION")},
        "uid": event.hash,
        "sequence": event.seq,
        "event_code": event.kind,
        "log_name": "audit",
        "profiles": profiles,
    });
    if let (Some(task), Some(map)) = (&event.task, m.as_object_mut()) {
        map.insert("correlation_uid".into(), json!(task));
    }
    m
}

fn api_activity(out: &mut Map<String, Value>, event: &SealedEvent, typed: &Typed, details: &Value, shape: &Shape) {
    let subject_is_agent = matches!(
        event.kind.as_str(),
        kinds::DECISION
            | kinds::TOOL_CALL
            | kinds::SECRET_ECHO_REDACTED
            | kinds::TASK_OPENED
            | kinds::TASK_OPEN_DENIED
            | kinds::TOKEN_ISSUED
    );
    let mut actor = Map::new();
    match (&event.agent, subject_is_agent) {
        (Some(agent), true) => {
            actor.insert("user".into(), agent_user(agent));
            if event.actor != format!("agent:{agent}") {
                actor.insert("app_name".into(), json!(event.actor));
            }
        }
        _ => {
            actor.insert("user".into(), actor_user(&event.actor));
        }
    }
    if let Control::Decided(allowed) = shape.control {
        actor.insert("authorizations".into(), authorizations(typed, details, allowed));
    }
    out.insert("actor".into(), Value::Object(actor));

    let operation = match (typed, event.kind.as_str()) {
        (Typed::Decision(d), _) => d.as_ref().and_then(|d| non_empty(&d.action)).unwrap_or(kinds::DECISION).to_owned(),
        (Typed::ToolCall(c), _) => tool_operation(c, details),
        (Typed::Other, kinds::SECRET_ECHO_REDACTED) => {
            str_field(details, "tool").or_else(|| str_field(details, "method")).unwrap_or(kinds::SECRET_ECHO_REDACTED).to_owned()
        }
        (Typed::Other, kind) => kind.to_owned(),
    };
    let service = match (typed, event.kind.as_str()) {
        (Typed::ToolCall(c), _) => non_empty(&c.upstream).unwrap_or(PRODUCT),
        (Typed::Other, kinds::SECRET_ECHO_REDACTED) => str_field(details, "upstream").unwrap_or(PRODUCT),
        _ => PRODUCT,
    };
    let mut api = json!({"operation": operation, "service": {"name": service}});
    if let (Some(id), Some(map)) = (typed.decision_id(details), api.as_object_mut()) {
        map.insert("request".into(), json!({"uid": id}));
    }
    out.insert("api".into(), api);
    out.insert("src_endpoint".into(), src_endpoint(event, details));

    let resources = resources(event, typed, details);
    if !resources.is_empty() {
        out.insert("resources".into(), Value::Array(resources));
    }
}

/// What a tool call invoked: the MCP tool, or `METHOD path` for an HTTP upstream. (Mandate's
/// gateway names an HTTP call's tool itself; a `path` member is taken from other producers.)
fn tool_operation(call: &ToolCallDetails, details: &Value) -> String {
    if let Some(tool) = non_empty(&call.tool) {
        return tool.to_owned();
    }
    match (non_empty(&call.method), str_field(details, "path")) {
        (Some(method), Some(path)) => format!("{method} {path}"),
        (Some(method), None) => method.to_owned(),
        (None, Some(path)) => path.to_owned(),
        (None, None) => kinds::TOOL_CALL.to_owned(),
    }
}

fn authentication(out: &mut Map<String, Value>, event: &SealedEvent, details: &Value) {
    let user = match (&event.agent, str_field(details, "subject")) {
        (Some(agent), _) => agent_user(agent),
        (None, Some(subject)) => json!({"name": subject}),
        (None, None) => actor_user(&event.actor),
    };
    out.insert("user".into(), user);
    out.insert("service".into(), json!({"name": PRODUCT}));
    out.insert("is_remote".into(), json!(true));
    if event.kind == kinds::ATTESTATION_REFUSED {
        // Attestation is an OAuth 2.0 token exchange (RFC 8693).
        out.insert("auth_protocol_id".into(), json!(6));
        out.insert("auth_protocol".into(), json!("OAUTH 2.0"));
    }
    if let Some(ip) = str_field(details, "src_ip") {
        out.insert("src_endpoint".into(), json!({"ip": ip}));
    }
}

fn app(details: &Value) -> Value {
    let version = str_field(details, "version").unwrap_or(env!("CARGO_PKG_VERSION"));
    json!({"name": PRODUCT, "vendor_name": PRODUCT, "version": version})
}

fn security_control(out: &mut Map<String, Value>, allowed: bool) {
    let (action_id, action, disposition_id, disposition) = if allowed { (1, "Allowed", 1, "Allowed") } else { (2, "Denied", 2, "Blocked") };
    out.insert("action_id".into(), json!(action_id));
    out.insert("action".into(), json!(action));
    out.insert("disposition_id".into(), json!(disposition_id));
    out.insert("disposition".into(), json!(disposition));
}

/// One authorization per determining policy; a single policy-less one when no policy decided
/// (deny by default). A decision names its policies; a tool call from Mandate's gateway names
/// none (its decision does), but `policies` and `policy_version` are taken when a producer
/// sends them, as for the kinds without typed details.
fn authorizations(typed: &Typed, details: &Value, allowed: bool) -> Value {
    let decision = if allowed { "Allowed" } else { "Denied" };
    let policies: Vec<Value> = match typed {
        Typed::Decision(Some(d)) => {
            let version = d.policy_version.as_deref();
            d.policies.iter().filter_map(|p| policy(&Value::String(p.clone()), version)).collect()
        }
        Typed::Decision(None) => Vec::new(),
        Typed::ToolCall(_) | Typed::Other => {
            let version = str_field(details, "policy_version");
            details
                .get("policies")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(|p| policy(p, version)).collect())
                .unwrap_or_default()
        }
    };
    if policies.is_empty() {
        return json!([{"decision": decision}]);
    }
    Value::Array(policies.into_iter().map(|p| json!({"decision": decision, "policy": p})).collect())
}

/// An OCSF policy object from a policy id, or from an object with `id`/`uid` and `name`.
fn policy(p: &Value, version: Option<&str>) -> Option<Value> {
    let (uid, name) = match p {
        Value::String(id) => (id.as_str(), id.as_str()),
        Value::Object(_) => {
            let uid = str_field(p, "id").or_else(|| str_field(p, "uid"))?;
            (uid, str_field(p, "name").unwrap_or(uid))
        }
        _ => return None,
    };
    let mut out = json!({"uid": uid, "name": name});
    if let (Some(v), Some(map)) = (version, out.as_object_mut()) {
        map.insert("version".into(), json!(v));
    }
    Some(out)
}

fn agent_user(agent: &str) -> Value {
    json!({"name": agent, "uid": agent, "type_id": 4, "type": "Service"})
}

/// The user behind an actor string: `agent:<name>`, `system`, or an admin token id.
fn actor_user(actor: &str) -> Value {
    if let Some(agent) = actor.strip_prefix("agent:") {
        agent_user(agent)
    } else if actor == "system" {
        json!({"name": actor, "type_id": 3, "type": "System"})
    } else {
        json!({"name": actor, "uid": actor})
    }
}

fn src_endpoint(event: &SealedEvent, details: &Value) -> Value {
    match str_field(details, "src_ip") {
        Some(ip) => json!({"ip": ip}),
        None => json!({"name": event.agent.as_deref().unwrap_or(&event.actor)}),
    }
}

fn resources(event: &SealedEvent, typed: &Typed, details: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    match typed {
        Typed::Decision(Some(d)) if !d.resource.is_empty() => out.push(json!({"type": d.resource.kind, "uid": d.resource.id})),
        Typed::Decision(_) => {}
        Typed::ToolCall(c) => {
            if let Some(tool) = non_empty(&c.tool) {
                out.push(json!({"type": "tool", "uid": tool}));
            }
        }
        Typed::Other => {
            let resource = details.get("resource");
            if let (Some(kind), Some(id)) = (resource.and_then(|r| str_field(r, "type")), resource.and_then(|r| str_field(r, "id"))) {
                out.push(json!({"type": kind, "uid": id}));
            }
        }
    }
    if let Some(task) = &event.task {
        out.push(json!({"type": "task", "uid": task}));
    }
    if let Some(agent) = &event.agent {
        out.push(json!({"type": "agent", "uid": agent}));
    }
    out
}

fn message(event: &SealedEvent, typed: &Typed, details: &Value, shape: &Shape) -> String {
    let mut m = match (typed, shape.control) {
        (Typed::Decision(Some(d)), _) => {
            let verdict = if d.decision { "allowed" } else { "denied" };
            let action = non_empty(&d.action).unwrap_or("?");
            let mut m = format!("{verdict} `{action}`");
            if !d.resource.is_empty() {
                let kind = non_empty(&d.resource.kind).unwrap_or("?");
                let id = non_empty(&d.resource.id).unwrap_or("?");
                m.push_str(&format!(" on `{kind}:{id}`"));
            }
            m
        }
        (Typed::ToolCall(c), _) => {
            let verdict = if c.forwarded { "forwarded" } else { "did not forward" };
            let mut m = format!("{verdict} `{}`", tool_operation(c, details));
            if let Some(upstream) = non_empty(&c.upstream) {
                m.push_str(&format!(" to `{upstream}`"));
            }
            m
        }
        _ => event.kind.clone(),
    };
    if let Some(agent) = &event.agent {
        m.push_str(&format!(" agent `{agent}`"));
    }
    if let Some(task) = &event.task {
        m.push_str(&format!(" task `{task}`"));
    }
    if let Some(reason) = typed.reason(details) {
        m.push_str(&format!(": {reason}"));
    }
    m
}

fn unmapped(event: &SealedEvent, details: Value) -> Value {
    json!({
        "seq": event.seq,
        "ts_ms": event.ts_ms,
        "kind": event.kind,
        "actor": event.actor,
        "agent": event.agent,
        "task": event.task,
        "details": details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    })
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A typed member that is there: an empty string is one a record did not carry.
fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChainHead, NewEvent, canonical_json, seal};

    fn sealed(kind: &str, actor: &str, agent: Option<&str>, task: Option<&str>, details: Value) -> SealedEvent {
        let e = NewEvent {
            ts_ms: 1_738_324_800_250,
            kind: kind.into(),
            actor: actor.into(),
            agent: agent.map(Into::into),
            task: task.map(Into::into),
            details,
        };
        seal(&ChainHead { seq: 41, hash: "a".repeat(64) }, vec![e]).remove(0)
    }

    fn decision(allowed: bool) -> SealedEvent {
        sealed(
            kinds::DECISION,
            "pep-gateway",
            Some("support-bot"),
            Some("task-1"),
            json!({
                "decision_id": "d-1",
                "decision": allowed,
                "reason": if allowed { "permitted by policy" } else { "no policy permits" },
                "action": "tickets.read",
                "resource": {"type": "ticket", "id": "42"},
                "policies": if allowed { json!(["allow-support-read"]) } else { json!([]) },
                "policy_version": "v7",
                "obligations": [],
                "shadow": {"decision": false, "policies": []},
            }),
        )
    }

    #[test]
    fn an_allowed_decision_is_api_activity_with_security_control() {
        let e = decision(true);
        let o = to_ocsf(&e);
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["category_uid"], 6);
        assert_eq!(o["activity_id"], 2);
        assert_eq!(o["type_uid"], 600302);
        assert_eq!(o["time"], 1_738_324_800_250_i64);
        assert_eq!(o["time_dt"], "2025-01-31T12:00:00.250Z");
        assert_eq!(o["severity_id"], 1);
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["action_id"], 1);
        assert_eq!(o["disposition_id"], 1);
        assert_eq!(o["actor"]["user"]["name"], "support-bot");
        assert_eq!(o["actor"]["app_name"], "pep-gateway");
        assert_eq!(
            o["actor"]["authorizations"],
            json!([{"decision": "Allowed", "policy": {"uid": "allow-support-read", "name": "allow-support-read", "version": "v7"}}])
        );
        assert_eq!(o["api"]["operation"], "tickets.read");
        assert_eq!(o["api"]["request"]["uid"], "d-1");
        assert_eq!(o["src_endpoint"]["name"], "support-bot");
        assert_eq!(o["resources"][0], json!({"type": "ticket", "uid": "42"}));
        assert_eq!(o["metadata"]["version"], "1.8.0");
        assert_eq!(o["metadata"]["product"]["name"], "Mandate");
        assert_eq!(o["metadata"]["product"]["vendor_name"], "Mandate");
        assert_eq!(o["metadata"]["uid"], e.hash);
        assert_eq!(o["metadata"]["sequence"], 42);
        assert_eq!(o["metadata"]["correlation_uid"], "task-1");
        assert_eq!(o["metadata"]["profiles"], json!(["datetime", "security_control"]));
        assert_eq!(o["unmapped"]["details"]["shadow"]["decision"], false);
        assert_eq!(o["message"], "allowed `tickets.read` on `ticket:42` agent `support-bot` task `task-1`: permitted by policy");
    }

    #[test]
    fn a_denied_decision_is_blocked() {
        let o = to_ocsf(&decision(false));
        assert_eq!(o["action_id"], 2);
        assert_eq!(o["action"], "Denied");
        assert_eq!(o["disposition_id"], 2);
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["severity_id"], 2);
        assert_eq!(o["status_detail"], "no policy permits");
        assert_eq!(o["actor"]["authorizations"], json!([{"decision": "Denied"}]));
    }

    fn tool_call(details: Value) -> Value {
        to_ocsf(&sealed(kinds::TOOL_CALL, "token:tok_gw", Some("support-bot"), Some("task-1"), details))
    }

    #[test]
    fn a_forwarded_tool_call_is_allowed_api_activity() {
        let o = tool_call(json!({
            "decision_id": "dec_1",
            "kind": "read",
            "tool": "tickets.read",
            "upstream": "crm-tools",
            "forwarded": true,
            "policies": ["allow-support-read"],
            "policy_version": "v7",
        }));
        assert_eq!(o["class_uid"], 6003);
        assert_eq!(o["activity_id"], 2);
        assert_eq!(o["activity_name"], "Read");
        assert_eq!(o["type_uid"], 600302);
        assert_eq!(o["action_id"], 1);
        assert_eq!(o["action"], "Allowed");
        assert_eq!(o["disposition_id"], 1);
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["api"]["operation"], "tickets.read");
        assert_eq!(o["api"]["service"]["name"], "crm-tools");
        assert_eq!(o["api"]["request"]["uid"], "dec_1");
        assert_eq!(o["actor"]["user"]["name"], "support-bot");
        assert_eq!(o["actor"]["app_name"], "token:tok_gw");
        assert_eq!(
            o["actor"]["authorizations"],
            json!([{"decision": "Allowed", "policy": {"uid": "allow-support-read", "name": "allow-support-read", "version": "v7"}}])
        );
        assert_eq!(o["resources"][0], json!({"type": "tool", "uid": "tickets.read"}));
        assert_eq!(o["metadata"]["profiles"], json!(["datetime", "security_control"]));
        assert_eq!(o["metadata"]["event_code"], "tool.call");
        assert_eq!(o["message"], "forwarded `tickets.read` to `crm-tools` agent `support-bot` task `task-1`");
    }

    #[test]
    fn a_tool_call_not_forwarded_is_denied() {
        for details in [
            json!({"decision_id": "dec_2", "kind": "write", "tool": "tickets.close", "upstream": "crm", "forwarded": false,
                   "reason": "intent_action"}),
            json!({"decision_id": "dec_2", "kind": "write", "tool": "tickets.close", "upstream": "crm"}),
        ] {
            let o = tool_call(details);
            assert_eq!(o["activity_id"], 3);
            assert_eq!(o["action_id"], 2);
            assert_eq!(o["action"], "Denied");
            assert_eq!(o["disposition_id"], 2);
            assert_eq!(o["status_id"], 2);
            assert_eq!(o["actor"]["authorizations"], json!([{"decision": "Denied"}]));
            assert_eq!(o["api"]["request"]["uid"], "dec_2");
        }
        let o = tool_call(json!({"tool": "t", "forwarded": false, "reason": "intent_action"}));
        assert_eq!(o["status_detail"], "intent_action");
        assert_eq!(o["message"], "did not forward `t` agent `support-bot` task `task-1`: intent_action");
    }

    #[test]
    fn a_tool_call_takes_its_activity_from_the_tool_kind() {
        for (kind, activity) in [(json!("read"), 2), (json!("write"), 3), (json!("execute"), 1), (json!("delete"), 99), (Value::Null, 99)] {
            let o = tool_call(json!({"kind": kind, "tool": "t", "forwarded": true}));
            assert_eq!(o["activity_id"], activity, "{kind}");
            assert_eq!(o["type_uid"].as_u64().unwrap(), 600300 + activity, "{kind}");
        }
    }

    #[test]
    fn an_http_tool_call_is_named_by_method_and_path() {
        let o = tool_call(json!({"kind": "write", "method": "POST", "path": "/v1/refunds", "upstream": "payments", "forwarded": true}));
        assert_eq!(o["api"]["operation"], "POST /v1/refunds");
        assert_eq!(o["api"]["service"]["name"], "payments");
        assert_eq!(o["resources"], json!([{"type": "task", "uid": "task-1"}, {"type": "agent", "uid": "support-bot"}]));
        // Without an upstream the service is Mandate itself, and without a name the kind.
        let o = tool_call(json!({"forwarded": true}));
        assert_eq!(o["api"]["operation"], "tool.call");
        assert_eq!(o["api"]["service"]["name"], "Mandate");
    }

    #[test]
    fn the_export_carries_enough_to_rebuild_the_chain() {
        let e = decision(true);
        let u = to_ocsf(&e)["unmapped"].clone();
        let body = json!({
            "seq": u["seq"], "ts_ms": u["ts_ms"], "kind": u["kind"], "actor": u["actor"],
            "agent": u["agent"], "task": u["task"], "details": u["details"], "prev_hash": u["prev_hash"],
        });
        assert_eq!(canonical_json(&body), e.body);
    }

    #[test]
    fn action_verbs_pick_the_activity() {
        assert_eq!(activity_of_action("tickets.read"), READ);
        assert_eq!(activity_of_action("invoice:create"), CREATE);
        assert_eq!(activity_of_action("crm/contacts/Update"), UPDATE);
        assert_eq!(activity_of_action("files.delete"), DELETE);
        assert_eq!(activity_of_action("payments.execute"), OTHER);
        assert_eq!(activity_of_action(""), OTHER);
    }

    #[test]
    fn auth_failures_are_authentication_events() {
        let o = to_ocsf(&sealed(
            kinds::ATTESTATION_REFUSED,
            "system",
            Some("bot"),
            None,
            json!({"reason": "signature does not verify", "src_ip": "10.0.0.7"}),
        ));
        assert_eq!(o["class_uid"], 3002);
        assert_eq!(o["category_uid"], 3);
        assert_eq!(o["type_uid"], 300201);
        assert_eq!(o["status_id"], 2);
        assert_eq!(o["severity_id"], 3);
        assert_eq!(o["user"]["name"], "bot");
        assert_eq!(o["service"]["name"], "Mandate");
        assert_eq!(o["src_endpoint"]["ip"], "10.0.0.7");
        assert!(o.get("action_id").is_none());

        let o = to_ocsf(&sealed(kinds::ADMIN_AUTH_FAILED, "anonymous", None, None, json!({})));
        assert_eq!(o["class_uid"], 3002);
        assert_eq!(o["user"]["name"], "anonymous");
    }

    #[test]
    fn admin_changes_are_crud_api_activity() {
        let cases = [
            (kinds::AGENT_REGISTERED, 1),
            (kinds::AGENT_DISABLED, 3),
            (kinds::TASK_REVOKED, 3),
            (kinds::ISSUER_REMOVED, 4),
            (kinds::API_TOKEN_REVOKED, 4),
            (kinds::API_TOKEN_CREATED, 1),
            (kinds::POLICY_RELOAD_FAILED, 3),
            (kinds::SECRET_LEASE_CREATED, 1),
            (kinds::SECRET_LEASE_FAILED, 1),
            (kinds::SECRET_LEASE_DROPPED, 4),
            (kinds::GATEWAY_REGISTERED, 1),
            (kinds::GATEWAY_REVOKED, 4),
            (kinds::SECRET_SEALED, 2),
            (kinds::SECRET_SEAL_REFUSED, 2),
            ("something.new", 99),
        ];
        for (kind, activity) in cases {
            let o = to_ocsf(&sealed(kind, "tok_admin", Some("bot"), None, json!({})));
            assert_eq!(o["class_uid"], 6003, "{kind}");
            assert_eq!(o["activity_id"], activity, "{kind}");
            assert_eq!(o["api"]["operation"], kind);
            assert_eq!(o["actor"]["user"]["name"], "tok_admin");
            assert!(o.get("action_id").is_none(), "{kind}");
        }
        let o = to_ocsf(&sealed(kinds::POLICY_RELOAD_FAILED, "system", None, None, json!({})));
        assert_eq!(o["status_id"], 2);
        let o = to_ocsf(&sealed(kinds::SECRET_LEASE_FAILED, "system", None, None, json!({})));
        assert_eq!(o["status_id"], 2);
        let o = to_ocsf(&sealed(kinds::SECRET_SEAL_REFUSED, "system", None, None, json!({})));
        assert_eq!(o["status_id"], 2);
        let o = to_ocsf(&sealed(kinds::SECRET_SEALED, "system", None, None, json!({})));
        assert_eq!(o["status_id"], 1);
        let o = to_ocsf(&sealed(kinds::SECRET_LEASE_DROPPED, "system", None, None, json!({})));
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["actor"]["user"]["type_id"], 3);
    }

    #[test]
    fn task_open_denied_carries_the_denial() {
        let o = to_ocsf(&sealed(kinds::TASK_OPEN_DENIED, "agent:bot", Some("bot"), None, json!({"policies": [{"id": "forbid-prod"}]})));
        assert_eq!(o["activity_id"], 1);
        assert_eq!(o["action_id"], 2);
        assert!(o["actor"].get("app_name").is_none());
        assert_eq!(o["actor"]["authorizations"][0]["policy"]["uid"], "forbid-prod");
    }

    #[test]
    fn server_lifecycle_is_application_lifecycle() {
        let o = to_ocsf(&sealed(kinds::SERVER_STARTED, "system", None, None, json!({})));
        assert_eq!(o["class_uid"], 6002);
        assert_eq!(o["type_uid"], 600203);
        assert_eq!(o["app"]["name"], "Mandate");
        let o = to_ocsf(&sealed(kinds::SERVER_STOPPED, "system", None, None, json!({})));
        assert_eq!(o["activity_id"], 4);
    }

    #[test]
    fn an_echo_redacted_is_the_upstream_and_its_tool() {
        let d =
            json!({"secret": {"name": "gh", "version": 2}, "upstream": "tickets", "tool": "echo", "decision_id": "dec_1", "matches": 2});
        let o = to_ocsf(&sealed(kinds::SECRET_ECHO_REDACTED, "agent:bot", Some("bot"), None, d));
        assert_eq!((o["class_uid"].as_u64(), o["activity_id"].as_u64()), (Some(6003), Some(3)));
        assert_eq!(o["api"]["operation"], "echo");
        assert_eq!(o["api"]["service"]["name"], "tickets");
        assert_eq!(o["api"]["request"]["uid"], "dec_1");
        assert_eq!(o["status_id"], 1);
    }

    #[test]
    fn every_kind_maps_without_surprises() {
        for kind in kinds::ALL {
            let o = to_ocsf(&sealed(kind, "system", None, None, Value::Null));
            let class = o["class_uid"].as_u64().unwrap();
            let activity = o["activity_id"].as_u64().unwrap();
            assert_eq!(o["type_uid"].as_u64().unwrap(), class * 100 + activity, "{kind}");
            // The activity of a decision and a tool call comes from their details.
            if kind != kinds::DECISION && kind != kinds::TOOL_CALL {
                assert_ne!(activity, 99, "{kind} should map to a named activity");
            }
        }
    }
}
