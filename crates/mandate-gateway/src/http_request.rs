//! The one reading of an HTTP API request: parsed once, normalized once, decided on that and
//! forwarded as that.
//!
//! A request arrives as a raw path, a raw query, headers and a body. [`Parsed::parse`] reads
//! what does not depend on the route (the path's segments, the query's pairs, method
//! overrides); the route table is matched on the decoded segments; [`Parsed::finish`] applies
//! the matched route's rules and yields a [`Normalized`] request. Everything upstream of that
//! point is refused with a stable code ([`RequestError::code`]) rather than guessed at, and
//! everything after it is a function of the `Normalized` value: the decision context, the
//! canonical view and its digest, and the upstream URL, headers and body. The raw URI is never
//! forwarded.
//!
//! One encoding is written for every path segment and query component: ASCII letters, digits
//! and `-._~` as they are, every other byte (UTF-8) as `%XX` with uppercase hex, a space as
//! `%20` (never `+`). So `/invoices/%31` and `/invoices/1` are one request, and a `;`, `+` or
//! `&` inside a value is data to every upstream.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use mandate_core::canonical::{Canonical, Limits};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::Route;

/// The form field, JSON member and query key that frameworks read as the method.
pub const METHOD_FIELD: &str = "_method";

/// Headers that frameworks read as the method to execute instead of the request's own.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// Headers that some servers read as the path to route instead of the request's own.
const PATH_OVERRIDE_HEADERS: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Client headers never forwarded: the agent's credentials, hop-by-hop headers, and what the
/// gateway's own connection to the upstream sets.
const NEVER_FORWARDED: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// How large the canonical view may be (the body is in it by digest only).
const VIEW_LIMITS: Limits = Limits { max_depth: 4, max_bytes: 1 << 20 };

/// Why a request is refused before it is decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the path holds a `.` or `..` segment (in some spelling): refused")]
    DotSegment,
    #[error("the path holds an encoded `/` or `\\` (`%2F`, `%5C`), which upstreams read differently: refused")]
    EncodedSlash,
    #[error("the path holds a `\\`, which some upstreams read as `/`: refused")]
    Backslash,
    #[error("the path holds an empty segment (`//`): refused")]
    EmptySegment,
    #[error("the path is not valid percent-encoded UTF-8")]
    PathEncoding,
    #[error("the path holds a control character")]
    ControlCharacter,
    #[error("method overrides are refused: `{0}`")]
    MethodOverride(String),
    #[error("path overrides are refused: `{0}`")]
    PathOverride(String),
    #[error("the query is not valid percent-encoded UTF-8")]
    QueryEncoding,
    #[error("the query key `{0}` appears more than once and the route does not take it as a list")]
    QueryKeyRepeated(String),
    #[error("the header `{0}` appears more than once")]
    HeaderRepeated(String),
    #[error("the header `{0}` is not visible ASCII")]
    HeaderValue(String),
    #[error("bodies with `Content-Encoding` `{0}` are refused: the gateway decides on the bytes the upstream reads")]
    ContentEncoding(String),
    #[error("the request is too large to decide on")]
    TooLarge,
    #[error("the JSON body names the member `{0}` twice in one object, which upstreams read in different ways: refused")]
    JsonMemberRepeated(String),
}

impl RequestError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::DotSegment => "path_dot_segment",
            RequestError::EncodedSlash => "encoded_slash_refused",
            RequestError::Backslash => "backslash_refused",
            RequestError::EmptySegment => "path_empty_segment",
            RequestError::PathEncoding => "path_bad_encoding",
            RequestError::ControlCharacter => "path_control_character",
            RequestError::MethodOverride(_) => "method_override_refused",
            RequestError::PathOverride(_) => "path_override_refused",
            RequestError::QueryEncoding => "query_bad_encoding",
            RequestError::QueryKeyRepeated(_) => "query_key_repeated",
            RequestError::HeaderRepeated(_) => "header_repeated",
            RequestError::HeaderValue(_) => "header_bad_value",
            RequestError::ContentEncoding(_) => "content_encoding_refused",
            RequestError::TooLarge => "request_too_large",
            RequestError::JsonMemberRepeated(_) => "json_member_repeated",
        }
    }
}

