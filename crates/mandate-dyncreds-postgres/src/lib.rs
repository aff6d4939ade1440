//! Mandate's dynamic database credentials at PostgreSQL: [`PgCredentials`], the
//! [`CredentialProvider`] that creates and drops each task's login role with SQL (sqlx). One
//! connection per call, no statement cache, no statement logging, every call within 10 s.
//!
//! - [`create_role`](CredentialProvider::create_role): `CREATE ROLE "<role>" LOGIN NOINHERIT
//!   PASSWORD '<SCRAM-SHA-256 verifier>' VALID UNTIL '<expiry, RFC 3339>'` and every grant of the
//!   template (`{role}` replaced by the quoted role), in one transaction. The password goes over
//!   the wire only as its verifier, so it is in no statement the database could log.
//! - [`drop_role`](CredentialProvider::drop_role): if the role is in `pg_roles`, `ALTER ROLE …
//!   NOLOGIN`, its sessions ended (`pg_terminate_backend`), then `DROP OWNED BY` and `DROP ROLE
//!   IF EXISTS` in one transaction. A role gone meanwhile (SQLSTATE 42704) is fine.
//!
//! Failures become [`CredentialError`]s told without the admin URL: a database error's SQLSTATE
//! and clipped message (a refused login, class 28, without the message, which names the admin
//! user), a connection failure's kind.
//!
//! # Layering
//!
//! The trait and its error are `mandate_store::credentials`, not this crate's nor the server's:
//! the server must speak no SQL (so it cannot depend on this crate, which links sqlx), and this
//! crate must not depend on the server (the whole control plane, to implement one trait). Both
//! depend on `mandate-store`, the crate that already holds the contracts the SQL crates
//! implement ([`Store`](mandate_store::Store)); `mandate-core` does no I/O and knows no
//! databases. The binary hands a [`PgCredentials`] to the server
//! (`Settings::dynamic_credentials`).

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use zeroize::Zeroizing;

pub use mandate_store::credentials::{CredentialError, CredentialProvider, NewRole, ROLE_PLACEHOLDER};

/// How long one conversation with an admin database may take (connect included).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL's default SCRAM iteration count.
const SCRAM_ITERATIONS: u32 = 4096;

/// Creates and drops per-task roles at the PostgreSQL database a secret's admin URL names.
#[derive(Debug, Default, Clone, Copy)]
pub struct PgCredentials;

impl PgCredentials {
    pub fn new() -> Self {
        PgCredentials
    }
}

#[async_trait::async_trait]
impl CredentialProvider for PgCredentials {
    async fn create_role(&self, admin_url: &str, role: &NewRole<'_>) -> Result<(), CredentialError> {
        create_role(admin_url, role).await
    }

    async fn drop_role(&self, admin_url: &str, role: &str) -> Result<(), CredentialError> {
        drop_role(admin_url, role).await
    }
}

async fn connect(admin_url: &str) -> Result<PgConnection, CredentialError> {
    let opts = PgConnectOptions::from_str(admin_url)
        .map_err(|_| CredentialError::Config)?
        .application_name("mandate")
        .statement_cache_capacity(0)
        .disable_statement_logging();
    match tokio::time::timeout(ADMIN_TIMEOUT, opts.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(admin_error(&e)),
        Err(_) => Err(CredentialError::Unreachable("the connection timed out".into())),
    }
}

/// A database failure, told without anything the admin URL holds.
fn admin_error(e: &sqlx::Error) -> CredentialError {
    match e {
        sqlx::Error::Database(db) => {
            let sqlstate = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = if sqlstate.starts_with("28") {
                // Invalid authorization: the message names the admin user.
                "the admin login was refused".to_owned()
            } else {
                mandate_core::clip(db.message())
            };
            CredentialError::Refused { sqlstate, message }
        }
        sqlx::Error::Io(io) => CredentialError::Unreachable(io.kind().to_string()),
        sqlx::Error::Tls(_) => CredentialError::Unreachable("TLS failed".into()),
        sqlx::Error::Configuration(_) => CredentialError::Config,
        _ => CredentialError::Unreachable("the connection failed".into()),
    }
}

/// The role does not exist (any more): SQLSTATE 42704, undefined_object.
fn gone(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42704"))
}

fn quoted(role: &str) -> String {
    format!("\"{}\"", role.replace('"', "\"\""))
}

