//! Requests, responses and events of the REST API under `/api/v1`. The server's handlers and
//! the dashboard both use these types; the OpenAPI document is generated from them.

use serde::{Deserialize, Serialize};

use crate::params::{Hyperparams, ParamKind, Preset};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The body of a POST that takes no options: `{}`. It is still sent, as JSON, because a
/// cross-site form cannot send that content type (an empty body with the header works too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

/// Every error body: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ApiError,
}

/// An error: a stable machine code, a sentence for people, and the field at fault if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApiError {
    /// e.g. `invalid_param`, `not_found`, `conflict`, `unauthorized`, `payload_too_large`.
    pub code: String,
    /// A sentence that says what to change.
    pub message: String,
    /// The request field at fault (a hyper-parameter name, `task`, `model`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The kind of value a hyper-parameter takes ([`ParamKind`] without its bounds, which
/// [`ParamInfo`] carries beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// A whole number in `[min, max]`.
    Int,
    /// A real number in `[min, max]` (or `(min, max]`).
    Float,
    /// true or false.
    Bool,
    /// One of `options`.
    Choice,
    /// Comma-separated words.
    List,
    /// A whole number, or empty for none.
    OptionalSeed,
}

/// One hyper-parameter as the form shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ParamInfo {
    /// JSON key.
    pub name: String,
    /// Pipeline part that reads it.
    pub section: String,
    /// What kind of value it takes, which decides the form's input.
    pub kind: ParamType,
    /// Lower bound of numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Upper bound of numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Whether `min` itself is excluded.
    #[serde(default)]
    pub min_exclusive: bool,
    /// Allowed words of a choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Default value in text form.
    pub default: String,
    /// One-line help.
    pub help: String,
}

impl ParamInfo {
    /// Every parameter, from the one table in [`crate::params`].
    pub fn all() -> Vec<ParamInfo> {
        let defaults = Hyperparams::default();
        crate::params::PARAMS
            .iter()
            .map(|spec| {
                let (kind, min, max, min_exclusive, options) = match spec.kind {
                    ParamKind::Int { min, max } => (
                        ParamType::Int,
                        Some(min as f64),
                        Some(max as f64),
                        false,
                        vec![],
                    ),
                    ParamKind::Float {
                        min,
                        max,
                        min_exclusive,
                    } => (
                        ParamType::Float,
                        Some(min),
                        Some(max),
                        min_exclusive,
                        vec![],
                    ),
                    ParamKind::Bool => (ParamType::Bool, None, None, false, vec![]),
                    ParamKind::Choice { options } => (
                        ParamType::Choice,
                        None,
                        None,
                        false,
                        options.iter().map(|o| o.to_string()).collect(),
                    ),
                    ParamKind::List => (ParamType::List, None, None, false, vec![]),
                    ParamKind::OptionalSeed => (ParamType::OptionalSeed, None, None, false, vec![]),
                };
                ParamInfo {
                    name: spec.name.into(),
                    section: spec.section.into(),
                    kind,
                    min,
                    max,
                    min_exclusive,
                    options,
                    default: defaults.get(spec.name).expect("listed"),
                    help: spec.help.into(),
                }
            })
            .collect()
    }
}

/// A preset and its values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PresetInfo {
    /// The preset.
    pub preset: Preset,
    /// What it is for.
    pub description: String,
    /// Every value it sets.
    pub params: Hyperparams,
}

/// `GET /schema`: the form's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Schema {
    /// Every hyper-parameter in display order.
    pub params: Vec<ParamInfo>,
    /// Named starting points.
    pub presets: Vec<PresetInfo>,
    /// Tasks the server knows.
    pub tasks: Vec<TaskInfo>,
    /// Models in the data directory.
    pub models: Vec<String>,
}

/// A task the server can train on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskInfo {
    /// Name used in requests, e.g. `sst2-rt`.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Whether it reads the user's train/dev files (GLUE/SuperGLUE) instead of bundled data.
    pub needs_files: bool,
    /// Whether its bundled data are present in the data directory.
    pub available: bool,
}

