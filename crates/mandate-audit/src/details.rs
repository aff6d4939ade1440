//! Typed details of the two kinds everything else is read from: a request-time decision
//! ([`kinds::DECISION`], [`DecisionDetails`]) and a tool call a gateway enforced
//! ([`kinds::TOOL_CALL`], [`ToolCallDetails`]).
//!
//! The writer builds one of these and turns it into the event's `details` once
//! ([`DecisionDetails::into_details`]); readers get it back with `of` (`None` when the kind
//! differs or the details do not parse). The JSON is what Mandate has always written: the
//! same members, optional ones left out when absent, in the sorted order of a `serde_json`
//! map. Reading is lenient, because the trail keeps events from every earlier version and
//! `tool.call` events also come from remote gateways: a member that is missing reads as its
//! empty value (or `None`), a string that is `null` as empty, and unknown members are ignored.
//! The one member a decision cannot be read without is `decision` itself.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::{SealedEvent, kinds};

/// An entity as `{type, id}`: a decision's subject or resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntityRef {
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub id: String,
}

impl EntityRef {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        EntityRef { kind: kind.into(), id: id.into() }
    }

    /// Neither a type nor an id (a member missing from an old event).
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty() && self.id.is_empty()
    }
}

/// An obligation a decision imposed: `{type, policy, value}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ObligationDetails {
    /// `approval`, `notification`, or any kind a policy names.
    #[serde(rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    /// The policy that imposed it.
    #[serde(deserialize_with = "nullable")]
    pub policy: String,
    /// The annotation's value after the kind, or empty.
    #[serde(deserialize_with = "nullable")]
    pub value: String,
}

/// What the shadow policy set would have decided (never enforced).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowDetails {
    pub decision: bool,
    #[serde(deserialize_with = "nullable")]
    pub reason: String,
    pub policies: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub policy_version: String,
}

/// The details of a [`kinds::DECISION`] event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionDetails {
    #[serde(default, deserialize_with = "nullable")]
    pub decision_id: String,
    /// True only for an allow.
    pub decision: bool,
    /// The stable reason code.
    #[serde(default, deserialize_with = "nullable")]
    pub reason: String,
    #[serde(default)]
    pub subject: EntityRef,
    #[serde(default, deserialize_with = "nullable")]
    pub action: String,
    #[serde(default)]
    pub resource: EntityRef,
    /// The determining policies: the permits that allowed, or the forbids that denied.
    #[serde(default)]
    pub policies: Vec<String>,
    /// The enforced set's version (always written now; missing from the oldest events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// The effective classification, once read (its lowercase name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// The detail of an `invalid_mandate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// The approval asked for (approval required) or used (allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub obligations: Vec<ObligationDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl DecisionDetails {
    /// The event's `details`.
    pub fn into_details(self) -> Value {
        to_details(&self)
    }

    /// The decision `event` records; `None` for another kind or details that do not parse.
    pub fn of(event: &SealedEvent) -> Option<Self> {
        (event.kind == kinds::DECISION).then(|| Self::from_details(&event.details())).flatten()
    }

    /// Reads `details` already taken from a [`kinds::DECISION`] event.
    pub fn from_details(details: &Value) -> Option<Self> {
        Self::deserialize(details).ok()
    }
}

impl From<DecisionDetails> for Value {
    fn from(d: DecisionDetails) -> Value {
        d.into_details()
    }
}

/// The secret a gateway injected into a call: its name and version, never the value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecretRef {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    pub version: u32,
}

