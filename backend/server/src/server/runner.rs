//! The job runner: a worker of the queue the store keeps. It claims queued jobs up to its
//! slots, each with a lease it renews every second while the job trains on a blocking thread
//! (records to the recorder, progress to the event stream), and settles each attempt with its
//! final status. Every process with a runner also reaps: jobs whose lease expired (a worker
//! that died or froze) are interrupted and queued again. A runner without a worker (`serve
//! --no-local-worker`) only reaps and publishes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightpeft_api::rest::{Eval, Event, Experiment, Job, JobKind, JobResult, JobStatus};
use lightpeft_engine::plan::PruningPlan;
use lightpeft_engine::train::{CancelToken, EvalRecord, Observer, StepRecord, TrainState};
use lightpeft_pipeline::{self as pipeline, DataSource, DeviceChoice, ForJob, JobSpec};
use tokio::sync::{Notify, broadcast};

use super::artifacts::Artifacts;
use super::recorder::{Record, Recorder};
use super::store::{Claim, Lease, Store, StoreError, WorkerInfo};

/// The longest wait between two tries of a final status the storage refused.
const MAX_STATUS_RETRY: Duration = Duration::from_secs(5);

/// How often the queue is looked at for jobs queued elsewhere (a job queued by this process
/// wakes the runner at once), expired leases are reaped and running leases renewed.
const TICK: Duration = Duration::from_secs(1);

/// How often a worker records its heartbeat in the workers table.
const WORKER_HEARTBEAT: Duration = Duration::from_secs(5);

/// The queue's worker and the jobs it runs.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

/// What every job's work is given, whichever job it is.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Data directory (models, data, the local cache of stored artifacts).
    pub data_dir: PathBuf,
    /// Where jobs keep their files (models, summaries, resumable snapshots).
    pub artifacts: Artifacts,
    /// Estimation steps between resumable snapshots (0: none).
    pub checkpoint_every: usize,
    /// Benchmarking only: step records are not sent to the store.
    pub discard_records: bool,
    /// Where every job loads and trains its models.
    pub device: DeviceChoice,
    /// Bytes one job may use at its peak.
    pub job_memory_budget: u64,
}

/// How the runner takes part in the queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// The worker that claims and trains jobs here (its slots, name and device); None: this
    /// process trains nothing and only reaps expired leases.
    pub worker: Option<WorkerInfo>,
    /// How long a claim holds without renewal; renewed every second while the job trains.
    pub lease: Duration,
    /// Claims a job gets before the reaper leaves it interrupted instead of queuing it again.
    pub max_attempts: u32,
}

struct Inner {
    store: Arc<dyn Store>,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    settings: JobSettings,
    queue: QueueSettings,
    running: Mutex<HashMap<i64, CancelToken>>,
    /// Jobs whose work ended with a final status the storage refused at first (it is tried
    /// again until it lands): what reads show while the store still says `running`. Kept
    /// after it lands (a read that saw `running` just before must still find it) until the
    /// job is claimed again.
    unsettled: Mutex<HashMap<i64, (JobStatus, String)>>,
    shutting_down: AtomicBool,
    wake: Notify,
}

/// How a job's work ended.
enum Ending {
    Done(Option<JobResult>),
    Stopped,
}

impl Runner {
    /// A runner of the store's queue; starts its dispatcher (claims, reaps, heartbeats).
    pub fn start(
        store: Arc<dyn Store>,
        recorder: Recorder,
        events: broadcast::Sender<Event>,
        queue: QueueSettings,
        settings: JobSettings,
    ) -> Runner {
        let runner = Runner {
            inner: Arc::new(Inner {
                store,
                recorder,
                events,
                settings,
                queue,
                running: Mutex::new(HashMap::new()),
                unsettled: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                wake: Notify::new(),
            }),
        };
        let dispatcher = runner.clone();
        tokio::spawn(async move { dispatcher.dispatcher().await });
        runner
    }

    /// The worker's name, when this runner trains jobs.
    pub fn worker_name(&self) -> Option<&str> {
        self.inner.queue.worker.as_ref().map(|w| w.name.as_str())
    }

