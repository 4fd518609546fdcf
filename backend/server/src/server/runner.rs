//! The job queue: a fixed number of slots, each job's training on a blocking thread, its
//! records sent to the recorder and its progress to the event stream.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightpeft_api::rest::{Eval, Event, Experiment, Job, JobKind, JobResult, JobStatus};
use lightpeft_engine::plan::PruningPlan;
use lightpeft_engine::train::{CancelToken, EvalRecord, Observer, StepRecord, TrainState};
use lightpeft_pipeline::{self as pipeline, DataSource, DeviceChoice, ForJob, JobSpec, RunFolder};
use tokio::sync::{Notify, broadcast};

use super::recorder::{Record, Recorder};
use super::store::Store;

/// The longest wait between two tries of a final status the storage refused.
const MAX_STATUS_RETRY: Duration = Duration::from_secs(5);

/// Where a job keeps its files: `<data>/jobs/<id>/`.
pub fn job_dir(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("jobs").join(id.to_string())
}

/// The queue and the jobs it runs.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

/// What every job's work is given, whichever job it is.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Data directory (models, data, job folders).
    pub data_dir: PathBuf,
    /// Estimation steps between resumable snapshots (0: none).
    pub checkpoint_every: usize,
    /// Benchmarking only: step records are not sent to the store.
    pub discard_records: bool,
    /// Where every job loads and trains its models.
    pub device: DeviceChoice,
    /// Bytes one job may use at its peak.
    pub job_memory_budget: u64,
}

struct Inner {
    store: Arc<dyn Store>,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    settings: JobSettings,
    slots: usize,
    queue: Mutex<VecDeque<(i64, bool)>>,
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
    /// A runner with `slots` concurrent jobs; starts its dispatcher.
    pub fn start(
        store: Arc<dyn Store>,
        recorder: Recorder,
        events: broadcast::Sender<Event>,
        slots: usize,
        settings: JobSettings,
    ) -> Runner {
        let runner = Runner {
            inner: Arc::new(Inner {
                store,
                recorder,
                events,
                settings,
                slots: slots.max(1),
                queue: Mutex::new(VecDeque::new()),
                running: Mutex::new(HashMap::new()),
                unsettled: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                wake: Notify::new(),
            }),
        };
        let dispatcher = runner.clone();
        tokio::spawn(async move {
            loop {
                dispatcher.inner.wake.notified().await;
                dispatcher.dispatch();
            }
        });
        runner
    }

    /// Queues a job (`resume`: continue a training job from its snapshot).
    pub fn enqueue(&self, id: i64, resume: bool) {
        self.inner
            .queue
            .lock()
            .expect("queue")
            .push_back((id, resume));
        self.inner.wake.notify_one();
    }

    /// Removes a queued job; false when it was not queued.
    pub fn dequeue(&self, id: i64) -> bool {
        let mut queue = self.inner.queue.lock().expect("queue");
        let before = queue.len();
        queue.retain(|(j, _)| *j != id);
        queue.len() != before
    }

    /// Asks a running job to stop after its current step; false when it is not running.
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

    /// Stops every running job after its current step (they end `interrupted`, resumable from
    /// the snapshot their stop writes) and waits for their records to be committed.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.queue.lock().expect("queue").clear();
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

    fn dispatch(&self) {
        loop {
            if self.inner.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let next = {
                let running = self.inner.running.lock().expect("running");
                if running.len() >= self.inner.slots {
                    return;
                }
                self.inner.queue.lock().expect("queue").pop_front()
            };
            let Some((id, resume)) = next else { return };
            let token = CancelToken::new();
            {
                let mut running = self.inner.running.lock().expect("running");
                if running.contains_key(&id) {
                    // Queued twice: the store lets only one claim win, and the running one
                    // keeps its cancel token.
                    continue;
                }
                running.insert(id, token.clone());
            }
            let runner = self.clone();
            tokio::spawn(async move {
                runner.run(id, resume, token).await;
                runner.inner.running.lock().expect("running").remove(&id);
                runner.inner.wake.notify_one();
            });
        }
    }

