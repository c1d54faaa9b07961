-- Records may expire (ResultBackend::expire): after expires_at (ms since
-- the epoch) they are invisible and reclaimed. NULL: kept.

ALTER TABLE tasks ADD COLUMN expires_at INTEGER;
CREATE INDEX tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
