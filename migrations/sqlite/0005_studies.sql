-- Studies: one estimation, a grid of plans, several seeds of stage 2 per plan, the vanilla
-- baselines and the random ablation, run as ordinary jobs that name their study. A job's
-- `settings` is a JSON patch over its experiment's hyper-parameters (a study's seed, a
-- baseline's targets), so every job still runs from one typed set of values.
CREATE TABLE studies (
    id                 INTEGER PRIMARY KEY,
    experiment_id      INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    estimation_job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    spec               TEXT NOT NULL,              -- JSON of the request, as accepted
    expanded           INTEGER NOT NULL DEFAULT 0, -- its stage-2 jobs are queued
    cancelled          INTEGER NOT NULL DEFAULT 0, -- no more of its jobs are queued
    error              TEXT,                       -- why it stopped expanding
    created_at         TEXT NOT NULL
);
CREATE INDEX studies_by_experiment ON studies(experiment_id);

ALTER TABLE jobs ADD COLUMN study_id INTEGER REFERENCES studies(id) ON DELETE CASCADE;
ALTER TABLE jobs ADD COLUMN settings TEXT;
CREATE INDEX jobs_by_study ON jobs(study_id);

INSERT INTO id_marks (name, last) VALUES ('studies', 0);
CREATE TRIGGER studies_id_mark AFTER INSERT ON studies BEGIN
    UPDATE id_marks SET last = MAX(last, NEW.id) WHERE name = 'studies';
END;
