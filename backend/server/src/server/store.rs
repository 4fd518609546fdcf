//! The store boundary: what the server keeps (experiments, jobs, per-step records, plans and
//! results) as one trait, so the rest of the server speaks in API types and never in SQL.
//! Every SQL statement lives in an implementation of [`Store`]: [`SqliteStore`] (one file, the
//! embedded default) and [`PostgresStore`] (a database several machines share). What both need
//! (row decoding, array encoding, the job state table, fault bookkeeping) lives here once.

mod postgres;
mod sql;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightpeft_api::rest::{
    Eval, Experiment, Job, JobKind, JobResult, JobStatus, MaskKind, Plan, Study, Worker,
};
use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::train::{EvalRecord, StepRecord};

pub use postgres::{IDLE_IN_TRANSACTION_TIMEOUT, PostgresStore};
pub use sqlite::SqliteStore;

/// Where the store lives, as `--database` or `$LIGHTPEFT_DATABASE_URL` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Database {
    /// One SQLite file: the embedded default. Never on a network share: its WAL does not
    /// work across hosts.
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Bytes the file may grow to (None: as far as the disk allows).
        max_bytes: Option<u64>,
    },
    /// A PostgreSQL database (`postgres://user:password@host:port/name`): the store for more
    /// than one machine.
    Postgres {
        /// The connection URL, password included.
        url: String,
    },
}

impl Database {
    /// A `postgres://` or `postgresql://` URL names PostgreSQL; `sqlite://PATH` or a plain
    /// path names a SQLite file.
    pub fn parse(text: &str) -> Database {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Database::Postgres {
                url: text.to_string(),
            }
        } else {
            let path = text.strip_prefix("sqlite://").unwrap_or(text);
            Database::Sqlite {
                path: PathBuf::from(path),
                max_bytes: None,
            }
        }
    }

    /// How messages name it: the file's path, or the URL without its password.
    pub fn location(&self) -> String {
        match self {
            Database::Sqlite { path, .. } => path.display().to_string(),
            Database::Postgres { url } => without_password(url),
        }
    }

    /// Opens the store, applying pending migrations; a database whose schema is newer than
    /// this binary knows is refused untouched.
    pub async fn open(&self) -> StoreResult<Arc<dyn Store>> {
        Ok(match self {
            Database::Sqlite { path, max_bytes } => {
                Arc::new(SqliteStore::open(path, *max_bytes).await?)
            }
            Database::Postgres { url } => Arc::new(PostgresStore::open(url).await?),
        })
    }
}

/// `url` with its password (in the user part or a `password=` parameter) replaced by `***`.
pub fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}?{query}")
        }
        None => tail.to_string(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

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
    /// The database could not be opened or reached.
    #[error("{location}: {source}")]
    Open {
        /// The file, or the URL without its password.
        location: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A migration failed, so the schema is not the one this server reads.
    #[error("{location}: migrations: {source}")]
    Migrate {
        /// The file, or the URL without its password.
        location: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// The attempt a write names is no longer the job's (its lease expired and the job was
    /// queued again, or it was stopped): the write is refused, and its worker abandons the job.
    #[error("job {job_id}: attempt {attempt} of worker {worker} no longer holds it")]
    LeaseLost {
        /// The job.
        job_id: i64,
        /// The worker that wrote.
        worker: String,
        /// The attempt it wrote for.
        attempt: i64,
    },
    /// The database was migrated by a newer lightpeft: this one would misread it.
    #[error(
        "{location}: the database's schema is at version {found}, newer than this lightpeft \
         knows ({known}); run the lightpeft that wrote it, or give another database"
    )]
    NewerSchema {
        /// The file, or the URL without its password.
        location: String,
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this binary has.
        known: i64,
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
        let Some(code) = db.code() else {
            return false;
        };
        if db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some()
        {
            // SQLSTATE disk_full, io_error.
            return matches!(code.as_ref(), "53100" | "58030");
        }
        // SQLite's primary result codes (the low byte of an extended one): SQLITE_IOERR 10,
        // SQLITE_FULL 13.
        let primary = code.parse::<i64>().ok().map(|c| c & 0xff);
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
/// queued → running ([`Store::claim`]) · queued → cancelled · running → succeeded, failed,
/// cancelled or interrupted (by the attempt that holds it, [`Store::settle`]; or by the reaper
/// and at start for a worker that is gone) · interrupted/cancelled/failed → queued
/// ([`Store::requeue`], or the reaper while attempts are left).
pub fn leaves_for(to: JobStatus) -> &'static [JobStatus] {
    use JobStatus::*;
    match to {
        Queued => &JobStatus::RESUMABLE,
        Running => &[Queued],
        Succeeded | Interrupted | Failed => &[Running],
        Cancelled => &[Queued],
    }
}

/// A worker's hold on one attempt of a job: every write of the attempt names it, so a worker
/// that lost the job (its lease expired and another attempt began) writes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: i64,
    /// The worker's name.
    pub worker: String,
    /// Which claim of the job (1 for the first).
    pub attempt: i64,
}

