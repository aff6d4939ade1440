//! Compact JWS (RFC 7515) parsing and encoding, trusting nothing.
//!
//! Parsing only splits and decodes: choosing the key, checking the algorithm against an
//! allow-list and verifying the signature are the callers' job, so the header's `alg` never
//! decides how a token is verified (RFC 8725 §3.1).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::TokenError;
use crate::error::clip;

/// The longest token accepted, in bytes. Longer input is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A compact JWS split into its parts. Nothing in it has been checked yet.
pub(crate) struct Jws<'a> {
    pub header: Header,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: &'a [u8],
    payload_b64: &'a str,
    signature_b64: &'a str,
}

/// The protected header members this crate looks at.
pub(crate) struct Header {
    pub alg: String,
    pub typ: Option<String>,
    pub kid: Option<String>,
}

/// Splits and decodes a compact JWS. Fails on anything but three base64url parts whose header
/// is a JSON object with a string `alg`, or when the header marks any extension critical.
pub(crate) fn parse(token: &str) -> Result<Jws<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("not a compact JWS of three dot-separated parts"));
    };
    let header = decode_object(header_b64).map_err(|_| TokenError::Malformed("the header is not a base64url JSON object"))?;
    let header = Header::from_object(&header)?;
    let signing_input = token
        .as_bytes()
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(TokenError::Malformed("not a compact JWS of three dot-separated parts"))?;
    Ok(Jws { header, signing_input, payload_b64, signature_b64 })
}

impl Header {
    fn from_object(header: &Map<String, Value>) -> Result<Self, TokenError> {
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            Some(_) => return Err(TokenError::Malformed("`alg` is not a string")),
            None => return Err(TokenError::Malformed("the header has no `alg`")),
        };
        let optional = |name: &str, err: &'static str| match header.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(TokenError::Malformed(err)),
        };
        let typ = optional("typ", "`typ` is not a string")?;
        let kid = optional("kid", "`kid` is not a string")?;
        // No header extension is understood here, so any `crit` entry is refused (RFC 7515 §4.1.11).
        if let Some(crit) = header.get("crit") {
            let first = crit.as_array().and_then(|c| c.first()).and_then(Value::as_str);
            return Err(TokenError::CriticalHeader(clip(first.unwrap_or("crit"))));
        }
        Ok(Header { alg, typ, kid })
    }
}

impl Jws<'_> {
    /// The decoded payload. Call only once the signature has been verified, unless the claims
    /// are used for routing alone.
    pub fn claims(&self) -> Result<Map<String, Value>, TokenError> {
        decode_object(self.payload_b64).map_err(|_| TokenError::Malformed("the payload is not a base64url JSON object"))
    }

    /// The decoded signature, or `None` if it is not valid base64url.
    pub fn signature(&self) -> Option<Vec<u8>> {
        b64_decode(self.signature_b64).ok()
    }

    /// The signature as it appears in the token.
    pub fn signature_b64(&self) -> &str {
        self.signature_b64
    }
}

/// Builds a compact JWS from a header and claims, with `sign` producing the signature over
/// the signing input.
pub(crate) fn encode<C: Serialize + ?Sized>(
    header_b64: &str,
    claims: &C,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, TokenError>,
) -> Result<String, TokenError> {
    let payload = serde_json::to_vec(claims).map_err(|_| TokenError::SigningFailed("the claims could not be serialised"))?;
    let mut token = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 96);
    token.push_str(header_b64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

/// Encodes a JSON header once, for reuse across tokens.
pub(crate) fn encode_header(header: &Value) -> String {
    b64_encode(header.to_string())
}

pub(crate) fn b64_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Strict base64url: no padding, no whitespace, canonical trailing bits.
pub(crate) fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

fn decode_object(part: &str) -> Result<Map<String, Value>, ()> {
    let bytes = b64_decode(part).map_err(|_| ())?;
    serde_json::from_slice(&bytes).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn part(v: &Value) -> String {
        b64_encode(v.to_string())
    }

    #[test]
    fn splits_a_well_formed_token() {
        let token = format!("{}.{}.AAAA", part(&json!({"alg":"EdDSA","kid":"k"})), part(&json!({"a":1})));
        let jws = parse(&token).unwrap();
        assert_eq!(jws.header.alg, "EdDSA");
        assert_eq!(jws.header.kid.as_deref(), Some("k"));
        assert_eq!(jws.header.typ, None);
        assert_eq!(jws.claims().unwrap()["a"], 1);
        assert_eq!(jws.signature().unwrap(), vec![0, 0, 0]);
        assert!(token.as_bytes().starts_with(jws.signing_input));
        assert_eq!(jws.signing_input.len(), token.rfind('.').unwrap());
    }

    #[test]
    fn refuses_anything_else() {
        let h = part(&json!({"alg":"EdDSA"}));
        let p = part(&json!({}));
        for bad in [
            String::new(),
            "a.b".to_owned(),
            format!("{h}.{p}.sig.extra"),
            format!("{h}=.{p}.sig"),
            format!("{}.{p}.sig", b64_encode("not json")),
            format!("{}.{p}.sig", part(&json!(["alg"]))),
            format!("{}.{p}.sig", part(&json!({"typ":"JWT"}))),
            format!("{}.{p}.sig", part(&json!({"alg":1}))),
            format!("{}.{p}.sig", part(&json!({"alg":"EdDSA","kid":7}))),
        ] {
            assert_eq!(parse(&bad).err().map(|e| e.code()), Some("malformed"), "{bad}");
        }
        let token = format!("{h}.%%%.sig");
        let jws = parse(&token).unwrap();
        assert_eq!(jws.claims().unwrap_err().code(), "malformed");
    }

    #[test]
    fn refuses_critical_extensions() {
        let h = part(&json!({"alg":"EdDSA","crit":["b64"],"b64":false}));
        let err = parse(&format!("{h}.e30.sig")).err().unwrap();
        assert_eq!(err.code(), "critical_header");
        assert!(err.to_string().contains("`b64`"));
    }

    #[test]
    fn refuses_oversized_input_before_parsing() {
        let token = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(parse(&token).err().unwrap(), TokenError::Malformed("longer than 16 KiB"));
    }
}
