//! The store boundary: what the server keeps (experiments, jobs, per-step records, plans and
//! results) as one trait, so the rest of the server speaks in API types and never in SQL.
//! Every SQL statement lives in an implementation of [`Store`]; today that is
//! [`SqliteStore`], and a PostgreSQL one can stand beside it without the routes, the runner
//! or the recorder changing.

mod sqlite;

use std::path::PathBuf;

use lightpeft_api::rest::{Eval, Experiment, Job, JobKind, JobResult, JobStatus, MaskKind, Plan};
use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::train::{EvalRecord, StepRecord};

pub use sqlite::SqliteStore;

/// What can go wrong in the store. Whether a failure is the client's (404) or the server's
/// (500) is decided at the HTTP edge (`impl From<StoreError> for ApiFailure`), not here.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("no {what} {id}")]
    NotFound {
        /// What was looked up: `experiment`, `job`, `plan`.
        what: &'static str,
        /// Its id.
        id: i64,
    },
    /// The row is not in a state that allows the change (a job already resumed, a job still
    /// running): the client's 409, with the row's current state in the words.
    #[error("{0}")]
    Conflict(String),
    /// The database refused or failed a statement.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value no longer reads as its type (a hand-edited row, a newer server's data).
    #[error("stored {what} is unreadable: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// The database file could not be opened.
    #[error("{}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed, so the schema is not the one this server reads.
    #[error("{}: migrations: {source}", .path.display())]
    Migrate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
}

impl StoreError {
    /// Whether the database could not write to its storage (a full disk, a full store, an
    /// I/O error): the server's fault, not the request's, and one that passes once space
    /// returns, so the store stays usable and the caller may try again.
    pub fn is_storage_fault(&self) -> bool {
        let StoreError::Db(sqlx::Error::Database(db)) = self else {
            return false;
        };
        // SQLite's primary result codes (the low byte of an extended one): SQLITE_IOERR 10,
        // SQLITE_FULL 13.
        let primary = db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .map(|c| c & 0xff);
        matches!(primary, Some(10 | 13))
    }

    /// A stored value that does not decode.
    pub fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// A job's life as one table: the states a job may be in for it to move to `to`. Every status
/// change is one conditional update naming these, so of two concurrent requests for the same
/// change exactly one succeeds; the other gets [`StoreError::Conflict`].
///
/// queued → running (claimed by a runner) · queued/running → cancelled or failed ·
/// running → succeeded or interrupted (shutdown) · interrupted/cancelled/failed → queued
/// (resumed).
pub fn leaves_for(to: JobStatus) -> &'static [JobStatus] {
    use JobStatus::*;
    match to {
        Queued => &[Interrupted, Cancelled, Failed],
        Running => &[Queued],
        Succeeded | Interrupted => &[Running],
        Failed | Cancelled => &[Queued, Running],
    }
}

/// Every store method answers with this.
pub type StoreResult<T> = Result<T, StoreError>;

/// One job's records, written all-or-nothing: a batch that fails leaves none of its records
/// behind, so the job's records never have holes in the middle.
#[derive(Debug, Clone, Default)]
pub struct RecordBatch {
    /// The job the records belong to.
    pub job_id: i64,
    /// In the order they were taken.
    pub records: Vec<JobRecord>,
    /// Full mask snapshots (steps) the retention policy thinned out; deleted after the
    /// records are written, so a step written and thinned in the same batch goes too.
    pub drop_snapshots: Vec<i64>,
}

/// One record of a job.
#[derive(Debug, Clone)]
pub enum JobRecord {
    /// A training step; its masks, when present, are stored as a full snapshot.
    Step(Box<StepRecord>),
    /// An evaluation.
    Eval(EvalRecord),
    /// A resumable snapshot was saved; a resumed run starts at `next_step`. Written in the
    /// same batch as the steps before it, so the store never points at a snapshot whose
    /// preceding steps are missing.
    Checkpoint {
        /// The step a resumed run takes first.
        next_step: usize,
    },
}