/// A job a worker has claimed.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The job, now running.
    pub job: Job,
    /// The hold every write of this attempt names.
    pub lease: Lease,
    /// Whether the attempt continues from the job's newest snapshot (else it starts over).
    pub resume: bool,
}

/// A worker as it registers: name, device, slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Unique among the workers of one database.
    pub name: String,
    /// Where it trains.
    pub device: String,
    /// Jobs it trains at once.
    pub slots: usize,
}

/// Every store method answers with this.
pub type StoreResult<T> = Result<T, StoreError>;

/// The `SET` clause's extra columns for a move to `status`, with `now` the store's SQL for the
/// current time as text and `epoch` as Unix seconds.
fn status_times(status: JobStatus, now: &str, epoch: &str) -> String {
    match status {
        JobStatus::Running => format!(", started_at = {now}, finished_at = NULL"),
        JobStatus::Queued => format!(
            ", finished_at = NULL, queued_at = {epoch}, cancel_requested = false, \
             lease_expires_at = NULL"
        ),
        _ => format!(", finished_at = {now}, lease_expires_at = NULL"),
    }
}

/// The `SET` clause's error column for a move to `status`, `param` the error's placeholder: a
/// job that starts or is queued again starts without the old error (the new one, if given),
/// a final status keeps the old one unless given another.
fn status_error(status: JobStatus, param: &str) -> String {
    match status {
        JobStatus::Running | JobStatus::Queued => format!("error = {param}"),
        _ => format!("error = COALESCE({param}, error)"),
    }
}

/// The refusal of a write by an attempt that no longer holds its job.
fn lease_lost(held: &Lease) -> StoreError {
    StoreError::LeaseLost {
        job_id: held.job_id,
        worker: held.worker.clone(),
        attempt: held.attempt,
    }
}

