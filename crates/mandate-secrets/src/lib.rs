//! Envelope encryption of brokered secrets.
//!
//! Each version of a secret is encrypted with AES-256-GCM under its own fresh random 32-byte
//! data key; the data key is itself encrypted (wrapped) with AES-256-GCM under the server's
//! [`MasterKey`]. The secret's name and version are bound as associated data on both layers, so
//! a sealed value copied onto another name or version does not open. A value handed to a remote
//! gateway is sealed again to that gateway alone with HPKE (see [`seal_to_gateway`]). Nothing
//! here does I/O.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod gateway;

pub use gateway::{
    GATEWAY_KEY_BYTES, GatewayPrivateKey, GatewayPublicKey, GatewaySealed, MAX_GATEWAY_NAME_LEN, SUITE, open_for_gateway, seal_to_gateway,
    validate_gateway_name,
};

/// Length of the master key and of every data key, in bytes.
pub const KEY_BYTES: usize = 32;
/// Length of an AES-GCM nonce, in bytes.
pub const NONCE_BYTES: usize = 12;
/// The largest secret value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The longest secret name accepted.
pub const MAX_NAME_LEN: usize = 64;

const KEY_AAD_CONTEXT: &[u8] = b"mandate-secret-key/v1\0";
const VALUE_AAD_CONTEXT: &[u8] = b"mandate-secret-value/v1\0";

/// Why a secret could not be sealed or opened, or a key not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The value to seal is empty.
    #[error("a secret value may not be empty")]
    EmptyValue,
    /// The value to seal is larger than [`MAX_VALUE_BYTES`].
    #[error("a secret value may be at most {max} bytes, not {len}")]
    TooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name is not 1 to 64 of `a-z0-9-_.`.
    #[error("secret name `{0}` is not valid: use 1 to 64 of `a-z`, `0-9`, `-`, `_` and `.`")]
    InvalidName(String),
    /// The master key text is not base64 of 32 bytes.
    #[error("the master key must be base64 of {KEY_BYTES} bytes")]
    InvalidMasterKey,
    /// A gateway key is not base64 of 32 bytes of an X25519 key.
    #[error("a gateway key must be base64 of {GATEWAY_KEY_BYTES} bytes")]
    InvalidGatewayKey,
    /// The gateway name is not 1 to 64 of `a-z0-9-_.`.
    #[error("gateway name `{0}` is not valid: use 1 to 64 of `a-z`, `0-9`, `-`, `_` and `.`")]
    InvalidGatewayName(String),
    /// Encryption failed.
    #[error("secret `{0}` could not be encrypted")]
    Encrypt(String),
    /// Authentication failed: another master key, damaged data, or data of another name or
    /// version.
    #[error("secret `{name}` version {version} cannot be decrypted: wrong master key or damaged data")]
    Decrypt {
        /// The secret's name.
        name: String,
        /// The version.
        version: u32,
    },
}

impl SecretError {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            SecretError::EmptyValue => "secret_empty",
            SecretError::TooLarge { .. } => "secret_too_large",
            SecretError::InvalidName(_) => "invalid_secret_name",
            SecretError::InvalidMasterKey => "invalid_master_key",
            SecretError::InvalidGatewayKey => "invalid_gateway_key",
            SecretError::InvalidGatewayName(_) => "invalid_gateway_name",
            SecretError::Encrypt(_) => "secret_encrypt_failed",
            SecretError::Decrypt { .. } => "secret_undecryptable",
        }
    }
}

/// The key that wraps every data key. Zeroized on drop; its `Debug` shows nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_BYTES]);

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut bytes);
        MasterKey(bytes)
    }

    /// Reads base64 (standard or URL-safe alphabet, padded or not) of exactly 32 bytes;
    /// surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or(SecretError::InvalidMasterKey)?;
        let bytes: [u8; KEY_BYTES] = decoded.as_slice().try_into().map_err(|_| SecretError::InvalidMasterKey)?;
        Ok(MasterKey(bytes))
    }

    /// The key as standard padded base64, for writing to a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0))
    }

    /// A key for another purpose, derived from this one: HMAC-SHA256 under the master key of
    /// `label`. Every process holding the master key derives the same key; the derived key tells
    /// nothing of the master key, nor of a key derived for another label.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use hmac::Mac;
        let mut out = Zeroizing::new([0u8; 32]);
        // HMAC takes a key of any length: this cannot fail.
        if let Ok(mut mac) = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.0) {
            mac.update(label.as_bytes());
            out.copy_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// One sealed secret version: what is stored. None of it is secret without the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The data key, encrypted under the master key (32 bytes plus the 16-byte tag).
    pub wrapped_key: Vec<u8>,
    /// The nonce the data key was wrapped with.
    pub key_nonce: Vec<u8>,
    /// The nonce the value was encrypted with.
    pub nonce: Vec<u8>,
    /// The value, encrypted under the data key (with its tag).
    pub ciphertext: Vec<u8>,
}

