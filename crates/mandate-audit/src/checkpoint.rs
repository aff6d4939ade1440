//! Signed checkpoints: a statement, signed with one of the server's Ed25519 keys, that the chain
//! had a given hash at a given seq. They make truncation and wholesale rewriting of the trail
//! detectable, which the hash chain alone cannot.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ChainHead;

/// The domain-separation prefix of every checkpoint signature.
pub const CHECKPOINT_CONTEXT: &[u8] = b"mandate-audit-checkpoint/v1\n";

/// A signed statement that event `seq` had hash `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The seq of the event the checkpoint covers (0 for an empty trail).
    pub seq: u64,
    /// That event's hash.
    pub hash: String,
    /// When the checkpoint was signed, in milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The id of the signing key.
    pub kid: String,
    /// Base64url (unpadded) Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The signed bytes: the context, then seq, hash, ts_ms and kid, each followed by a newline
    /// but the last. Only `kid` could hold a newline, and it comes last, so the encoding is
    /// unambiguous.
    pub fn message(&self) -> Vec<u8> {
        message(self.seq, &self.hash, self.ts_ms, &self.kid)
    }

    /// Does `key` verify this checkpoint's signature? Strict Ed25519 verification: malleable
    /// and small-order signatures are refused.
    pub fn signature_is_valid(&self, key: &VerifyingKey) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(&self.signature) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        key.verify_strict(&self.message(), &Signature::from_bytes(&bytes)).is_ok()
    }
}

/// Signs a checkpoint of `head` with `key`, named `kid`.
pub fn sign_checkpoint(head: &ChainHead, ts_ms: i64, kid: &str, key: &SigningKey) -> Checkpoint {
    let signature = key.sign(&message(head.seq, &head.hash, ts_ms, kid));
    Checkpoint {
        seq: head.seq,
        hash: head.hash.clone(),
        ts_ms,
        kid: kid.to_owned(),
        signature: URL_SAFE_NO_PAD.encode(signature.to_bytes()),
    }
}

fn message(seq: u64, hash: &str, ts_ms: i64, kid: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 128);
    m.extend_from_slice(CHECKPOINT_CONTEXT);
    m.extend_from_slice(format!("{seq}\n{hash}\n{ts_ms}\n{kid}").as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_documented_message() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let head = ChainHead { seq: 7, hash: "ab".repeat(32) };
        let cp = sign_checkpoint(&head, 1_000, "k1", &key);
        assert_eq!(cp.message(), format!("mandate-audit-checkpoint/v1\n7\n{}\n1000\nk1", "ab".repeat(32)).into_bytes());
        assert!(cp.signature_is_valid(&key.verifying_key()));
        assert!(!cp.signature.contains('='));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let vk = key.verifying_key();
        let cp = sign_checkpoint(&ChainHead { seq: 7, hash: "ab".repeat(32) }, 1_000, "k1", &key);
        let changed = [
            Checkpoint { seq: 8, ..cp.clone() },
            Checkpoint { hash: "cd".repeat(32), ..cp.clone() },
            Checkpoint { ts_ms: 1_001, ..cp.clone() },
            Checkpoint { kid: "k2".into(), ..cp.clone() },
            Checkpoint { signature: "not base64!".into(), ..cp.clone() },
            Checkpoint { signature: URL_SAFE_NO_PAD.encode([0u8; 64]), ..cp.clone() },
        ];
        for c in changed {
            assert!(!c.signature_is_valid(&vk), "{c:?}");
        }
        assert!(!cp.signature_is_valid(&SigningKey::from_bytes(&[2; 32]).verifying_key()));
    }
}
