//! Any JSON as a tool call's arguments: canonicalization never panics, and what it accepts is
//! a fixed point (canonicalizing the forwarded value gives the same text and digest) whose
//! forwarded value parses back from the canonical text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::canonical::{Canonical, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(c) = Canonical::new(&v, Limits::ARGUMENTS) {
        let again = Canonical::new(c.value(), Limits::ARGUMENTS).expect("a canonical value is canonical");
        assert_eq!(again.text(), c.text());
        assert_eq!(again.digest(), c.digest());
        let parsed: serde_json::Value = serde_json::from_str(c.text()).expect("canonical text is JSON");
        assert_eq!(&parsed, c.value());
    }
});
