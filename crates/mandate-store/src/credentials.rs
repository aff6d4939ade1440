//! The contract of dynamic database credentials: what the control plane asks of the database a
//! `postgres-dynamic` secret names, to give each task a login role of its own
//! ([`CredentialProvider`]), and how that can fail ([`CredentialError`]).
//!
//! It lives here, beside [`Store`](crate::Store), for the same reason: the server speaks no SQL,
//! so it holds the trait and the implementation that speaks SQL
//! (`mandate-dyncreds-postgres`) depends on this crate, not on the server; the binary hands the
//! server one. The lease lifecycle (lease rows, sweeps, the audit trail) is the server's; a
//! provider only creates and drops roles.

use std::fmt;

/// The placeholder a grant of the template names the role with; every occurrence is replaced
/// by the role's quoted name.
pub const ROLE_PLACEHOLDER: &str = "{role}";

/// The role a task gets, created by [`CredentialProvider::create_role`].
pub struct NewRole<'a> {
    /// The role's name, as the server made it (a prefix and lowercase hex).
    pub name: &'a str,
    /// The role's password. A provider sends the database no more than it needs to check it
    /// (PostgreSQL: the SCRAM-SHA-256 verifier), so that it is in no statement a database logs.
    pub password: &'a str,
    /// When the role stops being able to log in, in Unix milliseconds.
    pub valid_until_ms: i64,
    /// The template's grants, each one statement naming the role as [`ROLE_PLACEHOLDER`].
    pub grants: &'a [String],
}

impl fmt::Debug for NewRole<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRole")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("valid_until_ms", &self.valid_until_ms)
            .field("grants", &self.grants.len())
            .finish()
    }
}

/// What dynamic credentials need from a database. `admin_url` is the secret's admin connection
/// URL; a provider never repeats it, nor a password, in an error or a log.
#[async_trait::async_trait]
pub trait CredentialProvider: Send + Sync + fmt::Debug {
    /// Creates login role `role` with exactly the template's grants, atomically: either the role
    /// exists with all of them, or not at all.
    async fn create_role(&self, admin_url: &str, role: &NewRole<'_>) -> Result<(), CredentialError>;

    /// Ends role `role`: no more logins, its sessions ended, what it owns and its grants
    /// dropped, the role dropped. A role that does not exist (any more) is `Ok`: dropping is
    /// idempotent.
    async fn drop_role(&self, admin_url: &str, role: &str) -> Result<(), CredentialError>;
}

/// Why the database did not do what was asked. Messages never hold a URL, a user or a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The database could not be reached or did not answer in time: what went wrong (an I/O
    /// error's kind, `TLS failed`, `the connection timed out`, …).
    #[error("the admin database cannot be reached: {0}")]
    Unreachable(String),
    /// The database answered with an error: its SQLSTATE (empty when it gave none) and its
    /// message, clipped; a refused login (class 28) is told without the database's message,
    /// which names the admin user.
    #[error("the admin database refused: {message} (SQLSTATE {sqlstate})")]
    Refused { sqlstate: String, message: String },
    /// The admin URL or the role's expiry cannot be used.
    #[error("the postgres-dynamic configuration is not usable")]
    Config,
}

/// Whether `text` is a PostgreSQL connection URL as `mandate-dyncreds-postgres` reads it (the
/// rules of sqlx's `PgConnectOptions::from_str`), so that a configuration is checked where no
/// driver is linked: a URL whose percent-decoded user, password, database and socket path are
/// UTF-8, and whose parameters `sslmode` (`ssl-mode`), `port`, `hostaddr` and
/// `statement-cache-capacity` are well-formed. `mandate-dyncreds-postgres`'s tests hold it to
/// the driver.
pub fn admin_url_parses(text: &str) -> bool {
    let Ok(url) = url::Url::parse(text) else { return false };
    let utf8 = |s: &str| String::from_utf8(percent_decode(s)).is_ok();
    if let Some(host) = url.host_str()
        && percent_decode(host).first() == Some(&b'/')
        && !utf8(host)
    {
        return false;
    }
    if !url.username().is_empty() && !utf8(url.username()) {
        return false;
    }
    if url.password().is_some_and(|p| !utf8(p)) {
        return false;
    }
    let path = url.path().trim_start_matches('/');
    if !path.is_empty() && !utf8(path) {
        return false;
    }
    url.query_pairs().all(|(key, value)| match &*key {
        "sslmode" | "ssl-mode" => {
            matches!(&*value.to_ascii_lowercase(), "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full")
        }
        "statement-cache-capacity" => value.parse::<usize>().is_ok(),
        "hostaddr" => value.parse::<std::net::IpAddr>().is_ok(),
        "port" => value.parse::<u16>().is_ok(),
        _ => true,
    })
}

/// Percent-decoding as the `percent-encoding` crate does it: `%` and two hex digits is a byte,
/// anything else is kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let (Some(hi), Some(lo)) = (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%40b%2fc"), b"a@b/c");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz%4"), b"%zz%4");
        assert_eq!(percent_decode("%FF"), [0xff]);
    }

    #[test]
    fn errors_say_nothing_of_urls_or_passwords() {
        let e = CredentialError::Refused { sqlstate: "42501".into(), message: "permission denied for schema app".into() };
        assert_eq!(e.to_string(), "the admin database refused: permission denied for schema app (SQLSTATE 42501)");
        let e = CredentialError::Unreachable("connection refused".into());
        assert_eq!(e.to_string(), "the admin database cannot be reached: connection refused");
        let role = NewRole { name: "mandate_ab", password: "s3cret", valid_until_ms: 1, grants: &[] };
        assert!(!format!("{role:?}").contains("s3cret"));
    }

    #[test]
    fn admin_urls_are_checked_as_the_driver_reads_them() {
        for (url, ok) in [
            ("postgres://admin:pw@db.internal:6432/app?sslmode=require", true),
            ("postgresql://db/app?sslmode=VERIFY-FULL&application_name=x&unknown=1", true),
            ("postgres://db/app?sslmode=bogus", false),
            ("postgres://db/app?port=abc", false),
            ("postgres://db/app?hostaddr=db.internal", false),
            ("postgres://u:%FF@db/app", false),
            ("not a url", false),
        ] {
            assert_eq!(admin_url_parses(url), ok, "{url}");
        }
    }
}