/// `POST /experiments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateExperiment {
    /// A label for people; defaults to `<task> <model>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Task name (see `GET /schema`).
    pub task: String,
    /// A model under the data directory's `models/` (e.g. `all-minilm-l6-v2`).
    pub model: String,
    /// Starting values; `params` overrides them.
    #[serde(default = "default_preset")]
    pub preset: Preset,
    /// Values that differ from the preset, as JSON values or their text form.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Train file of a GLUE/SuperGLUE task, relative to the data directory.
    #[serde(default)]
    pub train_file: Option<String>,
    /// Dev file of a GLUE/SuperGLUE task, relative to the data directory.
    #[serde(default)]
    pub dev_file: Option<String>,
}

fn default_preset() -> Preset {
    Preset::Paper
}

/// An experiment: the immutable recipe every job of it shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Experiment {
    /// Id.
    pub id: i64,
    /// Label.
    pub name: String,
    /// Task.
    pub task: String,
    /// Model name.
    pub model: String,
    /// Preset the values started from.
    pub preset: Preset,
    /// Every hyper-parameter.
    pub params: Hyperparams,
    /// User train file (relative to the data directory).
    pub train_file: Option<String>,
    /// User dev file.
    pub dev_file: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Stage 1: masks, PEFT, importances.
    Estimation,
    /// Stage 2 of a committed plan.
    Finetune,
    /// Vanilla PEFT on the unpruned model.
    Baseline,
    /// Scores the model another job trained on the dev split (inference only).
    Evaluation,
}

impl JobKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Estimation => "estimation",
            JobKind::Finetune => "finetune",
            JobKind::Baseline => "baseline",
            JobKind::Evaluation => "evaluation",
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a free slot.
    Queued,
    /// Training.
    Running,
    /// Finished with results.
    Succeeded,
    /// Stopped by an error (see `error`).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// The server stopped while it ran; estimation jobs can be resumed.
    Interrupted,
}

impl JobStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the job will change no more (until resumed).
    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// The states a job can be queued again from (resumed): it stopped without succeeding.
    pub const RESUMABLE: [JobStatus; 3] = [
        JobStatus::Interrupted,
        JobStatus::Cancelled,
        JobStatus::Failed,
    ];

    /// Whether a resume can queue the job again ([`JobStatus::RESUMABLE`]).
    pub fn can_resume(self) -> bool {
        JobStatus::RESUMABLE.contains(&self)
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "interrupted" => JobStatus::Interrupted,
            _ => return Err(format!("`{s}` is not a job status")),
        })
    }
}

/// A job and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Job {
    /// Id.
    pub id: i64,
    /// Its experiment.
    pub experiment_id: i64,
    /// What it does.
    pub kind: JobKind,
    /// The committed plan it fine-tunes (stage 2).
    pub plan_id: Option<i64>,
    /// The job whose model an evaluation scores.
    #[serde(default)]
    pub source_job_id: Option<i64>,
    /// Status.
    pub status: JobStatus,
    /// Steps done.
    pub step: i64,
    /// Steps the job will take (0 until it starts).
    pub total_steps: i64,
    /// Last training loss.
    pub loss: Option<f64>,
    /// Best dev score of the task's primary measure so far.
    pub best_score: Option<f64>,
    /// The primary measure's name, e.g. `accuracy`.
    pub metric: Option<String>,
    /// Median seconds per step so far.
    pub step_seconds: Option<f64>,
    /// Seconds left at the current pace.
    pub eta_seconds: Option<f64>,
    /// What stopped it, when it failed.
    pub error: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// When it started running.
    pub started_at: Option<String>,
    /// When it stopped.
    pub finished_at: Option<String>,
    /// Whether an interrupted or cancelled estimation has a snapshot to resume from.
    pub resumable: bool,
    /// The worker that holds the job while it runs (and last held it after), by its name.
    #[serde(default)]
    pub worker: Option<String>,
    /// Times a worker claimed the job (a job whose worker stopped renewing its lease is
    /// claimed again, up to the server's attempt limit).
    #[serde(default)]
    pub attempt: i64,
    /// The study that queued it.
    #[serde(default)]
    pub study_id: Option<i64>,
    /// What it changes of its experiment's hyper-parameters (a study's seed, a baseline's
    /// targets); empty for a job that runs the experiment's values.
    #[serde(default)]
    pub settings: crate::params::HyperparamsPatch,
}

