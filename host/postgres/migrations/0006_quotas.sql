-- Quota counters shared by every worker (QuotaStore): how many
-- descendants one root job has enqueued, say.

CREATE TABLE quotas (
    key        TEXT COLLATE "C" PRIMARY KEY,
    used       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