/// One decoded path segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSegment {
    /// The segment decoded (valid UTF-8, no control characters, never `.` or `..`).
    pub value: String,
    /// Whether it held an encoded `/` or `\` (only a `decode_slashes` route takes it).
    pub separator: bool,
}

/// What a request says, read once, before a route is chosen.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// Uppercase.
    pub method: String,
    pub segments: Vec<PathSegment>,
    /// Every query pair, decoded, in order.
    pub query: Vec<(String, String)>,
    headers: HeaderMap,
    content_type: Option<String>,
    body: Bytes,
}

/// The request as decided and as forwarded.
#[derive(Debug, Clone)]
pub struct Normalized {
    pub upstream: String,
    /// Uppercase.
    pub method: String,
    /// Decoded segments.
    pub segments: Vec<String>,
    /// The path in the gateway's one encoding, starting with `/`.
    pub path: String,
    /// Every query pair, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The query in the gateway's one encoding (empty: no query).
    pub query_string: String,
    /// The client headers forwarded (the brokered one is added later).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The route's declared headers that were sent, in the route's order.
    pub declared: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub body_sha256: String,
    view: Canonical,
}

impl Parsed {
    /// Reads a request: `raw_path` still percent-encoded, starting with `/`; `raw_query`
    /// without the `?`.
    pub fn parse(method: &str, raw_path: &str, raw_query: Option<&str>, headers: &HeaderMap, body: Bytes) -> Result<Parsed, RequestError> {
        for name in headers.keys() {
            let folded = fold(name.as_str());
            if METHOD_OVERRIDE_HEADERS.contains(&folded.as_str()) {
                return Err(RequestError::MethodOverride(name.as_str().to_owned()));
            }
            if PATH_OVERRIDE_HEADERS.contains(&folded.as_str()) {
                return Err(RequestError::PathOverride(name.as_str().to_owned()));
            }
        }
        let segments = parse_path(raw_path)?;
        let query = match raw_query {
            Some(q) => parse_query(q)?,
            None => Vec::new(),
        };
        if let Some((k, _)) = query.iter().find(|(k, _)| k.eq_ignore_ascii_case(METHOD_FIELD)) {
            return Err(RequestError::MethodOverride(format!("?{k}")));
        }
        let content_type = single_header(headers, "content-type")?;
        if let Some(enc) = single_header(headers, "content-encoding")?
            && !enc.trim().eq_ignore_ascii_case("identity")
        {
            return Err(RequestError::ContentEncoding(mandate_core::clip(&enc).to_owned()));
        }
        if let Some(field) = body_method_field(content_type.as_deref(), &body) {
            return Err(RequestError::MethodOverride(field));
        }
        // The body goes upstream as it is: a JSON body must have one reading, whatever its
        // content type says (the decision's `arguments` keep serde's last value, many
        // frameworks the first).
        if let Some(member) = mandate_core::canonical::repeated_member(&body) {
            return Err(RequestError::JsonMemberRepeated(member));
        }
        Ok(Parsed { method: method.to_ascii_uppercase(), segments, query, headers: headers.clone(), content_type, body })
    }

    /// The decoded segments, what routes are matched against.
    pub fn segment_values(&self) -> Vec<String> {
        self.segments.iter().map(|s| s.value.clone()).collect()
    }

    /// The path as the gateway writes it (for evidence of a refused request, too).
    pub fn path(&self) -> String {
        encode_path(self.segments.iter().map(|s| s.value.as_str()))
    }

    /// Applies the matched route's rules: encoded separators, repeated query keys, the
    /// headers that matter, the headers forwarded. `injected`: the header the gateway sets.
    pub fn finish(self, upstream: &str, route: &Route, injected: Option<&str>) -> Result<Normalized, RequestError> {
        if !route.decode_slashes && self.segments.iter().any(|s| s.separator) {
            return Err(RequestError::EncodedSlash);
        }
        for (i, (k, _)) in self.query.iter().enumerate() {
            if !route.list_params.contains(k) && self.query.iter().skip(i + 1).any(|(o, _)| o == k) {
                return Err(RequestError::QueryKeyRepeated(mandate_core::clip(k).to_owned()));
            }
        }
        let (headers, declared) = forwarded_headers(&self.headers, &route.headers, injected)?;
        let path = self.path();
        let segments = self.segment_values();
        let query_string = encode_query(&self.query);
        let body_sha256 = hex::encode(Sha256::digest(&self.body));
        let view = json!({
            "upstream": upstream,
            "method": self.method,
            "path": path,
            "segments": segments,
            "query": self.query.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "body_sha256": body_sha256,
            "body_bytes": self.body.len(),
            "content_type": self.content_type,
            "headers": declared.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        });
        let view = Canonical::new(&view, VIEW_LIMITS).map_err(|_| RequestError::TooLarge)?;
        Ok(Normalized {
            upstream: upstream.to_owned(),
            method: self.method,
            segments,
            path,
            query: self.query,
            query_string,
            headers,
            declared,
            content_type: self.content_type,
            body: self.body,
            body_sha256,
            view,
        })
    }
}

