//! The registry of remote gateways: each with its own X25519 public key, the secrets it may
//! open and the `pep` token bound to it.
//!
//! The registry is one JSON document under the meta key [`REGISTRY_KEY`], changed only with the
//! store's compare-and-set (`Store::swap_meta`), like the shared signing key ring: every replica
//! reads the same row, two racing changes cannot both win (the loser re-reads and tries again),
//! and it needs no table of its own. It is read from the store on every seal, so a registration
//! or a revocation through one replica holds on the next request at every other. It is small:
//! at most [`MAX_GATEWAYS`] gateways of at most [`MAX_GRANTS`] secrets each.

use mandate_proto::gateway::GatewayView;
use mandate_secrets::{GatewayPublicKey, validate_gateway_name, validate_name};
use mandate_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::state::AppState;

/// The meta key holding the registry.
pub const REGISTRY_KEY: &str = "gateways.registry";
/// The most gateways the registry holds, revoked ones included.
pub const MAX_GATEWAYS: usize = 1000;
/// The most secrets one gateway may be granted.
pub const MAX_GRANTS: usize = 256;
/// Compare-and-set attempts before giving up on a busy registry.
const SWAP_ATTEMPTS: usize = 8;

/// One registered gateway, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayEntry {
    pub name: String,
    /// base64url, no padding.
    pub public_key: String,
    /// Sorted, without duplicates.
    pub secrets: Vec<String>,
    pub token_id: String,
    pub created_at_ms: i64,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<i64>,
}

impl GatewayEntry {
    pub fn view(&self) -> GatewayView {
        GatewayView {
            name: self.name.clone(),
            public_key: self.public_key.clone(),
            secrets: self.secrets.clone(),
            token_id: self.token_id.clone(),
            created_at_ms: self.created_at_ms,
            created_by: self.created_by.clone(),
            revoked_at_ms: self.revoked_at_ms,
        }
    }

    pub fn may_open(&self, secret: &str) -> bool {
        self.secrets.binary_search_by(|s| s.as_str().cmp(secret)).is_ok()
    }

    pub fn public_key(&self) -> Result<GatewayPublicKey, GatewayError> {
        GatewayPublicKey::from_base64(&self.public_key).map_err(|_| GatewayError::Store(StoreError::Corrupt(self.public_key_context())))
    }

    fn public_key_context(&self) -> String {
        format!("the public key of gateway `{}` in `{REGISTRY_KEY}`", self.name)
    }
}

/// The stored document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Registry {
    version: u32,
    gateways: Vec<GatewayEntry>,
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Invalid(String),
    #[error("gateway `{0}` is already registered; revoke it first or choose another name")]
    Exists(String),
    #[error("gateway `{0}` not found")]
    NotFound(String),
    #[error("gateway `{0}` is already revoked")]
    AlreadyRevoked(String),
    #[error("the registry holds {MAX_GATEWAYS} gateways, the most it may")]
    Full,
    #[error("the gateway registry was changed by other requests at the same time; try again")]
    Busy,
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl GatewayError {
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Invalid(_) => "invalid_request",
            GatewayError::Exists(_) => "gateway_exists",
            GatewayError::NotFound(_) => "gateway_not_found",
            GatewayError::AlreadyRevoked(_) => "gateway_revoked",
            GatewayError::Full => "gateway_registry_full",
            GatewayError::Busy => "conflict",
            GatewayError::Store(e) => e.code(),
        }
    }
}

