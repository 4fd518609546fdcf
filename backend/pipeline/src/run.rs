//! One job, start to finish: a [`JobSpec`] in, one [`RunOutcome`] out, progress through the
//! caller's [`Reporter`] and files through its [`ArtifactStore`].

use std::path::PathBuf;

use lightpeft_api::Hyperparams;
use lightpeft_api::rest::{JobKind, JobResult};
use lightpeft_engine::Model;
use lightpeft_engine::data::Dataset;
use lightpeft_engine::export::{export_hf_peft, export_model, load_exported};
use lightpeft_engine::pipeline::{apply_plan, model_shape, summarize_estimation};
use lightpeft_engine::plan::{EstimationSummary, ModelShape, PruningPlan};
use lightpeft_engine::train::{
    CancelToken, Collect, Discard, EvalRecord, Observer, Stage, StepRecord, TrainOutcome, TrainRun,
    TrainState, evaluate,
};
use serde::{Deserialize, Serialize};

use crate::data::{DataSource, limit_examples, load_dataset, resolve_model, tokenize};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::recipe::{
    ParamCounts, baseline_values, best_eval, fresh_model, measure, median, param_counts,
    peak_rss_mib, reset_peak_rss, train_config,
};
use crate::store::{ArtifactStore, ESTIMATION, HF_PEFT, MODEL, STAGE1, checkpoint_name};

/// What a job does.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Stage 1: masks, PEFT modules and head trained together; importances recorded. Leaves
    /// [`STAGE1`] and [`ESTIMATION`].
    Estimation,
    /// Stage 2: the stage-1 model exported at `stage1`, pruned by `plan`, then fine-tuned.
    /// Leaves [`MODEL`].
    Finetune {
        /// What to remove.
        plan: Box<PruningPlan>,
        /// The folder of the estimation's [`STAGE1`] export.
        stage1: PathBuf,
    },
    /// Vanilla PEFT on the unpruned model. It trains with the job's own hyper-parameters, the
    /// same recipe the Light-PEFT runs it is compared with use (the server's experiment
    /// recipe; for the CLI the same preset as `estimate`, `paper` unless `--preset` says
    /// otherwise), so a comparison differs only in the pruning. Leaves [`MODEL`] and, for
    /// LoRA, [`HF_PEFT`].
    Baseline,
    /// Scores the model exported at `model` on the dev split (inference only; no files).
    Evaluation {
        /// A folder written by [`export_model`].
        model: PathBuf,
    },
}

impl Work {
    /// The job kind this work is.
    pub fn kind(&self) -> JobKind {
        match self {
            Work::Estimation => JobKind::Estimation,
            Work::Finetune { .. } => JobKind::Finetune,
            Work::Baseline => JobKind::Baseline,
            Work::Evaluation { .. } => JobKind::Evaluation,
        }
    }

    fn stage(&self) -> Option<Stage> {
        match self {
            Work::Estimation => Some(Stage::Estimation),
            Work::Finetune { .. } => Some(Stage::Finetune),
            Work::Baseline => Some(Stage::Baseline),
            Work::Evaluation { .. } => None,
        }
    }
}

/// Everything a run needs, as plain values: the CLI builds it from flags and its run folder,
/// the server from an experiment row.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// What to do.
    pub work: Work,
    /// A model name under `<data>/models` or a Hugging Face folder: the base model, its
    /// tokenizer and the base name of the Hugging Face PEFT export.
    pub model: String,
    /// The task and its files.
    pub source: DataSource,
    /// Every hyper-parameter, already validated.
    pub params: Hyperparams,
    /// Where every model and snapshot of the run is loaded.
    pub device: DeviceChoice,
    /// Continue from the snapshot [`crate::store::checkpoint_name`]`(step)` in the run's store.
    pub resume: Option<usize>,
    /// The data directory (models, bundled datasets).
    pub data_dir: PathBuf,
    /// Bytes the run may use at its peak; a run estimated over it is refused before its first
    /// step with [`Error::OverMemory`]. `None` checks nothing.
    pub memory_budget: Option<u64>,
}

