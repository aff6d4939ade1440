//! Minting and verifying a realistic task mandate.

// A benchmark with a broken fixture has nothing to measure: aborting is the right answer.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use mandate_core::IntentRequest;
use mandate_token::{MandateClaims, MandateVerifier, Minter, SigningKey};

const ISSUER: &str = "https://mandate.example.com";
const AUDIENCE: &str = "https://tools.example.com";
const AGENT_ID: &str = "spiffe://mandate.example.com/agent/support-bot";
const NOW: i64 = 1_790_000_000;

fn claims() -> MandateClaims {
    let request: IntentRequest = serde_json::from_value(serde_json::json!({
        "type": "agent_task",
        "purpose": "Summarise ticket 4711 and draft a reply for the customer's billing question",
        "actions": ["tickets.read", "tickets.comment", "kb.search", "billing.invoices.read"],
        "resources": ["ticket:4711", "kb:billing/*", "invoice:cus_8Hq2/*"],
        "max_classification": "confidential",
        "lifetime_seconds": 900,
        "on_behalf_of": "user:alice@example.com"
    }))
    .expect("the benchmark intent is well-formed");
    let (intent, lifetime) = request.validate().expect("the benchmark intent is valid");
    MandateClaims {
        iss: ISSUER.into(),
        sub: AGENT_ID.into(),
        aud: AUDIENCE.into(),
        client_id: AGENT_ID.into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 900,
        jti: "mdt_01JA3V7T9X3N4W6Q8R2S5K7M9P".into(),
        task_id: "tsk_01JA3V7T9X3N4W6Q8R2S5K7M9P".into(),
        agent: "support-bot".into(),
        scope: MandateClaims::scope_for(&intent),
        authorization_details: vec![intent.to_authorization_detail(lifetime)],
        act: None,
        parent_task_id: None,
        depth: 0,
    }
}

fn bench(c: &mut Criterion) {
    let key = Arc::new(SigningKey::generate());
    // A rotation overlap: the verifier holds two keys.
    let previous = SigningKey::generate();
    let minter = Minter::new(key.clone());
    let verifier = MandateVerifier::new(ISSUER, AUDIENCE, &[previous.public_key(), key.public_key()], 60);
    let claims = claims();
    let token = minter.mint(&claims).expect("the benchmark mandate mints");

    c.bench_function("mandate/mint", |b| b.iter(|| minter.mint(black_box(&claims))));
    c.bench_function("mandate/verify", |b| b.iter(|| verifier.verify(black_box(&token), black_box(NOW + 30))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