/// Checks a registration's fields; answers the secrets sorted, without duplicates.
pub fn check_registration(name: &str, public_key: &str, secrets: &[String]) -> Result<Vec<String>, GatewayError> {
    validate_gateway_name(name).map_err(|e| GatewayError::Invalid(e.to_string()))?;
    GatewayPublicKey::from_base64(public_key).map_err(|_| {
        GatewayError::Invalid("`public_key` must be a gateway's X25519 public key, as `mandate gateway keygen` prints it".into())
    })?;
    if secrets.len() > MAX_GRANTS {
        return Err(GatewayError::Invalid(format!("a gateway may be granted at most {MAX_GRANTS} secrets")));
    }
    let mut out = Vec::with_capacity(secrets.len());
    for s in secrets {
        validate_name(s).map_err(|e| GatewayError::Invalid(e.to_string()))?;
        out.push(s.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl AppState {
    /// Every registered gateway (revoked ones too), by name, read from the store.
    pub async fn gateways(&self) -> Result<Vec<GatewayEntry>, StoreError> {
        Ok(self.gateway_registry().await?.1.gateways)
    }

    /// The gateway bound to API token `token_id`, read from the store (so a change made
    /// through another replica holds here at once).
    pub async fn gateway_of_token(&self, token_id: &str) -> Result<Option<GatewayEntry>, StoreError> {
        Ok(self.gateways().await?.into_iter().find(|g| g.token_id == token_id))
    }

    /// Records a new gateway. The caller has made its `pep` token (`token_id`); on an error
    /// here the caller revokes it again.
    pub async fn insert_gateway(&self, entry: GatewayEntry) -> Result<(), GatewayError> {
        self.change_registry(|reg| {
            if reg.gateways.iter().any(|g| g.name == entry.name && g.revoked_at_ms.is_none()) {
                return Err(GatewayError::Exists(entry.name.clone()));
            }
            // A revoked gateway's name may be registered again: the new entry replaces it.
            reg.gateways.retain(|g| g.name != entry.name);
            if reg.gateways.len() >= MAX_GATEWAYS {
                return Err(GatewayError::Full);
            }
            reg.gateways.push(entry.clone());
            reg.gateways.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(())
        })
        .await
        .map(drop)
    }

    /// Marks gateway `name` revoked; answers its entry as it now is.
    pub async fn revoke_gateway(&self, name: &str, now_ms: i64) -> Result<GatewayEntry, GatewayError> {
        self.change_registry(|reg| {
            let g = reg.gateways.iter_mut().find(|g| g.name == name).ok_or_else(|| GatewayError::NotFound(mandate_core::clip(name)))?;
            if g.revoked_at_ms.is_some() {
                return Err(GatewayError::AlreadyRevoked(g.name.clone()));
            }
            g.revoked_at_ms = Some(now_ms);
            Ok(g.clone())
        })
        .await
    }

    async fn gateway_registry(&self) -> Result<(Option<String>, Registry), StoreError> {
        let text = self.store.get_meta(REGISTRY_KEY).await?;
        let reg = match &text {
            None => Registry { version: 1, gateways: Vec::new() },
            Some(t) => {
                serde_json::from_str(t).map_err(|_| StoreError::Corrupt(format!("meta value `{REGISTRY_KEY}` is not a registry")))?
            }
        };
        Ok((text, reg))
    }

    /// Reads, changes and writes back the registry with compare-and-set, retrying a few times
    /// when another request changed it in between.
    async fn change_registry<T>(&self, mut change: impl FnMut(&mut Registry) -> Result<T, GatewayError>) -> Result<T, GatewayError> {
        for _ in 0..SWAP_ATTEMPTS {
            let (before, mut reg) = self.gateway_registry().await?;
            let out = change(&mut reg)?;
            reg.version = 1;
            let text = serde_json::to_string(&reg).map_err(|e| GatewayError::Store(StoreError::Backend(e.to_string())))?;
            if self.store.swap_meta(REGISTRY_KEY, before.as_deref(), &text).await? {
                return Ok(out);
            }
        }
        Err(GatewayError::Busy)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code

    use super::*;

    #[test]
    fn registrations_are_checked_and_grants_sorted() {
        let pk = mandate_secrets::GatewayPrivateKey::generate().public_key().unwrap().to_base64();
        let s = check_registration("edge-1", &pk, &["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(s, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(check_registration("Edge 1", &pk, &[]).unwrap_err().code(), "invalid_request");
        assert_eq!(check_registration("edge", "nope", &[]).unwrap_err().code(), "invalid_request");
        assert_eq!(check_registration("edge", &pk, &["Bad/Name".into()]).unwrap_err().code(), "invalid_request");
        let many: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("s{i}")).collect();
        assert!(check_registration("edge", &pk, &many).is_err());
        let e = GatewayEntry {
            name: "edge".into(),
            public_key: pk,
            secrets: s,
            token_id: "tok_1".into(),
            created_at_ms: 1,
            created_by: "token:tok_0".into(),
            revoked_at_ms: None,
        };
        assert!(e.may_open("a") && e.may_open("b") && !e.may_open("c"));
        assert!(e.public_key().is_ok());
    }
}
