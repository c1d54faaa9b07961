-- Workers' records (WorkerRegistry): each worker's latest beat as JSON,
-- replaced every few seconds, dropped once `drop_at` passes.

CREATE TABLE workers (
    id      TEXT COLLATE "C" PRIMARY KEY,
    drop_at BIGINT NOT NULL,
    doc     TEXT NOT NULL
);
