//! The two per-step PEFT importances of stage 1 (light-peft-spec §4.1–§4.2).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::encoder::{Encoder, ModuleId};
use crate::error::Result;
use crate::peft::PeftModule;

/// §4.1: each module's per-token ratio averaged over real (non-padding) tokens.
pub(crate) fn module_ratios(
    ratios: &[(ModuleId, Tensor)],
    attention_mask: &Tensor,
) -> Result<Vec<(ModuleId, f64)>> {
    let mask = attention_mask.to_dtype(DType::F32)?;
    let real = mask.sum_all()?.to_scalar::<f32>()? as f64;
    ratios
        .iter()
        .map(|(id, r)| {
            let total = (r * &mask)?.sum_all()?.to_scalar::<f32>()? as f64;
            Ok((*id, total / real))
        })
        .collect()
}

/// §4.2: `|mean_c(A⊙∇A)[j,:]| + |mean_o(B⊙∇B)[:,j]|` per rank j, from unclipped gradients
/// (for adapters, A is the down projection and B the up projection).
pub(crate) fn rank_importance(
    encoder: &Encoder,
    grads: &GradStore,
) -> Result<Vec<(ModuleId, Vec<f64>)>> {
    let mut out = Vec::new();
    for id in encoder.module_ids() {
        let (a, b) = match &encoder.module(id).peft {
            Some(PeftModule::Lora(l)) => (&l.a, &l.b),
            Some(PeftModule::Adapter(ad)) => (&ad.down, &ad.up),
            None => continue,
        };
        let scores = match (grads.get(a.as_tensor()), grads.get(b.as_tensor())) {
            (Some(ga), Some(gb)) => {
                let row = mean_product(a, ga, 1)?;
                let col = mean_product(b, gb, 0)?;
                row.iter()
                    .zip(&col)
                    .map(|(x, y)| x.abs() + y.abs())
                    .collect()
            }
            // No gradient reached the module (e.g. its output is unused): zero importance.
            _ => vec![0.0; a.dims()[0]],
        };
        out.push((id, scores));
    }
    Ok(out)
}

fn mean_product(w: &Var, g: &Tensor, dim: usize) -> Result<Vec<f64>> {
    let means = (w.as_tensor() * g)?.mean(dim)?;
    Ok(means.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}
