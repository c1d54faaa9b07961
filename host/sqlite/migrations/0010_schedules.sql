-- Schedules (ScheduleStore): the whole schedule as JSON, with what the
-- beat queries — enabled, the next run — and the version every write
-- compares and bumps.

CREATE TABLE schedules (
    name     TEXT PRIMARY KEY,
    enabled  INTEGER NOT NULL,
    next_run INTEGER,
    version  INTEGER NOT NULL,
    doc      TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX schedules_due ON schedules (next_run) WHERE enabled = 1;
