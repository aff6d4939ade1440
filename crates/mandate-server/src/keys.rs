//! Signing keys: generated on first start, rotated with overlap, never logged.
//!
//! Layout of the key directory: `keyring.json` lists every key ever used (public half, when it
//! was made, when it leaves the JWKS); `<kid>.pk8` holds the private half of the current key
//! only, mode 0600. Retired public keys stay in the ring forever so that old audit checkpoints
//! can still be verified. `master.key` (mode 0600) holds the base64 master key that wraps every
//! brokered secret's data key, unless `MANDATE_MASTER_KEY` provides it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use mandate_secrets::MasterKey;
use mandate_token::{MandateVerifier, Minter, PublicKey, SigningKey};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key ring `{path}` is not valid: {message}")]
    Corrupt { path: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyEntry {
    kid: String,
    public_jwk: serde_json::Value,
    created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRing {
    current: String,
    keys: Vec<KeyEntry>,
}

/// What signs right now and what verifies.
pub struct Signing {
    pub key: Arc<SigningKey>,
    pub minter: Minter,
    pub verifier: MandateVerifier,
    /// Public keys still published in the JWKS.
    pub published: Vec<PublicKey>,
}

pub struct KeyManager {
    dir: PathBuf,
    issuer: String,
    audience: String,
    leeway_secs: i64,
    ring: Mutex<KeyRing>,
    signing: ArcSwap<Signing>,
}

impl KeyManager {
    /// Opens the key directory, generating the first key when it is empty.
    pub fn open(dir: &Path, issuer: &str, audience: &str, leeway_secs: i64, now_ms: i64) -> Result<Self, KeyError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        restrict_dir(dir)?;
        let ring_path = dir.join("keyring.json");
        let (ring, key) = if ring_path.exists() {
            let text = fs::read_to_string(&ring_path).map_err(|e| io(&ring_path, e))?;
            let ring: KeyRing = serde_json::from_str(&text)
                .map_err(|e| KeyError::Corrupt { path: ring_path.display().to_string(), message: e.to_string() })?;
            let pk_path = dir.join(format!("{}.pk8", ring.current));
            let der = fs::read(&pk_path).map_err(|e| io(&pk_path, e))?;
            let key = SigningKey::from_pkcs8_der(&der)
                .map_err(|e| KeyError::Corrupt { path: pk_path.display().to_string(), message: e.to_string() })?;
            if key.kid() != ring.current {
                return Err(KeyError::Corrupt {
                    path: pk_path.display().to_string(),
                    message: "the private key does not match the key ring's current kid".into(),
                });
            }
            (ring, key)
        } else {
            let key = SigningKey::generate();
            write_private(dir, &key)?;
            let ring = KeyRing {
                current: key.kid().to_owned(),
                keys: vec![KeyEntry {
                    kid: key.kid().to_owned(),
                    public_jwk: key.public_key().to_jwk(),
                    created_at_ms: now_ms,
                    retires_at_ms: None,
                }],
            };
            write_ring(dir, &ring)?;
            tracing::info!(kid = key.kid(), "generated the first signing key");
            (ring, key)
        };
        let signing = build_signing(Arc::new(key), &ring, issuer, audience, leeway_secs, now_ms)?;
        Ok(KeyManager {
            dir: dir.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs,
            ring: Mutex::new(ring),
            signing: ArcSwap::from_pointee(signing),
        })
    }

    pub fn signing(&self) -> Arc<Signing> {
        self.signing.load_full()
    }

    /// Drops keys whose overlap window has passed from the JWKS and the verifier.
    pub fn refresh(&self, now_ms: i64) -> Result<(), KeyError> {
        // Held throughout, so that a concurrent rotation cannot be overwritten with the old key.
        let ring = self.ring.lock();
        let current = self.signing().key.clone();
        let next = build_signing(current, &ring, &self.issuer, &self.audience, self.leeway_secs, now_ms)?;
        if next.published.len() != self.signing().published.len() {
            self.signing.store(Arc::new(next));
        }
        Ok(())
    }

    /// Makes a new current key. The previous one keeps verifying, and stays in the JWKS,
    /// until `overlap_ms` from now: long enough for every mandate it signed to expire.
    pub fn rotate(&self, now_ms: i64, overlap_ms: i64) -> Result<(String, String, i64), KeyError> {
        let mut ring = self.ring.lock();
        let previous = ring.current.clone();
        let key = SigningKey::generate();
        write_private(&self.dir, &key)?;
        let retires = now_ms + overlap_ms;
        for entry in ring.keys.iter_mut() {
            if entry.kid == previous {
                entry.retires_at_ms = Some(retires);
            }
        }
        ring.keys.push(KeyEntry {
            kid: key.kid().to_owned(),
            public_jwk: key.public_key().to_jwk(),
            created_at_ms: now_ms,
            retires_at_ms: None,
        });
        ring.current = key.kid().to_owned();
        write_ring(&self.dir, &ring)?;
        let old_private = self.dir.join(format!("{previous}.pk8"));
        if let Err(e) = fs::remove_file(&old_private) {
            tracing::warn!(error = %e, "could not remove the previous private key file");
        }
        let kid = key.kid().to_owned();
        let signing = build_signing(Arc::new(key), &ring, &self.issuer, &self.audience, self.leeway_secs, now_ms)?;
        self.signing.store(Arc::new(signing));
        tracing::info!(kid = %kid, previous = %previous, "rotated the signing key");
        Ok((kid, previous, retires))
    }

    /// Every public key ever used, for verifying audit checkpoints.
    pub fn all_public_keys(&self) -> Vec<PublicKey> {
        self.ring.lock().keys.iter().filter_map(|k| PublicKey::from_jwk(&k.public_jwk).ok()).collect()
    }
}

/// The name of the master key file in the key directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Reads the secrets master key from `<dir>/master.key` (base64 of 32 bytes), generating and
/// writing it (mode 0600) when the file does not exist. The key is never logged.
pub fn load_or_create_master_key(dir: &Path) -> Result<MasterKey, KeyError> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    restrict_dir(dir)?;
    let path = dir.join(MASTER_KEY_FILE);
    if path.exists() {
        let text = Zeroizing::new(fs::read_to_string(&path).map_err(|e| io(&path, e))?);
        return MasterKey::from_base64(&text).map_err(|e| KeyError::Corrupt { path: path.display().to_string(), message: e.to_string() });
    }
    let key = MasterKey::generate();
    let tmp = dir.join(format!(".{MASTER_KEY_FILE}.tmp"));
    write_secret_file(&tmp, key.to_base64().as_bytes())?;
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    tracing::info!(path = %path.display(), "generated the secrets master key");
    Ok(key)
}

