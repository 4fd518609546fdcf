//! The training commands: estimate, plan, finetune, baseline, eval. Each run keeps its files
//! in `<data>/runs/<name>/`.

use std::path::{Path, PathBuf};

use lightpeft_api::{Hyperparams, Preset};
use lightpeft_engine::data::{Baseline, Dataset};
use lightpeft_engine::export::{export_hf_peft, export_model, load_exported};
use lightpeft_engine::pipeline::{apply_plan, model_shape, summarize_estimation};
use lightpeft_engine::plan::{EstimationSummary, ModelShape, Planner, PruningPlan};
use lightpeft_engine::train::{CancelToken, EvalRecord, Stage, TrainOutcome, evaluate};
use lightpeft_engine::{Device, Model};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::jobs::{self, DataSource, ParamCounts};
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

/// `estimation.json`: what the planner needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EstimationFile {
    /// Shapes of the unpruned model.
    pub shape: ModelShape,
    /// Final masks and averaged importances.
    pub summary: EstimationSummary,
}

/// `results.json` of a fine-tuning or baseline run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Which stage.
    pub stage: Stage,
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

/// Options every training command shares.
pub struct Common<'a> {
    /// Data directory.
    pub data_dir: &'a Path,
    /// Print JSON only (progress bars hidden).
    pub json: bool,
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

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises");
    std::fs::write(path, text).map_err(|e| Error::file(path, e))
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

pub(crate) fn baseline_values(b: &Baseline) -> Vec<(String, f64)> {
    b.values
        .values()
        .iter()
        .map(|(m, v)| (m.key().to_string(), *v))
        .collect()
}

pub(crate) fn best_eval(evals: &[EvalRecord], dataset: &Dataset) -> Option<EvalRecord> {
    let key = dataset.metric.primary().key();
    let value = |e: &EvalRecord| {
        e.metrics
            .iter()
            .find(|(k, _)| k == key)
            .map_or(f64::NEG_INFINITY, |(_, v)| *v)
    };
    // The first of equal scores wins, as the reference's strict `>` tracking does.
    evals
        .iter()
        .fold(None::<&EvalRecord>, |best, e| match best {
            Some(b) if value(b) >= value(e) => Some(b),
            _ => Some(e),
        })
        .cloned()
}

/// Checks the model and data of a new run, then creates its folder with `run.json`.
fn start_run(
    common: &Common,
    kind: Stage,
    source: DataSource,
    model: &str,
    preset: Preset,
    params: &Hyperparams,
    name: &str,
) -> Result<(PathBuf, RunManifest, Dataset)> {
    let model_dir = jobs::resolve_model(model, common.data_dir)?;
    let dataset = jobs::limit_examples(jobs::load_dataset(&source, common.data_dir)?, params);
    if dataset.skipped.total() > 0 {
        // Rows left out on purpose are counted and said, never dropped silently.
        eprintln!("{}", dataset.skipped);
    }
    let dir = new_run_dir(common.data_dir, name)?;
    let manifest = RunManifest {
        kind,
        source,
        model_dir,
        preset,
        params: params.clone(),
    };
    write_json(&dir.join("run.json"), &manifest)?;
    Ok((dir, manifest, dataset))
}

/// Stage 1: trains masks, PEFT and head; writes the summary and the stage-1 model.
pub fn estimate(
    common: &Common,
    source: DataSource,
    model: &str,
    preset: Preset,
    params: Hyperparams,
    name: &str,
) -> Result<serde_json::Value> {
    let (dir, manifest, dataset) = start_run(
        common,
        Stage::Estimation,
        source,
        model,
        preset,
        &params,
        name,
    )?;
    let model_dir = manifest.model_dir.clone();
    let splits = jobs::tokenize(&dataset, &model_dir, &params)?;
    let model = jobs::fresh_model(&model_dir, &params, dataset.labels.len(), true)?;
    let mut observer = CliObserver::new(&dir, "estimate", common.json)?;
    let outcome = jobs::run_training(
        &model,
        &splits,
        &dataset,
        &params,
        Stage::Estimation,
        &mut observer,
        &CancelToken::new(),
    )?;
    observer.finish()?;
    let file = EstimationFile {
        shape: model_shape(&model)?,
        summary: summarize_estimation(&model, &outcome)?,
    };
    write_json(&dir.join("estimation.json"), &file)?;
    export_model(
        &model,
        &model_dir.join("tokenizer.json"),
        &dir.join("stage1"),
    )?;
    Ok(serde_json::json!({
        "run": name,
        "dir": dir,
        "steps": outcome.steps,
        "median_step_seconds": jobs::median(&outcome.step_seconds),
        "evals": outcome.evals,
        "majority_baseline": baseline_values(&dataset.majority_baseline()?),
    }))
}

