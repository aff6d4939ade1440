//! The connections: one writer behind a mutex (SQLite allows one writer at a time anyway, and
//! serialising in-process keeps `BEGIN IMMEDIATE` from waiting on the busy timeout), and a small
//! pool of read-only connections that WAL lets read while the writer writes. A [`Checkpointer`]
//! thread copies the log back into the database off the write path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mandate_store::{StoreError, StoreResult};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use crate::error::db;
use crate::wal::Checkpointer;

/// How long a statement waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle readers kept open; more are opened on demand and closed after use.
const MAX_IDLE_READERS: usize = 8;

/// Pages the write-ahead log may hold before the writer copies them back itself. The
/// [`Checkpointer`] normally does it long before; this is the backstop (64 MiB of log).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_000;

/// The database's connections.
pub(crate) struct Pool {
    /// Declared first so that it stops before the connections close.
    _checkpointer: Checkpointer,
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Pool {
    /// Wraps an open, migrated writer connection and opens the first reader.
    pub(crate) fn new(path: &Path, writer: Connection) -> StoreResult<Self> {
        let first = open_reader(path)?;
        Ok(Pool {
            _checkpointer: Checkpointer::start(path)?,
            path: path.to_owned(),
            writer: Mutex::new(writer),
            readers: Mutex::new(vec![first]),
        })
    }

    /// Runs `f` on the writer connection, alone.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.writer.lock();
        f(&mut conn)
    }

    /// Runs `f` on a reader connection. Readers see every transaction committed before `f`
    /// starts its statement.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let idle = self.readers.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let out = f(&conn);
        let mut readers = self.readers.lock();
        if readers.len() < MAX_IDLE_READERS {
            readers.push(conn);
        }
        out
    }
}

/// Opens (creating if needed) the writer connection: WAL journal, `synchronous=FULL` so that a
/// committed transaction survives a crash or power loss, foreign keys enforced.
pub(crate) fn open_writer(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_failed(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)).map_err(db)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!("`{}` cannot use write-ahead logging (journal mode stays `{mode}`)", path.display())));
    }
    conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).map_err(db)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_failed(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
    Ok(conn)
}

fn open_failed(path: &Path, e: rusqlite::Error) -> StoreError {
    match db(e) {
        StoreError::Backend(m) => StoreError::Backend(format!("cannot open `{}`: {m}", path.display())),
        other => other,
    }
}
