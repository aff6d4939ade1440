//! Signing keys: generated on first start, rotated with overlap, never logged.
//!
//! Two homes for the key ring. A server alone on its store keeps it in its key directory (below).
//! Replicas sharing one store (PostgreSQL) keep it in the store instead, under the meta key
//! [`SHARED_RING_KEY`]: the public ring in the clear and the current private key sealed under
//! the master key (the same envelope as brokered secrets), so that every replica signs with the
//! same key and publishes the same JWKS. Creating the first key and rotating are
//! compare-and-set writes on that one value: of two replicas racing, one wins and the other
//! adopts its ring. Every replica re-reads the ring when told it changed (the store's change
//! feed) and on every sweep.
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
    #[error("the shared key ring: {0}")]
    Store(#[from] mandate_store::StoreError),
    /// The shared ring's private key does not open with this process's master key.
    #[error(
        "the signing key in the store does not open with this master key: every replica must be started with the same `MANDATE_MASTER_KEY`"
    )]
    WrongMasterKey,
    /// Another replica rotated at the same moment; its key is current now.
    #[error("another replica rotated the signing key at the same moment; its new key `{0}` is current")]
    RotationRaced(String),
}

/// The meta key under which a shared store keeps the key ring.
pub const SHARED_RING_KEY: &str = "signing.keyring";

/// The key ring as a shared store keeps it: the public ring, and the current private key sealed
/// under the master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedRing {
    ring: KeyRing,
    sealed_key: SealedKey,
}

/// [`mandate_secrets::SealedSecret`] in base64url.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealedKey {
    wrapped_key: String,
    key_nonce: String,
    nonce: String,
    ciphertext: String,
}

/// The name a signing key is sealed under (the seal binds it; the kid is checked after opening).
const SEALED_KEY_NAME: &str = "signing-key";