/// What a run is about to do, told to the caller before its first step.
#[derive(Debug)]
pub struct Prepared<'a> {
    /// Optimiser steps of the whole run (0 for an evaluation).
    pub total_steps: usize,
    /// Key of the task's primary measure.
    pub metric: &'static str,
    /// Names of the PEFT modules (estimations only): the columns of importance records.
    pub modules: Option<Vec<String>>,
    /// The unpruned model's shape (estimations only).
    pub shape: Option<&'a ModelShape>,
    /// The step a resumed run continues at; records from it on are about to be taken again.
    pub resume_from: Option<usize>,
}

/// The engine's [`Observer`] plus what only a whole job has: a hook before the first step and
/// word of a snapshot that could not be stored.
pub trait Reporter: Observer {
    /// Called once the model and data are ready and any snapshot is loaded; an error stops
    /// the run before it trains.
    fn on_prepared(&mut self, _prepared: &Prepared) -> Result<()> {
        Ok(())
    }

    /// A snapshot could not be written; the run goes on without it.
    fn on_checkpoint_failed(&mut self, _next_step: usize, _error: &Error) {}
}

impl Reporter for Discard {}
impl Reporter for Collect {}

/// `estimation.json`: what the planner needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EstimationFile {
    /// Shapes of the unpruned model.
    pub shape: ModelShape,
    /// Final masks and averaged importances.
    pub summary: EstimationSummary,
}

/// How a run ended: the one result both front ends build theirs from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    /// What ran.
    pub kind: JobKind,
    /// Task name.
    pub task: String,
    /// Key of the task's primary measure.
    pub metric: String,
    /// Optimiser steps taken (0 for an evaluation).
    pub steps: usize,
    /// Whether it stopped early on request (then nothing was exported).
    pub cancelled: bool,
    /// Every evaluation, in order.
    pub evals: Vec<EvalRecord>,
    /// The best evaluation by the primary measure.
    pub best: Option<EvalRecord>,
    /// What always predicting the majority train label scores on dev.
    pub majority_baseline: Vec<(String, f64)>,
    /// Parameter counts of the trained (or evaluated) model.
    pub params: ParamCounts,
    /// Median seconds per optimiser step.
    pub median_step_seconds: f64,
    /// Peak resident memory of the process during the run, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Dev examples each evaluation scored.
    pub eval_examples: usize,
    /// The plan, for stage 2.
    pub plan: Option<PruningPlan>,
    /// What did not work but did not fail the run (e.g. no Hugging Face PEFT export for
    /// adapters).
    pub warnings: Vec<String>,
}

/// A [`RunOutcome`] as the result of server job `job_id` (of plan `plan_id`).
pub struct ForJob<'a> {
    /// The job.
    pub job_id: i64,
    /// Its plan, for stage 2.
    pub plan_id: Option<i64>,
    /// How it ended.
    pub outcome: &'a RunOutcome,
}

impl From<ForJob<'_>> for JobResult {
    fn from(job: ForJob<'_>) -> Self {
        let o = job.outcome;
        let key = o.metric.as_str();
        JobResult {
            job_id: job.job_id,
            kind: o.kind,
            plan_id: job.plan_id,
            metric: o.metric.clone(),
            best_score: o.best.as_ref().map_or(0.0, |b| measure(&b.metrics, key)),
            best_metrics: o
                .best
                .as_ref()
                .map(|b| b.metrics.clone())
                .unwrap_or_default(),
            majority_score: measure(&o.majority_baseline, key),
            peft_params: o.params.peft,
            trainable_params: o.params.trainable,
            encoder_params: o.params.encoder,
            median_step_seconds: o.median_step_seconds,
            peak_rss_mib: o.peak_rss_mib,
            eval_seconds: o.evals.last().map_or(0.0, |e| e.seconds),
            eval_examples: o.eval_examples,
            steps: o.steps,
        }
    }
}

/// A job whose model and data were found and read: what a front end checks before it
/// creates anything for the run.
pub struct Loaded {
    spec: JobSpec,
    model_dir: PathBuf,
    dataset: Dataset,
}