/// [`leaves_for`] as an SQL list of string literals (the names are this crate's constants).
fn leaves_sql(status: JobStatus) -> String {
    leaves_for(status)
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a database whose newest applied migration (`found`) is past the newest `migrator`
/// has: migrating it would fail, and reading it might misread columns.
fn refuse_newer_schema(
    location: &str,
    found: Option<i64>,
    migrator: &sqlx::migrate::Migrator,
) -> StoreResult<()> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match found {
        Some(found) if found > known => Err(StoreError::NewerSchema {
            location: location.to_string(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// What a store's writes have met, for [`Store::health`].
#[derive(Debug, Default)]
struct FaultLog {
    /// Since when writes fail for want of storage (None once one succeeds).
    failing_since: Option<Instant>,
    /// The latest fault.
    last: Option<(String, Instant)>,
}

impl FaultLog {
    /// Notes a write's outcome.
    fn note<T>(&mut self, outcome: &StoreResult<T>) {
        match outcome {
            Ok(_) => self.failing_since = None,
            Err(e) if e.is_storage_fault() => {
                let now = Instant::now();
                self.failing_since.get_or_insert(now);
                self.last = Some((e.to_string(), now));
            }
            Err(_) => {}
        }
    }

    /// The health report, with the outcome of a read made now.
    fn health(&self, read: Result<StoreResult<i64>, tokio::time::error::Elapsed>) -> StoreHealth {
        let read_error = match read {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("a read took over 2 s".to_string()),
        };
        StoreHealth {
            read_error,
            failing_since: self.failing_since,
            last_fault: self.last.clone(),
        }
    }
}

/// A row of `experiments`, as both stores read it.
#[derive(sqlx::FromRow)]
struct ExperimentRow {
    id: i64,
    name: String,
    task: String,
    model: String,
    preset: String,
    params: String,
    train_file: Option<String>,
    dev_file: Option<String>,
    created_at: String,
}

impl ExperimentRow {
    fn decode(self) -> StoreResult<Experiment> {
        Ok(Experiment {
            id: self.id,
            name: self.name,
            task: self.task,
            model: self.model,
            preset: serde_json::from_value(serde_json::Value::String(self.preset))
                .map_err(|e| StoreError::corrupt("experiment preset", e))?,
            params: serde_json::from_str(&self.params)
                .map_err(|e| StoreError::corrupt("experiment params", e))?,
            train_file: self.train_file,
            dev_file: self.dev_file,
            created_at: self.created_at,
        })
    }
}

/// The stored columns of a job; the derived fields follow the rules of [`Job::fill_derived`].
#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    experiment_id: i64,
    kind: String,
    plan_id: Option<i64>,
    source_job_id: Option<i64>,
    status: String,
    step: i64,
    total_steps: i64,
    loss: Option<f64>,
    best_score: Option<f64>,
    metric: Option<String>,
    step_seconds: Option<f64>,
    error: Option<String>,
    checkpoint_step: Option<i64>,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    worker: Option<String>,
    attempt: i64,
    study_id: Option<i64>,
    settings: Option<String>,
}

impl JobRow {
    fn decode(self) -> StoreResult<Job> {
        let mut job = Job {
            id: self.id,
            experiment_id: self.experiment_id,
            kind: serde_json::from_value(serde_json::Value::String(self.kind))
                .map_err(|e| StoreError::corrupt("job kind", e))?,
            plan_id: self.plan_id,
            source_job_id: self.source_job_id,
            status: self
                .status
                .parse()
                .map_err(|e| StoreError::corrupt("job status", e))?,
            step: self.step,
            total_steps: self.total_steps,
            loss: self.loss,
            best_score: self.best_score,
            metric: self.metric,
            step_seconds: self.step_seconds,
            eta_seconds: None,
            error: self.error,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            resumable: false,
            worker: self.worker,
            attempt: self.attempt,
            study_id: self.study_id,
            settings: match self.settings {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| StoreError::corrupt("job settings", e))?,
                None => Default::default(),
            },
        };
        job.fill_derived(self.checkpoint_step.is_some());
        Ok(job)
    }
}

/// A row of `workers` with its running jobs (a comma-separated list) and heartbeat age.
#[derive(sqlx::FromRow)]
struct WorkerRow {
    name: String,
    device: String,
    slots: i64,
    started_at: String,
    seconds_since_heartbeat: f64,
    running: Option<String>,
}

impl WorkerRow {
    fn decode(self) -> StoreResult<Worker> {
        let running = match self.running.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|id| id.trim().parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::corrupt("worker's jobs", e))?,
        };
        Ok(Worker {
            name: self.name,
            device: self.device,
            slots: self.slots,
            started_at: self.started_at,
            seconds_since_heartbeat: self.seconds_since_heartbeat.max(0.0),
            running,
        })
    }
}

/// Why the reaper stopped job attempt `attempt` of `worker`, and what it did.
fn reaped_why(worker: Option<&str>, attempt: i64, requeued: bool, max_attempts: i64) -> String {
    let worker = worker.unwrap_or("?");
    if requeued {
        format!(
            "worker {worker} stopped renewing its lease (attempt {attempt}); queued again to \
             continue from its snapshot"
        )
    } else {
        format!(
            "worker {worker} stopped renewing its lease (attempt {attempt} of at most \
             {max_attempts}); resume to try again"
        )
    }
}

/// A job a study queues, with the plan it fine-tunes (stage 2) or none (a baseline).
#[derive(Debug, Clone)]
pub struct StudyJob {
    /// Fine-tune or baseline.
    pub kind: JobKind,
    /// JSON of its `HyperparamsPatch` over the experiment's values.
    pub settings: String,
    /// The plan to store with it: (settings, preview, engine plan) JSON and the snapshot step.
    pub plan: Option<(String, String, String, i64)>,
}

/// A row of `studies`.
#[derive(sqlx::FromRow)]
struct StudyRow {
    id: i64,
    experiment_id: i64,
    estimation_job_id: i64,
    spec: String,
    expanded: bool,
    cancelled: bool,
    error: Option<String>,
    created_at: String,
}

impl StudyRow {
    fn decode(self) -> StoreResult<Study> {
        Ok(Study {
            id: self.id,
            experiment_id: self.experiment_id,
            estimation_job_id: self.estimation_job_id,
            spec: serde_json::from_str(&self.spec)
                .map_err(|e| StoreError::corrupt("study spec", e))?,
            expanded: self.expanded,
            cancelled: self.cancelled,
            error: self.error,
            created_at: self.created_at,
        })
    }
}

/// A row of `plans`.
#[derive(sqlx::FromRow)]
struct PlanRow {
    id: i64,
    estimation_job_id: i64,
    preview: String,
    plan: String,
    created_at: String,
}

impl PlanRow {
    /// The plan and the engine's JSON of it.
    fn decode(self) -> StoreResult<(Plan, String)> {
        let plan = Plan {
            id: self.id,
            estimation_job_id: self.estimation_job_id,
            preview: serde_json::from_str(&self.preview)
                .map_err(|e| StoreError::corrupt("plan preview", e))?,
            created_at: self.created_at,
        };
        Ok((plan, self.plan))
    }
}

/// An evaluation as stored: `(step, epoch, metrics JSON, loss, seconds)`.
type EvalRow = (i64, i64, String, f64, f64);

fn decode_eval((step, epoch, metrics, loss, seconds): EvalRow) -> StoreResult<Eval> {
    Ok(Eval {
        step,
        epoch,
        metrics: serde_json::from_str(&metrics)
            .map_err(|e| StoreError::corrupt("evaluation metrics", e))?,
        loss,
        seconds,
    })
}

fn decode_result(text: &str) -> StoreResult<JobResult> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt("result", e))
}

