//! The connection settings and the tables: numbered SQL migrations
//! (`host/sqlite/migrations/NNNN_*.sql`, embedded in the binary), applied
//! on open by `rusqlite_migration`, which keeps how many have been applied
//! in the file's `PRAGMA user_version`.
//!
//! Opening a file:
//!
//! 1. The connection settings: busy timeout, statement cache, WAL (asked
//!    again if another opener is switching a new file to WAL that moment),
//!    `synchronous`, and `BEGIN IMMEDIATE` as the default transaction.
//! 2. A file made before numbered migrations is adopted (see
//!    [`adopt_old_file`]): `user_version` 0, yet a `xylem_meta` table —
//!    every earlier build created it, with `schema_version = 1`, in its
//!    first transaction; a new file has neither. In one `BEGIN IMMEDIATE`
//!    transaction, each change of migrations 2 to [`ADOPTED`] that the file
//!    lacks is applied from its migration file (those builds made them in
//!    transactions of their own, so a crash could leave any mix), the
//!    `schema_version` row, which nothing reads, is deleted, and
//!    `user_version` becomes [`ADOPTED`].
//! 3. The pending migrations, in one `BEGIN IMMEDIATE` transaction.
//!
//! A file whose `user_version` is above [`LATEST`] was written by a newer
//! Xylem: it is refused with [`StoreError::Invalid`] before anything is
//! written to it.
//!
//! Two processes opening a file at once: step 2 checks again under the
//! write lock. In step 3, rusqlite_migration reads `user_version` before
//! it begins its transaction (2.3 and the latest 2.6 alike), so both may
//! set out to apply the same migrations; the second waits for the first's
//! lock. Each migration's hook ([`still_pending`]) therefore checks,
//! inside the transaction, that the migration has not been applied
//! meanwhile, and fails the transaction (rolled back: nothing applied
//! twice) if it has; the opener then reads the version again and finds the
//! work done.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use rusqlite_migration::{HookError, HookResult, M, MigrationHook, Migrations};
use xylem_core::store::StoreError;

/// The migrations, in order: once migration `n` (`migrations/000n_*.sql`)
/// is applied, `user_version` is `n`. A change to the schema is a new file
/// at the end; a file that has shipped is never edited.
const FILES: [&str; 14] = [
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_groups_and_locks.sql"),
    include_str!("../migrations/0003_task_expiry.sql"),
    include_str!("../migrations/0004_claim_index.sql"),
    include_str!("../migrations/0005_quotas.sql"),
    include_str!("../migrations/0006_plugin_push_order.sql"),
    include_str!("../migrations/0007_compiled.sql"),
    include_str!("../migrations/0008_cancel_and_pause.sql"),
    include_str!("../migrations/0009_canvases.sql"),
    include_str!("../migrations/0010_schedules.sql"),
    include_str!("../migrations/0011_workflow_runs.sql"),
    include_str!("../migrations/0012_workers.sql"),
    include_str!("../migrations/0013_task_headers.sql"),
    include_str!("../migrations/0014_workflow_runs_rowid.sql"),
];

/// The schema version this build writes; a file above it is refused.
const LATEST: usize = FILES.len();

/// The version a file made before numbered migrations has once adopted:
/// those builds made every change up to `0006_plugin_push_order`.
const ADOPTED: usize = 6;

const _: () = assert!(
    ADOPTED <= LATEST,
    "an old file is adopted at a version this build has"
);

/// For migrations 2 to [`ADOPTED`], in order: a query that is true when a
/// file made before numbered migrations already has that migration's
/// change.
const ADOPTED_HAS: [&str; ADOPTED - 1] = [
    "SELECT COUNT(*) = 3 FROM sqlite_master
     WHERE type = 'table' AND name IN ('groups', 'group_members', 'locks')",
    "SELECT COUNT(*) = 1 FROM pragma_table_info('tasks') WHERE name = 'expires_at'",
    "SELECT COUNT(*) = 1 FROM sqlite_master WHERE type = 'index' AND name = 'queue_due'",
    "SELECT COUNT(*) = 1 FROM sqlite_master WHERE type = 'table' AND name = 'quotas'",
    "SELECT COUNT(*) = 1 FROM pragma_table_info('plugins') WHERE name = 'push_seq'",
];

/// Sets up a newly opened connection to the file at `path` and brings its
/// tables up to date.
pub(crate) fn prepare(
    conn: &mut Connection,
    full_sync: bool,
    path: &Path,
) -> Result<(), StoreError> {
    settings(conn, full_sync).map_err(|e| Failure::Driver(e).into_store_error(path))?;
    if adopt_old_file(conn).map_err(|e| Failure::Driver(e).into_store_error(path))? {
        tracing::info!(
            path = %path.display(),
            version = ADOPTED,
            "adopted a store file made before numbered migrations"
        );
    }
    let looked_again = migrate(conn, &FILES).map_err(|e| e.into_store_error(path))?;
    if looked_again > 0 {
        tracing::debug!(
            path = %path.display(),
            looked_again,
            "another connection migrated the file first"
        );
    }
    Ok(())
}

/// The connection reads go to ([`crate::connection`]), opened once
/// [`prepare`] has made the file ready: it may only read.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let open = || -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        statements(&conn)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    };
    open().map_err(|e| Failure::Driver(e).into_store_error(path))
}

/// How long a statement waits for another connection's lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn settings(conn: &mut Connection, full_sync: bool) -> rusqlite::Result<()> {
    // Several processes may open the file at once: wait for locks rather
    // than fail.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    statements(conn)?;
    wal(conn)?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        crate::checkpoint::JOURNAL_SIZE_LIMIT,
    )?;
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    // rusqlite_migration opens its transaction with the connection's
    // default behaviour: take the write lock at BEGIN, as every other
    // transaction in this crate does (they say so explicitly).
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    Ok(())
}