impl Normalized {
    /// The canonical view: upstream, method, path and segments, every query pair in order,
    /// the body's SHA-256, length and content type, and the declared headers.
    pub fn view(&self) -> &Value {
        self.view.value()
    }

    /// SHA-256 of the view's RFC 8785 text.
    pub fn digest(&self) -> &str {
        self.view.digest()
    }

    /// The decision context: `method`, `path`, `path_params`, `query` (a key of
    /// `list_params` as a list), `body_sha256`, `body_bytes`, `content_type`, `headers` and
    /// `request_sha256` (the view's digest).
    pub fn context(&self, params: &[(String, String)], list_params: &[String]) -> Map<String, Value> {
        let mut c = Map::new();
        c.insert("protocol".into(), json!("http"));
        c.insert("method".into(), json!(self.method));
        c.insert("path".into(), json!(self.path));
        c.insert("path_params".into(), Value::Object(params.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
        let mut query = Map::new();
        for (k, v) in &self.query {
            if list_params.contains(k) {
                match query.entry(k.clone()).or_insert_with(|| json!([])) {
                    Value::Array(a) => a.push(json!(v)),
                    other => *other = json!([v]),
                }
            } else {
                query.insert(k.clone(), json!(v));
            }
        }
        c.insert("query".into(), Value::Object(query));
        c.insert("body_sha256".into(), json!(self.body_sha256));
        c.insert("body_bytes".into(), json!(self.body.len()));
        if let Some(ct) = &self.content_type {
            c.insert("content_type".into(), json!(ct));
        }
        c.insert("headers".into(), Value::Object(self.declared.iter().map(|(k, v)| (k.clone(), json!(v))).collect()));
        c.insert("request_sha256".into(), json!(self.digest()));
        c
    }

    /// The upstream URL: `base_url` (no trailing `/`), the normalized path and query; `None`
    /// if a URL parser would read it otherwise.
    pub fn target(&self, base_url: &str) -> Option<url::Url> {
        let base = url::Url::parse(base_url).ok()?;
        let text = if self.query_string.is_empty() {
            format!("{base_url}{}", self.path)
        } else {
            format!("{base_url}{}?{}", self.path, self.query_string)
        };
        let url = url::Url::parse(&text).ok()?;
        let expected = format!("{}{}", base.path().trim_end_matches('/'), self.path);
        let query = (!self.query_string.is_empty()).then_some(self.query_string.as_str());
        (url.path() == expected
            && url.query() == query
            && url.host() == base.host()
            && url.port_or_known_default() == base.port_or_known_default())
        .then_some(url)
    }
}

/// A header name as CGI-style servers read it: lowercase, `_` as `-`.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Whether a (folded) header name is one the gateway never forwards from a client.
pub fn never_forwarded(folded: &str) -> bool {
    NEVER_FORWARDED.contains(&folded)
        || folded == "forwarded"
        || folded.starts_with("x-forwarded-")
        || folded == "x-real-ip"
        || METHOD_OVERRIDE_HEADERS.contains(&folded)
        || PATH_OVERRIDE_HEADERS.contains(&folded)
}

/// Splits and decodes a raw path (starting with `/`; `/` alone is no segment). A trailing
/// `/` is an empty last segment; any other empty segment is refused.
pub fn parse_path(raw: &str) -> Result<Vec<PathSegment>, RequestError> {
    let rest = raw.strip_prefix('/').unwrap_or(raw);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len().saturating_sub(1);
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() && i != last {
            return Err(RequestError::EmptySegment);
        }
        if part.contains('\\') {
            return Err(RequestError::Backslash);
        }
        let bytes = percent_decode(part.as_bytes(), false).ok_or(RequestError::PathEncoding)?;
        let value = String::from_utf8(bytes).map_err(|_| RequestError::PathEncoding)?;
        if value.chars().any(char::is_control) {
            return Err(RequestError::ControlCharacter);
        }
        let separator = value.contains(['/', '\\']);
        // A `.` or `..` in any spelling, also behind an encoded separator.
        if value.split(['/', '\\']).any(|s| s == "." || s == "..") {
            return Err(RequestError::DotSegment);
        }
        if separator && value.split(['/', '\\']).any(str::is_empty) {
            return Err(RequestError::EmptySegment);
        }
        out.push(PathSegment { value, separator });
    }
    Ok(out)
}

/// Splits a raw query on `&` (empty pieces skipped) and decodes each key and value (`+` is a
/// space); a piece without `=` has an empty value.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, RequestError> {
    let mut out = Vec::new();
    for piece in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let decode =
            |s: &str| percent_decode(s.as_bytes(), true).and_then(|b| String::from_utf8(b).ok()).ok_or(RequestError::QueryEncoding);
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// Strict `%XX` decoding (a `%` not followed by two hex digits is `None`); `plus`: `+` is a
/// space.
fn percent_decode(s: &[u8], plus: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'%' => {
                let hi = s.get(i + 1).and_then(|h| (*h as char).to_digit(16))?;
                let lo = s.get(i + 2).and_then(|h| (*h as char).to_digit(16))?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The gateway's one encoding of a path segment or query component.
pub fn encode_component(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
            out.push(char::from(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0')));
        }
    }
}

fn encode_path<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        encode_component(s, &mut out);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn encode_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(k, &mut out);
        out.push('=');
        encode_component(v, &mut out);
    }
    out
}

/// The value of a header sent at most once; refused if repeated or not visible ASCII.
fn single_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, RequestError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(RequestError::HeaderRepeated(name.to_owned()));
    }
    first.to_str().map(|s| Some(s.to_owned())).map_err(|_| RequestError::HeaderValue(name.to_owned()))
}