/// Where a shared ring lives, and the last text of it this process installed.
struct Shared {
    store: Arc<dyn mandate_store::Store>,
    master: MasterKey,
    text: Mutex<String>,
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
    /// Set for a ring kept in a shared store; `dir` is then unused.
    shared: Option<Shared>,
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
            shared: None,
            dir: dir.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs,
            ring: Mutex::new(ring),
            signing: ArcSwap::from_pointee(signing),
        })
    }

    /// Opens the key ring kept in a shared `store`, creating it (and the first key) when no
    /// replica has yet. Fails with [`KeyError::WrongMasterKey`] when `master` is not the key the
    /// ring was sealed with.
    pub async fn open_shared(
        store: Arc<dyn mandate_store::Store>,
        master: MasterKey,
        issuer: &str,
        audience: &str,
        leeway_secs: i64,
        now_ms: i64,
    ) -> Result<Self, KeyError> {
        let text = match store.get_meta(SHARED_RING_KEY).await? {
            Some(text) => text,
            None => {
                let key = SigningKey::generate();
                let ring = KeyRing {
                    current: key.kid().to_owned(),
                    keys: vec![KeyEntry {
                        kid: key.kid().to_owned(),
                        public_jwk: key.public_key().to_jwk(),
                        created_at_ms: now_ms,
                        retires_at_ms: None,
                    }],
                };
                let text = shared_text(&master, ring, &key)?;
                if store.swap_meta(SHARED_RING_KEY, None, &text).await? {
                    tracing::info!(kid = key.kid(), "generated the first signing key in the shared store");
                    text
                } else {
                    // Another replica made it first: use theirs.
                    store.get_meta(SHARED_RING_KEY).await?.ok_or_else(|| shared_corrupt("the key ring vanished"))?
                }
            }
        };
        let (ring, key) = open_shared_text(&master, &text)?;
        let signing = build_signing(Arc::new(key), &ring, issuer, audience, leeway_secs, now_ms)?;
        Ok(KeyManager {
            shared: Some(Shared { store, master, text: Mutex::new(text) }),
            dir: PathBuf::new(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs,
            ring: Mutex::new(ring),
            signing: ArcSwap::from_pointee(signing),
        })
    }

    /// Whether the ring is kept in a shared store.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Re-reads a shared ring and installs it if another replica changed it (a rotation).
    /// `true` when it changed; always `false` for a key directory.
    pub async fn reload(&self, now_ms: i64) -> Result<bool, KeyError> {
        let Some(shared) = &self.shared else { return Ok(false) };
        let Some(text) = shared.store.get_meta(SHARED_RING_KEY).await? else {
            return Err(shared_corrupt("the key ring is missing from the store"));
        };
        if *shared.text.lock() == text {
            return Ok(false);
        }
        let (ring, key) = open_shared_text(&shared.master, &text)?;
        let mut current = self.ring.lock();
        let mut installed = shared.text.lock();
        let signing = build_signing(Arc::new(key), &ring, &self.issuer, &self.audience, self.leeway_secs, now_ms)?;
        tracing::info!(kid = %ring.current, "installed the shared key ring another replica changed");
        *current = ring;
        *installed = text;
        self.signing.store(Arc::new(signing));
        Ok(true)
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
    pub async fn rotate(&self, now_ms: i64, overlap_ms: i64) -> Result<(String, String, i64), KeyError> {
        match &self.shared {
            Some(shared) => self.rotate_shared(shared, now_ms, overlap_ms).await,
            None => self.rotate_dir(now_ms, overlap_ms),
        }
    }

    /// A rotation of a shared ring: a compare-and-set from the ring this process holds, so
    /// that two replicas rotating at once cannot both win (the loser adopts the winner's key).
    async fn rotate_shared(&self, shared: &Shared, now_ms: i64, overlap_ms: i64) -> Result<(String, String, i64), KeyError> {
        self.reload(now_ms).await?;
        let (expected, mut ring) = (shared.text.lock().clone(), self.ring.lock().clone());
        let previous = ring.current.clone();
        let key = SigningKey::generate();
        let retires = now_ms + overlap_ms;
        add_key(&mut ring, &key, now_ms, retires);
        let text = shared_text(&shared.master, ring, &key)?;
        if !shared.store.swap_meta(SHARED_RING_KEY, Some(&expected), &text).await? {
            self.reload(now_ms).await?;
            return Err(KeyError::RotationRaced(self.signing().key.kid().to_owned()));
        }
        self.reload(now_ms).await?;
        tracing::info!(kid = %key.kid(), previous = %previous, "rotated the shared signing key");
        Ok((key.kid().to_owned(), previous, retires))
    }

    fn rotate_dir(&self, now_ms: i64, overlap_ms: i64) -> Result<(String, String, i64), KeyError> {
        let mut ring = self.ring.lock();
        let previous = ring.current.clone();
        let key = SigningKey::generate();
        write_private(&self.dir, &key)?;
        let retires = now_ms + overlap_ms;
        add_key(&mut ring, &key, now_ms, retires);
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

/// Makes `key` current in `ring`; the previous current key retires at `retires`.
fn add_key(ring: &mut KeyRing, key: &SigningKey, now_ms: i64, retires: i64) {
    let previous = ring.current.clone();
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
}

fn shared_corrupt(message: &str) -> KeyError {
    KeyError::Corrupt { path: format!("store meta `{SHARED_RING_KEY}`"), message: message.to_owned() }
}

/// The shared form of `ring` with `key` (its current key) sealed under `master`.
fn shared_text(master: &MasterKey, ring: KeyRing, key: &SigningKey) -> Result<String, KeyError> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let der = key.to_pkcs8_der().map_err(|e| shared_corrupt(&e.to_string()))?;
    let sealed = mandate_secrets::seal(master, SEALED_KEY_NAME, 1, &der).map_err(|e| shared_corrupt(&e.to_string()))?;
    let shared = SharedRing {
        ring,
        sealed_key: SealedKey {
            wrapped_key: b64(&sealed.wrapped_key),
            key_nonce: b64(&sealed.key_nonce),
            nonce: b64(&sealed.nonce),
            ciphertext: b64(&sealed.ciphertext),
        },
    };
    serde_json::to_string(&shared).map_err(|e| shared_corrupt(&e.to_string()))
}

/// Parses a shared ring and opens its current private key.
fn open_shared_text(master: &MasterKey, text: &str) -> Result<(KeyRing, SigningKey), KeyError> {
    use base64::Engine as _;
    let shared: SharedRing = serde_json::from_str(text).map_err(|e| shared_corrupt(&e.to_string()))?;
    let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|e| shared_corrupt(&e.to_string()));
    let sealed = mandate_secrets::SealedSecret {
        wrapped_key: b(&shared.sealed_key.wrapped_key)?,
        key_nonce: b(&shared.sealed_key.key_nonce)?,
        nonce: b(&shared.sealed_key.nonce)?,
        ciphertext: b(&shared.sealed_key.ciphertext)?,
    };
    let der = mandate_secrets::open(master, SEALED_KEY_NAME, 1, &sealed).map_err(|_| KeyError::WrongMasterKey)?;
    let key = SigningKey::from_pkcs8_der(&der).map_err(|e| shared_corrupt(&e.to_string()))?;
    if key.kid() != shared.ring.current {
        return Err(shared_corrupt("the sealed private key does not match the ring's current kid"));
    }
    Ok((shared.ring, key))
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
