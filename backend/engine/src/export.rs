//! Saving a (possibly pruned) model with its PEFT weights, and loading it back; plus the
//! Hugging Face PEFT adapter layout for unpruned LoRA models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::config::{Architecture, ModelConfig};
use crate::encoder::ModuleId;
use crate::error::{Error, Result, invalid};
use crate::model::{BERT_HEAD_NAMES, ClassifierHead, Model, POOLER_NAMES, ROBERTA_HEAD_NAMES};
use crate::peft::{Adapter, FrozenLinear, Lora, PeftModule};
use crate::weights::Checkpoint;

/// Format version of `lightpeft.json`.
const FORMAT: u32 = 1;

/// `lightpeft.json`: what the safetensors file holds besides the Hugging Face tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    /// Format version.
    pub format: u32,
    /// Classes of the head.
    pub num_labels: usize,
    /// Every PEFT module that survived, with its current size.
    pub modules: Vec<ExportedModule>,
}

/// One PEFT module in an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedModule {
    /// Which linear layer.
    pub id: ModuleId,
    /// `lora` or `adapter`.
    pub method: String,
    /// Current rank (LoRA) or bottleneck width (adapter).
    pub rank: usize,
    /// LoRA's α/r_original or the adapter's output scale.
    pub scale: f64,
    /// Dropout of the branch (used only if training resumes).
    pub dropout: f32,
}

/// Writes `config.json` (with the pruned shapes), `model.safetensors` (frozen weights, head and
/// PEFT tensors), `lightpeft.json` and a copy of `tokenizer`, into `dir`.
pub fn export_model(model: &Model, tokenizer: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let mut tensors: HashMap<String, Tensor> =
        model.encoder.frozen_tensors()?.into_iter().collect();
    let mut modules = Vec::new();
    for id in model.encoder.module_ids() {
        let name = id.name();
        let (method, rank, scale, dropout, a, b) = match &model.encoder.module(id).peft {
            None => continue,
            Some(PeftModule::Lora(l)) => ("lora", l.rank(), l.scale, l.dropout, &l.a, &l.b),
            Some(PeftModule::Adapter(ad)) => (
                "adapter",
                ad.down.dims()[0],
                ad.scale,
                ad.dropout,
                &ad.down,
                &ad.up,
            ),
        };
        let (a_name, b_name) = tensor_names(method);
        tensors.insert(format!("{name}.{a_name}.weight"), a.as_tensor().clone());
        tensors.insert(format!("{name}.{b_name}.weight"), b.as_tensor().clone());
        modules.push(ExportedModule {
            id,
            method: method.into(),
            rank,
            scale,
            dropout,
        });
    }
    let num_labels = head_tensors(model, "", &mut tensors)?;
    let manifest = ExportManifest {
        format: FORMAT,
        num_labels,
        modules,
    };
    write_json(&dir.join("config.json"), &model.encoder.config.to_hf_json())?;
    write_json(&dir.join("lightpeft.json"), &manifest)?;
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).map_err(|e| Error::Weights {
        path: weights.clone(),
        tensor: "*".into(),
        message: format!("cannot write: {e}"),
    })?;
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).map_err(|source| io(tokenizer, source))?;
    Ok(())
}

/// Loads a folder written by [`export_model`].
pub fn load_exported(dir: &Path, device: &Device) -> Result<Model> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let manifest_path = dir.join("lightpeft.json");
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|source| io(&manifest_path, source))?;
    let manifest: ExportManifest = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: manifest_path.clone(),
        message: format!("not a lightpeft export manifest: {e}"),
    })?;
    if manifest.format != FORMAT {
        return Err(Error::Config {
            path: manifest_path,
            message: format!("format {} is not {FORMAT}", manifest.format),
        });
    }
    let ckpt = Checkpoint::load(&dir.join("model.safetensors"), &config, device)?;
    let mut encoder = crate::encoder::Encoder::load(&config, &ckpt)?;
    for m in &manifest.modules {
        let linear = encoder.module_mut(m.id);
        let (in_dim, out_dim) = (linear.base.in_dim(), linear.base.out_dim());
        let (a_name, b_name) = tensor_names(&m.method);
        let name = m.id.name();
        let var = |suffix: &str, shape: &[usize]| -> Result<Var> {
            Ok(Var::from_tensor(
                &ckpt.get(&format!("{name}.{suffix}.weight"), shape)?,
            )?)
        };
        linear.peft = Some(match m.method.as_str() {
            "lora" => PeftModule::Lora(Lora {
                a: var(a_name, &[m.rank, in_dim])?,
                b: var(b_name, &[out_dim, m.rank])?,
                scale: m.scale,
                dropout: m.dropout,
            }),
            "adapter" => PeftModule::Adapter(Adapter {
                down: var(a_name, &[m.rank, out_dim])?,
                up: var(b_name, &[out_dim, m.rank])?,
                scale: m.scale,
                dropout: m.dropout,
            }),
            other => {
                return Err(invalid(
                    "export manifest",
                    format!("unknown method `{other}`"),
                ));
            }
        });
    }
    let head = load_head(&config, &ckpt, manifest.num_labels)?;
    ckpt.close();
    Ok(Model {
        encoder,
        head,
        pooler_initialised: false,
    })
}

