//! WAL checkpoints off the hot path. By default SQLite checkpoints inside
//! whichever commit pushes the WAL past 1,000 pages: that commit then
//! copies pages into the database and fsyncs it, and the job that made it
//! waits milliseconds longer than every other (it was most of the
//! enqueue→start p99 on SQLite). Instead, a thread of the store's own, on
//! a connection of its own, runs a `PASSIVE` checkpoint every
//! [`PERIOD`] — it never blocks a writer — and the store's connection
//! stops checkpointing itself.

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const PERIOD: Duration = Duration::from_millis(250);

/// The checkpointer's connection, before its thread starts.
pub(crate) struct Checkpointer {
    conn: Connection,
}

impl Checkpointer {
    /// Its connection to `path`, or `None` if it cannot have one (the
    /// store's writer then keeps checkpointing by itself).
    pub(crate) fn open(path: &Path) -> Option<Self> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(crate::schema::BUSY_TIMEOUT).ok()?;
        Some(Self { conn })
    }

    /// Starts the thread; it stops once `owner` (the store) is dropped.
    pub(crate) fn start<T: Send + Sync + 'static>(self, owner: Weak<T>) {
        let conn = self.conn;
        let started = std::thread::Builder::new()
            .name("xylem-sqlite-checkpoint".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(PERIOD);
                    if owner.strong_count() == 0 {
                        return;
                    }
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "WAL checkpoint failed; trying again");
                    }
                }
            });
        if let Err(e) = started {
            // The WAL then grows until a later store of this file
            // checkpoints it; nothing is lost.
            tracing::warn!(error = %e, "cannot start the SQLite checkpointer");
        }
    }
}
