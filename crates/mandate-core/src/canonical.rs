//! The canonical form of a call's JSON: RFC 8785 (JCS). One function turns a value into its
//! canonical text; the digest of that text is what approvals are bound to and what evidence
//! records, and the value parsed back from that text is what the gateway forwards. Because the
//! forwarded value is a function of the canonical text, two calls whose forwarded values differ
//! in anything can never share a digest: injectivity holds by construction, not by care.
//!
//! What RFC 8785 does not cover is refused, never approximated: nesting deeper than
//! [`Limits::max_depth`], text longer than [`Limits::max_bytes`], and integers outside the
//! range an IEEE-754 double holds exactly (±(2^53 − 1), as I-JSON, RFC 7493, requires): JCS
//! writes every number as a double, so `9007199254740993` and `9007199254740992` would
//! otherwise share a canonical form while an upstream that reads 64-bit integers tells them
//! apart.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest integer magnitude a double holds exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// How deep and how large a canonical value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Containers (objects and arrays) nested inside one another; `{"a": [1]}` is 2 deep.
    pub max_depth: usize,
    /// Bytes of canonical text.
    pub max_bytes: usize,
}

impl Limits {
    /// What a tool call's arguments may be: 24 levels, 1 MiB of canonical text.
    pub const ARGUMENTS: Limits = Limits { max_depth: 24, max_bytes: 1 << 20 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::ARGUMENTS
    }
}

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalError {
    /// Nested deeper than the limit.
    TooDeep { limit: usize },
    /// Canonical text longer than the limit.
    TooLarge { limit: usize, bytes: usize },
    /// An integer a double cannot hold exactly (its JSON path and text).
    UnsafeInteger { path: String, number: String },
}

impl CanonicalError {
    /// The stable code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            CanonicalError::TooDeep { .. } => "arguments_too_deep",
            CanonicalError::TooLarge { .. } => "arguments_too_large",
            CanonicalError::UnsafeInteger { .. } => "arguments_not_canonical",
        }
    }
}

impl fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanonicalError::TooDeep { limit } => {
                write!(f, "the arguments are nested more than {limit} levels deep; nothing is cut off, so the call is refused")
            }
            CanonicalError::TooLarge { limit, bytes } => {
                write!(f, "the arguments are {bytes} bytes as canonical JSON, more than the {limit} allowed")
            }
            CanonicalError::UnsafeInteger { path, number } => write!(
                f,
                "`{path}`: the integer {number} is outside ±(2^53 - 1) and has no exact canonical form (RFC 8785); send it as a string"
            ),
        }
    }
}

impl std::error::Error for CanonicalError {}

/// A value in canonical form: its RFC 8785 text, the value that text parses to, and the
/// SHA-256 of the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Canonical {
    text: String,
    value: Value,
    digest: String,
}

impl Canonical {
    /// Canonicalizes `value` under `limits`.
    pub fn new(value: &Value, limits: Limits) -> Result<Canonical, CanonicalError> {
        check(value, limits.max_depth, 0, &mut String::from("arguments"))?;
        let text = jcs(value);
        if text.len() > limits.max_bytes {
            return Err(CanonicalError::TooLarge { limit: limits.max_bytes, bytes: text.len() });
        }
        // Parsing canonical text cannot fail: it is JSON this process just wrote, within
        // serde_json's recursion limit (the depth was checked above). Should it ever, the
        // value is refused rather than forwarded in another form.
        let value: Value = serde_json::from_str(&text).map_err(|_| CanonicalError::TooDeep { limit: limits.max_depth })?;
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        Ok(Canonical { text, value, digest })
    }

    /// The RFC 8785 text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value the canonical text parses to: what is decided and forwarded.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Takes the value out.
    pub fn into_value(self) -> Value {
        self.value
    }

    /// Lowercase hex SHA-256 of the canonical text.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// Lowercase hex SHA-256 of the canonical text of `value`, for a value already known to be
/// within limits (or where a lossy number is acceptable: never for a binding).
pub fn digest(value: &Value) -> String {
    hex::encode(Sha256::digest(jcs(value).as_bytes()))
}

/// The first member name that appears twice in one object of a JSON text, or `None` when the
/// text is not JSON or repeats no name. RFC 8259 leaves such a member's meaning to the reader
/// (serde_json keeps the last value, many parsers the first), so a proxy that forwards the
/// text as it is must refuse it rather than decide on one reading. Names are compared decoded
/// (`"a"` and `"\u0061"` are the same name).
pub fn repeated_member(text: &[u8]) -> Option<String> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(text);
    // A refusal (a repeat, or text that is not JSON) ends the walk; only a repeat is kept.
    let _ = Walk(&found).deserialize(&mut de);
    found.into_inner()
}

/// Walks a JSON value, recording the first repeated member name (and stopping there).
struct Walk<'a>(&'a RefCell<Option<String>>);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk(self.0))?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                *self.0.borrow_mut() = Some(crate::clip(&key));
                return Err(serde::de::Error::custom("repeated member"));
            }
            map.next_value_seed(Walk(self.0))?;
        }
        Ok(())
    }
}

/// The RFC 8785 text of a value.
fn jcs(value: &Value) -> String {
    // Serializing a `serde_json::Value` cannot fail (its keys are strings, its numbers finite).
    serde_json_canonicalizer::to_string(value).unwrap_or_default()
}

