//! Evidence receipts: what binds a remote gateway's `tool.call` event to a decision the same
//! `pep` token obtained.
//!
//! With each decision a `pep` token gets, the control plane answers a receipt: an HMAC-SHA256
//! over (token id, decision id, task, agent) under a key derived from the master key. Every
//! replica holds the same master key (the store refuses a server started with another), so a
//! receipt made by one verifies on any other, and nothing is stored per decision. `POST
//! /v1/evidence` takes an event naming a decision only with the receipt that decision was
//! answered with, for the submitting token, and the same task and agent: a `pep` token cannot
//! write into the trail of a task it obtained no decision for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use mandate_secrets::MasterKey;
use sha2::Sha256;

/// What the receipt key is derived for.
const LABEL: &str = "mandate evidence receipt v1";

/// The receipts of one control plane.
pub struct Receipts {
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl Receipts {
    pub fn new(master: &MasterKey) -> Self {
        Receipts { key: master.derive(LABEL) }
    }

    /// The receipt (base64url, no padding) for decision `decision_id` made for `token_id`.
    pub fn make(&self, token_id: &str, decision_id: &str, task: Option<&str>, agent: Option<&str>) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(token_id, decision_id, task, agent).finalize().into_bytes())
    }

    /// Whether `receipt` is the one [`Self::make`] gives for these (in constant time).
    pub fn verify(&self, receipt: &str, token_id: &str, decision_id: &str, task: Option<&str>, agent: Option<&str>) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(receipt) else { return false };
        self.mac(token_id, decision_id, task, agent).verify_slice(&tag).is_ok()
    }

    fn mac(&self, token_id: &str, decision_id: &str, task: Option<&str>, agent: Option<&str>) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_slice()).unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        // Each field with its presence and length, so no two tuples share an input.
        for field in [Some(token_id), Some(decision_id), task, agent] {
            match field {
                None => mac.update(&[0]),
                Some(f) => {
                    mac.update(&[1]);
                    mac.update(&u64::try_from(f.len()).unwrap_or(u64::MAX).to_be_bytes());
                    mac.update(f.as_bytes());
                }
            }
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_binds_token_decision_task_and_agent() {
        let master = MasterKey::generate();
        let r = Receipts::new(&master);
        let receipt = r.make("tok_1", "dec_1", Some("task_1"), Some("bot"));
        assert!(r.verify(&receipt, "tok_1", "dec_1", Some("task_1"), Some("bot")));
        assert!(!r.verify(&receipt, "tok_2", "dec_1", Some("task_1"), Some("bot")), "another token");
        assert!(!r.verify(&receipt, "tok_1", "dec_2", Some("task_1"), Some("bot")), "another decision");
        assert!(!r.verify(&receipt, "tok_1", "dec_1", Some("task_2"), Some("bot")), "another task");
        assert!(!r.verify(&receipt, "tok_1", "dec_1", None, Some("bot")), "no task");
        assert!(!r.verify(&receipt, "tok_1", "dec_1", Some("task_1"), None), "no agent");
        assert!(!r.verify("not base64!", "tok_1", "dec_1", Some("task_1"), Some("bot")));
        // Field boundaries count.
        assert_ne!(r.make("a", "bc", None, None), r.make("ab", "c", None, None));
        // Another replica with the same master key verifies it; another master key does not.
        assert!(Receipts::new(&master.clone()).verify(&receipt, "tok_1", "dec_1", Some("task_1"), Some("bot")));
        assert!(!Receipts::new(&MasterKey::generate()).verify(&receipt, "tok_1", "dec_1", Some("task_1"), Some("bot")));
    }
}