/// Plans from a finished estimation.
pub fn plan(common: &Common, name: &str, params: &Hyperparams) -> Result<PruningPlan> {
    let dir = existing_run_dir(common.data_dir, name)?;
    let file: EstimationFile = read_json(&dir.join("estimation.json"))?;
    Ok(Planner::new(file.shape, &file.summary)?.plan(&jobs::plan_request(params))?)
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
    let dataset = jobs::limit_examples(
        jobs::load_dataset(&manifest.source, common.data_dir)?,
        &params,
    );
    let mut model = load_exported(&dir.join("stage1"), &Device::Cpu)?;
    apply_plan(&mut model, &plan)?;
    let out = dir.join(format!("finetune-{}", plan_label(&params)));
    std::fs::create_dir_all(&out).map_err(|e| Error::file(&out, e))?;
    write_json(&out.join("params.json"), &params)?;
    let result = train_and_report(
        common,
        &manifest.source.task,
        &model,
        &manifest.model_dir,
        &dataset,
        &params,
        Stage::Finetune,
        &out,
        Some(plan),
    )?;
    Ok(result)
}

/// The vanilla PEFT baseline on the unpruned model.
pub fn baseline(
    common: &Common,
    source: DataSource,
    model: &str,
    preset: Preset,
    params: Hyperparams,
    name: &str,
) -> Result<RunResult> {
    let (dir, manifest, dataset) = start_run(
        common,
        Stage::Baseline,
        source,
        model,
        preset,
        &params,
        name,
    )?;
    let model_dir = manifest.model_dir.clone();
    let model = jobs::fresh_model(&model_dir, &params, dataset.labels.len(), false)?;
    train_and_report(
        common,
        &manifest.source.task,
        &model,
        &model_dir,
        &dataset,
        &params,
        Stage::Baseline,
        &dir,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn train_and_report(
    common: &Common,
    task: &str,
    model: &Model,
    model_dir: &Path,
    dataset: &Dataset,
    params: &Hyperparams,
    stage: Stage,
    out: &Path,
    plan: Option<PruningPlan>,
) -> Result<RunResult> {
    let splits = jobs::tokenize(dataset, model_dir, params)?;
    let label = if stage == Stage::Baseline {
        "baseline"
    } else {
        "finetune"
    };
    let mut observer = CliObserver::new(out, label, common.json)?;
    let outcome: TrainOutcome = jobs::run_training(
        model,
        &splits,
        dataset,
        params,
        stage,
        &mut observer,
        &CancelToken::new(),
    )?;
    observer.finish()?;
    export_model(model, &model_dir.join("tokenizer.json"), &out.join("model"))?;
    if plan.is_none() {
        // An unpruned LoRA model also loads in Hugging Face PEFT; adapters have no such layout.
        let base = model_dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if let Err(e) = export_hf_peft(model, &base, &out.join("hf-peft")) {
            eprintln!("no Hugging Face PEFT export: {e}");
        }
    }
    let result = RunResult {
        stage,
        task: task.to_string(),
        best: best_eval(&outcome.evals, dataset),
        evals: outcome.evals.clone(),
        majority_baseline: baseline_values(&dataset.majority_baseline()?),
        params: jobs::param_counts(model),
        median_step_seconds: jobs::median(&outcome.step_seconds),
        peak_rss_mib: jobs::peak_rss_mib(),
        steps: outcome.steps,
        plan,
    };
    write_json(&out.join("results.json"), &result)?;
    Ok(result)
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
    let dataset = jobs::limit_examples(jobs::load_dataset(source, common.data_dir)?, params);
    let model = load_exported(export, &Device::Cpu)?;
    let splits = jobs::tokenize(&dataset, export, params)?;
    Ok(evaluate(
        &model,
        &splits.dev,
        params.eval_batch_size,
        dataset.metric,
    )?)
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
