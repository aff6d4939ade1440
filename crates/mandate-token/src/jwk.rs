//! Public JWKs (RFC 7517, RFC 8037) turned into verification keys, the signature algorithms
//! they may be used with (RFC 7518), and RFC 7638 thumbprints.

use p256::ecdsa::signature::Verifier as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::TokenError;
use crate::error::clip;
use crate::jws::{b64_decode, b64_encode};

/// A JWS signature algorithm this crate can verify. Which of them a verifier accepts is its
/// own fixed allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    EdDSA,
    ES256,
    ES384,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}

impl Alg {
    /// Parses an `alg` value if it is one of `allowed`.
    pub fn parse_allowed(alg: &str, allowed: &[Alg]) -> Result<Alg, TokenError> {
        allowed.iter().copied().find(|a| a.as_str() == alg).ok_or_else(|| TokenError::UnsupportedAlg(clip(alg)))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
        }
    }

    fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Alg::EdDSA => J::EdDSA,
            Alg::ES256 => J::ES256,
            Alg::ES384 => J::ES384,
            Alg::RS256 => J::RS256,
            Alg::RS384 => J::RS384,
            Alg::RS512 => J::RS512,
            Alg::PS256 => J::PS256,
            Alg::PS384 => J::PS384,
            Alg::PS512 => J::PS512,
        }
    }
}

/// Which key types a caller accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyPolicy {
    /// Agents' registered keys: OKP Ed25519 and EC P-256.
    Agent,
    /// Trusted issuers' keys: also EC P-384 and RSA (2048 to 4096 bits).
    Issuer,
}

/// A public key ready to verify signatures.
#[derive(Clone)]
pub(crate) enum VerifyKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(jsonwebtoken::DecodingKey),
    Rsa(jsonwebtoken::DecodingKey),
}

impl VerifyKey {
    /// Does the algorithm belong to this key's type (RFC 8725 §3.1: no key confusion)?
    pub fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (VerifyKey::Ed25519(_), Alg::EdDSA)
                | (VerifyKey::P256(_), Alg::ES256)
                | (VerifyKey::P384(_), Alg::ES384)
                | (VerifyKey::Rsa(_), Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512)
        )
    }

    /// How the key is named in error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            VerifyKey::Ed25519(_) => "an Ed25519 key",
            VerifyKey::P256(_) => "a P-256 key",
            VerifyKey::P384(_) => "a P-384 key",
            VerifyKey::Rsa(_) => "an RSA key",
        }
    }

    /// Verifies a JWS signature. The caller has already checked that `alg` fits the key.
    pub fn verify(&self, alg: Alg, signing_input: &[u8], signature_b64: &str) -> bool {
        if !self.fits(alg) {
            return false;
        }
        match self {
            VerifyKey::Ed25519(key) => b64_decode(signature_b64)
                .ok()
                .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
                .is_some_and(|s| key.verify_strict(signing_input, &s).is_ok()),
            VerifyKey::P256(key) => b64_decode(signature_b64)
                .ok()
                .and_then(|s| p256::ecdsa::Signature::from_slice(&s).ok())
                .is_some_and(|s| key.verify(signing_input, &s).is_ok()),
            VerifyKey::P384(key) | VerifyKey::Rsa(key) => {
                jsonwebtoken::crypto::verify(signature_b64, signing_input, key, alg.jsonwebtoken()).unwrap_or(false)
            }
        }
    }
}

/// A public JWK that passed validation.
#[derive(Clone)]
pub(crate) struct ParsedJwk {
    pub key: VerifyKey,
    pub kid: Option<String>,
    /// The JWK's own `alg`, if it names one: the only algorithm the key may then be used with.
    pub alg: Option<Alg>,
}

impl ParsedJwk {
    /// Checks that `alg` may be used with this key.
    pub fn check_alg(&self, alg: Alg) -> Result<(), TokenError> {
        if !self.key.fits(alg) || self.alg.is_some_and(|a| a != alg) {
            return Err(TokenError::AlgKeyMismatch {
                alg: alg.as_str().to_owned(),
                key: match self.alg {
                    Some(own) if self.key.fits(alg) => {
                        format!("a key restricted to `{}`", own.as_str())
                    }
                    _ => self.key.describe().to_owned(),
                },
            });
        }
        Ok(())
    }
}

