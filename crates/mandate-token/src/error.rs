/// Why a token, key or key set was refused.
///
/// Every variant carries a stable snake_case [`code`](TokenError::code) that the API exposes
/// unchanged. Messages quote what the caller sent (shortened) but never key material or whole
/// tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a compact JWS with a JSON header and payload, or longer than 16 KiB.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Minting would produce a token above the size verifiers accept.
    #[error("the mandate would be {size} bytes, above the limit of {max} bytes: narrow the intent")]
    TokenTooLarge { size: usize, max: usize },
    /// The header's `alg` is not on this verifier's allow-list.
    #[error("algorithm `{0}` is not accepted here")]
    UnsupportedAlg(String),
    /// The `alg` is accepted, but not with the key it would be verified with.
    #[error("algorithm `{alg}` cannot be used with {key}")]
    AlgKeyMismatch { alg: String, key: String },
    /// The header's `typ` says this is another kind of token.
    #[error("{}", wrong_type_message(found.as_deref(), expected))]
    WrongType { found: Option<String>, expected: &'static str },
    /// The header lists a `crit` extension, none of which is understood here.
    #[error("the token header marks `{0}` as critical, which is not understood here")]
    CriticalHeader(String),
    /// The header names no key and the key cannot be chosen otherwise.
    #[error("the token header names no key (`kid`)")]
    MissingKid,
    /// The header names a key this verifier does not hold.
    #[error("unknown key `{0}`")]
    UnknownKid(String),
    /// The signature does not match the key and the signed bytes.
    #[error("the signature does not verify")]
    BadSignature,
    /// `iss` is not the expected issuer.
    #[error("issuer `{0}` is not accepted here")]
    WrongIssuer(String),
    /// `aud` does not name this verifier's audience.
    #[error("the token's audience does not include `{0}`")]
    WrongAudience(String),
    /// `sub` is not the expected subject.
    #[error("subject `{found}` is not `{expected}`")]
    WrongSubject { found: String, expected: String },
    /// `exp` has passed, leeway included.
    #[error("the token expired at {0} (seconds since the epoch)")]
    Expired(i64),
    /// `nbf` is still ahead, leeway included.
    #[error("the token is not valid before {0} (seconds since the epoch)")]
    NotYetValid(i64),
    /// `iat` is ahead of the clock by more than the leeway.
    #[error("the token claims to be issued in the future, at {0} (seconds since the epoch)")]
    IssuedInFuture(i64),
    /// `exp - iat` is above what is allowed.
    #[error("the token lives {lifetime} seconds, longer than the {max} seconds allowed")]
    LifetimeTooLong { lifetime: i64, max: i64 },
    /// A required claim is absent.
    #[error("required claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// A trusted issuer's token has no `jti`, and the issuer is not configured to allow a
    /// token to be used more than once.
    #[error("the token has no `jti`, so it could be replayed; the issuer does not allow token reuse")]
    JtiRequired,
    /// A claim has the wrong type or an unacceptable value.
    #[error("claim `{claim}` is invalid: {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
    /// `authorization_details` is not exactly one valid `agent_task` intent.
    #[error("`authorization_details` is not a valid task intent: {0}")]
    InvalidIntent(String),
    /// `scope` disagrees with the intent in `authorization_details`.
    #[error("`scope` does not match the actions granted in `authorization_details`")]
    IntentMismatch,
    /// A key is malformed, weak, or inconsistent with itself.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A JWK given as public holds private material.
    #[error("the JWK holds private key material (`d`): give the public key only")]
    PrivateKeyMaterial,
    /// A key type or curve that is not accepted here.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// An issuer's JWKS cannot be used.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    /// No claim rule of the issuer maps the verified token to an agent name.
    #[error("no claim rule of the issuer maps this token to an agent")]
    NoRuleMatched,
    /// A key or token could not be encoded.
    #[error("signing failed: {0}")]
    SigningFailed(&'static str),
}

impl TokenError {
    /// The stable error code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::TokenTooLarge { .. } => "token_too_large",
            TokenError::UnsupportedAlg(_) => "unsupported_alg",
            TokenError::AlgKeyMismatch { .. } => "alg_key_mismatch",
            TokenError::WrongType { .. } => "wrong_type",
            TokenError::CriticalHeader(_) => "critical_header",
            TokenError::MissingKid => "missing_kid",
            TokenError::UnknownKid(_) => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer(_) => "wrong_issuer",
            TokenError::WrongAudience(_) => "wrong_audience",
            TokenError::WrongSubject { .. } => "wrong_subject",
            TokenError::Expired(_) => "expired",
            TokenError::NotYetValid(_) => "not_yet_valid",
            TokenError::IssuedInFuture(_) => "issued_in_future",
            TokenError::LifetimeTooLong { .. } => "lifetime_too_long",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::JtiRequired => "jti_required",
            TokenError::InvalidClaim { .. } => "invalid_claim",
            TokenError::InvalidIntent(_) => "invalid_intent",
            TokenError::IntentMismatch => "intent_mismatch",
            TokenError::InvalidKey(_) => "invalid_key",
            TokenError::PrivateKeyMaterial => "private_key_material",
            TokenError::UnsupportedKey(_) => "unsupported_key",
            TokenError::InvalidJwks(_) => "invalid_jwks",
            TokenError::NoRuleMatched => "no_rule_matched",
            TokenError::SigningFailed(_) => "signing_failed",
        }
    }

    pub(crate) fn invalid_claim(claim: &'static str, reason: impl Into<String>) -> Self {
        TokenError::InvalidClaim { claim, reason: reason.into() }
    }
}

fn wrong_type_message(found: Option<&str>, expected: &str) -> String {
    match found {
        Some(found) => format!("token type `{found}` is not accepted here: expected `{expected}`"),
        None => format!("the token header has no type (`typ`): expected `{expected}`"),
    }
}

pub(crate) use mandate_core::clip;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_short_values_and_cuts_long_ones_on_a_char_boundary() {
        assert_eq!(clip("kid-1"), "kid-1");
        let long = "é".repeat(100);
        let clipped = clip(&long);
        assert!(clipped.ends_with('…'));
        assert!(clipped.len() <= 80 + '…'.len_utf8());
    }

    #[test]
    fn messages_follow_the_house_style() {
        let e = TokenError::WrongType { found: None, expected: "at+jwt" };
        assert_eq!(e.code(), "wrong_type");
        assert_eq!(e.to_string(), "the token header has no type (`typ`): expected `at+jwt`");
        let e = TokenError::UnknownKid("k1".into());
        assert_eq!(e.to_string(), "unknown key `k1`");
    }
}
