//! Task mandates: the short-lived tokens Mandate issues for one task of one agent.
//!
//! A mandate is an RFC 9068 JWT access token signed with EdDSA whose `authorization_details`
//! (RFC 9396) carry the task's declared intent. Verification follows RFC 8725: a fixed
//! algorithm allow-list, an explicit `typ`, a known `kid`, exact `iss` and `aud` checks, and
//! time checked against the caller's clock.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mandate_core::{AgentName, DomainError, Intent, IntentRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::claims;
use crate::error::clip;
use crate::jws::{self, MAX_TOKEN_BYTES};
use crate::{PublicKey, SigningKey, TokenError};

/// The JWS `typ` of a mandate (RFC 9068 §2.1).
pub const MANDATE_TYP: &str = "at+jwt";

/// Claims a mandate must carry: those RFC 9068 §2.2 requires, and Mandate's own.
const REQUIRED_CLAIMS: [&str; 11] =
    ["iss", "sub", "aud", "client_id", "iat", "exp", "jti", "task_id", "agent", "scope", "authorization_details"];

/// The claims of a mandate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MandateClaims {
    /// Mandate's issuer URL.
    pub iss: String,
    /// The SPIFFE ID of the agent whose authority the mandate carries: the agent itself, or for
    /// a delegated mandate the agent that opened the root task (RFC 8693 §4.1). The agent acting
    /// is [`MandateClaims::actor_id`].
    pub sub: String,
    /// The resource the mandate is for. Tokens may carry an array; once verified this holds
    /// the audience the verifier accepted.
    pub aud: String,
    /// The acting agent's SPIFFE ID (RFC 9068 §2.2).
    pub client_id: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before. A token without it has no lower bound (0).
    #[serde(default)]
    pub nbf: i64,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// The mandate's unique id.
    pub jti: String,
    /// The task this mandate was issued for.
    pub task_id: String,
    /// The acting agent's name.
    pub agent: String,
    /// The granted actions, space-joined: see [`MandateClaims::scope_for`].
    pub scope: String,
    /// Exactly one `agent_task` entry: the granted intent.
    pub authorization_details: Vec<IntentRequest>,
    /// The delegation chain (RFC 8693 §4.1): the outermost actor is the current (acting) agent,
    /// the nested ones the agents before it; the root agent is `sub`, not repeated here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The task this one was delegated from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    /// Delegation depth: 0 for a task the agent opened itself.
    #[serde(default)]
    pub depth: u32,
}