/// How a connection keeps its statements: the hot paths run the same few
/// statements for every job, so they are cached, and a cached statement
/// keeps its plan whatever values are bound to it (the query planner
/// stability guarantee). Without that, SQLite prepares a statement again
/// whenever a value it looked at while planning is bound anew — the
/// `LIMIT ?` of every claim, `perf` found, about a tenth of the writer's
/// time on the workflow benchmark.
fn statements(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(128);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Puts the file in WAL mode. On a new file that takes an exclusive lock,
/// and when two connections ask at once, each holding a shared lock,
/// SQLite refuses one at once (`SQLITE_BUSY` without the busy timeout:
/// waiting could deadlock); that one asks again and finds it done.
fn wal(conn: &Connection) -> rusqlite::Result<()> {
    let give_up = Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
                    && Instant::now() < give_up =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            done => return done,
        }
    }
}

/// The file's `PRAGMA user_version`.
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings a file made before numbered migrations (see the module's doc) to
/// migration [`ADOPTED`], in one `BEGIN IMMEDIATE` transaction; true if it
/// did. Anything else — a new file, a migrated one — is left as it is.
fn adopt_old_file(conn: &mut Connection) -> rusqlite::Result<bool> {
    if user_version(conn)? != 0 {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Again under the write lock: another process may have adopted or
    // migrated the file since.
    let old = user_version(&tx)? == 0
        && tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'xylem_meta')",
            [],
            |row| row.get::<_, bool>(0),
        )?;
    if !old {
        return Ok(false); // dropping `tx` rolls back: nothing was written
    }
    for (sql, has) in FILES[1..ADOPTED].iter().zip(ADOPTED_HAS) {
        if !tx.query_row(has, [], |row| row.get::<_, bool>(0))? {
            tx.execute_batch(sql)?;
        }
    }
    tx.execute("DELETE FROM xylem_meta WHERE key = 'schema_version'", [])?;
    tx.pragma_update(None, "user_version", ADOPTED as i64)?;
    tx.commit()?;
    Ok(true)
}

/// Applies the migrations of `files` that the file lacks (see the module's
/// doc for two openers at once). Returns how often it had to look again
/// because another connection had migrated the file meanwhile.
fn migrate(conn: &mut Connection, files: &[&'static str]) -> Result<usize, Failure> {
    let latest = files.len();
    let migrations = Migrations::new(
        files
            .iter()
            .enumerate()
            .map(|(i, &sql)| M::up_with_hook(sql, still_pending(i + 1)))
            .collect(),
    );
    let mut looked_again = 0;
    loop {
        let before = user_version(conn).map_err(Failure::Driver)?;
        if !(0..=latest as i64).contains(&before) {
            return Err(Failure::Version {
                found: before,
                known: latest,
            });
        }
        if before == latest as i64 {
            return Ok(looked_again);
        }
        let Err(e) = migrations.to_latest(conn) else {
            return Ok(looked_again);
        };
        // Our transaction was rolled back. If the version moved meanwhile,
        // another connection applied migrations first (our hook, or a
        // statement it had already run, failed): look again. If not, the
        // failure is our own.
        let after = user_version(conn).map_err(Failure::Driver)?;
        if after <= before {
            return Err(Failure::Migration(e));
        }
        looked_again += 1;
    }
}

/// Migration `n`'s hook, run in its transaction after its SQL.
/// rusqlite_migration chose what to apply from a `user_version` read
/// before that transaction began, so another connection may have applied
/// `n` in between; then this fails the transaction, which rolls back
/// whatever it did, rather than apply `n` twice.
fn still_pending(n: usize) -> impl MigrationHook {
    move |tx: &Transaction<'_>| -> HookResult {
        let applied = user_version(tx)?;
        if applied < n as i64 {
            Ok(())
        } else {
            Err(HookError::Hook(format!(
                "migration {n} was applied meanwhile by another connection \
                 (user_version is now {applied})"
            )))
        }
    }
}

/// Why a file's tables could not be brought up to date.
#[derive(Debug)]
enum Failure {
    /// `user_version` is not one this build knows.
    Version { found: i64, known: usize },
    /// A setting or a statement of ours failed.
    Driver(rusqlite::Error),
    /// rusqlite_migration could not apply the migrations.
    Migration(rusqlite_migration::Error),
}

impl Failure {
    /// As a [`StoreError`]. Driver and migration failures are
    /// `Unavailable`, as opening failures always were here (mostly another
    /// process holding the file past the busy timeout: a worker waits and
    /// tries again); a version from a newer Xylem is `Invalid`, which
    /// waiting will not fix.
    fn into_store_error(self, path: &Path) -> StoreError {
        let file = path.display();
        match self {
            Self::Version { found, known } if found > 0 => StoreError::Invalid(format!(
                "{file} was written by a newer Xylem: its schema is version {found}, \
                 this build knows versions up to {known}; open it with that Xylem or a later one"
            )),
            Self::Version { found, .. } => StoreError::Invalid(format!(
                "{file} is not a Xylem store: its PRAGMA user_version is {found}, \
                 which no Xylem writes"
            )),
            Self::Driver(e) => {
                StoreError::unavailable_from(format!("cannot prepare {file}: {e}"), e)
            }
            Self::Migration(e) => {
                let what = match &e {
                    rusqlite_migration::Error::RusqliteError { err, .. } => err.to_string(),
                    other => other.to_string(),
                };
                StoreError::unavailable_from(format!("cannot migrate {file}: {what}"), e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
