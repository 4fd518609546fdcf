//! The job queue: a fixed number of slots, each job's training on a blocking thread, its
//! records sent to the recorder and its progress to the event stream.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightpeft_api::rest::{Eval, Event, Experiment, Job, JobKind, JobResult, JobStatus};
use lightpeft_engine::Device;
use lightpeft_engine::export::{export_model, load_exported};
use lightpeft_engine::pipeline::{apply_plan, model_shape, summarize_estimation};
use lightpeft_engine::plan::PruningPlan;
use lightpeft_engine::train::{
    CancelToken, EvalRecord, Observer, Stage, StepRecord, TrainOutcome, TrainState, train_from,
};
use tokio::sync::{Notify, broadcast};

use super::recorder::{Record, Recorder};
use super::store::Store;
use crate::commands::{EstimationFile, baseline_values, best_eval};
use crate::jobs::{self, DataSource};

/// Where a job keeps its files: `<data>/jobs/<id>/`.
pub fn job_dir(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("jobs").join(id.to_string())
}

/// The queue and the jobs it runs.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    data_dir: PathBuf,
    slots: usize,
    checkpoint_every: usize,
    discard_records: bool,
    queue: Mutex<VecDeque<(i64, bool)>>,
    running: Mutex<HashMap<i64, CancelToken>>,
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
        store: Store,
        recorder: Recorder,
        events: broadcast::Sender<Event>,
        data_dir: PathBuf,
        slots: usize,
        checkpoint_every: usize,
        discard_records: bool,
    ) -> Runner {
        let runner = Runner {
            inner: Arc::new(Inner {
                store,
                recorder,
                events,
                data_dir,
                slots: slots.max(1),
                checkpoint_every,
                discard_records,
                queue: Mutex::new(VecDeque::new()),
                running: Mutex::new(HashMap::new()),
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

    /// Queues a job (`resume`: continue an estimation from its snapshot).
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
            self.inner
                .running
                .lock()
                .expect("running")
                .insert(id, token.clone());
            let runner = self.clone();
            tokio::spawn(async move {
                runner.run(id, resume, token).await;
                runner.inner.running.lock().expect("running").remove(&id);
                runner.inner.wake.notify_one();
            });
        }
    }

    async fn set_status(&self, id: i64, status: JobStatus, error: Option<&str>) {
        match self.inner.store.set_status(id, status, error).await {
            Ok(job) => self.publish(Event::Job { job }),
            Err(e) => eprintln!(
                "job {id}: cannot set status {status:?}: {}",
                e.error.message
            ),
        }
    }

    async fn run(&self, id: i64, resume: bool, cancel: CancelToken) {
        let store = &self.inner.store;
        let prepared = async {
            let job = store.job(id).await.map_err(|e| e.error.message)?;
            let experiment = store
                .experiment(job.experiment_id)
                .await
                .map_err(|e| e.error.message)?;
            let plan = match job.plan_id {
                Some(p) => {
                    let (plan, engine_json) = store.plan(p).await.map_err(|e| e.error.message)?;
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
        self.set_status(id, JobStatus::Running, None).await;
        let work = Work {
            job,
            experiment,
            plan,
            resume,
            data_dir: self.inner.data_dir.clone(),
            store: store.clone(),
            recorder: self.inner.recorder.clone(),
            events: self.inner.events.clone(),
            checkpoint_every: self.inner.checkpoint_every,
            discard_records: self.inner.discard_records,
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
                    if let Ok(job) = store.job(id).await && job.step != last_step {
                        last_step = job.step;
                        self.publish(Event::Job { job });
                    }
                }
            }
        };
        // Every record of the job is committed before its final status is visible.
        self.inner.recorder.flush().await;
        match joined {
            Ok(Ok(Ending::Done(result))) => {
                if let Some(result) = result
                    && let Err(e) = store.insert_result(&result).await
                {
                    let message = format!("cannot store the result: {}", e.error.message);
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
            Ok(Err(message)) => self.set_status(id, JobStatus::Failed, Some(&message)).await,
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
    data_dir: PathBuf,
    store: Store,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    checkpoint_every: usize,
    discard_records: bool,
    cancel: CancelToken,
    handle: tokio::runtime::Handle,
}

impl Work {
    fn execute(self) -> Result<Ending, String> {
        self.run().map_err(|e| e.to_string())
    }

    fn run(&self) -> crate::error::Result<Ending> {
        let mut params = self.experiment.params.clone();
        if let Some((_, Some(epochs), _)) = &self.plan {
            params.epochs = *epochs;
        }
        let in_data = |f: &Option<String>| f.as_ref().map(|f| self.data_dir.join(f));
        let source = DataSource {
            task: self.experiment.task.clone(),
            train_file: in_data(&self.experiment.train_file),
            dev_file: in_data(&self.experiment.dev_file),
        };
        let model_dir = jobs::resolve_model(&self.experiment.model, &self.data_dir)?;
        let dataset = jobs::limit_examples(jobs::load_dataset(&source, &self.data_dir)?, &params);
        let splits = jobs::tokenize(&dataset, &model_dir, &params)?;
        let dir = job_dir(&self.data_dir, self.job.id);
        std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::file(&dir, e))?;
        reset_peak_rss();
        let stage = match self.job.kind {
            JobKind::Estimation => Stage::Estimation,
            JobKind::Finetune => Stage::Finetune,
            JobKind::Baseline => Stage::Baseline,
            JobKind::Evaluation => return self.evaluate(&dataset, &splits.dev, &params),
        };
        let model = match (&self.job.kind, &self.plan) {
            (JobKind::Finetune, Some((estimation_id, _, plan))) => {
                let stage1 = job_dir(&self.data_dir, *estimation_id).join("stage1");
                let mut model = load_exported(&stage1, &Device::Cpu)?;
                apply_plan(&mut model, plan)?;
                model
            }
            (JobKind::Finetune, None) => {
                return Err(crate::error::Error::Usage(
                    "a fine-tuning job needs a plan".into(),
                ));
            }
            (kind, _) => jobs::fresh_model(
                &model_dir,
                &params,
                dataset.labels.len(),
                *kind == JobKind::Estimation,
            )?,
        };
        let config = jobs::train_config(&params, stage);
        let total = config.total_steps(splits.train.len());
        let metric_key = dataset.metric.primary().key();
        let (modules, shape) = if stage == Stage::Estimation {
            let shape = model_shape(&model)?;
            let names: Vec<String> = shape
                .lora
                .as_ref()
                .map(|l| l.modules.iter().map(|m| m.name()).collect())
                .unwrap_or_default();
            (
                Some(serde_json::to_string(&names).expect("plain data")),
                Some(serde_json::to_string(&shape).expect("plain data")),
            )
        } else {
            (None, None)
        };
        self.block_on_store(self.store.set_job_plan_inputs(
            self.job.id,
            total,
            metric_key,
            modules.as_deref(),
            shape.as_deref(),
        ))?;
        let checkpoint_dir = dir.join("checkpoints");
        let resume_state = match (self.resume, stage) {
            (true, Stage::Estimation) => {
                let next = self
                    .block_on_store(self.store.checkpoint_step(self.job.id))?
                    .ok_or_else(|| {
                        crate::error::Error::Usage("the job has no snapshot to resume from".into())
                    })?;
                let state = TrainState::load(&checkpoint_dir.join(next.to_string()), &Device::Cpu)?;
                // Steps recorded after the snapshot are taken again: drop them first.
                self.block_on_store(self.store.truncate_records(self.job.id, next))?;
                Some(state)
            }
            _ => None,
        };
        let mut observer = JobObserver {
            discard: self.discard_records,
            job_id: self.job.id,
            recorder: self.recorder.clone(),
            events: self.events.clone(),
            checkpoint: (stage == Stage::Estimation && self.checkpoint_every > 0)
                .then(|| (checkpoint_dir.clone(), self.checkpoint_every)),
        };
        let outcome: TrainOutcome = train_from(
            &model,
            &splits.train,
            &splits.dev,
            &config,
            stage,
            dataset.metric,
            &mut observer,
            &self.cancel,
            resume_state.as_ref(),
        )?;
        if outcome.cancelled {
            return Ok(Ending::Stopped);
        }
        let tokenizer = model_dir.join("tokenizer.json");
        if stage == Stage::Estimation {
            let file = EstimationFile {
                shape: model_shape(&model)?,
                summary: summarize_estimation(&model, &outcome)?,
            };
            let path = dir.join("estimation.json");
            std::fs::write(&path, serde_json::to_vec(&file).expect("plain data"))
                .map_err(|e| crate::error::Error::file(&path, e))?;
            export_model(&model, &tokenizer, &dir.join("stage1"))?;
            return Ok(Ending::Done(None));
        }
        export_model(&model, &tokenizer, &dir.join("model"))?;
        if stage == Stage::Baseline
            && let Err(e) = lightpeft_engine::export::export_hf_peft(
                &model,
                &self.experiment.model,
                &dir.join("hf-peft"),
            )
        {
            eprintln!("job {}: no Hugging Face PEFT export: {e}", self.job.id);
        }
        let best = best_eval(&outcome.evals, &dataset);
        let majority = baseline_values(&dataset.majority_baseline()?);
        let counts = jobs::param_counts(&model);
        let last_eval = outcome.evals.last();
        Ok(Ending::Done(Some(JobResult {
            job_id: self.job.id,
            kind: self.job.kind,
            plan_id: self.job.plan_id,
            metric: metric_key.to_string(),
            best_score: best
                .as_ref()
                .map_or(0.0, |b| measure(&b.metrics, metric_key)),
            best_metrics: best.map(|b| b.metrics).unwrap_or_default(),
            majority_score: measure(&majority, metric_key),
            peft_params: counts.peft,
            trainable_params: counts.trainable,
            encoder_params: counts.encoder,
            median_step_seconds: jobs::median(&outcome.step_seconds),
            peak_rss_mib: jobs::peak_rss_mib(),
            eval_seconds: last_eval.map_or(0.0, |e| e.seconds),
            eval_examples: splits.dev.len(),
            steps: outcome.steps,
        })))
    }

    /// Scores the model of the source job on the dev split.
    fn evaluate(
        &self,
        dataset: &lightpeft_engine::data::Dataset,
        dev: &lightpeft_engine::train::TokenizedSplit,
        params: &lightpeft_api::Hyperparams,
    ) -> crate::error::Result<Ending> {
        let source = self.job.source_job_id.ok_or_else(|| {
            crate::error::Error::Usage("an evaluation job needs a source job".into())
        })?;
        let metric_key = dataset.metric.primary().key();
        self.block_on_store(self.store.set_job_plan_inputs(
            self.job.id,
            0,
            metric_key,
            None,
            None,
        ))?;
        let model = load_exported(&job_dir(&self.data_dir, source).join("model"), &Device::Cpu)?;
        let eval =
            lightpeft_engine::train::evaluate(&model, dev, params.eval_batch_size, dataset.metric)?;
        let mut observer = JobObserver {
            discard: false,
            job_id: self.job.id,
            recorder: self.recorder.clone(),
            events: self.events.clone(),
            checkpoint: None,
        };
        observer.on_eval(&eval);
        let majority = baseline_values(&dataset.majority_baseline()?);
        let counts = jobs::param_counts(&model);
        Ok(Ending::Done(Some(JobResult {
            job_id: self.job.id,
            kind: JobKind::Evaluation,
            plan_id: None,
            metric: metric_key.to_string(),
            best_score: measure(&eval.metrics, metric_key),
            best_metrics: eval.metrics.clone(),
            majority_score: measure(&majority, metric_key),
            peft_params: counts.peft,
            trainable_params: counts.trainable,
            encoder_params: counts.encoder,
            median_step_seconds: 0.0,
            peak_rss_mib: jobs::peak_rss_mib(),
            eval_seconds: eval.seconds,
            eval_examples: dev.len(),
            steps: 0,
        })))
    }

    fn block_on_store<T>(
        &self,
        fut: impl std::future::Future<Output = super::store::StoreResult<T>>,
    ) -> crate::error::Result<T> {
        self.handle
            .block_on(fut)
            .map_err(|e| crate::error::Error::Usage(e.error.message))
    }
}

/// The value of measure `key` among `(name, value)` pairs (0 when absent).
fn measure(values: &[(String, f64)], key: &str) -> f64 {
    values
        .iter()
        .find(|(k, _)| k == key)
        .map_or(0.0, |(_, v)| *v)
}

/// Resets the kernel's peak-RSS counter, so a job's peak is its own (Linux; ignored
/// elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The engine's observer for one job: records to the recorder, progress to the stream, and
/// resumable snapshots to the job's folder.
struct JobObserver {
    discard: bool,
    job_id: i64,
    recorder: Recorder,
    events: broadcast::Sender<Event>,
    checkpoint: Option<(PathBuf, usize)>,
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

    fn on_checkpoint(&mut self, state: &TrainState) {
        let Some((root, _)) = &self.checkpoint else {
            return;
        };
        match state.save(&root.join(state.next_step.to_string())) {
            Ok(()) => self.recorder.send(Record::Checkpoint {
                job_id: self.job_id,
                next_step: state.next_step,
                root: root.clone(),
            }),
            Err(e) => eprintln!("job {}: snapshot not saved: {e}", self.job_id),
        }
    }
}