/// A step's mask snapshot rows: `(kind, layer, values)`.
fn mask_rows(r: &StepRecord) -> Vec<(&'static str, usize, &Vec<f32>)> {
    [
        (MaskKind::Head, &r.head_masks),
        (MaskKind::Neuron, &r.neuron_masks),
    ]
    .into_iter()
    .filter_map(|(kind, m)| m.as_ref().map(|m| (kind.as_str(), m)))
    .flat_map(|(kind, layers)| layers.iter().enumerate().map(move |(l, v)| (kind, l, v)))
    .collect()
}

/// A step's importance rows: module importance (one per module), rank importance (modules ×
/// r, row-major); none when the step recorded none.
fn importance_rows(r: &StepRecord) -> Vec<(&'static str, Vec<f64>)> {
    if r.module_importance.is_empty() {
        return Vec::new();
    }
    let modules: Vec<f64> = r.module_importance.iter().map(|(_, v)| *v).collect();
    let ranks: Vec<f64> = r
        .rank_importance
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    vec![("module", modules), ("rank", ranks)]
}

/// Little-endian f32 bytes.
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian f64 bytes.
fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// One job's records, written all-or-nothing: a batch that fails leaves none of its records
/// behind, so the job's records never have holes in the middle.
#[derive(Debug, Clone, Default)]
pub struct RecordBatch {
    /// The job the records belong to.
    pub job_id: i64,
    /// The attempt that took them: the batch is refused ([`StoreError::LeaseLost`]) once it
    /// no longer holds the job. None only for writers outside the job runner (benchmarks).
    pub held: Option<Lease>,
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

