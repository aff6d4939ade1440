//! Console sessions: who is logged in, in memory, keyed by the SHA-256 of the session id.
//!
//! The browser holds a random session id (32 bytes) in an `HttpOnly; SameSite=Strict` cookie;
//! the server keeps only its hash, with the API token's id, role and label (never the token's
//! secret), the session's CSRF token and when it was made and last used. A session dies after
//! [`IDLE_MS`] without a request or [`LIFETIME_MS`] after login, whichever comes first, and
//! with its API token: every request re-checks that the token is not revoked.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use mandate_core::Role;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use crate::state::{hash_secret, random_b64};

/// The session cookie.
pub const SESSION_COOKIE: &str = "mandate_session";
/// The login form's double-submit cookie (CSRF protection before there is a session).
pub const LOGIN_COOKIE: &str = "mandate_login_csrf";
/// A session ends after this long without a request...
pub const IDLE_MS: i64 = 30 * 60 * 1000;
/// ...and this long after login, whatever happens.
pub const LIFETIME_MS: i64 = 8 * 3600 * 1000;
/// Most sessions held at once; the least recently used goes first when full.
const MAX_SESSIONS: usize = 10_000;

/// One logged-in person, as the server remembers them.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API token they logged in with: its id, role and label.
    pub token_id: String,
    /// SHA-256 of the API token's secret, to re-check it is not revoked (never the secret).
    pub token_hash: String,
    pub role: Role,
    pub label: String,
    /// Carried by every form of the session and compared in constant time.
    pub csrf: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// A one-time message for the next page (what the last action did).
    pub flash: Option<String>,
}

impl Session {
    /// Whether the session has ended by time at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        now_ms - self.last_seen_ms >= IDLE_MS || now_ms - self.created_ms >= LIFETIME_MS
    }
}

/// Why a request has no usable session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No session cookie, or one this server does not know.
    Missing,
    /// The session timed out (idle or absolute).
    Expired,
}

/// Every live session, by the hash of its id.
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session; returns the session id for the cookie (never stored here).
    pub fn create(&self, mut session: Session, now_ms: i64) -> String {
        let id = random_b64(32);
        session.csrf = random_b64(32);
        session.created_ms = now_ms;
        session.last_seen_ms = now_ms;
        let mut map = self.by_hash.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| !s.expired(now_ms));
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_seen_ms).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(hash_secret(&id), session);
        id
    }

    /// The session of `id` at `now_ms`, marked as seen; an expired one is removed.
    pub fn touch(&self, id: &str, now_ms: i64) -> Result<(String, Session), NoSession> {
        if id.is_empty() || id.len() > 128 {
            return Err(NoSession::Missing);
        }
        let hash = hash_secret(id);
        let mut map = self.by_hash.lock();
        let Some(s) = map.get_mut(&hash) else { return Err(NoSession::Missing) };
        if s.expired(now_ms) {
            map.remove(&hash);
            return Err(NoSession::Expired);
        }
        s.last_seen_ms = now_ms;
        Ok((hash, s.clone()))
    }

    /// Ends the session with this hash.
    pub fn remove(&self, hash: &str) -> Option<Session> {
        self.by_hash.lock().remove(hash)
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, hash: &str, message: String) {
        if let Some(s) = self.by_hash.lock().get_mut(hash) {
            s.flash = Some(message);
        }
    }

    /// Takes the session's message, if there is one.
    pub fn take_flash(&self, hash: &str) -> Option<String> {
        self.by_hash.lock().get_mut(hash).and_then(|s| s.flash.take())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.lock().len()
    }
}

