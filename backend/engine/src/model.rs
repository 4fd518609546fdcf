//! An encoder with a classification head and its PEFT hooks, loaded from a model folder.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::config::{Architecture, ModelConfig, ModelFiles};
use crate::encoder::{Encoder, ModuleId, Positions, Training};
use crate::error::{Result, invalid};
use crate::ops;
use crate::peft::{self, Adapter, AdapterConfig, FrozenLinear, Lora, LoraConfig, PeftModule};
use crate::tokenize::Batch;
use crate::weights::Checkpoint;

/// Which PEFT method to attach, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PeftMethod {
    /// No PEFT module (masks and head only).
    None,
    /// LoRA on every module whose name ends with one of `targets`.
    Lora {
        /// Rank, α and dropout.
        config: LoraConfig,
        /// Name suffixes, e.g. `query`, `output.dense`.
        targets: Vec<String>,
    },
    /// Bottleneck adapters on every module whose name ends with one of `targets`.
    Adapter {
        /// Size, dropout and scale.
        config: AdapterConfig,
        /// Name suffixes.
        targets: Vec<String>,
    },
}

/// The reference scripts' LoRA targets (spec §2.1): with suffix matching, `output.dense` hits
/// both output projections, so these wrap all six linears of a layer.
pub const REFERENCE_TARGETS: [&str; 5] = [
    "query",
    "key",
    "value",
    "output.dense",
    "intermediate.dense",
];

impl PeftMethod {
    /// LoRA with rank `r`, `alpha` and `dropout` on modules ending with one of `targets`.
    pub fn lora(r: usize, alpha: f64, dropout: f32, targets: &[&str]) -> Self {
        PeftMethod::Lora {
            config: LoraConfig { r, alpha, dropout },
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }
}

/// How to build a trainable model from a pretrained checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelOptions {
    /// Classes of the task.
    pub num_labels: usize,
    /// A trainable scalar per attention head (stage 1).
    pub head_masks: bool,
    /// A trainable scalar per FFN neuron (stage 1).
    pub neuron_masks: bool,
    /// The PEFT modules.
    pub peft: PeftMethod,
    /// Seed for the new weights (head, LoRA A, adapters).
    pub seed: u64,
}

/// The classification head of each architecture.
pub enum ClassifierHead {
    /// BERT: frozen pooler (dense + tanh on `[CLS]`), dropout, trainable classifier.
    Bert {
        /// The checkpoint's pooler.
        pooler: FrozenLinear,
        /// `[labels, hidden]`.
        weight: Var,
        /// `[labels]`.
        bias: Var,
    },
    /// RoBERTa: dropout, trainable dense + tanh, dropout, trainable out_proj, on `<s>`.
    Roberta {
        /// `[hidden, hidden]`.
        dense_weight: Var,
        /// `[hidden]`.
        dense_bias: Var,
        /// `[labels, hidden]`.
        out_weight: Var,
        /// `[labels]`.
        out_bias: Var,
    },
}

/// The BERT pooler's Hugging Face tensor names (weight, bias): frozen, kept from the checkpoint.
pub(crate) const POOLER_NAMES: [&str; 2] = ["pooler.dense.weight", "pooler.dense.bias"];
/// The BERT head's trainable tensors' names (weight, bias).
pub(crate) const BERT_HEAD_NAMES: [&str; 2] = ["classifier.weight", "classifier.bias"];
/// The RoBERTa head's trainable tensors' names (dense weight and bias, out_proj weight and bias).
pub(crate) const ROBERTA_HEAD_NAMES: [&str; 4] = [
    "classifier.dense.weight",
    "classifier.dense.bias",
    "classifier.out_proj.weight",
    "classifier.out_proj.bias",
];

