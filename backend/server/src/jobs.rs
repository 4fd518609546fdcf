//! Runs of the pipeline built from a task, a model folder and [`Hyperparams`]: shared by the
//! CLI and (next) the server's job runner. Each run lives in a folder of its own.

use std::path::{Path, PathBuf};

use lightpeft_api::Hyperparams;
use lightpeft_engine::data::{
    AssetFile, Dataset, TaskFiles, TaskId, TaskInputs, TaskSpec, load_task,
};
use lightpeft_engine::plan::{PlanRequest, PruningScope, RankScope};
use lightpeft_engine::train::{
    CancelToken, EstimationExtras, Length, Observer, Stage, TokenizedSplit, TrainConfig,
    TrainOutcome, train,
};
use lightpeft_engine::{AdapterConfig, LoraConfig, Model, ModelOptions, PeftMethod, TextEncoder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a run's data comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSource {
    /// Task name, e.g. `sst2-rt`.
    pub task: String,
    /// The user's train file, for GLUE/SuperGLUE tasks.
    pub train_file: Option<PathBuf>,
    /// The user's dev file, for GLUE/SuperGLUE tasks.
    pub dev_file: Option<PathBuf>,
}

/// Reads a task's examples from the bundled assets or the user's files.
pub fn load_dataset(source: &DataSource, data_dir: &Path) -> Result<Dataset> {
    let id: TaskId = source.task.parse()?;
    let spec = id.spec();
    let files = match (spec.inputs, &source.train_file, &source.dev_file) {
        (TaskInputs::Assets(_), None, None) => {
            TaskFiles::Assets(bundled_files(spec, data_dir).unwrap_or_default())
        }
        (TaskInputs::Assets(_), _, _) => {
            return Err(Error::Usage(format!(
                "task {} reads the bundled data; drop --train-file/--dev-file",
                spec.name
            )));
        }
        (TaskInputs::UserFiles { .. }, Some(t), Some(d)) => TaskFiles::TrainDev {
            train: t.clone(),
            dev: d.clone(),
        },
        (TaskInputs::UserFiles { train, dev }, _, _) => {
            return Err(Error::Usage(format!(
                "task {} needs your files: --train-file (e.g. {train}) and --dev-file (e.g. {dev})",
                spec.name
            )));
        }
    };
    if let TaskFiles::Assets(paths) = &files
        && let Some(missing) = paths.iter().find(|p| !p.is_file())
    {
        return Err(Error::file(
            missing,
            "missing: run `lightpeft assets fetch` (add `bigbench` for BIG-bench tasks)",
        ));
    }
    Ok(load_task(spec, &files)?)
}

/// The bundled files a task reads, or `None` for a task that reads the user's files.
pub fn bundled_files(spec: &TaskSpec, data_dir: &Path) -> Option<Vec<PathBuf>> {
    match spec.inputs {
        TaskInputs::Assets(assets) => Some(
            assets
                .iter()
                .map(|a| match a {
                    AssetFile::VaderMovieSnippets => lightpeft_assets::vader_movie_file(data_dir),
                    AssetFile::BigBench(task) => {
                        lightpeft_assets::bigbench_task_file(data_dir, task)
                    }
                })
                .collect(),
        ),
        TaskInputs::UserFiles { .. } => None,
    }
}

/// Keeps at most `max` examples at an even stride (0 keeps all). A stride, not a prefix,
/// because data files are often sorted by label.
pub fn subsample<T: Clone>(examples: &[T], max: usize) -> Vec<T> {
    if max == 0 || examples.len() <= max {
        return examples.to_vec();
    }
    (0..max)
        .map(|i| examples[i * examples.len() / max].clone())
        .collect()
}

/// A model name under `<data>/models`, or a folder path.
pub fn resolve_model(model: &str, data_dir: &Path) -> Result<PathBuf> {
    let named = lightpeft_assets::model_dir(data_dir, model);
    if lightpeft_assets::validate_model_name(model).is_ok() && named.is_dir() {
        return Ok(named);
    }
    let path = PathBuf::from(model);
    if path.is_dir() {
        return Ok(path);
    }
    Err(Error::file(
        path,
        format!(
            "no such model: neither a folder nor a model under {} (run `lightpeft assets fetch`)",
            data_dir.join("models").display()
        ),
    ))
}

/// The PEFT modules the parameters ask for.
pub fn peft_method(params: &Hyperparams) -> PeftMethod {
    let targets = params.targets.split(',').map(str::to_string).collect();
    match params.peft_method.as_str() {
        "adapter" => PeftMethod::Adapter {
            config: AdapterConfig {
                size: params.adapter_size,
                dropout: params.adapter_dropout as f32,
                scale: 1.0,
            },
            targets,
        },
        _ => PeftMethod::Lora {
            config: LoraConfig {
                r: params.lora_r,
                alpha: params.lora_alpha,
                dropout: params.lora_dropout as f32,
            },
            targets,
        },
    }
}