/// Writes an unpruned LoRA model as a Hugging Face PEFT adapter: `adapter_config.json` and
/// `adapter_model.safetensors` (LoRA A/B plus the classifier as `modules_to_save`).
pub fn export_hf_peft(model: &Model, base_model: &str, dir: &Path) -> Result<()> {
    let config = &model.encoder.config;
    let full = config
        .layers
        .iter()
        .all(|l| l.heads == config.num_attention_heads && l.ffn == config.intermediate_size);
    if !full {
        return Err(invalid(
            "hf peft export",
            "the model is pruned; Hugging Face PEFT cannot load a pruned base (use the lightpeft export)",
        ));
    }
    let mut loras = Vec::new();
    for id in model.encoder.module_ids() {
        match &model.encoder.module(id).peft {
            Some(PeftModule::Lora(l)) => loras.push((id, l)),
            Some(PeftModule::Adapter(_)) => {
                return Err(invalid(
                    "hf peft export",
                    "only LoRA models have a PEFT layout here",
                ));
            }
            None => {}
        }
    }
    let Some((_, first)) = loras.first() else {
        return Err(invalid("hf peft export", "the model has no LoRA module"));
    };
    let r = first.rank();
    if loras
        .iter()
        .any(|(_, l)| l.rank() != r || l.scale != first.scale)
    {
        return Err(invalid(
            "hf peft export",
            "ranks were pruned unevenly; PEFT needs one rank",
        ));
    }
    let prefix = match config.architecture {
        Architecture::Bert => "base_model.model.bert.",
        Architecture::Roberta => "base_model.model.roberta.",
    };
    let mut tensors = HashMap::new();
    let mut targets: Vec<String> = Vec::new();
    for (id, l) in &loras {
        let name = format!("{prefix}{}", id.name());
        tensors.insert(format!("{name}.lora_A.weight"), l.a.as_tensor().clone());
        tensors.insert(format!("{name}.lora_B.weight"), l.b.as_tensor().clone());
        targets.push(id.name());
    }
    head_tensors(model, "base_model.model.", &mut tensors)?;
    std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let adapter_config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "SEQ_CLS",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": first.scale * r as f64,
        "lora_dropout": first.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "modules_to_save": ["classifier", "score"],
    });
    write_json(&dir.join("adapter_config.json"), &adapter_config)?;
    let path = dir.join("adapter_model.safetensors");
    candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::Weights {
        path,
        tensor: "*".into(),
        message: format!("cannot write: {e}"),
    })
}

fn tensor_names(method: &str) -> (&'static str, &'static str) {
    if method == "adapter" {
        ("adapter_down", "adapter_up")
    } else {
        ("lora_A", "lora_B")
    }
}

/// Adds the head's tensors under `prefix` and returns the number of labels.
fn head_tensors(
    model: &Model,
    prefix: &str,
    tensors: &mut HashMap<String, Tensor>,
) -> Result<usize> {
    let mut put = |name: &str, t: &Tensor| {
        tensors.insert(format!("{prefix}{name}"), t.clone());
    };
    if let ClassifierHead::Bert { pooler, .. } = &model.head {
        let [weight, bias] = POOLER_NAMES;
        put(weight, &pooler.weight()?);
        if let Some(b) = &pooler.bias {
            put(bias, b);
        }
    }
    let trainable = model.head.named_trainable();
    for (name, _, var) in &trainable {
        put(name, var.as_tensor());
    }
    Ok(model.num_labels())
}

fn load_head(config: &ModelConfig, ckpt: &Checkpoint, labels: usize) -> Result<ClassifierHead> {
    let d = config.hidden_size;
    let var = |name: &str, shape: &[usize]| -> Result<Var> {
        Ok(Var::from_tensor(&ckpt.get(name, shape)?)?)
    };
    Ok(match config.architecture {
        Architecture::Bert => {
            let [pooler_weight, pooler_bias] = POOLER_NAMES;
            let [weight, bias] = BERT_HEAD_NAMES;
            ClassifierHead::Bert {
                pooler: FrozenLinear::new(
                    ckpt.get(pooler_weight, &[d, d])?,
                    Some(ckpt.get(pooler_bias, &[d])?),
                )?,
                weight: var(weight, &[labels, d])?,
                bias: var(bias, &[labels])?,
            }
        }
        Architecture::Roberta => {
            let [dense_weight, dense_bias, out_weight, out_bias] = ROBERTA_HEAD_NAMES;
            ClassifierHead::Roberta {
                dense_weight: var(dense_weight, &[d, d])?,
                dense_bias: var(dense_bias, &[d])?,
                out_weight: var(out_weight, &[labels, d])?,
                out_bias: var(out_bias, &[labels])?,
            }
        }
    })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises");
    std::fs::write(path, text).map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from(path),
        source,
    }
}