    /// Looks at the queue now (a job was queued here).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops a job running here after its current step; false when it is not running here.
    pub fn cancel(&self, id: i64) -> bool {
        match self.inner.running.lock().expect("running").get(&id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Whether a job is running in this process.
    pub fn is_running(&self, id: i64) -> bool {
        self.inner
            .running
            .lock()
            .expect("running")
            .contains_key(&id)
    }

    /// The job as it stands: a final status not yet stored replaces the stored one.
    pub fn current(&self, mut job: Job) -> Job {
        if job.status != JobStatus::Running {
            return job;
        }
        if let Some((status, why)) = self.inner.unsettled.lock().expect("unsettled").get(&job.id) {
            job.status = *status;
            job.error = Some(why.clone());
        }
        job
    }

    /// Publishes an event to every stream.
    pub fn publish(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    /// Stops claiming, stops every running job after its current step (they end
    /// `interrupted`, resumable from the snapshot their stop writes) and waits for their
    /// records to be committed.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        for token in self.inner.running.lock().expect("running").values() {
            token.cancel();
        }
        for _ in 0..1200 {
            if self.inner.running.lock().expect("running").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.recorder.flush().await;
    }

    /// The runner's life: registers its worker, then every tick (or wake: a job queued here,
    /// or a change another process announced) reaps expired leases, beats the worker's
    /// heartbeat and claims what its free slots can take.
    async fn dispatcher(&self) {
        let store = &self.inner.store;
        if let Some(worker) = &self.inner.queue.worker
            && let Err(e) = store.worker_heartbeat(worker, true).await
        {
            tracing::warn!(worker = %worker.name, error = %e, "cannot register the worker");
        }
        let mut last_beat = Instant::now();
        let mut last_reap: Option<Instant> = None;
        let mut changes = store.changes();
        loop {
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
                _ = changed(&mut changes) => {}
            }
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            // Announcements come with every batch of steps anywhere: reaping stays once a tick.
            if last_reap.is_none_or(|at| at.elapsed() >= TICK) {
                last_reap = Some(Instant::now());
                self.reap().await;
            }
            if let Some(worker) = &self.inner.queue.worker
                && last_beat.elapsed() >= WORKER_HEARTBEAT
            {
                last_beat = Instant::now();
                if let Err(e) = store.worker_heartbeat(worker, false).await {
                    tracing::warn!(worker = %worker.name, error = %e, "heartbeat not recorded");
                }
            }
            self.claim_free_slots().await;
        }
    }

    /// Interrupts (and queues again) the jobs whose lease expired, publishing each.
    async fn reap(&self) {
        let max = i64::from(self.inner.queue.max_attempts);
        match self.inner.store.reap(max).await {
            Ok(reaped) => {
                for (id, status) in reaped {
                    tracing::warn!(job_id = id, ?status, "a worker stopped renewing its lease");
                    if let Ok(job) = self.inner.store.job(id).await {
                        self.publish(Event::job(job));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for expired leases"),
        }
    }

    /// Claims queued jobs while this worker has free slots.
    async fn claim_free_slots(&self) {
        let Some(worker) = &self.inner.queue.worker else {
            return;
        };
        loop {
            if self.inner.shutting_down.load(Ordering::SeqCst)
                || self.inner.running.lock().expect("running").len() >= worker.slots
            {
                return;
            }
            let claim = match self
                .inner
                .store
                .claim(&worker.name, self.inner.queue.lease)
                .await
            {
                Ok(Some(claim)) => claim,
                Ok(None) => return,
                Err(e) => {
                    // Still queued in the store: the next tick tries again.
                    tracing::warn!(error = %e, "cannot claim a job");
                    return;
                }
            };
            let id = claim.job.id;
            let token = CancelToken::new();
            self.inner
                .running
                .lock()
                .expect("running")
                .insert(id, token.clone());
            // A final status of an earlier attempt no longer stands in for this one's.
            self.inner.unsettled.lock().expect("unsettled").remove(&id);
            self.inner.recorder.hold(claim.lease.clone());
            self.publish(Event::job(claim.job.clone()));
            let runner = self.clone();
            tokio::spawn(async move {
                runner.run(claim, token).await;
                runner.inner.running.lock().expect("running").remove(&id);
                runner.inner.wake.notify_one();
            });
        }
    }

    /// Ends the attempt `held` with `status`.
    ///
    /// A final status the storage cannot take (a full disk) is tried again, every few seconds,
    /// until it lands: a job whose work has ended must not stay `running` in the store. The
    /// job keeps its slot meanwhile, and shutdown waits for it as for any running job (its
    /// lease then expires and the reaper takes it). An attempt that lost its lease writes
    /// nothing.
    async fn settle(&self, held: &Lease, status: JobStatus, error: Option<&str>) {
        let id = held.job_id;
        // What clients read: paths inside the data directory, never where it lives.
        let error =
            error.map(|e| super::experiments::inside_data_dir(&self.inner.settings.data_dir, e));
        let error = error.as_deref();
        let mut wait = Duration::from_millis(250);
        loop {
            match self.inner.store.settle(held, status, error).await {
                Ok(job) => {
                    self.publish(Event::job(job));
                    return;
                }
                Err(e) if e.is_storage_fault() => {
                    tracing::error!(job_id = id, ?status, error = %e,
                        "cannot set the final status; trying again in {wait:?}");
                    let why = format!(
                        "{}(not stored yet: {e}; it will be once space returns)",
                        error.map(|m| format!("{m} ")).unwrap_or_default()
                    );
                    let first = (self.inner.unsettled.lock().expect("unsettled"))
                        .insert(id, (status, why))
                        .is_none();
                    if first && let Ok(job) = self.inner.store.job(id).await {
                        self.publish(Event::job(self.current(job)));
                    }
                    // Still ours while we try: the lease must not expire meanwhile.
                    let _ = self.inner.store.renew(held, self.inner.queue.lease).await;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_STATUS_RETRY);
                }
                Err(e @ StoreError::LeaseLost { .. }) => {
                    tracing::warn!(job_id = id, ?status, error = %e, "not settled: the lease is lost");
                    return;
                }
                Err(e) => {
                    tracing::error!(job_id = id, ?status, error = %e, "cannot set the status");
                    return;
                }
            }
        }
    }

    async fn run(&self, claim: Claim, cancel: CancelToken) {
        let store = &self.inner.store;
        let Claim { job, lease, resume } = claim;
        let id = job.id;
        let prepared = async {
            let experiment = store
                .experiment(job.experiment_id)
                .await
                .map_err(|e| e.to_string())?;
            let plan = match job.plan_id {
                Some(p) => {
                    let (plan, engine_json) = store.plan(p).await.map_err(|e| e.to_string())?;
                    let engine: PruningPlan =
                        serde_json::from_str(&engine_json).map_err(|e| format!("plan {p}: {e}"))?;
                    Some((plan.estimation_job_id, plan.preview.settings.epochs, engine))
                }
                None => None,
            };
            // An attempt that starts over drops what an earlier attempt recorded.
            if !resume && lease.attempt > 1 {
                store
                    .truncate_records(id, 0, Some(&lease))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>((experiment, plan))
        }
        .await;
        let (experiment, plan) = match prepared {
            Ok(p) => p,
            Err(message) => {
                self.inner.recorder.finish(id).await.ok();
                self.settle(&lease, JobStatus::Failed, Some(&message)).await;
                return;
            }
        };
        let stop = cancel.clone();
        let work = Work {
            job,
            experiment,
            plan,
            resume,
            held: lease.clone(),
            settings: self.inner.settings.clone(),
            store: store.clone(),
            recorder: self.inner.recorder.clone(),
            events: self.inner.events.clone(),
            cancel,
            handle: tokio::runtime::Handle::current(),
        };
        let mut task = tokio::task::spawn_blocking(move || work.execute());
        // Every tick: the lease renewed (and a cancel asked elsewhere heard), progress for
        // the job list published.
        let mut ticker = tokio::time::interval(TICK);
        let mut last_step = -1;
        let mut lost = false;
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = ticker.tick() => {
                    // Records that cannot be written fail the job: no use training on.
                    if self.inner.recorder.has_failed(id) {
                        stop.cancel();
                    }
                    match store.renew(&lease, self.inner.queue.lease).await {
                        Ok(true) => stop.cancel(),
                        Ok(false) => {}
                        Err(e @ StoreError::LeaseLost { .. }) => {
                            if !lost {
                                tracing::warn!(job_id = id, error = %e, "lease lost; abandoning the job");
                            }
                            lost = true;
                            stop.cancel();
                        }
                        Err(e) => tracing::warn!(job_id = id, error = %e, "lease not renewed"),
                    }
                    if let Ok(job) = store.job(id).await && job.step != last_step {
                        last_step = job.step;
                        self.publish(Event::job(job));
                    }
                }
            }
        };
        // Every record of the job is committed before its final status is visible, and a job
        // with records missing never ends `succeeded` (nor cancelled: its steps are lost).
        let recorded = self.inner.recorder.finish(id).await;
        if lost || matches!(recorded, Err(StoreError::LeaseLost { .. })) {
            // Another attempt owns the job now: nothing of this one is written.
            return;
        }
        if let Err(e) = recorded {
            let message = format!("the job's records could not be written: {e}");
            self.settle(&lease, JobStatus::Failed, Some(&message)).await;
            return;
        }
        match joined {
            Ok(Ok(Ending::Done(result))) => {
                if let Some(result) = result
                    && let Err(e) = store.insert_result(&lease, &result).await
                {
                    if matches!(e, StoreError::LeaseLost { .. }) {
                        return;
                    }
                    let message = format!("cannot store the result: {e}");
                    self.settle(&lease, JobStatus::Failed, Some(&message)).await;
                    return;
                }
                self.settle(&lease, JobStatus::Succeeded, None).await;
            }
            Ok(Ok(Ending::Stopped)) => {
                if self.inner.shutting_down.load(Ordering::SeqCst) {
                    let why = "the server shut down; resume to continue";
                    self.settle(&lease, JobStatus::Interrupted, Some(why)).await;
                } else {
                    self.settle(&lease, JobStatus::Cancelled, Some("cancelled on request"))
                        .await;
                }
            }
            Ok(Err(message)) => {
                self.settle(&lease, JobStatus::Failed, Some(&message)).await;
            }
            Err(join) => {
                let message = format!("the job's thread panicked: {join}");
                self.settle(&lease, JobStatus::Failed, Some(&message)).await;
            }
        }
    }
}

/// Waits for the next announced change; forever when the store announces none (or stopped).
pub(super) async fn changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Everything one job's blocking thread needs.
struct Work {
    job: Job,
    experiment: Experiment,
    plan: Option<(i64, Option<usize>, PruningPlan)>,
    resume: bool,
    /// The attempt: every write of the job names it.
    held: Lease,
    settings: JobSettings,
    store: Arc<dyn Store>,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    cancel: CancelToken,
    handle: tokio::runtime::Handle,
}

impl Work {
    /// Another job's stored folder as a local one (downloaded once on this machine).
    fn local_copy(&self, job_id: i64, name: &str) -> crate::error::Result<PathBuf> {
        self.handle
            .block_on(self.settings.artifacts.local_copy(job_id, name))
    }

    fn execute(self) -> Result<Ending, String> {
        self.run().map_err(|e| e.to_string())
    }

    /// The job as the pipeline's description, run there; only the store's bookkeeping is
    /// done here.
    fn run(&self) -> crate::error::Result<Ending> {
        let data_dir = &self.settings.data_dir;
        let mut params = self.experiment.params.clone();
        if let Some((_, Some(epochs), _)) = &self.plan {
            params.epochs = *epochs;
        }
        // A study's job runs its own seed (and a baseline its targets) over the experiment's.
        params.apply(&self.job.settings).map_err(|errors| {
            crate::error::Error::Usage(format!(
                "job {}'s settings: {}",
                self.job.id,
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let in_data = |f: &Option<String>| f.as_ref().map(|f| data_dir.join(f));
        let source = DataSource {
            task: self.experiment.task.clone(),
            train_file: in_data(&self.experiment.train_file),
            dev_file: in_data(&self.experiment.dev_file),
        };
        let usage = |m: &str| crate::error::Error::Usage(m.to_string());
        let work = match (self.job.kind, &self.plan) {
            (JobKind::Estimation, _) => pipeline::Work::Estimation,
            (JobKind::Baseline, _) => pipeline::Work::Baseline,
            (JobKind::Finetune, Some((estimation_id, _, plan))) => pipeline::Work::Finetune {
                plan: Box::new(plan.clone()),
                stage1: self.local_copy(*estimation_id, pipeline::store::STAGE1)?,
            },
            (JobKind::Finetune, None) => return Err(usage("a fine-tuning job needs a plan")),
            (JobKind::Evaluation, _) => {
                let source = self
                    .job
                    .source_job_id
                    .ok_or_else(|| usage("an evaluation job needs a source job"))?;
                pipeline::Work::Evaluation {
                    model: self.local_copy(source, pipeline::store::MODEL)?,
                }
            }
        };
        // Every training job (not an evaluation) snapshots and resumes the same way.
        let trains = self.job.kind != JobKind::Evaluation;
        let resume = match (self.resume, trains) {
            (true, true) => {
                let next = block_on(&self.handle, self.store.checkpoint_step(self.job.id))
                    .map_err(crate::error::Error::Usage)?
                    .ok_or_else(|| usage("the job has no snapshot to resume from"))?;
                Some(next as usize)
            }
            _ => None,
        };
        let every = self.settings.checkpoint_every;
        let mut observer = JobObserver {
            discard: self.settings.discard_records,
            job_id: self.job.id,
            recorder: self.recorder.clone(),
            events: self.events.clone(),
            checkpoint_every: (trains && every > 0).then_some(every),
            store: self.store.clone(),
            held: self.held.clone(),
            handle: self.handle.clone(),
        };
        let spec = JobSpec {
            work,
            model: self.experiment.model.clone(),
            source,
            params,
            device: self.settings.device,
            resume,
            data_dir: data_dir.clone(),
            memory_budget: Some(self.settings.job_memory_budget),
        };
        let artifacts = (self.settings.artifacts).for_job(self.job.id, self.handle.clone());
        let outcome = pipeline::run(spec, &artifacts, &mut observer, &self.cancel)?;
        for warning in &outcome.warnings {
            tracing::warn!(job_id = self.job.id, "{warning}");
        }
        if outcome.cancelled {
            return Ok(Ending::Stopped);
        }
        if self.job.kind == JobKind::Estimation {
            return Ok(Ending::Done(None));
        }
        let plan_id = self
            .job
            .plan_id
            .filter(|_| self.job.kind != JobKind::Evaluation);
        Ok(Ending::Done(Some(JobResult::from(ForJob {
            job_id: self.job.id,
            plan_id,
            outcome: &outcome,
        }))))
    }
}

/// Waits on a store call from a job's blocking thread; the error as its message.
fn block_on<T>(
    handle: &tokio::runtime::Handle,
    fut: impl std::future::Future<Output = super::store::StoreResult<T>>,
) -> Result<T, String> {
    handle.block_on(fut).map_err(|e| e.to_string())
}

/// The pipeline's reporter for one job: records to the recorder, progress to the stream, the
/// run's plan inputs to the store before it trains, and each stored snapshot to the recorder.
struct JobObserver {
    discard: bool,
    job_id: i64,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    checkpoint_every: Option<usize>,
    store: Arc<dyn Store>,
    held: Lease,
    handle: tokio::runtime::Handle,
}

impl pipeline::Reporter for JobObserver {
    fn on_prepared(&mut self, prepared: &pipeline::Prepared) -> pipeline::Result<()> {
        let modules =
            (prepared.modules.as_ref()).map(|m| serde_json::to_string(m).expect("plain data"));
        let store = &self.store;
        block_on(
            &self.handle,
            store.set_job_plan_inputs(
                &self.held,
                prepared.total_steps,
                prepared.metric,
                modules.as_deref(),
            ),
        )
        .map_err(pipeline::Error::Caller)?;
        if let Some(next) = prepared.resume_from {
            // Steps recorded after the snapshot are taken again: drop them first.
            block_on(
                &self.handle,
                store.truncate_records(self.job_id, next as i64, Some(&self.held)),
            )
            .map_err(pipeline::Error::Caller)?;
        }
        Ok(())
    }

    fn on_checkpoint_failed(&mut self, next_step: usize, error: &pipeline::Error) {
        tracing::warn!(job_id = self.job_id, next_step, %error, "snapshot not saved");
    }
}

impl Observer for JobObserver {
    fn on_step(&mut self, record: &StepRecord) {
        let _ = self.events.send(Event::Step {
            job_id: self.job_id,
            step: record.step as i64,
            total_steps: record.total_steps as i64,
            loss: record.loss as f64,
            lr: record.lr,
            snapshot: record.head_masks.is_some() || record.neuron_masks.is_some(),
        });
        if self.discard {
            return;
        }
        self.recorder.send(Record::Step {
            job_id: self.job_id,
            record: Box::new(record.clone()),
        });
    }

    fn on_eval(&mut self, record: &EvalRecord) {
        let _ = self.events.send(Event::Eval {
            job_id: self.job_id,
            eval: Eval {
                step: record.step as i64,
                epoch: record.epoch as i64,
                metrics: record.metrics.clone(),
                loss: record.loss,
                seconds: record.seconds,
            },
        });
        self.recorder.send(Record::Eval {
            job_id: self.job_id,
            record: record.clone(),
        });
    }

    fn checkpoint_every(&self) -> Option<usize> {
        self.checkpoint_every
    }

    /// The pipeline has stored the snapshot by now; the recorder notes it (and thins older ones).
    fn on_checkpoint(&mut self, state: &TrainState) {
        if self.checkpoint_every.is_some() {
            self.recorder.send(Record::Checkpoint {
                job_id: self.job_id,
                next_step: state.next_step,
            });
        }
    }
}