impl Job {
    /// Fills the fields derived from the stored ones (`eta_seconds`, `resumable`), so every
    /// store implementation answers with the same rules. `has_snapshot`: a resumable snapshot
    /// of the job is on record.
    pub fn fill_derived(&mut self, has_snapshot: bool) {
        // Only a running job has time left; the pace is the store's running mean.
        self.eta_seconds = match (self.status, self.step_seconds) {
            (JobStatus::Running, Some(s)) => Some(s * (self.total_steps - self.step).max(0) as f64),
            _ => None,
        };
        // Every training job writes snapshots (an evaluation has none), and only one stopped
        // early has steps left.
        self.resumable = self.kind != JobKind::Evaluation
            && has_snapshot
            && matches!(self.status, JobStatus::Interrupted | JobStatus::Cancelled);
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;

    fn job(kind: JobKind, status: JobStatus) -> Job {
        Job {
            id: 1,
            experiment_id: 1,
            kind,
            plan_id: None,
            source_job_id: None,
            status,
            step: 30,
            total_steps: 100,
            loss: None,
            best_score: None,
            metric: None,
            step_seconds: Some(0.5),
            eta_seconds: Some(-1.0),
            error: None,
            created_at: String::new(),
            started_at: None,
            finished_at: None,
            resumable: true,
            worker: None,
            attempt: 0,
            study_id: None,
            settings: Default::default(),
        }
    }

    #[test]
    fn only_a_running_job_has_an_eta_at_its_pace() {
        let mut running = job(JobKind::Estimation, JobStatus::Running);
        running.fill_derived(false);
        assert_eq!(running.eta_seconds, Some(35.0));
        let mut queued = job(JobKind::Estimation, JobStatus::Queued);
        queued.fill_derived(false);
        assert_eq!(queued.eta_seconds, None);
        let mut over = job(JobKind::Finetune, JobStatus::Running);
        over.step = 120;
        over.fill_derived(false);
        assert_eq!(over.eta_seconds, Some(0.0));
    }

    #[test]
    fn only_a_stopped_training_job_with_a_snapshot_resumes_from_it() {
        for (kind, status, snapshot, expected) in [
            (JobKind::Estimation, JobStatus::Interrupted, true, true),
            (JobKind::Estimation, JobStatus::Cancelled, true, true),
            (JobKind::Estimation, JobStatus::Interrupted, false, false),
            (JobKind::Estimation, JobStatus::Failed, true, false),
            (JobKind::Finetune, JobStatus::Interrupted, true, true),
            (JobKind::Baseline, JobStatus::Cancelled, true, true),
            (JobKind::Baseline, JobStatus::Interrupted, false, false),
            (JobKind::Evaluation, JobStatus::Interrupted, true, false),
        ] {
            let mut j = job(kind, status);
            j.fill_derived(snapshot);
            assert_eq!(j.resumable, expected, "{kind:?} {status:?} {snapshot}");
        }
    }
}

/// `GET /jobs/{id}/scalars`: per-step values, downsampled to at most `max_points` (the last
/// step always kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Scalars {
    /// Steps (0-based).
    pub steps: Vec<i64>,
    /// Total loss.
    pub loss: Vec<f64>,
    /// Cross-entropy part.
    pub ce_loss: Vec<f64>,
    /// L1 part.
    pub l1_loss: Vec<f64>,
    /// Learning rate.
    pub lr: Vec<f64>,
    /// Gradient norm before clipping.
    pub grad_norm: Vec<f64>,
    /// Wall seconds of the step.
    pub seconds: Vec<f64>,
    /// Steps recorded in the range before downsampling.
    pub total: i64,
}

/// A dev evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Eval {
    /// Steps done before it.
    pub step: i64,
    /// Epoch (0-based).
    pub epoch: i64,
    /// Measure → value (fractions, e.g. accuracy 0.85).
    pub metrics: Vec<(String, f64)>,
    /// Mean dev cross-entropy.
    pub loss: f64,
    /// Seconds it took.
    pub seconds: f64,
}

/// Which mask family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Attention heads: layers × heads.
    Head,
    /// FFN neurons: layers × neurons.
    Neuron,
}

impl MaskKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskKind::Head => "head",
            MaskKind::Neuron => "neuron",
        }
    }
}

/// How neurons are laid out in a heatmap row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NeuronOrder {
    /// In index order, averaged over `bins` consecutive neurons.
    #[default]
    Binned,
    /// Each layer's values sorted ascending, then binned.
    Sorted,
}

