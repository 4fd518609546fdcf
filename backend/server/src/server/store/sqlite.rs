//! The SQLite implementation of [`Store`]: one file in WAL mode, arrays (masks, importances)
//! as little-endian BLOBs.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightpeft_api::rest::{Eval, Experiment, Job, JobKind, JobResult, JobStatus, MaskKind, Plan};
use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::train::{EvalRecord, StepRecord};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{
    JobRecord, RecordBatch, ScalarRow, Store, StoreError, StoreHealth, StoreResult, summarize,
};

/// Migrations from the workspace's `migrations/`, embedded at build time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Storage faults of writes, for [`Store::health`].
    faults: Arc<Mutex<Faults>>,
}

/// What [`SqliteStore::watch`] has seen.
#[derive(Debug, Default)]
struct Faults {
    /// Since when writes fail for want of storage (None once one succeeds).
    failing_since: Option<Instant>,
    /// The latest fault.
    last: Option<(String, Instant)>,
}

/// Whether a connection `age` old was open at the latest storage fault.
fn lived_through_fault(faults: &Mutex<Faults>, age: Duration) -> bool {
    let faults = faults.lock().expect("faults");
    faults
        .last
        .as_ref()
        .is_some_and(|(_, at)| age >= at.elapsed())
}

/// Now, in the format every timestamp uses.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// SQL built only from this file's constants (table names, the time expression), never from
/// request data, which always goes through binds.
/// The id the next row of `table` gets: one past the highest ever issued (migration 0003), so
/// an id is never handed out twice, even after the newest row is deleted.
fn next_id(table: &'static str) -> String {
    format!("(SELECT last + 1 FROM id_marks WHERE name = '{table}')")
}

