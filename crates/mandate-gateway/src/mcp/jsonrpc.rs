//! JSON-RPC 2.0 as MCP uses it: one message per POST (batches were removed from MCP in
//! 2025-06-18 and are refused), requests with an `id`, notifications without, and responses.

use serde_json::{Map, Value, json};

/// Codes the gateway answers with. The standard ones, then MCP's and Mandate's.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The call was refused: by the intent, by policy, or because the task or agent may no
    /// longer act (`data.reason` says which; `data.decision_id` names the decision). The code
    /// of the AuthZEN MCP profile.
    pub const DENIED: i64 = -32001;
    /// The upstream could not be reached, timed out or answered something that is not MCP.
    pub const UPSTREAM_ERROR: i64 = -32002;
    /// No such session (2025-11-25): the client must initialise again.
    pub const SESSION_NOT_FOUND: i64 = -32003;
    /// A routing header (`Mcp-Method`, `Mcp-Name`) disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// The revision with sessions and `initialize`.
pub const LEGACY: &str = "2025-11-25";
/// The stateless revision with per-request `_meta` and `server/discover`.
pub const STATELESS: &str = "2026-07-28";
/// Revisions the gateway speaks to clients, oldest first.
pub const SUPPORTED: [&str; 5] = ["2024-11-05", "2025-03-26", "2025-06-18", LEGACY, STATELESS];

pub const META_PROTOCOL: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_CLIENT_CAPS: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// One incoming message.
#[derive(Debug, Clone)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Map<String, Value>>,
    },
    Notification {
        method: String,
        params: Option<Map<String, Value>>,
    },
    /// A client's answer to a server-initiated request (or an error it reports).
    Response(Value),
}

/// Why a body is not one MCP message: the JSON-RPC error to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub code: i64,
    pub message: String,
    pub id: Value,
}

impl Message {
    pub fn parse(body: &[u8]) -> Result<Message, Malformed> {
        let value: Value = serde_json::from_slice(body).map_err(|_| Malformed {
            code: code::PARSE_ERROR,
            message: "the body is not JSON".into(),
            id: Value::Null,
        })?;
        Message::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Message, Malformed> {
        let invalid = |message: &str, id: Value| Malformed { code: code::INVALID_REQUEST, message: message.to_owned(), id };
        let mut obj = match value {
            Value::Object(o) => o,
            Value::Array(_) => return Err(invalid("batch requests are not supported; send one message per request", Value::Null)),
            _ => return Err(invalid("a JSON-RPC message must be an object", Value::Null)),
        };
        let id = obj.get("id").cloned();
        let id_for_errors = id.clone().filter(valid_id).unwrap_or(Value::Null);
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("`jsonrpc` must be \"2.0\"", id_for_errors));
        }
        if let Some(id) = &id
            && !valid_id(id)
        {
            return Err(invalid("`id` must be a string or an integer", Value::Null));
        }
        match obj.remove("method") {
            Some(Value::String(method)) => {
                let params = match obj.remove("params") {
                    None | Some(Value::Null) => None,
                    Some(Value::Object(p)) => Some(p),
                    Some(_) => return Err(invalid("`params` must be an object", id_for_errors)),
                };
                Ok(match id {
                    Some(id) => Message::Request { id, method, params },
                    None => Message::Notification { method, params },
                })
            }
            Some(_) => Err(invalid("`method` must be a string", id_for_errors)),
            None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
                obj.insert("jsonrpc".into(), json!("2.0"));
                Ok(Message::Response(Value::Object(obj)))
            }
            None => Err(invalid("a message needs `method`, or `result` or `error`", id_for_errors)),
        }
    }
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.as_i64().is_some()
}

/// A JSON-RPC error response.
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut err = json!({ "code": code, "message": message });
    if let (Some(d), Value::Object(m)) = (data, &mut err) {
        m.insert("data".into(), d);
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err })
}

/// A JSON-RPC result response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// A request message.
pub fn request(id: &Value, method: &str, params: Option<&Map<String, Value>>) -> Value {
    let mut m = json!({ "jsonrpc": "2.0", "id": id, "method": method });
    if let (Some(p), Value::Object(o)) = (params, &mut m) {
        o.insert("params".into(), Value::Object(p.clone()));
    }
    m
}

/// A notification message.
pub fn notification(method: &str, params: Option<&Map<String, Value>>) -> Value {
    let mut m = json!({ "jsonrpc": "2.0", "method": method });
    if let (Some(p), Value::Object(o)) = (params, &mut m) {
        o.insert("params".into(), Value::Object(p.clone()));
    }
    m
}

/// The `_meta` protocol version of a request, if it carries one.
pub fn meta_protocol(params: Option<&Map<String, Value>>) -> Option<&str> {
    params?.get("_meta")?.get(META_PROTOCOL)?.as_str()
}

/// The value `Mcp-Name` must carry for a method, if it has one.
pub fn routing_name<'a>(method: &str, params: Option<&'a Map<String, Value>>) -> Option<&'a str> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return None,
    };
    params?.get(key)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Ok(Message::Request { method, .. }) if method == "tools/list"
        ));
        assert!(matches!(Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#), Ok(Message::Notification { .. })));
        assert!(matches!(Message::parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#), Ok(Message::Response(_))));
    }

    #[test]
    fn refuses_what_is_not_one_message() {
        let cases: [(&[u8], i64, &str); 7] = [
            (b"{", code::PARSE_ERROR, "not JSON"),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, code::INVALID_REQUEST, "batch"),
            (br#""ping""#, code::INVALID_REQUEST, "object"),
            (br#"{"id":1,"method":"ping"}"#, code::INVALID_REQUEST, "jsonrpc"),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, code::INVALID_REQUEST, "`id`"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#, code::INVALID_REQUEST, "`params`"),
            (br#"{"jsonrpc":"2.0","id":1}"#, code::INVALID_REQUEST, "needs `method`"),
        ];
        for (body, c, text) in cases {
            let e = Message::parse(body).unwrap_err();
            assert_eq!(e.code, c, "{}", String::from_utf8_lossy(body));
            assert!(e.message.contains(text), "{} → {}", String::from_utf8_lossy(body), e.message);
        }
    }

    #[test]
    fn errors_keep_a_valid_id() {
        let e = Message::parse(br#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.id, json!(7));
    }
}
