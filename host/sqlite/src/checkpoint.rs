//! WAL checkpoints off the hot path. By default SQLite checkpoints inside
//! whichever commit pushes the WAL past 1,000 pages: that commit then
//! copies pages into the database and fsyncs it, and the job that made it
//! waits milliseconds longer than every other (it was most of the
//! enqueue→start p99 on SQLite). Instead, a thread of the store's own, on
//! a connection of its own, runs a `PASSIVE` checkpoint every
//! [`PERIOD`] — it never blocks a writer — and the store's writer stops
//! checkpointing itself.

use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const PERIOD: Duration = Duration::from_millis(250);

/// The checkpointer's thread, checkpointing until `stop` is dropped.
pub(crate) struct Running {
    pub(crate) stop: Sender<()>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts a checkpointer of the file at `path`, on a connection of its
/// own; `None` if it cannot (the store's writer then keeps checkpointing
/// by itself, as SQLite does by default).
pub(crate) fn start(path: &Path) -> Option<Running> {
    let conn = Connection::open(path).ok()?;
    conn.busy_timeout(crate::schema::BUSY_TIMEOUT).ok()?;
    let (stop, stopped) = channel::<()>();
    let thread = std::thread::Builder::new()
        .name("xylem-sqlite-checkpoint".to_owned())
        .spawn(move || {
            // Nothing is ever sent: the store's drop disconnects.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "WAL checkpoint failed; trying again");
                }
            }
        });
    match thread {
        Ok(thread) => Some(Running { stop, thread }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the SQLite checkpointer; the writer checkpoints");
            None
        }
    }
}
