//! Copying the write-ahead log back into the database on a thread of its own.
//!
//! Left to itself, SQLite checkpoints inside the commit that fills the log, so that one append
//! pays for writing thousands of pages and two extra fsyncs. Here a background thread runs a
//! passive checkpoint (which never blocks the writer or readers) a few times a second instead;
//! the writer's own automatic checkpoint stays on, at a higher threshold, as a backstop should
//! this thread fall behind.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mandate_store::StoreResult;
use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, OpenFlags};

use crate::error::db;

/// How often the log is copied back.
const INTERVAL: Duration = Duration::from_millis(200);

/// Runs passive checkpoints until dropped.
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread, with its own connection to `path`.
    pub(crate) fn start(path: &Path) -> StoreResult<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(db)?;
        // The thread must never wait on the writer: a passive checkpoint does not, and a busy
        // database is simply retried at the next tick.
        conn.busy_timeout(Duration::ZERO).map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mandate-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &signal))
            .map_err(|e| mandate_store::StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock() = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (stopped, wake) = stop;
    loop {
        {
            let mut stopped = stopped.lock();
            if !*stopped {
                wake.wait_for(&mut stopped, INTERVAL);
            }
            if *stopped {
                return;
            }
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "passive checkpoint skipped");
        }
    }
}