    /// Moves a job on (see `store::leaves_for`); false when the store refused.
    ///
    /// A final status the storage cannot take (a full disk) is tried again, every few seconds,
    /// until it lands: a job whose work has ended must not stay `running` in the store. The
    /// job keeps its slot meanwhile, and shutdown waits for it as for any running job (a
    /// restart marks it interrupted if it never lands).
    async fn set_status(&self, id: i64, status: JobStatus, error: Option<&str>) -> bool {
        // What clients read: paths inside the data directory, never where it lives.
        let error =
            error.map(|e| super::experiments::inside_data_dir(&self.inner.settings.data_dir, e));
        let error = error.as_deref();
        let mut wait = Duration::from_millis(250);
        loop {
            match self.inner.store.set_status(id, status, error).await {
                Ok(job) => {
                    self.publish(Event::Job { job });
                    return true;
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
                        self.publish(Event::Job {
                            job: self.current(job),
                        });
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_STATUS_RETRY);
                }
                Err(e) => {
                    tracing::error!(job_id = id, ?status, error = %e, "cannot set the status");
                    return false;
                }
            }
        }
    }

    async fn run(&self, id: i64, resume: bool, cancel: CancelToken) {
        let store = &self.inner.store;
        let prepared = async {
            let job = store.job(id).await.map_err(|e| e.to_string())?;
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
            Ok::<_, String>((job, experiment, plan))
        }
        .await;
        let (job, experiment, plan) = match prepared {
            Ok(p) => p,
            Err(message) => {
                self.set_status(id, JobStatus::Failed, Some(&message)).await;
                return;
            }
        };
        // The claim: only a job still queued starts (one cancelled or deleted meanwhile
        // does not), and only once.
        match store.set_status(id, JobStatus::Running, None).await {
            Ok(job) => {
                // A final status of an earlier run no longer stands in for this one's.
                self.inner.unsettled.lock().expect("unsettled").remove(&id);
                self.publish(Event::Job { job });
            }
            Err(e) if e.is_storage_fault() => {
                // Still queued in the store: it starts once the storage takes writes again.
                tracing::warn!(job_id = id, error = %e, "cannot claim the job; queued again");
                let runner = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(MAX_STATUS_RETRY).await;
                    runner.enqueue(id, resume);
                });
                return;
            }
            Err(e) => {
                tracing::debug!(job_id = id, error = %e, "not claimed");
                return;
            }
        }
        let stop = cancel.clone();
        let work = Work {
            job,
            experiment,
            plan,
            resume,
            settings: self.inner.settings.clone(),
            store: store.clone(),
            recorder: self.inner.recorder.clone(),
            events: self.inner.events.clone(),
            cancel,
            handle: tokio::runtime::Handle::current(),
        };
        let mut task = tokio::task::spawn_blocking(move || work.execute());
        // Progress for the job list, at most once a second, while the work runs.
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut last_step = -1;
        let joined = loop {
            tokio::select! {
                joined = &mut task => break joined,
                _ = ticker.tick() => {
                    // Records that cannot be written fail the job: no use training on.
                    if self.inner.recorder.has_failed(id) {
                        stop.cancel();
                    }
                    if let Ok(job) = store.job(id).await && job.step != last_step {
                        last_step = job.step;
                        self.publish(Event::Job { job });
                    }
                }
            }
        };
        // Every record of the job is committed before its final status is visible, and a job
        // with records missing never ends `succeeded` (nor cancelled: its steps are lost).
        if let Err(e) = self.inner.recorder.finish(id).await {
            let message = format!("the job's records could not be written: {e}");
            self.set_status(id, JobStatus::Failed, Some(&message)).await;
            return;
        }
        match joined {
            Ok(Ok(Ending::Done(result))) => {
                if let Some(result) = result
                    && let Err(e) = store.insert_result(&result).await
                {
                    let message = format!("cannot store the result: {e}");
                    self.set_status(id, JobStatus::Failed, Some(&message)).await;
                    return;
                }
                self.set_status(id, JobStatus::Succeeded, None).await;
            }
            Ok(Ok(Ending::Stopped)) => {
                if self.inner.shutting_down.load(Ordering::SeqCst) {
                    let why = "the server shut down; resume to continue";
                    self.set_status(id, JobStatus::Interrupted, Some(why)).await;
                } else {
                    self.set_status(id, JobStatus::Cancelled, Some("cancelled on request"))
                        .await;
                }
            }
            Ok(Err(message)) => {
                self.set_status(id, JobStatus::Failed, Some(&message)).await;
            }
            Err(join) => {
                let message = format!("the job's thread panicked: {join}");
                self.set_status(id, JobStatus::Failed, Some(&message)).await;
            }
        }
    }
}

/// Everything one job's blocking thread needs.
struct Work {
    job: Job,
    experiment: Experiment,
    plan: Option<(i64, Option<usize>, PruningPlan)>,
    resume: bool,
    settings: JobSettings,
    store: Arc<dyn Store>,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    cancel: CancelToken,
    handle: tokio::runtime::Handle,
}

impl Work {
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
                stage1: job_dir(data_dir, *estimation_id).join(pipeline::store::STAGE1),
            },
            (JobKind::Finetune, None) => return Err(usage("a fine-tuning job needs a plan")),
            (JobKind::Evaluation, _) => {
                let source = self
                    .job
                    .source_job_id
                    .ok_or_else(|| usage("an evaluation job needs a source job"))?;
                pipeline::Work::Evaluation {
                    model: job_dir(data_dir, source).join(pipeline::store::MODEL),
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
        let dir = job_dir(data_dir, self.job.id);
        std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::file(&dir, e))?;
        let every = self.settings.checkpoint_every;
        let mut observer = JobObserver {
            discard: self.settings.discard_records,
            job_id: self.job.id,
            recorder: self.recorder.clone(),
            events: self.events.clone(),
            checkpoint: (trains && every > 0)
                .then(|| (dir.join(pipeline::store::CHECKPOINTS), every)),
            store: self.store.clone(),
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
        let outcome = pipeline::run(spec, &RunFolder::new(&dir), &mut observer, &self.cancel)?;
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
    checkpoint: Option<(PathBuf, usize)>,
    store: Arc<dyn Store>,
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
                self.job_id,
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
                store.truncate_records(self.job_id, next as i64),
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
        self.checkpoint.as_ref().map(|(_, every)| *every)
    }

    /// The pipeline has stored the snapshot by now; the recorder notes it (and thins older ones).
    fn on_checkpoint(&mut self, state: &TrainState) {
        if let Some((root, _)) = &self.checkpoint {
            self.recorder.send(Record::Checkpoint {
                job_id: self.job_id,
                next_step: state.next_step,
                root: root.clone(),
            });
        }
    }
}
