//! The store written once for both databases: every statement of [`Store`] in SQL that
//! SQLite and PostgreSQL both read (`$N` placeholders, which sqlx's SQLite driver maps to the
//! N-th argument as PostgreSQL does; `ON CONFLICT … DO UPDATE`; `CAST`). What differs lives
//! in each backend's module and is named here: `NOW` (the time as RFC 3339 text), `EPOCH`
//! (Unix seconds, the queue's clock), `SKIP_LOCKED` (how a claim passes over a locked row),
//! `RUNNING_IDS` (a worker's running jobs as one comma-separated text), `next_id` (the id of
//! a new row) and `audited` (SQL built from those constants only).

/// Implements [`Store`](super::Store) for `$store`, a struct with `pool: sqlx::Pool<$db>` and
/// `faults: Arc<Mutex<FaultLog>>`, in the module that defines the dialect items above.
macro_rules! impl_store {
    ($store:ident, $db:ident) => {
        mod shared_sql {
            use std::time::Duration;

            use lightpeft_api::rest::{
                Eval, Experiment, Job, JobKind, JobResult, JobStatus, MaskKind, Plan, Study, Worker,
            };
            use lightpeft_api::{Hyperparams, Preset};
            use lightpeft_engine::train::{EvalRecord, StepRecord};
            use sqlx::{$db, QueryBuilder, Transaction};

            use super::super::{
                Claim, EvalRow, ExperimentRow, JobRecord, JobRow, Lease, PlanRow, RecordBatch,
                ScalarRow, Store, StudyJob, StudyRow, StoreError, StoreHealth, StoreResult, WorkerInfo, WorkerRow,
                decode_eval, decode_result, f32_bytes, f32s, f64_bytes, f64s, importance_rows,
                lease_lost, mask_rows, reaped_why, summarize,
            };
            use super::{$store, EPOCH, NOW, RUNNING_IDS, SKIP_LOCKED, audited, next_id};

            /// Refuses the transaction's writes unless `held` still holds its job. An update, not a
            /// read: the job's row (PostgreSQL) or the database (SQLite) stays locked until the
            /// commit, so no claim or reaper changes the job between this check and the attempt's
            /// writes.
            async fn fence(tx: &mut Transaction<'_, $db>, held: &Lease) -> StoreResult<()> {
                let holds = sqlx::query(
                    "UPDATE jobs SET attempt = attempt
                      WHERE id = $1 AND attempt = $2 AND worker = $3 AND status = 'running'",
                )
                .bind(held.job_id)
                .bind(held.attempt)
                .bind(&held.worker)
                .execute(&mut **tx)
                .await?
                .rows_affected();
                if holds == 1 {
                    Ok(())
                } else {
                    Err(lease_lost(held))
                }
            }

            /// Appends a row to a job's status history.
            async fn log_status(
                tx: &mut Transaction<'_, $db>,
                id: i64,
                status: JobStatus,
            ) -> StoreResult<()> {
                sqlx::query(audited(format!(
                    "INSERT INTO job_status_log (job_id, status, at) VALUES ($1, $2, {NOW})"
                )))
                .bind(id)
                .bind(status.as_str())
                .execute(&mut **tx)
                .await?;
                Ok(())
            }

            /// A queued job, with its history row; the one INSERT of `jobs`.
            async fn insert_queued_job(
                tx: &mut Transaction<'_, $db>,
                experiment_id: i64,
                kind: JobKind,
                plan_id: Option<i64>,
                source_job_id: Option<i64>,
                study: Option<(i64, &str)>,
            ) -> StoreResult<i64> {
                let id: i64 = sqlx::query_scalar(audited(format!(
                    "INSERT INTO jobs (id, experiment_id, kind, plan_id, source_job_id, status, created_at, queued_at, study_id, settings)
                     VALUES ({}, $1, $2, $3, $4, 'queued', {NOW}, {EPOCH}, $5, $6) RETURNING id",
                    next_id("jobs")
                )))
                .bind(experiment_id)
                .bind(kind.as_str())
                .bind(plan_id)
                .bind(source_job_id)
                .bind(study.map(|(id, _)| id))
                .bind(study.map(|(_, settings)| settings))
                .fetch_one(&mut **tx)
                .await?;
                log_status(tx, id, JobStatus::Queued).await?;
                Ok(id)
            }

            /// A committed plan; the one INSERT of `plans`.
            async fn insert_plan_row(
                tx: &mut Transaction<'_, $db>,
                estimation_job_id: i64,
                (settings, preview, plan, snapshot_step): (&str, &str, &str, i64),
            ) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(audited(format!(
                    "INSERT INTO plans (id, estimation_job_id, settings, preview, plan, snapshot_step, created_at)
                     VALUES ({}, $1, $2, $3, $4, $5, {NOW}) RETURNING id",
                    next_id("plans")
                )))
                .bind(estimation_job_id)
                .bind(settings)
                .bind(preview)
                .bind(plan)
                .bind(snapshot_step)
                .fetch_one(&mut **tx)
                .await?)
            }

            impl $store {
                /// A write's outcome, noted for [`Store::health`].
                async fn watch<T>(&self, write: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
                    let outcome = write.await;
                    self.faults.lock().expect("faults").note(&outcome);
                    outcome
                }

                /// One conditional move of job `id` to `status` (from a state of `leaves_for`),
                /// with its history row; `resume` sets whether a queued job continues from its
                /// snapshot.
                async fn transition(
                    &self,
                    id: i64,
                    status: JobStatus,
                    error: Option<&str>,
                    resume: Option<bool>,
                ) -> StoreResult<Job> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        let times = super::super::status_times(status, NOW, EPOCH);
                        let set_error = super::super::status_error(status, "$2");
                        let leaves = super::super::leaves_sql(status);
                        let resume = resume
                            .map(|r| format!(", resume_from_snapshot = {r}"))
                            .unwrap_or_default();
                        // One conditional update: under PostgreSQL's READ COMMITTED a concurrent
                        // update of the row makes this one re-read it and test the state again, and
                        // SQLite has one writer, so of two racing moves only one leaves the state.
                        let changed = sqlx::query(audited(format!(
                            "UPDATE jobs SET status = $1, {set_error} {times} {resume}
                             WHERE id = $3 AND status IN ({leaves})"
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
                        log_status(&mut tx, id, status).await?;
                        tx.commit().await?;
                        self.job(id).await
                    })
                    .await
                }
            }

            #[async_trait::async_trait]
            impl Store for $store {
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
                        // In a transaction: outside one, SQLite sends the RETURNING row before its
                        // implicit commit, whose failure (a full disk) would be lost.
                        let mut tx = self.pool.begin().await?;
                        let id: i64 = sqlx::query_scalar(audited(format!(
                            "INSERT INTO experiments (id, name, task, model, preset, params, train_file, dev_file, created_at)
                             VALUES ({}, $1, $2, $3, $4, $5, $6, $7, {NOW}) RETURNING id",
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
                    sqlx::query_as::<_, ExperimentRow>("SELECT * FROM experiments WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound {
                            what: "experiment",
                            id,
                        })?
                        .decode()
                }

                async fn experiments(&self) -> StoreResult<Vec<Experiment>> {
                    sqlx::query_as::<_, ExperimentRow>("SELECT * FROM experiments ORDER BY id DESC")
                        .fetch_all(&self.pool)
                        .await?
                        .into_iter()
                        .map(ExperimentRow::decode)
                        .collect()
                }

                async fn delete_experiment(&self, id: i64) -> StoreResult<()> {
                    self.watch(async {
                        let deleted = sqlx::query(
                            "DELETE FROM experiments WHERE id = $1 AND NOT EXISTS (
                               SELECT 1 FROM jobs WHERE experiment_id = $1 AND status IN ('queued', 'running'))",
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
                        let id = insert_queued_job(&mut tx, experiment_id, kind, plan_id, source_job_id, None)
                            .await?;
                        tx.commit().await?;
                        self.job(id).await
                    })
                    .await
                }

                async fn job(&self, id: i64) -> StoreResult<Job> {
                    sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound { what: "job", id })?
                        .decode()
                }

                async fn jobs(
                    &self,
                    experiment_id: Option<i64>,
                    status: Option<JobStatus>,
                ) -> StoreResult<Vec<Job>> {
                    sqlx::query_as::<_, JobRow>(
                        "SELECT * FROM jobs WHERE (CAST($1 AS BIGINT) IS NULL OR experiment_id = $1)
                         AND (CAST($2 AS TEXT) IS NULL OR status = $2) ORDER BY id DESC",
                    )
                    .bind(experiment_id)
                    .bind(status.map(JobStatus::as_str))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(JobRow::decode)
                    .collect()
                }

                async fn set_status(
                    &self,
                    id: i64,
                    status: JobStatus,
                    error: Option<&str>,
                ) -> StoreResult<Job> {
                    self.transition(id, status, error, None).await
                }

                async fn recover(&self, worker: &str) -> StoreResult<Vec<i64>> {
                    self.watch(async {
                        // Rows from before the queue had workers name none: they were the store's
                        // own.
                        let held: Vec<i64> = sqlx::query_scalar(
                            "SELECT id FROM jobs WHERE status = 'running' AND (worker = $1 OR worker IS NULL)
                             ORDER BY id",
                        )
                        .bind(worker)
                        .fetch_all(&self.pool)
                        .await?;
                        for id in &held {
                            self.set_status(
                                *id,
                                JobStatus::Interrupted,
                                Some("the server stopped while it ran"),
                            )
                            .await?;
                        }
                        Ok(held)
                    })
                    .await
                }

                async fn requeue(&self, id: i64, from_snapshot: bool) -> StoreResult<Job> {
                    self.transition(id, JobStatus::Queued, None, Some(from_snapshot))
                        .await
                }

                async fn claim(&self, worker: &str, lease: Duration) -> StoreResult<Option<Claim>> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        // Concurrent claims take different jobs: PostgreSQL passes over a row
                        // another claim has locked (SKIP LOCKED); SQLite's one writer holds its
                        // lock from the choice of the row to the commit.
                        let times = super::super::status_times(JobStatus::Running, NOW, EPOCH);
                        let claimed: Option<(i64, i64, bool)> = sqlx::query_as(audited(format!(
                            "UPDATE jobs SET status = 'running', worker = $1, attempt = attempt + 1,
                               lease_expires_at = {EPOCH} + $2, cancel_requested = false,
                               error = NULL {times}
                             WHERE id = (SELECT id FROM jobs WHERE status = 'queued'
                                         ORDER BY queued_at, id LIMIT 1 {SKIP_LOCKED})
                             RETURNING id, attempt, resume_from_snapshot"
                        )))
                        .bind(worker)
                        .bind(lease.as_secs_f64())
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some((id, attempt, resume)) = claimed else {
                            return Ok(None);
                        };
                        log_status(&mut tx, id, JobStatus::Running).await?;
                        tx.commit().await?;
                        Ok(Some(Claim {
                            job: self.job(id).await?,
                            lease: Lease {
                                job_id: id,
                                worker: worker.to_string(),
                                attempt,
                            },
                            resume,
                        }))
                    })
                    .await
                }

                async fn renew(&self, held: &Lease, lease: Duration) -> StoreResult<bool> {
                    self.watch(async {
                        // A transaction for the commit's error (see `insert_experiment`).
                        let mut tx = self.pool.begin().await?;
                        let cancel: Option<bool> = sqlx::query_scalar(audited(format!(
                            "UPDATE jobs SET lease_expires_at = {EPOCH} + $1
                              WHERE id = $2 AND attempt = $3 AND worker = $4 AND status = 'running'
                             RETURNING cancel_requested"
                        )))
                        .bind(lease.as_secs_f64())
                        .bind(held.job_id)
                        .bind(held.attempt)
                        .bind(&held.worker)
                        .fetch_optional(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        cancel.ok_or_else(|| lease_lost(held))
                    })
                    .await
                }

                async fn settle(
                    &self,
                    held: &Lease,
                    status: JobStatus,
                    error: Option<&str>,
                ) -> StoreResult<Job> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        let times = super::super::status_times(status, NOW, EPOCH);
                        let set_error = super::super::status_error(status, "$2");
                        let changed = sqlx::query(audited(format!(
                            "UPDATE jobs SET status = $1, {set_error} {times}
                             WHERE id = $3 AND attempt = $4 AND worker = $5 AND status = 'running'"
                        )))
                        .bind(status.as_str())
                        .bind(error)
                        .bind(held.job_id)
                        .bind(held.attempt)
                        .bind(&held.worker)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if changed == 0 {
                            return Err(lease_lost(held));
                        }
                        log_status(&mut tx, held.job_id, status).await?;
                        tx.commit().await?;
                        self.job(held.job_id).await
                    })
                    .await
                }

                async fn request_cancel(&self, id: i64) -> StoreResult<Job> {
                    self.watch(async {
                        let asked = sqlx::query(
                            "UPDATE jobs SET cancel_requested = true WHERE id = $1 AND status = 'running'",
                        )
                        .bind(id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                        let job = self.job(id).await?;
                        if asked == 0 {
                            return Err(StoreError::Conflict(format!(
                                "job {id} is {}",
                                job.status.as_str()
                            )));
                        }
                        Ok(job)
                    })
                    .await
                }

                async fn reap(&self, max_attempts: i64) -> StoreResult<Vec<(i64, JobStatus)>> {
                    self.watch(async {
                        type Expired = (i64, i64, Option<String>, bool);
                        let expired: Vec<Expired> = sqlx::query_as(audited(format!(
                            "SELECT id, attempt, worker, cancel_requested FROM jobs
                              WHERE status = 'running' AND lease_expires_at < {EPOCH} ORDER BY id"
                        )))
                        .fetch_all(&self.pool)
                        .await?;
                        let mut reaped = Vec::new();
                        for (id, attempt, worker, cancel_requested) in expired {
                            let (stopped, requeue) = match (cancel_requested, attempt < max_attempts) {
                                (true, _) => (JobStatus::Cancelled, false),
                                (false, again) => (JobStatus::Interrupted, again),
                            };
                            let why = if cancel_requested {
                                "cancelled on request; its worker stopped renewing its lease before it stopped"
                                    .to_string()
                            } else {
                                reaped_why(worker.as_deref(), attempt, requeue, max_attempts)
                            };
                            let mut tx = self.pool.begin().await?;
                            // Still expired and still the same attempt (the update waits for a
                            // fenced write in flight, then tests again): a lease renewed or a job
                            // settled since the read above is left alone. The reaper's reason
                            // replaces any earlier error.
                            let times = super::super::status_times(stopped, NOW, EPOCH);
                            let changed = sqlx::query(audited(format!(
                                "UPDATE jobs SET status = $1, error = $2 {times}
                                 WHERE id = $3 AND attempt = $4 AND status = 'running'
                                   AND lease_expires_at < {EPOCH}"
                            )))
                            .bind(stopped.as_str())
                            .bind(&why)
                            .bind(id)
                            .bind(attempt)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                            if changed == 0 {
                                continue;
                            }
                            log_status(&mut tx, id, stopped).await?;
                            let mut now = stopped;
                            if requeue {
                                // Keeping the reaper's reason, so the queued job says why it is
                                // again.
                                let times = super::super::status_times(JobStatus::Queued, NOW, EPOCH);
                                sqlx::query(audited(format!(
                                    "UPDATE jobs SET status = 'queued' {times},
                                       resume_from_snapshot = (checkpoint_step IS NOT NULL)
                                     WHERE id = $1"
                                )))
                                .bind(id)
                                .execute(&mut *tx)
                                .await?;
                                log_status(&mut tx, id, JobStatus::Queued).await?;
                                now = JobStatus::Queued;
                            }
                            tx.commit().await?;
                            reaped.push((id, now));
                        }
                        Ok(reaped)
                    })
                    .await
                }

                async fn worker_heartbeat(&self, worker: &WorkerInfo, starting: bool) -> StoreResult<()> {
                    self.watch(async {
                        if !starting {
                            let beat = sqlx::query(audited(format!(
                                "UPDATE workers SET heartbeat_at = {EPOCH} WHERE name = $1"
                            )))
                            .bind(&worker.name)
                            .execute(&self.pool)
                            .await?
                            .rows_affected();
                            if beat == 1 {
                                return Ok(());
                            }
                        }
                        sqlx::query(audited(format!(
                            "INSERT INTO workers (name, device, slots, started_at, heartbeat_at)
                             VALUES ($1, $2, $3, {NOW}, {EPOCH})
                             ON CONFLICT (name) DO UPDATE SET device = EXCLUDED.device,
                               slots = EXCLUDED.slots, started_at = EXCLUDED.started_at,
                               heartbeat_at = EXCLUDED.heartbeat_at"
                        )))
                        .bind(&worker.name)
                        .bind(&worker.device)
                        .bind(worker.slots as i64)
                        .execute(&self.pool)
                        .await?;
                        Ok(())
                    })
                    .await
                }

                async fn workers(&self) -> StoreResult<Vec<Worker>> {
                    sqlx::query_as::<_, WorkerRow>(audited(format!(
                        "SELECT w.name, w.device, w.slots, w.started_at,
                                {EPOCH} - w.heartbeat_at AS seconds_since_heartbeat,
                                (SELECT {RUNNING_IDS} FROM jobs j
                                  WHERE j.worker = w.name AND j.status = 'running') AS running
                           FROM workers w ORDER BY w.name"
                    )))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(WorkerRow::decode)
                    .collect()
                }

                async fn set_job_plan_inputs(
                    &self,
                    held: &Lease,
                    total_steps: usize,
                    metric: &str,
                    modules: Option<&str>,
                ) -> StoreResult<()> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        fence(&mut tx, held).await?;
                        sqlx::query(
                            "UPDATE jobs SET total_steps = $1, metric = $2, modules = COALESCE($3, modules)
                             WHERE id = $4",
                        )
                        .bind(total_steps as i64)
                        .bind(metric)
                        .bind(modules)
                        .bind(held.job_id)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(())
                    })
                    .await
                }

                async fn job_modules(&self, id: i64) -> StoreResult<Option<String>> {
                    sqlx::query_scalar("SELECT modules FROM jobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound { what: "job", id })
                }

                async fn checkpoint_step(&self, id: i64) -> StoreResult<Option<i64>> {
                    sqlx::query_scalar("SELECT checkpoint_step FROM jobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound { what: "job", id })
                }

                async fn truncate_records(&self, id: i64, step: i64, held: Option<&Lease>) -> StoreResult<()> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        if let Some(held) = held {
                            fence(&mut tx, held).await?;
                        }
                        for table in [
                            "step_scalars",
                            "mask_snapshots",
                            "mask_summaries",
                            "importances",
                        ] {
                            sqlx::query(audited(format!(
                                "DELETE FROM {table} WHERE job_id = $1 AND step >= $2"
                            )))
                            .bind(id)
                            .bind(step)
                            .execute(&mut *tx)
                            .await?;
                        }
                        // An evaluation at step s follows step s-1.
                        sqlx::query("DELETE FROM evals WHERE job_id = $1 AND step > $2")
                            .bind(id)
                            .bind(step)
                            .execute(&mut *tx)
                            .await?;
                        let last: Option<(i64, f64)> = sqlx::query_as(
                            "SELECT step, loss FROM step_scalars WHERE job_id = $1 ORDER BY step DESC LIMIT 1",
                        )
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        sqlx::query("UPDATE jobs SET step = $1, loss = $2 WHERE id = $3")
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
                        let live_dependents = "SELECT d.id FROM jobs d LEFT JOIN plans p ON p.id = d.plan_id
                              WHERE d.status IN ('queued', 'running')
                                AND (d.source_job_id = $1 OR p.estimation_job_id = $1)";
                        // One statement decides and deletes, so a job cannot be queued or resumed
                        // between the check and the delete.
                        let deleted = sqlx::query(audited(format!(
                            "DELETE FROM jobs WHERE id = $1
                               AND status NOT IN ('queued', 'running')
                               AND NOT EXISTS ({live_dependents})"
                        )))
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
                        let live: Vec<i64> =
                            sqlx::query_scalar(audited(format!("{live_dependents} ORDER BY d.id")))
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
                        if let Some(held) = &batch.held {
                            fence(&mut tx, held).await?;
                        }
                        for record in &batch.records {
                            match record {
                                JobRecord::Step(r) => write_step(&mut tx, job_id, r).await?,
                                JobRecord::Eval(r) => write_eval(&mut tx, job_id, r).await?,
                                JobRecord::Checkpoint { next_step } => {
                                    sqlx::query("UPDATE jobs SET checkpoint_step = $1 WHERE id = $2")
                                        .bind(*next_step as i64)
                                        .bind(job_id)
                                        .execute(&mut *tx)
                                        .await?;
                                }
                            }
                        }
                        for &step in &batch.drop_snapshots {
                            sqlx::query("DELETE FROM mask_snapshots WHERE job_id = $1 AND step = $2")
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
                        "SELECT DISTINCT step FROM mask_snapshots WHERE job_id = $1 ORDER BY step",
                    )
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn pinned_snapshot_steps(&self, id: i64) -> StoreResult<Vec<i64>> {
                    Ok(
                        sqlx::query_scalar("SELECT snapshot_step FROM plans WHERE estimation_job_id = $1")
                            .bind(id)
                            .fetch_all(&self.pool)
                            .await?,
                    )
                }

                async fn scalars(&self, id: i64, from: i64, to: i64) -> StoreResult<Vec<ScalarRow>> {
                    Ok(sqlx::query_as(
                        "SELECT step, loss, ce_loss, l1_loss, lr, grad_norm, seconds FROM step_scalars
                         WHERE job_id = $1 AND step BETWEEN $2 AND $3 ORDER BY step",
                    )
                    .bind(id)
                    .bind(from)
                    .bind(to)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn evals(&self, id: i64) -> StoreResult<Vec<Eval>> {
                    let rows: Vec<EvalRow> = sqlx::query_as(
                        "SELECT step, epoch, metrics, loss, seconds FROM evals WHERE job_id = $1 ORDER BY step",
                    )
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(decode_eval).collect()
                }

                async fn snapshot_steps(&self, id: i64, kind: MaskKind) -> StoreResult<Vec<i64>> {
                    Ok(sqlx::query_scalar(
                        "SELECT DISTINCT step FROM mask_snapshots WHERE job_id = $1 AND kind = $2 AND layer = 0
                         ORDER BY step",
                    )
                    .bind(id)
                    .bind(kind.as_str())
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn snapshot(&self, id: i64, kind: MaskKind, step: i64) -> StoreResult<Vec<Vec<f32>>> {
                    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
                        "SELECT vals FROM mask_snapshots WHERE job_id = $1 AND kind = $2 AND step = $3
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
                         WHERE job_id = $1 AND kind = $2 ORDER BY step, layer",
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
                        "SELECT step, vals FROM importances WHERE job_id = $1 AND kind = $2 ORDER BY step",
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
                        let mut tx = self.pool.begin().await?;
                        let id = insert_plan_row(
                            &mut tx,
                            estimation_job_id,
                            (settings, preview, plan, snapshot_step),
                        )
                        .await?;
                        tx.commit().await?;
                        Ok(id)
                    })
                    .await
                }

                async fn insert_study(
                    &self,
                    experiment_id: i64,
                    estimation_job_id: i64,
                    spec: &str,
                ) -> StoreResult<Study> {
                    let id: i64 = self
                        .watch(async {
                            Ok(sqlx::query_scalar(audited(format!(
                                "INSERT INTO studies (id, experiment_id, estimation_job_id, spec, created_at)
                                 VALUES ({}, $1, $2, $3, {NOW}) RETURNING id",
                                next_id("studies")
                            )))
                            .bind(experiment_id)
                            .bind(estimation_job_id)
                            .bind(spec)
                            .fetch_one(&self.pool)
                            .await?)
                        })
                        .await?;
                    self.study(id).await
                }

                async fn study(&self, id: i64) -> StoreResult<Study> {
                    sqlx::query_as::<_, StudyRow>("SELECT * FROM studies WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound { what: "study", id })?
                        .decode()
                }

                async fn studies(&self, experiment_id: Option<i64>) -> StoreResult<Vec<Study>> {
                    sqlx::query_as::<_, StudyRow>(
                        "SELECT * FROM studies WHERE (CAST($1 AS BIGINT) IS NULL OR experiment_id = $1)
                         ORDER BY id DESC",
                    )
                    .bind(experiment_id)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(StudyRow::decode)
                    .collect()
                }

                async fn studies_due(&self) -> StoreResult<Vec<Study>> {
                    sqlx::query_as::<_, StudyRow>(
                        "SELECT s.* FROM studies s JOIN jobs j ON j.id = s.estimation_job_id
                          WHERE NOT s.expanded AND NOT s.cancelled AND j.status = 'succeeded'
                          ORDER BY s.id",
                    )
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(StudyRow::decode)
                    .collect()
                }

                async fn queue_study_jobs(
                    &self,
                    id: i64,
                    jobs: &[StudyJob],
                    expand: bool,
                ) -> StoreResult<Vec<Job>> {
                    let ids = self
                        .watch(async {
                            let mut tx = self.pool.begin().await?;
                            // The study's row first: it locks the study (PostgreSQL) or the
                            // database (SQLite) until the commit, so a concurrent cancel or
                            // expansion waits and then sees this one's outcome.
                            let open = sqlx::query_as::<_, (i64, i64, bool)>(
                                "UPDATE studies SET expanded = (expanded OR $2)
                                  WHERE id = $1 AND NOT cancelled AND NOT (expanded AND $2)
                                  RETURNING experiment_id, estimation_job_id, expanded",
                            )
                            .bind(id)
                            .bind(expand)
                            .fetch_optional(&mut *tx)
                            .await?;
                            let Some((experiment_id, estimation_job_id, _)) = open else {
                                drop(tx);
                                let study = self.study(id).await?;
                                let why = if study.cancelled { "cancelled" } else { "already expanded" };
                                return Err(StoreError::Conflict(format!("study {id} is {why}")));
                            };
                            let mut ids = Vec::with_capacity(jobs.len());
                            for job in jobs {
                                let plan_id = match &job.plan {
                                    Some((settings, preview, plan, step)) => Some(
                                        insert_plan_row(
                                            &mut tx,
                                            estimation_job_id,
                                            (settings, preview, plan, *step),
                                        )
                                        .await?,
                                    ),
                                    None => None,
                                };
                                let study = Some((id, job.settings.as_str()));
                                ids.push(
                                    insert_queued_job(&mut tx, experiment_id, job.kind, plan_id, None, study)
                                        .await?,
                                );
                            }
                            tx.commit().await?;
                            Ok(ids)
                        })
                        .await?;
                    let mut queued = Vec::with_capacity(ids.len());
                    for job_id in ids {
                        queued.push(self.job(job_id).await?);
                    }
                    Ok(queued)
                }

                async fn cancel_study(&self, id: i64, error: Option<&str>) -> StoreResult<Study> {
                    self.watch(async {
                        sqlx::query("UPDATE studies SET cancelled = true, error = COALESCE($2, error) WHERE id = $1")
                            .bind(id)
                            .bind(error)
                            .execute(&self.pool)
                            .await?;
                        Ok(())
                    })
                    .await?;
                    self.study(id).await
                }

                async fn reopen_study(&self, id: i64) -> StoreResult<Study> {
                    let reopened = self
                        .watch(async {
                            Ok(sqlx::query("UPDATE studies SET cancelled = false WHERE id = $1 AND error IS NULL")
                                .bind(id)
                                .execute(&self.pool)
                                .await?
                                .rows_affected())
                        })
                        .await?;
                    let study = self.study(id).await?;
                    match (reopened, &study.error) {
                        (0, Some(error)) => Err(StoreError::Conflict(format!(
                            "study {id} stopped because {error}"
                        ))),
                        _ => Ok(study),
                    }
                }

                async fn jobs_of_study(&self, id: i64) -> StoreResult<Vec<Job>> {
                    sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE study_id = $1 ORDER BY id")
                        .bind(id)
                        .fetch_all(&self.pool)
                        .await?
                        .into_iter()
                        .map(JobRow::decode)
                        .collect()
                }

                async fn study_plan_settings(&self, id: i64) -> StoreResult<Vec<(i64, String)>> {
                    Ok(sqlx::query_as(
                        "SELECT j.id, p.settings FROM jobs j JOIN plans p ON p.id = j.plan_id
                          WHERE j.study_id = $1 ORDER BY j.id",
                    )
                    .bind(id)
                    .fetch_all(&self.pool)
                    .await?)
                }

                async fn delete_study(&self, id: i64) -> StoreResult<Vec<i64>> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        // The study's row first: it holds off a concurrent expansion.
                        let found = sqlx::query("UPDATE studies SET cancelled = true WHERE id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if found == 0 {
                            return Err(StoreError::NotFound { what: "study", id });
                        }
                        let live: Vec<i64> = sqlx::query_scalar(
                            "SELECT d.id FROM jobs d WHERE d.status IN ('queued', 'running')
                               AND (d.study_id = $1 OR d.source_job_id IN (SELECT id FROM jobs WHERE study_id = $1))
                             ORDER BY d.id",
                        )
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                        if !live.is_empty() {
                            drop(tx);
                            return Err(StoreError::Conflict(format!(
                                "study {id} has jobs queued or running ({live:?}); cancel it first"
                            )));
                        }
                        let ids: Vec<i64> =
                            sqlx::query_scalar("SELECT id FROM jobs WHERE study_id = $1 ORDER BY id")
                                .bind(id)
                                .fetch_all(&mut *tx)
                                .await?;
                        // Plans go with their stage-2 jobs (which cascade from them).
                        for sql in [
                            "DELETE FROM plans WHERE id IN (SELECT plan_id FROM jobs WHERE study_id = $1)",
                            "DELETE FROM jobs WHERE study_id = $1",
                            "DELETE FROM studies WHERE id = $1",
                        ] {
                            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
                        }
                        tx.commit().await?;
                        Ok(ids)
                    })
                    .await
                }

                async fn plan(&self, id: i64) -> StoreResult<(Plan, String)> {
                    sqlx::query_as::<_, PlanRow>("SELECT * FROM plans WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?
                        .ok_or(StoreError::NotFound { what: "plan", id })?
                        .decode()
                }

                async fn plans_of(&self, job_id: i64) -> StoreResult<Vec<Plan>> {
                    sqlx::query_as::<_, PlanRow>("SELECT * FROM plans WHERE estimation_job_id = $1 ORDER BY id")
                        .bind(job_id)
                        .fetch_all(&self.pool)
                        .await?
                        .into_iter()
                        .map(|row| row.decode().map(|(plan, _)| plan))
                        .collect()
                }

                async fn insert_result(&self, held: &Lease, result: &JobResult) -> StoreResult<()> {
                    self.watch(async {
                        let mut tx = self.pool.begin().await?;
                        fence(&mut tx, held).await?;
                        sqlx::query(
                            "INSERT INTO results (job_id, result) VALUES ($1, $2)
                             ON CONFLICT (job_id) DO UPDATE SET result = EXCLUDED.result",
                        )
                        .bind(result.job_id)
                        .bind(serde_json::to_string(result).expect("plain data"))
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query("UPDATE jobs SET best_score = $1 WHERE id = $2")
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
                        sqlx::query_scalar("SELECT result FROM results WHERE job_id = $1")
                            .bind(job_id)
                            .fetch_optional(&self.pool)
                            .await?;
                    text.as_deref().map(decode_result).transpose()
                }

                async fn results_of(&self, experiment_id: i64) -> StoreResult<Vec<JobResult>> {
                    let texts: Vec<String> = sqlx::query_scalar(
                        "SELECT r.result FROM results r JOIN jobs j ON j.id = r.job_id
                         WHERE j.experiment_id = $1 ORDER BY j.id",
                    )
                    .bind(experiment_id)
                    .fetch_all(&self.pool)
                    .await?;
                    texts.iter().map(|t| decode_result(t)).collect()
                }

                fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
                    self.change_feed()
                }

                async fn health(&self) -> StoreHealth {
                    let read = tokio::time::timeout(Duration::from_secs(2), async {
                        Ok(
                            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
                                .fetch_one(&self.pool)
                                .await?,
                        )
                    })
                    .await;
                    self.faults.lock().expect("faults").health(read)
                }
            }

            async fn write_eval(
                tx: &mut Transaction<'_, $db>,
                job_id: i64,
                record: &EvalRecord,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO evals (job_id, step, epoch, metrics, loss, seconds)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (job_id, step) DO UPDATE SET epoch = EXCLUDED.epoch,
                       metrics = EXCLUDED.metrics, loss = EXCLUDED.loss, seconds = EXCLUDED.seconds",
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
                tx: &mut Transaction<'_, $db>,
                job_id: i64,
                r: &StepRecord,
            ) -> StoreResult<()> {
                let step = r.step as i64;
                sqlx::query(
                    "INSERT INTO step_scalars (job_id, step, epoch, loss, ce_loss, l1_loss, lr, grad_norm, seconds)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (job_id, step) DO UPDATE SET epoch = EXCLUDED.epoch, loss = EXCLUDED.loss,
                       ce_loss = EXCLUDED.ce_loss, l1_loss = EXCLUDED.l1_loss, lr = EXCLUDED.lr,
                       grad_norm = EXCLUDED.grad_norm, seconds = EXCLUDED.seconds",
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
                // A running median would need every step; the mean of the newest is close enough
                // for ETA.
                sqlx::query(
                    "UPDATE jobs SET step = $1, total_steps = $2, loss = $3,
                     step_seconds = CASE WHEN step_seconds IS NULL THEN $4 ELSE 0.9 * step_seconds + 0.1 * $4 END
                     WHERE id = $5",
                )
                .bind(step + 1)
                .bind(r.total_steps as i64)
                .bind(r.loss as f64)
                .bind(r.seconds)
                .bind(job_id)
                .execute(&mut **tx)
                .await?;

                let rows = mask_rows(r);
                if !rows.is_empty() {
                    let mut snapshots: QueryBuilder<$db> =
                        QueryBuilder::new("INSERT INTO mask_snapshots (job_id, step, kind, layer, vals) ");
                    snapshots.push_values(&rows, |mut b, (kind, layer, values)| {
                        b.push_bind(job_id)
                            .push_bind(step)
                            .push_bind(*kind)
                            .push_bind(*layer as i64)
                            .push_bind(f32_bytes(values));
                    });
                    snapshots
                        .push(" ON CONFLICT (job_id, step, kind, layer) DO UPDATE SET vals = EXCLUDED.vals");
                    snapshots.build().execute(&mut **tx).await?;
                    let mut summaries: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO mask_summaries (job_id, step, kind, layer, q0, q25, q50, q75, q100, mean) ",
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
                    summaries.push(
                        " ON CONFLICT (job_id, step, kind, layer) DO UPDATE SET q0 = EXCLUDED.q0,
                          q25 = EXCLUDED.q25, q50 = EXCLUDED.q50, q75 = EXCLUDED.q75, q100 = EXCLUDED.q100,
                          mean = EXCLUDED.mean",
                    );
                    summaries.build().execute(&mut **tx).await?;
                }
                for (kind, values) in importance_rows(r) {
                    sqlx::query(
                        "INSERT INTO importances (job_id, step, kind, vals) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (job_id, step, kind) DO UPDATE SET vals = EXCLUDED.vals",
                    )
                    .bind(job_id)
                    .bind(step)
                    .bind(kind)
                    .bind(f64_bytes(&values))
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            }
        }
    };
}

pub(super) use impl_store;
