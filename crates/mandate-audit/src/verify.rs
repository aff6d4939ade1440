//! Verifying a trail: events are streamed through a [`Verifier`] in seq order, then the signed
//! checkpoints are checked against what was seen.
//!
//! What is detected, and where it is reported:
//!
//! | tampering | code | seq named |
//! |---|---|---|
//! | a column edited (seq, ts_ms, kind, actor, agent, task, prev_hash) | `body_mismatch` | the edited event |
//! | a body edited, hash left alone | `hash_mismatch` | the edited event |
//! | a body edited and its hash recomputed | `chain_broken` | the event after it |
//! | a row deleted | `sequence_gap` | the first missing seq |
//! | a row inserted (later rows renumbered) | `body_mismatch` | the first renumbered event |
//! | rows reordered (contents swapped between seqs) | `body_mismatch` | the first moved event |
//! | rows delivered out of order | `sequence_gap` | the seq that was expected |
//! | the tail cut off below a checkpoint | `truncated` | the first missing seq |
//! | everything from some event on rewritten consistently | `checkpoint_mismatch` | the checkpoint's seq |
//!
//! Edits after the last checkpoint that rewrite the whole tail consistently, or that also
//! delete the checkpoints, cannot be told apart from a genuine trail by the trail alone; ship
//! checkpoints somewhere the database's writer cannot reach to close that gap.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Checkpoint, SealedEvent};

/// The stable codes a [`VerifyFailure`] carries.
pub mod codes {
    /// An event's seq is not the one after the previous event's (deleted or reordered rows).
    pub const SEQUENCE_GAP: &str = "sequence_gap";
    /// An event's hash is not the SHA-256 of its body.
    pub const HASH_MISMATCH: &str = "hash_mismatch";
    /// An event's prev_hash is not the previous event's hash.
    pub const CHAIN_BROKEN: &str = "chain_broken";
    /// An event's columns disagree with its body.
    pub const BODY_MISMATCH: &str = "body_mismatch";
    /// The trail ends before a checkpoint's seq.
    pub const TRUNCATED: &str = "truncated";
    /// A checkpoint's signature does not verify under its key.
    pub const BAD_CHECKPOINT_SIGNATURE: &str = "bad_checkpoint_signature";
    /// A checkpoint's hash differs from the event hash at its seq.
    pub const CHECKPOINT_MISMATCH: &str = "checkpoint_mismatch";
    /// A checkpoint names a key that is not trusted.
    pub const UNKNOWN_CHECKPOINT_KEY: &str = "unknown_checkpoint_key";
    /// An event's body is not the JSON object an event body must be.
    pub const MALFORMED_BODY: &str = "malformed_body";
}

/// Where and how a trail failed verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("audit trail fails verification at seq {seq}: {message}")]
pub struct VerifyFailure {
    /// The first bad seq (see the module documentation for which seq each check names).
    pub seq: u64,
    /// One of [`codes`].
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many events were verified.
    pub events: u64,
    /// The last event's seq (0 for an empty trail).
    pub last_seq: u64,
    /// The last event's hash.
    pub last_hash: String,
    /// How many checkpoints were verified.
    pub checkpoints: usize,
}

/// Streaming verifier of a trail.
///
/// Push every event in seq order from seq 1, then call [`Verifier::finish`] with the trail's
/// checkpoints. Memory grows by 32 bytes per event (the hashes checkpoints are compared with).
/// After a failure the verifier is spent: every later call returns the same failure.
pub struct Verifier {
    keys: HashMap<String, VerifyingKey>,
    last_seq: u64,
    last_hash: [u8; 32],
    /// `hashes[i]` is the hash of event `i + 1`.
    hashes: Vec<[u8; 32]>,
    failed: Option<VerifyFailure>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("last_seq", &self.last_seq)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier that trusts checkpoints signed by these `(kid, key)` pairs.
    pub fn new(keys: Vec<(String, VerifyingKey)>) -> Self {
        Verifier { keys: keys.into_iter().collect(), last_seq: 0, last_hash: [0; 32], hashes: Vec::new(), failed: None }
    }

