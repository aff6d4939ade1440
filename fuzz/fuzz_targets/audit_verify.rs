//! Arbitrary rows (body, previous hash, hash) fed to the streaming audit verifier: it never
//! panics, whatever the bodies and hashes hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_audit::{SealedEvent, Verifier};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut v = Verifier::new(Vec::new());
    for (i, line) in s.lines().enumerate() {
        let mut cols = line.splitn(3, '\t');
        let ev = SealedEvent {
            seq: i as u64 + 1,
            ts_ms: 0,
            kind: "decision".into(),
            actor: "fuzz".into(),
            agent: None,
            task: None,
            body: cols.next().unwrap_or("").to_owned(),
            prev_hash: cols.next().unwrap_or("").to_owned(),
            hash: cols.next().unwrap_or("").to_owned(),
        };
        if v.push(&ev).is_err() {
            return;
        }
    }
});
