//! `mandate serve` config files: parsing never panics, whatever the TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = toml::from_str::<mandate::config::FileConfig>(s);
    }
});
