//! Fixtures and token-forging helpers shared by the unit tests.

use std::sync::OnceLock;

use jsonwebtoken::{Algorithm, EncodingKey};
use mandate_core::IntentRequest;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

use crate::jws::{b64_decode, b64_encode};
use crate::{MandateClaims, SigningKey};

pub const ISSUER: &str = "https://mandate.example.com";
pub const AUDIENCE: &str = "https://tools.example.com";
pub const AGENT_ID: &str = "spiffe://mandate.local/agent/support-bot";
pub const NOW: i64 = 1_790_000_000;

pub fn intent_request() -> IntentRequest {
    serde_json::from_value(json!({
        "type": "agent_task",
        "purpose": "Summarise ticket 42 for the customer",
        "actions": ["tickets.read", "tickets.comment", "kb.search"],
        "resources": ["ticket:42", "kb:*"],
        "max_classification": "internal",
        "lifetime_seconds": 300
    }))
    .unwrap()
}

/// Claims a verifier built with [`ISSUER`] and [`AUDIENCE`] accepts at [`NOW`].
pub fn mandate_claims() -> MandateClaims {
    let (intent, lifetime) = intent_request().validate().unwrap();
    MandateClaims {
        iss: ISSUER.into(),
        sub: AGENT_ID.into(),
        aud: AUDIENCE.into(),
        client_id: AGENT_ID.into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 300,
        jti: "01J9Z6M2Q1".into(),
        task_id: "task_01J9Z6M2Q1".into(),
        agent: "support-bot".into(),
        scope: MandateClaims::scope_for(&intent),
        authorization_details: vec![intent.to_authorization_detail(lifetime)],
        act: None,
        parent_task_id: None,
        depth: 0,
    }
}

/// A compact JWS of any header and claims, signed by `sign` over the signing input.
pub fn forge(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64_encode(header.to_string()), b64_encode(claims.to_string()));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64_encode(signature))
}

/// Signs with one of Mandate's keys.
pub fn ed25519(key: &SigningKey) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    |input| key.sign_raw(input).to_vec()
}

/// Signs as jsonwebtoken would for `alg` with `key`.
pub fn jwt_sign(key: &EncodingKey, alg: Algorithm) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    move |input| b64_decode(&jsonwebtoken::crypto::sign(input, key, alg).unwrap()).unwrap()
}

/// HS256 keyed with `secret`: the key-confusion attack when `secret` is a public key.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret);
    forge(header, claims, jwt_sign(&key, Algorithm::HS256))
}

/// Part `index` (0 header, 1 payload) of a token, decoded.
pub fn part(token: &str, index: usize) -> Value {
    let text = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&b64_decode(text).unwrap()).unwrap()
}

/// The token with its payload edited and its header and signature kept.
pub fn with_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut payload = part(token, 1);
    edit(&mut payload);
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64_encode(payload.to_string()), parts[2])
}

/// The token with its header edited and its payload and signature kept.
pub fn with_header(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut header = part(token, 0);
    edit(&mut header);
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", b64_encode(header.to_string()), parts[1], parts[2])
}

/// A 2048-bit RSA key, generated once per test run.
pub struct RsaKey {
    pub encoding: EncodingKey,
    /// The public JWK, without `kid`.
    pub jwk: Value,
}

pub fn rsa_key() -> &'static RsaKey {
    static KEY: OnceLock<RsaKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        let jwk = json!({
            "kty": "RSA",
            "n": b64_encode(private.n().to_bytes_be()),
            "e": b64_encode(private.e().to_bytes_be()),
        });
        RsaKey { encoding: EncodingKey::from_rsa_der(der.as_bytes()), jwk }
    })
}