impl ClassifierHead {
    /// The trainable tensors under their Hugging Face names, with what an optimiser treats each
    /// as: the one list that training, saving and exporting share.
    pub fn named_trainable(&self) -> Vec<(&'static str, ParamKind, &Var)> {
        use ParamKind::{HeadBias, HeadWeight};
        match self {
            ClassifierHead::Bert { weight, bias, .. } => {
                let [w, b] = BERT_HEAD_NAMES;
                vec![(w, HeadWeight, weight), (b, HeadBias, bias)]
            }
            ClassifierHead::Roberta {
                dense_weight,
                dense_bias,
                out_weight,
                out_bias,
            } => {
                let [dw, db, ow, ob] = ROBERTA_HEAD_NAMES;
                vec![
                    (dw, HeadWeight, dense_weight),
                    (db, HeadBias, dense_bias),
                    (ow, HeadWeight, out_weight),
                    (ob, HeadBias, out_bias),
                ]
            }
        }
    }
}

/// What an optimiser treats a trainable tensor as (the reference's parameter groups, §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// LoRA A/B or adapter weights.
    Peft,
    /// Per-head masks.
    HeadMask,
    /// Per-neuron masks.
    NeuronMask,
    /// Classification-head weights.
    HeadWeight,
    /// Classification-head biases (no weight decay).
    HeadBias,
}

/// A trainable tensor with its name and kind.
pub struct NamedVar {
    /// A Hugging-Face-style name, e.g. `encoder.layer.0.attention.self.query.lora_A`.
    pub name: String,
    /// Its group.
    pub kind: ParamKind,
    /// The variable.
    pub var: Var,
}

/// The model's output for one batch.
pub struct ModelOutput {
    /// `[batch, labels]`.
    pub logits: Tensor,
    /// Per-module importance ratios `[batch, seq]`, when requested.
    pub ratios: Vec<(ModuleId, Tensor)>,
}

/// An encoder plus classification head.
pub struct Model {
    /// The encoder with its hooks.
    pub encoder: Encoder,
    /// The task head.
    pub head: ClassifierHead,
    /// Whether the checkpoint lacked a pooler, which was then drawn at random (BERT only).
    pub pooler_initialised: bool,
}

impl Model {
    /// Loads `dir` (config.json + model.safetensors) and attaches the hooks of `options`.
    pub fn load(dir: &Path, options: &ModelOptions, device: &Device) -> Result<Self> {
        let files = ModelFiles::in_dir(dir)?;
        let config = ModelConfig::from_file(&files.config)?;
        let ckpt = Checkpoint::load(&files.weights, &config, device)?;
        let model = Self::from_checkpoint(&config, &ckpt, options);
        ckpt.close();
        model
    }

    /// Builds the model from a loaded checkpoint.
    pub fn from_checkpoint(
        config: &ModelConfig,
        ckpt: &Checkpoint,
        options: &ModelOptions,
    ) -> Result<Self> {
        if options.num_labels == 0 {
            return Err(invalid("num_labels", "a classifier needs at least 1 label"));
        }
        let mut rng = StdRng::seed_from_u64(options.seed);
        let mut encoder = Encoder::load(config, ckpt)?;
        encoder.enable_masks(options.head_masks, options.neuron_masks)?;
        attach_peft(&mut encoder, &options.peft, &mut rng)?;
        let (head, pooler_initialised) = build_head(config, ckpt, options.num_labels, &mut rng)?;
        Ok(Model {
            encoder,
            head,
            pooler_initialised,
        })
    }

