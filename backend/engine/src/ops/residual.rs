//! The end of every BERT sublayer, `LayerNorm(dropout(y) + x)`, as one graph node.
//!
//! As three nodes (dropout, add, LayerNorm) the step holds four full-width activations per
//! sublayer until the backward pass: `y`, its dropped-out copy, the sum and the normalised
//! output. This node holds only its inputs and its output: the dropout mask comes back from its
//! seed and each row's sum and statistics are recomputed in the backward pass, which is cheap
//! next to the matrix products around it. That is two hidden-width activations fewer per
//! sublayer — memory that pruning heads and neurons cannot remove — and two passes fewer each
//! way.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::{Dropout, f32_slice, host_f32, kernels, par_blocks, row_len, same_len};

/// `LayerNorm(dropout(y) + x)` over the last dimension, with frozen `gamma` and `beta`.
pub(crate) struct ResidualNorm {
    pub(crate) gamma: Tensor,
    pub(crate) beta: Tensor,
    pub(crate) eps: f32,
    pub(crate) dropout: Option<Dropout>,
}

impl ResidualNorm {
    /// Writes `dropout(y) + x` into `sum`, for the elements from `first` on: the same
    /// products and sums as the separate dropout and add ops.
    fn sum_into(&self, first: usize, y: &[f32], x: &[f32], sum: &mut [f32]) {
        match &self.dropout {
            Some(dropout) => {
                dropout.write_mask(first, sum);
                for ((s, &y), &x) in sum.iter_mut().zip(y).zip(x) {
                    *s = *s * y + x;
                }
            }
            None => {
                for ((s, &y), &x) in sum.iter_mut().zip(y).zip(x) {
                    *s = y + x;
                }
            }
        }
    }

    fn weights(&self, op: &str, d: usize) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let read = |what: &str, t: &Tensor| -> candle_core::Result<Vec<f32>> {
            let (storage, layout) = t.storage_and_layout();
            let data = host_f32(op, what, &storage, layout)?;
            if data.len() != d {
                candle_core::bail!("{op}: {what} has {} elements, not {d}", data.len());
            }
            Ok(data.to_vec())
        };
        Ok((read("gamma", &self.gamma)?, read("beta", &self.beta)?))
    }

    fn inputs<'a>(
        &self,
        op: &str,
        (y, y_layout): (&'a CpuStorage, &Layout),
        (x, x_layout): (&'a CpuStorage, &Layout),
    ) -> candle_core::Result<(usize, &'a [f32], &'a [f32])> {
        let d = row_len(op, x_layout)?;
        if y_layout.dims() != x_layout.dims() {
            candle_core::bail!(
                "{op}: the sublayer output {:?} and the residual {:?} differ in shape",
                y_layout.dims(),
                x_layout.dims()
            );
        }
        Ok((
            d,
            f32_slice(op, "sublayer output", y, y_layout)?,
            f32_slice(op, "residual", x, x_layout)?,
        ))
    }
}

impl CustomOp2 for ResidualNorm {
    fn name(&self) -> &'static str {
        "fused-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        y_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (d, y, x) = self.inputs(name, (y, y_layout), (x, x_layout))?;
        let (gamma, beta) = self.weights(name, d)?;
        let mut out = vec![0.0; x.len()];
        par_blocks(&mut out, d, |first_row, block| {
            let elems = first_row * d..first_row * d + block.len();
            let mut sum = vec![0.0; block.len()];
            self.sum_into(elems.start, &y[elems.clone()], &x[elems], &mut sum);
            kernels::layer_norm_rows(block, &sum, &gamma, &beta, self.eps);
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        x: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grads = y.apply_op2_no_bwd(
            x,
            &ResidualNormGrad {
                fwd: self,
                grad: grad.contiguous()?,
            },
        )?;
        if self.dropout.is_none() {
            // Without dropout both inputs get the sum's gradient.
            let grads = grads.reshape(x.shape())?;
            return Ok((Some(grads.clone()), Some(grads)));
        }
        // The kernel packs [d_x | d_y] into one buffer.
        let n = x.elem_count();
        let part = |i: usize| grads.narrow(0, i * n, n)?.reshape(x.shape());
        Ok((Some(part(1)?), Some(part(0)?)))
    }
}

/// The backward kernel over `(y, x)`: with `s = dropout(y) + x`, `x̂ = (s − mean)·rstd` and
/// `ĝ = grad·gamma`, `d_s = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))`, `d_x = d_s` and
/// `d_y = d_s · mask`, packed as `[d_x | d_y]` (just `d_x` without dropout).
struct ResidualNormGrad<'a> {
    fwd: &'a ResidualNorm,
    grad: Tensor,
}