/// An RFC 8693 §4.1 actor: who acts, and the prior actors nested inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    /// The actor's identity (a SPIFFE ID for an agent).
    pub sub: String,
    /// The actor before this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl MandateClaims {
    /// The `scope` value for an intent: its actions (sorted and de-duplicated by
    /// [`IntentRequest::validate`]) joined with single spaces.
    pub fn scope_for(intent: &Intent) -> String {
        intent.actions.join(" ")
    }

    /// The SPIFFE ID of the agent acting with this mandate: the current actor (`act.sub`) of a
    /// delegated mandate, else `sub`.
    pub fn actor_id(&self) -> &str {
        self.act.as_ref().map_or(self.sub.as_str(), |a| a.sub.as_str())
    }

    /// The SPIFFE IDs of the agents who delegated, root first and the immediate delegator last
    /// (as many as [`MandateClaims::depth`]); empty for a mandate that was not delegated.
    pub fn delegators(&self) -> Vec<String> {
        let mut actors = Vec::new();
        let mut next = self.act.as_ref();
        while let Some(a) = next {
            actors.push(a.sub.clone());
            next = a.act.as_deref();
        }
        if actors.is_empty() {
            return actors;
        }
        // `actors` is current first; the current actor did not delegate, the root (`sub`) did.
        actors.remove(0);
        actors.push(self.sub.clone());
        actors.reverse();
        actors
    }

    /// Every agent of the chain, root first and the acting agent last.
    pub fn chain_with_actor(&self) -> Vec<String> {
        let mut all = self.delegators();
        all.push(self.actor_id().to_owned());
        all
    }

    /// The delegation claims agree with each other: `depth` counts the actors in `act`, a
    /// delegated mandate names its parent task and only a delegated one does, and `client_id`
    /// is the acting agent.
    fn check_chain(&self) -> Result<(), TokenError> {
        let mut actors = 0u32;
        let mut next = self.act.as_ref();
        while let Some(a) = next {
            if a.sub.is_empty() {
                return Err(TokenError::invalid_claim("act", "every actor needs a `sub`"));
            }
            actors = actors.saturating_add(1);
            next = a.act.as_deref();
        }
        if actors != self.depth {
            return Err(TokenError::invalid_claim("depth", "must count the actors in `act`"));
        }
        if self.parent_task_id.is_some() != (self.depth > 0) {
            return Err(TokenError::invalid_claim("parent_task_id", "a delegated mandate, and only one, names its parent task"));
        }
        if self.client_id != self.actor_id() {
            return Err(TokenError::invalid_claim("client_id", "must be the acting agent"));
        }
        Ok(())
    }

    /// Checks what both minting and verification require beyond the registered claims, and
    /// returns the granted intent.
    fn check(&self) -> Result<Intent, TokenError> {
        for (name, value) in [("sub", &self.sub), ("client_id", &self.client_id), ("jti", &self.jti), ("task_id", &self.task_id)] {
            if value.is_empty() {
                return Err(TokenError::invalid_claim(name, "must not be empty"));
            }
        }
        AgentName::parse(&self.agent)
            .map_err(|_| TokenError::invalid_claim("agent", format!("`{}` is not an agent name", clip(&self.agent))))?;
        if self.exp <= self.iat {
            return Err(TokenError::invalid_claim("exp", "must be after `iat`"));
        }
        self.check_chain()?;
        let [detail] = self.authorization_details.as_slice() else {
            return Err(TokenError::InvalidIntent("it must hold exactly one `agent_task` entry".into()));
        };
        let (intent, _) = detail.clone().validate().map_err(|e| {
            TokenError::InvalidIntent(match e {
                DomainError::InvalidIntent(reason) => reason,
                other => other.to_string(),
            })
        })?;
        if self.scope != Self::scope_for(&intent) {
            return Err(TokenError::IntentMismatch);
        }
        Ok(intent)
    }
}

/// Signs mandates with one of Mandate's keys.
pub struct Minter {
    key: Arc<SigningKey>,
    /// The header never changes for a key, so it is encoded once.
    header_b64: String,
}

impl Minter {
    /// A minter for `key`. Tokens carry the header `{"alg":"EdDSA","typ":"at+jwt","kid":…}`.
    pub fn new(key: Arc<SigningKey>) -> Self {
        let header_b64 = jws::encode_header(&json!({"alg": "EdDSA", "typ": MANDATE_TYP, "kid": key.kid()}));
        Minter { key, header_b64 }
    }

    /// Signs `claims`. Refuses claims a verifier would refuse for their content (an invalid
    /// intent, a `scope` that is not [`MandateClaims::scope_for`] the intent, an empty
    /// identifier) and tokens longer than [`MAX_TOKEN_BYTES`].
    pub fn mint(&self, claims: &MandateClaims) -> Result<String, TokenError> {
        claims.check()?;
        let token = jws::encode(&self.header_b64, claims, |input| Ok(self.key.sign_raw(input).to_vec()))?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TokenTooLarge { size: token.len(), max: MAX_TOKEN_BYTES });
        }
        Ok(token)
    }

    /// The id of the key this minter signs with.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter").field("kid", &self.kid()).finish_non_exhaustive()
    }
}

/// Verifies mandates issued by this Mandate server.
#[derive(Debug, Clone)]
pub struct MandateVerifier {
    issuer: String,
    audience: String,
    keys: HashMap<String, PublicKey>,
    leeway_secs: i64,
}

impl MandateVerifier {
    /// A verifier accepting tokens from `issuer` for `audience`, signed by any of `keys`
    /// (several during a key rotation). `leeway_secs` (at least 0) absorbs clock skew.
    pub fn new(issuer: &str, audience: &str, keys: &[PublicKey], leeway_secs: i64) -> Self {
        MandateVerifier {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: keys.iter().map(|k| (k.kid().to_owned(), k.clone())).collect(),
            leeway_secs: leeway_secs.max(0),
        }
    }

