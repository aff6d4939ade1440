//! The agent's side: generating a key pair as JWKs and signing attestations with it.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Signer as _; // the `signature` crate's trait, for P-256 keys too
use mandate_core::SpiffeId;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::TokenError;
use crate::attest::MAX_JTI_BYTES;
use crate::error::clip;
use crate::jwk;
use crate::jws::{self, b64_encode};

/// The key type of an agent key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKeyAlg {
    /// OKP Ed25519, signing with EdDSA.
    Ed25519,
    /// EC P-256, signing with ES256.
    P256,
}

impl AgentKeyAlg {
    /// `ed25519` or `p256`.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKeyAlg::Ed25519 => "ed25519",
            AgentKeyAlg::P256 => "p256",
        }
    }
}

impl FromStr for AgentKeyAlg {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ed25519" => Ok(AgentKeyAlg::Ed25519),
            "p256" => Ok(AgentKeyAlg::P256),
            other => Err(TokenError::UnsupportedKey(format!("key type `{}`: use `ed25519` or `p256`", clip(other)))),
        }
    }
}

impl fmt::Display for AgentKeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Generates an agent key pair. Returns the private JWK (with `d`; keep it secret) and the
/// public JWK to register. Both carry `kid` (the RFC 7638 thumbprint), `alg` and `use`.
pub fn generate_agent_key(alg: AgentKeyAlg) -> Result<(Value, Value), TokenError> {
    let (public, d) = match alg {
        AgentKeyAlg::Ed25519 => {
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let x = key.verifying_key().to_bytes();
            let public = json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64_encode(x),
                "kid": jwk::okp_thumbprint(&x),
                "alg": "EdDSA",
                "use": "sig",
            });
            (public, Zeroizing::new(b64_encode(key.as_bytes())))
        }
        AgentKeyAlg::P256 => {
            let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
            let (x, y) = p256_coordinates(key.verifying_key());
            let public = json!({
                "kty": "EC",
                "crv": "P-256",
                "x": b64_encode(&x),
                "y": b64_encode(&y),
                "kid": jwk::ec_thumbprint(&x, &y),
                "alg": "ES256",
                "use": "sig",
            });
            let d = Zeroizing::new(key.to_bytes().to_vec());
            (public, Zeroizing::new(b64_encode(d.as_slice())))
        }
    };
    let mut private = public.clone();
    if let Some(obj) = private.as_object_mut() {
        obj.insert("d".to_owned(), Value::String(d.as_str().to_owned()));
    }
    Ok((private, public))
}

/// Signs an attestation: a JWT with `iss` and `sub` set to `spiffe_id`, `aud` to `audience`,
/// `iat` to `now_secs`, `exp` to `now_secs + lifetime_secs` and the given `jti`, headed
/// `{"alg":…,"typ":"JWT","kid":…}`.
pub fn sign_attestation(
    private_jwk: &Value,
    spiffe_id: &str,
    audience: &str,
    now_secs: i64,
    lifetime_secs: i64,
    jti: &str,
) -> Result<String, TokenError> {
    SpiffeId::parse(spiffe_id).map_err(|e| TokenError::invalid_claim("sub", e.to_string()))?;
    if audience.is_empty() {
        return Err(TokenError::invalid_claim("aud", "must not be empty"));
    }
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(TokenError::invalid_claim("jti", "must be 1 to 256 bytes"));
    }
    let exp = now_secs
        .checked_add(lifetime_secs)
        .filter(|_| lifetime_secs > 0)
        .ok_or_else(|| TokenError::invalid_claim("exp", "the lifetime must be a positive number of seconds"))?;
    let claims = json!({
        "iss": spiffe_id,
        "sub": spiffe_id,
        "aud": audience,
        "iat": now_secs,
        "exp": exp,
        "jti": jti,
    });
    let key = PrivateKey::from_jwk(private_jwk)?;
    let header = jws::encode_header(&json!({"alg": key.alg(), "typ": "JWT", "kid": key.kid()}));
    jws::encode(&header, &claims, |input| Ok(key.sign(input)))
}

/// An agent's private key read from its JWK.
enum PrivateKey {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

impl PrivateKey {
    /// Reads a private OKP Ed25519 or EC P-256 JWK, checking that its public members (if
    /// present) belong to the private key.
    fn from_jwk(v: &Value) -> Result<Self, TokenError> {
        let obj = v.as_object().ok_or_else(|| TokenError::InvalidKey("a JWK must be a JSON object".into()))?;
        if !obj.contains_key("d") {
            return Err(TokenError::InvalidKey("the JWK has no private part (`d`)".into()));
        }
        let kty = jwk::str_member(obj, "kty")?.unwrap_or("");
        let crv = jwk::str_member(obj, "crv")?.unwrap_or("");
        match (kty, crv) {
            ("OKP", "Ed25519") => {
                let d = Zeroizing::new(jwk::fixed_bytes::<32>(obj, "d")?);
                let key = ed25519_dalek::SigningKey::from_bytes(&d);
                check_public(obj, "x", key.verifying_key().as_bytes())?;
                Ok(PrivateKey::Ed25519(key))
            }
            ("EC", "P-256") => {
                let d = Zeroizing::new(jwk::fixed_bytes::<32>(obj, "d")?);
                let key = p256::ecdsa::SigningKey::from_slice(d.as_slice())
                    .map_err(|_| TokenError::InvalidKey("`d` is not a P-256 private key".into()))?;
                let (x, y) = p256_coordinates(key.verifying_key());
                check_public(obj, "x", &x)?;
                check_public(obj, "y", &y)?;
                Ok(PrivateKey::P256(key))
            }
            _ => Err(TokenError::UnsupportedKey(format!(
                "key type `{}` curve `{}`: use an OKP Ed25519 or EC P-256 key",
                clip(kty),
                clip(crv)
            ))),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            PrivateKey::Ed25519(_) => "EdDSA",
            PrivateKey::P256(_) => "ES256",
        }
    }

