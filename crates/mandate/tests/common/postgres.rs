//! PostgreSQL for the tests that need a server (`MANDATE_TEST_DATABASE_URL`): whether there is
//! one, and throwaway databases on it.

use sqlx::Connection as _;

/// `MANDATE_TEST_DATABASE_URL`, or `None` (after saying on stderr that `what` is skipped) when
/// it is not set. A test starts with
/// `let Some(url) = test_database_url("…") else { return };`.
pub fn test_database_url(what: &str) -> Option<String> {
    let url = std::env::var("MANDATE_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        // Straight to stderr, past the test harness's capture, so a run shows it.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped: MANDATE_TEST_DATABASE_URL is not set ({what})");
    }
    url
}

/// A database of its own for one test, on the server `admin` names, dropped (with its
/// connections) when this is dropped.
pub struct Database {
    admin: String,
    pub name: String,
    /// The database's URL: `admin` with its path replaced.
    pub url: String,
}

impl Database {
    /// `CREATE DATABASE <prefix>_<random>`.
    pub async fn create(admin: &str, prefix: &str) -> Database {
        let name = format!("{prefix}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        mandate_store_postgres::create_database(admin, &name).await.expect("create a database on MANDATE_TEST_DATABASE_URL");
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(&format!("/{name}"));
        Database { admin: admin.to_owned(), name, url: url.to_string() }
    }

    /// The database's URL with the port replaced (to go through a relay).
    pub fn url_via(&self, port: u16) -> String {
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_port(Some(port)).unwrap();
        url.to_string()
    }

    pub async fn connect(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.url).await.unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime: a thread of its own can block on another.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let _ = mandate_store_postgres::drop_database(&admin, &name).await;
            });
        })
        .join();
    }
}