    /// Marks the jobs `worker` held when it stopped (it is starting again under the same
    /// name, so they are not running anywhere) as interrupted; returns their ids.
    async fn recover(&self, worker: &str) -> StoreResult<Vec<i64>>;

    /// Queues an interrupted, cancelled or failed job again, to continue from its snapshot
    /// (`from_snapshot`) or start over; refused ([`StoreError::Conflict`]) from any other
    /// state, so of concurrent requests exactly one queues it.
    async fn requeue(&self, id: i64, from_snapshot: bool) -> StoreResult<Job>;

    /// Claims the job queued longest for `worker`, with a lease of `lease` on the database's
    /// clock; None when nothing is queued. Of workers claiming at once, each gets another job.
    async fn claim(&self, worker: &str, lease: Duration) -> StoreResult<Option<Claim>>;

    /// Extends the lease by `lease` from now; answers whether a cancel was requested.
    /// [`StoreError::LeaseLost`] when the attempt no longer holds the job.
    async fn renew(&self, held: &Lease, lease: Duration) -> StoreResult<bool>;

    /// Ends the attempt with `status` (succeeded, failed, cancelled or interrupted), fenced
    /// like every write of the attempt.
    async fn settle(
        &self,
        held: &Lease,
        status: JobStatus,
        error: Option<&str>,
    ) -> StoreResult<Job>;

    /// Asks the worker running job `id` to stop it (it settles it `cancelled` after the
    /// current step); refused unless the job is running.
    async fn request_cancel(&self, id: i64) -> StoreResult<Job>;

    /// Jobs whose lease expired (their worker died, froze or lost the database): each is
    /// marked interrupted and, while it has had fewer than `max_attempts` attempts, queued
    /// again to continue from its snapshot. Returns the jobs with their new status.
    async fn reap(&self, max_attempts: i64) -> StoreResult<Vec<(i64, JobStatus)>>;

    /// Registers a worker that starts, or records its heartbeat (`starting`: false).
    async fn worker_heartbeat(&self, worker: &WorkerInfo, starting: bool) -> StoreResult<()>;

    /// Every worker that has registered, with the jobs it runs now.
    async fn workers(&self) -> StoreResult<Vec<Worker>>;

    /// Sets the planned length, the primary measure and (stage 1) the JSON list of the
    /// model's PEFT modules; fenced by the attempt.
    async fn set_job_plan_inputs(
        &self,
        held: &Lease,
        total_steps: usize,
        metric: &str,
        modules: Option<&str>,
    ) -> StoreResult<()>;

    /// The JSON list of module names of an estimation job.
    async fn job_modules(&self, id: i64) -> StoreResult<Option<String>>;

    /// The next step of the job's newest snapshot.
    async fn checkpoint_step(&self, id: i64) -> StoreResult<Option<i64>>;

    /// Deletes every record of `id` from `step` on (before resuming from a snapshot taken
    /// before them, so no step is recorded twice); fenced by `held` when an attempt does it.
    async fn truncate_records(&self, id: i64, step: i64, held: Option<&Lease>) -> StoreResult<()>;

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

    /// Stores a finished job's result, fenced by the attempt that trained it.
    async fn insert_result(&self, held: &Lease, result: &JobResult) -> StoreResult<()>;

    /// A job's result, if it has one.
    async fn result(&self, job_id: i64) -> StoreResult<Option<JobResult>>;

    /// Results of an experiment's finished jobs, oldest first.
    async fn results_of(&self, experiment_id: i64) -> StoreResult<Vec<JobResult>>;

    // ----- studies -----

