//! The glob patterns intents are written in: `*` matches any run of characters (also none),
//! every other character matches itself. `tickets.*`, `ticket:*`, `*` and `ticket:42` are all
//! patterns; there is no escape and no other wildcard.

use crate::DomainError;

/// The longest pattern or subject accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;

/// Checks that a pattern is something an intent may carry.
pub fn validate_pattern(pattern: &str) -> Result<(), DomainError> {
    let bad = |reason| DomainError::InvalidPattern { pattern: pattern.to_owned(), reason };
    if pattern.is_empty() {
        return Err(bad("must not be empty"));
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(bad("longer than 512 bytes"));
    }
    if pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("must not contain whitespace or control characters"));
    }
    if pattern.contains("**") {
        return Err(bad("`**` is not a pattern; one `*` already matches any run"));
    }
    Ok(())
}

/// Does `subject` match `pattern`? Linear-time two-pointer match with backtracking to the last
/// star, so hostile patterns cannot make it explode.
pub fn glob_match(pattern: &str, subject: &str) -> bool {
    let p = pattern.as_bytes();
    let s = subject.as_bytes();
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<usize> = None;
    let mut mark = 0usize;
    while si < s.len() {
        match (p.get(pi), s.get(si)) {
            (Some(b'*'), _) => {
                star = Some(pi);
                pi += 1;
                mark = si;
            }
            (Some(pc), Some(sc)) if pc == sc => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some(sp) => {
                    pi = sp + 1;
                    mark += 1;
                    si = mark;
                }
                None => return false,
            },
        }
    }
    while p.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi == p.len()
}

/// Is every string matched by `narrow` also matched by `wide`?
///
/// Exact for the patterns intents use in practice (a literal, or a literal prefix followed by
/// one trailing `*`); for anything more complex it answers `false` unless the patterns are
/// identical or `wide` is `*`, which errs on the side of refusing a delegation.
pub fn glob_subsumes(wide: &str, narrow: &str) -> bool {
    if wide == "*" || wide == narrow {
        return true;
    }
    if !narrow.contains('*') {
        return glob_match(wide, narrow);
    }
    match (wide.strip_suffix('*'), narrow.strip_suffix('*')) {
        (Some(wp), Some(np)) if !wp.contains('*') && !np.contains('*') => np.starts_with(wp),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_literals_and_stars() {
        assert!(glob_match("ticket:42", "ticket:42"));
        assert!(!glob_match("ticket:42", "ticket:420"));
        assert!(glob_match("ticket:*", "ticket:420"));
        assert!(glob_match("ticket:*", "ticket:"));
        assert!(!glob_match("ticket:*", "tickets:1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("tickets.*", "tickets.read"));
        assert!(glob_match("*.read", "tickets.read"));
        assert!(!glob_match("*.read", "tickets.write"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn hostile_pattern_stays_fast() {
        let subject = "a".repeat(500);
        let pattern = format!("{}b", "a*".repeat(100));
        assert!(!glob_match(&pattern, &subject));
    }

    #[test]
    fn subsumption_only_claims_what_it_can_prove() {
        assert!(glob_subsumes("*", "ticket:*"));
        assert!(glob_subsumes("ticket:*", "ticket:4*"));
        assert!(glob_subsumes("ticket:*", "ticket:42"));
        assert!(!glob_subsumes("ticket:4*", "ticket:*"));
        assert!(!glob_subsumes("ticket:42", "ticket:*"));
        assert!(!glob_subsumes("a*b", "a*"));
    }

    #[test]
    fn validation_refuses_empty_whitespace_and_double_star() {
        assert!(validate_pattern("").is_err());
        assert!(validate_pattern("a b").is_err());
        assert!(validate_pattern("a**").is_err());
        assert!(validate_pattern(&"x".repeat(513)).is_err());
        assert!(validate_pattern("tickets.*").is_ok());
    }
}
