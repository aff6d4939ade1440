//! Sealing a secret to one remote gateway: HPKE (RFC 9180), base mode, with
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305.
//!
//! Each remote gateway holds its own X25519 key pair; the control plane opens a secret with the
//! master key and seals it to the gateway's public key only. The HPKE `info` binds the gateway
//! (the recipient) and the `aad` binds the content (the secret's name and version, and for a
//! dynamic secret's credential the task it was minted for), so a blob sealed for one gateway
//! does not open at another, nor as another secret, version or task.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{MAX_VALUE_BYTES, SecretError, clip, validate_name};

type Kem = X25519HkdfSha256;

/// Length of an X25519 key, private or public, in bytes.
pub const GATEWAY_KEY_BYTES: usize = 32;
/// The longest gateway name accepted.
pub const MAX_GATEWAY_NAME_LEN: usize = 64;

/// The HPKE suite, as named on the wire.
pub const SUITE: &str = "hpke-x25519-hkdfsha256-chacha20poly1305";

const INFO_CONTEXT: &[u8] = b"mandate-gateway-seal/v1\0";
const AAD_CONTEXT: &[u8] = b"mandate-gateway-secret/v1\0";
const AAD_LEASE_CONTEXT: &[u8] = b"mandate-gateway-lease/v1\0";

/// A gateway's private X25519 key. Zeroized on drop; its `Debug` shows nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GatewayPrivateKey([u8; GATEWAY_KEY_BYTES]);

/// A gateway's public X25519 key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GatewayPublicKey([u8; GATEWAY_KEY_BYTES]);

/// One secret version sealed to one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySealed {
    /// The HPKE encapsulated key (the sender's ephemeral X25519 public key).
    pub enc: Vec<u8>,
    /// The value, encrypted under the HPKE context (with its tag).
    pub ciphertext: Vec<u8>,
}

impl GatewayPrivateKey {
    /// A new random key pair's private half, from the operating system's generator.
    pub fn generate() -> Self {
        let (sk, _) = Kem::gen_keypair();
        let mut bytes = [0u8; GATEWAY_KEY_BYTES];
        bytes.copy_from_slice(&sk.to_bytes());
        GatewayPrivateKey(bytes)
    }

    /// Reads base64 (either alphabet, padded or not) of exactly 32 bytes; surrounding
    /// whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let decoded = decode_32(text).ok_or(SecretError::InvalidGatewayKey)?;
        // Refuse bytes HPKE would not take.
        <Kem as hpke::Kem>::PrivateKey::from_bytes(decoded.as_slice()).map_err(|_| SecretError::InvalidGatewayKey)?;
        Ok(GatewayPrivateKey(*decoded))
    }

    /// The key as base64url without padding, for writing to a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(URL_SAFE_NO_PAD.encode(self.0))
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<GatewayPublicKey, SecretError> {
        let sk = self.hpke()?;
        let pk = Kem::sk_to_pk(&sk);
        let mut bytes = [0u8; GATEWAY_KEY_BYTES];
        bytes.copy_from_slice(&pk.to_bytes());
        Ok(GatewayPublicKey(bytes))
    }

    fn hpke(&self) -> Result<<Kem as hpke::Kem>::PrivateKey, SecretError> {
        <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.0).map_err(|_| SecretError::InvalidGatewayKey)
    }
}

impl fmt::Debug for GatewayPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GatewayPrivateKey(..)")
    }
}

impl GatewayPublicKey {
    /// Reads base64 (either alphabet, padded or not) of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let decoded = decode_32(text).ok_or(SecretError::InvalidGatewayKey)?;
        <Kem as hpke::Kem>::PublicKey::from_bytes(decoded.as_slice()).map_err(|_| SecretError::InvalidGatewayKey)?;
        Ok(GatewayPublicKey(*decoded))
    }

    /// The key as base64url without padding (43 characters): how it is printed and stored.
    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    fn hpke(&self) -> Result<<Kem as hpke::Kem>::PublicKey, SecretError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0).map_err(|_| SecretError::InvalidGatewayKey)
    }
}

impl fmt::Debug for GatewayPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatewayPublicKey({})", self.to_base64())
    }
}

/// Checks a gateway name: 1 to 64 of `a-z`, `0-9`, `-`, `_` and `.` (the rule of secret names).
pub fn validate_gateway_name(name: &str) -> Result<(), SecretError> {
    validate_name(name).map_err(|_| SecretError::InvalidGatewayName(clip(name)))
}

