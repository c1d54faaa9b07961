//! Xylem's embedded default store: broker, result backend and plugin store
//! in one SQLite file.
//!
//! The file is opened in WAL mode with a busy timeout, and every claim runs
//! in a `BEGIN IMMEDIATE` transaction, so any number of worker processes
//! on one machine can share it: each job is leased to exactly one of them.
//! Durability: `synchronous=NORMAL` by default — a commit survives a crash
//! of any process; add `?synchronous=full` to the URL to survive power loss
//! too (at the cost of an fsync per commit).
//!
//! Schema: numbered SQL migrations (`migrations/`), applied on open by
//! `rusqlite_migration` in one `BEGIN IMMEDIATE` transaction, the count
//! kept in `PRAGMA user_version`. Files made before numbered migrations
//! are adopted; several processes may open a file at once; a file from a
//! newer Xylem is refused ([`StoreError::Invalid`]).
//!
//! The hot path ([`Broker::enqueue`], [`Broker::claim`],
//! [`Broker::complete`], [`Broker::extend_many`]) runs each call as one
//! `BEGIN IMMEDIATE` transaction on the process's one writer connection,
//! with cached statements and a few statements per job: a job's record
//! and its queue entry always change together. Reads go to a connection
//! of their own ([`connection`]).
//!
//! Clock: lease expiries and due times are compared with this machine's
//! clock. A SQLite file is shared only by processes of one machine, so
//! they all read the same clock (unlike the networked stores, which use
//! the server's).
//!
//! Errors: `SQLITE_BUSY` / `SQLITE_LOCKED` (another process held the file
//! longer than the busy timeout) are transient
//! ([`StoreError::is_transient`]); a file that cannot be reopened while in
//! use is unavailable; anything else — including a path that cannot be
//! opened at all, which waiting will not fix — is permanent.
//!
//! [`Broker::enqueue`]: xylem_core::store::Broker::enqueue
//! [`Broker::claim`]: xylem_core::store::Broker::claim
//! [`Broker::complete`]: xylem_core::store::Broker::complete
//! [`Broker::extend_many`]: xylem_core::store::Broker::extend_many

mod broker;
mod cancellation;
mod checkpoint;
mod connection;
mod coordination;
mod plugins;
mod queue_control;
mod results;
mod schema;
mod workers;
mod workflows;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode};
use tokio::sync::Notify;
use xylem_core::store::{StoreError, StoreResult};
use xylem_core::store_url::{Location, OtherOptions, StoreUrl, UrlRules};

/// A SQLite-backed store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    conns: Arc<connection::Connections>,
    path: PathBuf,
    /// Wakes this process's workers when it publishes a job.
    published: Arc<Notify>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// A driver error as a [`StoreError`], classified for retries: a busy or
/// locked file clears up when the other process commits; a file that
/// cannot be opened may come back; the rest will not get better.
fn backend(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::backend_from(e.to_string(), true, e)
        }
        Some(ErrorCode::CannotOpen) => StoreError::unavailable_from(e.to_string(), e),
        _ => StoreError::backend_from(e.to_string(), false, e),
    }
}

/// Opens a store call's transaction: `BEGIN IMMEDIATE`, the file's write
/// lock taken at once (a deferred transaction that reads and then writes
/// fails with `SQLITE_BUSY` if another process wrote in between, without
/// waiting). Dropped without `commit`, it rolls back.
fn begin(conn: &mut Connection) -> StoreResult<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)
}

/// Runs a statement through the connection's statement cache: the hot
/// paths run the same few statements for every job, and parsing them each
/// time was a measurable share of a job's cost.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

use xylem_core::codec::corrupt;

/// What the SQLite adapter takes from its URL: a file and `synchronous`.
/// Nothing else: there is no driver URL to pass other options on in.
const URL_RULES: UrlRules = UrlRules {
    store: "SQLite",
    schemes: &["sqlite"],
    options: &["synchronous"],
    others: OtherOptions::Refused,
    location: Location::File,
    example: "sqlite://xylem.db",
};