/// `GET /jobs/{id}/heatmap`: mask values at one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Heatmap {
    /// Which masks.
    pub kind: MaskKind,
    /// The snapshot's step (the nearest kept one at or before the asked step).
    pub step: i64,
    /// `values[layer][column]`.
    pub values: Vec<Vec<f32>>,
    /// Units per column: 1 for heads and unbinned neurons, else the bin width.
    pub column_width: Vec<i64>,
    /// Smallest value (for the colour scale).
    pub min: f32,
    /// Largest value.
    pub max: f32,
    /// Every step with a full snapshot (for the slider).
    pub snapshot_steps: Vec<i64>,
}

/// Per-layer quantiles of one mask family at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MaskSummary {
    /// Step.
    pub step: i64,
    /// Layer.
    pub layer: i64,
    /// Minimum, 25th percentile, median, 75th percentile, maximum.
    pub quantiles: Vec<f32>,
    /// Mean.
    pub mean: f32,
}

/// `GET /jobs/{id}/importance`: module and rank importance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Importance {
    /// Step of the values (`None`: the average over the second half of the steps, which the
    /// planner uses).
    pub step: Option<i64>,
    /// Hugging Face module names, e.g. `encoder.layer.0.attention.self.query`.
    pub modules: Vec<String>,
    /// Module importance ratio ‖ΔWx‖/‖Wx‖ per module.
    pub module_importance: Vec<f64>,
    /// First-order Taylor importance per rank dimension, per module.
    pub rank_importance: Vec<Vec<f64>>,
    /// Steps with importances recorded.
    pub steps: i64,
}

/// The estimation-convergence signal between consecutive snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Convergence {
    /// Snapshot steps from the second on.
    pub steps: Vec<i64>,
    /// Fraction of heads whose pruned/kept decision changed since the previous snapshot, at
    /// the ratio asked.
    pub head_change: Vec<f64>,
    /// The same for FFN neurons.
    pub neuron_change: Vec<f64>,
    /// The head ratio used.
    pub head_ratio: f64,
    /// The FFN ratio used.
    pub ffn_ratio: f64,
}

/// Ratios and methods of a plan: a patch of the [`PLAN_SECTIONS`] parameters; missing ones
/// keep the experiment's values (`epochs` is read at commit only).
pub type PlanSettings = crate::params::HyperparamsPatch;

/// The sections of the parameter table a plan may change.
pub const PLAN_SECTIONS: [&str; 2] = ["pruning", "finetune"];

/// What one layer keeps under a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LayerPlan {
    /// Head indices kept.
    pub kept_heads: Vec<usize>,
    /// Heads removed.
    pub removed_heads: usize,
    /// Neuron indices kept.
    pub kept_neurons: Vec<usize>,
    /// Neurons removed.
    pub removed_neurons: usize,
}

/// A PEFT module that survives, with its kept rank dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModulePlan {
    /// Hugging Face module name.
    pub module: String,
    /// Rank dimensions kept.
    pub kept_ranks: Vec<usize>,
}

/// Parameter counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ParamTotals {
    /// Encoder layers (frozen).
    pub encoder_layers: usize,
    /// Embeddings.
    pub embeddings: usize,
    /// Classifier head.
    pub classifier_head: usize,
    /// LoRA/adapter.
    pub peft: usize,
    /// Trained in stage 2.
    pub trainable: usize,
    /// All.
    pub total: usize,
}

/// `POST /jobs/{id}/preview`: what a plan would remove and save. Nothing is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PlanPreview {
    /// The settings used (the request's merged with the experiment's).
    pub settings: PlanSettings,
    /// Per layer.
    pub layers: Vec<LayerPlan>,
    /// Surviving PEFT modules.
    pub modules: Vec<ModulePlan>,
    /// PEFT modules before pruning.
    pub total_modules: usize,
    /// Parameters before.
    pub parameters_before: ParamTotals,
    /// Parameters after.
    pub parameters_after: ParamTotals,
    /// Estimated stage-2 step time ÷ the unpruned model's, from a FLOP count of forward and
    /// backward at the experiment's sequence length.
    pub estimated_step_time_ratio: f64,
    /// The estimation job's median measured step, ms (unpruned, masks on).
    pub measured_step_ms: Option<f64>,
    /// `measured_step_ms × estimated_step_time_ratio`.
    pub estimated_step_ms: Option<f64>,
    /// Milliseconds the server spent computing this preview.
    pub compute_ms: f64,
}

