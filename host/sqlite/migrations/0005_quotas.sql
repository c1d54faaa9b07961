-- Counters with a ceiling and an expiry (QuotaStore): a job tree's
-- descendants against its child quota.

CREATE TABLE quotas (
    key        TEXT PRIMARY KEY,
    used       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