/// Checks a secret name: 1 to 64 of `a-z`, `0-9`, `-`, `_` and `.`.
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(SecretError::InvalidName(clip(name))) }
}

/// Encrypts `plaintext` as version `version` of secret `name` under a fresh data key.
pub fn seal(master: &MasterKey, name: &str, version: u32, plaintext: &[u8]) -> Result<SealedSecret, SecretError> {
    validate_name(name)?;
    if plaintext.is_empty() {
        return Err(SecretError::EmptyValue);
    }
    if plaintext.len() > MAX_VALUE_BYTES {
        return Err(SecretError::TooLarge { len: plaintext.len(), max: MAX_VALUE_BYTES });
    }
    let mut data_key = Zeroizing::new([0u8; KEY_BYTES]);
    OsRng.fill_bytes(data_key.as_mut());
    let mut key_nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut key_nonce);
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);

    let encrypt_failed = || SecretError::Encrypt(name.to_owned());
    let key_aad = aad(KEY_AAD_CONTEXT, name, version);
    let wrapped_key = master
        .cipher()
        .encrypt(&Nonce::from(key_nonce), Payload { msg: data_key.as_ref(), aad: &key_aad })
        .map_err(|_| encrypt_failed())?;
    let value_aad = aad(VALUE_AAD_CONTEXT, name, version);
    let data_cipher = Aes256Gcm::new(&(*data_key).into());
    let ciphertext = data_cipher.encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &value_aad }).map_err(|_| encrypt_failed())?;
    Ok(SealedSecret { wrapped_key, key_nonce: key_nonce.to_vec(), nonce: nonce.to_vec(), ciphertext })
}

/// Decrypts version `version` of secret `name`. Fails with [`SecretError::Decrypt`] when the
/// master key is another one, any part was altered, or the data belongs to another name or
/// version.
pub fn open(master: &MasterKey, name: &str, version: u32, sealed: &SealedSecret) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let failed = || SecretError::Decrypt { name: clip(name), version };
    let key_nonce: [u8; NONCE_BYTES] = sealed.key_nonce.as_slice().try_into().map_err(|_| failed())?;
    let nonce: [u8; NONCE_BYTES] = sealed.nonce.as_slice().try_into().map_err(|_| failed())?;
    let key_aad = aad(KEY_AAD_CONTEXT, name, version);
    let data_key = Zeroizing::new(
        master.cipher().decrypt(&Nonce::from(key_nonce), Payload { msg: &sealed.wrapped_key, aad: &key_aad }).map_err(|_| failed())?,
    );
    let data_cipher = Aes256Gcm::new_from_slice(data_key.as_slice()).map_err(|_| failed())?;
    let value_aad = aad(VALUE_AAD_CONTEXT, name, version);
    let plaintext = data_cipher.decrypt(&Nonce::from(nonce), Payload { msg: &sealed.ciphertext, aad: &value_aad }).map_err(|_| failed())?;
    Ok(Zeroizing::new(plaintext))
}

/// Associated data binding a layer to a name and version: context, name, NUL, version (big
/// endian). Names never contain NUL, so distinct (name, version) pairs never collide.
fn aad(context: &[u8], name: &str, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(context.len() + name.len() + 5);
    out.extend_from_slice(context);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.extend_from_slice(&version.to_be_bytes());
    out
}

