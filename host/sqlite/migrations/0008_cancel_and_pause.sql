-- Cancel requests for running jobs (Cancellation::request_cancel): the
-- worker that runs a job polls for its id and stops it. Kept a day.

CREATE TABLE cancel_requests (
    id         TEXT PRIMARY KEY,
    lapses_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Paused queues (QueueControl::set_paused): workers skip them.
CREATE TABLE paused_queues (
    queue TEXT PRIMARY KEY
) WITHOUT ROWID;

-- Rate limiters (RateLimits::reserve_slot): the next free start slot of
-- each, forgotten a while after it.
CREATE TABLE rate_slots (
    key       TEXT PRIMARY KEY,
    next_at   INTEGER NOT NULL,
    forget_at INTEGER NOT NULL
) WITHOUT ROWID;
