//! Tokens from trusted external issuers: Kubernetes service account tokens, SPIRE JWT-SVIDs,
//! CI OIDC tokens. The issuer's claim rules map a verified token to a registered agent.

use std::fmt;

use mandate_core::{AgentName, ClaimRule, Issuer, SpiffeId};
use serde_json::Value;

use crate::TokenError;
use crate::claims;
use crate::error::clip;
use crate::jwk::{self, Alg, KeyPolicy, ParsedJwk};
use crate::jws;

/// The algorithms accepted from external issuers. Never HMAC, never `none`.
const ISSUER_ALGS: [Alg; 9] = [Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512, Alg::ES256, Alg::ES384, Alg::EdDSA];

/// Key types this verifier understands.
const KNOWN_KEY_TYPES: [&str; 3] = ["RSA", "EC", "OKP"];

/// Verifies tokens of one trusted issuer against its JWKS.
#[derive(Clone)]
pub struct ExternalVerifier {
    issuer: String,
    audience: String,
    keys: Vec<ParsedJwk>,
    rules: Vec<ClaimRule>,
    max_lifetime_secs: Option<u64>,
    allow_reuse: bool,
}

/// A verified external token, mapped to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAttestation {
    /// The agent the first matching claim rule named.
    pub agent: AgentName,
    /// The token's `sub`, unchanged (a SPIFFE ID for a JWT-SVID).
    pub subject: String,
    /// The token's `jti`, if it has one: the caller may refuse to see it twice.
    pub jti: Option<String>,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at (seconds since the epoch), if the token says.
    pub iat: Option<i64>,
}

