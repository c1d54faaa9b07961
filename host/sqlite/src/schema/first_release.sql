-- Test fixture: the SQL with which the first release of xylem-sqlite
-- (commit e979831) created its tables on every open, verbatim. A file it
-- made has these tables, no `PRAGMA user_version` and
-- xylem_meta.schema_version = 1.
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
INSERT OR IGNORE INTO xylem_meta (key, value) VALUES ('schema_version', 1), ('routes_version', 0);