/// A committed plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Plan {
    /// Id.
    pub id: i64,
    /// The estimation job it was made from.
    pub estimation_job_id: i64,
    /// What it removes.
    pub preview: PlanPreview,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// `POST /jobs/{id}/plans`: the plan and the stage-2 job it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Committed {
    /// The plan.
    pub plan: Plan,
    /// Its stage-2 job.
    pub job: Job,
}

/// Whether a measure's name (a [`JobResult::metric`]) is a correlation in [-1, 1] (STS-B's
/// Pearson and Spearman, CoLA's Matthews) rather than a fraction, so shown as `0.873`, not as %.
pub fn is_correlation(metric: &str) -> bool {
    matches!(metric, "pearson" | "spearmanr" | "matthews_correlation")
}

/// Results of a finished fine-tuning or baseline job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobResult {
    /// Job.
    pub job_id: i64,
    /// Kind.
    pub kind: JobKind,
    /// Plan, for stage 2.
    pub plan_id: Option<i64>,
    /// The task's primary measure.
    pub metric: String,
    /// Its best dev value (fraction).
    pub best_score: f64,
    /// Every measure of the best evaluation.
    pub best_metrics: Vec<(String, f64)>,
    /// Always predicting the majority train label, same measure.
    pub majority_score: f64,
    /// LoRA/adapter parameters.
    pub peft_params: usize,
    /// Everything trained (PEFT + classifier).
    pub trainable_params: usize,
    /// Frozen encoder parameters incl. embeddings.
    pub encoder_params: usize,
    /// Median seconds per training step.
    pub median_step_seconds: f64,
    /// Peak resident memory of the training process, MiB (the server's, including its
    /// other work).
    pub peak_rss_mib: Option<f64>,
    /// Seconds to evaluate the dev split once (inference time).
    pub eval_seconds: f64,
    /// Dev examples evaluated.
    pub eval_examples: usize,
    /// Optimiser steps.
    pub steps: usize,
}

/// `GET /experiments/{id}/compare`: results next to the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Comparison {
    /// The newest finished baseline job, if any.
    pub baseline: Option<JobResult>,
    /// Every finished stage-2 job.
    pub runs: Vec<ComparedRun>,
}

/// One stage-2 result with ratios against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ComparedRun {
    /// The result.
    pub result: JobResult,
    /// Whether its plan was the random ablation.
    pub random: bool,
    /// Score minus the baseline's (fraction points).
    pub score_delta: Option<f64>,
    /// Baseline step time ÷ this one's (above 1 is faster).
    pub train_speedup: Option<f64>,
    /// Baseline eval time ÷ this one's.
    pub inference_speedup: Option<f64>,
    /// This one's encoder parameters ÷ the baseline's.
    pub encoder_params_ratio: Option<f64>,
    /// This one's trainable parameters ÷ the baseline's.
    pub trainable_params_ratio: Option<f64>,
}

/// A file a job wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Artifact {
    /// Name to download it by.
    pub name: String,
    /// Bytes.
    pub bytes: u64,
    /// What it is.
    pub description: String,
}

/// `GET /workers`: a process that trains jobs (`lightpeft worker`, or the local worker of
/// `lightpeft serve`), as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Worker {
    /// Its name (`--name`; by default the host name and process id).
    pub name: String,
    /// Where it trains: `cpu` or `cuda:N` (its `--device`).
    pub device: String,
    /// Jobs it trains at once.
    pub slots: i64,
    /// When it started (RFC 3339 UTC).
    pub started_at: String,
    /// Seconds since its last heartbeat, on the database's clock.
    pub seconds_since_heartbeat: f64,
    /// The jobs it is running now.
    pub running: Vec<i64>,
}