/// The media type of a `Content-Type`, lowercase, without parameters.
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// A `_method` in the body, as a framework would read it: a top-level member of a JSON
/// object (whatever the content type), a field of a urlencoded form, or a part of a
/// multipart form (any part whose headers mention `_method`).
fn body_method_field(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body)
        && let Some(k) = m.keys().find(|k| k.eq_ignore_ascii_case(METHOD_FIELD))
    {
        return Some(format!("body `{}`", mandate_core::clip(k)));
    }
    let media = content_type.map(media_type).unwrap_or_default();
    if media == "application/x-www-form-urlencoded"
        && url::form_urlencoded::parse(body).any(|(k, _)| k.trim().eq_ignore_ascii_case(METHOD_FIELD))
    {
        return Some("form field `_method`".to_owned());
    }
    if media == "multipart/form-data" {
        // Conservative: any mention of the field in any part's header block (quoted,
        // unquoted, RFC 2231 encoded), or in the body at all when the boundary is unclear.
        let lower = body.to_ascii_lowercase();
        let mentions = |hay: &[u8]| contains(hay, b"_method") || contains(hay, b"%5fmethod");
        let boundary = content_type.and_then(multipart_boundary);
        let hit = match boundary {
            None => mentions(&lower),
            Some(b) => {
                let delim = [b"--".as_slice(), b.to_ascii_lowercase().as_bytes()].concat();
                split_on(&lower, &delim).skip(1).any(|part| {
                    let end = find(part, b"\r\n\r\n").or_else(|| find(part, b"\n\n")).unwrap_or(part.len());
                    mentions(part.get(..end).unwrap_or(part))
                })
            }
        };
        if hit {
            return Some("multipart field `_method`".to_owned());
        }
    }
    None
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned()).filter(|b| !b.is_empty())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn split_on<'a>(hay: &'a [u8], delim: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(hay);
    std::iter::from_fn(move || {
        let r = rest?;
        match find(r, delim) {
            Some(i) => {
                rest = r.get(i + delim.len()..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Declared headers that were sent: (lowercase name, value).
type Declared = Vec<(String, String)>;

/// The client headers to forward, and the route's declared headers that were sent.
///
/// Dropped: a header whose folded name (lowercase, `_` as `-`) is the injected header or one
/// the gateway never forwards (credentials, hop-by-hop, `host`, `content-length`, `expect`,
/// `forwarded`, `x-forwarded-*`, `x-real-ip`), or is named in `Connection`; and a header
/// spelled with `_` whose folded name is a declared header or another header sent.
fn forwarded_headers(
    headers: &HeaderMap,
    declared_names: &[String],
    injected: Option<&str>,
) -> Result<(Vec<(HeaderName, HeaderValue)>, Declared), RequestError> {
    let injected = injected.map(fold);
    let connection: Vec<String> = headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| fold(t.trim()))
        .filter(|t| !t.is_empty())
        .collect();
    let folded_plain: Vec<String> = headers.keys().filter(|k| !k.as_str().contains('_')).map(|k| fold(k.as_str())).collect();
    let mut out = Vec::new();
    for (name, value) in headers {
        let raw = name.as_str();
        let folded = fold(raw);
        let underscored = raw.contains('_');
        let dropped = never_forwarded(&folded)
            || injected.as_deref() == Some(folded.as_str())
            || connection.contains(&folded)
            || (underscored && (declared_names.contains(&folded) || folded_plain.contains(&folded)));
        if !dropped {
            out.push((name.clone(), value.clone()));
        }
    }
    let mut declared = Vec::new();
    for d in declared_names {
        if let Some(v) = single_header(headers, d)? {
            declared.push((d.clone(), v));
        }
    }
    Ok((out, declared))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayFile;
    use proptest::prelude::*;

    fn route(extra: &str) -> Route {
        let text = format!(
            r#"
            [[upstream]]
            name = "api"
            type = "http"
            url = "http://127.0.0.1:9"
            [[upstream.routes]]
            method = "*"
            path = "/files/{{*rest}}"
            action = "api.files"
            kind = "read"
            classification = "internal"
            {extra}
            "#
        );
        let mut cfg = GatewayFile::from_toml(&text).unwrap().check().unwrap();
        cfg.upstreams.remove(0).routes.remove(0)
    }

    fn norm(
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
        r: &Route,
    ) -> Result<Normalized, RequestError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        Parsed::parse(method, path, query, &h, Bytes::copy_from_slice(body))?.finish("api", r, Some("X-Api-Key"))
    }

    fn code(r: Result<Normalized, RequestError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code())
    }

    #[test]
    fn a_json_body_with_a_repeated_member_is_refused() {
        let r = route("");
        let ct = [("content-type", "text/plain")];
        assert_eq!(code(norm("POST", "/files/1", None, &ct, br#"{"amount":1,"amount":1000}"#, &r)), "json_member_repeated");
        assert_eq!(code(norm("POST", "/files/1", None, &[], br#"{"to":{"a":1,"\u0061":2}}"#, &r)), "json_member_repeated");
        assert_eq!(code(norm("POST", "/files/1", None, &[], br#"{"a":1,"b":{"a":2}}"#, &r)), "ok");
    }

    #[test]
    fn spellings_of_one_path_are_one_request() {
        let r = route("");
        let a = norm("get", "/files/%31/%7Ex", None, &[], b"", &r).unwrap();
        let b = norm("GET", "/files/1/~x", None, &[], b"", &r).unwrap();
        assert_eq!((a.path.as_str(), a.method.as_str()), ("/files/1/~x", "GET"));
        assert_eq!(a.digest(), b.digest());
        let c = norm("GET", "/files/a%3bb/%c3%a9", None, &[], b"", &r).unwrap();
        assert_eq!(c.path, "/files/a%3Bb/%C3%A9");
        assert_eq!(c.segments, ["files", "a;b", "é"]);
    }

    #[test]
    fn what_upstreams_read_otherwise_is_refused() {
        let r = route("");
        for (path, expected) in [
            ("/files/a%2Fb", "encoded_slash_refused"),
            ("/files/a%2fb", "encoded_slash_refused"),
            ("/files/a%5Cb", "encoded_slash_refused"),
            ("/files/a\\b", "backslash_refused"),
            ("/files/..", "path_dot_segment"),
            ("/files/.", "path_dot_segment"),
            ("/files/%2e%2E", "path_dot_segment"),
            ("/files/.%2E", "path_dot_segment"),
            ("/files/a%2F..%2Fb", "path_dot_segment"),
            ("/files//a", "path_empty_segment"),
            ("//files", "path_empty_segment"),
            ("/files/%ZZ", "path_bad_encoding"),
            ("/files/%C3", "path_bad_encoding"),
            ("/files/a%", "path_bad_encoding"),
            ("/files/a%00", "path_control_character"),
            ("/files/a%0Ab", "path_control_character"),
            ("/files/a%C2%85", "path_control_character"),
        ] {
            assert_eq!(code(norm("GET", path, None, &[], b"", &r)), expected, "{path}");
        }
        let slashes = route("decode_slashes = true");
        let n = norm("GET", "/files/a%2Fb", None, &[], b"", &slashes).unwrap();
        assert_eq!((n.path.as_str(), n.segments.as_slice()), ("/files/a%2Fb", ["files".to_owned(), "a/b".to_owned()].as_slice()));
        assert_eq!(code(norm("GET", "/files/a%2F..%2Fb", None, &[], b"", &slashes)), "path_dot_segment");
        assert_eq!(code(norm("GET", "/files/a%2F%2Fb", None, &[], b"", &slashes)), "path_empty_segment");
        assert_eq!(norm("GET", "/files/a/", None, &[], b"", &r).unwrap().path, "/files/a/", "a trailing slash is kept");
    }

    #[test]
    fn method_overrides_are_refused() {
        let r = route("");
        for h in ["X-HTTP-Method-Override", "x-http-method", "X-Method-Override", "X_HTTP_Method_Override"] {
            assert_eq!(code(norm("POST", "/files/a", None, &[(h, "DELETE")], b"", &r)), "method_override_refused", "{h}");
        }
        for q in ["_method=DELETE", "a=1&%5Fmethod=DELETE", "_METHOD=put"] {
            assert_eq!(code(norm("POST", "/files/a", Some(q), &[], b"", &r)), "method_override_refused", "{q}");
        }
        let form = [("content-type", "application/x-www-form-urlencoded")];
        assert_eq!(code(norm("POST", "/files/a", None, &form, b"a=1&_method=DELETE", &r)), "method_override_refused");
        assert_eq!(code(norm("POST", "/files/a", None, &form, b"a=1&%5Fmethod=DELETE", &r)), "method_override_refused");
        assert_eq!(code(norm("POST", "/files/a", None, &[], br#"{"a":1,"_method":"DELETE"}"#, &r)), "method_override_refused");
        let multipart = [("content-type", "multipart/form-data; boundary=XyZ")];
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n";
        assert_eq!(code(norm("POST", "/files/a", None, &multipart, body, &r)), "method_override_refused");
        let fine = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nsee _method\r\n--XyZ--\r\n";
        assert_eq!(code(norm("POST", "/files/a", None, &multipart, fine, &r)), "ok", "a value mentioning it is data");
        assert_eq!(code(norm("POST", "/files/a", None, &[("x-original-url", "/admin")], b"", &r)), "path_override_refused");
        assert_eq!(code(norm("POST", "/files/a", None, &[("content-encoding", "gzip")], b"x", &r)), "content_encoding_refused");
    }

    #[test]
    fn queries_are_decoded_once_and_written_once() {
        let r = route(r#"list_params = ["tag"]"#);
        assert_eq!(code(norm("GET", "/files/a", Some("account=1&account=2"), &[], b"", &r)), "query_key_repeated");
        assert_eq!(code(norm("GET", "/files/a", Some("a=1&%61=2"), &[], b"", &r)), "query_key_repeated");
        assert_eq!(code(norm("GET", "/files/a", Some("a=%ZZ"), &[], b"", &r)), "query_bad_encoding");
        assert_eq!(code(norm("GET", "/files/a", Some("a=%FF"), &[], b"", &r)), "query_bad_encoding");
        let n = norm("GET", "/files/a", Some("tag=a&q=x+y%2Bz;w&tag=b&&flag"), &[], b"", &r).unwrap();
        assert_eq!(n.query_string, "tag=a&q=x%20y%2Bz%3Bw&tag=b&flag=");
        let ctx = n.context(&[], &r.list_params);
        assert_eq!(ctx["query"], json!({"tag": ["a", "b"], "q": "x y+z;w", "flag": ""}));
        let once = norm("GET", "/files/a", Some("tag=a"), &[], b"", &r).unwrap();
        assert_eq!(once.context(&[], &r.list_params)["query"], json!({"tag": ["a"]}), "a list is a list even of one");
    }

    #[test]
    fn headers_that_servers_fold_together_are_dropped() {
        let r = route(r#"headers = ["x-tenant"]"#);
        let n = norm(
            "GET",
            "/files/a",
            None,
            &[
                ("X_Api_Key", "agent"),
                ("x-api-key", "agent"),
                ("authorization", "Bearer m"),
                ("proxy_authorization", "x"),
                ("x_tenant", "evil"),
                ("x-tenant", "acme"),
                ("connection", "x-secret-hop"),
                ("x-secret-hop", "1"),
                ("x-forwarded-for", "1.2.3.4"),
                ("forwarded", "for=1.2.3.4"),
                ("x-trace", "t"),
                ("x_other", "kept"),
            ],
            b"",
            &r,
        )
        .unwrap();
        let names: Vec<&str> = n.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["x-tenant", "x-trace", "x_other"]);
        assert_eq!(n.declared, [("x-tenant".to_owned(), "acme".to_owned())]);
        assert_eq!(n.context(&[], &[])["headers"], json!({"x-tenant": "acme"}));
        let twice = norm("GET", "/files/a", None, &[("x-tenant", "a"), ("x-tenant", "b")], b"", &r);
        assert_eq!(code(twice), "header_repeated");
    }

    #[test]
    fn the_view_holds_every_part_the_upstream_reads() {
        let r = route(r#"headers = ["x-tenant"]"#);
        let n = norm("PUT", "/files/a", Some("b=2&a=1"), &[("x-tenant", "t"), ("content-type", "text/plain")], b"hi", &r).unwrap();
        assert_eq!(
            n.view(),
            &json!({
                "upstream": "api", "method": "PUT", "path": "/files/a", "segments": ["files", "a"],
                "query": [["b", "2"], ["a", "1"]], "body_sha256": hex::encode(Sha256::digest(b"hi")), "body_bytes": 2,
                "content_type": "text/plain", "headers": [["x-tenant", "t"]],
            })
        );
        assert_eq!(n.digest().len(), 64);
        assert_eq!(n.target("http://h:1/base").unwrap().as_str(), "http://h:1/base/files/a?b=2&a=1");
    }

    /// Method, raw path, query pairs, body, declared header.
    type Req = (&'static str, String, Vec<(String, String)>, Vec<u8>, Option<String>);

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,4}",
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just("%2e".to_owned()),
            Just("%2F".to_owned()),
            Just("%5c".to_owned()),
            Just("%2E%2e".to_owned()),
            Just("%41".to_owned()),
            Just("%25".to_owned()),
            Just("é".to_owned()),
            Just("a;b".to_owned()),
            Just(String::new()),
            "[ -~]{0,6}",
        ]
    }

    fn raw_path() -> impl Strategy<Value = String> {
        proptest::collection::vec(segment(), 0..5).prop_map(|s| format!("/files/{}", s.join("/")))
    }

    fn pair() -> impl Strategy<Value = (String, String)> {
        ("[a-c]{1,2}|%61|_m", "[ -~]{0,4}")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Normalizing the normalized request changes nothing; the path written never holds a
        /// dot segment or an encoded separator (without `decode_slashes`).
        #[test]
        fn normalize_is_idempotent(path in raw_path(), query in "[ -~]{0,12}", slashes in any::<bool>()) {
            let r = route(if slashes { "decode_slashes = true\nlist_params = [\"a\", \"b\"]" } else { "" });
            if let Ok(n) = norm("GET", &path, Some(&query), &[], b"", &r) {
                let again = norm("GET", &n.path, Some(&n.query_string), &[], b"", &r).unwrap();
                prop_assert_eq!(&again.path, &n.path);
                prop_assert_eq!(&again.query, &n.query);
                prop_assert_eq!(again.digest(), n.digest());
                let upper = n.path.to_ascii_uppercase();
                prop_assert!(!n.path.split('/').any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e") || s.eq_ignore_ascii_case("%2e%2e")));
                prop_assert!(!n.path.contains('\\'));
                if !slashes {
                    prop_assert!(!upper.contains("%2F") && !upper.contains("%5C"));
                }
                for seg in &n.segments {
                    prop_assert!(seg.split(['/', '\\']).all(|s| s != "." && s != ".."));
                }
            }
        }

        /// Two requests that differ in anything the upstream receives never share a digest;
        /// two that share a digest are forwarded identically.
        #[test]
        fn the_view_digest_is_injective(
            a in (prop_oneof![Just("GET"), Just("POST")], raw_path(), proptest::collection::vec(pair(), 0..3), proptest::collection::vec(any::<u8>(), 0..3), proptest::option::of("[ab]")),
            b in (prop_oneof![Just("GET"), Just("POST")], raw_path(), proptest::collection::vec(pair(), 0..3), proptest::collection::vec(any::<u8>(), 0..3), proptest::option::of("[ab]")),
        ) {
            let r = route("decode_slashes = true\nheaders = [\"x-tenant\"]\nlist_params = [\"a\", \"b\", \"c\", \"aa\"]");
            let build = |(m, p, q, body, t): &Req| {
                let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", v.replace(['&', '#', '%', '+'], "x"))).collect();
                let headers: Vec<(&str, &str)> = t.iter().map(|t| ("x-tenant", t.as_str())).collect();
                norm(m, p, Some(&query.join("&")), &headers, body, &r).ok()
            };
            if let (Some(x), Some(y)) = (build(&a), build(&b)) {
                let forwarded = |n: &Normalized| (n.method.clone(), n.target("http://h").map(|u| u.to_string()), n.body.clone(), n.declared.clone());
                prop_assert_eq!(x.digest() == y.digest(), forwarded(&x) == forwarded(&y));
            }
        }

        /// A request and one changed in a single thing (the method, one segment, one query
        /// pair, the order of two pairs, one body byte, the declared header): digests differ
        /// exactly when what is forwarded differs.
        #[test]
        fn one_change_changes_the_digest(
            segs in proptest::collection::vec("[a-z]{1,3}|a%2Fb|%41|é", 1..4),
            pairs in proptest::collection::vec(("[a-c]", "[a-z ]{0,3}"), 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..4),
            change in 0usize..6,
            at in any::<prop::sample::Index>(),
        ) {
            let r = route("decode_slashes = true\nheaders = [\"x-tenant\"]\nlist_params = [\"a\", \"b\", \"c\"]");
            let build = |m: &str, segs: &[String], pairs: &[(String, String)], body: &[u8], tenant: &str| {
                let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "+"))).collect();
                norm(m, &format!("/files/{}", segs.join("/")), Some(&q.join("&")), &[("x-tenant", tenant)], body, &r).unwrap()
            };
            let x = build("POST", &segs, &pairs, &body, "t");
            let (mut m, mut s2, mut p2, mut b2, mut t2) = ("POST", segs.clone(), pairs.clone(), body.clone(), "t");
            match change {
                0 => m = "PUT",
                1 => { let i = at.index(s2.len()); if let Some(s) = s2.get_mut(i) { s.push('z'); } }
                2 => if p2.is_empty() { p2.push(("a".into(), String::new())) } else { let i = at.index(p2.len()); if let Some(p) = p2.get_mut(i) { p.1.push('z'); } },
                3 => if p2.len() >= 2 { p2.swap(0, 1) } else { p2.push(("b".into(), "1".into())) },
                4 => if b2.is_empty() { b2.push(0) } else { let i = at.index(b2.len()); if let Some(b) = b2.get_mut(i) { *b = b.wrapping_add(1); } },
                _ => t2 = "u",
            }
            let y = build(m, &s2, &p2, &b2, t2);
            let forwarded = |n: &Normalized| (n.method.clone(), n.target("http://h").map(|u| u.to_string()), n.body.clone(), n.declared.clone());
            prop_assert_eq!(x.digest() == y.digest(), forwarded(&x) == forwarded(&y));
        }

        /// Any input is read without a panic.
        #[test]
        fn parsing_never_panics(path in "/[ -~]{0,24}", query in "[ -~]{0,24}", body in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = norm("GET", &path, Some(&query), &[("content-type", "multipart/form-data; boundary=b")], &body, &route(""));
        }
    }
}
