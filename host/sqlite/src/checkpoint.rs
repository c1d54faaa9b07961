//! WAL checkpoints off the hot path. By default SQLite checkpoints inside
//! whichever commit pushes the WAL past 1,000 pages: that commit then
//! copies pages into the database and fsyncs it, and the job that made it
//! waits milliseconds longer than every other (it was most of the
//! enqueue→start p99 on SQLite). Instead, a thread of the store's own, on
//! a connection of its own, runs a `PASSIVE` checkpoint every
//! [`PERIOD`] — it never blocks a writer — and the store's writer stops
//! checkpointing itself.
//!
//! A `PASSIVE` checkpoint alone does not bound the WAL: the file starts
//! over from its beginning only when a write begins with every frame
//! copied back, and under steady writes a new frame is always there
//! first — the workflow benchmark grew it to 780 MB in two seconds, each
//! new block zeroed by the kernel as the file grew. So past
//! [`RESTART_FRAMES`] the checkpointer asks the writer, between two of
//! its calls, for a `RESTART` checkpoint: it copies the last frames back
//! (most were, by the `PASSIVE` one just before), waits a moment for the
//! readers, and makes the next write start the file over;
//! `journal_size_limit` ([`JOURNAL_SIZE_LIMIT`], set on the writer's
//! connection, the one that starts the file over) then cuts a file that
//! grew past it back to that size.

use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::connection::Call;

/// How often the WAL is checkpointed.
const PERIOD: Duration = Duration::from_millis(100);

/// Frames (pages, 4 KiB each) in the WAL past which it is started over:
/// about 16 MiB.
const RESTART_FRAMES: i64 = 4096;

/// How long a `RESTART` checkpoint waits for the readers (the writer
/// waits with it): past it, it gives up and is tried again after
/// [`BACK_OFF`] — a long read (a big listing, a backup, a shell left
/// open) must not stall every write.
const RESTART_WAIT: Duration = Duration::from_millis(100);

/// How long after a `RESTART` that gave up the next one is tried.
const BACK_OFF: Duration = Duration::from_secs(2);

