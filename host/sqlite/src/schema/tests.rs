//! The migrations on real files: new ones, files made by the code before
//! numbered migrations (from its own SQL, `first_release.sql` and
//! `before_migrations.sql`), two openers racing, and files from a newer
//! Xylem.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rusqlite::Connection;
use xylem_core::store::StoreError;

use super::{LATEST, migrate, prepare, settings, user_version};
use crate::SqliteStore;

/// What the code before numbered migrations ran on its first open of a
/// file (it then added `tasks.expires_at` when missing).
const BEFORE_MIGRATIONS: &str = include_str!("before_migrations.sql");
/// What the first release ran on every open.
const FIRST_RELEASE: &str = include_str!("first_release.sql");
/// How the code before numbered migrations added `tasks.expires_at`.
const ADD_EXPIRY: &str = "ALTER TABLE tasks ADD COLUMN expires_at INTEGER;
     CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;";

/// The ways a file can be found on open.
#[derive(Debug, Clone, Copy)]
enum Old {
    /// No file yet.
    None,
    /// Made by the code just before numbered migrations: every table and
    /// column, `schema_version = 1`, no `user_version`.
    BeforeMigrations,
    /// The same code, stopped between its two transactions: `push_seq` (in
    /// its `CREATE TABLE`) but no `expires_at`.
    Interrupted,
    /// Made by the first release, never opened since: no groups, locks,
    /// quotas, `queue_due`, `expires_at` or `push_seq`.
    FirstRelease,
}

fn file(dir: &Path, name: &str, old: Old) -> PathBuf {
    let path = dir.join(name);
    let sql = match old {
        Old::None => return path,
        Old::BeforeMigrations => format!("{BEFORE_MIGRATIONS}{ADD_EXPIRY}"),
        Old::Interrupted => BEFORE_MIGRATIONS.to_owned(),
        Old::FirstRelease => FIRST_RELEASE.to_owned(),
    };
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{sql}COMMIT;"))
        .unwrap();
    path
}

fn open(path: &Path) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    prepare(&mut conn, false, path).unwrap();
    conn
}

