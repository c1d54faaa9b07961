-- Xylem's tables, created in the store's schema: every connection's
-- search_path names that schema only, so nothing here is qualified.
-- Times are BIGINT milliseconds since the Unix epoch. Text keys use the
-- "C" collation so that ordering is by bytes, as in the other adapters.

CREATE TABLE xylem_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO xylem_meta (key, value) VALUES ('schema_version', 1), ('routes_version', 0)
    ON CONFLICT (key) DO NOTHING;

-- One row per queued, leased or dead job. status: 0 ready, 1 leased, 2 dead.
CREATE TABLE queue (
    id          TEXT COLLATE "C" PRIMARY KEY,
    queue       TEXT COLLATE "C" NOT NULL,
    priority    INTEGER NOT NULL,
    run_at      BIGINT NOT NULL,
    status      SMALLINT NOT NULL DEFAULT 0,
    lease       BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT NOT NULL DEFAULT 0,
    deliveries  BIGINT NOT NULL DEFAULT 0,
    envelope    TEXT NOT NULL,
    dead_reason TEXT,
    dead_at     BIGINT
);
CREATE INDEX queue_ready ON queue (status, queue, priority DESC, run_at, id);
CREATE INDEX queue_leases ON queue (status, lease_until);

CREATE TABLE tasks (
    id          TEXT COLLATE "C" PRIMARY KEY,
    task        TEXT COLLATE "C" NOT NULL,
    queue       TEXT COLLATE "C" NOT NULL,
    state       TEXT NOT NULL,
    args        TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    max_retries BIGINT NOT NULL,
    result      TEXT,
    error       TEXT,
    usage       TEXT,
    progress    TEXT,
    log         TEXT,
    plugin      TEXT,
    enqueued_at BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX tasks_by_state ON tasks (state, enqueued_at);
CREATE INDEX tasks_by_task ON tasks (task, enqueued_at);
CREATE INDEX tasks_by_enqueued ON tasks (enqueued_at);

CREATE TABLE task_history (
    seq     BIGSERIAL PRIMARY KEY,
    id      TEXT COLLATE "C" NOT NULL,
    at      BIGINT NOT NULL,
    state   TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    detail  TEXT
);
CREATE INDEX task_history_by_id ON task_history (id, seq);

-- push_seq orders pushes made within the same millisecond.
CREATE SEQUENCE plugin_push_seq;
CREATE TABLE plugins (
    digest    TEXT COLLATE "C" PRIMARY KEY,
    bytes     BYTEA NOT NULL,
    size      BIGINT NOT NULL,
    tasks     TEXT NOT NULL,
    pushed_at BIGINT NOT NULL,
    push_seq  BIGINT NOT NULL
);

CREATE TABLE routes (
    task   TEXT COLLATE "C" PRIMARY KEY,
    digest TEXT COLLATE "C" NOT NULL,
    spec   TEXT NOT NULL
);
CREATE INDEX routes_by_digest ON routes (digest);
