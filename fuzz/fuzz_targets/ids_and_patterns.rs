//! SPIFFE IDs and intent patterns: parsing never panics, `parse(print(x)) == x`, and the glob
//! matcher agrees with subsumption (a pattern that subsumes another matches all it matches).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_core::{AgentName, SpiffeId, glob_match, glob_subsumes, validate_pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id);
        assert!(id.as_str().starts_with("spiffe://"));
    }
    if let Ok(n) = AgentName::parse(s) {
        assert_eq!(AgentName::parse(n.as_str()).unwrap(), n);
    }
    let mut parts = s.splitn(3, '\n');
    let (Some(wide), Some(narrow), Some(subject)) = (parts.next(), parts.next(), parts.next()) else { return };
    if validate_pattern(wide).is_err() || validate_pattern(narrow).is_err() {
        return;
    }
    if glob_subsumes(wide, narrow) && glob_match(narrow, subject) {
        assert!(glob_match(wide, subject), "{wide:?} subsumes {narrow:?} but misses {subject:?}");
    }
});
