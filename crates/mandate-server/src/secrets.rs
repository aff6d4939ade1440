//! The secrets broker's server side: sealing new versions and revealing values in-process.
//! No endpoint ever returns a value; [`AppState::reveal_secret`] is for an embedded gateway
//! only. A remote gateway never gets the stored record: `routes::secrets` opens the value here
//! and seals it with HPKE to that gateway's own key (`mandate_secrets::seal_to_gateway`).

use mandate_secrets::{SealedSecret, SecretError};
use mandate_store::{SealedSecretBlob, SecretRecord, StoreError};
use zeroize::Zeroizing;

use crate::state::AppState;

/// Why a secret's value could not be revealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevealError {
    /// No secret of that name.
    #[error("secret `{0}` not found")]
    NotFound(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The stored value does not decrypt (another master key, or damaged data).
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// A dynamic secret has no value to hand out, only per-task leases.
    #[error("secret `{0}` is postgres-dynamic: its credentials are per task")]
    Dynamic(String),
}

impl RevealError {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            RevealError::NotFound(_) => "secret_not_found",
            RevealError::Store(e) => e.code(),
            RevealError::Secret(e) => e.code(),
            RevealError::Dynamic(_) => "secret_is_dynamic",
        }
    }
}

impl AppState {
    /// The value a gateway injects for secret `name` on behalf of task `task`: a static
    /// secret's latest value, or a dynamic secret's credential for that task (minted on first
    /// use, see [`AppState::lease`]). The version is the secret's.
    pub async fn secret_for(&self, name: &str, task: Option<&str>, actor: &str) -> Result<(u32, Zeroizing<Vec<u8>>), String> {
        match self.reveal_secret(name).await {
            Err(RevealError::Dynamic(_)) => {
                let task = task.ok_or_else(|| "secret_needs_task".to_owned())?;
                let lease = self.lease(name, task, actor).await.map_err(|e| e.code().to_owned())?;
                let value = self.open_lease(&lease).map_err(|e| e.code().to_owned())?;
                Ok((lease.secret_version, value))
            }
            other => other.map_err(|e| e.code().to_owned()),
        }
    }

    /// The latest version of secret `name` and its value, decrypted. In-process only: the
    /// caller injects it where it belongs and drops it (the buffer is zeroized on drop).
    pub async fn reveal_secret(&self, name: &str) -> Result<(u32, Zeroizing<Vec<u8>>), RevealError> {
        let record = self.sealed_secret(name).await?.ok_or_else(|| RevealError::NotFound(mandate_core::clip(name)))?;
        if record.kind.is_dynamic() {
            return Err(RevealError::Dynamic(mandate_core::clip(name)));
        }
        let sealed = SealedSecret {
            wrapped_key: record.sealed.wrapped_key,
            key_nonce: record.sealed.key_nonce,
            nonce: record.sealed.nonce,
            ciphertext: record.sealed.ciphertext,
        };
        let value = mandate_secrets::open(&self.master_key, &record.name, record.version, &sealed)?;
        Ok((record.version, value))
    }

    /// The latest version of secret `name` as stored: sealed, never a value. `None` when no
    /// secret has that name.
    pub async fn sealed_secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        self.store.latest_secret(name).await
    }

    /// Encrypts `value` as version `version` of `name` into a record ready to store.
    pub(crate) fn seal_secret(
        &self,
        name: &str,
        version: u32,
        kind: mandate_store::SecretKind,
        description: &str,
        created_by: &str,
        value: &[u8],
    ) -> Result<SecretRecord, SecretError> {
        let sealed = mandate_secrets::seal(&self.master_key, name, version, value)?;
        Ok(SecretRecord {
            name: name.to_owned(),
            version,
            kind,
            description: description.to_owned(),
            created_at_ms: self.clock.now_ms(),
            created_by: created_by.to_owned(),
            sealed: SealedSecretBlob {
                wrapped_key: sealed.wrapped_key,
                key_nonce: sealed.key_nonce,
                nonce: sealed.nonce,
                ciphertext: sealed.ciphertext,
            },
        })
    }
}
