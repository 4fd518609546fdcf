-- SQLite gives a new row the largest id + 1, so deleting the newest experiment, job or plan
-- handed its id to the next one, and anything keyed by the old id (caches, files, a client's
-- links) pointed at the new row. Each table's highest id ever issued is kept here; inserts take
-- the next one, and the triggers keep the mark even for rows inserted with an explicit id.
CREATE TABLE id_marks (
    name  TEXT PRIMARY KEY,
    last  INTEGER NOT NULL
);
INSERT INTO id_marks (name, last) SELECT 'experiments', COALESCE(MAX(id), 0) FROM experiments;
INSERT INTO id_marks (name, last) SELECT 'jobs', COALESCE(MAX(id), 0) FROM jobs;
INSERT INTO id_marks (name, last) SELECT 'plans', COALESCE(MAX(id), 0) FROM plans;

CREATE TRIGGER experiments_id_mark AFTER INSERT ON experiments BEGIN
    UPDATE id_marks SET last = MAX(last, NEW.id) WHERE name = 'experiments';
END;
CREATE TRIGGER jobs_id_mark AFTER INSERT ON jobs BEGIN
    UPDATE id_marks SET last = MAX(last, NEW.id) WHERE name = 'jobs';
END;
CREATE TRIGGER plans_id_mark AFTER INSERT ON plans BEGIN
    UPDATE id_marks SET last = MAX(last, NEW.id) WHERE name = 'plans';
END;