    fn kid(&self) -> String {
        match self {
            PrivateKey::Ed25519(key) => jwk::okp_thumbprint(key.verifying_key().as_bytes()),
            PrivateKey::P256(key) => {
                let (x, y) = p256_coordinates(key.verifying_key());
                jwk::ec_thumbprint(&x, &y)
            }
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::Ed25519(key) => key.sign(msg).to_bytes().to_vec(),
            PrivateKey::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign(msg);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// The affine coordinates of a P-256 public key (never the identity, so always present).
fn p256_coordinates(key: &p256::ecdsa::VerifyingKey) -> (Vec<u8>, Vec<u8>) {
    let point = key.to_encoded_point(false);
    (point.x().map(|x| x.to_vec()).unwrap_or_default(), point.y().map(|y| y.to_vec()).unwrap_or_default())
}

/// A public member of a private JWK, if present, must match the key.
fn check_public(obj: &Map<String, Value>, name: &str, actual: &[u8]) -> Result<(), TokenError> {
    if obj.contains_key(name) && jwk::bytes_member(obj, name)? != actual {
        return Err(TokenError::InvalidKey(format!("`{name}` does not belong to the private key `d`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{AGENT_ID, ISSUER, NOW, part};

    #[test]
    fn generated_keys_have_the_documented_shape() {
        for (alg, kty, jws_alg) in [(AgentKeyAlg::Ed25519, "OKP", "EdDSA"), (AgentKeyAlg::P256, "EC", "ES256")] {
            let (private, public) = generate_agent_key(alg).unwrap();
            assert_eq!(public["kty"], kty);
            assert_eq!(public["alg"], jws_alg);
            assert!(public.get("d").is_none());
            assert!(private["d"].is_string());
            let mut stripped = private.clone();
            stripped.as_object_mut().unwrap().remove("d");
            assert_eq!(stripped, public);
            let parsed = jwk::parse_public(&public, jwk::KeyPolicy::Agent).unwrap();
            assert_eq!(parsed.kid.as_deref(), public["kid"].as_str());
        }
        let (_, a) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        let (_, b) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        assert_ne!(a["kid"], b["kid"]);
    }

    #[test]
    fn kid_is_the_rfc_7638_thumbprint_of_an_ec_key() {
        // RFC 7638 §3.1 hashes the members in this order; recompute it independently.
        let (_, public) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        let canonical =
            format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, public["x"].as_str().unwrap(), public["y"].as_str().unwrap());
        use sha2::Digest;
        assert_eq!(public["kid"], b64_encode(sha2::Sha256::digest(canonical)));
    }

    #[test]
    fn attestation_claims() {
        let (private, _) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 60, "j-1").unwrap();
        assert_eq!(part(&token, 1), json!({"iss":AGENT_ID,"sub":AGENT_ID,"aud":ISSUER,"iat":NOW,"exp":NOW + 60,"jti":"j-1"}));
    }

    #[test]
    fn refuses_bad_input() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let sign = |jwk: &Value, id: &str, life: i64, jti: &str| sign_attestation(jwk, id, ISSUER, NOW, life, jti).unwrap_err().code();
        assert_eq!(sign(&public, AGENT_ID, 60, "j"), "invalid_key");
        assert_eq!(sign(&private, "agent:support-bot", 60, "j"), "invalid_claim");
        assert_eq!(sign(&private, AGENT_ID, 0, "j"), "invalid_claim");
        assert_eq!(sign(&private, AGENT_ID, i64::MAX, "j"), "invalid_claim");
        assert_eq!(sign(&private, AGENT_ID, 60, ""), "invalid_claim");
        assert_eq!(sign(&private, AGENT_ID, 60, &"j".repeat(257)), "invalid_claim");
        let (_, other) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let mut mismatched = private.clone();
        mismatched["x"] = other["x"].clone();
        assert_eq!(sign(&mismatched, AGENT_ID, 60, "j"), "invalid_key");
        let (p_private, p_other) = (generate_agent_key(AgentKeyAlg::P256).unwrap().0, generate_agent_key(AgentKeyAlg::P256).unwrap().1);
        let mut mismatched = p_private.clone();
        mismatched["y"] = p_other["y"].clone();
        assert_eq!(sign(&mismatched, AGENT_ID, 60, "j"), "invalid_key");
        let mut short = private.clone();
        short["d"] = json!("AAAA");
        assert_eq!(sign(&short, AGENT_ID, 60, "j"), "invalid_key");
        let rsa = json!({"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"});
        assert_eq!(sign(&rsa, AGENT_ID, 60, "j"), "unsupported_key");
        assert_eq!(sign(&private, "", 60, "j"), "invalid_claim");
        assert!(sign_attestation(&private, AGENT_ID, "", NOW, 60, "j").is_err());
    }

    #[test]
    fn key_alg_names() {
        assert_eq!("ed25519".parse::<AgentKeyAlg>().unwrap(), AgentKeyAlg::Ed25519);
        assert_eq!("p256".parse::<AgentKeyAlg>().unwrap(), AgentKeyAlg::P256);
        assert_eq!("rsa".parse::<AgentKeyAlg>().unwrap_err().code(), "unsupported_key");
        assert_eq!(AgentKeyAlg::P256.to_string(), "p256");
    }
}
