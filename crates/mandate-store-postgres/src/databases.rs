//! Throwaway databases, for benchmarks and tests: created on a PostgreSQL server and dropped
//! when done, so that a run starts from nothing and leaves nothing. Not for a deployment's own
//! database, which is made by whoever runs PostgreSQL.

use mandate_store::StoreError;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::error::db;
use crate::options::PgOptions;

/// A connection to the server `admin_url` names (any database of it), as a role that may create
/// databases. Errors never carry the password.
async fn connect(admin_url: &str) -> Result<PgConnection, StoreError> {
    PgOptions::new(admin_url).connect_options("mandate-databases")?.connect().await.map_err(db)
}

/// A name that needs no quoting: 1 to 63 of `a-z`, `0-9` and `_`, not starting with a digit.
fn check_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "database `{}` is not a valid name: 1 to 63 of a-z, 0-9 and _, not starting with a digit",
            name.escape_debug()
        )))
    }
}

/// `CREATE DATABASE <name>` on the server `admin_url` names; for benchmarks and tests. A
/// database of that name existing already is an error.
pub async fn create_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    check_name(name)?;
    let mut conn = connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.map_err(db)?;
    let _ = conn.close().await;
    Ok(())
}

/// `DROP DATABASE IF EXISTS <name> WITH (FORCE)` on the server `admin_url` names, ending the
/// sessions still connected to it; for benchmarks and tests. A database that does not exist is
/// fine.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    check_name(name)?;
    let mut conn = connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.map_err(db)?;
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_that_need_no_quoting() {
        for ok in ["mandate_load_0af9", "_x", "a"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in ["", "1db", "Bench", "a-b", "a b", "x; DROP DATABASE prod", "\"q\"", long.as_str()] {
            assert!(matches!(check_name(bad), Err(StoreError::Invalid(_))), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_bad_name_is_refused_before_connecting() {
        let e = create_database("postgres://u:s3cret@127.0.0.1:1/x", "Not-Valid").await;
        assert!(matches!(e, Err(StoreError::Invalid(ref m)) if m.contains("not a valid name")), "{e:?}");
        assert!(matches!(drop_database("postgres://127.0.0.1:1/x", "").await, Err(StoreError::Invalid(_))));
    }
}