/// RFC 3339 UTC, as `VALID UNTIL` takes it.
fn rfc3339(ms: i64) -> Result<String, CredentialError> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|_| CredentialError::Config)?;
    t.format(&time::format_description::well_known::Rfc3339).map_err(|_| CredentialError::Config)
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802, RFC 7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    type HmacSha256 = Hmac<Sha256>;
    let hmac = |key: &[u8], parts: &[&[u8]]| -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    };
    // Hi(): PBKDF2-HMAC-SHA-256, one block.
    let mut u = Zeroizing::new(hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()]));
    let mut salted = Zeroizing::new(*u);
    for _ in 1..iterations {
        *u = hmac(password.as_bytes(), &[&u[..]]);
        for (s, b) in salted.iter_mut().zip(u.iter()) {
            *s ^= b;
        }
    }
    let client_key = Zeroizing::new(hmac(&salted[..], &[b"Client Key"]));
    let stored_key = Sha256::digest(&client_key[..]);
    let server_key = hmac(&salted[..], &[b"Server Key"]);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("SCRAM-SHA-256${iterations}:{}${}:{}", b64.encode(salt), b64.encode(stored_key), b64.encode(server_key))
}

/// `CREATE ROLE` and the template's grants, in one transaction.
async fn create_role(admin_url: &str, role: &NewRole<'_>) -> Result<(), CredentialError> {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    let verifier = scram_verifier(role.password, &salt, SCRAM_ITERATIONS);
    let until = rfc3339(role.valid_until_ms)?;
    let role_sql = quoted(role.name);
    let work = async {
        let mut conn = connect(admin_url).await?;
        let mut tx = conn.begin().await.map_err(|e| admin_error(&e))?;
        let create = format!("CREATE ROLE {role_sql} LOGIN NOINHERIT PASSWORD '{verifier}' VALID UNTIL '{until}'");
        sqlx::query(&create).persistent(false).execute(&mut *tx).await.map_err(|e| admin_error(&e))?;
        for grant in role.grants {
            let sql = grant.replace(ROLE_PLACEHOLDER, &role_sql);
            sqlx::query(&sql).persistent(false).execute(&mut *tx).await.map_err(|e| admin_error(&e))?;
        }
        tx.commit().await.map_err(|e| admin_error(&e))?;
        let _ = conn.close().await;
        Ok(())
    };
    match tokio::time::timeout(ADMIN_TIMEOUT, work).await {
        Ok(r) => r,
        // A transaction cut off before its commit is rolled back by the database.
        Err(_) => Err(CredentialError::Unreachable("the admin database did not answer in time".into())),
    }
}