/// The server's persistence.
///
/// The methods are async and the server holds the store as `Arc<dyn Store>`. Rust's native
/// `async fn` in traits is not object safe (each implementation's future is a different,
/// unnamed type), so `async_trait` boxes the futures; one allocation per call is nothing next
/// to a database round trip, and the boxed-future signatures it writes would otherwise be
/// spelled out by hand on every method.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    // ----- experiments -----

    /// Inserts an experiment.
    async fn insert_experiment(
        &self,
        name: &str,
        task: &str,
        model: &str,
        preset: Preset,
        params: &Hyperparams,
        files: (Option<&str>, Option<&str>),
    ) -> StoreResult<Experiment>;

    /// One experiment.
    async fn experiment(&self, id: i64) -> StoreResult<Experiment>;

    /// Every experiment, newest first.
    async fn experiments(&self) -> StoreResult<Vec<Experiment>>;

    /// Deletes an experiment and everything of its jobs; refused ([`StoreError::Conflict`])
    /// while any of its jobs is queued or running, so no cascade removes a live job's row.
    async fn delete_experiment(&self, id: i64) -> StoreResult<()>;

    // ----- jobs -----

    /// Inserts a queued job.
    async fn insert_job(
        &self,
        experiment_id: i64,
        kind: JobKind,
        plan_id: Option<i64>,
        source_job_id: Option<i64>,
    ) -> StoreResult<Job>;

    /// One job.
    async fn job(&self, id: i64) -> StoreResult<Job>;

    /// Jobs, newest first, optionally of one experiment and/or status.
    async fn jobs(
        &self,
        experiment_id: Option<i64>,
        status: Option<JobStatus>,
    ) -> StoreResult<Vec<Job>>;

    /// Moves a job to `status`, logging the change; sets start/finish times and error text.
    ///
    /// Refused with [`StoreError::Conflict`] unless the job is in one of
    /// [`leaves_for`]`(status)`.
    async fn set_status(&self, id: i64, status: JobStatus, error: Option<&str>)
    -> StoreResult<Job>;

    /// Marks jobs that were running when the server stopped as interrupted; returns their
    /// ids and the ids of jobs still queued, to queue again.
    async fn recover(&self) -> StoreResult<(Vec<i64>, Vec<i64>)>;

    /// Sets the planned length, the primary measure and (stage 1) the JSON list of the
    /// model's PEFT modules.
    async fn set_job_plan_inputs(
        &self,
        id: i64,
        total_steps: usize,
        metric: &str,
        modules: Option<&str>,
    ) -> StoreResult<()>;

    /// The JSON list of module names of an estimation job.
    async fn job_modules(&self, id: i64) -> StoreResult<Option<String>>;

    /// The next step of the job's newest snapshot.
    async fn checkpoint_step(&self, id: i64) -> StoreResult<Option<i64>>;

    /// Deletes every record of `id` from `step` on (before resuming from a snapshot taken
    /// before them, so no step is recorded twice).
    async fn truncate_records(&self, id: i64, step: i64) -> StoreResult<()>;

    /// Deletes a finished job and its records; refused ([`StoreError::Conflict`]) while it,
    /// or a job that depends on it (a fine-tune of its plans, an evaluation of its model), is
    /// queued or running.
    async fn delete_job(&self, id: i64) -> StoreResult<()>;

    // ----- records -----

    /// Writes one batch of a job's records in one transaction.
    async fn write_batch(&self, batch: &RecordBatch) -> StoreResult<()>;

    /// Steps with a full mask snapshot of any kind (the recorder's retention starts from
    /// them when it first meets a job).
    async fn mask_snapshot_steps(&self, id: i64) -> StoreResult<Vec<i64>>;

    /// Snapshot steps that committed plans were made from; retention never thins them.
    async fn pinned_snapshot_steps(&self, id: i64) -> StoreResult<Vec<i64>>;

    /// Per-step scalars in `[from, to]`.
    async fn scalars(&self, id: i64, from: i64, to: i64) -> StoreResult<Vec<ScalarRow>>;

    /// Every evaluation of a job.
    async fn evals(&self, id: i64) -> StoreResult<Vec<Eval>>;

    /// Steps with a full snapshot of `kind`.
    async fn snapshot_steps(&self, id: i64, kind: MaskKind) -> StoreResult<Vec<i64>>;

    /// The per-layer values of one snapshot.
    async fn snapshot(&self, id: i64, kind: MaskKind, step: i64) -> StoreResult<Vec<Vec<f32>>>;

    /// Per-layer summaries (see [`summarize`]) in step order: `(step, layer, summary)`.
    async fn mask_summaries(
        &self,
        id: i64,
        kind: MaskKind,
    ) -> StoreResult<Vec<(i64, i64, [f64; 6])>>;

    /// Importances of `kind` (`module` or `rank`) per step, in step order.
    async fn importances(&self, id: i64, kind: &str) -> StoreResult<Vec<(i64, Vec<f64>)>>;

    // ----- plans and results -----

    /// Stores a committed plan; returns its id.
    async fn insert_plan(
        &self,
        estimation_job_id: i64,
        settings: &str,
        preview: &str,
        plan: &str,
        snapshot_step: i64,
    ) -> StoreResult<i64>;

    /// A plan and the engine's JSON of it.
    async fn plan(&self, id: i64) -> StoreResult<(Plan, String)>;

    /// Plans made from an estimation job.
    async fn plans_of(&self, job_id: i64) -> StoreResult<Vec<Plan>>;

    /// Stores a finished job's result.
    async fn insert_result(&self, result: &JobResult) -> StoreResult<()>;

    /// A job's result, if it has one.
    async fn result(&self, job_id: i64) -> StoreResult<Option<JobResult>>;

    /// Results of an experiment's finished jobs, oldest first.
    async fn results_of(&self, experiment_id: i64) -> StoreResult<Vec<JobResult>>;

    // ----- health -----

    /// Whether the store answers a read now, whether writes are failing for want of storage,
    /// and the latest such failure.
    async fn health(&self) -> StoreHealth;
}

/// The store's state as `GET /health` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreHealth {
    /// A read failed now: the message.
    pub read_error: Option<String>,
    /// Writes have failed for want of storage since then, none succeeding since.
    pub failing_since: Option<std::time::Instant>,
    /// The latest write that failed for want of storage, even if later ones succeeded: the
    /// message and when.
    pub last_fault: Option<(String, std::time::Instant)>,
}

/// One row of `step_scalars`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScalarRow {
    /// Step.
    pub step: i64,
    /// Total loss.
    pub loss: f64,
    /// CE part.
    pub ce_loss: f64,
    /// L1 part.
    pub l1_loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Gradient norm.
    pub grad_norm: f64,
    /// Wall seconds.
    pub seconds: f64,
}

/// Minimum, quartiles, maximum and mean: the per-layer summary kept for every step, while
/// full snapshots are thinned.
pub fn summarize(values: &[f32]) -> [f64; 6] {
    if values.is_empty() {
        return [0.0; 6];
    }
    let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    };
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    [at(0.0), at(0.25), at(0.5), at(0.75), at(1.0), mean]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_quantiles() {
        let s = summarize(&[4.0, 0.0, 2.0, 1.0, 3.0]);
        assert_eq!(s, [0.0, 1.0, 2.0, 3.0, 4.0, 2.0]);
    }

    #[test]
    fn not_found_names_what_and_which() {
        let e = StoreError::NotFound { what: "job", id: 7 };
        assert_eq!(e.to_string(), "no job 7");
    }
}
