//! From a tool call or an API request to an AuthZEN request, and from the answer back to
//! what the gateway does. Also the evidence a call leaves: the arguments' digest, the
//! recorded (redacted) arguments, the outcome.

use mandate_audit::{NewEvent, SecretRef, ToolCallDetails, kinds};
use mandate_core::Classification;
use mandate_policy::ActionKind;
use mandate_proto::authzen::{Action, Entity, EvaluationRequest, EvaluationResponse};
use std::sync::Arc;

use mandate_token::VerifiedMandate;
use serde_json::{Map, Value, json};

use crate::config::ToolPolicy;

/// What is being asked for, in the gateway's terms: typed, so an embedded control plane
/// hands it to the decision core as it is ([`Ask::decision_request`]) and a remote one sends
/// it as AuthZEN ([`Ask::request`]); both carry the same members.
pub struct Ask<'a> {
    pub token: &'a str,
    /// Verified once, when the session or call began.
    pub mandate: &'a Arc<VerifiedMandate>,
    pub upstream: &'a str,
    /// `NAME.TOOL`, or the route's action.
    pub action: &'a str,
    pub kind: ActionKind,
    pub classification: Classification,
    /// (type, id)
    pub resource: (String, String),
    /// Extra context: `tool`, `method`, `path`, …
    pub context: Map<String, Value>,
    /// The call's arguments, when known (not for `tools/list`).
    pub arguments: Option<&'a Value>,
}

/// The members of a decision request besides the subject: action properties, resource
/// properties, context.
struct Members {
    action: Map<String, Value>,
    resource: Map<String, Value>,
    context: Map<String, Value>,
}

impl Ask<'_> {
    fn members(&self, environment: Option<&str>) -> Members {
        let mut action = Map::new();
        action.insert("kind".into(), json!(self.kind.as_str()));
        let mut resource = Map::new();
        resource.insert("classification".into(), json!(self.classification.as_str()));
        resource.insert("kind".into(), json!(self.kind.as_str()));
        resource.insert("upstream".into(), json!(self.upstream));
        let mut context = self.context.clone();
        context.insert("upstream".into(), json!(self.upstream));
        if let Some(env) = environment {
            context.insert("environment".into(), json!(env));
        }
        if let Some(args) = self.arguments {
            // Whole and canonical: the control plane binds approvals to this exact value and
            // shows it to the approver; policy sees it as Cedar can hold it.
            context.insert("arguments".into(), args.clone());
        }
        Members { action, resource, context }
    }

    /// The request as the decision core takes it, with the mandate already verified.
    pub fn decision_request(&self, environment: Option<&str>) -> mandate_pdp::Request {
        let m = self.members(environment);
        mandate_pdp::Request {
            subject: mandate_pdp::Subject::Agent {
                // The agent acting: for a delegated mandate the current actor, not `sub`.
                id: self.mandate.claims().actor_id().to_owned(),
                authority: mandate_pdp::Authority::Mandate(self.mandate.clone()),
            },
            action: self.action.to_owned(),
            action_properties: m.action,
            resource_type: self.resource.0.clone(),
            resource_id: self.resource.1.clone(),
            resource_properties: m.resource,
            context: m.context,
        }
    }

    /// The same request as AuthZEN, for a control plane over HTTP.
    pub fn request(&self, environment: Option<&str>) -> EvaluationRequest {
        let m = self.members(environment);
        let mut subject_props = Map::new();
        subject_props.insert("mandate".into(), json!(self.token));
        EvaluationRequest {
            subject: Some(Entity {
                kind: Some("agent".into()),
                id: Some(self.mandate.claims().actor_id().to_owned()),
                properties: Some(subject_props),
            }),
            action: Some(Action { name: Some(self.action.to_owned()), properties: Some(m.action) }),
            resource: Some(Entity { kind: Some(self.resource.0.clone()), id: Some(self.resource.1.clone()), properties: Some(m.resource) }),
            context: Some(m.context),
        }
    }
}

/// What the decision point said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub reason: String,
    pub decision_id: Option<String>,
    pub error_code: Option<String>,
    pub policies: Vec<String>,
    /// The approval asked for (held calls) or used (allowed after approval).
    pub approval_id: Option<String>,
    /// The evidence receipt a control plane gives a `pep` token with the decision: sent back
    /// with the call's `tool.call` event, never to the agent.
    pub receipt: Option<String>,
}

impl Outcome {
    /// A refusal that no decision point gave (the gateway's own, or a failure).
    pub fn refused(reason: &str) -> Self {
        Outcome {
            allowed: false,
            reason: reason.to_owned(),
            decision_id: None,
            error_code: None,
            policies: Vec::new(),
            approval_id: None,
            receipt: None,
        }
    }

