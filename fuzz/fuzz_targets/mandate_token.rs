//! Any string presented as a mandate: verification never panics, and anything it accepts was
//! signed by the key (the fuzzer cannot forge one, so acceptance would be a bug).
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use mandate_token::{MandateVerifier, SigningKey};

fn verifier() -> &'static MandateVerifier {
    static V: OnceLock<MandateVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let key = Arc::new(SigningKey::generate());
        MandateVerifier::new("https://mandate.fuzz", "mandate", &[key.public_key()], 60)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        assert!(verifier().verify(s, 1_700_000_000).is_err());
    }
});
