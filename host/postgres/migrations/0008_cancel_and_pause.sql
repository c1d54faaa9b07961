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

-- Rate limiters (RateLimits::reserve_slot): the next free start slot of
-- each, forgotten a while after it.
CREATE TABLE rate_slots (
    key       TEXT COLLATE "C" PRIMARY KEY,
    next_at   BIGINT NOT NULL,
    forget_at BIGINT NOT NULL
);
