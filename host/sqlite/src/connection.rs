//! The store's two connections, each on a thread of its own: a writer
//! and a reader.
//!
//! **Writes** run one after another on the writer's connection, each in
//! its own `BEGIN IMMEDIATE` transaction (the store calls open it, see
//! [`crate::begin`]): at most one transaction of this process holds the
//! file's write lock at a time, and other processes wait for it on the
//! busy timeout.
//!
//! **Reads go to a second connection**, `query_only`, each call in a
//! read transaction of its own (one snapshot, however many statements
//! it runs): a read never waits behind a write, nor takes a lock other
//! processes' writers wait for. WAL mode lets it read while the writer
//! writes; a read call starts from the last commit, so a read issued
//! after a write was answered sees that write. Why: the workflow
//! benchmark spent most of its time waiting on the one connection, and
//! about a fifth of that connection's work was reads (a run's document
//! read back on each delivery, due runs looked for, a job's record) —
//! they now use the second core.
//!
//! Writes were tried committed in groups (every write waiting in one
//! transaction, a savepoint each): the hot path already batches its
//! writes — a claim, a completion, a tick's runs are one call each — so
//! groups were of one write, and the savepoints' sub-journal cost more
//! than the commits it saved (`perf`, 2026-12-04).
//!
//! Both threads, and the WAL checkpointer's ([`crate::checkpoint`]), end
//! and close their connections once the store's last handle is dropped
//! and the calls already queued are done; the drop waits for them, so
//! the file is closed when it returns.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;
use xylem_core::store::{StoreError, StoreResult};

/// A store call: runs on its thread's connection and answers its caller.
pub(crate) type Call = Box<dyn FnOnce(&mut Connection) + Send>;

/// The two threads (and the checkpointer's), shared by the store's
/// clones; dropping it ends them.
pub(crate) struct Connections {
    writes: Option<Sender<Call>>,
    reads: Option<Sender<Call>>,
    /// Dropped to stop the checkpointer.
    checkpoints: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Connections {
    /// Starts the writer on `writer`, the reader on `reader`, and the
    /// checkpointer of the file at `path` (if it cannot start, the writer
    /// keeps checkpointing by itself, as SQLite does by default).
    pub(crate) fn start(writer: Connection, reader: Connection, path: &Path) -> StoreResult<Self> {
        let (writes, write_queue) = channel::<Call>();
        let (reads, read_queue) = channel::<Call>();
        let checkpointer = crate::checkpoint::start(path, writes.clone());
        if checkpointer.is_some() {
            writer
                .pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(crate::backend)?;
        }
        let mut threads = vec![
            serve("xylem-sqlite-writer", writer, write_queue)?,
            serve("xylem-sqlite-reader", reader, read_queue)?,
        ];
        let checkpoints = checkpointer.map(|running| {
            threads.push(running.thread);
            running.stop
        });
        Ok(Self {
            writes: Some(writes),
            reads: Some(reads),
            checkpoints,
            threads,
        })
    }

    /// Runs `f` on the writer's connection, after the writes before it.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        call(self.writes.as_ref(), f).await
    }

    /// Runs `f` on the reader's connection, in a read transaction: all
    /// its statements see one snapshot (a job's record and its history
    /// agree).
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        call(self.reads.as_ref(), |conn| {
            if !conn.is_autocommit() {
                // Left open by a call that panicked.
                conn.execute_batch("ROLLBACK").map_err(crate::backend)?;
            }
            conn.execute_batch("BEGIN").map_err(crate::backend)?;
            let result = f(conn);
            // Nothing was written: ending it only lets the WAL move on.
            conn.execute_batch("COMMIT").map_err(crate::backend)?;
            result
        })
        .await
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        // Closing the queues ends each thread once it has done what was
        // queued (the checkpointer, stopped, drops its handle on the
        // writer's queue); waiting for them closes the file before the
        // drop returns (a test, or a CLI command, may delete or reopen it
        // next).
        self.writes = None;
        self.reads = None;
        self.checkpoints = None;
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

fn stopped() -> StoreError {
    StoreError::backend("the SQLite store's connection thread has stopped")
}

/// `f`, with a panic made an error (the thread goes on serving).
fn unwound<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::backend(format!("a store call panicked: {why}")))
    })
}

/// Runs `f` on the thread that `queue` feeds; its result.
async fn call<T, F>(queue: Option<&Sender<Call>>, f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let call: Call = Box::new(move |conn| {
        let _ = answer.send(unwound(conn, f));
    });
    queue.and_then(|q| q.send(call).ok()).ok_or_else(stopped)?;
    answered.await.unwrap_or_else(|_| Err(stopped()))
}

