//! What a run needs to continue after an interruption: trainable values, optimiser moments,
//! the step to take next and what the run has produced so far. Data order and dropout are
//! functions of (seed, epoch) and (seed, step), so nothing random needs saving.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::TrainOutcome;
use super::optim::AdamW;
use crate::error::{Error, Result, invalid};
use crate::model::Model;

const TENSORS: &str = "state.safetensors";
const META: &str = "state.json";

/// A snapshot of a run between two steps.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// The 0-based step the run takes next.
    pub next_step: usize,
    /// Optimiser updates taken (bias correction).
    pub optimizer_steps: i32,
    /// `var.<name>`, `adam_m.<name>`, `adam_v.<name>` for every trainable variable.
    pub tensors: HashMap<String, Tensor>,
    /// Steps, evaluations and importances so far.
    pub outcome: TrainOutcome,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    next_step: usize,
    optimizer_steps: i32,
    outcome: TrainOutcome,
}

impl TrainState {
    /// Captures `model`'s trainable values and `optimizer`'s moments.
    pub(crate) fn capture(
        model: &Model,
        optimizer: &AdamW,
        next_step: usize,
        outcome: &TrainOutcome,
    ) -> Result<Self> {
        let vars = model.trainable();
        let (optimizer_steps, moments) = optimizer.state();
        let by_var: HashMap<_, _> = optimizer
            .vars()
            .map(|v| v.as_tensor().id())
            .zip(moments)
            .collect();
        let mut tensors = HashMap::new();
        for named in &vars {
            // A copy, not a view: the variable keeps changing after the snapshot.
            tensors.insert(format!("var.{}", named.name), named.var.as_tensor().copy()?);
            if let Some((m, v)) = by_var.get(&named.var.as_tensor().id()) {
                tensors.insert(format!("adam_m.{}", named.name), m.clone());
                tensors.insert(format!("adam_v.{}", named.name), v.clone());
            }
        }
        Ok(TrainState {
            next_step,
            optimizer_steps,
            tensors,
            outcome: outcome.clone(),
        })
    }

    /// Sets `model`'s variables and `optimizer`'s moments from the snapshot.
    pub(crate) fn restore(&self, model: &Model, optimizer: &mut AdamW) -> Result<()> {
        let vars = model.trainable();
        for named in &vars {
            let value = self.tensor(&format!("var.{}", named.name))?;
            if value.dims() != named.var.dims() {
                return Err(invalid(
                    "checkpoint",
                    format!(
                        "`{}` is {:?} in the checkpoint, {:?} in the model",
                        named.name,
                        value.dims(),
                        named.var.dims()
                    ),
                ));
            }
            named.var.set(value)?;
        }
        let names: HashMap<_, _> = vars
            .iter()
            .map(|v| (v.var.as_tensor().id(), v.name.as_str()))
            .collect();
        let moments = optimizer
            .vars()
            .map(|var| {
                let name = names[&var.as_tensor().id()];
                Ok((
                    self.tensor(&format!("adam_m.{name}"))?.clone(),
                    self.tensor(&format!("adam_v.{name}"))?.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        optimizer.restore(self.optimizer_steps, moments)
    }

    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| invalid("checkpoint", format!("no tensor `{name}`")))
    }

    /// Writes the snapshot into `dir` (created if needed). Each file is written under a
    /// temporary name and renamed, so a kill mid-write leaves the previous snapshot whole.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path, source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let tensors = dir.join(TENSORS);
        let tmp = dir.join(format!("{TENSORS}.tmp"));
        let mut all = self.tensors.clone();
        all.insert(
            "next_step".to_string(),
            Tensor::new(self.next_step as i64, &Device::Cpu)?,
        );
        candle_core::safetensors::save(&all, &tmp).map_err(|e| Error::Weights {
            path: tmp.clone(),
            tensor: String::new(),
            message: e.to_string(),
        })?;
        let meta = Meta {
            next_step: self.next_step,
            optimizer_steps: self.optimizer_steps,
            outcome: self.outcome.clone(),
        };
        let meta_path = dir.join(META);
        let meta_tmp = dir.join(format!("{META}.tmp"));
        let text = serde_json::to_vec(&meta).map_err(|e| invalid("checkpoint", e.to_string()))?;
        std::fs::write(&meta_tmp, text).map_err(|e| io(&meta_tmp, e))?;
        // Tensors first, then the step that names them: a kill between the two renames leaves
        // newer tensors with an older step, which `load` detects by the step stored in both.
        std::fs::rename(&tmp, &tensors).map_err(|e| io(&tensors, e))?;
        std::fs::rename(&meta_tmp, &meta_path).map_err(|e| io(&meta_path, e))?;
        Ok(())
    }

    /// Reads a snapshot written by [`TrainState::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let meta_path = dir.join(META);
        let text = std::fs::read(&meta_path).map_err(|source| Error::Io {
            path: meta_path.clone(),
            source,
        })?;
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| Error::Config {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        let path = dir.join(TENSORS);
        let mut tensors =
            candle_core::safetensors::load(&path, device).map_err(|e| Error::Weights {
                path: path.clone(),
                tensor: String::new(),
                message: e.to_string(),
            })?;
        let stored_step = tensors
            .remove("next_step")
            .map(|t| t.to_scalar::<i64>())
            .transpose()?;
        if stored_step != Some(meta.next_step as i64) {
            return Err(Error::Config {
                path: meta_path,
                message: format!(
                    "the tensors are from step {stored_step:?}, the metadata from step {}: the \
                     snapshot was cut while being written",
                    meta.next_step
                ),
            });
        }
        Ok(TrainState {
            next_step: meta.next_step,
            optimizer_steps: meta.optimizer_steps,
            tensors,
            outcome: meta.outcome,
        })
    }
}