    /// Logits for a batch; `training` turns dropout on.
    pub fn forward(
        &self,
        batch: &Batch,
        mut training: Option<Training<'_>>,
        record_ratios: bool,
    ) -> Result<ModelOutput> {
        // The heads read the first token alone.
        let out = self.encoder.forward_positions(
            batch,
            training.as_mut().map(|t| Training { rng: &mut *t.rng }),
            record_ratios,
            Positions::First,
        )?;
        let first = out.hidden.i((.., 0, ..))?.contiguous()?;
        let p = self.encoder.config.classifier_dropout;
        let grad = training.is_some();
        let mut drop = |x: Tensor| -> Result<Tensor> {
            match training.as_mut() {
                Some(t) => ops::dropout(&x, p, t.rng),
                None => Ok(x),
            }
        };
        let logits = match &self.head {
            ClassifierHead::Bert {
                pooler,
                weight,
                bias,
            } => {
                let pooled = drop(pooler.forward(&first)?.tanh()?)?;
                linear(&pooled, (weight, bias), grad)?
            }
            ClassifierHead::Roberta {
                dense_weight,
                dense_bias,
                out_weight,
                out_bias,
            } => {
                let x = drop(first)?;
                let x = drop(linear(&x, (dense_weight, dense_bias), grad)?.tanh()?)?;
                linear(&x, (out_weight, out_bias), grad)?
            }
        };
        Ok(ModelOutput {
            logits,
            ratios: out.ratios,
        })
    }

    /// Classes of the head.
    pub fn num_labels(&self) -> usize {
        match &self.head {
            ClassifierHead::Bert { weight, .. } => weight.dims()[0],
            ClassifierHead::Roberta { out_weight, .. } => out_weight.dims()[0],
        }
    }

    /// Every trainable tensor; frozen weights are never among them.
    pub fn trainable(&self) -> Vec<NamedVar> {
        let mut vars = Vec::new();
        let mut push = |name: String, kind, var: &Var| {
            vars.push(NamedVar {
                name,
                kind,
                var: var.clone(),
            })
        };
        for (l, layer) in self.encoder.layers.iter().enumerate() {
            if let Some(m) = &layer.attention.head_mask {
                push(
                    format!("encoder.layer.{l}.attention.head_mask"),
                    ParamKind::HeadMask,
                    m,
                );
            }
            if let Some(m) = &layer.ffn.neuron_mask {
                push(
                    format!("encoder.layer.{l}.intermediate.neuron_mask"),
                    ParamKind::NeuronMask,
                    m,
                );
            }
        }
        for id in self.encoder.module_ids() {
            let name = id.name();
            match &self.encoder.module(id).peft {
                Some(PeftModule::Lora(lora)) => {
                    push(format!("{name}.lora_A"), ParamKind::Peft, &lora.a);
                    push(format!("{name}.lora_B"), ParamKind::Peft, &lora.b);
                }
                Some(PeftModule::Adapter(ad)) => {
                    push(format!("{name}.adapter_down"), ParamKind::Peft, &ad.down);
                    push(format!("{name}.adapter_up"), ParamKind::Peft, &ad.up);
                }
                None => {}
            }
        }
        for (name, kind, var) in self.head.named_trainable() {
            push(name.into(), kind, var);
        }
        vars
    }
}

fn linear(x: &Tensor, (weight, bias): (&Var, &Var), training: bool) -> Result<Tensor> {
    Ok(x.matmul(&peft::value(weight, training).t()?)?
        .broadcast_add(&peft::value(bias, training))?)
}

fn attach_peft(encoder: &mut Encoder, method: &PeftMethod, rng: &mut StdRng) -> Result<()> {
    let targets = match method {
        PeftMethod::None => return Ok(()),
        PeftMethod::Lora { targets, .. } | PeftMethod::Adapter { targets, .. } => targets,
    };
    let device = encoder.device().clone();
    let ids: Vec<ModuleId> = encoder
        .module_ids()
        .into_iter()
        .filter(|id| id.matches_any(targets))
        .collect();
    if ids.is_empty() {
        return Err(invalid(
            "peft targets",
            format!(
                "{targets:?} match no module (known suffixes: query, key, value, attention.output.dense, intermediate.dense, output.dense)"
            ),
        ));
    }
    for id in ids {
        let linear = encoder.module_mut(id);
        let (in_dim, out_dim) = (linear.base.in_dim(), linear.base.out_dim());
        linear.peft = Some(match method {
            PeftMethod::Lora { config, .. } => {
                PeftModule::Lora(Lora::new(config, in_dim, out_dim, rng, &device)?)
            }
            PeftMethod::Adapter { config, .. } => {
                PeftModule::Adapter(Adapter::new(config, out_dim, rng, &device)?)
            }
            PeftMethod::None => unreachable!("returned above"),
        });
    }
    Ok(())
}

