-- Groups and chords (GroupStore) and named locks (LockStore).

CREATE TABLE groups (
    id      TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    claimed INTEGER NOT NULL DEFAULT 0
);

-- One row per finished member: a redelivered member is not counted twice.
CREATE TABLE group_members (
    group_id TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    result   TEXT NOT NULL,
    PRIMARY KEY (group_id, idx)
);

CREATE TABLE locks (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
