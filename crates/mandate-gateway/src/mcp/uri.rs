//! MCP resource URIs, normalized once: what the intent ceiling and policy see is what goes
//! upstream. An upstream that serves files resolves `..` and decodes percent-escapes; if the
//! gateway decided on the raw text, `file:///data/public/%2e%2e/secret` would pass a
//! `file:///data/public/*` pattern and be read outside it.
//!
//! Normalization is RFC 3986 §6.2.2 (syntax-based): percent-decoding of unreserved
//! characters, uppercase hex in the escapes left, lowercase scheme and host, and
//! `remove_dot_segments` (§5.2.4) on the path, counting percent-encoded dots as dots. What
//! still cannot be read one way only is refused: a path that climbs above its root, an encoded
//! `/` or `\` (one upstream splits on it, another does not), an encoded control character, and
//! a dot segment left in a path that has no root to resolve it against.

use fluent_uri::Uri;
use fluent_uri::normalize::Normalizer;

/// Longest resource URI accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Why a resource URI was refused; the code is `resource_uri_invalid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriError(pub String);

impl UriError {
    pub const CODE: &'static str = "resource_uri_invalid";
}

impl std::fmt::Display for UriError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The normalized form of a resource URI, or why it has none.
pub fn normalize(raw: &str) -> Result<String, UriError> {
    if raw.len() > MAX_URI_BYTES {
        return Err(UriError(format!("the resource URI is longer than {MAX_URI_BYTES} bytes")));
    }
    let uri = Uri::parse(raw).map_err(|_| UriError(format!("`{}` is not a URI (RFC 3986)", mandate_core::clip(raw))))?;
    let normalized = Normalizer::new()
        .allow_path_underflow(false)
        .normalize(&uri)
        .map_err(|_| UriError(format!("`{}` climbs above the root of its path", mandate_core::clip(raw))))?;
    let path = normalized.path().as_str();
    let upper = path.to_ascii_uppercase();
    if upper.contains("%2F") || upper.contains("%5C") {
        return Err(UriError(format!(
            "`{}` holds an encoded `/` or `\\` in its path, which upstreams read in different ways",
            mandate_core::clip(raw)
        )));
    }
    if has_encoded_control(&upper) {
        return Err(UriError(format!("`{}` holds an encoded control character", mandate_core::clip(raw))));
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(UriError(format!("`{}` holds a dot segment that cannot be resolved", mandate_core::clip(raw))));
    }
    Ok(normalized.as_str().to_owned())
}

/// `%00`–`%1F` or `%7F` in an (uppercased) path.
fn has_encoded_control(upper: &str) -> bool {
    let b = upper.as_bytes();
    b.windows(3).any(|w| match w {
        [b'%', h, l] => matches!((h, l), (b'0' | b'1', b'0'..=b'9' | b'A'..=b'F') | (b'7', b'F')),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dot_segments_are_resolved_in_every_spelling() {
        for raw in [
            "file:///data/public/../secret.txt",
            "file:///data/public/%2e%2e/secret.txt",
            "file:///data/public/%2E%2E/secret.txt",
            "file:///data/public/.%2E/secret.txt",
            "file:///data/public/%2e./secret.txt",
            "file:///data/public/./../secret.txt",
            "FILE:///data/public/sub/../../secret.txt",
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok("file:///data/secret.txt"), "{raw}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_case_folded() {
        assert_eq!(normalize("HTTP://Example.COM/%7euser/%61b%2a").as_deref(), Ok("http://example.com/~user/ab%2A"));
        assert_eq!(normalize("notes://x/a b").ok(), None, "a space is not a URI character");
    }

    #[test]
    fn what_has_no_single_reading_is_refused() {
        for raw in [
            "file:///data/public/..%2Fsecret",
            "file:///data/public/..%2fsecret",
            "file:///data/public/..%5Csecret",
            "file:///data/public/..\\secret",
            "file:///../etc/passwd",
            "file:///data/%2e%2e/%2e%2e/etc",
            "file:///data/a%00b",
            "notes:a/../b",
            "not a uri",
            "",
        ] {
            assert!(normalize(raw).is_err(), "{raw} should be refused");
        }
    }

    proptest! {
        #[test]
        fn normalized_uris_are_fixed_points(path in "(/(\\.|\\.\\.|%2[eE]|%2[eE]\\.|[a-c]|%6[12]|%2[fF]|%5[cC]|%0a|)){0,8}") {
            let raw = format!("file://{path}");
            if let Ok(n) = normalize(&raw) {
                // Idempotent, and nothing left that an upstream could resolve or split.
                let again = normalize(&n);
                prop_assert_eq!(again.as_deref(), Ok(n.as_str()));
                let p = n.trim_start_matches("file://");
                prop_assert!(!p.split('/').any(|s| s == "." || s == ".."));
                prop_assert!(!p.to_ascii_uppercase().contains("%2E"));
                prop_assert!(!p.to_ascii_uppercase().contains("%2F"));
            }
        }
    }
}
