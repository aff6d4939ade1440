//! Agent attestations: how an agent proves what it is.
//!
//! An agent that registered a public JWK proves possession of the private key with a short
//! JWT in the shape of RFC 7523 client authentication (`private_key_jwt`): `iss` and `sub` are
//! its SPIFFE ID and `aud` is this server. The caller keeps `jti`s to refuse replays.

use serde_json::{Map, Value};

use crate::TokenError;
use crate::claims;
use crate::error::clip;
use crate::jwk::{self, Alg, KeyPolicy};
use crate::jws;

/// The most an attestation may live, by default: five minutes.
pub const DEFAULT_MAX_LIFETIME_SECS: i64 = 300;

/// The clock skew tolerated, by default.
pub const DEFAULT_LEEWAY_SECS: i64 = 60;

/// Longest `jti` accepted, in bytes.
pub const MAX_JTI_BYTES: usize = 256;

/// The algorithms an agent may sign with: EdDSA for OKP Ed25519 keys, ES256 for EC P-256 keys.
const AGENT_ALGS: [Alg; 2] = [Alg::EdDSA, Alg::ES256];

/// What an attestation must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationRules {
    /// This server's issuer URL: attestations must name it in `aud`.
    pub audience: String,
    /// The longest `exp - iat` accepted.
    pub max_lifetime_secs: i64,
    /// The clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: i64,
}

impl AttestationRules {
    /// Rules for `audience` with the default lifetime (300 s) and leeway (60 s).
    pub fn new(audience: &str) -> Self {
        AttestationRules { audience: audience.to_owned(), max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS, leeway_secs: DEFAULT_LEEWAY_SECS }
    }
}

/// A decoded JWT whose signature has not been checked. Use it only to decide which key or
/// issuer to verify it with, never to decide anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct UnverifiedJwt {
    /// The header's `alg`, whatever it is (`none` included).
    pub alg: String,
    /// The header's `typ`.
    pub typ: Option<String>,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The payload's claims.
    pub claims: Map<String, Value>,
}

impl UnverifiedJwt {
    /// The `iss` claim, if it is a string.
    pub fn iss(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// The `sub` claim, if it is a string.
    pub fn sub(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }
}

/// Decodes a JWT without trusting anything in it, to route it (find its `iss` or `sub`).
pub fn peek(token: &str) -> Result<UnverifiedJwt, TokenError> {
    let jws = jws::parse(token)?;
    let claims = jws.claims()?;
    let jws::Header { alg, typ, kid } = jws.header;
    Ok(UnverifiedJwt { alg, typ, kid, claims })
}

/// A verified attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The agent's SPIFFE ID (`sub`).
    pub subject: String,
    /// The token's id: the caller must refuse to see it twice.
    pub jti: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expiry (seconds since the epoch): the caller keeps `jti` at least until then.
    pub exp: i64,
}

/// Checks a JWK an agent registers: a public OKP Ed25519 or EC P-256 key. Refuses private
/// material, RSA and symmetric keys, and keys not meant for signing.
pub fn validate_agent_jwk(jwk: &Value) -> Result<(), TokenError> {
    jwk::parse_public(jwk, KeyPolicy::Agent).map(|_| ())
}