fn audited(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations. With
    /// `max_bytes`, the file may not grow past that size: writes beyond it fail as on a full
    /// disk.
    pub async fn open(path: &Path, max_bytes: Option<u64>) -> StoreResult<SqliteStore> {
        let mut options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        if let Some(max) = max_bytes {
            // SQLite's default page size; the cap holds on every connection of the pool.
            options = options.pragma("max_page_count", (max / 4096).max(1).to_string());
        }
        let faults = Arc::<Mutex<Faults>>::default();
        // A connection that lived through a storage fault may hold a transaction SQLite left
        // open (or one sqlx and SQLite disagree about); it is closed rather than reused, so
        // the store works as new once space returns.
        let before = faults.clone();
        let after = faults.clone();
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .before_acquire(move |_, meta| {
                let keep = !lived_through_fault(&before, meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .after_release(move |_, meta| {
                let keep = !lived_through_fault(&after, meta.age);
                Box::pin(async move { Ok(keep) })
            })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        tracing::debug!(path = %path.display(), "store opened");
        Ok(SqliteStore { pool, faults })
    }

    /// A write's outcome, noted for [`Store::health`].
    async fn watch<T>(&self, write: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let outcome = write.await;
        let mut faults = self.faults.lock().expect("faults");
        match &outcome {
            Ok(_) => faults.failing_since = None,
            Err(e) if e.is_storage_fault() => {
                let now = Instant::now();
                faults.failing_since.get_or_insert(now);
                faults.last = Some((e.to_string(), now));
            }
            Err(_) => {}
        }
        outcome
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    // ----- experiments -----

    async fn insert_experiment(
        &self,
        name: &str,
        task: &str,
        model: &str,
        preset: Preset,
        params: &Hyperparams,
        files: (Option<&str>, Option<&str>),
    ) -> StoreResult<Experiment> {
        self.watch(async {
            let params_json = serde_json::to_string(params).expect("plain data");
            // In an explicit transaction: outside one, the first row of a RETURNING
            // arrives before the implicit commit, whose failure (a full disk) would be lost.
            let mut tx = self.pool.begin().await?;
            let id: i64 = sqlx::query_scalar(audited(format!(
                "INSERT INTO experiments (id, name, task, model, preset, params, train_file, dev_file, created_at)
                 VALUES ({}, ?, ?, ?, ?, ?, ?, ?, {NOW}) RETURNING id",
                next_id("experiments")
            )))
            .bind(name)
            .bind(task)
            .bind(model)
            .bind(preset.as_str())
            .bind(params_json)
            .bind(files.0)
            .bind(files.1)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            self.experiment(id).await
        })
        .await
    }

    async fn experiment(&self, id: i64) -> StoreResult<Experiment> {
        let row = sqlx::query("SELECT * FROM experiments WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound {
                what: "experiment",
                id,
            })?;
        experiment_from_row(&row)
    }

    async fn experiments(&self) -> StoreResult<Vec<Experiment>> {
        let rows = sqlx::query("SELECT * FROM experiments ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(experiment_from_row).collect()
    }

    async fn delete_experiment(&self, id: i64) -> StoreResult<()> {
        self.watch(async {
            let deleted = sqlx::query(
                "DELETE FROM experiments WHERE id = ?1 AND NOT EXISTS (
                   SELECT 1 FROM jobs WHERE experiment_id = ?1 AND status IN ('queued', 'running'))",
            )
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if deleted == 1 {
                return Ok(());
            }
            self.experiment(id).await?;
            Err(StoreError::Conflict(format!(
                "experiment {id} has queued or running jobs; cancel them first"
            )))
        })
        .await
    }

    // ----- jobs -----

    async fn insert_job(
        &self,
        experiment_id: i64,
        kind: JobKind,
        plan_id: Option<i64>,
        source_job_id: Option<i64>,
    ) -> StoreResult<Job> {
        self.watch(async {
            let mut tx = self.pool.begin().await?;
            let id: i64 = sqlx::query_scalar(audited(format!(
                "INSERT INTO jobs (id, experiment_id, kind, plan_id, source_job_id, status, created_at)
                 VALUES ({}, ?, ?, ?, ?, 'queued', {NOW}) RETURNING id",
                next_id("jobs")
            )))
            .bind(experiment_id)
            .bind(kind.as_str())
            .bind(plan_id)
            .bind(source_job_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(audited(format!(
                "INSERT INTO job_status_log (job_id, status, at) VALUES (?, 'queued', {NOW})"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.job(id).await
        })
        .await
    }

    async fn job(&self, id: i64) -> StoreResult<Job> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "job", id })?;
        job_from_row(&row)
    }

    async fn jobs(
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
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn set_status(
        &self,
        id: i64,
        status: JobStatus,
        error: Option<&str>,
    ) -> StoreResult<Job> {
        self.watch(async {
            let mut tx = self.pool.begin().await?;
            let times = match status {
                JobStatus::Running => {
                    format!(", started_at = {NOW}, finished_at = NULL, error = NULL")
                }
                JobStatus::Queued => ", finished_at = NULL, error = NULL".to_string(),
                _ => format!(", finished_at = {NOW}"),
            };
            let leaves = super::leaves_for(status)
                .iter()
                .map(|s| format!("'{}'", s.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            let changed = sqlx::query(audited(format!(
                "UPDATE jobs SET status = ?, error = COALESCE(?, error) {times}
                 WHERE id = ? AND status IN ({leaves})"
            )))
            .bind(status.as_str())
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                drop(tx);
                let job = self.job(id).await?;
                return Err(StoreError::Conflict(format!(
                    "job {id} is {}",
                    job.status.as_str()
                )));
            }
            sqlx::query(audited(format!(
                "INSERT INTO job_status_log (job_id, status, at) VALUES (?, ?, {NOW})"
            )))
            .bind(id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.job(id).await
        })
        .await
    }

    async fn recover(&self) -> StoreResult<(Vec<i64>, Vec<i64>)> {
        self.watch(async {
            let running: Vec<i64> =
                sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'running'")
                    .fetch_all(&self.pool)
                    .await?;
            for id in &running {
                self.set_status(
                    *id,
                    JobStatus::Interrupted,
                    Some("the server stopped while it ran"),
                )
                .await?;
            }
            let queued =
                sqlx::query_scalar("SELECT id FROM jobs WHERE status = 'queued' ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
            Ok((running, queued))
        })
        .await
    }

    async fn set_job_plan_inputs(
        &self,
        id: i64,
        total_steps: usize,
        metric: &str,
        modules: Option<&str>,
    ) -> StoreResult<()> {
        self.watch(async {
            sqlx::query(
                "UPDATE jobs SET total_steps = ?, metric = ?, modules = COALESCE(?, modules)
                 WHERE id = ?",
            )
            .bind(total_steps as i64)
            .bind(metric)
            .bind(modules)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn job_modules(&self, id: i64) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT modules FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "job", id })
    }

    async fn checkpoint_step(&self, id: i64) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT checkpoint_step FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "job", id })
    }

    async fn truncate_records(&self, id: i64, step: i64) -> StoreResult<()> {
        self.watch(async {
            let mut tx = self.pool.begin().await?;
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
                .await?;
            }
            // An evaluation at step s follows step s-1.
            sqlx::query("DELETE FROM evals WHERE job_id = ? AND step > ?")
                .bind(id)
                .bind(step)
                .execute(&mut *tx)
                .await?;
            let last: Option<(i64, f64)> = sqlx::query_as(
                "SELECT step, loss FROM step_scalars WHERE job_id = ? ORDER BY step DESC LIMIT 1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query("UPDATE jobs SET step = ?, loss = ? WHERE id = ?")
                .bind(last.map_or(0, |(s, _)| s + 1))
                .bind(last.map(|(_, l)| l))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn delete_job(&self, id: i64) -> StoreResult<()> {
        self.watch(async {
            // One statement decides and deletes, so a job cannot be queued or resumed between
            // the check and the delete.
            let deleted = sqlx::query(
                "DELETE FROM jobs WHERE id = ?1
                   AND status NOT IN ('queued', 'running')
                   AND NOT EXISTS (
                     SELECT 1 FROM jobs d LEFT JOIN plans p ON p.id = d.plan_id
                      WHERE d.status IN ('queued', 'running')
                        AND (d.source_job_id = ?1 OR p.estimation_job_id = ?1))",
            )
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if deleted == 1 {
                return Ok(());
            }
            let job = self.job(id).await?;
            if !job.status.is_final() {
                return Err(StoreError::Conflict(format!(
                    "job {id} is {}; cancel it first",
                    job.status.as_str()
                )));
            }
            let live: Vec<i64> = sqlx::query_scalar(
                "SELECT d.id FROM jobs d LEFT JOIN plans p ON p.id = d.plan_id
                  WHERE d.status IN ('queued', 'running')
                    AND (d.source_job_id = ?1 OR p.estimation_job_id = ?1) ORDER BY d.id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
            Err(StoreError::Conflict(format!(
                "job {id} is used by queued or running job(s) {live:?}; cancel them first"
            )))
        })
        .await
    }

    // ----- records -----

    async fn write_batch(&self, batch: &RecordBatch) -> StoreResult<()> {
        self.watch(async {
            let job_id = batch.job_id;
            let mut tx = self.pool.begin().await?;
            for record in &batch.records {
                match record {
                    JobRecord::Step(r) => write_step(&mut tx, job_id, r).await?,
                    JobRecord::Eval(r) => write_eval(&mut tx, job_id, r).await?,
                    JobRecord::Checkpoint { next_step } => {
                        sqlx::query("UPDATE jobs SET checkpoint_step = ? WHERE id = ?")
                            .bind(*next_step as i64)
                            .bind(job_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            for &step in &batch.drop_snapshots {
                sqlx::query("DELETE FROM mask_snapshots WHERE job_id = ? AND step = ?")
                    .bind(job_id)
                    .bind(step)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn mask_snapshot_steps(&self, id: i64) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT step FROM mask_snapshots WHERE job_id = ? ORDER BY step",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn pinned_snapshot_steps(&self, id: i64) -> StoreResult<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT snapshot_step FROM plans WHERE estimation_job_id = ?")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn scalars(&self, id: i64, from: i64, to: i64) -> StoreResult<Vec<ScalarRow>> {
        Ok(sqlx::query_as(
            "SELECT step, loss, ce_loss, l1_loss, lr, grad_norm, seconds FROM step_scalars
             WHERE job_id = ? AND step BETWEEN ? AND ? ORDER BY step",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn evals(&self, id: i64) -> StoreResult<Vec<Eval>> {
        let rows: Vec<(i64, i64, String, f64, f64)> = sqlx::query_as(
            "SELECT step, epoch, metrics, loss, seconds FROM evals WHERE job_id = ? ORDER BY step",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |(step, epoch, metrics, loss, seconds)| -> StoreResult<Eval> {
                    Ok(Eval {
                        step,
                        epoch,
                        metrics: serde_json::from_str(&metrics)
                            .map_err(|e| StoreError::corrupt("evaluation metrics", e))?,
                        loss,
                        seconds,
                    })
                },
            )
            .collect()
    }

    async fn snapshot_steps(&self, id: i64, kind: MaskKind) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT step FROM mask_snapshots WHERE job_id = ? AND kind = ? AND layer = 0
             ORDER BY step",
        )
        .bind(id)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn snapshot(&self, id: i64, kind: MaskKind, step: i64) -> StoreResult<Vec<Vec<f32>>> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT vals FROM mask_snapshots WHERE job_id = ? AND kind = ? AND step = ?
             ORDER BY layer",
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(step)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(b,)| f32s(&b)).collect())
    }

    async fn mask_summaries(
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
        .await?;
        Ok(rows
            .into_iter()
            .map(|(s, l, a, b, c, d, e, m)| (s, l, [a, b, c, d, e, m]))
            .collect())
    }

    async fn importances(&self, id: i64, kind: &str) -> StoreResult<Vec<(i64, Vec<f64>)>> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT step, vals FROM importances WHERE job_id = ? AND kind = ? ORDER BY step",
        )
        .bind(id)
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(s, b)| (s, f64s(&b))).collect())
    }

    // ----- plans and results -----

    async fn insert_plan(
        &self,
        estimation_job_id: i64,
        settings: &str,
        preview: &str,
        plan: &str,
        snapshot_step: i64,
    ) -> StoreResult<i64> {
        self.watch(async {
            // In a transaction for the commit's error (see `insert_experiment`).
            let mut tx = self.pool.begin().await?;
            let id = sqlx::query_scalar(audited(format!(
                "INSERT INTO plans (id, estimation_job_id, settings, preview, plan, snapshot_step, created_at)
                 VALUES ({}, ?, ?, ?, ?, ?, {NOW}) RETURNING id",
                next_id("plans")
            )))
            .bind(estimation_job_id)
            .bind(settings)
            .bind(preview)
            .bind(plan)
            .bind(snapshot_step)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(id)
        })
        .await
    }

    async fn plan(&self, id: i64) -> StoreResult<(Plan, String)> {
        let row = sqlx::query("SELECT * FROM plans WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound { what: "plan", id })?;
        Ok((plan_from_row(&row)?, row.get("plan")))
    }

    async fn plans_of(&self, job_id: i64) -> StoreResult<Vec<Plan>> {
        let rows = sqlx::query("SELECT * FROM plans WHERE estimation_job_id = ? ORDER BY id")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(plan_from_row).collect()
    }

    async fn insert_result(&self, result: &JobResult) -> StoreResult<()> {
        self.watch(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT OR REPLACE INTO results (job_id, result) VALUES (?, ?)")
                .bind(result.job_id)
                .bind(serde_json::to_string(result).expect("plain data"))
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE jobs SET best_score = ? WHERE id = ?")
                .bind(result.best_score)
                .bind(result.job_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn result(&self, job_id: i64) -> StoreResult<Option<JobResult>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT result FROM results WHERE job_id = ?")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::corrupt("result", e)))
            .transpose()
    }

    async fn health(&self) -> StoreHealth {
        let read = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM id_marks").fetch_one(&self.pool),
        )
        .await;
        let read_error = match read {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(StoreError::from(e).to_string()),
            Err(_) => Some("a read took over 2 s".to_string()),
        };
        let faults = self.faults.lock().expect("faults");
        StoreHealth {
            read_error,
            failing_since: faults.failing_since,
            last_fault: faults.last.clone(),
        }
    }

    async fn results_of(&self, experiment_id: i64) -> StoreResult<Vec<JobResult>> {
        let texts: Vec<String> = sqlx::query_scalar(
            "SELECT r.result FROM results r JOIN jobs j ON j.id = r.job_id
             WHERE j.experiment_id = ? ORDER BY j.id",
        )
        .bind(experiment_id)
        .fetch_all(&self.pool)
        .await?;
        texts
            .iter()
            .map(|t| serde_json::from_str(t).map_err(|e| StoreError::corrupt("result", e)))
            .collect()
    }
}

async fn write_eval(
    tx: &mut Transaction<'_, Sqlite>,
    job_id: i64,
    record: &EvalRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO evals (job_id, step, epoch, metrics, loss, seconds)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(job_id)
    .bind(record.step as i64)
    .bind(record.epoch as i64)
    .bind(serde_json::to_string(&record.metrics).expect("plain data"))
    .bind(record.loss)
    .bind(record.seconds)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_step(
    tx: &mut Transaction<'_, Sqlite>,
    job_id: i64,
    r: &StepRecord,
) -> StoreResult<()> {
    let step = r.step as i64;
    sqlx::query(
        "INSERT OR REPLACE INTO step_scalars (job_id, step, epoch, loss, ce_loss, l1_loss, lr, grad_norm, seconds)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job_id)
    .bind(step)
    .bind(r.epoch as i64)
    .bind(r.loss as f64)
    .bind(r.ce_loss as f64)
    .bind(r.l1_loss as f64)
    .bind(r.lr)
    .bind(r.grad_norm)
    .bind(r.seconds)
    .execute(&mut **tx)
    .await?;
    // A running median would need every step; the mean of the newest is close enough for ETA.
    sqlx::query(
        "UPDATE jobs SET step = ?, total_steps = ?, loss = ?,
         step_seconds = CASE WHEN step_seconds IS NULL THEN ? ELSE 0.9 * step_seconds + 0.1 * ? END
         WHERE id = ?",
    )
    .bind(step + 1)
    .bind(r.total_steps as i64)
    .bind(r.loss as f64)
    .bind(r.seconds)
    .bind(r.seconds)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;

    let rows: Vec<(&str, usize, &Vec<f32>)> = [
        (MaskKind::Head, &r.head_masks),
        (MaskKind::Neuron, &r.neuron_masks),
    ]
    .into_iter()
    .filter_map(|(kind, m)| m.as_ref().map(|m| (kind.as_str(), m)))
    .flat_map(|(kind, layers)| layers.iter().enumerate().map(move |(l, v)| (kind, l, v)))
    .collect();
    if !rows.is_empty() {
        let mut snapshots: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO mask_snapshots (job_id, step, kind, layer, vals) ",
        );
        snapshots.push_values(&rows, |mut b, (kind, layer, values)| {
            b.push_bind(job_id)
                .push_bind(step)
                .push_bind(*kind)
                .push_bind(*layer as i64)
                .push_bind(f32_bytes(values));
        });
        snapshots.build().execute(&mut **tx).await?;
        let mut summaries: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR REPLACE INTO mask_summaries (job_id, step, kind, layer, q0, q25, q50, q75, q100, mean) ",
        );
        summaries.push_values(&rows, |mut b, (kind, layer, values)| {
            b.push_bind(job_id)
                .push_bind(step)
                .push_bind(*kind)
                .push_bind(*layer as i64);
            for v in summarize(values) {
                b.push_bind(v);
            }
        });
        summaries.build().execute(&mut **tx).await?;
    }
    if !r.module_importance.is_empty() {
        let modules: Vec<f64> = r.module_importance.iter().map(|(_, v)| *v).collect();
        let ranks: Vec<f64> = r
            .rank_importance
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        for (kind, values) in [("module", modules), ("rank", ranks)] {
            sqlx::query(
                "INSERT OR REPLACE INTO importances (job_id, step, kind, vals) VALUES (?, ?, ?, ?)",
            )
            .bind(job_id)
            .bind(step)
            .bind(kind)
            .bind(f64_bytes(&values))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
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

fn experiment_from_row(row: &SqliteRow) -> StoreResult<Experiment> {
    let params: String = row.get("params");
    let preset: String = row.get("preset");
    Ok(Experiment {
        id: row.get("id"),
        name: row.get("name"),
        task: row.get("task"),
        model: row.get("model"),
        preset: serde_json::from_value(serde_json::Value::String(preset))
            .map_err(|e| StoreError::corrupt("experiment preset", e))?,
        params: serde_json::from_str(&params)
            .map_err(|e| StoreError::corrupt("experiment params", e))?,
        train_file: row.get("train_file"),
        dev_file: row.get("dev_file"),
        created_at: row.get("created_at"),
    })
}

/// The stored columns only; the derived fields follow the rules of [`Job::fill_derived`].
fn job_from_row(row: &SqliteRow) -> StoreResult<Job> {
    let kind: String = row.get("kind");
    let status: String = row.get("status");
    let checkpoint: Option<i64> = row.get("checkpoint_step");
    let mut job = Job {
        id: row.get("id"),
        experiment_id: row.get("experiment_id"),
        kind: serde_json::from_value(serde_json::Value::String(kind))
            .map_err(|e| StoreError::corrupt("job kind", e))?,
        plan_id: row.get("plan_id"),
        source_job_id: row.get("source_job_id"),
        status: JobStatus::from_str(&status).map_err(|e| StoreError::corrupt("job status", e))?,
        step: row.get("step"),
        total_steps: row.get("total_steps"),
        loss: row.get("loss"),
        best_score: row.get("best_score"),
        metric: row.get("metric"),
        step_seconds: row.get("step_seconds"),
        eta_seconds: None,
        error: row.get("error"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        resumable: false,
    };
    job.fill_derived(checkpoint.is_some());
    Ok(job)
}

fn plan_from_row(row: &SqliteRow) -> StoreResult<Plan> {
    let preview: String = row.get("preview");
    Ok(Plan {
        id: row.get("id"),
        estimation_job_id: row.get("estimation_job_id"),
        preview: serde_json::from_str(&preview)
            .map_err(|e| StoreError::corrupt("plan preview", e))?,
        created_at: row.get("created_at"),
    })
}
