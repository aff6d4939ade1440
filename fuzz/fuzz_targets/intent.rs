//! Intents from the wire: parsing and validation never panic; a valid intent round-trips
//! (`validate(print(validate(x))) == validate(x)`), and covers itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::IntentRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<IntentRequest>(data) else { return };
    let Ok((intent, life)) = req.validate() else { return };
    let printed = serde_json::to_vec(&intent.to_authorization_detail(life)).unwrap();
    let again: IntentRequest = serde_json::from_slice(&printed).unwrap();
    let (intent2, life2) = again.validate().unwrap();
    assert_eq!(intent, intent2);
    assert_eq!(life, life2);
    assert!(intent.covers(&intent).is_ok());
    for a in &intent.actions {
        let _ = intent.allows_action(a);
    }
});
