//! Any string presented as an agent attestation: `peek` and verification never panic, and
//! nothing the fuzzer makes verifies against a key it does not hold.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mandate_token::{AgentKeyAlg, AttestationRules, generate_agent_key, peek, verify_agent_attestation};

fn keys() -> &'static (serde_json::Value, serde_json::Value) {
    static K: OnceLock<(serde_json::Value, serde_json::Value)> = OnceLock::new();
    K.get_or_init(|| {
        let (_, ed) = generate_agent_key(AgentKeyAlg::Ed25519).unwrap();
        let (_, p256) = generate_agent_key(AgentKeyAlg::P256).unwrap();
        (ed, p256)
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = peek(s);
        let rules = AttestationRules::new("https://mandate.fuzz");
        let (ed, p256) = keys();
        for jwk in [ed, p256] {
            assert!(verify_agent_attestation(s, jwk, "spiffe://fuzz/agent/a", &rules, 1_700_000_000).is_err());
        }
    }
});
