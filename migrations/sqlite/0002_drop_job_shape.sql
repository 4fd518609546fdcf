-- `jobs.shape` (the unpruned model's shape, JSON) was written by every estimation and never
-- read: the planner takes the shape from the job's `estimation.json`.
ALTER TABLE jobs DROP COLUMN shape;