/// Parses a public JWK. Refuses private material, symmetric keys, key types outside `policy`,
/// keys marked for anything but signing, and malformed or weak keys.
pub(crate) fn parse_public(jwk: &Value, policy: KeyPolicy) -> Result<ParsedJwk, TokenError> {
    let obj = jwk.as_object().ok_or_else(|| TokenError::InvalidKey("a JWK must be a JSON object".into()))?;
    let kty = str_member(obj, "kty")?.ok_or_else(|| TokenError::InvalidKey("the JWK has no `kty`".into()))?;
    // `d` holds the private part of OKP, EC and RSA keys; `k` the secret of a symmetric key.
    if obj.contains_key("d") {
        return Err(TokenError::PrivateKeyMaterial);
    }
    if let Some(usage) = str_member(obj, "use")?
        && usage != "sig"
    {
        return Err(TokenError::InvalidKey(format!("`use` is `{}`, not `sig`", clip(usage))));
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|o| o == "verify"));
        if !verifies {
            return Err(TokenError::InvalidKey("`key_ops` does not allow `verify`".into()));
        }
    }
    let key = match (kty, policy) {
        ("OKP", _) => okp_key(obj)?,
        ("EC", _) => ec_key(obj, policy)?,
        ("RSA", KeyPolicy::Issuer) => rsa_key(obj)?,
        ("oct", _) => {
            return Err(TokenError::UnsupportedKey("symmetric (`oct`) keys are refused".into()));
        }
        (other, KeyPolicy::Agent) => {
            return Err(TokenError::UnsupportedKey(format!("key type `{}`: use an OKP Ed25519 or EC P-256 key", clip(other))));
        }
        (other, KeyPolicy::Issuer) => {
            return Err(TokenError::UnsupportedKey(format!("key type `{}`", clip(other))));
        }
    };
    let kid = str_member(obj, "kid")?.map(str::to_owned);
    let alg = match str_member(obj, "alg")? {
        None => None,
        Some(alg) => {
            let all = [Alg::EdDSA, Alg::ES256, Alg::ES384, Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512];
            let alg = Alg::parse_allowed(alg, &all)?;
            if !key.fits(alg) {
                return Err(TokenError::AlgKeyMismatch { alg: alg.as_str().to_owned(), key: key.describe().to_owned() });
            }
            Some(alg)
        }
    };
    Ok(ParsedJwk { key, kid, alg })
}

fn okp_key(obj: &Map<String, Value>) -> Result<VerifyKey, TokenError> {
    let crv = str_member(obj, "crv")?.unwrap_or("");
    if crv != "Ed25519" {
        return Err(TokenError::UnsupportedKey(format!("OKP curve `{}`: only `Ed25519` is accepted", clip(crv))));
    }
    let x = fixed_bytes::<32>(obj, "x")?;
    Ok(VerifyKey::Ed25519(ed25519_verifying_key(&x)?))
}

/// An Ed25519 public key, refusing small-order (weak) points.
fn ed25519_verifying_key(x: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, TokenError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(x).map_err(|_| TokenError::InvalidKey("`x` is not an Ed25519 public key".into()))?;
    if key.is_weak() {
        return Err(TokenError::InvalidKey("`x` is a weak Ed25519 public key".into()));
    }
    Ok(key)
}

fn ec_key(obj: &Map<String, Value>, policy: KeyPolicy) -> Result<VerifyKey, TokenError> {
    match (str_member(obj, "crv")?.unwrap_or(""), policy) {
        ("P-256", _) => {
            let (x, y) = (fixed_bytes::<32>(obj, "x")?, fixed_bytes::<32>(obj, "y")?);
            Ok(VerifyKey::P256(p256_verifying_key(&x, &y)?))
        }
        ("P-384", KeyPolicy::Issuer) => {
            let (x, y) = (fixed_bytes::<48>(obj, "x")?, fixed_bytes::<48>(obj, "y")?);
            let key = jsonwebtoken::DecodingKey::from_ec_components(&b64_encode(x), &b64_encode(y))
                .map_err(|_| TokenError::InvalidKey("`x` and `y` are not a P-384 point".into()))?;
            // Building a verifier decodes the point; an invalid point is an error, not `false`.
            jsonwebtoken::crypto::verify("", b"", &key, jsonwebtoken::Algorithm::ES384)
                .map_err(|_| TokenError::InvalidKey("`x` and `y` are not a P-384 point".into()))?;
            Ok(VerifyKey::P384(key))
        }
        (crv, KeyPolicy::Agent) => Err(TokenError::UnsupportedKey(format!("EC curve `{}`: only `P-256` is accepted", clip(crv)))),
        (crv, KeyPolicy::Issuer) => {
            Err(TokenError::UnsupportedKey(format!("EC curve `{}`: only `P-256` and `P-384` are accepted", clip(crv))))
        }
    }
}

/// A P-256 public key from its affine coordinates, refusing points off the curve.
fn p256_verifying_key(x: &[u8; 32], y: &[u8; 32]) -> Result<p256::ecdsa::VerifyingKey, TokenError> {
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| TokenError::InvalidKey("`x` and `y` are not a P-256 point".into()))
}