/// Live events (Server-Sent Events, `data:` is this JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A job changed: status, progress or best score.
    Job {
        /// Its state now (boxed: far larger than the other events, which stream by the
        /// thousand).
        job: Box<Job>,
    },
    /// A training step was recorded.
    Step {
        /// Job.
        job_id: i64,
        /// Step (0-based).
        step: i64,
        /// Steps of the job.
        total_steps: i64,
        /// Total loss.
        loss: f64,
        /// Learning rate.
        lr: f64,
        /// Whether a full mask snapshot of this step was kept.
        snapshot: bool,
    },
    /// An evaluation finished.
    Eval {
        /// Job.
        job_id: i64,
        /// The evaluation.
        eval: Eval,
    },
}

impl Event {
    /// A job's state as an event.
    pub fn job(job: Job) -> Event {
        Event::Job { job: Box::new(job) }
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok`, or `degraded` while the store cannot read or write (see `store`).
    pub status: String,
    /// Crate version.
    pub version: String,
    /// Whether requests need a bearer token.
    pub auth: bool,
    /// The store's state.
    pub store: StoreState,
}

/// Whether the store reads and writes, in `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StoreState {
    /// `ok`; `unwritable` while writes fail for want of storage (a full disk or store: jobs
    /// that write fail, other writes answer 507, until space returns and a write succeeds);
    /// `unreadable` when a read fails now.
    pub status: String,
    /// Why, when not `ok`.
    pub error: Option<String>,
    /// Seconds since writes began failing, when `unwritable`.
    pub failing_for_seconds: Option<f64>,
    /// The latest write that failed for want of storage since the server started, even if
    /// writes succeed again.
    pub last_fault: Option<StoreFault>,
}

/// A write the storage refused, in [`StoreState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StoreFault {
    /// The database's words.
    pub error: String,
    /// Seconds ago.
    pub seconds_ago: f64,
}

/// How a dataset's labels are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DatasetLabels {
    /// Classes: the training file's distinct values; accuracy and macro F1.
    Classes,
    /// Numbers: regression; Pearson and Spearman correlation.
    Numbers,
}

/// Which columns of a dataset's files hold an example's texts and its label: header names,
/// 1-based positions for files without a header, keys for JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DatasetColumns {
    /// The text (the first of a pair).
    pub text: String,
    /// The second text of a pair task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    /// The label.
    pub label: String,
}

/// One file of a saved dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DatasetFile {
    /// Its name in the dataset's folder (`train.csv`, `dev.jsonl`, …).
    pub file: String,
    /// Size, bytes.
    pub bytes: u64,
    /// sha256, hex; checked before every load.
    pub sha256: String,
    /// Examples read from it.
    pub examples: usize,
    /// Examples per label, in label order (empty when labels are numbers).
    pub label_counts: Vec<usize>,
}

/// A saved dataset (what its `dataset.json` records). Runs name it as the task
/// `dataset:{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SavedDataset {
    /// Name.
    pub name: String,
    /// The columns read.
    pub columns: DatasetColumns,
    /// How labels are read.
    pub label_kind: DatasetLabels,
    /// Whether CSV/TSV files start with a row of column names.
    pub header: bool,
    /// The training file.
    pub train: DatasetFile,
    /// The dev file.
    pub dev: DatasetFile,
    /// Class names in label order (empty for numbers).
    pub labels: Vec<String>,
    /// Rows left out (no text or no label), both files together.
    pub skipped: usize,
}

impl SavedDataset {
    /// One line for a task list: sizes and labels.
    pub fn summary(&self) -> String {
        let labels = if self.labels.is_empty() {
            "numbers (regression)".to_string()
        } else {
            let mut shown: Vec<&str> = self.labels.iter().take(6).map(String::as_str).collect();
            if self.labels.len() > 6 {
                shown.push("…");
            }
            format!("{} classes ({})", self.labels.len(), shown.join(", "))
        };
        format!(
            "your dataset: {} train / {} dev examples, {labels}",
            self.train.examples, self.dev.examples
        )
    }
}

/// A column of an uploaded file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ColumnPreview {
    /// Its name (a 1-based position for a file without a header).
    pub name: String,
    /// Its distinct non-empty values with their counts, most frequent first, when there are
    /// at most 50 (a label column's classes); `null` when there are more.
    pub values: Option<Vec<(String, usize)>>,
}

/// The columns and first rows of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TablePreview {
    /// Columns, in file order.
    pub columns: Vec<ColumnPreview>,
    /// The first 5 rows, one value per column (`null` where a JSON line lacks it), each cut to
    /// 200 characters.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows in the file (after the header).
    pub row_count: usize,
}

