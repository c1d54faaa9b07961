-- Schedules (ScheduleStore): the whole schedule as JSON, with what the
-- beat queries — enabled, the next run — and the version every write
-- compares and bumps.

CREATE TABLE schedules (
    name     TEXT COLLATE "C" PRIMARY KEY,
    enabled  BOOLEAN NOT NULL,
    next_run BIGINT,
    version  BIGINT NOT NULL,
    doc      TEXT NOT NULL
);

CREATE INDEX schedules_due ON schedules (next_run) WHERE enabled;
