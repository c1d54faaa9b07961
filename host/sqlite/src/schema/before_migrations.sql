-- Test fixture: the SQL with which xylem-sqlite created its tables on
-- every open just before numbered migrations (commit b3d65e8), verbatim.
-- After it, that code added `tasks.expires_at` (and its index) and
-- `plugins.push_seq` when missing, each in a transaction of its own.
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