/// Tables (their columns from `pragma_table_info`) and indexes (their SQL,
/// spaces and `IF NOT EXISTS` aside): what a file's layout is, however it
/// was reached.
fn layout(conn: &Connection) -> Vec<String> {
    let objects: Vec<(String, String, Option<String>)> = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master
             WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    objects
        .into_iter()
        .map(|(kind, name, sql)| {
            if kind == "table" {
                let columns: Vec<String> = conn
                    .prepare(
                        "SELECT name, type, \"notnull\", quote(dflt_value), pk
                         FROM pragma_table_info(?1) ORDER BY cid",
                    )
                    .unwrap()
                    .query_map([&name], |r| {
                        Ok(format!(
                            "{} {} notnull={} default={} pk={}",
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                format!("table {name}: {}", columns.join(", "))
            } else {
                let sql = sql.unwrap_or_default().replace("IF NOT EXISTS ", "");
                format!(
                    "{kind} {}",
                    sql.split_whitespace().collect::<Vec<_>>().join(" ")
                )
            }
        })
        .collect()
}

fn meta(conn: &Connection) -> Vec<(String, i64)> {
    conn.prepare("SELECT key, value FROM xylem_meta ORDER BY key")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn version(conn: &Connection) -> usize {
    usize::try_from(user_version(conn).unwrap()).unwrap()
}

/// What the migrations after [`ADOPTED`] add, in the form `layout` lists
/// it.
const ADDED_SINCE_ADOPTED: [&str; 11] = [
    "table compiled: digest TEXT notnull=1 default=NULL pk=1, \
     engine TEXT notnull=1 default=NULL pk=2, artifact BLOB notnull=1 default=NULL pk=0",
    "table cancel_requests: id TEXT notnull=1 default=NULL pk=1, \
     lapses_at INTEGER notnull=1 default=NULL pk=0",
    "table paused_queues: queue TEXT notnull=1 default=NULL pk=1",
    "table rate_slots: key TEXT notnull=1 default=NULL pk=1, \
     next_at INTEGER notnull=1 default=NULL pk=0, forget_at INTEGER notnull=1 default=NULL pk=0",
    "table canvases: id TEXT notnull=1 default=NULL pk=1, \
     definition TEXT notnull=1 default=NULL pk=0, created_at INTEGER notnull=1 default=NULL pk=0",
    "table schedules: name TEXT notnull=1 default=NULL pk=1, \
     enabled INTEGER notnull=1 default=NULL pk=0, next_run INTEGER notnull=0 default=NULL pk=0, \
     version INTEGER notnull=1 default=NULL pk=0, doc TEXT notnull=1 default=NULL pk=0",
    "index CREATE INDEX schedules_due ON schedules (next_run) WHERE enabled = 1",
    "table workflow_runs: id TEXT notnull=1 default=NULL pk=1, \
     workflow TEXT notnull=1 default=NULL pk=0, state TEXT notnull=1 default=NULL pk=0, \
     wake_at INTEGER notnull=0 default=NULL pk=0, created_at INTEGER notnull=1 default=NULL pk=0, \
     version INTEGER notnull=1 default=NULL pk=0, doc TEXT notnull=1 default=NULL pk=0",
    "index CREATE INDEX workflow_runs_due ON workflow_runs (wake_at) WHERE wake_at IS NOT NULL",
    "index CREATE INDEX workflow_runs_newest ON workflow_runs (created_at DESC, id DESC)",
    "table workers: id TEXT notnull=1 default=NULL pk=1, \
     drop_at INTEGER notnull=1 default=NULL pk=0, doc TEXT notnull=1 default=NULL pk=0",
];

/// The columns the migrations after [`ADOPTED`] add to older tables.
const COLUMNS_ADDED_SINCE_ADOPTED: [(&str, &str); 1] =
    [("tasks", "headers TEXT notnull=0 default=NULL pk=0")];

/// The migrations up to [`ADOPTED`] add up to exactly the tables the code
/// before them made; the later ones add what they say.
#[test]
fn a_new_file_gets_every_migration_and_the_tables_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(&file(dir.path(), "new.db", Old::None));
    assert_eq!(version(&conn), LATEST);
    assert_eq!(meta(&conn), [("routes_version".to_owned(), 0)]);
    let before = Connection::open(file(dir.path(), "before.db", Old::BeforeMigrations)).unwrap();
    let mut expected = layout(&before);
    for (table, column) in COLUMNS_ADDED_SINCE_ADOPTED {
        let line = expected
            .iter_mut()
            .find(|l| l.starts_with(&format!("table {table}: ")))
            .unwrap();
        line.push_str(&format!(", {column}"));
    }
    expected.extend(ADDED_SINCE_ADOPTED.map(str::to_owned));
    expected.sort();
    let mut new = layout(&conn);
    new.sort();
    assert_eq!(new, expected);
    drop(conn);
    let again = open(&dir.path().join("new.db"));
    assert_eq!(version(&again), LATEST, "opened again: nothing to do");
}

/// Whatever an old file had, it ends with the new file's tables at the
/// latest version, its data kept, its push order numbered once, and no
/// `schema_version` row.
#[test]
fn old_files_are_adopted_whatever_they_had() {
    let dir = tempfile::tempdir().unwrap();
    let new = layout(&open(&file(dir.path(), "new.db", Old::None)));
    for old in [Old::BeforeMigrations, Old::Interrupted, Old::FirstRelease] {
        let path = file(dir.path(), &format!("{old:?}.db"), old);
        let conn = Connection::open(&path).unwrap();
        let has_push_seq = !matches!(old, Old::FirstRelease);
        // Pushed against the clock: x last by push order, y last by time.
        conn.execute_batch(if has_push_seq {
            "INSERT INTO plugins (digest, bytes, size, tasks, pushed_at, push_seq)
                 VALUES ('x', x'00', 1, '[]', 100, 2), ('y', x'00', 1, '[]', 200, 1);"
        } else {
            "INSERT INTO plugins VALUES ('b', x'00', 1, '[]', 200), ('a', x'00', 1, '[]', 100),
                                        ('c', x'00', 1, '[]', 200);"
        })
        .unwrap();
        conn.execute_batch(
            "UPDATE xylem_meta SET value = 7 WHERE key = 'routes_version';
             INSERT INTO tasks (id, task, queue, state, args, attempt, max_retries,
                                enqueued_at, updated_at)
                 VALUES ('t1', 'hello.greet', 'default', 'queued', '{}', 0, 3, 1, 1);",
        )
        .unwrap();
        assert_eq!(version(&conn), 0);
        drop(conn);

        let conn = open(&path);
        assert_eq!(version(&conn), LATEST, "{old:?}");
        assert_eq!(layout(&conn), new, "{old:?}");
        assert_eq!(
            meta(&conn),
            [("routes_version".to_owned(), 7)],
            "{old:?}: schema_version gone, routes_version kept"
        );
        let order: Vec<String> = conn
            .prepare("SELECT digest FROM plugins ORDER BY push_seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if has_push_seq {
            assert_eq!(
                order,
                ["y", "x"],
                "{old:?}: push order kept, not renumbered"
            );
        } else {
            assert_eq!(
                order,
                ["a", "b", "c"],
                "{old:?}: pushed_at order, then digest"
            );
        }
        let task: String = conn
            .query_row(
                "SELECT task FROM tasks WHERE id = 't1' AND expires_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(task, "hello.greet", "{old:?}");
        drop(conn);
        assert_eq!(version(&open(&path)), LATEST, "{old:?}: opened again");
    }
}

/// Two connections open the same file at the same moment, many times, on
/// new and old files: both succeed, and the file is migrated once (an old
/// file's push order is numbered by one `UPDATE`, counted by a trigger).
#[test]
fn two_openers_at_once_both_succeed_and_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let new = layout(&open(&file(dir.path(), "reference.db", Old::None)));
    let kinds = [Old::None, Old::BeforeMigrations, Old::FirstRelease];
    for round in 0..24 {
        let old = kinds[round % kinds.len()];
        let path = file(dir.path(), &format!("race-{round}.db"), old);
        if matches!(old, Old::FirstRelease) {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "INSERT INTO plugins VALUES ('b', x'00', 1, '[]', 200), ('a', x'00', 1, '[]', 100);
                 INSERT INTO xylem_meta VALUES ('renumbered', 0);
                 CREATE TRIGGER count_renumbering AFTER UPDATE ON plugins BEGIN
                     UPDATE xylem_meta SET value = value + 1 WHERE key = 'renumbered';
                 END;",
            )
            .unwrap();
        }
        let barrier = Arc::new(Barrier::new(2));
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut conn = Connection::open(&path).unwrap();
                    barrier.wait();
                    prepare(&mut conn, false, &path)
                })
            })
            .collect();
        for opener in openers {
            let opened = opener.join().unwrap();
            assert!(opened.is_ok(), "round {round} ({old:?}): {opened:?}");
        }
        let conn = Connection::open(&path).unwrap();
        assert_eq!(version(&conn), LATEST, "round {round} ({old:?})");
        if matches!(old, Old::FirstRelease) {
            let renumbered: i64 = conn
                .query_row(
                    "SELECT value FROM xylem_meta WHERE key = 'renumbered'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                renumbered, 2,
                "round {round}: two plugins, numbered once each"
            );
            conn.execute_batch(
                "DROP TRIGGER count_renumbering; DELETE FROM xylem_meta WHERE key = 'renumbered';",
            )
            .unwrap();
        }
        assert_eq!(layout(&conn), new, "round {round} ({old:?})");
    }
}