    /// Checks the next event: its seq follows the last one, its hash is the SHA-256 of its
    /// body, its body is well formed and agrees with every column, and it links to the last
    /// event's hash.
    pub fn push(&mut self, e: &SealedEvent) -> Result<(), VerifyFailure> {
        if let Some(failure) = &self.failed {
            return Err(failure.clone());
        }
        match self.check(e) {
            Ok(digest) => {
                self.last_seq = e.seq;
                self.last_hash = digest;
                self.hashes.push(digest);
                Ok(())
            }
            Err(failure) => {
                self.failed = Some(failure.clone());
                Err(failure)
            }
        }
    }

    /// Checks every checkpoint against the events pushed: its key is trusted, its signature
    /// valid, its seq within the trail and its hash the event hash at that seq. Checkpoints are
    /// checked in seq order, so the failure reported is the earliest.
    pub fn finish(self, checkpoints: &[Checkpoint]) -> Result<VerifyReport, VerifyFailure> {
        if let Some(failure) = self.failed {
            return Err(failure);
        }
        let mut sorted: Vec<&Checkpoint> = checkpoints.iter().collect();
        sorted.sort_by_key(|c| c.seq);
        for cp in sorted {
            self.check_checkpoint(cp)?;
        }
        Ok(VerifyReport {
            events: self.last_seq,
            last_seq: self.last_seq,
            last_hash: hex::encode(self.last_hash),
            checkpoints: checkpoints.len(),
        })
    }

    fn check(&self, e: &SealedEvent) -> Result<[u8; 32], VerifyFailure> {
        let expected = self.last_seq.saturating_add(1);
        if e.seq != expected {
            let message = if e.seq > expected {
                format!("event {expected} is missing: the next event has seq {}", e.seq)
            } else {
                format!("expected event {expected}, found event {} out of order", e.seq)
            };
            return Err(fail(expected, codes::SEQUENCE_GAP, message));
        }

        let digest: [u8; 32] = Sha256::digest(e.body.as_bytes()).into();
        if !hex_eq(&digest, &e.hash) {
            return Err(fail(e.seq, codes::HASH_MISMATCH, "hash is not the SHA-256 of the body"));
        }

        let body: Body<'_> =
            serde_json::from_str(&e.body).map_err(|err| fail(e.seq, codes::MALFORMED_BODY, format!("body is not an event body: {err}")))?;
        let column = body.disagreement(e);
        if let Some(column) = column {
            return Err(fail(e.seq, codes::BODY_MISMATCH, format!("column `{column}` disagrees with the body")));
        }

        if !hex_eq(&self.last_hash, &e.prev_hash) {
            return Err(fail(
                e.seq,
                codes::CHAIN_BROKEN,
                format!("prev_hash is not the hash of event {}: one of the two was altered", self.last_seq),
            ));
        }
        Ok(digest)
    }

    fn check_checkpoint(&self, cp: &Checkpoint) -> Result<(), VerifyFailure> {
        let Some(key) = self.keys.get(&cp.kid) else {
            return Err(fail(cp.seq, codes::UNKNOWN_CHECKPOINT_KEY, format!("checkpoint is signed with untrusted key `{}`", cp.kid)));
        };
        if !cp.signature_is_valid(key) {
            return Err(fail(
                cp.seq,
                codes::BAD_CHECKPOINT_SIGNATURE,
                format!("checkpoint signature does not verify under key `{}`", cp.kid),
            ));
        }
        if cp.seq > self.last_seq {
            return Err(fail(
                self.last_seq.saturating_add(1),
                codes::TRUNCATED,
                format!("the trail ends at seq {} but a checkpoint was signed at seq {}", self.last_seq, cp.seq),
            ));
        }
        let expected = match cp.seq.checked_sub(1) {
            None => Some([0; 32]),
            Some(i) => usize::try_from(i).ok().and_then(|i| self.hashes.get(i)).copied(),
        };
        if !expected.is_some_and(|h| hex_eq(&h, &cp.hash)) {
            return Err(fail(cp.seq, codes::CHECKPOINT_MISMATCH, "checkpoint hash differs from the event's hash"));
        }
        Ok(())
    }
}