/// Reads every public key of a key directory without opening a server (offline verify).
pub fn read_public_keys(dir: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let ring_path = dir.join("keyring.json");
    let text = fs::read_to_string(&ring_path).map_err(|e| io(&ring_path, e))?;
    let ring: KeyRing =
        serde_json::from_str(&text).map_err(|e| KeyError::Corrupt { path: ring_path.display().to_string(), message: e.to_string() })?;
    ring.keys
        .iter()
        .map(|k| {
            PublicKey::from_jwk(&k.public_jwk)
                .map_err(|e| KeyError::Corrupt { path: ring_path.display().to_string(), message: e.to_string() })
        })
        .collect()
}

fn build_signing(
    key: Arc<SigningKey>,
    ring: &KeyRing,
    issuer: &str,
    audience: &str,
    leeway_secs: i64,
    now_ms: i64,
) -> Result<Signing, KeyError> {
    let mut published = Vec::new();
    for entry in &ring.keys {
        if entry.retires_at_ms.is_none_or(|r| r > now_ms) {
            let pk = PublicKey::from_jwk(&entry.public_jwk)
                .map_err(|e| KeyError::Corrupt { path: "keyring.json".into(), message: e.to_string() })?;
            published.push(pk);
        }
    }
    let verifier = MandateVerifier::new(issuer, audience, &published, leeway_secs);
    Ok(Signing { minter: Minter::new(key.clone()), key, verifier, published })
}

fn write_private(dir: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let path = dir.join(format!("{}.pk8", key.kid()));
    let der = key.to_pkcs8_der().map_err(|e| KeyError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
    let tmp = dir.join(format!(".{}.pk8.tmp", key.kid()));
    write_secret_file(&tmp, &der)?;
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(())
}

/// Writes `bytes` to a new file readable by the owner only, and syncs it.
fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))?;
    Ok(())
}

fn write_ring(dir: &Path, ring: &KeyRing) -> Result<(), KeyError> {
    let path = dir.join("keyring.json");
    let tmp = dir.join(".keyring.json.tmp");
    let text =
        serde_json::to_vec_pretty(ring).map_err(|e| KeyError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
    let mut f = fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(&text).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(())
}

fn restrict_dir(dir: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
    }
    Ok(())
}

fn io(path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io { path: path.display().to_string(), source }
}