    /// Verifies a mandate at time `now_secs` (seconds since the epoch).
    ///
    /// Checks, in order: size and shape; `alg` is `EdDSA` (the only algorithm accepted, whatever
    /// the header says); `typ` is `at+jwt` or `application/at+jwt`; `kid` names a known key;
    /// the signature; the required claims; `iss`; `aud`; `exp`, `nbf` and `iat` against the
    /// clock with leeway; exactly one valid `agent_task` intent; `scope` matches it.
    pub fn verify(&self, token: &str, now_secs: i64) -> Result<VerifiedMandate, TokenError> {
        let jws = jws::parse(token)?;
        if jws.header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlg(clip(&jws.header.alg)));
        }
        match jws.header.typ.as_deref() {
            Some(typ) if typ.eq_ignore_ascii_case(MANDATE_TYP) || typ.eq_ignore_ascii_case("application/at+jwt") => {}
            other => {
                return Err(TokenError::WrongType { found: other.map(clip), expected: MANDATE_TYP });
            }
        }
        let kid = jws.header.kid.as_deref().ok_or(TokenError::MissingKid)?;
        let key = self.keys.get(kid).ok_or_else(|| TokenError::UnknownKid(clip(kid)))?;
        let signature = jws.signature().ok_or(TokenError::BadSignature)?;
        if !key.verify_raw(jws.signing_input, &signature) {
            return Err(TokenError::BadSignature);
        }

        let mut raw = jws.claims()?;
        if let Some(missing) = REQUIRED_CLAIMS.iter().find(|c| !raw.contains_key(**c)) {
            return Err(TokenError::MissingClaim(missing));
        }
        claims::check_issuer(&raw, &self.issuer)?;
        claims::check_audience(&raw, &self.audience)?;
        raw.insert("aud".to_owned(), Value::String(self.audience.clone()));
        let claims: MandateClaims = serde_json::from_value(Value::Object(raw))
            .map_err(|_| TokenError::Malformed("the claims do not have the shape of a mandate"))?;
        claims::check_times(claims.exp, Some(claims.nbf), Some(claims.iat), now_secs, self.leeway_secs)?;
        let intent = claims.check()?;
        Ok(VerifiedMandate { claims, intent, kid: key.kid().to_owned() })
    }
}

/// A mandate that passed [`MandateVerifier::verify`]; nothing else constructs one.
#[derive(Debug, Clone)]
pub struct VerifiedMandate {
    claims: MandateClaims,
    intent: Intent,
    kid: String,
}

impl VerifiedMandate {
    /// The verified claims.
    pub fn claims(&self) -> &MandateClaims {
        &self.claims
    }

    /// The granted intent, validated and normalised: the ceiling of every decision made under
    /// this mandate.
    pub fn intent(&self) -> &Intent {
        &self.intent
    }

