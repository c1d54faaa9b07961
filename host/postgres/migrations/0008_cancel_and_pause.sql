-- Cancel requests for running jobs (Cancellation::request_cancel): the
-- worker that runs a job polls for its id and stops it. Kept a day.

CREATE TABLE cancel_requests (
    id        TEXT COLLATE "C" PRIMARY KEY,
    lapses_at BIGINT NOT NULL
);

-- Paused queues (QueueControl::set_paused): workers skip them.
CREATE TABLE paused_queues (
    queue TEXT COLLATE "C" PRIMARY KEY
);
