-- Workflow runs move to a rowid table. In a WITHOUT ROWID table a row
-- lives in an index b-tree, where at most about 1,000 bytes of it stay on
-- its page: a run's document (1-2 KiB for a short workflow) spilled onto
-- overflow pages, and every write of a run — several per step — wrote
-- those pages too. A rowid table keeps up to about 4 KiB on the page.
-- Same columns, same indexes.

CREATE TABLE workflow_runs_next (
    id         TEXT NOT NULL PRIMARY KEY,
    workflow   TEXT NOT NULL,
    state      TEXT NOT NULL,
    wake_at    INTEGER,
    created_at INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    doc        TEXT NOT NULL
);

INSERT INTO workflow_runs_next (id, workflow, state, wake_at, created_at, version, doc)
SELECT id, workflow, state, wake_at, created_at, version, doc FROM workflow_runs;

DROP TABLE workflow_runs;
ALTER TABLE workflow_runs_next RENAME TO workflow_runs;

CREATE INDEX workflow_runs_due ON workflow_runs (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX workflow_runs_newest ON workflow_runs (created_at DESC, id DESC);
