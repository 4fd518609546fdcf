//! Input checks: every ratio, shape and stage-1 record is checked once, before any decision,
//! and a failure names the input at fault.

use crate::error::{Result, invalid};
use crate::rank::Grouped;
use crate::{ModelShape, ModuleId, PlanRequest};

/// Ratios are fractions removed: NaN and anything outside [0, 1] are refused.
pub(crate) fn check_fraction(what: &'static str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(what, format!("must lie in [0, 1], got {value}")))
    }
}

impl PlanRequest {
    pub(crate) fn validate(&self) -> Result<()> {
        check_fraction("head_ratio", self.head_ratio)?;
        check_fraction("ffn_ratio", self.ffn_ratio)?;
        check_fraction("module_ratio", self.module_ratio)?;
        check_fraction("rank_ratio", self.rank_ratio)
    }
}

impl ModelShape {
    /// Checks that the shape describes an encoder the planner can count: at least one layer,
    /// head and neuron, heads that divide the width, and LoRA modules that exist, each once.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(invalid("model shape", message));
        if self.layers == 0 || self.heads == 0 || self.intermediate_size == 0 {
            return fail(format!(
                "needs at least one layer, head and FFN neuron, got {} layers, {} heads, {} neurons",
                self.layers, self.heads, self.intermediate_size
            ));
        }
        if self.hidden_size == 0 || !self.hidden_size.is_multiple_of(self.heads) {
            return fail(format!(
                "hidden_size {} is not a positive multiple of {} heads",
                self.hidden_size, self.heads
            ));
        }
        if self.num_labels == 0 {
            return fail("a classifier needs at least 1 label".into());
        }
        let Some(lora) = &self.lora else {
            return Ok(());
        };
        if lora.rank == 0 || lora.modules.is_empty() {
            return fail(format!(
                "LoRA needs a rank and modules, got rank {} on {} modules",
                lora.rank,
                lora.modules.len()
            ));
        }
        if let Some(id) = lora.modules.iter().find(|id| id.layer >= self.layers) {
            return fail(format!(
                "LoRA module {} is beyond the {} layers",
                id.name(),
                self.layers
            ));
        }
        let mut sorted = lora.modules.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return fail(format!("LoRA module {} is listed twice", pair[0].name()));
        }
        Ok(())
    }
}

/// Checks a `[layer][unit]` mask record and ranks it; `None` when stage 1 left it empty.
pub(crate) fn mask_ranking(
    what: &'static str,
    masks: &[Vec<f32>],
    layers: usize,
    width: usize,
) -> Result<Option<Grouped<f32>>> {
    if masks.is_empty() {
        return Ok(None);
    }
    if masks.len() != layers {
        return Err(invalid(
            what,
            format!("has {} layers, the model {layers}", masks.len()),
        ));
    }
    for (layer, row) in masks.iter().enumerate() {
        if row.len() != width {
            return Err(invalid(
                what,
                format!("layer {layer} has {} values, expected {width}", row.len()),
            ));
        }
        if let Some((index, value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(invalid(
                what,
                format!("layer {layer}, index {index} is {value}"),
            ));
        }
    }
    Ok(Some(Grouped::new(masks, width)))
}

/// Checks that a per-module record names every LoRA module exactly once with finite values and
/// returns its rows in `modules` order; `None` when stage 1 left it empty.
pub(crate) fn per_module<V>(
    what: &'static str,
    modules: &[ModuleId],
    record: &[(ModuleId, V)],
    row: impl Fn(&V) -> std::result::Result<Vec<f64>, String>,
) -> Result<Option<Vec<Vec<f64>>>> {
    if record.is_empty() {
        return Ok(None);
    }
    if modules.is_empty() {
        return Err(invalid(what, "is given but the model has no LoRA modules"));
    }
    let mut rows: Vec<Option<Vec<f64>>> = vec![None; modules.len()];
    for (id, value) in record {
        let fail = |message: String| invalid(what, format!("{}: {message}", id.name()));
        let index = modules
            .binary_search(id)
            .map_err(|_| fail("is not a LoRA module".into()))?;
        let values = row(value).map_err(&fail)?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(fail(format!(
                "is {bad} (aggregate_importance zeroes non-finite steps)"
            )));
        }
        if rows[index].replace(values).is_some() {
            return Err(fail("is listed twice".into()));
        }
    }
    if let Some(missing) = rows.iter().position(Option::is_none) {
        return Err(invalid(
            what,
            format!(
                "covers {} of the {} LoRA modules; {} is missing",
                rows.iter().filter(|r| r.is_some()).count(),
                modules.len(),
                modules[missing].name()
            ),
        ));
    }
    Ok(Some(rows.into_iter().flatten().collect()))
}
