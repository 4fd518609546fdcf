-- The database is the job queue: a queued job is claimed by one worker with a lease (worker
-- name, attempt, expiry on the database's clock) that the worker renews while it trains.
-- Every write the worker makes names its attempt, so one that lost its lease writes nothing
-- into the next attempt. Times of the queue are Unix seconds, which compare as numbers.
ALTER TABLE jobs ADD COLUMN queued_at DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN resume_from_snapshot BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE jobs ADD COLUMN worker TEXT;
ALTER TABLE jobs ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_expires_at DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT false;
UPDATE jobs SET queued_at = extract(epoch FROM clock_timestamp()) WHERE status = 'queued';
CREATE INDEX jobs_queue ON jobs(status, queued_at, id);

CREATE TABLE workers (
    name          TEXT PRIMARY KEY,
    device        TEXT NOT NULL,
    slots         BIGINT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  DOUBLE PRECISION NOT NULL
);
