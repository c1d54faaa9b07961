-- Records may expire (ResultBackend::expire): after expires_at (ms since
-- the epoch) they are invisible and reclaimed.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS expires_at BIGINT;
CREATE INDEX IF NOT EXISTS tasks_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL;
