//! Reading pretrained tensors from a safetensors file, checked against the config's shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The tensors of one checkpoint, looked up by their Hugging Face names without the
/// `bert.`/`roberta.` prefix.
pub struct Checkpoint {
    path: PathBuf,
    prefix: String,
    device: Device,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Loads every tensor of `path` as f32 on `device` and detects the name prefix.
    pub fn load(path: &Path, config: &ModelConfig, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            tensor: "*".into(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
        Self::from_tensors(path, config, tensors)
    }

    /// Wraps tensors already in memory; `path` is only used in error messages.
    pub fn from_tensors(
        path: &Path,
        config: &ModelConfig,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let anchor = "embeddings.word_embeddings.weight";
        let candidates = ["", config.architecture.checkpoint_prefix()];
        let prefix = candidates
            .iter()
            .find(|p| tensors.contains_key(&format!("{p}{anchor}")))
            .ok_or_else(|| Error::Weights {
                path: path.to_path_buf(),
                tensor: anchor.into(),
                message: format!(
                    "missing (also looked for `{}{anchor}`); is this a {:?} checkpoint?",
                    config.architecture.checkpoint_prefix(),
                    config.architecture
                ),
            })?;
        let device = tensors[&format!("{prefix}{anchor}")].device().clone();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            prefix: prefix.to_string(),
            device,
            tensors,
        })
    }

    /// The device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The file the tensors came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lookup(&self, name: &str) -> Option<(&Tensor, String)> {
        let prefixed = format!("{}{name}", self.prefix);
        if let Some(t) = self.tensors.get(&prefixed) {
            return Some((t, prefixed));
        }
        // Old BERT checkpoints name LayerNorm parameters gamma/beta.
        let legacy = prefixed
            .strip_suffix("LayerNorm.weight")
            .map(|s| format!("{s}LayerNorm.gamma"))
            .or_else(|| {
                prefixed
                    .strip_suffix("LayerNorm.bias")
                    .map(|s| format!("{s}LayerNorm.beta"))
            })?;
        self.tensors.get(&legacy).map(|t| (t, legacy))
    }

    /// Whether the checkpoint holds `name` (prefix added).
    pub fn contains(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Returns tensor `name` as f32, failing unless its shape is exactly `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (tensor, full_name) = self.lookup(name).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            tensor: format!("{}{name}", self.prefix),
            message: "missing".into(),
        })?;
        if tensor.dims() != shape {
            return Err(Error::Weights {
                path: self.path.clone(),
                tensor: full_name,
                message: format!(
                    "has shape {:?} but the config implies {shape:?}",
                    tensor.dims()
                ),
            });
        }
        tensor.to_dtype(DType::F32).map_err(|e| Error::Weights {
            path: self.path.clone(),
            tensor: full_name,
            message: format!("cannot convert to f32: {e}"),
        })
    }
}