/// The details of a [`kinds::TOOL_CALL`] event: a call an enforcement gateway forwarded, or
/// refused to forward, and its outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolCallDetails {
    #[serde(deserialize_with = "nullable")]
    pub upstream: String,
    /// `mcp` or `http`.
    #[serde(deserialize_with = "nullable")]
    pub protocol: String,
    /// The MCP method, or the HTTP method.
    #[serde(deserialize_with = "nullable")]
    pub method: String,
    #[serde(deserialize_with = "nullable")]
    pub tool: String,
    #[serde(deserialize_with = "nullable")]
    pub action: String,
    /// The tool's kind: `read`, `write`, `execute`.
    #[serde(deserialize_with = "nullable")]
    pub kind: String,
    /// The decision's verdict (true only for an allow).
    pub decision: bool,
    #[serde(deserialize_with = "nullable")]
    pub reason: String,
    pub forwarded: bool,
    /// `ok`, `tool_error`, `jsonrpc_error`, `http_status`, `denied`, `upstream_timeout`, …
    #[serde(deserialize_with = "nullable")]
    pub result: String,
    pub latency_us: u64,
    pub response_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// The decision's evidence receipt: only a remote gateway has one, and it sends it apart
    /// from the details (it is never recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// The upstream's HTTP status, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i64>,
    /// The digest of the call's arguments (canonical JSON), when it had some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// The (redacted) arguments, when the upstream logs them.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub arguments: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The digest of an HTTP request's canonical view (what was decided and forwarded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_sha256: Option<String>,
    /// For a request of an MCP server's to the client (sampling, elicitation, roots): the
    /// decision of the call it happened in. Its own params' digest is `arguments_sha256`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within_decision_id: Option<String>,
    /// For a request of an MCP server's to the client: the digest of the client's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_sha256: Option<String>,
}

impl ToolCallDetails {
    /// The event's `details`.
    pub fn into_details(self) -> Value {
        to_details(&self)
    }

    /// The tool call `event` records; `None` for another kind or details that do not parse.
    pub fn of(event: &SealedEvent) -> Option<Self> {
        (event.kind == kinds::TOOL_CALL).then(|| Self::from_details(&event.details())).flatten()
    }

    /// Reads `details` already taken from a [`kinds::TOOL_CALL`] event.
    pub fn from_details(details: &Value) -> Option<Self> {
        Self::deserialize(details).ok()
    }
}

impl From<ToolCallDetails> for Value {
    fn from(d: ToolCallDetails) -> Value {
        d.into_details()
    }
}

fn to_details<T: Serialize>(details: &T) -> Value {
    // Strings, numbers, booleans and maps with string keys: serializing cannot fail.
    serde_json::to_value(details).unwrap_or(Value::Null)
}

/// A string that may be `null` (as empty).
fn nullable<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Option::<String>::deserialize(d).map(Option::unwrap_or_default)
}

