//! WAL checkpoints off the hot path. By default SQLite checkpoints inside
//! whichever commit pushes the WAL past 1,000 pages: that commit then
//! copies pages into the database and fsyncs it, and the job that made it
//! waits milliseconds longer than every other (it was most of the
//! enqueue→start p99 on SQLite). Instead, a thread of the store's own, on
//! a connection of its own, runs a `PASSIVE` checkpoint every
//! [`PERIOD`] — it never blocks a writer — and the store's connection
//! stops checkpointing itself.

use std::path::Path;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const PERIOD: Duration = Duration::from_millis(250);

/// Starts the checkpointer of the store whose connection is `owner`; it
/// stops once the store is dropped. False if it could not start (the
/// store's connection then keeps checkpointing by itself).
pub(crate) fn start(path: &Path, owner: Weak<Mutex<Connection>>) -> bool {
    let Ok(conn) = Connection::open(path) else {
        return false;
    };
    if conn.busy_timeout(Duration::from_secs(10)).is_err() {
        return false;
    }
    std::thread::Builder::new()
        .name("xylem-sqlite-checkpoint".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(PERIOD);
                if owner.strong_count() == 0 {
                    return;
                }
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "WAL checkpoint failed; trying again");
                }
            }
        })
        .is_ok()
}
