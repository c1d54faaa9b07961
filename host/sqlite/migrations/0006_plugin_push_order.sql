-- The push order the plugin fallback rule uses (xylem_core's
-- fallback_route: the latest push that declares the task, never a clock).
-- Versions pushed before this column existed are numbered in their
-- pushed_at order, then by digest.

ALTER TABLE plugins ADD COLUMN push_seq INTEGER NOT NULL DEFAULT 0;
UPDATE plugins SET push_seq =
    (SELECT COUNT(*) FROM plugins p2
     WHERE p2.pushed_at < plugins.pushed_at
        OR (p2.pushed_at = plugins.pushed_at AND p2.digest <= plugins.digest));
