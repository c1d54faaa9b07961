-- Claims use prepared statements with generic plans. With the index of
-- 0004 on (priority DESC, run_at, id), a generic plan for a claim from
-- named queues could pick it over queue_ready_by_queue and filter on the
-- queue name while reading every ready job of every other queue. Keyed
-- on -priority instead, this index serves only the claims from every
-- queue (which order by -priority), and queue_ready_by_queue only the
-- claims from named queues (which order by priority DESC within one
-- queue): each claim has exactly one index that gives its order.
DROP INDEX IF EXISTS queue_ready_all;
CREATE INDEX IF NOT EXISTS queue_ready_any ON queue ((-priority), run_at, id) WHERE status = 0;