/// Starts a connection's thread: its calls, one at a time, until the
/// store is dropped.
fn serve(name: &str, mut conn: Connection, queue: Receiver<Call>) -> StoreResult<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while let Ok(call) = queue.recv() {
                call(&mut conn);
            }
        })
        .map_err(|e| StoreError::backend_from(format!("cannot start {name}: {e}"), false, e))
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;
    use xylem_core::store::StoreError;

    use crate::SqliteStore;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("conns.db")).unwrap();
        (dir, store)
    }

    /// A read issued once a write was answered, on the other connection,
    /// sees that write.
    #[tokio::test]
    async fn a_read_after_a_write_sees_it() {
        let (_dir, store) = store();
        for n in 0..50_i64 {
            store
                .with_conn(move |conn| {
                    conn.execute(
                        "INSERT INTO xylem_meta (key, value) VALUES (?1, ?2)",
                        rusqlite::params![format!("k{n}"), n],
                    )
                    .map_err(crate::backend)
                })
                .await
                .unwrap();
            let seen = store
                .with_read(move |conn| {
                    conn.query_row(
                        "SELECT value FROM xylem_meta WHERE key = ?1",
                        [format!("k{n}")],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(crate::backend)
                })
                .await
                .unwrap();
            assert_eq!(seen, n);
        }
    }

    /// The reader's connection cannot write, whatever a call asks.
    #[tokio::test]
    async fn the_reader_cannot_write() {
        let (_dir, store) = store();
        let refused = store
            .with_read(|conn| {
                conn.execute("DELETE FROM xylem_meta", [])
                    .map_err(crate::backend)
            })
            .await;
        assert!(refused.is_err(), "{refused:?}");
        let left = store.with_read(meta_rows).await.unwrap();
        assert_eq!(left, 1, "routes_version is still there");
    }

    /// A call that panics is an error for its caller; the thread goes on
    /// serving the next calls, and an open transaction of the call's is
    /// rolled back.
    #[tokio::test]
    async fn a_call_that_panics_fails_alone() {
        let (_dir, store) = store();
        let failed = store
            .with_conn(|conn| -> Result<(), StoreError> {
                let tx = crate::begin(conn)?;
                tx.execute("DELETE FROM xylem_meta", []).unwrap();
                panic!("a bug in a store call");
            })
            .await
            .unwrap_err();
        assert!(
            failed.to_string().contains("a bug in a store call"),
            "{failed}"
        );
        // On the writer: it still serves.
        let left = store.with_conn(meta_rows).await.unwrap();
        assert_eq!(left, 1, "the panicking call's delete was rolled back");
    }

    /// A read call sees one snapshot: a write that another connection
    /// commits between two of its statements is not seen by the second.
    /// After a read call that panicked, reads go on.
    #[tokio::test]
    async fn a_read_call_sees_one_snapshot() {
        let (_dir, store) = store();
        let path = store.path().to_owned();
        let (before, after) = store
            .with_read(move |conn| {
                let before = meta_rows(conn)?;
                let other = rusqlite::Connection::open(&path).unwrap();
                other
                    .execute(
                        "INSERT INTO xylem_meta (key, value) VALUES ('other', 1)",
                        [],
                    )
                    .unwrap();
                Ok((before, meta_rows(conn)?))
            })
            .await
            .unwrap();
        assert_eq!((before, after), (1, 1));
        let failed = store
            .with_read(|conn| -> Result<(), StoreError> {
                meta_rows(conn)?;
                panic!("a bug in a read");
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            store.with_read(meta_rows).await.unwrap(),
            2,
            "the next read call sees the insert"
        );
    }

    /// How many rows `xylem_meta` has (a new file: one).
    fn meta_rows(conn: &mut rusqlite::Connection) -> Result<i64, StoreError> {
        conn.query_row("SELECT count(*) FROM xylem_meta", [], |r| r.get(0))
            .map_err(crate::backend)
    }

    /// A cached statement is not prepared again when other values are
    /// bound to it (the claim's `LIMIT ?` made SQLite prepare it anew on
    /// every call), on either connection.
    #[tokio::test]
    async fn binding_new_values_does_not_prepare_a_statement_again() {
        let (_dir, store) = store();
        assert_eq!(store.with_conn(reprepares).await.unwrap(), 0);
        assert_eq!(store.with_read(reprepares).await.unwrap(), 0);
    }

    /// How often a claim-like statement was prepared again while run with
    /// nine different limits.
    fn reprepares(conn: &mut rusqlite::Connection) -> Result<i32, StoreError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM queue WHERE id IN
                 (SELECT id FROM queue WHERE run_at <= ?1 ORDER BY run_at LIMIT ?2)",
            )
            .map_err(crate::backend)?;
        for limit in 1..10_i64 {
            let rows: Vec<String> = stmt
                .query_map(rusqlite::params![limit * 1000, limit], |r| r.get(0))
                .and_then(Iterator::collect)
                .map_err(crate::backend)?;
            assert!(rows.is_empty());
        }
        Ok(stmt.get_status(StatementStatus::RePrepare))
    }
}