impl ExternalVerifier {
    /// Builds a verifier from an issuer's configuration, parsing its JWKS (RFC 7517 §5).
    ///
    /// Keys of a type or curve not understood, or marked for anything but signing, are
    /// skipped. Refused outright: a set that is not `{"keys":[…]}`, symmetric (`oct`) keys,
    /// keys holding private material, malformed or weak keys (RSA outside 2048 to 4096 bits),
    /// duplicate `kid`s, and a set left with no signing key.
    pub fn new(issuer: &Issuer) -> Result<Self, TokenError> {
        let entries = issuer
            .jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| TokenError::InvalidJwks("expected an object with a `keys` array".into()))?;
        let mut keys: Vec<ParsedJwk> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if entry.get("kty").and_then(Value::as_str) == Some("oct") {
                return Err(TokenError::InvalidJwks(format!("key {i}: symmetric (`oct`) keys are refused")));
            }
            if !is_signing_key(entry) {
                continue;
            }
            let key = match jwk::parse_public(entry, KeyPolicy::Issuer) {
                Ok(key) => key,
                // A curve not understood here: skipped like an unknown key type.
                Err(TokenError::UnsupportedKey(_)) => continue,
                Err(TokenError::PrivateKeyMaterial) => return Err(TokenError::PrivateKeyMaterial),
                Err(TokenError::InvalidKey(reason)) => {
                    return Err(TokenError::InvalidJwks(format!("key {i}: {reason}")));
                }
                Err(other) => return Err(TokenError::InvalidJwks(format!("key {i}: {other}"))),
            };
            if let Some(kid) = &key.kid
                && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
            {
                return Err(TokenError::InvalidJwks(format!("duplicate `kid` `{}`", clip(kid))));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(TokenError::InvalidJwks("it holds no signing key".into()));
        }
        Ok(ExternalVerifier {
            issuer: issuer.issuer.clone(),
            audience: issuer.audience.clone(),
            keys,
            rules: issuer.rules.clone(),
            max_lifetime_secs: issuer.max_token_lifetime_secs,
            allow_reuse: issuer.allow_token_reuse,
        })
    }

    /// Verifies a token of this issuer at `now_secs` and maps it to an agent.
    ///
    /// Checks, in order: size and shape; `alg` is one of RS256/384/512, PS256/384/512,
    /// ES256/384 or EdDSA; `typ` is absent, `JWT` or `JOSE`; `kid` picks the key (without one,
    /// only a single-key set is usable); `alg` fits the key's type and its own `alg`; the
    /// signature; `iss`; `aud`; `exp` (required), `nbf` and `iat` against the clock with
    /// leeway; `sub` is present (and a valid SPIFFE ID if it claims to be one); then the
    /// issuer's claim rules in order, the first mapping a string claim to an agent name
    /// winning.
    pub fn verify(&self, token: &str, now_secs: i64, leeway_secs: i64) -> Result<ExternalAttestation, TokenError> {
        let jws = jws::parse(token)?;
        let alg = Alg::parse_allowed(&jws.header.alg, &ISSUER_ALGS)?;
        match jws.header.typ.as_deref() {
            None => {}
            Some(typ) if typ.eq_ignore_ascii_case("JWT") || typ.eq_ignore_ascii_case("JOSE") => {}
            Some(other) => {
                return Err(TokenError::WrongType { found: Some(clip(other)), expected: "JWT" });
            }
        }
        let key = match (&jws.header.kid, self.keys.as_slice()) {
            (Some(kid), _) => self.keys.iter().find(|k| k.kid.as_ref() == Some(kid)).ok_or_else(|| TokenError::UnknownKid(clip(kid)))?,
            (None, [only]) => only,
            (None, _) => return Err(TokenError::MissingKid),
        };
        key.check_alg(alg)?;
        if !key.key.verify(alg, jws.signing_input, jws.signature_b64()) {
            return Err(TokenError::BadSignature);
        }

        let claims = jws.claims()?;
        claims::check_issuer(&claims, &self.issuer)?;
        claims::check_audience(&claims, &self.audience)?;
        let exp = claims::required_numeric_date(&claims, "exp")?;
        let nbf = claims::numeric_date(&claims, "nbf")?;
        let iat = claims::numeric_date(&claims, "iat")?;
        claims::check_times(exp, nbf, iat, now_secs, leeway_secs)?;
        let subject = claims::required_string(&claims, "sub")?;
        if subject.starts_with("spiffe://") {
            SpiffeId::parse(subject).map_err(|e| TokenError::invalid_claim("sub", e.to_string()))?;
        }
        let jti = claims::string(&claims, "jti")?;
        let agent = self
            .rules
            .iter()
            .find_map(|rule| claims.get(&rule.claim).and_then(Value::as_str).and_then(|v| rule.map(v)))
            .ok_or(TokenError::NoRuleMatched)?;
        Ok(ExternalAttestation { agent, subject: subject.to_owned(), jti: jti.map(str::to_owned), exp, iat })
    }

    /// [`Self::verify`], then the issuer's rules for using a token to attest: it lives at most
    /// the issuer's `max_token_lifetime_secs` (`default_max_lifetime_secs` when it sets none),
    /// measured as `exp - iat`, or `exp - now` without `iat`; and it has a `jti` unless the
    /// issuer allows token reuse. (Seeing a `jti` only once is the caller's part.)
    pub fn verify_for_attestation(
        &self,
        token: &str,
        now_secs: i64,
        leeway_secs: i64,
        default_max_lifetime_secs: i64,
    ) -> Result<ExternalAttestation, TokenError> {
        let att = self.verify(token, now_secs, leeway_secs)?;
        self.check_use(&att, now_secs, default_max_lifetime_secs)?;
        Ok(att)
    }

    fn check_use(&self, att: &ExternalAttestation, now_secs: i64, default_max_lifetime_secs: i64) -> Result<(), TokenError> {
        let max = self.max_lifetime_secs.map_or(default_max_lifetime_secs, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let lifetime = att.exp.saturating_sub(att.iat.unwrap_or(now_secs));
        if lifetime > max {
            return Err(TokenError::LifetimeTooLong { lifetime, max });
        }
        if att.jti.is_none() && !self.allow_reuse {
            return Err(TokenError::JtiRequired);
        }
        Ok(())
    }

    /// Whether a token without `jti` is accepted (each use after the first is a reuse).
    pub fn allows_reuse(&self) -> bool {
        self.allow_reuse
    }

    /// Does the issuer's JWKS hold a signing key with this id? (A miss may mean the JWKS needs
    /// refreshing.)
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The `iss` this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

impl fmt::Debug for ExternalVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kids", &self.keys.iter().map(|k| k.kid.as_deref()).collect::<Vec<_>>())
            .field("rules", &self.rules)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .field("allow_reuse", &self.allow_reuse)
            .finish()
    }
}

