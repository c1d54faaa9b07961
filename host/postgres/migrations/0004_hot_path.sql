-- Indexes for the hot path (Broker::claim / reserve): one partial index
-- per way a claim looks for jobs, so a claim reads the next few jobs in
-- claim order (priority DESC, run_at, id) instead of sorting every ready
-- job, and inserts only pay for the indexes that concern ready jobs.

-- Claims from every queue.
CREATE INDEX IF NOT EXISTS queue_ready_all ON queue (priority DESC, run_at, id) WHERE status = 0;
-- Claims from named queues (one index range per queue).
CREATE INDEX IF NOT EXISTS queue_ready_by_queue ON queue (queue, priority DESC, run_at, id)
    WHERE status = 0;
-- Leases that ran out (reclaimed by claims).
CREATE INDEX IF NOT EXISTS queue_leased ON queue (lease_until) WHERE status = 1;
-- Dead-letter listings, newest first.
CREATE INDEX IF NOT EXISTS queue_dead ON queue (dead_at) WHERE status = 2;

-- Superseded by the partial indexes above.
DROP INDEX IF EXISTS queue_ready;
DROP INDEX IF EXISTS queue_leases;

-- Every job's queue row is inserted, updated and deleted within seconds,
-- and claims read the ready index from its head, where the dead entries
-- of claimed jobs pile up until a vacuum: vacuum this small, hot table
-- after a fixed number of changes rather than a fraction of its size.
ALTER TABLE queue SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 5000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);