impl CustomOp2 for ResidualNormGrad<'_> {
    fn name(&self) -> &'static str {
        "fused-residual-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        y_layout: &Layout,
        x: &CpuStorage,
        x_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (d, y, x) = self.fwd.inputs(name, (y, y_layout), (x, x_layout))?;
        let (gamma, _) = self.fwd.weights(name, d)?;
        let (grad_storage, grad_layout) = self.grad.storage_and_layout();
        let grad = host_f32(name, "gradient", &grad_storage, grad_layout)?;
        same_len(name, x, grad)?;
        let n = x.len();
        let dropout = self.fwd.dropout.as_ref();
        let mut out = vec![0.0; if dropout.is_some() { 2 * n } else { n }];
        let (ds, dy) = out.split_at_mut(n);
        par_blocks(ds, d, |first_row, block| {
            let elems = first_row * d..first_row * d + block.len();
            let mut sum = vec![0.0; block.len()];
            self.fwd
                .sum_into(elems.start, &y[elems.clone()], &x[elems.clone()], &mut sum);
            kernels::layer_norm_grad_rows(block, &sum, &grad[elems], &gamma, self.fwd.eps);
        });
        if let Some(dropout) = dropout {
            dropout.apply_into(ds, dy);
        }
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_close, random};
    use super::super::{dropout, layer_norm, residual_layer_norm};
    use candle_core::Var;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn fused_residual_norm_matches_the_composed_ops_and_their_gradients() {
        let mut rng = StdRng::seed_from_u64(17);
        for (rows, d, p) in [(1, 1, 0.0), (3, 7, 0.0), (5, 33, 0.3), (40, 384, 0.1)] {
            let y = Var::from_tensor(&random(&[rows, d], 0.0, 1.0, &mut rng)).unwrap();
            let x = Var::from_tensor(&random(&[rows, d], 0.5, 2.0, &mut rng)).unwrap();
            let gamma = random(&[d], 1.0, 0.3, &mut rng);
            let beta = random(&[d], 0.0, 0.3, &mut rng);
            let r = random(&[rows, d], 0.0, 1.0, &mut rng);
            let seed = 1000 + rows as u64;
            // Both sides draw the same dropout seed from identically seeded generators.
            let fused = residual_layer_norm(
                y.as_tensor(),
                x.as_tensor(),
                (&gamma, &beta),
                1e-12,
                Some((p, &mut StdRng::seed_from_u64(seed))),
            )
            .unwrap();
            let dropped = dropout(y.as_tensor(), p, &mut StdRng::seed_from_u64(seed)).unwrap();
            let composed =
                layer_norm(&(dropped + x.as_tensor()).unwrap(), &gamma, &beta, 1e-12).unwrap();
            let what = format!("{rows}×{d}, p={p}");
            assert_close(&format!("output {what}"), &fused, &composed, 1e-5);
            let grads = |out: &candle_core::Tensor| {
                let g = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
                (
                    g.get(y.as_tensor()).unwrap().clone(),
                    g.get(x.as_tensor()).unwrap().clone(),
                )
            };
            let (fy, fx) = grads(&fused);
            let (cy, cx) = grads(&composed);
            assert_close(&format!("d_y {what}"), &fy, &cy, 1e-4);
            assert_close(&format!("d_x {what}"), &fx, &cx, 1e-4);
        }
    }
}