    /// Stores a study of `estimation_job_id` (`spec` is its request's JSON).
    async fn insert_study(
        &self,
        experiment_id: i64,
        estimation_job_id: i64,
        spec: &str,
    ) -> StoreResult<Study>;

    /// One study.
    async fn study(&self, id: i64) -> StoreResult<Study>;

    /// Studies, newest first, optionally of one experiment.
    async fn studies(&self, experiment_id: Option<i64>) -> StoreResult<Vec<Study>>;

    /// Studies whose stage-2 jobs are due: not yet expanded, not cancelled, their estimation
    /// succeeded.
    async fn studies_due(&self) -> StoreResult<Vec<Study>>;

    /// Queues `jobs` for study `id` in one transaction, with the plans they fine-tune. With
    /// `expand`, also marks the study expanded, refused ([`StoreError::Conflict`]) when it
    /// already is or was cancelled, so of two servers expanding it at once only one queues.
    async fn queue_study_jobs(
        &self,
        id: i64,
        jobs: &[StudyJob],
        expand: bool,
    ) -> StoreResult<Vec<Job>>;

    /// Marks a study cancelled (its due jobs will not be queued), with the reason when it
    /// could not go on; its queued and running jobs are cancelled one by one by the caller.
    async fn cancel_study(&self, id: i64, error: Option<&str>) -> StoreResult<Study>;

    /// Clears a study's cancellation so that its due jobs are queued again; refused
    /// ([`StoreError::Conflict`]) for a study its plans stopped (`error`), which would stop
    /// the same way.
    async fn reopen_study(&self, id: i64) -> StoreResult<Study>;

    /// A study's jobs, oldest first.
    async fn jobs_of_study(&self, id: i64) -> StoreResult<Vec<Job>>;

    /// The plan settings (JSON of a `PlanSettings`) of each of a study's stage-2 jobs, by job id:
    /// all a report needs of their plans, without the plans' per-layer lists.
    async fn study_plan_settings(&self, id: i64) -> StoreResult<Vec<(i64, String)>>;

    /// Deletes a study with its jobs, their plans and records, in one transaction; refused
    /// ([`StoreError::Conflict`]) while a job of it, or an evaluation of one, is queued or
    /// running. Returns the deleted jobs' ids (their files are the caller's to remove).
    async fn delete_study(&self, id: i64) -> StoreResult<Vec<i64>>;

    // ----- changes -----

    /// A counter bumped whenever another process may have changed a job (inserted, moved,
    /// stepped), for waking up at once instead of at the next poll; None when the store
    /// announces nothing (SQLite). Bumps can be lost or merged: a wake-up means "re-read".
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>>;

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
    fn passwords_never_reach_a_message() {
        assert_eq!(
            without_password("postgres://lp:s3cret@db.example:5432/lightpeft"),
            "postgres://lp:***@db.example:5432/lightpeft"
        );
        assert_eq!(
            without_password("postgresql://lp@db/x?sslmode=require&password=s3cret"),
            "postgresql://lp@db/x?sslmode=require&password=***"
        );
        // An `@` inside the password: the host is after the last one.
        assert_eq!(
            without_password("postgres://lp:a@b:c@host/db"),
            "postgres://lp:***@host/db"
        );
        assert_eq!(without_password("postgres://host/db"), "postgres://host/db");
    }

    #[test]
    fn database_urls_pick_the_store() {
        assert!(matches!(
            Database::parse("postgresql://lp@host/db"),
            Database::Postgres { .. }
        ));
        assert_eq!(
            Database::parse("sqlite:///tmp/x.sqlite"),
            Database::Sqlite {
                path: PathBuf::from("/tmp/x.sqlite"),
                max_bytes: None
            }
        );
        assert_eq!(Database::parse("x.sqlite").location(), "x.sqlite");
    }

    #[test]
    fn not_found_names_what_and_which() {
        let e = StoreError::NotFound { what: "job", id: 7 };
        assert_eq!(e.to_string(), "no job 7");
    }
}