/// Parses a SQLite URL: the file, and whether every commit is synced
/// (`synchronous=full`; `normal`, the default, is not).
fn parse_url(url: &str) -> StoreResult<(PathBuf, bool)> {
    let parsed = StoreUrl::parse(url, &URL_RULES)?;
    let full_sync = match parsed.option("synchronous") {
        None | Some("normal") => false,
        Some("full") => true,
        Some(other) => {
            return Err(StoreError::Invalid(format!(
                "invalid SQLite URL option `synchronous={other}` in {}: use normal or full",
                parsed.redacted()
            )));
        }
    };
    let path = parsed.file().ok_or_else(|| {
        StoreError::Invalid(format!(
            "the SQLite URL {} names no file",
            parsed.redacted()
        ))
    })?;
    Ok((path.to_owned(), full_sync))
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the file at `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, false)
    }

    /// Opens a store from a `sqlite://PATH[?synchronous=normal|full]` URL.
    /// `sqlite://xylem.db` is relative to the current directory,
    /// `sqlite:///var/lib/xylem.db` absolute; `sqlite:PATH` is the same as
    /// `sqlite://PATH`. The path is taken as written (not
    /// percent-decoded); any option other than `synchronous` is refused.
    pub fn open_url(url: &str) -> StoreResult<Self> {
        let (path, full_sync) = parse_url(url)?;
        Self::open_with(&path, full_sync)
    }

    fn open_with(path: &Path, full_sync: bool) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            // A path mistake, not an outage: waiting will not fix it.
            return Err(StoreError::Invalid(format!(
                "cannot open {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }
        let mut conn = Connection::open(path).map_err(|e| {
            StoreError::backend_from(format!("cannot open {}: {e}", path.display()), false, e)
        })?;
        schema::prepare(&mut conn, full_sync, path)?;
        let reader = schema::open_reader(path)?;
        let conns = Arc::new(connection::Connections::start(conn, reader, path)?);
        Ok(Self {
            conns,
            path: path.to_owned(),
            published: Arc::new(Notify::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the writer's connection, off the async threads.
    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.conns.write(f).await
    }

    /// Runs `f`, which only reads, on the reader's connection.
    async fn with_read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.conns.read(f).await
    }

    /// SQLite version and a round trip, for `xylem health`.
    pub async fn health(&self) -> StoreResult<String> {
        self.with_conn(|conn| {
            conn.query_row("SELECT sqlite_version()", [], |r| r.get::<_, String>(0))
                .map(|v| format!("SQLite {v}"))
                .map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process holding the write lock past the busy timeout is a
    /// transient error (the worker retries it); a bad statement is not.
    #[test]
    fn a_busy_database_is_transient_and_a_bad_statement_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busy.db");
        let _store = SqliteStore::open(&path).unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let other = Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let busy = other.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        let error = backend(busy);
        assert!(error.is_transient(), "{error:?}");
        assert!(
            std::error::Error::source(&error).is_some(),
            "keeps its source"
        );
        let bad = other
            .execute_batch("SELECT * FROM no_such_table")
            .unwrap_err();
        assert!(!backend(bad).is_transient());
        holder.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn urls_name_a_file_and_synchronous() {
        for (url, path, full) in [
            ("sqlite://xylem.db", "xylem.db", false),
            ("sqlite://data/x.db", "data/x.db", false),
            ("sqlite:///var/lib/x.db", "/var/lib/x.db", false),
            ("sqlite:x.db", "x.db", false),
            ("sqlite://x.db?synchronous=full", "x.db", true),
            ("sqlite://x.db?synchronous=normal", "x.db", false),
            ("sqlite:///v/x.db?synchronous=f%75ll", "/v/x.db", true),
            ("sqlite://my dir/x%20y.db", "my dir/x%20y.db", false),
        ] {
            assert_eq!(
                parse_url(url).unwrap(),
                (PathBuf::from(path), full),
                "{url}"
            );
        }
        for url in [
            "sqlite://",
            "sqlite://x.db?synchronous=off",
            "sqlite://x.db?synchronous",
            "sqlite://x.db?journal_mode=off",
            "sqlite://x.db?synchronous=full&synchronous=full",
            "redis://h:1",
            "x.db",
        ] {
            assert!(
                matches!(parse_url(url), Err(StoreError::Invalid(_))),
                "{url} should be invalid"
            );
        }
    }

    #[test]
    fn open_url_opens_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let store = SqliteStore::open_url(&format!("sqlite://{}?synchronous=full", path.display()))
            .unwrap();
        assert_eq!(store.path(), path);
        assert!(path.exists());
    }
}