/// Seals version `version` of secret `secret` to gateway `gateway`'s public key; `task` is the
/// task a dynamic secret's credential was minted for (`None` for a static secret's value).
pub fn seal_to_gateway(
    public: &GatewayPublicKey,
    gateway: &str,
    secret: &str,
    version: u32,
    task: Option<&str>,
    plaintext: &[u8],
) -> Result<GatewaySealed, SecretError> {
    validate_gateway_name(gateway)?;
    if plaintext.is_empty() {
        return Err(SecretError::EmptyValue);
    }
    if plaintext.len() > MAX_VALUE_BYTES {
        return Err(SecretError::TooLarge { len: plaintext.len(), max: MAX_VALUE_BYTES });
    }
    let pk = public.hpke()?;
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        &info(gateway),
        plaintext,
        &aad(secret, version, task),
    )
    .map_err(|_| SecretError::Encrypt(clip(secret)))?;
    Ok(GatewaySealed { enc: enc.to_bytes().to_vec(), ciphertext })
}

/// Opens what [`seal_to_gateway`] sealed. Fails with [`SecretError::Decrypt`] when the key is
/// another gateway's, any part was altered, or the blob was sealed for another gateway, secret
/// version or task.
pub fn open_for_gateway(
    private: &GatewayPrivateKey,
    gateway: &str,
    secret: &str,
    version: u32,
    task: Option<&str>,
    sealed: &GatewaySealed,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let failed = || SecretError::Decrypt { name: clip(secret), version };
    let sk = private.hpke()?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc).map_err(|_| failed())?;
    let plaintext = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        &info(gateway),
        &sealed.ciphertext,
        &aad(secret, version, task),
    )
    .map_err(|_| failed())?;
    Ok(Zeroizing::new(plaintext))
}

/// HPKE `info`: the context and the recipient gateway's name.
fn info(gateway: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(INFO_CONTEXT.len() + gateway.len());
    out.extend_from_slice(INFO_CONTEXT);
    out.extend_from_slice(gateway.as_bytes());
    out
}

/// HPKE `aad`: the context (a static value or a task's credential), the secret's name, NUL,
/// its version (4 bytes, big endian), then for a credential the task id. Names never contain
/// NUL and the version has a fixed width, so distinct bindings never collide.
fn aad(secret: &str, version: u32, task: Option<&str>) -> Vec<u8> {
    let context = if task.is_some() { AAD_LEASE_CONTEXT } else { AAD_CONTEXT };
    let task = task.unwrap_or_default();
    let mut out = Vec::with_capacity(context.len() + secret.len() + 5 + task.len());
    out.extend_from_slice(context);
    out.extend_from_slice(secret.as_bytes());
    out.push(0);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(task.as_bytes());
    out
}

