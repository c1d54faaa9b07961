-- Workflow runs (WorkflowStore): each run whole as JSON, with what the
-- engines query — the wake time, the state and workflow for listings, the
-- start for their order — and the version every write compares and bumps.

CREATE TABLE workflow_runs (
    id         TEXT PRIMARY KEY,
    workflow   TEXT NOT NULL,
    state      TEXT NOT NULL,
    wake_at    INTEGER,
    created_at INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    doc        TEXT NOT NULL
) WITHOUT ROWID;

CREATE INDEX workflow_runs_due ON workflow_runs (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX workflow_runs_newest ON workflow_runs (created_at DESC, id DESC);