/// Migrations whose SQL would succeed a second time (a counter bumped by
/// an `UPDATE`, tables made `IF NOT EXISTS`): the race rusqlite_migration
/// leaves open, played out step by step.
const COUNTED: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS counter (n INTEGER NOT NULL);
     INSERT INTO counter SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM counter);",
    "UPDATE counter SET n = n + 1;",
];

/// Set while the second opener waits for the write lock.
static WAITING: AtomicBool = AtomicBool::new(false);

fn note_waiting(_tries: i32) -> bool {
    WAITING.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// The second opener reads `user_version` 0, then waits for the lock while
/// the first applies both migrations and commits; it must then apply
/// nothing (its transaction fails in the hook and rolls back), look again,
/// and succeed.
#[test]
fn a_migration_applied_while_waiting_for_the_lock_is_not_applied_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counted.db");
    let mut first = Connection::open(&path).unwrap();
    settings(&mut first, false).unwrap();
    let holder = first.transaction().unwrap(); // BEGIN IMMEDIATE: the lock
    let second = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
            conn.busy_handler(Some(note_waiting)).unwrap();
            let looked_again = migrate(&mut conn, &COUNTED).unwrap();
            (conn, looked_again)
        })
    };
    while !WAITING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The first opener, lock in hand, migrates as rusqlite_migration does.
    for sql in COUNTED {
        holder.execute_batch(sql).unwrap();
    }
    holder.pragma_update(None, "user_version", 2).unwrap();
    holder.commit().unwrap();
    let (conn, looked_again) = second.join().unwrap();
    let n: i64 = conn
        .query_row("SELECT n FROM counter", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the counting migration ran once");
    assert_eq!(looked_again, 1, "it found the work done");
    assert_eq!(user_version(&conn).unwrap(), 2);
}

/// A file from a newer Xylem is refused by name, and left as it was.
#[test]
fn a_file_from_a_newer_xylem_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(SqliteStore::open(&path).unwrap());
    let newer = LATEST as i64 + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    let StoreError::Invalid(message) = &error else {
        panic!("not Invalid: {error:?}");
    };
    assert!(message.contains("newer Xylem"), "{message}");
    assert!(message.contains(&format!("version {newer}")), "{message}");
    assert!(message.contains(&format!("up to {LATEST}")), "{message}");
    assert!(!error.is_transient());
    let conn = Connection::open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), newer, "left as it was");
}

/// A migration that fails leaves the file as it was and reports the
/// driver's error as its source.
#[test]
fn a_failed_migration_changes_nothing_and_keeps_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("foreign.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE queue (something_else TEXT);")
        .unwrap();
    let error = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("queue"), "{error}");
    assert!(
        std::error::Error::source(&error).is_some(),
        "keeps its source"
    );
    let conn = Connection::open(&path).unwrap();
    assert_eq!(user_version(&conn).unwrap(), 0);
    let tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "rolled back: only the file's own table");
}