fn check(v: &Value, max_depth: usize, depth: usize, path: &mut String) -> Result<(), CanonicalError> {
    match v {
        Value::Number(n) => {
            // A double between 2^53 and 10^21 is written by JCS as an integer's digits, which
            // parse back as a 64-bit integer that is not the double: no exact canonical form.
            let unsafe_int = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => u > MAX_SAFE_INTEGER,
                (None, Some(i), _) => i.unsigned_abs() > MAX_SAFE_INTEGER,
                (None, None, Some(f)) => f.abs() > MAX_SAFE_INTEGER as f64 && f.abs() < 1e21,
                (None, None, None) => false,
            };
            if unsafe_int {
                return Err(CanonicalError::UnsafeInteger { path: crate::clip(path), number: n.to_string() });
            }
            Ok(())
        }
        Value::Array(items) => {
            if depth + 1 > max_depth {
                return Err(CanonicalError::TooDeep { limit: max_depth });
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check(item, max_depth, depth + 1, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(m) => {
            if depth + 1 > max_depth {
                return Err(CanonicalError::TooDeep { limit: max_depth });
            }
            for (k, item) in m {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                check(item, max_depth, depth + 1, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn canon(v: &Value) -> Canonical {
        Canonical::new(v, Limits::ARGUMENTS).unwrap()
    }

    #[test]
    fn rfc_8785_form() {
        let c = canon(&json!({"b": [3, null, 1.0, "x"], "a": {"z": null, "é": 1e21}}));
        assert_eq!(c.text(), r#"{"a":{"z":null,"é":1e+21},"b":[3,null,1,"x"]}"#);
        // The forwarded value is the parse of that text: 1.0 arrives as 1.
        assert_eq!(c.value(), &json!({"a": {"z": null, "é": 1e21}, "b": [3, null, 1, "x"]}));
    }

    #[test]
    fn nulls_and_order_are_kept() {
        assert_ne!(canon(&json!({"cc": null})).digest(), canon(&json!({})).digest());
        assert_ne!(canon(&json!([1, 2])).digest(), canon(&json!([2, 1])).digest());
        assert_ne!(canon(&json!([null, 1])).digest(), canon(&json!([1])).digest());
        assert_eq!(canon(&json!({"a": 1, "b": 2})).digest(), canon(&json!({"b": 2, "a": 1})).digest());
    }

    #[test]
    fn refuses_instead_of_cutting() {
        let mut deep = json!("leaf");
        for _ in 0..25 {
            deep = json!({ "x": deep });
        }
        assert_eq!(Canonical::new(&deep, Limits::ARGUMENTS).unwrap_err(), CanonicalError::TooDeep { limit: 24 });
        let mut ok = json!("leaf");
        for _ in 0..24 {
            ok = json!({ "x": ok });
        }
        assert!(Canonical::new(&ok, Limits::ARGUMENTS).is_ok());
        let big = json!({ "s": "x".repeat(100) });
        let e = Canonical::new(&big, Limits { max_depth: 4, max_bytes: 50 }).unwrap_err();
        assert_eq!(e.code(), "arguments_too_large");
        let e = Canonical::new(&json!({"n": [9007199254740993u64]}), Limits::ARGUMENTS).unwrap_err();
        assert_eq!(e.code(), "arguments_not_canonical");
        assert!(e.to_string().contains("arguments.n[0]"), "{e}");
        assert!(Canonical::new(&json!({"n": 9007199254740991u64, "m": -9007199254740991i64}), Limits::ARGUMENTS).is_ok());
        assert!(Canonical::new(&json!({"m": -9007199254740992i64}), Limits::ARGUMENTS).is_err());
        // A double in that range too: JCS writes its digits, which parse back as another number.
        assert!(Canonical::new(&json!([5.3992061785011245e17]), Limits::ARGUMENTS).is_err());
        assert!(Canonical::new(&json!([1e21, 1e300, 1.5, -2.5e-7]), Limits::ARGUMENTS).is_ok());
    }

    #[test]
    fn repeated_members_are_found_at_any_depth() {
        assert_eq!(repeated_member(br#"{"amount":1,"amount":1000}"#).as_deref(), Some("amount"));
        assert_eq!(repeated_member(br#"{"a":{"b":[{"to":"x","\u0074o":"y"}]}}"#).as_deref(), Some("to"));
        assert_eq!(repeated_member(br#"{"a":1,"b":{"a":2}}"#), None, "the same name in two objects is fine");
        assert_eq!(repeated_member(b"not json"), None);
        assert_eq!(repeated_member(br#"[1,{"x":null}]"#), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(MAX_SAFE_INTEGER as i64)..=(MAX_SAFE_INTEGER as i64)).prop_map(|i| json!(i)),
            any::<f64>()
                .prop_filter("finite, with an exact canonical form", |f| f.is_finite()
                    && !(f.abs() > MAX_SAFE_INTEGER as f64 && f.abs() < 1e21))
                .prop_map(|f| json!(f)),
            "[a-c\\u{0}-\\u{1f}\"\\\\\\u{e9}\\u{1f600}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\\u{e9}\\u{1f600}]{0,3}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Injective: two values whose forwarded forms differ never share a digest, and equal
        /// digests mean equal forwarded values.
        #[test]
        fn injective(a in json_value(), b in json_value()) {
            let (ca, cb) = (canon(&a), canon(&b));
            prop_assert_eq!(ca.value() == cb.value(), ca.digest() == cb.digest());
            prop_assert_eq!(ca.value() == cb.value(), ca.text() == cb.text());
        }

        /// Canonical form is a fixed point: canonicalizing what is forwarded changes nothing.
        #[test]
        fn idempotent(a in json_value()) {
            let c = canon(&a);
            let again = canon(c.value());
            prop_assert_eq!(c.text(), again.text());
            prop_assert_eq!(c.value(), again.value());
            // And the forwarded value survives a trip over the wire (serde_json out, in).
            let wire: Value = serde_json::from_str(&serde_json::to_string(c.value()).unwrap()).unwrap();
            let w = canon(&wire);
            prop_assert_eq!(w.digest(), c.digest());
        }
    }
}
