//! The tables, created on open, and the connection settings.

use rusqlite::Connection;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS xylem_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- One row per queued, leased or dead job. status: 0 ready, 1 leased, 2 dead.
CREATE TABLE IF NOT EXISTS queue (
    id          TEXT PRIMARY KEY,
    queue       TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    run_at      INTEGER NOT NULL,
    status      INTEGER NOT NULL DEFAULT 0,
    lease       INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER NOT NULL DEFAULT 0,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    envelope    TEXT NOT NULL,
    dead_reason TEXT,
    dead_at     INTEGER
);
CREATE INDEX IF NOT EXISTS queue_ready ON queue (status, queue, priority DESC, run_at, id);
CREATE INDEX IF NOT EXISTS queue_leases ON queue (status, lease_until);
-- Claims from all queues walk the ready jobs in claim order here and stop
-- at their limit (queue_ready is ordered by queue first, so it would need
-- a scan and a sort of every ready job). Partial: a leased job leaves it.
CREATE INDEX IF NOT EXISTS queue_due ON queue (priority DESC, run_at, id) WHERE status = 0;
CREATE TABLE IF NOT EXISTS tasks (
    id          TEXT PRIMARY KEY,
    task        TEXT NOT NULL,
    queue       TEXT NOT NULL,
    state       TEXT NOT NULL,
    args        TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    max_retries INTEGER NOT NULL,
    result      TEXT,
    error       TEXT,
    usage       TEXT,
    progress    TEXT,
    log         TEXT,
    plugin      TEXT,
    enqueued_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, enqueued_at);
CREATE INDEX IF NOT EXISTS tasks_by_task ON tasks (task, enqueued_at);
CREATE TABLE IF NOT EXISTS task_history (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL,
    at      INTEGER NOT NULL,
    state   TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    detail  TEXT
);
CREATE INDEX IF NOT EXISTS task_history_by_id ON task_history (id, seq);
CREATE TABLE IF NOT EXISTS plugins (
    digest    TEXT PRIMARY KEY,
    bytes     BLOB NOT NULL,
    size      INTEGER NOT NULL,
    tasks     TEXT NOT NULL,
    pushed_at INTEGER NOT NULL,
    push_seq  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS routes (
    task   TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    spec   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    id      TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS group_members (
    group_id TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    result   TEXT NOT NULL,
    PRIMARY KEY (group_id, idx)
);
CREATE TABLE IF NOT EXISTS locks (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quotas (
    key        TEXT PRIMARY KEY,
    used       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
INSERT OR IGNORE INTO xylem_meta (key, value) VALUES ('schema_version', 1), ('routes_version', 0);
";

pub(crate) fn prepare(conn: &Connection, full_sync: bool) -> rusqlite::Result<()> {
    // Several processes may open the file at once: wait for locks rather
    // than fail.
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(128);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if full_sync { "FULL" } else { "NORMAL" },
    )?;
    conn.execute_batch(&format!("BEGIN IMMEDIATE;{SCHEMA}COMMIT;"))?;
    // Added after the first release of the schema: files made before them
    // get them here.
    add_column_once(
        conn,
        "tasks",
        "expires_at",
        "ALTER TABLE tasks ADD COLUMN expires_at INTEGER;
         CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;",
    )?;
    // The push order the plugin fallback rule uses; versions pushed before
    // it are numbered in their `pushed_at` order.
    add_column_once(
        conn,
        "plugins",
        "push_seq",
        "ALTER TABLE plugins ADD COLUMN push_seq INTEGER NOT NULL DEFAULT 0;
         UPDATE plugins SET push_seq =
             (SELECT COUNT(*) FROM plugins p2
              WHERE p2.pushed_at < plugins.pushed_at
                 OR (p2.pushed_at = plugins.pushed_at AND p2.digest <= plugins.digest));",
    )?;
    Ok(())
}

/// Runs `migration` (which adds `column` to `table`) unless the column is
/// there; checked again under the write lock, so two processes opening an
/// old file at once add it once.
fn add_column_once(
    conn: &Connection,
    table: &str,
    column: &str,
    migration: &str,
) -> rusqlite::Result<()> {
    let has = || {
        conn.prepare(&format!(
            "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
        ))?
        .exists([])
    };
    if has()? {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let migrated = if has()? {
        Ok(())
    } else {
        conn.execute_batch(migration)
    };
    match migrated {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// A file from before `push_seq` gets it, numbered in its old push
    /// order, once — however often (and by how many processes) it is opened.
    #[test]
    fn an_old_file_gets_the_push_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE plugins (digest TEXT PRIMARY KEY, bytes BLOB NOT NULL,
                 size INTEGER NOT NULL, tasks TEXT NOT NULL, pushed_at INTEGER NOT NULL);
             INSERT INTO plugins VALUES ('b', x'00', 1, '[]', 200), ('a', x'00', 1, '[]', 100),
                                        ('c', x'00', 1, '[]', 200);",
        )
        .unwrap();
        drop(old);
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let conn = Connection::open(&path).unwrap();
                    super::prepare(&conn, false).unwrap();
                })
            })
            .collect();
        for opener in openers {
            opener.join().unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        super::prepare(&conn, false).unwrap();
        let order: Vec<String> = conn
            .prepare("SELECT digest FROM plugins ORDER BY push_seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(order, ["a", "b", "c"], "pushed_at order, then digest");
    }
}