/// The optimisation recipe of a run of `stage`.
pub fn train_config(params: &Hyperparams, stage: Stage) -> TrainConfig {
    let estimation = (stage == Stage::Estimation).then_some(EstimationExtras {
        l1_coef: params.l1_coef,
        head_mask_lr_coef: params.head_mask_lr_coef,
        neuron_mask_lr_coef: params.neuron_mask_lr_coef,
    });
    TrainConfig {
        length: match stage {
            Stage::Estimation => Length::Steps(params.estimation_steps),
            Stage::Finetune | Stage::Baseline => Length::Epochs(params.epochs),
        },
        batch_size: params.batch_size,
        eval_batch_size: params.eval_batch_size,
        lr: params.lr,
        weight_decay: params.weight_decay,
        warmup_ratio: params.warmup_ratio,
        max_grad_norm: params.max_grad_norm,
        seed: params.seed,
        group_by_length: params.group_by_length,
        estimation,
    }
}

/// The planner's request from the pruning parameters.
pub fn plan_request(params: &Hyperparams) -> PlanRequest {
    let scope = |s: &str| match s {
        "global" => PruningScope::Global,
        _ => PruningScope::Layerwise,
    };
    PlanRequest {
        head_ratio: params.head_ratio,
        ffn_ratio: params.ffn_ratio,
        module_ratio: params.module_ratio,
        rank_ratio: params.rank_ratio,
        head_method: scope(&params.head_method),
        ffn_method: scope(&params.ffn_method),
        rank_method: match params.rank_method.as_str() {
            "per_module" => RankScope::PerModule,
            _ => RankScope::Global,
        },
        keep_at_least_one: params.keep_at_least_one,
        random: params.random_seed,
    }
}

/// A dataset tokenised for a model.
pub struct Splits {
    /// Training split.
    pub train: TokenizedSplit,
    /// Dev split.
    pub dev: TokenizedSplit,
}

/// The dataset cut to the parameters' example limits, so training, evaluation and the
/// majority baseline all see the same examples.
pub fn limit_examples(mut dataset: Dataset, params: &Hyperparams) -> Dataset {
    dataset.train = subsample(&dataset.train, params.max_train_examples);
    dataset.dev = subsample(&dataset.dev, params.max_dev_examples);
    dataset
}

/// Tokenises both splits with the model folder's tokenizer.
pub fn tokenize(dataset: &Dataset, model_dir: &Path, params: &Hyperparams) -> Result<Splits> {
    let tok = TextEncoder::from_file(&model_dir.join("tokenizer.json"), params.max_len)?;
    let split = |examples: &[lightpeft_engine::data::Example]| {
        TokenizedSplit::new(
            &tok,
            examples
                .iter()
                .map(|e| (e.text_a.as_str(), e.text_b.as_deref(), e.label)),
        )
    };
    Ok(Splits {
        train: split(&dataset.train)?,
        dev: split(&dataset.dev)?,
    })
}

/// Builds the model of a stage-1 (masks on) or baseline (masks off) run.
pub fn fresh_model(
    model_dir: &Path,
    params: &Hyperparams,
    num_labels: usize,
    masks: bool,
) -> Result<Model> {
    let options = ModelOptions {
        num_labels,
        head_masks: masks,
        neuron_masks: masks,
        peft: peft_method(params),
        seed: params.seed,
    };
    Ok(Model::load(
        model_dir,
        &options,
        &lightpeft_engine::Device::Cpu,
    )?)
}

/// Trains `model` for `stage` and reports to `observer`.
pub fn run_training(
    model: &Model,
    splits: &Splits,
    dataset: &Dataset,
    params: &Hyperparams,
    stage: Stage,
    observer: &mut dyn Observer,
    cancel: &CancelToken,
) -> Result<TrainOutcome> {
    Ok(train(
        model,
        &splits.train,
        &splits.dev,
        &train_config(params, stage),
        stage,
        dataset.metric,
        observer,
        cancel,
    )?)
}

/// Parameters of a model: trainable (PEFT, PEFT + head) and frozen encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamCounts {
    /// LoRA/adapter tensors only (the reference's `trainable_params`).
    pub peft: usize,
    /// Everything the optimiser updates: PEFT, classifier, masks.
    pub trainable: usize,
    /// Frozen encoder incl. embeddings (pooler excluded).
    pub encoder: usize,
}

/// Counts `model`'s parameters.
pub fn param_counts(model: &Model) -> ParamCounts {
    let vars = model.trainable();
    let peft = vars
        .iter()
        .filter(|v| v.kind == lightpeft_engine::ParamKind::Peft)
        .map(|v| v.var.elem_count())
        .sum();
    ParamCounts {
        peft,
        trainable: vars.iter().map(|v| v.var.elem_count()).sum(),
        encoder: model.encoder.parameter_count(),
    }
}

/// Median of positive samples (0 for none).
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// Peak resident memory of this process so far, in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
