//! The SQLite store: experiments, jobs, per-step records, plans and results. Every query is
//! here, so the rest of the server speaks in API types.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use lightpeft_api::rest::{Eval, Experiment, Job, JobKind, JobResult, JobStatus, MaskKind, Plan};
use lightpeft_api::{Hyperparams, Preset};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use sqlx::{Row, SqlitePool as Pool};

use super::http_error::ApiFailure;

/// Migrations from the workspace's `migrations/`, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Store errors are server faults (500) unless a caller maps them.
pub type StoreResult<T> = Result<T, ApiFailure>;

/// The shared handle.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// Now, in the format every timestamp uses.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// SQL built only from this file's constants (table names, the time expression), never from
/// request data, which always goes through binds.
fn audited(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

fn db(e: sqlx::Error) -> ApiFailure {
    ApiFailure::internal(format!("database: {e}"))
}

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Store, String> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| format!("{}: migrations: {e}", path.display()))?;
        Ok(Store { pool })
    }

    /// The pool, for the recorder's transactions.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    // ----- experiments -----

    /// Inserts an experiment.
    pub async fn insert_experiment(
        &self,
        name: &str,
        task: &str,
        model: &str,
        preset: Preset,
        params: &Hyperparams,
        files: (Option<&str>, Option<&str>),
    ) -> StoreResult<Experiment> {
        let params_json = serde_json::to_string(params).expect("plain data");
        let id: i64 = sqlx::query_scalar(audited(format!(
            "INSERT INTO experiments (name, task, model, preset, params, train_file, dev_file, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, {NOW}) RETURNING id"
        )))
        .bind(name)
        .bind(task)
        .bind(model)
        .bind(preset.as_str())
        .bind(params_json)
        .bind(files.0)
        .bind(files.1)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        self.experiment(id).await
    }

    /// One experiment, or 404.
    pub async fn experiment(&self, id: i64) -> StoreResult<Experiment> {
        let row = sqlx::query("SELECT * FROM experiments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| ApiFailure::not_found(format!("no experiment {id}")))?;
        experiment_from_row(&row)
    }

    /// Every experiment, newest first.
    pub async fn experiments(&self) -> StoreResult<Vec<Experiment>> {
        let rows = sqlx::query("SELECT * FROM experiments ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(experiment_from_row).collect()
    }

    /// Deletes an experiment and everything of its jobs.
    pub async fn delete_experiment(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM experiments WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    // ----- jobs -----

    /// Inserts a queued job.
    pub async fn insert_job(
        &self,
        experiment_id: i64,
        kind: JobKind,
        plan_id: Option<i64>,
        source_job_id: Option<i64>,
    ) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let id: i64 = sqlx::query_scalar(audited(format!(
            "INSERT INTO jobs (experiment_id, kind, plan_id, source_job_id, status, created_at)
             VALUES (?, ?, ?, ?, 'queued', {NOW}) RETURNING id"
        )))
        .bind(experiment_id)
        .bind(kind.as_str())
        .bind(plan_id)
        .bind(source_job_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(audited(format!(
            "INSERT INTO job_status_log (job_id, status, at) VALUES (?, 'queued', {NOW})"
        )))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.job(id).await
    }

    /// One job, or 404.
    pub async fn job(&self, id: i64) -> StoreResult<Job> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| ApiFailure::not_found(format!("no job {id}")))?;
        job_from_row(&row)
    }

    /// Jobs, newest first, optionally of one experiment and/or status.
    pub async fn jobs(
        &self,
        experiment_id: Option<i64>,
        status: Option<JobStatus>,
    ) -> StoreResult<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE (?1 IS NULL OR experiment_id = ?1)
             AND (?2 IS NULL OR status = ?2) ORDER BY id DESC",
        )
        .bind(experiment_id)
        .bind(status.map(JobStatus::as_str))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(job_from_row).collect()
    }

    /// Moves a job to `status`, logging the change; sets start/finish times and error text.
    pub async fn set_status(
        &self,
        id: i64,
        status: JobStatus,
        error: Option<&str>,
    ) -> StoreResult<Job> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let times = match status {
            JobStatus::Running => format!(", started_at = {NOW}, finished_at = NULL, error = NULL"),
            JobStatus::Queued => ", finished_at = NULL, error = NULL".to_string(),
            _ => format!(", finished_at = {NOW}"),
        };
        sqlx::query(audited(format!(
            "UPDATE jobs SET status = ?, error = COALESCE(?, error) {times} WHERE id = ?"
        )))
        .bind(status.as_str())
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(audited(format!(
            "INSERT INTO job_status_log (job_id, status, at) VALUES (?, ?, {NOW})"
        )))
        .bind(id)
        .bind(status.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.job(id).await
    }

    /// Marks jobs that were running when the server stopped as interrupted; returns the ids of
    /// jobs still queued, to queue again.
    pub async fn recover(&self) -> StoreResult<(Vec<i64>, Vec<i64>)> {
        let running: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running'")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        for id in &running {
            self.set_status(
                *id,
                JobStatus::Interrupted,
                Some("the server stopped while it ran"),
            )
            .await?;
        }
        let queued = sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok((running, queued))
    }

    /// Sets the planned length, the model's PEFT modules and shape (stage 1).
    pub async fn set_job_plan_inputs(
        &self,
        id: i64,
        total_steps: usize,
        metric: &str,
        modules: Option<&str>,
        shape: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET total_steps = ?, metric = ?, modules = COALESCE(?, modules),
             shape = COALESCE(?, shape) WHERE id = ?",
        )
        .bind(total_steps as i64)
        .bind(metric)
        .bind(modules)
        .bind(shape)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// The JSON list of module names and the JSON shape of an estimation job.
    pub async fn job_modules_and_shape(
        &self,
        id: i64,
    ) -> StoreResult<(Option<String>, Option<String>)> {
        let row = sqlx::query("SELECT modules, shape FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok((row.get("modules"), row.get("shape")))
    }

    /// The next step of the job's newest snapshot.
    pub async fn checkpoint_step(&self, id: i64) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT checkpoint_step FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    /// Deletes every record of `id` from `step` on (before resuming from a snapshot taken
    /// before them, so no step is recorded twice).
    pub async fn truncate_records(&self, id: i64, step: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for table in [
            "step_scalars",
            "mask_snapshots",
            "mask_summaries",
            "importances",
        ] {
            sqlx::query(audited(format!(
                "DELETE FROM {table} WHERE job_id = ? AND step >= ?"
            )))
            .bind(id)
            .bind(step)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        // An evaluation at step s follows step s-1.
        sqlx::query("DELETE FROM evals WHERE job_id = ? AND step > ?")
            .bind(id)
            .bind(step)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let last: Option<(i64, f64)> = sqlx::query_as(
            "SELECT step, loss FROM step_scalars WHERE job_id = ? ORDER BY step DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("UPDATE jobs SET step = ?, loss = ? WHERE id = ?")
            .bind(last.map_or(0, |(s, _)| s + 1))
            .bind(last.map(|(_, l)| l))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// Deletes a job and its records.
    pub async fn delete_job(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    // ----- records -----

    /// Per-step scalars in `[from, to]`.
    pub async fn scalars(&self, id: i64, from: i64, to: i64) -> StoreResult<Vec<ScalarRow>> {
        sqlx::query_as(
            "SELECT step, loss, ce_loss, l1_loss, lr, grad_norm, seconds FROM step_scalars
             WHERE job_id = ? AND step BETWEEN ? AND ? ORDER BY step",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// Every evaluation of a job.
    pub async fn evals(&self, id: i64) -> StoreResult<Vec<Eval>> {
        let rows: Vec<(i64, i64, String, f64, f64)> = sqlx::query_as(
            "SELECT step, epoch, metrics, loss, seconds FROM evals WHERE job_id = ? ORDER BY step",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(step, epoch, metrics, loss, seconds)| Eval {
                step,
                epoch,
                metrics: serde_json::from_str(&metrics).unwrap_or_default(),
                loss,
                seconds,
            })
            .collect())
    }

    /// Steps with a full snapshot of `kind`.
    pub async fn snapshot_steps(&self, id: i64, kind: MaskKind) -> StoreResult<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT DISTINCT step FROM mask_snapshots WHERE job_id = ? AND kind = ? AND layer = 0
             ORDER BY step",
        )
        .bind(id)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }

    /// The per-layer values of one snapshot.
    pub async fn snapshot(&self, id: i64, kind: MaskKind, step: i64) -> StoreResult<Vec<Vec<f32>>> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT vals FROM mask_snapshots WHERE job_id = ? AND kind = ? AND step = ?
             ORDER BY layer",
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(step)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(|(b,)| f32s(&b)).collect())
    }

    /// Per-layer summaries in step order.
    pub async fn mask_summaries(
        &self,
        id: i64,
        kind: MaskKind,
    ) -> StoreResult<Vec<(i64, i64, [f64; 6])>> {
        type Row = (i64, i64, f64, f64, f64, f64, f64, f64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT step, layer, q0, q25, q50, q75, q100, mean FROM mask_summaries
             WHERE job_id = ? AND kind = ? ORDER BY step, layer",
        )
        .bind(id)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(s, l, a, b, c, d, e, m)| (s, l, [a, b, c, d, e, m]))
            .collect())
    }

    /// Importances of `kind` (`module` or `rank`) per step, in step order.
    pub async fn importances(&self, id: i64, kind: &str) -> StoreResult<Vec<(i64, Vec<f64>)>> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT step, vals FROM importances WHERE job_id = ? AND kind = ? ORDER BY step",
        )
        .bind(id)
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.into_iter().map(|(s, b)| (s, f64s(&b))).collect())
    }

    // ----- plans and results -----

    /// Stores a committed plan.
    pub async fn insert_plan(
        &self,
        estimation_job_id: i64,
        settings: &str,
        preview: &str,
        plan: &str,
        snapshot_step: i64,
    ) -> StoreResult<i64> {
        sqlx::query_scalar(audited(format!(
            "INSERT INTO plans (estimation_job_id, settings, preview, plan, snapshot_step, created_at)
             VALUES (?, ?, ?, ?, ?, {NOW}) RETURNING id"
        )))
        .bind(estimation_job_id)
        .bind(settings)
        .bind(preview)
        .bind(plan)
        .bind(snapshot_step)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    /// A plan and the engine's JSON of it.
    pub async fn plan(&self, id: i64) -> StoreResult<(Plan, String)> {
        let row = sqlx::query("SELECT * FROM plans WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| ApiFailure::not_found(format!("no plan {id}")))?;
        Ok((plan_from_row(&row)?, row.get("plan")))
    }

    /// Plans made from an estimation job.
    pub async fn plans_of(&self, job_id: i64) -> StoreResult<Vec<Plan>> {
        let rows = sqlx::query("SELECT * FROM plans WHERE estimation_job_id = ? ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(plan_from_row).collect()
    }

    /// Stores a finished job's result.
    pub async fn insert_result(&self, result: &JobResult) -> StoreResult<()> {
        sqlx::query("INSERT OR REPLACE INTO results (job_id, result) VALUES (?, ?)")
            .bind(result.job_id)
            .bind(serde_json::to_string(result).expect("plain data"))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE jobs SET best_score = ? WHERE id = ?")
            .bind(result.best_score)
            .bind(result.job_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// A job's result, if it has one.
    pub async fn result(&self, job_id: i64) -> StoreResult<Option<JobResult>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT result FROM results WHERE job_id = ?")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| ApiFailure::internal(format!("result: {e}")))
        })
        .transpose()
    }

    /// Results of an experiment's finished jobs, oldest first.
    pub async fn results_of(&self, experiment_id: i64) -> StoreResult<Vec<JobResult>> {
        let texts: Vec<String> = sqlx::query_scalar(
            "SELECT r.result FROM results r JOIN jobs j ON j.id = r.job_id
             WHERE j.experiment_id = ? ORDER BY j.id",
        )
        .bind(experiment_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        texts
            .iter()
            .map(|t| {
                serde_json::from_str(t).map_err(|e| ApiFailure::internal(format!("result: {e}")))
            })
            .collect()
    }
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

/// Little-endian f32 bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian f64 bytes.
pub fn f64_bytes(values: &[f64]) -> Vec<u8> {
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

fn experiment_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Experiment> {
    let params: String = row.get("params");
    let preset: String = row.get("preset");
    Ok(Experiment {
        id: row.get("id"),
        name: row.get("name"),
        task: row.get("task"),
        model: row.get("model"),
        preset: serde_json::from_value(serde_json::Value::String(preset))
            .map_err(|e| ApiFailure::internal(format!("preset: {e}")))?,
        params: serde_json::from_str(&params)
            .map_err(|e| ApiFailure::internal(format!("params: {e}")))?,
        train_file: row.get("train_file"),
        dev_file: row.get("dev_file"),
        created_at: row.get("created_at"),
    })
}

fn job_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Job> {
    let kind: String = row.get("kind");
    let status: String = row.get("status");
    let status = JobStatus::from_str(&status).map_err(ApiFailure::internal)?;
    let kind: JobKind = serde_json::from_value(serde_json::Value::String(kind))
        .map_err(|e| ApiFailure::internal(format!("kind: {e}")))?;
    let step: i64 = row.get("step");
    let total_steps: i64 = row.get("total_steps");
    let step_seconds: Option<f64> = row.get("step_seconds");
    let checkpoint: Option<i64> = row.get("checkpoint_step");
    let eta_seconds = match (status, step_seconds) {
        (JobStatus::Running, Some(s)) => Some(s * (total_steps - step).max(0) as f64),
        _ => None,
    };
    Ok(Job {
        id: row.get("id"),
        experiment_id: row.get("experiment_id"),
        kind,
        plan_id: row.get("plan_id"),
        source_job_id: row.get("source_job_id"),
        status,
        step,
        total_steps,
        loss: row.get("loss"),
        best_score: row.get("best_score"),
        metric: row.get("metric"),
        step_seconds,
        eta_seconds,
        error: row.get("error"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        resumable: kind == JobKind::Estimation
            && checkpoint.is_some()
            && matches!(status, JobStatus::Interrupted | JobStatus::Cancelled),
    })
}

fn plan_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<Plan> {
    let preview: String = row.get("preview");
    Ok(Plan {
        id: row.get("id"),
        estimation_job_id: row.get("estimation_job_id"),
        preview: serde_json::from_str(&preview)
            .map_err(|e| ApiFailure::internal(format!("plan preview: {e}")))?,
        created_at: row.get("created_at"),
    })
}