/// Whether two secrets are equal, in time that depends only on their hashes' length: both
/// are hashed first, so neither content nor length leaks through timing.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (ha, hb) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    ha.iter().zip(hb.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/console`, `Secure` when asked.
/// `max_age` of `Some(0)` deletes the cookie; `None` makes a browser-session cookie.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<u64>) -> String {
    let mut c = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/console");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
    use axum::http::HeaderValue;

    use super::*;

    fn session() -> Session {
        Session {
            token_id: "tok_1".into(),
            token_hash: "h".into(),
            role: Role::Approver,
            label: "alice".into(),
            csrf: String::new(),
            created_ms: 0,
            last_seen_ms: 0,
            flash: None,
        }
    }

    #[test]
    fn sessions_end_when_idle() {
        let s = Sessions::default();
        let id = s.create(session(), 1_000);
        assert!(s.touch(&id, 1_000 + IDLE_MS - 1).is_ok());
        // Each request moves the idle deadline.
        assert!(s.touch(&id, 1_000 + 2 * IDLE_MS - 2).is_ok());
        assert_eq!(s.touch(&id, 1_000 + 3 * IDLE_MS - 2).unwrap_err(), NoSession::Expired);
        // An expired session is gone, not merely refused.
        assert_eq!(s.touch(&id, 1_000 + 3 * IDLE_MS - 2).unwrap_err(), NoSession::Missing);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn sessions_end_at_their_lifetime_even_when_busy() {
        let s = Sessions::default();
        let id = s.create(session(), 0);
        let mut now = 0;
        while now + IDLE_MS / 2 < LIFETIME_MS {
            now += IDLE_MS / 2;
            assert!(s.touch(&id, now).is_ok(), "alive at {now}");
        }
        assert_eq!(s.touch(&id, LIFETIME_MS).unwrap_err(), NoSession::Expired);
    }

    #[test]
    fn only_the_hash_of_the_id_is_kept_and_ids_are_random() {
        let s = Sessions::default();
        let a = s.create(session(), 0);
        let b = s.create(session(), 0);
        assert_ne!(a, b);
        assert!(a.len() >= 43, "32 random bytes, base64url");
        let map = s.by_hash.lock();
        assert!(!map.contains_key(&a));
        assert!(map.contains_key(&hash_secret(&a)));
        let csrfs: Vec<_> = map.values().map(|s| s.csrf.clone()).collect();
        assert_ne!(csrfs[0], csrfs[1]);
        assert!(csrfs[0].len() >= 43);
    }

    #[test]
    fn unknown_and_oversized_ids_are_missing() {
        let s = Sessions::default();
        s.create(session(), 0);
        assert_eq!(s.touch("nope", 1).unwrap_err(), NoSession::Missing);
        assert_eq!(s.touch("", 1).unwrap_err(), NoSession::Missing);
        assert_eq!(s.touch(&"x".repeat(4096), 1).unwrap_err(), NoSession::Missing);
    }

    #[test]
    fn logout_ends_one_session_and_flash_is_read_once() {
        let s = Sessions::default();
        let id = s.create(session(), 0);
        let id2 = s.create(session(), 0);
        let (hash, _) = s.touch(&id, 1).unwrap();
        s.set_flash(&hash, "done".into());
        assert_eq!(s.take_flash(&hash).as_deref(), Some("done"));
        assert_eq!(s.take_flash(&hash), None);
        assert!(s.remove(&hash).is_some());
        assert_eq!(s.touch(&id, 2).unwrap_err(), NoSession::Missing);
        assert!(s.touch(&id2, 2).is_ok());
    }

    #[test]
    fn csrf_compare() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "abc"));
        assert!(constant_time_eq("", ""));
    }

    #[test]
    fn cookies_are_read_from_every_header_and_written_strict() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; mandate_sessionx=no"));
        h.append(COOKIE, HeaderValue::from_static("mandate_session=abc ; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", false, None);
        assert_eq!(c, "mandate_session=v; HttpOnly; SameSite=Strict; Path=/console");
        let c = set_cookie(SESSION_COOKIE, "", true, Some(0));
        assert!(c.ends_with("; Max-Age=0; Secure"), "{c}");
    }
}
