//! The training commands: estimate, plan, finetune, baseline, eval, as callers of the
//! pipeline. Each run keeps its files in `<data>/runs/<name>/`: the pipeline's artifacts, the
//! CLI's manifest (`run.json`), records (`steps.jsonl`, `evals.jsonl`) and `results.json`.

use std::path::{Path, PathBuf};

use lightpeft_api::rest::JobKind;
use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::plan::{Planner, PruningPlan};
use lightpeft_engine::train::{CancelToken, Discard, EvalRecord, Stage};
use lightpeft_pipeline::store::{self, ArtifactStore};
use lightpeft_pipeline::{
    DataSource, DeviceChoice, EstimationFile, JobSpec, Loaded, Nowhere, ParamCounts, RunFolder,
    RunOutcome, Work, plan_request,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::progress::CliObserver;

/// What `run.json` records about a run; immutable once written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    /// `estimation` or `baseline`.
    pub kind: Stage,
    /// Task and files.
    pub source: DataSource,
    /// The model folder.
    pub model_dir: PathBuf,
    /// The preset the parameters started from.
    pub preset: Preset,
    /// Every hyper-parameter.
    pub params: Hyperparams,
}

/// `results.json` of a run, and what `--json` prints: the pipeline's outcome in the CLI's
/// words.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// What ran (`estimation`, `finetune` or `baseline`).
    pub stage: JobKind,
    /// Task name.
    pub task: String,
    /// Every evaluation.
    pub evals: Vec<EvalRecord>,
    /// The best evaluation by the task's primary measure.
    pub best: Option<EvalRecord>,
    /// What always predicting the majority train label scores on dev.
    pub majority_baseline: Vec<(String, f64)>,
    /// Parameter counts of the trained model.
    pub params: ParamCounts,
    /// Median seconds per optimiser step.
    pub median_step_seconds: f64,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Steps taken.
    pub steps: usize,
    /// The plan, for stage 2.
    pub plan: Option<PruningPlan>,
}

impl From<RunOutcome> for RunResult {
    fn from(o: RunOutcome) -> Self {
        RunResult {
            stage: o.kind,
            task: o.task,
            evals: o.evals,
            best: o.best,
            majority_baseline: o.majority_baseline,
            params: o.params,
            median_step_seconds: o.median_step_seconds,
            peak_rss_mib: o.peak_rss_mib,
            steps: o.steps,
            plan: o.plan,
        }
    }
}

/// What `estimate --json` prints: the run's name and folder with its result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EstimateReport {
    /// The run's name.
    pub run: String,
    /// Its folder.
    pub dir: PathBuf,
    /// How stage 1 went.
    #[serde(flatten)]
    pub result: RunResult,
}

/// Options every training command shares.
pub struct Common<'a> {
    /// Data directory.
    pub data_dir: &'a Path,
    /// Print JSON only (progress bars hidden).
    pub json: bool,
    /// Where models are loaded and trained.
    pub device: DeviceChoice,
}

fn runs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("runs")
}

/// The folder of run `name`, which must be a plain name.
pub fn run_dir(data_dir: &Path, name: &str) -> Result<PathBuf> {
    lightpeft_assets::validate_model_name(name)
        .map_err(|e| Error::Usage(format!("run name: {e}")))?;
    Ok(runs_dir(data_dir).join(name))
}

/// The folder of an existing run.
pub fn existing_run_dir(data_dir: &Path, name: &str) -> Result<PathBuf> {
    let dir = run_dir(data_dir, name)?;
    if !dir.join("run.json").is_file() {
        return Err(Error::Usage(format!(
            "run `{name}` does not exist in {} (start one with `lightpeft estimate --run {name}`)",
            runs_dir(data_dir).display()
        )));
    }
    Ok(dir)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("plain data serialises")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, e))
}