fn build_head(
    config: &ModelConfig,
    ckpt: &Checkpoint,
    labels: usize,
    rng: &mut StdRng,
) -> Result<(ClassifierHead, bool)> {
    let d = config.hidden_size;
    let std = config.initializer_range;
    let dev = ckpt.device().clone();
    let zeros = |n: usize| -> Result<Var> { Ok(Var::zeros(n, DType::F32, &dev)?) };
    let normal = |rng: &mut StdRng, rows, cols| -> Result<Var> {
        Ok(Var::from_tensor(&ops::normal(rows, cols, std, rng, &dev)?)?)
    };
    Ok(match config.architecture {
        Architecture::Bert => {
            let [pooler_weight, pooler_bias] = POOLER_NAMES;
            let (pooler, initialised) = if ckpt.contains(pooler_weight) {
                let pooler = FrozenLinear::new(
                    ckpt.get(pooler_weight, &[d, d])?,
                    Some(ckpt.get(pooler_bias, &[d])?),
                )?;
                (pooler, false)
            } else {
                let pooler = FrozenLinear::new(
                    ops::normal(d, d, std, rng, &dev)?,
                    Some(Tensor::zeros(d, DType::F32, &dev)?),
                )?;
                (pooler, true)
            };
            let head = ClassifierHead::Bert {
                pooler,
                weight: normal(rng, labels, d)?,
                bias: zeros(labels)?,
            };
            (head, initialised)
        }
        Architecture::Roberta => {
            let head = ClassifierHead::Roberta {
                dense_weight: normal(rng, d, d)?,
                dense_bias: zeros(d)?,
                out_weight: normal(rng, labels, d)?,
                out_bias: zeros(labels)?,
            };
            (head, false)
        }
    })
}

/// Mean cross-entropy of `logits` `[batch, labels]` against `labels` `[batch]` (u32).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok(candle_nn::loss::nll(&log_probs, labels)?)
}

/// What a model folder holds, as checked by loading it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Layout.
    pub architecture: Architecture,
    /// Encoder layers.
    pub layers: usize,
    /// Heads per layer (current, possibly pruned).
    pub heads: Vec<usize>,
    /// FFN width per layer (current, possibly pruned).
    pub ffn: Vec<usize>,
    /// Residual width.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Parameters of the encoder (embeddings included, pooler excluded).
    pub encoder_parameters: usize,
    /// Whether the checkpoint carries a BERT pooler.
    pub has_pooler: bool,
}

/// Loads a model folder (config, every encoder tensor and the tokenizer) and summarises it;
/// any mismatch is reported with the file and tensor at fault.
pub fn inspect_model_dir(dir: &Path) -> Result<ModelSummary> {
    let files = ModelFiles::in_dir(dir)?;
    let config = ModelConfig::from_file(&files.config)?;
    let ckpt = Checkpoint::load(&files.weights, &config, &Device::Cpu)?;
    let encoder = Encoder::load(&config, &ckpt)?;
    crate::tokenize::TextEncoder::from_file(&files.tokenizer, 16)?;
    Ok(ModelSummary {
        architecture: config.architecture,
        layers: config.layers.len(),
        heads: config.layers.iter().map(|l| l.heads).collect(),
        ffn: config.layers.iter().map(|l| l.ffn).collect(),
        hidden_size: config.hidden_size,
        vocab_size: config.vocab_size,
        encoder_parameters: encoder.parameter_count(),
        has_pooler: ckpt.contains(POOLER_NAMES[0]),
    })
}