/// An uploaded file, kept until a dataset uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Upload {
    /// Names it in `POST /datasets`.
    pub id: String,
    /// The file's name as uploaded.
    pub name: String,
    /// Size, bytes.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: String,
    /// What it holds.
    pub preview: TablePreview,
}

/// `POST /datasets`: two uploads and how to read them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateDataset {
    /// The dataset's name (ASCII letters, digits, '-', '_', '.'); runs use `dataset:{name}`.
    pub name: String,
    /// The training file's upload id.
    pub train_upload: String,
    /// The dev file's upload id.
    pub dev_upload: String,
    /// Which columns to read.
    pub columns: DatasetColumns,
    /// Classes or numbers.
    pub label_kind: DatasetLabels,
    /// Whether CSV/TSV files start with a row of column names (default true).
    #[serde(default = "header_row")]
    pub header: bool,
}

fn header_row() -> bool {
    true
}

/// Which plans a study runs on its estimation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(tag = "preset", rename_all = "snake_case", deny_unknown_fields)]
pub enum StudyPlans {
    /// Every combination of the listed ratios; an empty list leaves that part unpruned.
    Grid {
        /// Head ratios, each in [0, 1].
        #[serde(default)]
        head_ratios: Vec<f64>,
        /// FFN neuron ratios.
        #[serde(default)]
        ffn_ratios: Vec<f64>,
        /// PEFT module ratios.
        #[serde(default)]
        module_ratios: Vec<f64>,
        /// Rank ratios.
        #[serde(default)]
        rank_ratios: Vec<f64>,
    },
    /// Heads = FFN ∈ {0, 1/6, 1/3, 1/2, 2/3}; modules and ranks kept.
    HeadsFfnFrontier,
    /// The quick study: heads = FFN ∈ {1/3, 1/2, 2/3}; modules and ranks kept.
    QuickFrontier,
    /// Exactly these plans, in this order (e.g. the paper's plan beside a frontier).
    List {
        /// The plans; at least one.
        plans: Vec<StudyPlanRatios>,
    },
}

/// One plan of a [`StudyPlans::List`]: the four ratios, each in [0, 1]; an absent one is 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct StudyPlanRatios {
    /// Fraction of attention heads removed.
    pub head_ratio: f64,
    /// Fraction of FFN neurons removed.
    pub ffn_ratio: f64,
    /// Fraction of PEFT modules removed.
    pub module_ratio: f64,
    /// Fraction of the surviving modules' ranks removed.
    pub rank_ratio: f64,
}

/// The most seeds a study runs per configuration.
pub const MAX_STUDY_SEEDS: u32 = 10;
/// The most jobs one study queues.
pub const MAX_STUDY_JOBS: usize = 200;

/// `POST /experiments/{id}/studies`: one estimation, many plans and seeds, with the vanilla
/// baselines and the random ablation of the same recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateStudy {
    /// The estimation every plan is made from: by default the experiment's newest one, or a
    /// new one queued when it has none. Stage-2 jobs are queued once it has succeeded.
    #[serde(default)]
    pub estimation_job_id: Option<i64>,
    /// The plans.
    pub plans: StudyPlans,
    /// Stage-2 runs per configuration, seeds `seed`, `seed` + 1, … of the experiment (1–10).
    #[serde(default = "one_seed")]
    pub seeds: u32,
    /// Also run vanilla LoRA/adapters unpruned on query,value and on all targets, per seed.
    #[serde(default = "yes")]
    pub baselines: bool,
    /// Also run the random ablation: every plan's counts pruned at random, per seed.
    #[serde(default = "yes")]
    pub random: bool,
}

fn one_seed() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// A study as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Study {
    /// Id.
    pub id: i64,
    /// Its experiment.
    pub experiment_id: i64,
    /// The estimation its plans come from.
    pub estimation_job_id: i64,
    /// The request, as accepted (the estimation filled in).
    pub spec: CreateStudy,
    /// Whether its stage-2 jobs are queued (after the estimation succeeded).
    pub expanded: bool,
    /// Whether it was cancelled (nothing more of it is queued).
    pub cancelled: bool,
    /// Why its plans could not be queued, when they could not.
    pub error: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
}