    pub fn from_response(r: &EvaluationResponse) -> Self {
        let ctx = r.context.as_ref();
        let s = |k: &str| ctx.and_then(|c| c.get(k)).and_then(Value::as_str).map(str::to_owned);
        let reason = s("reason").unwrap_or_else(|| if r.decision { "allowed".into() } else { "denied".into() });
        Outcome {
            // An allow must say so in both places; anything else is a deny.
            allowed: r.decision && reason == "allowed",
            reason,
            decision_id: s("decision_id"),
            error_code: s("error_code"),
            approval_id: s("approval_id"),
            receipt: s("receipt"),
            policies: ctx
                .and_then(|c| c.get("policies"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }

    /// Allowed, or held for a person (and the tool may be held).
    pub fn visible(&self, approvable: bool) -> bool {
        self.allowed || (approvable && self.reason == "approval_required")
    }

    /// The `data` of the JSON-RPC error (or the HTTP error body) for a refusal.
    pub fn error_data(&self) -> Value {
        let mut d = json!({ "reason": self.reason });
        if let Value::Object(m) = &mut d {
            if let Some(id) = &self.decision_id {
                m.insert("decision_id".into(), json!(id));
            }
            if let Some(c) = &self.error_code {
                m.insert("error_code".into(), json!(c));
            }
            if let Some(a) = &self.approval_id {
                m.insert("approval_id".into(), json!(a));
            }
            if !self.policies.is_empty() {
                m.insert("policies".into(), json!(self.policies));
            }
        }
        d
    }

    pub fn message(&self) -> String {
        match self.reason.as_str() {
            "approval_required" => match &self.approval_id {
                Some(id) => format!(
                    "this call needs a person's approval: approval `{id}` is pending; make the identical call again once it is approved"
                ),
                None => "this call needs a person's approval".to_owned(),
            },
            "approval_denied" => match &self.approval_id {
                Some(id) => format!("a person denied this call (approval `{id}`)"),
                None => "a person denied this call".to_owned(),
            },
            "approval_expired" => "the approval request for this call expired; make the call again to ask anew".to_owned(),
            "approval_not_available" => "policy asks for approval, which this tool does not allow: refused".to_owned(),
            r => format!("denied: {r}"),
        }
    }
}

/// The effective action kind of a tool: the config's, raised (never lowered) by what the
/// upstream's annotations admit. `readOnlyHint: false` makes a read at least a write;
/// `destructiveHint: true` on a tool that is not read-only makes it an execute.
pub fn effective_kind(cfg: &ToolPolicy, read_only: Option<bool>, destructive: Option<bool>) -> ActionKind {
    let hinted = match (read_only, destructive) {
        (Some(true), _) => ActionKind::Read,
        (_, Some(true)) => ActionKind::Execute,
        (Some(false), _) => ActionKind::Write,
        _ => ActionKind::Read,
    };
    cfg.kind.max(hinted)
}

/// SHA-256 of the RFC 8785 form of the arguments, hex: the digest an approval of the call is
/// bound to.
pub fn arguments_digest(args: &Value) -> String {
    mandate_core::canonical::digest(args)
}

/// The arguments as recorded: configured fields (top-level, or dotted paths) redacted.
pub fn redacted(args: &Value, fields: &[String]) -> Value {
    let mut out = args.clone();
    for f in fields {
        let mut cur = &mut out;
        let parts: Vec<&str> = f.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let Value::Object(m) = cur else { break };
            if i + 1 == parts.len() {
                if let Some(slot) = m.get_mut(*p) {
                    *slot = json!("[redacted]");
                }
                break;
            }
            match m.get_mut(*p) {
                Some(next) => cur = next,
                None => break,
            }
        }
    }
    out
}

/// One `tool.call` evidence event.
/// Where [`CallRecord::event`] puts the decision's evidence receipt.
pub const RECEIPT: &str = "receipt";

pub struct CallRecord<'a> {
    pub mandate: Option<&'a VerifiedMandate>,
    pub upstream: &'a str,
    pub protocol: &'a str,
    /// The MCP method, or the HTTP method.
    pub method: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    pub kind: ActionKind,
    pub outcome: &'a Outcome,
    pub forwarded: bool,
    /// `ok`, `tool_error`, `jsonrpc_error`, `http_status`, `denied`, `upstream_timeout`, …
    pub result: &'a str,
    pub status: Option<i64>,
    pub arguments: Option<&'a Value>,
    pub log_arguments: bool,
    pub redact: &'a [String],
    pub latency_us: u64,
    pub response_bytes: usize,
    pub secret: Option<(&'a str, u32)>,
    pub request_id: Option<&'a str>,
    /// The digest of an HTTP request's canonical view (what was decided and forwarded).
    pub request_sha256: Option<&'a str>,
}

impl CallRecord<'_> {
    pub fn event(&self, now_ms: i64) -> NewEvent {
        let d = ToolCallDetails {
            upstream: self.upstream.to_owned(),
            protocol: self.protocol.to_owned(),
            method: self.method.to_owned(),
            tool: self.tool.to_owned(),
            action: self.action.to_owned(),
            kind: self.kind.as_str().to_owned(),
            decision: self.outcome.allowed,
            reason: self.outcome.reason.clone(),
            forwarded: self.forwarded,
            result: self.result.to_owned(),
            latency_us: self.latency_us,
            response_bytes: self.response_bytes as u64,
            decision_id: self.outcome.decision_id.clone(),
            // Only a remote gateway has one; it sends it apart from the details (under [`RECEIPT`]).
            receipt: self.outcome.receipt.clone(),
            status: self.status,
            arguments_sha256: self.arguments.map(arguments_digest),
            arguments: self.arguments.filter(|_| self.log_arguments).map(|args| redacted(args, self.redact)),
            secret: self.secret.map(|(name, version)| SecretRef { name: name.to_owned(), version }),
            request_id: self.request_id.map(str::to_owned),
            request_sha256: self.request_sha256.map(str::to_owned),
            within_decision_id: None,
            answer_sha256: None,
        }
        .into_details();
        NewEvent {
            ts_ms: now_ms,
            kind: kinds::TOOL_CALL.to_owned(),
            actor: self.mandate.map(|m| m.claims().actor_id().to_owned()).unwrap_or_else(|| "anonymous".to_owned()),
            agent: self.mandate.map(|m| m.claims().agent.clone()),
            task: self.mandate.map(|m| m.claims().task_id.clone()),
            details: d,
        }
    }
}

/// One `secret.echo_redacted` event: an upstream's answer held the secret injected into its
/// request (in some encoding) and the gateway replaced it. Never the value.
pub struct EchoRecord<'a> {
    pub mandate: Option<&'a VerifiedMandate>,
    pub upstream: &'a str,
    pub protocol: &'a str,
    /// The MCP method, or the HTTP method.
    pub method: &'a str,
    /// The tool, prompt, resource or HTTP path, when the answer was to one.
    pub tool: Option<&'a str>,
    pub decision_id: Option<&'a str>,
    /// The decision's evidence receipt (remote gateways send it back; never recorded).
    pub receipt: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The secret's name and version.
    pub secret: (&'a str, u32),
    /// Where in the answer: `result`, `error`, `body`, `headers`, `stream`, `description`.
    pub place: &'a str,
}

impl EchoRecord<'_> {
    pub fn event(&self, found: &crate::scrub::Found, now_ms: i64) -> NewEvent {
        let mut d = json!({
            "secret": { "name": self.secret.0, "version": self.secret.1 },
            "upstream": self.upstream,
            "protocol": self.protocol,
            "method": self.method,
            "place": self.place,
            "matches": found.matches,
            "encodings": found.encoding_names(),
        });
        if let Value::Object(m) = &mut d {
            for (k, v) in [("tool", self.tool), ("decision_id", self.decision_id), ("request_id", self.request_id), (RECEIPT, self.receipt)]
            {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
        }
        NewEvent {
            ts_ms: now_ms,
            kind: kinds::SECRET_ECHO_REDACTED.to_owned(),
            actor: self.mandate.map(|m| m.claims().actor_id().to_owned()).unwrap_or_else(|| "anonymous".to_owned()),
            agent: self.mandate.map(|m| m.claims().agent.clone()),
            task: self.mandate.map(|m| m.claims().task_id.clone()),
            details: d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_only_tighten() {
        let read = ToolPolicy { kind: ActionKind::Read, ..ToolPolicy::unknown() };
        assert_eq!(effective_kind(&read, Some(true), None), ActionKind::Read);
        assert_eq!(effective_kind(&read, Some(false), None), ActionKind::Write);
        assert_eq!(effective_kind(&read, None, Some(true)), ActionKind::Execute);
        assert_eq!(effective_kind(&read, None, None), ActionKind::Read);
        let exec = ToolPolicy::unknown();
        assert_eq!(effective_kind(&exec, Some(true), Some(false)), ActionKind::Execute, "a hint never loosens the config");
    }

    #[test]
    fn digest_is_over_canonical_json() {
        assert_eq!(arguments_digest(&json!({"b": 1, "a": [1, 2]})), arguments_digest(&json!({"a": [1, 2], "b": 1})));
        assert_ne!(arguments_digest(&json!({"a": 1})), arguments_digest(&json!({"a": 2})));
    }

    #[test]
    fn redaction_reaches_nested_fields() {
        let r = redacted(&json!({"to": "a@b", "body": "secret", "meta": {"token": "t", "n": 1}}), &["body".into(), "meta.token".into()]);
        assert_eq!(r, json!({"to": "a@b", "body": "[redacted]", "meta": {"token": "[redacted]", "n": 1}}));
    }

    #[test]
    fn an_allow_needs_both_the_flag_and_the_reason() {
        let r = EvaluationResponse { decision: true, context: Some(json!({"reason": "approval_required", "decision_id": "dec_1"})) };
        let o = Outcome::from_response(&r);
        assert!(!o.allowed);
        assert!(o.visible(true));
        assert!(!o.visible(false));
        let r = EvaluationResponse { decision: true, context: Some(json!({"reason": "allowed"})) };
        assert!(Outcome::from_response(&r).allowed);
    }
}