/// Bytes a WAL file is cut back to when it starts over, having grown past
/// them (while a long read held its frames, say).
pub(crate) const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// The checkpointer's thread, checkpointing until `stop` is dropped.
pub(crate) struct Running {
    pub(crate) stop: Sender<()>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts a checkpointer of the file at `path`, on a connection of its
/// own; a `RESTART` goes to the writer's queue, `writes`. `None` if it
/// cannot start.
pub(crate) fn start(path: &Path, writes: Sender<Call>) -> Option<Running> {
    let conn = Connection::open(path).ok()?;
    let (stop, stopped) = channel::<()>();
    let restarts = Restarts {
        writes,
        state: Arc::default(),
    };
    let thread = std::thread::Builder::new()
        .name("xylem-sqlite-checkpoint".to_owned())
        .spawn(move || {
            // Nothing is ever sent: the store's drop disconnects.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PERIOD)
            {
                if let Err(e) = checkpoint(&conn, &restarts) {
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

/// `RESTART`s, run by the writer between its calls: asked on the
/// checkpointer's thread, one at a time. On its own connection the
/// checkpointer would have to catch the write lock between two of the
/// writer's transactions, polling, and under steady writes it seldom
/// does.
struct Restarts {
    writes: Sender<Call>,
    state: Arc<Mutex<Restarted>>,
}

/// Where `RESTART`s stand.
#[derive(Default)]
struct Restarted {
    /// One is queued or running.
    asked: bool,
    /// The WAL's frames when the last ended: the count stays until the
    /// next write starts the file over, and an idle store is not
    /// restarted again and again.
    at_frames: Option<i64>,
    /// No `RESTART` before this, after one that gave up.
    not_before: Option<Instant>,
}

impl Restarts {
    /// Asks the writer for a `RESTART`, unless one is asked already, the
    /// WAL has not moved since the last, or the last gave up a moment ago.
    fn ask(&self, frames: i64) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.asked
                || state.at_frames == Some(frames)
                || state.not_before.is_some_and(|t| Instant::now() < t)
            {
                return;
            }
            state.asked = true;
        }
        let state = self.state.clone();
        let call: Call = Box::new(move |conn| {
            let ended = restart(conn);
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            match ended {
                Ok((0, frames)) => {
                    state.at_frames = Some(frames);
                    state.not_before = None;
                }
                // Busy (a reader held on past the wait), or failed.
                other => {
                    if let Err(e) = other {
                        tracing::debug!(error = %e, "WAL restart failed; trying again later");
                    }
                    state.not_before = Some(Instant::now() + BACK_OFF);
                }
            }
            state.asked = false;
        });
        if self.writes.send(call).is_err() {
            // The store is closing.
            self.state.lock().unwrap_or_else(|e| e.into_inner()).asked = false;
        }
    }
}

/// A `RESTART` checkpoint on the writer's connection, waiting at most
/// [`RESTART_WAIT`] for locks; (busy, frames in the WAL).
fn restart(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.busy_timeout(RESTART_WAIT)?;
    let ended = wal_checkpoint(conn, "RESTART");
    conn.busy_timeout(crate::schema::BUSY_TIMEOUT)?;
    ended
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL).
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
}

/// Copies what it can of the WAL back into the database without waiting;
/// if the WAL is still past [`RESTART_FRAMES`], asks the writer to start
/// it over (most of its frames are copied back by now, so that is short).
fn checkpoint(conn: &Connection, restarts: &Restarts) -> rusqlite::Result<()> {
    let (_, frames) = wal_checkpoint(conn, "PASSIVE")?;
    if frames > RESTART_FRAMES {
        restarts.ask(frames);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::SqliteStore;

    /// A MiB, the size of each write.
    const BLOB: i64 = 1 << 20;

    /// A store in `dir` with a `ballast` table; the file's path.
    async fn ballast(dir: &Path) -> (SqliteStore, PathBuf) {
        let path = dir.join("wal.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .with_conn(|conn| {
                conn.execute("CREATE TABLE ballast (n INTEGER PRIMARY KEY, b BLOB)", [])
                    .map_err(crate::backend)
            })
            .await
            .unwrap();
        (store, path)
    }

    /// Write `n` of the ballast: a MiB, over one of four rows.
    async fn write(store: &SqliteStore, n: i64) {
        store
            .with_conn(move |conn| {
                conn.execute(
                    "INSERT OR REPLACE INTO ballast (n, b) VALUES (?1, zeroblob(?2))",
                    rusqlite::params![n % 4, BLOB],
                )
                .map_err(crate::backend)
            })
            .await
            .unwrap();
    }

    /// Writes of a MiB each, one after another with reads beside them (as
    /// a busy worker's): without a restart the WAL takes all of them, about
    /// 256 MiB; with it, it stays near [`super::RESTART_FRAMES`].
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn steady_writes_do_not_grow_the_wal_without_bound() {
        const WRITES: i64 = 256;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ballast(dir.path()).await;
        let done = Arc::new(AtomicBool::new(false));
        let reading = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    store
                        .with_read(|conn| {
                            conn.query_row("SELECT COUNT(*) FROM ballast", [], |r| {
                                r.get::<_, i64>(0)
                            })
                            .map_err(crate::backend)
                        })
                        .await
                        .unwrap();
                }
            })
        };
        let wal = dir.path().join("wal.db-wal");
        let mut largest = 0;
        for n in 0..WRITES {
            write(&store, n).await;
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        done.store(true, Ordering::Relaxed);
        reading.await.unwrap();
        let written = u64::try_from(WRITES * BLOB).unwrap();
        assert!(
            largest < written / 2,
            "the WAL grew to {largest} bytes for {written} bytes written"
        );
    }

    /// A read that holds its snapshot (another process's listing, a
    /// backup, a shell left open) keeps the WAL from starting over; the
    /// `RESTART`s asked meanwhile give up after a moment rather than hold
    /// the writer for the whole busy timeout (10 s).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_read_does_not_stall_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path) = ballast(dir.path()).await;
        let reader = rusqlite::Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT COUNT(*) FROM ballast", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 0);
        let t = std::time::Instant::now();
        for n in 0..64_i64 {
            write(&store, n).await;
        }
        let took = t.elapsed();
        reader.execute_batch("COMMIT").unwrap();
        assert!(
            took < std::time::Duration::from_secs(5),
            "64 writes took {took:?} beside a long read"
        );
    }
}
