-- Wake-ups for the servers and workers sharing the database: a job inserted, or its status or
-- step changed, is announced on channel `lightpeft_jobs` with the job's id as payload
-- (PostgreSQL sends one notification per transaction and payload, so a batch of steps is one).
-- A notification is lost while a listener is disconnected; listeners re-read the store on
-- every wake-up, on reconnection and every second anyway, so a lost one only delays.
CREATE FUNCTION lightpeft_notify_job() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('lightpeft_jobs', NEW.id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OF status, step ON jobs
    FOR EACH ROW EXECUTE FUNCTION lightpeft_notify_job();