    /// The id of the key that signed the mandate.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{
        AUDIENCE, ISSUER, NOW, ed25519, forge, hs256, jwt_sign, mandate_claims, part, rsa_key, with_header, with_payload,
    };

    struct Fixture {
        key: Arc<SigningKey>,
        minter: Minter,
        verifier: MandateVerifier,
    }

    fn fixture() -> Fixture {
        let key = Arc::new(SigningKey::generate());
        let verifier = MandateVerifier::new(ISSUER, AUDIENCE, &[key.public_key()], 60);
        Fixture { minter: Minter::new(key.clone()), key, verifier }
    }

    fn header(key: &SigningKey) -> Value {
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid()})
    }

    /// Claims as JSON, for signing variants the minter would refuse.
    fn claims_json() -> Value {
        serde_json::to_value(mandate_claims()).unwrap()
    }

    fn code(result: Result<VerifiedMandate, TokenError>) -> &'static str {
        result.expect_err("the token should be refused").code()
    }

    #[test]
    fn round_trip() {
        let f = fixture();
        let claims = mandate_claims();
        let token = f.minter.mint(&claims).unwrap();
        assert_eq!(part(&token, 0), header(&f.key));
        let verified = f.verifier.verify(&token, NOW + 10).unwrap();
        assert_eq!(verified.claims(), &claims);
        assert_eq!(verified.kid(), f.key.kid());
        assert_eq!(f.minter.kid(), f.key.kid());
        let intent = verified.intent();
        assert_eq!(intent.actions, vec!["kb.search", "tickets.comment", "tickets.read"]);
        assert_eq!(intent.resources, vec!["kb:*", "ticket:42"]);
        assert_eq!(claims.scope, "kb.search tickets.comment tickets.read");
    }

    #[test]
    fn delegation_claims_round_trip() {
        let f = fixture();
        let mut claims = mandate_claims();
        claims.act = Some(Actor {
            sub: "spiffe://mandate.local/agent/b".into(),
            act: Some(Box::new(Actor { sub: "spiffe://mandate.local/agent/a".into(), act: None })),
        });
        claims.client_id = "spiffe://mandate.local/agent/b".into();
        claims.parent_task_id = Some("task_parent".into());
        claims.depth = 2;
        let token = f.minter.mint(&claims).unwrap();
        assert_eq!(part(&token, 1)["act"]["act"]["sub"], "spiffe://mandate.local/agent/a");
        let verified = f.verifier.verify(&token, NOW).unwrap();
        assert_eq!(verified.claims(), &claims);
        assert_eq!(verified.claims().actor_id(), "spiffe://mandate.local/agent/b");
        assert_eq!(verified.claims().delegators(), [claims.sub.as_str(), "spiffe://mandate.local/agent/a"]);
        // Absent optional claims stay absent.
        let plain = f.minter.mint(&mandate_claims()).unwrap();
        let payload = part(&plain, 1);
        assert!(payload.get("act").is_none() && payload.get("parent_task_id").is_none());
        assert_eq!(payload["depth"], 0);
    }

    #[test]
    fn delegation_claims_must_agree() {
        let f = fixture();
        let root = mandate_claims();
        assert_eq!(root.actor_id(), root.sub);
        assert!(root.delegators().is_empty());
        assert_eq!(root.chain_with_actor(), [root.sub.as_str()]);
        let mut child = root.clone();
        child.act = Some(Actor { sub: "spiffe://mandate.local/agent/b".into(), act: None });
        child.client_id = "spiffe://mandate.local/agent/b".into();
        child.parent_task_id = Some("task_parent".into());
        child.depth = 1;
        assert!(f.minter.mint(&child).is_ok());
        assert_eq!(child.delegators(), [root.sub.as_str()]);
        assert_eq!(child.chain_with_actor(), [root.sub.as_str(), "spiffe://mandate.local/agent/b"]);
        let refused = |c: &MandateClaims| f.minter.mint(c).unwrap_err().to_string();
        let mut bad = child.clone();
        bad.depth = 2;
        assert!(refused(&bad).contains("depth"));
        let mut bad = child.clone();
        bad.parent_task_id = None;
        assert!(refused(&bad).contains("parent_task_id"));
        let mut bad = child.clone();
        bad.client_id = root.sub.clone();
        assert!(refused(&bad).contains("client_id"));
        let mut bad = root.clone();
        bad.parent_task_id = Some("task_parent".into());
        assert!(refused(&bad).contains("parent_task_id"));
        // A signed token whose chain disagrees is refused by the verifier too.
        let mut forged = claims_json();
        forged["depth"] = json!(1);
        forged["parent_task_id"] = json!("task_parent");
        let token = forge(&header(&f.key), &forged, ed25519(&f.key));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "invalid_claim");
    }

    #[test]
    fn other_jwt_libraries_accept_minted_tokens() {
        let f = fixture();
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let jwk = f.key.public_key().to_jwk();
        let key = jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<MandateClaims>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims, mandate_claims());
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
    }

    #[test]
    fn forged_signature_with_the_same_kid() {
        let f = fixture();
        let attacker = SigningKey::generate();
        let token = forge(&header(&f.key), &claims_json(), ed25519(&attacker));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "bad_signature");
        // Keys the header points to or embeds are never used (RFC 8725 §3.10).
        let mut h = header(&f.key);
        h["jwk"] = attacker.public_key().to_jwk();
        h["jku"] = json!("https://evil.example.com/jwks.json");
        let token = forge(&h, &claims_json(), ed25519(&attacker));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "bad_signature");
    }

    #[test]
    fn alg_none() {
        let f = fixture();
        let h = json!({"alg": "none", "typ": "at+jwt", "kid": f.key.kid()});
        let token = forge(&h, &claims_json(), |_| Vec::new());
        assert!(token.ends_with('.'));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "unsupported_alg");
        let h = json!({"alg": "None", "typ": "at+jwt", "kid": f.key.kid()});
        assert_eq!(code(f.verifier.verify(&forge(&h, &claims_json(), |_| Vec::new()), NOW)), "unsupported_alg");
    }

    #[test]
    fn hs256_keyed_with_the_public_key() {
        let f = fixture();
        let h = json!({"alg": "HS256", "typ": "at+jwt", "kid": f.key.kid()});
        let public = f.key.public_key();
        let jwk_text = public.to_jwk().to_string();
        let x = public.to_jwk()["x"].as_str().unwrap().to_owned();
        for secret in [public.dalek().as_bytes().as_slice(), x.as_bytes(), jwk_text.as_bytes()] {
            let token = hs256(&h, &claims_json(), secret);
            assert_eq!(code(f.verifier.verify(&token, NOW)), "unsupported_alg");
        }
    }

    #[test]
    fn rs256() {
        let f = fixture();
        let h = json!({"alg": "RS256", "typ": "at+jwt", "kid": f.key.kid()});
        let token = forge(&h, &claims_json(), jwt_sign(&rsa_key().encoding, jsonwebtoken::Algorithm::RS256));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "unsupported_alg");
    }

    #[test]
    fn expired() {
        let f = fixture();
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let exp = NOW + 300;
        assert!(f.verifier.verify(&token, exp + 59).is_ok(), "within leeway");
        assert_eq!(code(f.verifier.verify(&token, exp + 60)), "expired");
        assert_eq!(code(f.verifier.verify(&token, exp + 86_400)), "expired");
        let strict = MandateVerifier::new(ISSUER, AUDIENCE, &[f.key.public_key()], 0);
        assert_eq!(code(strict.verify(&token, exp)), "expired");
    }

    #[test]
    fn not_yet_valid() {
        let f = fixture();
        let mut claims = mandate_claims();
        claims.nbf = NOW + 120;
        let token = f.minter.mint(&claims).unwrap();
        assert_eq!(code(f.verifier.verify(&token, NOW)), "not_yet_valid");
        assert!(f.verifier.verify(&token, NOW + 60).is_ok(), "within leeway");
    }

    #[test]
    fn issued_in_the_future() {
        let f = fixture();
        let mut claims = mandate_claims();
        claims.iat = NOW + 3600;
        claims.nbf = NOW;
        claims.exp = NOW + 3900;
        let token = f.minter.mint(&claims).unwrap();
        assert_eq!(code(f.verifier.verify(&token, NOW)), "issued_in_future");
    }

    #[test]
    fn wrong_audience() {
        let f = fixture();
        let mut claims = mandate_claims();
        claims.aud = "https://other.example.com".into();
        let token = f.minter.mint(&claims).unwrap();
        assert_eq!(code(f.verifier.verify(&token, NOW)), "wrong_audience");
    }

    #[test]
    fn audience_array_is_accepted_when_it_contains_ours() {
        let f = fixture();
        let mut c = claims_json();
        c["aud"] = json!(["https://other.example.com", AUDIENCE]);
        let token = forge(&header(&f.key), &c, ed25519(&f.key));
        assert_eq!(f.verifier.verify(&token, NOW).unwrap().claims().aud, AUDIENCE);
        c["aud"] = json!(["https://other.example.com"]);
        let token = forge(&header(&f.key), &c, ed25519(&f.key));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "wrong_audience");
    }

    #[test]
    fn wrong_issuer() {
        let f = fixture();
        let mut claims = mandate_claims();
        claims.iss = "https://mandate.example.com.evil".into();
        let token = f.minter.mint(&claims).unwrap();
        assert_eq!(code(f.verifier.verify(&token, NOW)), "wrong_issuer");
    }

    #[test]
    fn typ_missing_or_wrong() {
        let f = fixture();
        let sign = |h: Value| forge(&h, &claims_json(), ed25519(&f.key));
        let kid = f.key.kid();
        assert_eq!(code(f.verifier.verify(&sign(json!({"alg":"EdDSA","kid":kid})), NOW)), "wrong_type");
        for typ in ["JWT", "jwt", "dpop+jwt", "txntoken+jwt", ""] {
            let token = sign(json!({"alg":"EdDSA","typ":typ,"kid":kid}));
            assert_eq!(code(f.verifier.verify(&token, NOW)), "wrong_type", "{typ}");
        }
        for typ in ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"] {
            let token = sign(json!({"alg":"EdDSA","typ":typ,"kid":kid}));
            assert!(f.verifier.verify(&token, NOW).is_ok(), "{typ}");
        }
    }

    #[test]
    fn widened_intent_in_a_tampered_token() {
        let f = fixture();
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let widened = with_payload(&token, |p| {
            p["authorization_details"][0]["actions"] = json!(["*"]);
            p["authorization_details"][0]["resources"] = json!(["*"]);
            p["authorization_details"][0]["max_classification"] = json!("restricted");
            p["scope"] = json!("*");
        });
        assert_eq!(code(f.verifier.verify(&widened, NOW)), "bad_signature");
        let longer = with_payload(&token, |p| p["exp"] = json!(NOW + 86_400));
        assert_eq!(code(f.verifier.verify(&longer, NOW)), "bad_signature");
    }

    #[test]
    fn scope_that_does_not_match_the_intent() {
        let f = fixture();
        let mut c = claims_json();
        c["scope"] = json!("kb.search tickets.comment tickets.read tickets.delete");
        let token = forge(&header(&f.key), &c, ed25519(&f.key));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "intent_mismatch");
        let mut claims = mandate_claims();
        claims.scope = "tickets.read".into();
        assert_eq!(f.minter.mint(&claims).unwrap_err().code(), "intent_mismatch");
    }

    #[test]
    fn intent_must_be_exactly_one_valid_agent_task() {
        let f = fixture();
        let sign = |c: &Value| forge(&header(&f.key), c, ed25519(&f.key));
        let mut c = claims_json();
        let entry = c["authorization_details"][0].clone();
        c["authorization_details"] = json!([entry.clone(), entry.clone()]);
        assert_eq!(code(f.verifier.verify(&sign(&c), NOW)), "invalid_intent");
        c["authorization_details"] = json!([]);
        assert_eq!(code(f.verifier.verify(&sign(&c), NOW)), "invalid_intent");
        let mut other = entry.clone();
        other["type"] = json!("payment_initiation");
        c["authorization_details"] = json!([other]);
        assert_eq!(code(f.verifier.verify(&sign(&c), NOW)), "invalid_intent");
        let mut unknown_field = entry;
        unknown_field["note"] = json!("ignored?");
        c["authorization_details"] = json!([unknown_field]);
        assert_eq!(code(f.verifier.verify(&sign(&c), NOW)), "malformed");

        let mut claims = mandate_claims();
        claims.authorization_details.clear();
        assert_eq!(f.minter.mint(&claims).unwrap_err().code(), "invalid_intent");
    }

    #[test]
    fn unknown_or_missing_kid() {
        let f = fixture();
        let token = forge(&json!({"alg":"EdDSA","typ":"at+jwt","kid":"nobody"}), &claims_json(), ed25519(&f.key));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "unknown_kid");
        let token = forge(&json!({"alg":"EdDSA","typ":"at+jwt"}), &claims_json(), ed25519(&f.key));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "missing_kid");
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let other = MandateVerifier::new(ISSUER, AUDIENCE, &[SigningKey::generate().public_key()], 60);
        assert_eq!(code(other.verify(&token, NOW)), "unknown_kid");
    }

    #[test]
    fn kid_swapped_to_another_trusted_key() {
        let f = fixture();
        let second = SigningKey::generate();
        let verifier = MandateVerifier::new(ISSUER, AUDIENCE, &[f.key.public_key(), second.public_key()], 60);
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let swapped = with_header(&token, |h| h["kid"] = json!(second.kid()));
        assert_eq!(code(verifier.verify(&swapped, NOW)), "bad_signature");
    }

    #[test]
    fn oversized_token() {
        let f = fixture();
        let mut c = claims_json();
        c["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
        let token = forge(&header(&f.key), &c, ed25519(&f.key));
        assert!(token.len() > MAX_TOKEN_BYTES);
        assert_eq!(code(f.verifier.verify(&token, NOW)), "malformed");
        let junk = "a".repeat(10 * MAX_TOKEN_BYTES);
        assert_eq!(code(f.verifier.verify(&junk, NOW)), "malformed");
    }

    #[test]
    fn mint_refuses_a_mandate_above_the_size_limit() {
        let f = fixture();
        let mut request = crate::testing::intent_request();
        request.resources = (0..40).map(|i| format!("ticket:{i}-{}", "x".repeat(400))).collect();
        let (intent, lifetime) = request.validate().unwrap();
        let mut claims = mandate_claims();
        claims.authorization_details = vec![intent.to_authorization_detail(lifetime)];
        let err = f.minter.mint(&claims).unwrap_err();
        assert_eq!(err.code(), "token_too_large");
    }

    #[test]
    fn malformed_tokens() {
        let f = fixture();
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let two_parts = token.rsplit_once('.').unwrap().0;
        for bad in ["", "abc", two_parts, &format!("{token}."), &format!("={token}"), &format!(" {token}")] {
            assert_eq!(code(f.verifier.verify(bad, NOW)), "malformed", "{bad}");
        }
        // The payload is only decoded once the signature over its bytes holds.
        let bad_payload = token.replacen('.', ".=", 1);
        assert_eq!(code(f.verifier.verify(&bad_payload, NOW)), "bad_signature");
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let f = fixture();
        let h = json!({"alg":"EdDSA","typ":"at+jwt","kid":f.key.kid(),"crit":["exp"],"exp":1});
        let token = forge(&h, &claims_json(), ed25519(&f.key));
        assert_eq!(code(f.verifier.verify(&token, NOW)), "critical_header");
    }

    #[test]
    fn every_required_claim_is_checked() {
        let f = fixture();
        for claim in REQUIRED_CLAIMS {
            let mut c = claims_json();
            c.as_object_mut().unwrap().remove(claim);
            let token = forge(&header(&f.key), &c, ed25519(&f.key));
            assert_eq!(f.verifier.verify(&token, NOW).err(), Some(TokenError::MissingClaim(claim)));
        }
        let mut c = claims_json();
        c.as_object_mut().unwrap().remove("nbf");
        let token = forge(&header(&f.key), &c, ed25519(&f.key));
        assert_eq!(f.verifier.verify(&token, NOW).unwrap().claims().nbf, 0);
    }

    #[test]
    fn claim_contents_are_checked() {
        let f = fixture();
        let sign = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims_json();
            edit(&mut c);
            forge(&header(&f.key), &c, ed25519(&f.key))
        };
        assert_eq!(code(f.verifier.verify(&sign(&|c| c["jti"] = json!("")), NOW)), "invalid_claim");
        assert_eq!(code(f.verifier.verify(&sign(&|c| c["agent"] = json!("Bad/Agent")), NOW)), "invalid_claim");
        assert_eq!(code(f.verifier.verify(&sign(&|c| c["exp"] = json!("soon")), NOW)), "malformed");
        assert_eq!(code(f.verifier.verify(&sign(&|c| c["iss"] = json!(7)), NOW)), "invalid_claim");
        let mut claims = mandate_claims();
        claims.exp = claims.iat;
        assert_eq!(f.minter.mint(&claims).unwrap_err().code(), "invalid_claim");
    }

    #[test]
    fn key_rotation() {
        let old = Arc::new(SigningKey::generate());
        let new = Arc::new(SigningKey::generate());
        let old_token = Minter::new(old.clone()).mint(&mandate_claims()).unwrap();
        let new_token = Minter::new(new.clone()).mint(&mandate_claims()).unwrap();

        let overlap = MandateVerifier::new(ISSUER, AUDIENCE, &[old.public_key(), new.public_key()], 60);
        assert_eq!(overlap.verify(&old_token, NOW).unwrap().kid(), old.kid());
        assert_eq!(overlap.verify(&new_token, NOW).unwrap().kid(), new.kid());

        let after = MandateVerifier::new(ISSUER, AUDIENCE, &[new.public_key()], 60);
        assert!(after.verify(&new_token, NOW).is_ok());
        assert_eq!(code(after.verify(&old_token, NOW)), "unknown_kid");
    }

    #[test]
    fn errors_never_echo_the_token() {
        let f = fixture();
        let token = f.minter.mint(&mandate_claims()).unwrap();
        let tampered = with_payload(&token, |p| p["scope"] = json!("*"));
        let long_kid = "k".repeat(500);
        let unknown = with_header(&token, |h| h["kid"] = json!(long_kid));
        for bad in [tampered, unknown] {
            let message = f.verifier.verify(&bad, NOW).err().unwrap().to_string();
            assert!(message.len() < 200, "{message}");
            assert!(!message.contains(bad.split('.').nth(1).unwrap()));
        }
        assert!(!format!("{:?}", f.minter).contains(&crate::jws::b64_encode(f.key.dalek().as_bytes())));
    }
}
