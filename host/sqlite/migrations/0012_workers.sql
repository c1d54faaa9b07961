-- Workers' records (WorkerRegistry): each worker's latest beat as JSON,
-- replaced every few seconds, dropped once `drop_at` passes.

CREATE TABLE workers (
    id      TEXT PRIMARY KEY,
    drop_at INTEGER NOT NULL,
    doc     TEXT NOT NULL
) WITHOUT ROWID;