impl Loaded {
    /// Resolves the model and reads the task's examples, cut to the parameters' limits.
    pub fn load(spec: JobSpec) -> Result<Loaded> {
        let model_dir = resolve_model(&spec.model, &spec.data_dir)?;
        let dataset = limit_examples(load_dataset(&spec.source, &spec.data_dir)?, &spec.params);
        Ok(Loaded {
            spec,
            model_dir,
            dataset,
        })
    }

    /// The job.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// The resolved model folder.
    pub fn model_dir(&self) -> &std::path::Path {
        &self.model_dir
    }

    /// The examples the run trains and evaluates on.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// Runs the job to its end (or to a cancel), storing its artifacts in `store`.
    pub fn run(
        &self,
        store: &dyn ArtifactStore,
        reporter: &mut dyn Reporter,
        cancel: &CancelToken,
    ) -> Result<RunOutcome> {
        let spec = &self.spec;
        let params = &spec.params;
        let dataset = &self.dataset;
        let metric = dataset.metric.primary().key();
        reset_peak_rss();
        let stage = match (&spec.work, spec.work.stage()) {
            (Work::Evaluation { model }, _) => return self.evaluate(model, reporter),
            (_, Some(stage)) => stage,
            (_, None) => unreachable!("every work but an evaluation trains"),
        };
        let device = spec.device.device()?;
        let splits = tokenize(dataset, &self.model_dir, params)?;
        let model = match &spec.work {
            Work::Finetune { plan, stage1 } => {
                let mut model = load_exported(stage1, &device)?;
                apply_plan(&mut model, plan)?;
                model
            }
            work => fresh_model(
                &self.model_dir,
                params,
                dataset.head_outputs(),
                *work == Work::Estimation,
                &device,
            )?,
        };
        self.check_memory(&model, &splits)?;
        let config = train_config(params, stage);
        let shape = (stage == Stage::Estimation)
            .then(|| model_shape(&model))
            .transpose()?;
        let modules = shape.as_ref().map(|s| {
            s.lora
                .as_ref()
                .map(|l| l.modules.iter().map(|m| m.name()).collect())
                .unwrap_or_default()
        });
        let resume = spec
            .resume
            .map(|next| -> Result<TrainState> {
                Ok(TrainState::load(
                    &store.fetch(&checkpoint_name(next))?,
                    &device,
                )?)
            })
            .transpose()?;
        reporter.on_prepared(&Prepared {
            total_steps: config.total_steps(splits.train.len()),
            metric,
            modules,
            shape: shape.as_ref(),
            resume_from: resume.as_ref().map(|s| s.next_step),
        })?;
        let mut observer = Storing {
            inner: reporter,
            store,
        };
        let mut training = TrainRun {
            model: &model,
            train: &splits.train,
            dev: &splits.dev,
            config: &config,
            stage,
            metric: dataset.metric,
        }
        .observer(&mut observer)
        .cancel(cancel);
        if let Some(state) = &resume {
            training = training.resume(state);
        }
        let trained = training.run()?;
        let mut warnings = Vec::new();
        if !trained.cancelled {
            self.export(&model, shape, &trained, store, &mut warnings)?;
        }
        self.outcome(&model, &trained, splits.dev.len(), warnings)
    }

    /// Scores the model exported at `model_dir` on the dev split; nothing is trained or stored.
    fn evaluate(
        &self,
        model_dir: &std::path::Path,
        reporter: &mut dyn Reporter,
    ) -> Result<RunOutcome> {
        let params = &self.spec.params;
        let dataset = &self.dataset;
        let splits = tokenize(dataset, model_dir, params)?;
        reporter.on_prepared(&Prepared {
            total_steps: 0,
            metric: dataset.metric.primary().key(),
            modules: None,
            shape: None,
            resume_from: None,
        })?;
        let model = load_exported(model_dir, &self.spec.device.device()?)?;
        self.check_memory(&model, &splits)?;
        let eval = evaluate(&model, &splits.dev, params.eval_batch_size, dataset.metric)?;
        reporter.on_eval(&eval);
        let scored = TrainOutcome {
            steps: 0,
            cancelled: false,
            evals: vec![eval],
            step_seconds: Vec::new(),
            module_importance: Vec::new(),
            rank_importance: Vec::new(),
        };
        self.outcome(&model, &scored, splits.dev.len(), Vec::new())
    }

