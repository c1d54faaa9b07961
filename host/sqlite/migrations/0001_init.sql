-- Xylem's tables as first released. Times are INTEGER milliseconds since
-- the Unix epoch; JSON is stored as TEXT. The schema's version is
-- `PRAGMA user_version` (the number of migrations applied), kept by
-- rusqlite_migration: see src/schema.rs.

-- Counters: routes_version goes up by one on every plugin push or removal,
-- so workers know when to reload their routes.
CREATE TABLE xylem_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO xylem_meta (key, value) VALUES ('routes_version', 0);

-- One row per queued, leased or dead job. status: 0 ready, 1 leased, 2 dead.
CREATE TABLE queue (
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
CREATE INDEX queue_ready ON queue (status, queue, priority DESC, run_at, id);
CREATE INDEX queue_leases ON queue (status, lease_until);

CREATE TABLE tasks (
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
CREATE INDEX tasks_by_state ON tasks (state, enqueued_at);
CREATE INDEX tasks_by_task ON tasks (task, enqueued_at);

CREATE TABLE task_history (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL,
    at      INTEGER NOT NULL,
    state   TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    detail  TEXT
);
CREATE INDEX task_history_by_id ON task_history (id, seq);

-- Plugin versions by digest, and which version serves each task.
CREATE TABLE plugins (
    digest    TEXT PRIMARY KEY,
    bytes     BLOB NOT NULL,
    size      INTEGER NOT NULL,
    tasks     TEXT NOT NULL,
    pushed_at INTEGER NOT NULL
);
CREATE TABLE routes (
    task   TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    spec   TEXT NOT NULL
);