fn decode_32(text: &str) -> Option<Zeroizing<[u8; GATEWAY_KEY_BYTES]>> {
    let text = text.trim();
    let decoded = [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD].iter().find_map(|e| e.decode(text).ok()).map(Zeroizing::new)?;
    let bytes: [u8; GATEWAY_KEY_BYTES] = decoded.as_slice().try_into().ok()?;
    Some(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

    use super::*;

    fn pair() -> (GatewayPrivateKey, GatewayPublicKey) {
        let sk = GatewayPrivateKey::generate();
        let pk = sk.public_key().unwrap();
        (sk, pk)
    }

    #[test]
    fn round_trip() {
        let (sk, pk) = pair();
        let sealed = seal_to_gateway(&pk, "gw-a", "github-token", 2, None, b"ghp_secret").unwrap();
        assert_eq!(sealed.enc.len(), 32);
        assert_eq!(sealed.ciphertext.len(), b"ghp_secret".len() + 16);
        assert!(!sealed.ciphertext.windows(10).any(|w| w == b"ghp_secret"));
        assert_eq!(open_for_gateway(&sk, "gw-a", "github-token", 2, None, &sealed).unwrap().as_slice(), b"ghp_secret");
        // Each seal is fresh.
        let again = seal_to_gateway(&pk, "gw-a", "github-token", 2, None, b"ghp_secret").unwrap();
        assert_ne!(again.enc, sealed.enc);
        assert_ne!(again.ciphertext, sealed.ciphertext);
    }

    #[test]
    fn another_gateways_key_fails() {
        let (_, pk_a) = pair();
        let (sk_b, _) = pair();
        let sealed = seal_to_gateway(&pk_a, "gw-a", "s", 1, None, b"value").unwrap();
        let err = open_for_gateway(&sk_b, "gw-a", "s", 1, None, &sealed).unwrap_err();
        assert_eq!(err.code(), "secret_undecryptable");
        assert!(open_for_gateway(&sk_b, "gw-b", "s", 1, None, &sealed).is_err());
    }

    #[test]
    fn info_binds_the_gateway_and_aad_the_secret_and_version() {
        let (sk, pk) = pair();
        let sealed = seal_to_gateway(&pk, "gw-a", "s", 3, None, b"value").unwrap();
        // The same key registered under another name (wrong info).
        assert!(open_for_gateway(&sk, "gw-b", "s", 3, None, &sealed).is_err());
        // Replayed as another secret or version (wrong aad).
        assert!(open_for_gateway(&sk, "gw-a", "t", 3, None, &sealed).is_err());
        assert!(open_for_gateway(&sk, "gw-a", "s", 4, None, &sealed).is_err());
        assert!(open_for_gateway(&sk, "gw-a", "s", 3, None, &sealed).is_ok());
        // A task's credential opens only as that task's.
        let lease = seal_to_gateway(&pk, "gw-a", "db", 1, Some("tsk_1"), b"postgres://r:p@h/d").unwrap();
        assert!(open_for_gateway(&sk, "gw-a", "db", 1, Some("tsk_1"), &lease).is_ok());
        assert!(open_for_gateway(&sk, "gw-a", "db", 1, Some("tsk_2"), &lease).is_err());
        assert!(open_for_gateway(&sk, "gw-a", "db", 1, None, &lease).is_err());
        let plain = seal_to_gateway(&pk, "gw-a", "db", 1, None, b"value").unwrap();
        assert!(open_for_gateway(&sk, "gw-a", "db", 1, Some(""), &plain).is_err());
    }

    #[test]
    fn tampering_is_detected() {
        let (sk, pk) = pair();
        let sealed = seal_to_gateway(&pk, "gw", "s", 1, None, b"value").unwrap();
        for i in [0, sealed.ciphertext.len() - 1] {
            let mut t = sealed.clone();
            t.ciphertext[i] ^= 1;
            assert_eq!(open_for_gateway(&sk, "gw", "s", 1, None, &t).unwrap_err().code(), "secret_undecryptable");
        }
        let mut t = sealed.clone();
        t.enc[0] ^= 1;
        assert!(open_for_gateway(&sk, "gw", "s", 1, None, &t).is_err());
        let mut short = sealed.clone();
        short.enc.pop();
        assert!(open_for_gateway(&sk, "gw", "s", 1, None, &short).is_err());
        let mut cut = sealed.clone();
        cut.ciphertext.truncate(4);
        assert!(open_for_gateway(&sk, "gw", "s", 1, None, &cut).is_err());
    }

    #[test]
    fn keys_as_text() {
        let (sk, pk) = pair();
        let text = sk.to_base64();
        assert_eq!(text.len(), 43);
        let back = GatewayPrivateKey::from_base64(&format!("{}\n", text.as_str())).unwrap();
        assert_eq!(back.public_key().unwrap(), pk);
        assert_eq!(GatewayPublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
        assert_eq!(GatewayPublicKey::from_base64(&STANDARD.encode(pk.0)).unwrap(), pk);
        assert_eq!(GatewayPublicKey::from_base64("short").unwrap_err().code(), "invalid_gateway_key");
        assert_eq!(GatewayPrivateKey::from_base64(&URL_SAFE_NO_PAD.encode([1u8; 31])).unwrap_err().code(), "invalid_gateway_key");
        assert_eq!(format!("{sk:?}"), "GatewayPrivateKey(..)");
        assert!(format!("{pk:?}").contains(&pk.to_base64()));
    }

    #[test]
    fn bad_input() {
        let (_, pk) = pair();
        assert_eq!(seal_to_gateway(&pk, "Bad Name", "s", 1, None, b"v").unwrap_err().code(), "invalid_gateway_name");
        assert_eq!(seal_to_gateway(&pk, "gw", "s", 1, None, b"").unwrap_err(), SecretError::EmptyValue);
        assert!(validate_gateway_name("edge-1.eu").is_ok());
        assert!(validate_gateway_name("").is_err());
    }
}
