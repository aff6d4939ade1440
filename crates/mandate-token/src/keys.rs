//! Mandate's own signing keys (Ed25519) and their public halves as JWKs.

use std::fmt;

use ed25519_dalek::Signer as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::TokenError;
use crate::jwk::{self, KeyPolicy, VerifyKey};
use crate::jws::b64_encode;

/// An Ed25519 key Mandate signs mandates and audit checkpoints with.
///
/// Its key id is the RFC 7638 thumbprint of the public key. `Debug` prints the key id only,
/// and the secret is zeroized when the key is dropped.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self::from_dalek(ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// Loads a key from a PKCS#8 (RFC 8410) DER document.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, TokenError> {
        ed25519_dalek::SigningKey::from_pkcs8_der(der)
            .map(Self::from_dalek)
            .map_err(|_| TokenError::InvalidKey("not an Ed25519 private key in PKCS#8 DER".into()))
    }

    /// The key as a PKCS#8 (RFC 8410) DER document, zeroized when dropped.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let doc = self.key.to_pkcs8_der().map_err(|_| TokenError::SigningFailed("the key could not be encoded as PKCS#8"))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The key id: the RFC 7638 thumbprint (base64url SHA-256) of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey { kid: self.kid.clone(), key: self.key.verifying_key() }
    }

    /// A raw Ed25519 signature over `msg` (used for audit checkpoints).
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The underlying key.
    pub fn dalek(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Self {
        SigningKey { kid: jwk::okp_thumbprint(key.verifying_key().as_bytes()), key }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The public half of a [`SigningKey`]: what verifiers and the JWKS hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: ed25519_dalek::VerifyingKey,
}

impl PublicKey {
    /// The key id: the RFC 7638 thumbprint of the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a public JWK (RFC 8037): `kty`, `crv`, `x`, `kid`, `alg` and `use`.
    pub fn to_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64_encode(self.key.as_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// Reads a public Ed25519 JWK. A `kid`, if present, must be the key's thumbprint; `alg`, if
    /// present, must be `EdDSA`; private material is refused.
    pub fn from_jwk(v: &Value) -> Result<Self, TokenError> {
        let parsed = jwk::parse_public(v, KeyPolicy::Agent)?;
        let VerifyKey::Ed25519(key) = parsed.key else {
            return Err(TokenError::UnsupportedKey("Mandate keys are OKP Ed25519 keys".into()));
        };
        let kid = jwk::okp_thumbprint(key.as_bytes());
        if parsed.kid.as_ref().is_some_and(|k| *k != kid) {
            return Err(TokenError::InvalidKey("`kid` is not the key's RFC 7638 thumbprint".into()));
        }
        Ok(PublicKey { kid, key })
    }

    /// Verifies a raw Ed25519 signature (strict verification: no small-order keys, canonical
    /// signatures only).
    pub fn verify_raw(&self, msg: &[u8], sig: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(sig).is_ok_and(|sig| self.key.verify_strict(msg, &sig).is_ok())
    }

    /// The underlying key.
    pub fn dalek(&self) -> &ed25519_dalek::VerifyingKey {
        &self.key
    }
}

/// A JWK Set (RFC 7517 §5) of public keys: `{"keys":[...]}`.
pub fn jwks(keys: &[PublicKey]) -> Value {
    json!({ "keys": keys.iter().map(PublicKey::to_jwk).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::b64_decode;

    /// RFC 8037 appendix A.1.
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";

    fn rfc8037_key() -> SigningKey {
        let d: [u8; 32] = b64_decode(RFC8037_D).unwrap().try_into().unwrap();
        SigningKey::from_dalek(ed25519_dalek::SigningKey::from_bytes(&d))
    }

    #[test]
    fn kid_is_the_rfc_7638_thumbprint() {
        let key = rfc8037_key();
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(key.public_key().to_jwk()["x"], "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
    }

    #[test]
    fn pkcs8_round_trip() {
        let key = SigningKey::generate();
        let der = key.to_pkcs8_der().unwrap();
        let back = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(back.kid(), key.kid());
        assert_eq!(back.public_key(), key.public_key());
        assert_eq!(SigningKey::from_pkcs8_der(b"not a key").unwrap_err().code(), "invalid_key");
    }

    #[test]
    fn debug_shows_the_kid_only() {
        let key = rfc8037_key();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        assert!(!shown.contains(RFC8037_D));
        assert_eq!(shown, format!("SigningKey {{ kid: {:?}, .. }}", key.kid()));
    }

    #[test]
    fn jwk_round_trip_and_refusals() {
        let public = SigningKey::generate().public_key();
        let jwk = public.to_jwk();
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(PublicKey::from_jwk(&jwk).unwrap(), public);

        let mut with_d = jwk.clone();
        with_d["d"] = RFC8037_D.into();
        assert_eq!(PublicKey::from_jwk(&with_d).unwrap_err().code(), "private_key_material");
        let mut wrong_kid = jwk.clone();
        wrong_kid["kid"] = "someone-else".into();
        assert_eq!(PublicKey::from_jwk(&wrong_kid).unwrap_err().code(), "invalid_key");
        let mut no_kid = jwk.clone();
        no_kid.as_object_mut().unwrap().remove("kid");
        assert_eq!(PublicKey::from_jwk(&no_kid).unwrap().kid(), public.kid());
        let ec = serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"});
        assert!(PublicKey::from_jwk(&ec).is_err());
        let rsa = serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB"});
        assert_eq!(PublicKey::from_jwk(&rsa).unwrap_err().code(), "unsupported_key");
    }

    #[test]
    fn raw_signatures() {
        let key = SigningKey::generate();
        let sig = key.sign_raw(b"checkpoint 7");
        let public = key.public_key();
        assert!(public.verify_raw(b"checkpoint 7", &sig));
        assert!(!public.verify_raw(b"checkpoint 8", &sig));
        assert!(!public.verify_raw(b"checkpoint 7", &sig[..63]));
        assert!(!SigningKey::generate().public_key().verify_raw(b"checkpoint 7", &sig));
    }

    #[test]
    fn jwks_lists_every_key() {
        let (a, b) = (SigningKey::generate(), SigningKey::generate());
        let set = jwks(&[a.public_key(), b.public_key()]);
        let keys = set["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], a.kid());
        assert_eq!(keys[1]["kid"], b.kid());
    }
}