/// RSA public keys of 2048 to 4096 bits with an odd exponent between 3 and 2^33 - 1.
fn rsa_key(obj: &Map<String, Value>) -> Result<VerifyKey, TokenError> {
    let n = bytes_member(obj, "n")?;
    let e = bytes_member(obj, "e")?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if !(2048..=4096).contains(&bits) {
        return Err(TokenError::InvalidKey(format!("the RSA modulus has {bits} bits: use 2048 to 4096")));
    }
    let exponent = (e.len() <= 8)
        .then(|| e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
        .filter(|e| *e >= 3 && *e < (1 << 33) && e % 2 == 1);
    if exponent.is_none() || n.last().is_some_and(|b| b % 2 == 0) {
        return Err(TokenError::InvalidKey("`n` and `e` are not an RSA public key".into()));
    }
    Ok(VerifyKey::Rsa(jsonwebtoken::DecodingKey::from_rsa_raw_components(n, e)))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or(&[])
}

/// A string member, if present; any other JSON type is an error.
pub(crate) fn str_member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, TokenError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::InvalidKey(format!("`{name}` is not a string"))),
    }
}

/// A required base64url member, decoded.
pub(crate) fn bytes_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, TokenError> {
    let text = str_member(obj, name)?.ok_or_else(|| TokenError::InvalidKey(format!("the JWK has no `{name}`")))?;
    b64_decode(text).map_err(|_| TokenError::InvalidKey(format!("`{name}` is not base64url")))
}

/// A required base64url member of exactly `N` bytes.
pub(crate) fn fixed_bytes<const N: usize>(obj: &Map<String, Value>, name: &str) -> Result<[u8; N], TokenError> {
    let bytes = zeroize::Zeroizing::new(bytes_member(obj, name)?);
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| TokenError::InvalidKey(format!("`{name}` must be {N} bytes")))
}

/// RFC 7638 thumbprint of an Ed25519 public key.
pub(crate) fn okp_thumbprint(x: &[u8]) -> String {
    thumbprint(&format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64_encode(x)))
}

/// RFC 7638 thumbprint of a P-256 public key.
pub(crate) fn ec_thumbprint(x: &[u8], y: &[u8]) -> String {
    thumbprint(&format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64_encode(x), b64_encode(y)))
}

fn thumbprint(canonical: &str) -> String {
    b64_encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rfc_8037_thumbprint_vector() {
        // RFC 8037 appendix A.3.
        let x = b64_decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(okp_thumbprint(&x), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn refuses_private_symmetric_and_foreign_keys() {
        let code = |v: Value, p| parse_public(&v, p).err().map(|e| e.code());
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        assert_eq!(code(json!({"kty":"OKP","crv":"Ed25519","x":x,"d":x}), KeyPolicy::Agent), Some("private_key_material"));
        assert_eq!(code(json!({"kty":"oct","k":"c2VjcmV0"}), KeyPolicy::Issuer), Some("unsupported_key"));
        assert_eq!(code(json!({"kty":"RSA","n":"AQAB","e":"AQAB"}), KeyPolicy::Agent), Some("unsupported_key"));
        assert_eq!(code(json!({"kty":"OKP","crv":"X25519","x":x}), KeyPolicy::Agent), Some("unsupported_key"));
        assert_eq!(code(json!({"kty":"OKP","crv":"Ed25519","x":"AAAA"}), KeyPolicy::Agent), Some("invalid_key"));
        assert_eq!(code(json!({"kty":"OKP","crv":"Ed25519","x":x,"use":"enc"}), KeyPolicy::Agent), Some("invalid_key"));
        assert_eq!(code(json!({"kty":"OKP","crv":"Ed25519","x":x,"alg":"ES256"}), KeyPolicy::Agent), Some("alg_key_mismatch"));
        assert_eq!(code(json!({"kty":"OKP","crv":"Ed25519","x":x}), KeyPolicy::Agent), None);
        // A small-order point.
        let weak = b64_encode([1u8].iter().chain([0u8; 31].iter()).copied().collect::<Vec<_>>());
        assert_eq!(code(json!({"kty":"OKP","crv":"Ed25519","x":weak}), KeyPolicy::Agent), Some("invalid_key"));
        // Not on the curve.
        let zeros = b64_encode([0u8; 32]);
        assert_eq!(code(json!({"kty":"EC","crv":"P-256","x":zeros,"y":zeros}), KeyPolicy::Agent), Some("invalid_key"));
    }

    #[test]
    fn refuses_weak_rsa_keys() {
        let n1024 = b64_encode([0xffu8; 128]);
        let n2048 = b64_encode([0xffu8; 256]);
        let code = |n: &str, e: &str| parse_public(&json!({"kty":"RSA","n":n,"e":e}), KeyPolicy::Issuer).err().map(|e| e.code());
        assert_eq!(code(&n1024, "AQAB"), Some("invalid_key"));
        assert_eq!(code(&n2048, "AQAB"), None);
        assert_eq!(code(&n2048, "AQ"), Some("invalid_key"));
        assert_eq!(code(&n2048, "Ag"), Some("invalid_key"));
    }
}
