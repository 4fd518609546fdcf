//! The hyper-parameters turned into the engine's values (PEFT modules, training recipe, planner
//! request), and the measurements every result reports.

use std::path::Path;

use lightpeft_api::{Hyperparams, PeftKind};
use lightpeft_engine::data::{Baseline, Dataset};
use lightpeft_engine::plan::PlanRequest;
use lightpeft_engine::train::{EstimationExtras, EvalRecord, Length, Stage, TrainConfig};
use lightpeft_engine::{AdapterConfig, Device, LoraConfig, Model, ModelOptions, PeftMethod};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The PEFT modules the parameters ask for.
pub fn peft_method(params: &Hyperparams) -> PeftMethod {
    let targets = params.targets.words().to_vec();
    match params.peft_method {
        PeftKind::Adapter => PeftMethod::Adapter {
            config: AdapterConfig {
                size: params.adapter_size,
                dropout: params.adapter_dropout as f32,
                scale: 1.0,
            },
            targets,
        },
        PeftKind::Lora => PeftMethod::Lora {
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
    PlanRequest {
        head_ratio: params.head_ratio,
        ffn_ratio: params.ffn_ratio,
        module_ratio: params.module_ratio,
        rank_ratio: params.rank_ratio,
        head_method: params.head_method,
        ffn_method: params.ffn_method,
        rank_method: params.rank_method,
        keep_at_least_one: params.keep_at_least_one,
        random: params.random_seed,
    }
}

/// Builds the model of a stage-1 (masks on) or baseline (masks off) run on `device`.
pub fn fresh_model(
    model_dir: &Path,
    params: &Hyperparams,
    head_outputs: usize,
    masks: bool,
    device: &Device,
) -> Result<Model> {
    let options = ModelOptions {
        num_labels: head_outputs,
        head_masks: masks,
        neuron_masks: masks,
        peft: peft_method(params),
        seed: params.seed,
    };
    Ok(Model::load(model_dir, &options, device)?)
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

/// Resets the kernel's peak-RSS counter, so a run's peak is its own (Linux; ignored
/// elsewhere).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Every measure of the majority-class baseline as `(key, value)` pairs.
pub fn baseline_values(b: &Baseline) -> Vec<(String, f64)> {
    b.values
        .values()
        .iter()
        .map(|(m, v)| (m.key().to_string(), *v))
        .collect()
}

/// The best evaluation by the dataset's primary measure.
pub fn best_eval(evals: &[EvalRecord], dataset: &Dataset) -> Option<EvalRecord> {
    let key = dataset.metric.primary().key();
    let value = |e: &EvalRecord| find_measure(&e.metrics, key).unwrap_or(f64::NEG_INFINITY);
    // The first of equal scores wins, as the reference's strict `>` tracking does.
    evals
        .iter()
        .fold(None::<&EvalRecord>, |best, e| match best {
            Some(b) if value(b) >= value(e) => Some(b),
            _ => Some(e),
        })
        .cloned()
}

/// The value of measure `key` among `(name, value)` pairs (0 when absent).
pub fn measure(values: &[(String, f64)], key: &str) -> f64 {
    find_measure(values, key).unwrap_or(0.0)
}

fn find_measure(values: &[(String, f64)], key: &str) -> Option<f64> {
    values.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}
