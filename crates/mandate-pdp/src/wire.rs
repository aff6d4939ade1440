//! From an AuthZEN evaluation request (the wire form, already deserialized) to the core's
//! typed [`Request`], once.

use std::sync::Arc;

use mandate_proto::authzen::EvaluationRequest;
use mandate_token::{TokenError, VerifiedMandate};
use serde_json::Value;

use crate::{Authority, Request, Subject};

/// The typed request of an AuthZEN evaluation: AuthZEN's required members present (the error
/// is the spec's 400, a message naming the missing member), and an agent's mandate
/// (`subject.properties.mandate`) verified by `verify` — the caller's keys and cache.
pub fn from_authzen(
    req: EvaluationRequest,
    verify: impl FnOnce(&str) -> Result<Arc<VerifiedMandate>, TokenError>,
) -> Result<Request, String> {
    let subject = req.subject.ok_or("`subject` is required")?;
    let action = req.action.ok_or("`action` is required")?;
    let resource = req.resource.ok_or("`resource` is required")?;
    let required = |v: Option<String>, what: &str| -> Result<String, String> {
        match v {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(format!("`{what}` is required")),
        }
    };
    let subject_type = required(subject.kind, "subject.type")?;
    let subject_id = required(subject.id, "subject.id")?;
    let action_name = required(action.name, "action.name")?;
    let resource_type = required(resource.kind, "resource.type")?;
    let resource_id = required(resource.id, "resource.id")?;
    let subject = if subject_type == "agent" {
        let authority = match subject.properties.as_ref().and_then(|p| p.get("mandate")).and_then(Value::as_str) {
            None => Authority::Missing,
            Some(token) => match verify(token) {
                Ok(m) => Authority::Mandate(m),
                Err(e) => Authority::Invalid { code: e.code() },
            },
        };
        Subject::Agent { id: subject_id, authority }
    } else {
        Subject::Other { kind: subject_type, id: subject_id, properties: subject.properties.unwrap_or_default() }
    };
    Ok(Request {
        subject,
        action: action_name,
        action_properties: action.properties.unwrap_or_default(),
        resource_type,
        resource_id,
        resource_properties: resource.properties.unwrap_or_default(),
        context: req.context.unwrap_or_default(),
    })
}
