-- lightpeft's store. Arrays (masks, importances) are little-endian f32/f64 BLOBs, one per
-- (job, step, kind, layer); scalars are one row per step. Times are RFC 3339 UTC text.

CREATE TABLE experiments (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    task        TEXT NOT NULL,
    model       TEXT NOT NULL,
    preset      TEXT NOT NULL,
    params      TEXT NOT NULL,          -- JSON of every hyper-parameter; never updated
    train_file  TEXT,
    dev_file    TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    experiment_id  INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('estimation', 'finetune', 'baseline', 'evaluation')),
    plan_id        INTEGER REFERENCES plans(id) ON DELETE CASCADE,
    source_job_id  INTEGER REFERENCES jobs(id) ON DELETE CASCADE,  -- the model an evaluation scores
    status         TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    step           INTEGER NOT NULL DEFAULT 0,
    total_steps    INTEGER NOT NULL DEFAULT 0,
    loss           REAL,
    best_score     REAL,
    metric         TEXT,
    step_seconds   REAL,
    error          TEXT,
    modules        TEXT,                -- JSON list of PEFT module names (stage 1)
    shape          TEXT,                -- JSON of the unpruned model's shape (stage 1, for the planner)
    checkpoint_step INTEGER,            -- next step of the newest resumable snapshot
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT
);
CREATE INDEX jobs_by_experiment ON jobs(experiment_id);

CREATE TABLE job_status_log (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    status  TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX status_log_by_job ON job_status_log(job_id);

CREATE TABLE step_scalars (
    job_id     INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step       INTEGER NOT NULL,
    epoch      INTEGER NOT NULL,
    loss       REAL NOT NULL,
    ce_loss    REAL NOT NULL,
    l1_loss    REAL NOT NULL,
    lr         REAL NOT NULL,
    grad_norm  REAL NOT NULL,
    seconds    REAL NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;

CREATE TABLE evals (
    job_id   INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step     INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    metrics  TEXT NOT NULL,             -- JSON [[name, value], ...]
    loss     REAL NOT NULL,
    seconds  REAL NOT NULL,
    PRIMARY KEY (job_id, step)
) WITHOUT ROWID;

-- Full mask snapshots, thinned by the retention policy.
CREATE TABLE mask_snapshots (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('head', 'neuron')),
    layer   INTEGER NOT NULL,
    vals    BLOB NOT NULL,              -- f32 LE
    PRIMARY KEY (job_id, step, kind, layer)
) WITHOUT ROWID;

-- Per-layer quantiles of every step's masks (never thinned).
CREATE TABLE mask_summaries (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    layer   INTEGER NOT NULL,
    q0 REAL NOT NULL, q25 REAL NOT NULL, q50 REAL NOT NULL, q75 REAL NOT NULL, q100 REAL NOT NULL,
    mean REAL NOT NULL,
    PRIMARY KEY (job_id, step, kind, layer)
) WITHOUT ROWID;

-- Module importance (one value per module) and rank importance (modules × r) per step.
CREATE TABLE importances (
    job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step    INTEGER NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('module', 'rank')),
    vals    BLOB NOT NULL,              -- f64 LE, row-major
    PRIMARY KEY (job_id, step, kind)
) WITHOUT ROWID;

CREATE TABLE plans (
    id                 INTEGER PRIMARY KEY,
    estimation_job_id  INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    settings           TEXT NOT NULL,   -- JSON PlanSettings (merged)
    preview            TEXT NOT NULL,   -- JSON PlanPreview
    plan               TEXT NOT NULL,   -- JSON of the engine's PruningPlan
    snapshot_step      INTEGER NOT NULL,
    created_at         TEXT NOT NULL
);

CREATE TABLE results (
    job_id  INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    result  TEXT NOT NULL               -- JSON JobResult
);
