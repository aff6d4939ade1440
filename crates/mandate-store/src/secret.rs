//! The stored form of a brokered secret version.

/// The sealed (encrypted) parts of one secret version, as stored. Without the master key none of
/// it reveals the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecretBlob {
    /// The data key, wrapped by the master key.
    pub wrapped_key: Vec<u8>,
    /// The nonce the data key was wrapped with.
    pub key_nonce: Vec<u8>,
    /// The nonce the value was encrypted with.
    pub nonce: Vec<u8>,
    /// The encrypted value.
    pub ciphertext: Vec<u8>,
}

/// One version of a secret: metadata in the clear, the value sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// 1 to 64 of `a-z0-9-_.`.
    pub name: String,
    /// 1 for the first value, one more on each rotation.
    pub version: u32,
    /// What the secret is for.
    pub description: String,
    pub created_at_ms: i64,
    /// The actor who stored this version.
    pub created_by: String,
    pub sealed: SealedSecretBlob,
}
