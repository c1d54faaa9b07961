-- Groups and chords (GroupStore) and named locks (LockStore).

CREATE TABLE groups (
    id      TEXT COLLATE "C" PRIMARY KEY,
    size    BIGINT NOT NULL,
    claimed BOOLEAN NOT NULL DEFAULT false
);

-- One row per finished member: a redelivered member is not counted twice.
CREATE TABLE group_members (
    group_id TEXT COLLATE "C" NOT NULL,
    idx      BIGINT NOT NULL,
    result   TEXT NOT NULL,
    PRIMARY KEY (group_id, idx)
);

CREATE TABLE locks (
    name       TEXT COLLATE "C" PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