/// Is this JWKS entry a key to consider: a type understood here (RFC 7517 §5 asks to ignore
/// the others), not marked for encryption, not restricted to an algorithm other than an
/// accepted signature algorithm, and allowed to verify?
fn is_signing_key(entry: &Value) -> bool {
    let member = |name| entry.get(name).and_then(Value::as_str);
    let known_type = member("kty").is_some_and(|kty| KNOWN_KEY_TYPES.contains(&kty));
    let signing_use = member("use").is_none_or(|u| u == "sig");
    let signing_alg = member("alg").is_none_or(|a| Alg::parse_allowed(a, &ISSUER_ALGS).is_ok());
    let verifies = entry.get("key_ops").is_none_or(|ops| ops.as_array().is_some_and(|ops| ops.iter().any(|o| o == "verify")));
    known_type && signing_use && signing_alg && verifies
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::Algorithm as J;
    use serde_json::json;

    use super::*;
    use crate::testing::{NOW, ed25519, forge, hs256, jwt_sign, rsa_key, with_payload};
    use crate::{AgentKeyAlg, SigningKey, generate_agent_key};

    const K8S_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const AUD: &str = "https://mandate.example.com";

    fn issuer(jwks: Value, rules: &[(&str, &str)]) -> Issuer {
        Issuer {
            issuer: K8S_ISSUER.into(),
            audience: AUD.into(),
            jwks,
            jwks_url: None,
            rules: rules.iter().map(|(c, p)| ClaimRule::new(c, p).unwrap()).collect(),
            created_at_ms: 0,
            max_token_lifetime_secs: None,
            allow_token_reuse: false,
        }
    }

    fn rsa_jwk(kid: &str) -> Value {
        let mut jwk = rsa_key().jwk.clone();
        jwk["kid"] = json!(kid);
        jwk
    }

    fn k8s_verifier() -> ExternalVerifier {
        let jwks = json!({"keys": [rsa_jwk("k8s-1")]});
        ExternalVerifier::new(&issuer(jwks, &[("sub", "system:serviceaccount:prod:{agent}")])).unwrap()
    }

    fn k8s_claims() -> Value {
        json!({
            "iss": K8S_ISSUER,
            "sub": "system:serviceaccount:prod:support-bot",
            "aud": [AUD],
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 3600,
            "jti": "5c0c1c9e-0bd8-4d3f-9d0c-7d3a3c3f2f11",
            "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "support-bot"}}
        })
    }

    fn rs256(header: Value, claims: &Value) -> String {
        forge(&header, claims, jwt_sign(&rsa_key().encoding, J::RS256))
    }

    fn code(result: Result<ExternalAttestation, TokenError>) -> &'static str {
        result.expect_err("the token should be refused").code()
    }

    #[test]
    fn an_issuer_bounds_token_lifetime_and_requires_a_jti_unless_reuse_is_allowed() {
        let jwks = json!({"keys": [rsa_jwk("k8s-1")]});
        let rules = [("sub", "system:serviceaccount:prod:{agent}")];
        let default = ExternalVerifier::new(&issuer(jwks.clone(), &rules)).unwrap();
        let token = |edit: &dyn Fn(&mut Value)| {
            let mut c = k8s_claims();
            edit(&mut c);
            rs256(json!({"alg":"RS256","kid":"k8s-1"}), &c)
        };
        // The k8s token lives an hour: above the default (the attestation limit), within 3600.
        let hour = token(&|_| {});
        assert_eq!(
            default.verify_for_attestation(&hour, NOW, 60, 300).unwrap_err(),
            TokenError::LifetimeTooLong { lifetime: 3600, max: 300 }
        );
        let mut configured = issuer(jwks.clone(), &rules);
        configured.max_token_lifetime_secs = Some(3600);
        let configured = ExternalVerifier::new(&configured).unwrap();
        assert!(configured.verify_for_attestation(&hour, NOW, 60, 300).is_ok());
        let longer = token(&|c| c["exp"] = json!(NOW + 3601));
        assert_eq!(code(configured.verify_for_attestation(&longer, NOW, 60, 300)), "lifetime_too_long");
        // Without `iat`, what is left of it counts.
        let no_iat = token(&|c| {
            c.as_object_mut().unwrap().remove("iat");
            c["exp"] = json!(NOW + 400);
        });
        assert_eq!(code(default.verify_for_attestation(&no_iat, NOW, 60, 300)), "lifetime_too_long");
        assert!(default.verify_for_attestation(&no_iat, NOW + 100, 60, 300).is_ok());
        // No `jti`: refused unless the issuer allows reuse.
        let no_jti = token(&|c| {
            c.as_object_mut().unwrap().remove("jti");
            c["exp"] = json!(NOW + 300);
        });
        assert_eq!(default.verify_for_attestation(&no_jti, NOW, 60, 300).unwrap_err(), TokenError::JtiRequired);
        assert_eq!(TokenError::JtiRequired.code(), "jti_required");
        assert!(!default.allows_reuse());
        let mut reusable = issuer(jwks, &rules);
        reusable.allow_token_reuse = true;
        let reusable = ExternalVerifier::new(&reusable).unwrap();
        assert!(reusable.allows_reuse());
        let att = reusable.verify_for_attestation(&no_jti, NOW, 60, 300).unwrap();
        assert_eq!((att.jti, att.iat), (None, Some(NOW)));
    }

    #[test]
    fn kubernetes_service_account_token_with_rsa() {
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &k8s_claims());
        let att = k8s_verifier().verify(&token, NOW + 5, 60).unwrap();
        assert_eq!(att.agent.as_str(), "support-bot");
        assert_eq!(att.subject, "system:serviceaccount:prod:support-bot");
        assert_eq!(att.jti.as_deref(), Some("5c0c1c9e-0bd8-4d3f-9d0c-7d3a3c3f2f11"));
        assert_eq!(att.exp, NOW + 3600);
    }

    #[test]
    fn rsa_pss() {
        let token = forge(&json!({"alg":"PS256","kid":"k8s-1"}), &k8s_claims(), jwt_sign(&rsa_key().encoding, J::PS256));
        assert!(k8s_verifier().verify(&token, NOW, 60).is_ok());
        let token = forge(&json!({"alg":"RS512","kid":"k8s-1","typ":"JOSE"}), &k8s_claims(), jwt_sign(&rsa_key().encoding, J::RS512));
        assert!(k8s_verifier().verify(&token, NOW, 60).is_ok());
    }

    #[test]
    fn spire_jwt_svid_with_es256() {
        let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "spire-1", "use": "sig",
            "x": crate::jws::b64_encode(point.x().unwrap()),
            "y": crate::jws::b64_encode(point.y().unwrap()),
        });
        let rules = [("sub", "spiffe://cluster.local/ns/prod/sa/{agent}")];
        let verifier = ExternalVerifier::new(&issuer(json!({"keys":[jwk]}), &rules)).unwrap();
        let svid = "spiffe://cluster.local/ns/prod/sa/support-bot";
        let claims = json!({"iss": K8S_ISSUER, "sub": svid, "aud": AUD, "exp": NOW + 300, "iat": NOW});
        let sign = |input: &[u8]| {
            let sig: p256::ecdsa::Signature = p256::ecdsa::signature::Signer::sign(&key, input);
            sig.to_bytes().to_vec()
        };
        let token = forge(&json!({"alg":"ES256","kid":"spire-1","typ":"JWT"}), &claims, sign);
        let att = verifier.verify(&token, NOW, 60).unwrap();
        assert_eq!(att.agent.as_str(), "support-bot");
        assert_eq!(att.subject, svid);
        assert_eq!(att.jti, None);

        let bad = json!({"iss": K8S_ISSUER, "sub": "spiffe://cluster.local/ns/prod/sa/../x", "aud": AUD, "exp": NOW + 300});
        let token = forge(&json!({"alg":"ES256","kid":"spire-1"}), &bad, sign);
        assert_eq!(code(verifier.verify(&token, NOW, 60)), "invalid_claim");
    }

    #[test]
    fn es384_issuer() {
        // A fixed vector: the private key was discarded after signing.
        let jwk = json!({
            "kty": "EC", "crv": "P-384", "kid": "p384-1",
            "x": "nz1AcgRtWwkJD4KQILbOVmk_cI9VK9T_LtYJaV4Lxinuwad63-CwIgi2kmaptSBm",
            "y": "yOY8Ccwz6UKpx6UWeW7vgQsVkaMBK7QOtA5u9MTy8MFbDXHdj90qlKG_bk1HGFXR"
        });
        let token = "eyJhbGciOiJFUzM4NCIsImtpZCI6InAzODQtMSIsInR5cCI6IkpXVCJ9.\
            eyJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMuY2x1c3Rlci5sb2NhbCIsInN1YiI6InN5c3RlbTpzZXJ2aWNlYWNjb3VudDpwcm9kOnN1cHBvcnQtYm90IiwiYXVkIjoiaHR0cHM6Ly9tYW5kYXRlLmV4YW1wbGUuY29tIiwiaWF0IjoxNzkwMDAwMDAwLCJleHAiOjE3OTAwMDM2MDB9.\
            YxWNr_xMRIFgKwm4fcawrIDWhUMpZ-QDEncWPilp9TJSXC4fkm6iStaml4rNWAKS9DgtQSiCk34aEls5FKqMQrP-0Lq9ofV_WAegFjFbz4JkrEg9K45TFO_Iw4LUvnze";
        let rules = [("sub", "system:serviceaccount:prod:{agent}")];
        let verifier = ExternalVerifier::new(&issuer(json!({"keys":[jwk.clone()]}), &rules)).unwrap();
        assert_eq!(verifier.verify(token, NOW, 60).unwrap().agent.as_str(), "support-bot");
        let tampered = with_payload(token, |p| p["exp"] = json!(NOW + 7200));
        assert_eq!(code(verifier.verify(&tampered, NOW, 60)), "bad_signature");

        let mut off_curve = jwk;
        off_curve["y"] = json!(crate::jws::b64_encode([1u8; 48]));
        let err = ExternalVerifier::new(&issuer(json!({"keys":[off_curve]}), &rules)).unwrap_err();
        assert_eq!(err.code(), "invalid_jwks");
    }

    #[test]
    fn eddsa_issuer() {
        let key = SigningKey::generate();
        let jwks = crate::jwks(&[key.public_key()]);
        let verifier = ExternalVerifier::new(&issuer(jwks, &[("sub", "system:serviceaccount:prod:{agent}")])).unwrap();
        let token = forge(&json!({"alg":"EdDSA","kid":key.kid()}), &k8s_claims(), ed25519(&key));
        assert_eq!(verifier.verify(&token, NOW, 60).unwrap().agent.as_str(), "support-bot");
    }

    #[test]
    fn unknown_kid() {
        let token = rs256(json!({"alg":"RS256","kid":"k8s-2"}), &k8s_claims());
        let verifier = k8s_verifier();
        assert_eq!(code(verifier.verify(&token, NOW, 60)), "unknown_kid");
        assert!(verifier.has_kid("k8s-1"));
        assert!(!verifier.has_kid("k8s-2"));
    }

    #[test]
    fn kid_may_be_omitted_only_for_a_single_key_set() {
        let token = rs256(json!({"alg":"RS256"}), &k8s_claims());
        assert!(k8s_verifier().verify(&token, NOW, 60).is_ok());
        let other = SigningKey::generate().public_key().to_jwk();
        let two = ExternalVerifier::new(&issuer(json!({"keys":[rsa_jwk("k8s-1"), other]}), &[("sub", "{agent}")])).unwrap();
        assert_eq!(code(two.verify(&token, NOW, 60)), "missing_kid");
    }

    #[test]
    fn rs256_against_an_ed25519_key() {
        let key = SigningKey::generate();
        let verifier = ExternalVerifier::new(&issuer(crate::jwks(&[key.public_key()]), &[("sub", "{agent}")])).unwrap();
        let token = rs256(json!({"alg":"RS256","kid":key.kid()}), &k8s_claims());
        assert_eq!(code(verifier.verify(&token, NOW, 60)), "alg_key_mismatch");
        // And ES256 against an RSA key.
        let token = forge(&json!({"alg":"ES256","kid":"k8s-1"}), &k8s_claims(), |_| vec![0; 64]);
        assert_eq!(code(k8s_verifier().verify(&token, NOW, 60)), "alg_key_mismatch");
    }

    #[test]
    fn alg_pinned_by_the_jwk() {
        let mut jwk = rsa_jwk("k8s-1");
        jwk["alg"] = json!("RS512");
        let verifier = ExternalVerifier::new(&issuer(json!({"keys":[jwk]}), &[("sub", "{agent}")])).unwrap();
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &k8s_claims());
        assert_eq!(code(verifier.verify(&token, NOW, 60)), "alg_key_mismatch");
    }

    #[test]
    fn hmac_and_none_are_never_accepted() {
        let n = crate::jws::b64_decode(rsa_key().jwk["n"].as_str().unwrap()).unwrap();
        for secret in [n.as_slice(), rsa_jwk("k8s-1").to_string().as_bytes()] {
            let token = hs256(&json!({"alg":"HS256","kid":"k8s-1"}), &k8s_claims(), secret);
            assert_eq!(code(k8s_verifier().verify(&token, NOW, 60)), "unsupported_alg");
        }
        let token = forge(&json!({"alg":"none"}), &k8s_claims(), |_| Vec::new());
        assert_eq!(code(k8s_verifier().verify(&token, NOW, 60)), "unsupported_alg");
        let token = forge(&json!({"alg":"ES512","kid":"k8s-1"}), &k8s_claims(), |_| vec![0; 132]);
        assert_eq!(code(k8s_verifier().verify(&token, NOW, 60)), "unsupported_alg");
    }

    #[test]
    fn forged_and_tampered_tokens() {
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &k8s_claims());
        let tampered = with_payload(&token, |p| p["sub"] = json!("system:serviceaccount:prod:admin-bot"));
        assert_eq!(code(k8s_verifier().verify(&tampered, NOW, 60)), "bad_signature");
        let truncated = &token[..token.len() - 4];
        assert_eq!(code(k8s_verifier().verify(truncated, NOW, 60)), "bad_signature");
    }

    #[test]
    fn typ_iss_aud_and_time() {
        let v = k8s_verifier();
        let h = json!({"alg":"RS256","kid":"k8s-1","typ":"at+jwt"});
        assert_eq!(code(v.verify(&rs256(h, &k8s_claims()), NOW, 60)), "wrong_type");
        let h = || json!({"alg":"RS256","kid":"k8s-1"});
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut c = k8s_claims();
            f(&mut c);
            rs256(h(), &c)
        };
        assert_eq!(code(v.verify(&edit(&|c| c["iss"] = json!("https://evil.example.com")), NOW, 60)), "wrong_issuer");
        assert_eq!(code(v.verify(&edit(&|c| c["aud"] = json!(["vault"])), NOW, 60)), "wrong_audience");
        assert_eq!(
            code(v.verify(
                &edit(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                NOW,
                60
            )),
            "missing_claim"
        );
        assert_eq!(
            code(v.verify(
                &edit(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
                NOW,
                60
            )),
            "missing_claim"
        );
        let token = rs256(h(), &k8s_claims());
        assert_eq!(code(v.verify(&token, NOW + 3660, 60)), "expired");
        assert!(v.verify(&token, NOW + 3659, 60).is_ok());
        assert_eq!(code(v.verify(&token, NOW - 61, 60)), "not_yet_valid");
        let future_iat = edit(&|c| {
            c.as_object_mut().unwrap().remove("nbf");
            c["iat"] = json!(NOW + 600);
        });
        assert_eq!(code(v.verify(&future_iat, NOW, 60)), "issued_in_future");
    }

    #[test]
    fn claim_rules_in_order() {
        let jwks = json!({"keys": [rsa_jwk("k8s-1")]});
        let rules =
            [("repository", "acme/{agent}"), ("email", "{agent}@agents.acme.example"), ("sub", "system:serviceaccount:prod:{agent}")];
        let v = ExternalVerifier::new(&issuer(jwks, &rules)).unwrap();
        let mut c = k8s_claims();
        c["repository"] = json!(["not", "a", "string"]);
        c["email"] = json!("triage-bot@agents.acme.example");
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &c);
        assert_eq!(v.verify(&token, NOW, 60).unwrap().agent.as_str(), "triage-bot");
        c["repository"] = json!("acme/release-bot");
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &c);
        assert_eq!(v.verify(&token, NOW, 60).unwrap().agent.as_str(), "release-bot");
    }

    #[test]
    fn no_rule_matched() {
        let mut c = k8s_claims();
        c["sub"] = json!("system:serviceaccount:dev:support-bot");
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &c);
        assert_eq!(code(k8s_verifier().verify(&token, NOW, 60)), "no_rule_matched");
        c["sub"] = json!("system:serviceaccount:prod:Not/An/Agent");
        let token = rs256(json!({"alg":"RS256","kid":"k8s-1"}), &c);
        assert_eq!(code(k8s_verifier().verify(&token, NOW, 60)), "no_rule_matched");
    }

    #[test]
    fn jwks_parsing() {
        let build = |keys: Value| ExternalVerifier::new(&issuer(json!({"keys": keys}), &[("sub", "{agent}")]));
        let code_of = |keys: Value| build(keys).err().map(|e| e.code());
        assert_eq!(code_of(json!([{"kty":"oct","k":"c2VjcmV0","kid":"h"}])), Some("invalid_jwks"));
        assert_eq!(code_of(json!([rsa_jwk("a"), {"kty":"oct","k":"c2VjcmV0"}])), Some("invalid_jwks"));
        assert_eq!(code_of(json!([])), Some("invalid_jwks"));
        assert_eq!(code_of(json!([rsa_jwk("a"), rsa_jwk("a")])), Some("invalid_jwks"));
        let weak = json!({"kty":"RSA","kid":"w","n":crate::jws::b64_encode([0xffu8; 128]),"e":"AQAB"});
        assert_eq!(code_of(json!([weak])), Some("invalid_jwks"));
        let (private, _) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        assert_eq!(code_of(json!([private])), Some("private_key_material"));
        let not_a_set = ExternalVerifier::new(&issuer(json!([rsa_jwk("a")]), &[]));
        assert_eq!(not_a_set.err().map(|e| e.code()), Some("invalid_jwks"));

        // Keys not understood or not for signing are skipped, as RFC 7517 §5 asks.
        let mut enc = rsa_jwk("enc-1");
        enc["use"] = json!("enc");
        let mut oaep = rsa_jwk("oaep-1");
        oaep["alg"] = json!("RSA-OAEP-256");
        let x25519 = json!({"kty":"OKP","crv":"X25519","kid":"x","x":crate::jws::b64_encode([9u8; 32])});
        let p521 = json!({"kty":"EC","crv":"P-521","kid":"p","x":"AA","y":"AA"});
        let future = json!({"kty":"AKP","kid":"pq","pub":"AA"});
        let mut wrap = rsa_jwk("wrap-1");
        wrap["key_ops"] = json!(["wrapKey"]);
        let v = build(json!([enc, oaep, x25519, p521, future, wrap, rsa_jwk("sig-1")])).unwrap();
        assert!(v.has_kid("sig-1"));
        for skipped in ["enc-1", "oaep-1", "x", "p", "pq", "wrap-1"] {
            assert!(!v.has_kid(skipped), "{skipped}");
        }
        assert_eq!(code_of(json!([{"kty":"RSA","kid":"e"}])), Some("invalid_jwks"));
        assert_eq!(v.issuer(), K8S_ISSUER);
        assert!(format!("{v:?}").contains("sig-1"));
    }
}
