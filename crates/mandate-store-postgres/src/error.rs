//! Turning PostgreSQL failures into [`StoreError`]s.
//!
//! Messages name what failed and why, never the SQL sent nor any credential: a database error
//! carries the server's SQLSTATE and message, a connection error its kind.

use mandate_store::StoreError;

/// Which constraint a failed statement broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Constraint<'a> {
    /// A primary key or unique constraint, by name.
    Unique(&'a str),
    /// A foreign key, by name.
    ForeignKey(&'a str),
}

/// The constraint `e` reports breaking, if it is a constraint failure of a kind we name.
pub(crate) fn constraint(e: &sqlx::Error) -> Option<Constraint<'_>> {
    let sqlx::Error::Database(d) = e else { return None };
    let name = d.constraint().unwrap_or("");
    match d.code().as_deref() {
        Some("23505") => Some(Constraint::Unique(name)),
        Some("23503") => Some(Constraint::ForeignKey(name)),
        _ => None,
    }
}

/// Maps any other failure: data the server reports damaged, or that cannot be decoded as the
/// type it should have, is corruption; a value PostgreSQL cannot hold is a request it cannot
/// carry out; everything else is a backend failure.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = d.message().to_owned();
            match code.as_str() {
                // data_corrupted, index_corrupted
                "XX001" | "XX002" => StoreError::Corrupt(format!("PostgreSQL reports damaged data ({code}): {message}")),
                // character_not_in_repertoire (a NUL in text), untranslatable_character
                "22021" | "22P05" => StoreError::Invalid(format!("a value cannot be stored in PostgreSQL ({code}): {message}")),
                _ => StoreError::Backend(format!("PostgreSQL error {code}: {message}")),
            }
        }
        sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt(format!("column {index} cannot be read: {source}")),
        sqlx::Error::Decode(source) => StoreError::Corrupt(format!("a value cannot be read: {source}")),
        sqlx::Error::ColumnNotFound(column) => StoreError::Corrupt(format!("column `{column}` is missing")),
        sqlx::Error::ColumnIndexOutOfBounds { index, len } => StoreError::Corrupt(format!("column {index} is missing (the row has {len})")),
        sqlx::Error::TypeNotFound { type_name } => StoreError::Corrupt(format!("type `{type_name}` is missing")),
        sqlx::Error::Io(io) => StoreError::Backend(format!("cannot talk to PostgreSQL: {io}")),
        sqlx::Error::Tls(tls) => StoreError::Backend(format!("TLS with PostgreSQL failed: {tls}")),
        sqlx::Error::PoolTimedOut => StoreError::Backend("no PostgreSQL connection became free within the acquire timeout".into()),
        sqlx::Error::PoolClosed => StoreError::Backend("the PostgreSQL connection pool is closed".into()),
        sqlx::Error::Protocol(p) => StoreError::Backend(format!("PostgreSQL protocol error: {p}")),
        sqlx::Error::Configuration(_) => StoreError::Backend("the PostgreSQL connection options are invalid".into()),
        other => StoreError::Backend(format!("PostgreSQL backend error: {}", other.to_string().lines().next().unwrap_or("unknown"))),
    }
}

/// Stored data that cannot be read back as what it should be.
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

/// `message` with every occurrence of `secret` (as given and percent-decoded) replaced.
pub(crate) fn redact(message: &str, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else { return message.to_owned() };
    let mut out = message.replace(secret, "***");
    let decoded = url::form_urlencoded::parse(format!("p={secret}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default();
    if !decoded.is_empty() {
        out = out.replace(&decoded, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_secret_as_given_and_decoded() {
        assert_eq!(redact("bad pa%40ss here", Some("pa%40ss")), "bad *** here");
        assert_eq!(redact("bad pa@ss here", Some("pa%40ss")), "bad *** here");
        assert_eq!(redact("nothing", None), "nothing");
        assert_eq!(redact("nothing", Some("")), "nothing");
    }
}