/// A name shortened for an error message.
fn clip(name: &str) -> String {
    name.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

    use super::*;

    fn key() -> MasterKey {
        MasterKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap()
    }

    #[test]
    fn round_trip() {
        let m = key();
        let sealed = seal(&m, "github-token", 1, b"ghp_secret").unwrap();
        assert_eq!(sealed.wrapped_key.len(), 48);
        assert_eq!(sealed.key_nonce.len(), 12);
        assert!(!sealed.ciphertext.windows(10).any(|w| w == b"ghp_secret"));
        assert_eq!(open(&m, "github-token", 1, &sealed).unwrap().as_slice(), b"ghp_secret");
    }

    #[test]
    fn each_seal_uses_a_fresh_data_key_and_nonces() {
        let m = key();
        let a = seal(&m, "s", 1, b"same").unwrap();
        let b = seal(&m, "s", 1, b"same").unwrap();
        assert_ne!(a.wrapped_key, b.wrapped_key);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn tampering_is_detected() {
        let m = key();
        let sealed = seal(&m, "s", 3, b"value").unwrap();
        let flip = |v: &mut Vec<u8>| v[0] ^= 1;
        for part in 0..4 {
            let mut t = sealed.clone();
            match part {
                0 => flip(&mut t.ciphertext),
                1 => flip(&mut t.wrapped_key),
                2 => flip(&mut t.nonce),
                _ => flip(&mut t.key_nonce),
            }
            let err = open(&m, "s", 3, &t).unwrap_err();
            assert_eq!(err.code(), "secret_undecryptable", "part {part}");
        }
        let mut short = sealed.clone();
        short.nonce.pop();
        assert!(open(&m, "s", 3, &short).is_err());
    }

    #[test]
    fn name_and_version_are_bound() {
        let m = key();
        let sealed = seal(&m, "s", 3, b"value").unwrap();
        assert!(open(&m, "t", 3, &sealed).is_err());
        assert!(open(&m, "s", 4, &sealed).is_err());
        // Moving only the value layer onto another secret's wrapped key fails as well.
        let other = seal(&m, "t", 3, b"other").unwrap();
        let mixed = SealedSecret { wrapped_key: other.wrapped_key.clone(), key_nonce: other.key_nonce.clone(), ..sealed.clone() };
        assert!(open(&m, "t", 3, &mixed).is_err());
        assert!(open(&m, "s", 3, &mixed).is_err());
    }

    #[test]
    fn another_master_key_fails() {
        let sealed = seal(&key(), "s", 1, b"value").unwrap();
        let err = open(&MasterKey::generate(), "s", 1, &sealed).unwrap_err();
        assert_eq!(err, SecretError::Decrypt { name: "s".into(), version: 1 });
        assert_eq!(err.to_string(), "secret `s` version 1 cannot be decrypted: wrong master key or damaged data");
    }

    #[test]
    fn sizes() {
        let m = key();
        let big = vec![0xa5u8; MAX_VALUE_BYTES];
        let sealed = seal(&m, "big", 1, &big).unwrap();
        assert_eq!(open(&m, "big", 1, &sealed).unwrap().as_slice(), big.as_slice());
        let too_big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert_eq!(seal(&m, "big", 1, &too_big).unwrap_err().code(), "secret_too_large");
        assert_eq!(seal(&m, "empty", 1, b"").unwrap_err(), SecretError::EmptyValue);
    }

    #[test]
    fn names() {
        for ok in ["a", "github-token", "x.y_z-1", &"a".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Upper", "with space", "slash/", "é", &"a".repeat(65)] {
            assert_eq!(validate_name(bad).unwrap_err().code(), "invalid_secret_name", "{bad}");
        }
        assert!(seal(&key(), "Bad", 1, b"v").is_err());
    }

    #[test]
    fn master_key_text() {
        let m = MasterKey::generate();
        let text = m.to_base64();
        let back = MasterKey::from_base64(&format!("  {}\n", text.as_str())).unwrap();
        let sealed = seal(&m, "s", 1, b"v").unwrap();
        assert_eq!(open(&back, "s", 1, &sealed).unwrap().as_slice(), b"v");
        assert!(MasterKey::from_base64(&URL_SAFE_NO_PAD.encode([1u8; 32])).is_ok());
        assert_eq!(MasterKey::from_base64(&STANDARD.encode([1u8; 31])).unwrap_err(), SecretError::InvalidMasterKey);
        assert_eq!(MasterKey::from_base64("not base64!").unwrap_err().code(), "invalid_master_key");
        assert_eq!(format!("{m:?}"), "MasterKey(..)");
    }
}
