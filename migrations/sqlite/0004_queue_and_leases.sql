-- The database is the job queue: a queued job is claimed by one worker with a lease (worker
-- name, attempt, expiry on the database's clock) that the worker renews while it trains.
-- Every write the worker makes names its attempt, so one that lost its lease writes nothing
-- into the next attempt. Times of the queue are Unix seconds (REAL), which compare as numbers.
ALTER TABLE jobs ADD COLUMN queued_at REAL;                         -- queue order
ALTER TABLE jobs ADD COLUMN resume_from_snapshot INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN worker TEXT;                            -- holds it (or last held it)
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;     -- claims so far
ALTER TABLE jobs ADD COLUMN lease_expires_at REAL;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET queued_at = (julianday('now') - 2440587.5) * 86400.0 WHERE status = 'queued';
CREATE INDEX jobs_queue ON jobs(status, queued_at, id);

CREATE TABLE workers (
    name          TEXT PRIMARY KEY,
    device        TEXT NOT NULL,
    slots         INTEGER NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  REAL NOT NULL         -- Unix seconds
);
