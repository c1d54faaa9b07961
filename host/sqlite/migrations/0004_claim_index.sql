-- Claims from all queues walk the ready jobs in claim order here and stop
-- at their limit (queue_ready is ordered by queue first, so it would need
-- a scan and a sort of every ready job). Partial: a leased job leaves it.

CREATE INDEX queue_due ON queue (priority DESC, run_at, id) WHERE status = 0;