fn new_run_dir(data_dir: &Path, name: &str) -> Result<PathBuf> {
    let dir = run_dir(data_dir, name)?;
    if dir.exists() {
        return Err(Error::Usage(format!(
            "run `{name}` already exists at {}; pick another --run name",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::file(&dir, e))?;
    Ok(dir)
}

/// A new run of the pipeline: what to do, on which data, from which preset.
pub struct NewRun<'a> {
    /// Estimation or baseline.
    pub work: Work,
    /// Task and files.
    pub source: DataSource,
    /// A model name or folder.
    pub model: &'a str,
    /// The preset `params` started from.
    pub preset: Preset,
    /// Every hyper-parameter.
    pub params: Hyperparams,
    /// The run's name.
    pub name: &'a str,
}

/// Checks the model and data of a new run, then creates its folder with `run.json` and runs
/// it there.
fn start_run(common: &Common, run: NewRun) -> Result<(PathBuf, RunOutcome)> {
    let kind = match run.work {
        Work::Estimation => Stage::Estimation,
        _ => Stage::Baseline,
    };
    let loaded = Loaded::load(JobSpec {
        work: run.work,
        model: run.model.to_string(),
        source: run.source,
        params: run.params,
        device: common.device,
        resume: None,
        data_dir: common.data_dir.to_path_buf(),
        memory_budget: lightpeft_pipeline::machine_memory_budget(),
    })?;
    let dataset = loaded.dataset();
    if dataset.skipped.total() > 0 {
        // Rows left out on purpose are counted and said, never dropped silently.
        eprintln!("{}", dataset.skipped);
    }
    let dir = new_run_dir(common.data_dir, run.name)?;
    let spec = loaded.spec();
    let manifest = RunManifest {
        kind,
        source: spec.source.clone(),
        model_dir: loaded.model_dir().to_path_buf(),
        preset: run.preset,
        params: spec.params.clone(),
    };
    let store = RunFolder::new(&dir);
    store.put("run.json", &to_json(&manifest))?;
    let outcome = run_in(common, &loaded, &store)?;
    Ok((dir, outcome))
}

/// Runs `loaded` with its records and artifacts in `store`'s folder; writes `results.json`.
fn run_in(common: &Common, loaded: &Loaded, store: &RunFolder) -> Result<RunOutcome> {
    let label = match loaded.spec().work.kind() {
        JobKind::Estimation => "estimate",
        JobKind::Baseline => "baseline",
        _ => "finetune",
    };
    let mut observer = CliObserver::new(store.root(), label, common.json)?;
    let outcome = loaded.run(store, &mut observer, &CancelToken::new())?;
    observer.finish()?;
    for warning in &outcome.warnings {
        eprintln!("{warning}");
    }
    if loaded.spec().work != Work::Estimation {
        store.put("results.json", &to_json(&RunResult::from(outcome.clone())))?;
    }
    Ok(outcome)
}

/// Stage 1: trains masks, PEFT and head; writes the summary and the stage-1 model.
pub fn estimate(
    common: &Common,
    source: DataSource,
    model: &str,
    preset: Preset,
    params: Hyperparams,
    name: &str,
) -> Result<EstimateReport> {
    let run = NewRun {
        work: Work::Estimation,
        source,
        model,
        preset,
        params,
        name,
    };
    let (dir, outcome) = start_run(common, run)?;
    Ok(EstimateReport {
        run: name.to_string(),
        dir,
        result: outcome.into(),
    })
}

/// Plans from a finished estimation.
pub fn plan(common: &Common, name: &str, params: &Hyperparams) -> Result<PruningPlan> {
    let dir = existing_run_dir(common.data_dir, name)?;
    let file: EstimationFile = read_json(&dir.join(store::ESTIMATION))?;
    Ok(Planner::new(file.shape, &file.summary)?.plan(&plan_request(params))?)
}

/// Stage 2: prunes the stage-1 model by the plan and fine-tunes it.
pub fn finetune(
    common: &Common,
    name: &str,
    overrides: &crate::param_args::ParamArgs,
) -> Result<RunResult> {
    let dir = existing_run_dir(common.data_dir, name)?;
    let manifest: RunManifest = read_json(&dir.join("run.json"))?;
    let mut params = manifest.params.clone();
    for (key, value) in &overrides.given {
        params.set(key, value).map_err(Error::Param)?;
    }
    let plan = plan(common, name, &params)?;
    let out = RunFolder::new(dir.join(format!("finetune-{}", plan_label(&params))));
    let loaded = Loaded::load(JobSpec {
        work: Work::Finetune {
            plan: Box::new(plan),
            stage1: dir.join(store::STAGE1),
        },
        model: manifest.model_dir.to_string_lossy().into_owned(),
        source: manifest.source,
        params,
        device: common.device,
        resume: None,
        data_dir: common.data_dir.to_path_buf(),
        memory_budget: lightpeft_pipeline::machine_memory_budget(),
    })?;
    out.put("params.json", &to_json(&loaded.spec().params))?;
    Ok(run_in(common, &loaded, &out)?.into())
}

/// The vanilla PEFT baseline on the unpruned model (see [`Work::Baseline`] for its recipe).
pub fn baseline(
    common: &Common,
    source: DataSource,
    model: &str,
    preset: Preset,
    params: Hyperparams,
    name: &str,
) -> Result<RunResult> {
    let run = NewRun {
        work: Work::Baseline,
        source,
        model,
        preset,
        params,
        name,
    };
    Ok(start_run(common, run)?.1.into())
}

fn plan_label(params: &Hyperparams) -> String {
    let mut label = format!(
        "h{}-f{}-m{}-r{}",
        params.head_ratio, params.ffn_ratio, params.module_ratio, params.rank_ratio
    );
    if let Some(seed) = params.random_seed {
        label.push_str(&format!("-random{seed}"));
    }
    label
}

/// Evaluates an exported model on a task's dev split.
pub fn eval(
    common: &Common,
    export: &Path,
    source: &DataSource,
    params: &Hyperparams,
) -> Result<EvalRecord> {
    let spec = JobSpec {
        work: Work::Evaluation {
            model: export.to_path_buf(),
        },
        model: export.to_string_lossy().into_owned(),
        source: source.clone(),
        params: params.clone(),
        device: common.device,
        resume: None,
        data_dir: common.data_dir.to_path_buf(),
        memory_budget: lightpeft_pipeline::machine_memory_budget(),
    };
    let outcome = lightpeft_pipeline::run(spec, &Nowhere, &mut Discard, &CancelToken::new())?;
    outcome
        .evals
        .into_iter()
        .next()
        .ok_or_else(|| Error::Usage("the evaluation scored nothing".into()))
}

/// The per-layer table of a plan, for people.
pub fn plan_table(plan: &PruningPlan) -> String {
    let mut out = String::from("layer  heads kept/removed  FFN neurons kept/removed\n");
    for (l, layer) in plan.layers.iter().enumerate() {
        out.push_str(&format!(
            "{l:>5}  {:>6} / {:<9} {:>7} / {}\n",
            layer.kept_heads.len(),
            layer.removed_heads,
            layer.kept_neurons.len(),
            layer.removed_neurons
        ));
    }
    let peft = &plan.peft;
    let ranks: usize = peft.modules.iter().map(|m| m.kept_ranks.len()).sum();
    out.push_str(&format!(
        "PEFT modules: {} of {} kept ({} removed by module pruning, {} by rank pruning); {ranks} rank dimensions kept\n",
        peft.modules.len(),
        peft.total_modules,
        peft.removed_by_module_pruning,
        peft.removed_by_rank_pruning
    ));
    let (b, a) = (&plan.parameters_before, &plan.parameters_after);
    let row = |name: &str, before: usize, after: usize| {
        let change = if before == 0 {
            0.0
        } else {
            100.0 * (after as f64 - before as f64) / before as f64
        };
        format!("{name:<16} {before:>12} → {after:>12}  ({change:+.1} %)\n")
    };
    out.push_str("parameters        before          after\n");
    out.push_str(&row("encoder layers", b.encoder_layers, a.encoder_layers));
    out.push_str(&row("embeddings", b.embeddings, a.embeddings));
    out.push_str(&row(
        "classifier head",
        b.classifier_head,
        a.classifier_head,
    ));
    out.push_str(&row("PEFT", b.peft, a.peft));
    out.push_str(&row("trainable", b.trainable, a.trainable));
    out.push_str(&row("total", b.total, a.total));
    out
}
