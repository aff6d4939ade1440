//! Reading and checking registered JWT claims (RFC 7519 §4.1) from an untyped claim set.

use serde_json::{Map, Value};

use crate::TokenError;
use crate::error::clip;

pub(crate) type Claims = Map<String, Value>;

/// A string claim, if present; any other JSON type is an error.
pub(crate) fn string<'a>(claims: &'a Claims, name: &'static str) -> Result<Option<&'a str>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::invalid_claim(name, "must be a string")),
    }
}

/// A required string claim.
pub(crate) fn required_string<'a>(claims: &'a Claims, name: &'static str) -> Result<&'a str, TokenError> {
    string(claims, name)?.ok_or(TokenError::MissingClaim(name))
}

/// A NumericDate claim (seconds since the epoch), if present. Fractions are dropped.
pub(crate) fn numeric_date(claims: &Claims, name: &'static str) -> Result<Option<i64>, TokenError> {
    let invalid = || TokenError::invalid_claim(name, "must be a number of seconds since the epoch");
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
            _ => Err(invalid()),
        },
        Some(_) => Err(invalid()),
    }
}

/// A required NumericDate claim.
pub(crate) fn required_numeric_date(claims: &Claims, name: &'static str) -> Result<i64, TokenError> {
    numeric_date(claims, name)?.ok_or(TokenError::MissingClaim(name))
}

/// `iss` must be present and equal `expected` exactly.
pub(crate) fn check_issuer(claims: &Claims, expected: &str) -> Result<(), TokenError> {
    let iss = required_string(claims, "iss")?;
    if iss != expected {
        return Err(TokenError::WrongIssuer(clip(iss)));
    }
    Ok(())
}

/// `aud` must be present, a string or an array of strings, and contain `expected`.
pub(crate) fn check_audience(claims: &Claims, expected: &str) -> Result<(), TokenError> {
    let contains = match claims.get("aud") {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(aud)) => aud == expected,
        Some(Value::Array(auds)) => {
            if !auds.iter().all(Value::is_string) {
                return Err(TokenError::invalid_claim("aud", "must be a string or an array of strings"));
            }
            auds.iter().any(|a| a == expected)
        }
        Some(_) => {
            return Err(TokenError::invalid_claim("aud", "must be a string or an array of strings"));
        }
    };
    if !contains {
        return Err(TokenError::WrongAudience(expected.to_owned()));
    }
    Ok(())
}

/// The validity window: `exp > now - leeway`, `nbf <= now + leeway`, `iat <= now + leeway`.
pub(crate) fn check_times(exp: i64, nbf: Option<i64>, iat: Option<i64>, now: i64, leeway: i64) -> Result<(), TokenError> {
    let leeway = leeway.max(0);
    if exp <= now.saturating_sub(leeway) {
        return Err(TokenError::Expired(exp));
    }
    let latest = now.saturating_add(leeway);
    if let Some(nbf) = nbf.filter(|nbf| *nbf > latest) {
        return Err(TokenError::NotYetValid(nbf));
    }
    if let Some(iat) = iat.filter(|iat| *iat > latest) {
        return Err(TokenError::IssuedInFuture(iat));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn numeric_dates_accept_integers_and_fractions_only() {
        let c = claims(json!({"a": 10, "b": 10.7, "c": "10", "d": 1e300, "e": -5}));
        assert_eq!(numeric_date(&c, "a").unwrap(), Some(10));
        assert_eq!(numeric_date(&c, "b").unwrap(), Some(10));
        assert_eq!(numeric_date(&c, "c").unwrap_err().code(), "invalid_claim");
        assert_eq!(numeric_date(&c, "d").unwrap_err().code(), "invalid_claim");
        assert_eq!(numeric_date(&c, "e").unwrap(), Some(-5));
        assert_eq!(required_numeric_date(&c, "exp").unwrap_err(), TokenError::MissingClaim("exp"));
    }

    #[test]
    fn audience_is_a_string_or_an_array() {
        assert!(check_audience(&claims(json!({"aud": "a"})), "a").is_ok());
        assert!(check_audience(&claims(json!({"aud": ["b", "a"]})), "a").is_ok());
        assert_eq!(check_audience(&claims(json!({"aud": ["b"]})), "a").unwrap_err().code(), "wrong_audience");
        assert_eq!(check_audience(&claims(json!({"aud": ["a", 1]})), "a").unwrap_err().code(), "invalid_claim");
        assert_eq!(check_audience(&claims(json!({})), "a").unwrap_err().code(), "missing_claim");
    }

    #[test]
    fn time_window_edges() {
        assert_eq!(check_times(100, None, None, 160, 60).unwrap_err(), TokenError::Expired(100));
        assert!(check_times(101, None, None, 160, 60).is_ok());
        assert!(check_times(1000, Some(220), Some(220), 160, 60).is_ok());
        assert_eq!(check_times(1000, Some(221), None, 160, 60).unwrap_err(), TokenError::NotYetValid(221));
        assert_eq!(check_times(1000, None, Some(221), 160, 60).unwrap_err(), TokenError::IssuedInFuture(221));
        // A negative leeway counts as none.
        assert!(check_times(161, None, None, 160, -100).is_ok());
        assert!(check_times(i64::MAX, Some(i64::MIN), None, i64::MIN, i64::MAX).is_ok());
    }
}
