//! The Light-PEFT pipeline between training runs: summarising stage 1 for the planner and
//! turning a stage-1 model into the stage-2 model a plan describes (spec §5.7).

use crate::encoder::ModuleId;
use crate::error::{Result, invalid};
use crate::model::Model;
use crate::peft::PeftModule;
use crate::plan::{
    EstimationSummary, LoraShape, ModelShape, PruningPlan, aggregate_importance, shape_from_config,
};
use crate::train::{TrainOutcome, mask_values};

/// Final masks and second-half-averaged importances of a stage-1 run (§4.3, §3.7: only the
/// last mask snapshot is used).
pub fn summarize_estimation(model: &Model, outcome: &TrainOutcome) -> Result<EstimationSummary> {
    let (heads, neurons) = mask_values(model)?;
    let modules: Vec<ModuleId> = outcome
        .module_importance
        .first()
        .map(|step| step.iter().map(|(id, _)| *id).collect())
        .unwrap_or_default();
    let module_steps: Vec<Vec<f64>> = outcome
        .module_importance
        .iter()
        .map(|step| step.iter().map(|(_, v)| *v).collect())
        .collect();
    let module_mean = if module_steps.is_empty() {
        Vec::new()
    } else {
        aggregate_importance(&module_steps)?
    };
    let rank_importance = modules
        .iter()
        .enumerate()
        .map(|(k, id)| {
            let per_step: Vec<&[f64]> = outcome
                .rank_importance
                .iter()
                .map(|step| step[k].1.as_slice())
                .collect();
            Ok((*id, aggregate_importance(&per_step)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(EstimationSummary {
        head_masks: heads.unwrap_or_default(),
        neuron_masks: neurons.unwrap_or_default(),
        module_importance: modules.iter().copied().zip(module_mean).collect(),
        rank_importance,
    })
}

/// The planner's view of `model` (unpruned, as stage 1 trained it).
pub fn model_shape(model: &Model) -> Result<ModelShape> {
    let modules: Vec<ModuleId> = model
        .encoder
        .module_ids()
        .into_iter()
        .filter(|id| model.encoder.module(*id).peft.is_some())
        .collect();
    let rank = modules
        .first()
        .map(|id| match &model.encoder.module(*id).peft {
            Some(PeftModule::Lora(l)) => l.rank(),
            Some(PeftModule::Adapter(a)) => a.down.dims()[0],
            None => 0,
        })
        .unwrap_or(0);
    let lora = (!modules.is_empty()).then_some(LoraShape { rank, modules });
    shape_from_config(&model.encoder.config, model.num_labels(), lora)
}

/// Applies `plan` to a stage-1 model: removes heads and neurons physically (slicing the
/// stage-1 LoRA weights with them), drops pruned modules and rank dimensions, and switches the
/// masks off without folding them into the weights (§5.7 steps 2–10).
pub fn apply_plan(model: &mut Model, plan: &PruningPlan) -> Result<()> {
    if plan.layers.len() != model.encoder.layers.len() {
        return Err(invalid(
            "plan",
            format!(
                "it has {} layers, the model {}",
                plan.layers.len(),
                model.encoder.layers.len()
            ),
        ));
    }
    for (l, layer) in plan.layers.iter().enumerate() {
        if layer.kept_heads.len() != model.encoder.config.layers[l].heads {
            model.encoder.keep_heads(l, &layer.kept_heads)?;
        }
        if layer.kept_neurons.len() != model.encoder.config.layers[l].ffn {
            model.encoder.keep_neurons(l, &layer.kept_neurons)?;
        }
    }
    for id in model.encoder.module_ids() {
        let kept = plan.peft.modules.iter().find(|m| m.id == id);
        let linear = model.encoder.module_mut(id);
        linear.peft = match (linear.peft.take(), kept) {
            (None, _) => None,
            (Some(_), None) => None,
            (Some(PeftModule::Lora(l)), Some(m)) => {
                l.keep_ranks(&m.kept_ranks)?.map(PeftModule::Lora)
            }
            (Some(PeftModule::Adapter(a)), Some(m)) => {
                a.keep_ranks(&m.kept_ranks)?.map(PeftModule::Adapter)
            }
        };
    }
    model.encoder.disable_masks();
    Ok(())
}