/// What a configuration of a study is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StudyRole {
    /// A Light-PEFT plan: importance-based pruning, then stage 2.
    LightPeft,
    /// The same counts pruned at random.
    Random,
    /// Vanilla PEFT, unpruned, on query and value only.
    BaselineQueryValue,
    /// Vanilla PEFT, unpruned, on every target: the reference of every ratio.
    BaselineAllTargets,
}

/// A cost axis of a study's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StudyAxis {
    /// Encoder parameters kept (lower is better).
    EncoderParams,
    /// Stage-2 step speed-up over the reference baseline (higher is better).
    TrainSpeedup,
    /// Inference speed-up over the reference baseline (higher is better).
    InferenceSpeedup,
    /// Peak resident memory, MiB (lower is better).
    PeakMemory,
}

/// Every axis of [`StudyAxis`].
pub const STUDY_AXES: [StudyAxis; 4] = [
    StudyAxis::EncoderParams,
    StudyAxis::TrainSpeedup,
    StudyAxis::InferenceSpeedup,
    StudyAxis::PeakMemory,
];

impl StudyAxis {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StudyAxis::EncoderParams => "encoder_params",
            StudyAxis::TrainSpeedup => "train_speedup",
            StudyAxis::InferenceSpeedup => "inference_speedup",
            StudyAxis::PeakMemory => "peak_memory",
        }
    }
}

/// One configuration of a study (a plan, its random ablation or a baseline) over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StudyConfiguration {
    /// E.g. `light-peft h0.33 f0.33 m0.75 r0.50`.
    pub label: String,
    /// What it is.
    pub role: StudyRole,
    /// The plan's ratios (none for a baseline).
    pub head_ratio: Option<f64>,
    /// FFN ratio.
    pub ffn_ratio: Option<f64>,
    /// Module ratio.
    pub module_ratio: Option<f64>,
    /// Rank ratio.
    pub rank_ratio: Option<f64>,
    /// Its jobs, one per seed (none yet for a plan while the estimation runs).
    pub job_ids: Vec<i64>,
    /// Jobs of it that succeeded.
    pub finished: usize,
    /// Mean best dev score over the finished seeds (fraction, or a correlation).
    pub score_mean: Option<f64>,
    /// Sample standard deviation of it (0 for one seed).
    pub score_std: Option<f64>,
    /// Encoder parameters kept (mean over seeds; the same for every seed).
    pub encoder_params: Option<f64>,
    /// Encoder parameters ÷ the all-targets baseline's.
    pub encoder_params_ratio: Option<f64>,
    /// Mean median seconds per stage-2 step.
    pub step_seconds: Option<f64>,
    /// The all-targets baseline's step time ÷ this one's (above 1 is faster).
    pub train_speedup: Option<f64>,
    /// Mean seconds to evaluate the dev split once.
    pub eval_seconds: Option<f64>,
    /// The all-targets baseline's eval time ÷ this one's.
    pub inference_speedup: Option<f64>,
    /// Mean peak resident memory of the process while it trained, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Mean score minus the all-targets baseline's (fraction points).
    pub score_delta: Option<f64>,
    /// The axes on whose Pareto frontier (score against that cost) it lies.
    pub frontier: Vec<StudyAxis>,
}

/// Where a study is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    /// Its stage-2 jobs wait for the estimation to succeed.
    WaitingForEstimation,
    /// Jobs of it are queued or running.
    Running,
    /// Every job of it ended.
    Finished,
    /// Cancelled; jobs that had finished keep their results.
    Cancelled,
}

impl StudyState {
    /// Where it is, in words.
    pub fn describe(self) -> &'static str {
        match self {
            StudyState::WaitingForEstimation => "waiting for its estimation",
            StudyState::Running => "running",
            StudyState::Finished => "finished",
            StudyState::Cancelled => "cancelled",
        }
    }
}

/// `GET /studies/{id}`: a study, its jobs and every configuration's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StudyReport {
    /// The study.
    pub study: Study,
    /// Where it is.
    pub state: StudyState,
    /// The primary measure of its scores, once a job reports one.
    pub metric: Option<String>,
    /// Its jobs (the estimation excluded), oldest first.
    pub jobs: Vec<Job>,
    /// Every configuration, baselines first, then plans in grid order, each plan's random
    /// ablation after it.
    pub configurations: Vec<StudyConfiguration>,
}