/// A member that is there, `null` included (`Some(Null)`); a missing one is `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{ChainHead, NewEvent, canonical_json, seal};

    fn sealed(kind: &str, details: Value) -> SealedEvent {
        let e = NewEvent { ts_ms: 1, kind: kind.into(), actor: "a".into(), agent: None, task: None, details };
        seal(&ChainHead::genesis(), vec![e]).remove(0)
    }

    fn full_decision() -> DecisionDetails {
        DecisionDetails {
            decision_id: "dec_1".into(),
            decision: false,
            reason: "approval_required".into(),
            subject: EntityRef::new("agent", "support-bot"),
            action: "payments.refund".into(),
            resource: EntityRef::new("payment", "991"),
            policies: vec!["hold-refunds".into()],
            policy_version: Some("v7".into()),
            classification: Some("internal".into()),
            error_code: Some("expired".into()),
            approval_id: Some("apr_1".into()),
            obligations: vec![ObligationDetails { kind: "approval".into(), policy: "hold-refunds".into(), value: "required".into() }],
            shadow: Some(ShadowDetails {
                decision: true,
                reason: "allowed".into(),
                policies: vec!["allow-all".into()],
                policy_version: "v8".into(),
            }),
            request_id: Some("req_1".into()),
        }
    }

    /// What the `json!` writer produced for the same decision, built the way it was.
    fn old_decision() -> Value {
        let mut details = json!({
            "decision_id": "dec_1",
            "decision": false,
            "reason": "approval_required",
            "subject": { "type": "agent", "id": "support-bot" },
            "action": "payments.refund",
            "resource": { "type": "payment", "id": "991" },
            "policies": ["hold-refunds"],
        });
        let m = details.as_object_mut().unwrap();
        m.insert("policy_version".into(), json!("v7"));
        m.insert("classification".into(), json!("internal"));
        m.insert("error_code".into(), json!("expired"));
        m.insert("approval_id".into(), json!("apr_1"));
        m.insert("obligations".into(), json!([{ "type": "approval", "policy": "hold-refunds", "value": "required" }]));
        m.insert("shadow".into(), json!({ "decision": true, "reason": "allowed", "policies": ["allow-all"], "policy_version": "v8" }));
        m.insert("request_id".into(), json!("req_1"));
        details
    }

    #[test]
    fn a_decision_is_written_as_before_and_read_back() {
        let written = full_decision().into_details();
        assert_eq!(serde_json::to_string(&written).unwrap(), serde_json::to_string(&old_decision()).unwrap());
        assert_eq!(canonical_json(&written), canonical_json(&old_decision()));
        assert_eq!(DecisionDetails::of(&sealed(kinds::DECISION, old_decision())), Some(full_decision()));

        // The fewest members: no optional one is written.
        let bare = DecisionDetails {
            policy_version: None,
            classification: None,
            error_code: None,
            approval_id: None,
            obligations: Vec::new(),
            shadow: None,
            request_id: None,
            ..full_decision()
        };
        let mut old = old_decision();
        let m = old.as_object_mut().unwrap();
        for k in ["policy_version", "classification", "error_code", "approval_id", "obligations", "shadow", "request_id"] {
            m.remove(k);
        }
        assert_eq!(serde_json::to_string(&bare.clone().into_details()).unwrap(), serde_json::to_string(&old).unwrap());
        assert_eq!(DecisionDetails::of(&sealed(kinds::DECISION, old)), Some(bare));
    }

    #[test]
    fn an_old_decision_missing_members_still_reads() {
        // An early event: no subject, empty obligations, a shadow without reason or version.
        let old = json!({
            "decision_id": "d-1", "decision": true, "reason": "allowed", "action": "tickets.read",
            "resource": {"type": "ticket", "id": "42"}, "policies": ["allow-support-read"],
            "obligations": [], "shadow": {"decision": false, "policies": []}, "something_else": 1,
        });
        let d = DecisionDetails::of(&sealed(kinds::DECISION, old)).unwrap();
        assert!(d.decision);
        assert_eq!(d.subject, EntityRef::default());
        assert_eq!(d.resource, EntityRef::new("ticket", "42"));
        assert_eq!(d.policy_version, None);
        assert!(d.obligations.is_empty());
        assert_eq!(d.shadow, Some(ShadowDetails::default()));

        // Without its verdict it is not a decision record; nor is another kind's, or null.
        assert_eq!(DecisionDetails::of(&sealed(kinds::DECISION, json!({"action": "a"}))), None);
        assert_eq!(DecisionDetails::of(&sealed(kinds::DECISION, Value::Null)), None);
        assert_eq!(DecisionDetails::of(&sealed(kinds::TOOL_CALL, old_decision())), None);
    }

    fn full_call() -> ToolCallDetails {
        ToolCallDetails {
            upstream: "crm-tools".into(),
            protocol: "mcp".into(),
            method: "tools/call".into(),
            tool: "tickets.read".into(),
            action: "crm-tools.tickets.read".into(),
            kind: "read".into(),
            decision: true,
            reason: "allowed".into(),
            forwarded: true,
            result: "ok".into(),
            latency_us: 1800,
            response_bytes: 512,
            decision_id: Some("dec_1".into()),
            receipt: Some("rcpt".into()),
            status: Some(200),
            arguments_sha256: Some("ab".repeat(32)),
            arguments: Some(json!({"id": 42, "body": "[redacted]"})),
            secret: Some(SecretRef { name: "crm".into(), version: 3 }),
            request_id: Some("req_1".into()),
            request_sha256: Some("cd".repeat(32)),
            within_decision_id: None,
            answer_sha256: None,
        }
    }

    /// What the gateway's `json!` writer produced for the same call, built the way it was.
    fn old_call() -> Value {
        let mut d = json!({
            "upstream": "crm-tools",
            "protocol": "mcp",
            "method": "tools/call",
            "tool": "tickets.read",
            "action": "crm-tools.tickets.read",
            "kind": "read",
            "decision": true,
            "reason": "allowed",
            "forwarded": true,
            "result": "ok",
            "latency_us": 1800_u64,
            "response_bytes": 512_usize,
        });
        let m = d.as_object_mut().unwrap();
        m.insert("decision_id".into(), json!("dec_1"));
        m.insert("receipt".into(), json!("rcpt"));
        m.insert("status".into(), json!(200_i64));
        m.insert("arguments_sha256".into(), json!("ab".repeat(32)));
        m.insert("arguments".into(), json!({"id": 42, "body": "[redacted]"}));
        m.insert("secret".into(), json!({ "name": "crm", "version": 3_u32 }));
        m.insert("request_id".into(), json!("req_1"));
        m.insert("request_sha256".into(), json!("cd".repeat(32)));
        d
    }

    #[test]
    fn a_tool_call_is_written_as_before_and_read_back() {
        let written = full_call().into_details();
        assert_eq!(serde_json::to_string(&written).unwrap(), serde_json::to_string(&old_call()).unwrap());
        assert_eq!(ToolCallDetails::of(&sealed(kinds::TOOL_CALL, old_call())), Some(full_call()));

        let bare = ToolCallDetails {
            decision_id: None,
            receipt: None,
            status: None,
            arguments_sha256: None,
            arguments: None,
            secret: None,
            request_id: None,
            request_sha256: None,
            within_decision_id: None,
            answer_sha256: None,
            ..full_call()
        };
        let mut old = old_call();
        let m = old.as_object_mut().unwrap();
        for k in ["decision_id", "receipt", "status", "arguments_sha256", "arguments", "secret", "request_id", "request_sha256"] {
            m.remove(k);
        }
        assert_eq!(serde_json::to_string(&bare.clone().into_details()).unwrap(), serde_json::to_string(&old).unwrap());
        assert_eq!(ToolCallDetails::of(&sealed(kinds::TOOL_CALL, old)), Some(bare));

        // Arguments that were `null` stay there.
        let null_args = ToolCallDetails { arguments: Some(Value::Null), ..full_call() };
        let back = ToolCallDetails::from_details(&null_args.clone().into_details());
        assert_eq!(back, Some(null_args));
    }

    #[test]
    fn a_partial_tool_call_from_a_remote_gateway_reads() {
        // What a remote gateway may send, with what the control plane adds to it.
        let sent = json!({"upstream": "helpdesk", "tool": "tickets.read", "kind": null, "forwarded": true,
                          "latency_us": 1800, "claimed_task": "t-1"});
        let c = ToolCallDetails::of(&sealed(kinds::TOOL_CALL, sent)).unwrap();
        assert_eq!((c.upstream.as_str(), c.tool.as_str(), c.kind.as_str(), c.forwarded), ("helpdesk", "tickets.read", "", true));
        assert_eq!((c.protocol.as_str(), c.response_bytes, c.decision_id), ("", 0, None));
        assert_eq!(ToolCallDetails::of(&sealed(kinds::DECISION, old_call())), None);
        assert_eq!(ToolCallDetails::of(&sealed(kinds::TOOL_CALL, json!({"forwarded": "yes"}))), None);
    }
}