/// Verifies an agent's attestation against its registered JWK.
///
/// Checks, in order: size and shape; `alg` is EdDSA or ES256 (anything else, `none` and HMAC
/// included, is refused before any verification); `typ` is absent or `JWT` (so a mandate,
/// `at+jwt`, is never accepted); `alg` fits the registered key; the header's `kid`, if both
/// name one, is the key's; the signature; `iss` and `sub` are `expected_spiffe_id`; `aud`
/// contains `rules.audience`; `exp`, `iat` and `jti` are present; the lifetime is at most
/// `rules.max_lifetime_secs`; `exp`, `nbf` and `iat` against the clock with leeway; `jti`
/// is 1 to 256 bytes.
pub fn verify_agent_attestation(
    token: &str,
    jwk: &Value,
    expected_spiffe_id: &str,
    rules: &AttestationRules,
    now_secs: i64,
) -> Result<Attestation, TokenError> {
    let jws = jws::parse(token)?;
    let alg = Alg::parse_allowed(&jws.header.alg, &AGENT_ALGS)?;
    match jws.header.typ.as_deref() {
        None => {}
        Some(typ) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(other) => {
            return Err(TokenError::WrongType { found: Some(clip(other)), expected: "JWT" });
        }
    }
    let key = jwk::parse_public(jwk, KeyPolicy::Agent)?;
    key.check_alg(alg)?;
    if let (Some(token_kid), Some(key_kid)) = (&jws.header.kid, &key.kid)
        && token_kid != key_kid
    {
        return Err(TokenError::UnknownKid(clip(token_kid)));
    }
    if !key.key.verify(alg, jws.signing_input, jws.signature_b64()) {
        return Err(TokenError::BadSignature);
    }

    let claims = jws.claims()?;
    claims::check_issuer(&claims, expected_spiffe_id)?;
    let subject = claims::required_string(&claims, "sub")?;
    if subject != expected_spiffe_id {
        return Err(TokenError::WrongSubject { found: clip(subject), expected: clip(expected_spiffe_id) });
    }
    claims::check_audience(&claims, &rules.audience)?;
    let exp = claims::required_numeric_date(&claims, "exp")?;
    let iat = claims::required_numeric_date(&claims, "iat")?;
    let jti = claims::required_string(&claims, "jti")?;
    let lifetime = exp.saturating_sub(iat);
    if lifetime > rules.max_lifetime_secs {
        return Err(TokenError::LifetimeTooLong { lifetime, max: rules.max_lifetime_secs });
    }
    let nbf = claims::numeric_date(&claims, "nbf")?;
    claims::check_times(exp, nbf, Some(iat), now_secs, rules.leeway_secs)?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(TokenError::invalid_claim("jti", "must be 1 to 256 bytes"));
    }
    Ok(Attestation { subject: subject.to_owned(), jti: jti.to_owned(), iat, exp })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::testing::{AGENT_ID, ISSUER, NOW, forge, hs256, jwt_sign, mandate_claims, rsa_key, with_payload};
    use crate::{AgentKeyAlg, Minter, SigningKey, generate_agent_key, sign_attestation};

    fn rules() -> AttestationRules {
        AttestationRules::new(ISSUER)
    }

    fn code(result: Result<Attestation, TokenError>) -> &'static str {
        result.expect_err("the attestation should be refused").code()
    }

    fn verify(token: &str, jwk: &Value) -> Result<Attestation, TokenError> {
        verify_agent_attestation(token, jwk, AGENT_ID, &rules(), NOW)
    }

    fn claims() -> Value {
        json!({"iss": AGENT_ID, "sub": AGENT_ID, "aud": ISSUER, "iat": NOW, "exp": NOW + 60, "jti": "att-1"})
    }

    /// Signs arbitrary claims with an agent's Ed25519 private JWK.
    fn sign_ed25519(private: &Value, header: &Value, claims: &Value) -> String {
        let d: [u8; 32] = crate::jws::b64_decode(private["d"].as_str().unwrap()).unwrap().try_into().unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&d);
        forge(header, claims, |input| ed25519_dalek::Signer::sign(&key, input).to_bytes().to_vec())
    }

    #[test]
    fn ed25519_attestation() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 120, "att-1").unwrap();
        let header = crate::testing::part(&token, 0);
        assert_eq!(header, json!({"alg":"EdDSA","typ":"JWT","kid":public["kid"]}));
        let att = verify(&token, &public).unwrap();
        assert_eq!(att, Attestation { subject: AGENT_ID.into(), jti: "att-1".into(), iat: NOW, exp: NOW + 120 });
    }

    #[test]
    fn p256_attestation() {
        let (private, public) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 300, "att-2").unwrap();
        assert_eq!(crate::testing::part(&token, 0)["alg"], "ES256");
        assert_eq!(verify(&token, &public).unwrap().jti, "att-2");
    }

    #[test]
    fn forged_signature() {
        let (_, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let (attacker, _) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&attacker, AGENT_ID, ISSUER, NOW, 60, "att-1").unwrap();
        // The header names the attacker's kid; without it, only the signature can tell.
        let token = crate::testing::with_header(&token, |h| {
            h.as_object_mut().unwrap().remove("kid");
        });
        assert_eq!(code(verify(&token, &public)), "bad_signature");
        let (_, p256_public) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        let (p256_attacker, _) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        let mut token = sign_attestation(&p256_attacker, AGENT_ID, ISSUER, NOW, 60, "att-1").unwrap();
        token = crate::testing::with_header(&token, |h| h["kid"] = p256_public["kid"].clone());
        assert_eq!(code(verify(&token, &p256_public)), "bad_signature");
    }

    #[test]
    fn tampered_claims() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 60, "att-1").unwrap();
        let other = with_payload(&token, |p| p["sub"] = json!("spiffe://mandate.local/agent/admin-bot"));
        assert_eq!(code(verify(&other, &public)), "bad_signature");
    }

    #[test]
    fn kid_of_another_key() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 60, "att-1").unwrap();
        let token = crate::testing::with_header(&token, |h| h["kid"] = json!("rotated-key"));
        assert_eq!(code(verify(&token, &public)), "unknown_kid");
    }

    #[test]
    fn alg_none() {
        let (_, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = forge(&json!({"alg":"none","typ":"JWT"}), &claims(), |_| Vec::new());
        assert_eq!(code(verify(&token, &public)), "unsupported_alg");
    }

    #[test]
    fn hs256_keyed_with_the_public_key() {
        for alg in [AgentKeyAlg::Ed25519, AgentKeyAlg::P256] {
            let (_, public) = generate_agent_key(alg).unwrap();
            let x = crate::jws::b64_decode(public["x"].as_str().unwrap()).unwrap();
            let jwk_text = public.to_string();
            for secret in [x.as_slice(), public["x"].as_str().unwrap().as_bytes(), jwk_text.as_bytes()] {
                let token = hs256(&json!({"alg":"HS256","typ":"JWT"}), &claims(), secret);
                assert_eq!(code(verify(&token, &public)), "unsupported_alg", "{alg}");
            }
        }
    }

    #[test]
    fn rs256_against_an_ed25519_key() {
        let (_, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let sign = jwt_sign(&rsa_key().encoding, jsonwebtoken::Algorithm::RS256);
        let token = forge(&json!({"alg":"RS256","typ":"JWT"}), &claims(), sign);
        assert_eq!(code(verify(&token, &public)), "unsupported_alg");
    }

    #[test]
    fn alg_of_the_other_key_type() {
        let (ed_private, ed_public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let (p_private, p_public) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        let ed_token = sign_attestation(&ed_private, AGENT_ID, ISSUER, NOW, 60, "a").unwrap();
        let p_token = sign_attestation(&p_private, AGENT_ID, ISSUER, NOW, 60, "a").unwrap();
        assert_eq!(code(verify(&ed_token, &p_public)), "alg_key_mismatch");
        assert_eq!(code(verify(&p_token, &ed_public)), "alg_key_mismatch");
    }

    #[test]
    fn mandate_presented_as_attestation() {
        let server_key = Arc::new(SigningKey::generate());
        let mut claims = mandate_claims();
        claims.iss = AGENT_ID.into();
        claims.aud = ISSUER.into();
        let mandate = Minter::new(server_key.clone()).mint(&claims).unwrap();
        let jwk = server_key.public_key().to_jwk();
        assert_eq!(code(verify(&mandate, &jwk)), "wrong_type");
    }

    #[test]
    fn typ_other_than_jwt() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        for typ in ["at+jwt", "application/at+jwt", "dpop+jwt", "JOSE"] {
            let token = sign_ed25519(&private, &json!({"alg":"EdDSA","typ":typ}), &claims());
            assert_eq!(code(verify(&token, &public)), "wrong_type", "{typ}");
        }
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &claims());
        assert!(verify(&token, &public).is_ok());
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA","typ":"jwt"}), &claims());
        assert!(verify(&token, &public).is_ok());
    }

    #[test]
    fn lifetime_above_five_minutes() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 301, "att-1").unwrap();
        assert_eq!(verify(&token, &public).err(), Some(TokenError::LifetimeTooLong { lifetime: 301, max: 300 }));
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 300, "att-1").unwrap();
        assert!(verify(&token, &public).is_ok());
    }

    #[test]
    fn iss_is_not_sub() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let mut c = claims();
        c["sub"] = json!("spiffe://mandate.local/agent/admin-bot");
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
        assert_eq!(code(verify(&token, &public)), "wrong_subject");
        let mut c = claims();
        c["iss"] = json!("spiffe://mandate.local/agent/admin-bot");
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
        assert_eq!(code(verify(&token, &public)), "wrong_issuer");
        // Signed for another agent with this agent's key.
        let token = sign_attestation(&private, "spiffe://mandate.local/agent/admin-bot", ISSUER, NOW, 60, "a").unwrap();
        assert_eq!(code(verify(&token, &public)), "wrong_issuer");
    }

    #[test]
    fn wrong_audience() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, "https://evil.example.com", NOW, 60, "a").unwrap();
        assert_eq!(code(verify(&token, &public)), "wrong_audience");
        let mut c = claims();
        c["aud"] = json!(["https://evil.example.com", ISSUER]);
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
        assert!(verify(&token, &public).is_ok());
    }

    #[test]
    fn time_window() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW - 400, 300, "a").unwrap();
        assert_eq!(code(verify(&token, &public)), "expired");
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW + 600, 60, "a").unwrap();
        assert_eq!(code(verify(&token, &public)), "issued_in_future");
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW + 50, 60, "a").unwrap();
        assert!(verify(&token, &public).is_ok(), "within leeway");
        let mut c = claims();
        c["nbf"] = json!(NOW + 120);
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
        assert_eq!(code(verify(&token, &public)), "not_yet_valid");
    }

    #[test]
    fn required_claims_and_jti_length() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        for claim in ["iss", "sub", "aud", "exp", "iat", "jti"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(claim);
            let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
            assert_eq!(code(verify(&token, &public)), "missing_claim", "{claim}");
        }
        for jti in [json!(""), json!("j".repeat(257)), json!(7)] {
            let mut c = claims();
            c["jti"] = jti;
            let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
            assert_eq!(code(verify(&token, &public)), "invalid_claim");
        }
        let mut c = claims();
        c["jti"] = json!("j".repeat(256));
        let token = sign_ed25519(&private, &json!({"alg":"EdDSA"}), &c);
        assert!(verify(&token, &public).is_ok());
    }

    #[test]
    fn registered_jwk_rules() {
        let (private, public) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        assert!(validate_agent_jwk(&public).is_ok());
        assert!(validate_agent_jwk(&generate_agent_key(AgentKeyAlg::P256).unwrap().1).is_ok());
        let err = validate_agent_jwk(&private).unwrap_err();
        assert_eq!(err.code(), "private_key_material");
        assert!(err.to_string().contains("`d`"));
        assert_eq!(validate_agent_jwk(&rsa_key().jwk).unwrap_err().code(), "unsupported_key");
        assert_eq!(validate_agent_jwk(&json!({"kty":"oct","k":"c2VjcmV0"})).unwrap_err().code(), "unsupported_key");
        let p384 = json!({"kty":"EC","crv":"P-384","x":"AA","y":"AA"});
        assert_eq!(validate_agent_jwk(&p384).unwrap_err().code(), "unsupported_key");
        assert_eq!(validate_agent_jwk(&json!("a string")).unwrap_err().code(), "invalid_key");
        // A private key registered by mistake is refused when verifying too.
        let token = sign_attestation(&private, AGENT_ID, ISSUER, NOW, 60, "a").unwrap();
        assert_eq!(code(verify(&token, &private)), "private_key_material");
    }

    #[test]
    fn peek_trusts_nothing_but_decodes() {
        let token = forge(&json!({"alg":"none","kid":"k"}), &claims(), |_| Vec::new());
        let jwt = peek(&token).unwrap();
        assert_eq!(jwt.alg, "none");
        assert_eq!(jwt.kid.as_deref(), Some("k"));
        assert_eq!(jwt.typ, None);
        assert_eq!(jwt.iss(), Some(AGENT_ID));
        assert_eq!(jwt.sub(), Some(AGENT_ID));
        assert_eq!(peek("not a token").unwrap_err().code(), "malformed");
    }
}