/// Ends the role at the database: no more logins, its sessions ended, what it owns and its
/// grants dropped, the role dropped. A role that is gone already is fine.
async fn drop_role(admin_url: &str, role: &str) -> Result<(), CredentialError> {
    let role_sql = quoted(role);
    let work = async {
        let mut conn = connect(admin_url).await?;
        let exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(role.to_owned())
            .persistent(false)
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| admin_error(&e))?
            .is_some();
        if exists {
            let steps = [
                format!("ALTER ROLE {role_sql} NOLOGIN"),
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()".to_owned(),
            ];
            for sql in &steps {
                let q = sqlx::query(sql).persistent(false);
                let q = if sql.contains("$1") { q.bind(role.to_owned()) } else { q };
                if let Err(e) = q.execute(&mut conn).await
                    && !gone(&e)
                {
                    return Err(admin_error(&e));
                }
            }
            let mut tx = conn.begin().await.map_err(|e| admin_error(&e))?;
            let dropped = async {
                sqlx::query(&format!("DROP OWNED BY {role_sql}")).persistent(false).execute(&mut *tx).await?;
                sqlx::query(&format!("DROP ROLE IF EXISTS {role_sql}")).persistent(false).execute(&mut *tx).await?;
                Ok::<_, sqlx::Error>(())
            }
            .await;
            match dropped {
                Ok(()) => tx.commit().await.map_err(|e| admin_error(&e))?,
                Err(e) if gone(&e) => drop(tx),
                Err(e) => return Err(admin_error(&e)),
            }
        }
        let _ = conn.close().await;
        Ok(())
    };
    match tokio::time::timeout(ADMIN_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(CredentialError::Unreachable("the admin database did not answer in time".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)] // test code
    use std::borrow::Cow;
    use std::error::Error as StdError;
    use std::fmt;

    use super::*;

    /// `mandate_store::credentials::admin_url_parses` checks configurations where sqlx is not
    /// linked: it must accept exactly what sqlx does.
    #[test]
    fn the_admin_url_check_agrees_with_sqlx() {
        let urls = [
            ("postgres://admin:pw@db.internal:6432/app?sslmode=require", true),
            ("postgresql://db/app?sslmode=VERIFY-FULL&application_name=x&unknown=1", true),
            ("postgres://db/app?ssl-mode=prefer&port=5433&hostaddr=10.0.0.1&statement-cache-capacity=0", true),
            ("postgres://db/app?hostaddr=::1&host=/var/run/postgresql", true),
            ("postgres://a%40b:p%25w@db/my%20db", true),
            ("postgres://%2Fvar%2Frun%2Fpostgresql/app", true),
            ("postgres://%FF/app", true),
            ("postgres://db", true),
            ("postgres://db/app?sslmode=bogus", false),
            ("postgres://db/app?ssl-mode=", false),
            ("postgres://db/app?port=abc", false),
            ("postgres://db/app?port=70000", false),
            ("postgres://db/app?hostaddr=db.internal", false),
            ("postgres://db/app?statement-cache-capacity=-1", false),
            ("postgres://%FF@db/app", false),
            ("postgres://u:%FF@db/app", false),
            ("postgres://db/%FF", false),
            ("postgres://%2F%FF/app", false),
            ("postgres://db:99999/app", false),
            ("not a url", false),
        ];
        for (url, ok) in urls {
            assert_eq!(PgConnectOptions::from_str(url).is_ok(), ok, "sqlx: {url}");
            assert_eq!(mandate_store::credentials::admin_url_parses(url), ok, "admin_url_parses: {url}");
        }
    }

    #[derive(Debug)]
    struct FakeDbError {
        code: Option<&'static str>,
        message: String,
    }

    impl fmt::Display for FakeDbError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.message)
        }
    }

    impl StdError for FakeDbError {}

    impl sqlx::error::DatabaseError for FakeDbError {
        fn message(&self) -> &str {
            &self.message
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            self.code.map(Cow::Borrowed)
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn db(code: Option<&'static str>, message: &str) -> sqlx::Error {
        sqlx::Error::Database(Box::new(FakeDbError { code, message: message.to_owned() }))
    }

    #[test]
    fn database_failures_map_to_credential_errors() {
        let refused = |sqlstate: &str, message: &str| CredentialError::Refused { sqlstate: sqlstate.into(), message: message.into() };
        assert_eq!(
            admin_error(&db(Some("42501"), "permission denied for schema app")),
            refused("42501", "permission denied for schema app")
        );
        // A refused login is told without the server's message, which names the admin user.
        assert_eq!(
            admin_error(&db(Some("28P01"), "password authentication failed for user \"admin\"")),
            refused("28P01", "the admin login was refused")
        );
        assert_eq!(admin_error(&db(None, "odd")), refused("", "odd"));
        let long = "x".repeat(200);
        assert_eq!(admin_error(&db(Some("42601"), &long)), refused("42601", &mandate_core::clip(&long)));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(admin_error(&sqlx::Error::Io(io)), CredentialError::Unreachable("connection refused".into()));
        assert_eq!(
            admin_error(&sqlx::Error::Tls("bad cert at postgres://admin:pw@db".into())),
            CredentialError::Unreachable("TLS failed".into())
        );
        assert_eq!(admin_error(&sqlx::Error::Configuration("postgres://admin:pw@db".into())), CredentialError::Config);
        assert_eq!(admin_error(&sqlx::Error::Protocol("eh".into())), CredentialError::Unreachable("the connection failed".into()));
        assert!(gone(&db(Some("42704"), "role \"mandate_1\" does not exist")));
        assert!(!gone(&db(Some("42501"), "permission denied")));
        assert!(!gone(&sqlx::Error::PoolClosed));
    }

    #[test]
    fn quoting_and_expiry() {
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
        assert_eq!(quoted("mandate_0af9"), "\"mandate_0af9\"");
        assert_eq!(rfc3339(1_750_000_000_123).unwrap(), "2025-06-15T15:06:40.123Z");
        assert_eq!(rfc3339(i64::MAX), Err(CredentialError::Config));
    }

    #[tokio::test]
    async fn an_unusable_admin_url_is_a_config_error() {
        let role = NewRole { name: "mandate_ab", password: "pw", valid_until_ms: 1_750_000_000_000, grants: &[] };
        assert_eq!(PgCredentials.create_role("postgres://db/app?sslmode=bogus", &role).await, Err(CredentialError::Config));
        assert_eq!(PgCredentials.drop_role("postgres://db/app?port=x", "mandate_ab").await, Err(CredentialError::Config));
    }

    #[test]
    fn scram_verifier_matches_a_known_value() {
        // RFC 7677's test vector: user `user`, password `pencil`, salt `W22ZaJ0SNY7soEsUEjb6gQ==`,
        // 4096 iterations; its ServerSignature checks StoredKey and ServerKey.
        let salt = base64::engine::general_purpose::STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = scram_verifier("pencil", &salt, 4096);
        let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
        assert_eq!(head, "4096:W22ZaJ0SNY7soEsUEjb6gQ==");
        let (stored, server) = keys.split_once(':').unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let server_key = b64.decode(server).unwrap();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&server_key).unwrap();
        mac.update(auth_message.as_bytes());
        assert_eq!(b64.encode(mac.finalize().into_bytes()), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // The client's proof gives ClientKey, whose hash is StoredKey.
        let stored_key = b64.decode(stored).unwrap();
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&stored_key).unwrap();
        mac.update(auth_message.as_bytes());
        let signature = mac.finalize().into_bytes();
        let proof = b64.decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        let client_key: Vec<u8> = proof.iter().zip(signature.iter()).map(|(p, s)| p ^ s).collect();
        assert_eq!(Sha256::digest(&client_key).to_vec(), stored_key);
    }
}