    /// Refuses the run when its estimated peak is over the spec's budget.
    fn check_memory(&self, model: &Model, splits: &crate::data::Splits) -> Result<()> {
        if let Some(budget) = self.spec.memory_budget {
            let encoder = &model.encoder;
            let inputs = crate::memory::memory_inputs(
                &encoder.config,
                encoder.parameter_count(),
                &self.spec.params,
                splits,
            );
            crate::memory::check_memory(&inputs, budget)?;
        }
        Ok(())
    }

    fn export(
        &self,
        model: &Model,
        shape: Option<ModelShape>,
        trained: &TrainOutcome,
        store: &dyn ArtifactStore,
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        let tokenizer = self.model_dir.join("tokenizer.json");
        // An estimation's shape was taken before training; training does not change it.
        if let Some(shape) = shape {
            let file = EstimationFile {
                shape,
                summary: summarize_estimation(model, trained)?,
            };
            let text = serde_json::to_vec_pretty(&file).expect("plain data serialises");
            store.put(ESTIMATION, &text)?;
            export_model(model, &tokenizer, &store.folder(STAGE1)?)?;
            return store.seal(STAGE1);
        }
        export_model(model, &tokenizer, &store.folder(MODEL)?)?;
        store.seal(MODEL)?;
        if self.spec.work == Work::Baseline {
            // An unpruned LoRA model also loads in Hugging Face PEFT; adapters have no such
            // layout. Both front ends name the base by the model folder.
            let base = self
                .model_dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            match export_hf_peft(model, &base, &store.folder(HF_PEFT)?) {
                Ok(()) => store.seal(HF_PEFT)?,
                Err(e) => {
                    store.discard(HF_PEFT)?;
                    warnings.push(format!("no Hugging Face PEFT export: {e}"));
                }
            }
        }
        Ok(())
    }

    fn outcome(
        &self,
        model: &Model,
        trained: &TrainOutcome,
        eval_examples: usize,
        warnings: Vec<String>,
    ) -> Result<RunOutcome> {
        let dataset = &self.dataset;
        Ok(RunOutcome {
            kind: self.spec.work.kind(),
            task: self.spec.source.task.clone(),
            metric: dataset.metric.primary().key().to_string(),
            steps: trained.steps,
            cancelled: trained.cancelled,
            evals: trained.evals.clone(),
            best: best_eval(&trained.evals, dataset),
            majority_baseline: baseline_values(&dataset.majority_baseline()?),
            params: param_counts(model),
            median_step_seconds: median(&trained.step_seconds),
            peak_rss_mib: peak_rss_mib(),
            eval_examples,
            plan: match &self.spec.work {
                Work::Finetune { plan, .. } => Some(plan.as_ref().clone()),
                _ => None,
            },
            warnings,
        })
    }
}

/// Loads `spec` and runs it: [`Loaded::load`] then [`Loaded::run`].
pub fn run(
    spec: JobSpec,
    store: &dyn ArtifactStore,
    reporter: &mut dyn Reporter,
    cancel: &CancelToken,
) -> Result<RunOutcome> {
    Loaded::load(spec)?.run(store, reporter, cancel)
}

/// The caller's reporter, with snapshots written to the store before it hears of them.
struct Storing<'a> {
    inner: &'a mut dyn Reporter,
    store: &'a dyn ArtifactStore,
}

impl Observer for Storing<'_> {
    fn on_step(&mut self, record: &StepRecord) {
        self.inner.on_step(record);
    }

    fn on_eval(&mut self, record: &EvalRecord) {
        self.inner.on_eval(record);
    }

    fn checkpoint_every(&self) -> Option<usize> {
        self.inner.checkpoint_every()
    }

    fn on_checkpoint(&mut self, state: &TrainState) {
        let name = checkpoint_name(state.next_step);
        let saved = self
            .store
            .folder(&name)
            .and_then(|dir| Ok(state.save(&dir)?))
            .and_then(|()| self.store.seal(&name));
        match saved {
            Ok(()) => self.inner.on_checkpoint(state),
            Err(e) => self.inner.on_checkpoint_failed(state.next_step, &e),
        }
    }
}
