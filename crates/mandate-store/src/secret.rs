//! The stored form of a brokered secret version, and of a dynamic credential's lease.

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

/// What a secret's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SecretKind {
    /// A value handed to upstreams as it is (an API key, a token).
    #[default]
    Static,
    /// The configuration of a PostgreSQL database on which a login role is minted per task
    /// (admin connection, grants); what upstreams get is that task's lease.
    PostgresDynamic,
}

impl SecretKind {
    /// Every kind.
    pub const ALL: [SecretKind; 2] = [SecretKind::Static, SecretKind::PostgresDynamic];

    /// The stable name: `static`, `postgres-dynamic`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Static => "static",
            SecretKind::PostgresDynamic => "postgres-dynamic",
        }
    }

    /// The kind of that name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether values of this kind are leased per task rather than handed out as they are.
    pub fn is_dynamic(self) -> bool {
        !matches!(self, SecretKind::Static)
    }
}

/// One version of a secret: metadata in the clear, the value sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// 1 to 64 of `a-z0-9-_.`.
    pub name: String,
    /// 1 for the first value, one more on each rotation.
    pub version: u32,
    /// What the value is; every version of a secret has the same kind.
    pub kind: SecretKind,
    /// What the secret is for.
    pub description: String,
    pub created_at_ms: i64,
    /// The actor who stored this version.
    pub created_by: String,
    pub sealed: SealedSecretBlob,
}

/// A credential minted for one task from a dynamic secret (a database login role), kept until
/// it is dropped so that any process sharing the store, after any restart, can drop it.
///
/// A lease is *undropped* while `dropped_at_ms` is `None`. It is *due* (to be dropped) once its
/// task is no longer live or `expires_at_ms` has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique, chosen by the server (`lease_…`).
    pub id: String,
    /// The dynamic secret it was minted from.
    pub secret: String,
    /// The version of that secret whose configuration minted it.
    pub secret_version: u32,
    /// The task it belongs to; no two undropped leases share (secret, task).
    pub task_id: String,
    /// The credential's identity at the target (the database role name), never derived from
    /// user input.
    pub role: String,
    /// The credential handed out (a connection URL with the password), sealed under the master
    /// key with the lease id as its name and version 1.
    pub credential: SealedSecretBlob,
    pub created_at_ms: i64,
    /// When the credential stops working at the target by itself (the task's expiry).
    pub expires_at_ms: i64,
    /// When it was dropped (`None`: not yet).
    pub dropped_at_ms: Option<i64>,
    /// Why it was dropped (`task_completed`, `task_revoked`, `task_expired`, `lease_expired`,
    /// `mint_failed: …`); `None` while undropped.
    pub drop_reason: Option<String>,
}

impl Lease {
    /// Whether it has not been dropped yet.
    pub fn is_undropped(&self) -> bool {
        self.dropped_at_ms.is_none()
    }
}