/// The fields of an event body, borrowed where no unescaping is needed. `details` is skipped:
/// it has no column to agree with, and the hash already covers it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    seq: u64,
    ts_ms: i64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    agent: Option<Cow<'a, str>>,
    #[serde(borrow)]
    task: Option<Cow<'a, str>>,
    #[serde(borrow)]
    prev_hash: Cow<'a, str>,
    #[serde(rename = "details")]
    _details: IgnoredAny,
}

impl Body<'_> {
    /// The first column that disagrees with the body, if any.
    fn disagreement(&self, e: &SealedEvent) -> Option<&'static str> {
        if self.seq != e.seq {
            Some("seq")
        } else if self.ts_ms != e.ts_ms {
            Some("ts_ms")
        } else if self.kind != e.kind.as_str() {
            Some("kind")
        } else if self.actor != e.actor.as_str() {
            Some("actor")
        } else if self.agent.as_deref() != e.agent.as_deref() {
            Some("agent")
        } else if self.task.as_deref() != e.task.as_deref() {
            Some("task")
        } else if self.prev_hash != e.prev_hash.as_str() {
            Some("prev_hash")
        } else {
            None
        }
    }
}

/// Is `text` the lowercase hex of `digest`?
fn hex_eq(digest: &[u8; 32], text: &str) -> bool {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(digest, &mut buf).is_ok() && buf.as_slice() == text.as_bytes()
}

