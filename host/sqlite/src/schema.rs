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
    pushed_at INTEGER NOT NULL
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
    // Added after the first release of the schema: files made before it
    // get the column here.
    let has_expiry: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('tasks') WHERE name = 'expires_at'")?
        .exists([])?;
    if !has_expiry {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE tasks ADD COLUMN expires_at INTEGER;
             CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
             COMMIT;",
        )?;
    }
    Ok(())
}
