//! [`PgOptions`]: where the database is and how to use it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use mandate_store::StoreError;
use sqlx::postgres::PgConnectOptions;

use crate::error::redact;

/// How long a session may sit idle inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach the PostgreSQL database a [`PgStore`](crate::PgStore) keeps its data in.
///
/// `Debug` never shows the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// A `postgres://user:password@host:port/database?sslmode=require` URL, as libpq takes it.
    pub url: String,
    /// At most this many pooled connections (the change listener has one more of its own).
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// The schema holding Mandate's tables, created if missing and set as the `search_path` of
    /// every connection (the listener's too). `None` uses the URL's (or the role's) `search_path`. At most 63 of
    /// `a-z`, `0-9` and `_`, not starting with a digit.
    pub schema: Option<String>,
}

impl PgOptions {
    /// Options for `url` with the defaults: 16 connections, a 5 s acquire timeout, no schema.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions { url: url.into(), max_connections: 16, acquire_timeout: Duration::from_secs(5), schema: None }
    }

    /// The URL with its password (in the user part or a `password` parameter) masked.
    pub fn redacted_url(&self) -> String {
        redacted_url(&self.url)
    }

    /// The password in the URL, if any, to keep out of messages.
    pub(crate) fn password(&self) -> Option<String> {
        let url = url::Url::parse(&self.url).ok()?;
        let in_query = url.query_pairs().find(|(k, _)| k == "password").map(|(_, v)| v.into_owned());
        url.password().map(str::to_owned).or(in_query)
    }

    /// The connect options for one connection (`application_name` as given), or why the URL or
    /// schema is refused. Messages never carry the password.
    pub(crate) fn connect_options(&self, application_name: &str) -> Result<PgConnectOptions, StoreError> {
        if self.max_connections == 0 {
            return Err(StoreError::Invalid("the PostgreSQL pool needs at least one connection".into()));
        }
        let options = PgConnectOptions::from_str(&self.url).map_err(|e| {
            let detail = match &e {
                sqlx::Error::Configuration(inner) => inner.to_string(),
                _ => String::new(),
            };
            let detail = redact(&detail, self.password().as_deref());
            StoreError::Invalid(format!("the PostgreSQL URL `{}` is invalid: {detail}", self.redacted_url()))
        })?;
        if let Some(schema) = &self.schema {
            check_schema(schema)?;
        }
        Ok(options.application_name(application_name))
    }

    /// The statements every new connection runs first: the schema as its `search_path`, and a
    /// limit on how long a session may sit idle inside a transaction, so that a server that
    /// stalls mid-transaction (while holding the audit trail's lock, say) cannot stall the
    /// others for longer. Set with `SET` rather than startup options, which connection poolers
    /// may refuse.
    pub(crate) fn session_setup(&self) -> String {
        let mut sql = format!("SET idle_in_transaction_session_timeout = '{}s'", IDLE_IN_TRANSACTION_TIMEOUT.as_secs());
        if let Some(schema) = &self.schema {
            // `check_schema` made sure the name needs no escaping.
            sql.push_str(&format!("; SET search_path TO \"{schema}\""));
        }
        sql
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("schema", &self.schema)
            .finish()
    }
}

/// A schema name that needs no quoting anywhere (in SQL and in startup options alike).
pub(crate) fn check_schema(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 63 && !schema.starts_with("pg_") {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "schema `{schema}` is not a valid name: 1 to 63 of a-z, 0-9 and _, not starting with a digit or `pg_`"
        )))
    }
}

/// `url` with the password masked; a URL that does not parse is not shown at all.
pub(crate) fn redacted_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return "<unparsable URL>".to_owned() };
    if parsed.password().is_some() && parsed.set_password(Some("***")).is_err() {
        return "<unparsable URL>".to_owned();
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| if k == "password" { (k.into_owned(), "***".to_owned()) } else { (k.into_owned(), v.into_owned()) })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let o = PgOptions::new("postgres://mandate:hunter2-secret@db.internal:5432/mandate?sslmode=require");
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://mandate:***@db.internal:5432/mandate?sslmode=require"), "{shown}");
        let q = PgOptions::new("postgres://db.internal/mandate?user=m&password=hunter2-secret");
        assert!(!format!("{q:?}").contains("hunter2"));
        assert_eq!(q.password().as_deref(), Some("hunter2-secret"));
        assert_eq!(redacted_url("not a url hunter2"), "<unparsable URL>");
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["mandate", "_x", "t_0123456789abcdef", &"a".repeat(63)] {
            assert!(check_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "0abc", "Mandate", "a-b", "a b", "x\"; DROP", "pg_temp", &"a".repeat(64)] {
            assert!(matches!(check_schema(bad), Err(StoreError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn an_invalid_url_is_refused_without_its_password() {
        let o = PgOptions::new("postgres://u:hunter2-secret@host:notaport/db");
        let err = o.connect_options("mandate").unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let setup = PgOptions { schema: Some("mandate".into()), ..PgOptions::new("postgres://h/db") }.session_setup();
        assert!(setup.ends_with("; SET search_path TO \"mandate\""), "{setup}");
        let zero = PgOptions { max_connections: 0, ..PgOptions::new("postgres://h/db") };
        assert!(matches!(zero.connect_options("mandate"), Err(StoreError::Invalid(_))));
    }
}