fn fail(seq: u64, code: &'static str, message: impl Into<String>) -> VerifyFailure {
    VerifyFailure { seq, code, message: message.into() }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use serde_json::json;

    use super::*;
    use crate::{ChainHead, NewEvent, seal, sign_checkpoint};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn verifier() -> Verifier {
        Verifier::new(vec![("k1".into(), key().verifying_key())])
    }

    fn trail(n: u64) -> Vec<SealedEvent> {
        let events = (1..=n)
            .map(|i| NewEvent {
                ts_ms: 1_700_000_000_000 + i as i64,
                kind: "decision".into(),
                actor: "agent:bot".into(),
                agent: Some("bot".into()),
                task: Some(format!("t{}", i % 3)),
                details: json!({"decision": i % 2 == 0, "action": "tickets.read"}),
            })
            .collect();
        seal(&ChainHead::genesis(), events)
    }

    fn checkpoint_at(events: &[SealedEvent], seq: u64) -> Checkpoint {
        let hash = events[(seq - 1) as usize].hash.clone();
        sign_checkpoint(&ChainHead { seq, hash }, 1, "k1", &key())
    }

    fn verify(events: &[SealedEvent], checkpoints: &[Checkpoint]) -> Result<VerifyReport, VerifyFailure> {
        let mut v = verifier();
        for e in events {
            v.push(e)?;
        }
        v.finish(checkpoints)
    }

    fn failure(events: &[SealedEvent], checkpoints: &[Checkpoint]) -> (u64, &'static str) {
        let f = verify(events, checkpoints).unwrap_err();
        (f.seq, f.code)
    }

    /// Re-seals `body` onto the event: what a tamperer who knows the format would do.
    fn rehash(e: &mut SealedEvent) {
        e.hash = crate::chain::sha256_hex(e.body.as_bytes());
    }

    #[test]
    fn a_genuine_trail_verifies() {
        let events = trail(10);
        let cps = [checkpoint_at(&events, 4), checkpoint_at(&events, 10)];
        let report = verify(&events, &cps).unwrap();
        assert_eq!(report, VerifyReport { events: 10, last_seq: 10, last_hash: events[9].hash.clone(), checkpoints: 2 });
    }

    #[test]
    fn an_empty_trail_verifies_with_a_genesis_checkpoint() {
        let cp = sign_checkpoint(&ChainHead::genesis(), 1, "k1", &key());
        let report = verifier().finish(&[cp]).unwrap();
        assert_eq!(report.events, 0);
        assert_eq!(report.last_hash, crate::GENESIS_HASH);
    }

    #[test]
    fn every_edited_column_is_named() {
        type Edit = fn(&mut SealedEvent);
        let edits: [(&str, Edit); 7] = [
            ("seq", |e| e.seq = 99),
            ("ts_ms", |e| e.ts_ms += 1),
            ("kind", |e| e.kind = "task.opened".into()),
            ("actor", |e| e.actor = "agent:other".into()),
            ("agent", |e| e.agent = None),
            ("task", |e| e.task = Some("t-other".into())),
            ("prev_hash", |e| e.prev_hash = "1".repeat(64)),
        ];
        for (column, edit) in edits {
            let mut events = trail(6);
            edit(&mut events[3]);
            let f = verify(&events, &[]).unwrap_err();
            if column == "seq" {
                assert_eq!((f.seq, f.code), (4, codes::SEQUENCE_GAP));
            } else {
                assert_eq!((f.seq, f.code), (4, codes::BODY_MISMATCH), "{column}");
                assert!(f.message.contains(column), "{}", f.message);
            }
        }
    }

    #[test]
    fn an_edited_hash_is_detected() {
        let mut events = trail(6);
        events[2].hash = "f".repeat(64);
        assert_eq!(failure(&events, &[]), (3, codes::HASH_MISMATCH));
        let mut events = trail(6);
        events[2].hash = events[2].hash.to_uppercase();
        assert_eq!(failure(&events, &[]), (3, codes::HASH_MISMATCH));
    }

    #[test]
    fn an_edited_body_is_detected() {
        let mut events = trail(6);
        assert!(events[2].body.contains("\"decision\":false"));
        events[2].body = events[2].body.replace("\"decision\":false", "\"decision\":true");
        assert_eq!(failure(&events, &[]), (3, codes::HASH_MISMATCH));

        // Rehashed: the next event no longer links to it.
        rehash(&mut events[2]);
        assert_eq!(failure(&events, &[]), (4, codes::CHAIN_BROKEN));
    }

    #[test]
    fn a_malformed_body_is_detected() {
        for body in ["not json", "[]", "{}", r#"{"seq":1}"#] {
            let mut events = trail(3);
            events[0].body = body.into();
            rehash(&mut events[0]);
            assert_eq!(failure(&events, &[]), (1, codes::MALFORMED_BODY), "{body}");
        }
        let mut events = trail(3);
        events[0].body = events[0].body.replacen('{', r#"{"extra":1,"#, 1);
        rehash(&mut events[0]);
        assert_eq!(failure(&events, &[]), (1, codes::MALFORMED_BODY));
    }

    #[test]
    fn a_deleted_row_is_detected() {
        let mut events = trail(6);
        events.remove(2);
        let f = verify(&events, &[]).unwrap_err();
        assert_eq!((f.seq, f.code), (3, codes::SEQUENCE_GAP));
        assert!(f.message.contains("missing"), "{}", f.message);
        let mut events = trail(6);
        events.remove(0);
        assert_eq!(failure(&events, &[]), (1, codes::SEQUENCE_GAP));
    }

    #[test]
    fn an_inserted_row_is_detected() {
        // A forged event at seq 4 that links to event 3, with the rest renumbered after it.
        let original = trail(6);
        let mut forged = seal(
            &ChainHead { seq: 3, hash: original[2].hash.clone() },
            vec![NewEvent {
                ts_ms: 1,
                kind: "decision".into(),
                actor: "agent:bot".into(),
                agent: Some("bot".into()),
                task: None,
                details: json!({"decision": true}),
            }],
        );
        let mut events: Vec<SealedEvent> = original[..3].to_vec();
        events.append(&mut forged);
        events.extend(original[3..].iter().cloned().map(|mut e| {
            e.seq += 1;
            e
        }));
        assert_eq!(failure(&events, &[]), (5, codes::BODY_MISMATCH));

        // Without renumbering the rest, there is no room for it.
        let mut events: Vec<SealedEvent> = original.clone();
        events.insert(3, original[3].clone());
        assert_eq!(failure(&events, &[]), (5, codes::SEQUENCE_GAP));
    }

    #[test]
    fn reordered_rows_are_detected() {
        // Delivered out of order.
        let mut events = trail(6);
        events.swap(2, 3);
        let f = verify(&events, &[]).unwrap_err();
        assert_eq!((f.seq, f.code), (3, codes::SEQUENCE_GAP));

        // Contents swapped between two seqs (what an UPDATE of every column but seq does).
        let mut events = trail(6);
        events.swap(2, 3);
        events[2].seq = 3;
        events[3].seq = 4;
        assert_eq!(failure(&events, &[]), (3, codes::BODY_MISMATCH));
    }

    #[test]
    fn tail_truncation_below_a_checkpoint_is_detected() {
        let events = trail(10);
        let cps = [checkpoint_at(&events, 3), checkpoint_at(&events, 8)];
        let f = verify(&events[..6], &cps).unwrap_err();
        assert_eq!((f.seq, f.code), (7, codes::TRUNCATED));
        assert_eq!(failure(&[], &cps), (1, codes::TRUNCATED));
        // Truncation above the last checkpoint is indistinguishable from a shorter trail.
        assert!(verify(&events[..8], &cps).is_ok());
    }

    #[test]
    fn a_consistently_rewritten_tail_fails_its_checkpoint() {
        let events = trail(10);
        let cps = [checkpoint_at(&events, 8)];
        let mut forged: Vec<SealedEvent> = events[..4].to_vec();
        let rewritten: Vec<NewEvent> = events[4..]
            .iter()
            .map(|e| NewEvent {
                ts_ms: e.ts_ms,
                kind: e.kind.clone(),
                actor: e.actor.clone(),
                agent: e.agent.clone(),
                task: e.task.clone(),
                details: json!({"decision": true}),
            })
            .collect();
        forged.extend(seal(&ChainHead { seq: 4, hash: events[3].hash.clone() }, rewritten));
        assert_eq!(failure(&forged, &cps), (8, codes::CHECKPOINT_MISMATCH));
    }

    #[test]
    fn checkpoints_need_a_trusted_key_and_a_valid_signature() {
        let events = trail(5);
        let mut cp = checkpoint_at(&events, 3);
        cp.kid = "k-unknown".into();
        assert_eq!(failure(&events, &[cp]), (3, codes::UNKNOWN_CHECKPOINT_KEY));

        let mut cp = checkpoint_at(&events, 3);
        cp.ts_ms += 1;
        assert_eq!(failure(&events, &[cp]), (3, codes::BAD_CHECKPOINT_SIGNATURE));

        let other = SigningKey::from_bytes(&[3; 32]);
        let forged = sign_checkpoint(&ChainHead { seq: 3, hash: events[2].hash.clone() }, 1, "k1", &other);
        assert_eq!(failure(&events, &[forged]), (3, codes::BAD_CHECKPOINT_SIGNATURE));

        // A signed checkpoint whose hash is not the trail's.
        let wrong = sign_checkpoint(&ChainHead { seq: 3, hash: events[1].hash.clone() }, 1, "k1", &key());
        assert_eq!(failure(&events, &[wrong]), (3, codes::CHECKPOINT_MISMATCH));
    }

    #[test]
    fn the_earliest_checkpoint_failure_is_reported() {
        let events = trail(5);
        let mut late = checkpoint_at(&events, 5);
        late.kid = "k-unknown".into();
        let early = sign_checkpoint(&ChainHead { seq: 2, hash: "0".repeat(64) }, 1, "k1", &key());
        assert_eq!(failure(&events, &[late, early]), (2, codes::CHECKPOINT_MISMATCH));
    }

    #[test]
    fn a_failed_verifier_stays_failed() {
        let mut events = trail(3);
        events[1].hash = "0".repeat(64);
        let mut v = verifier();
        v.push(&events[0]).unwrap();
        let first = v.push(&events[1]).unwrap_err();
        assert_eq!(v.push(&events[2]).unwrap_err(), first);
        assert_eq!(v.finish(&[]).unwrap_err(), first);
        assert_eq!(first.to_string(), "audit trail fails verification at seq 2: hash is not the SHA-256 of the body");
    }
}
