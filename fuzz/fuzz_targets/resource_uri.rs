//! Any string as an MCP resource URI: normalization never panics, and a normalized URI is a
//! fixed point with no dot segment, encoded separator or encoded control character left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mandate_gateway::mcp::uri::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(n) = normalize(s) {
        assert_eq!(normalize(&n).as_deref(), Ok(n.as_str()));
        let upper = n.to_ascii_uppercase();
        assert!(!upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%2E"));
    }
});
