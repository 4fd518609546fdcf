//! Light-PEFT's trainable masks (spec §3.3) applied as one graph node: each mask value scales a
//! group of neighbouring columns, a head's slice of the attention context or one FFN neuron.
//!
//! candle's broadcast product makes this three passes and three full-size buffers backwards
//! (the input's gradient, the product of the gradient with the input, then a sum over rows
//! strided across memory); this node makes one pass each way and writes only the input's
//! gradient plus a vector per block of rows.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{f32_slice, kernels, par_blocks, row_len};

/// `x ⊙ scale`, with `scale[j]` multiplying columns `j·width .. (j+1)·width` of every row.
pub(crate) struct GroupScale;

/// The input `x` and the scale as f32 slices, and the width of each group of `x`'s columns
/// that one of the scale's values multiplies.
fn inputs<'a>(
    op: &str,
    (x, x_layout): (&'a CpuStorage, &Layout),
    (scale, scale_layout): (&'a CpuStorage, &Layout),
) -> candle_core::Result<(usize, &'a [f32], &'a [f32])> {
    let cols = row_len(op, x_layout)?;
    let width = match scale_layout.dims() {
        &[groups] if groups > 0 && cols.is_multiple_of(groups) => cols / groups,
        dims => candle_core::bail!(
            "{op}: a scale of {dims:?} does not split rows of {cols} columns into equal groups"
        ),
    };
    Ok((
        width,
        f32_slice(op, "input", x, x_layout)?,
        f32_slice(op, "scale", scale, scale_layout)?,
    ))
}

impl CustomOp2 for GroupScale {
    fn name(&self) -> &'static str {
        "fused-group-scale"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        scale: &CpuStorage,
        scale_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (width, x, scale) = inputs(self.name(), (x, x_layout), (scale, scale_layout))?;
        let row = scale.len() * width;
        let mut out = vec![0.0; x.len()];
        par_blocks(&mut out, row, |first_row, block| {
            let x = &x[first_row * row..][..block.len()];
            kernels::group_scale_rows(block, x, scale, width);
        });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grads = x.apply_op3_no_bwd(scale, &grad.contiguous()?, &GroupScaleGrad)?;
        // The kernel packs [d_x | d_scale] into one buffer. The mask's gradient gets a buffer
        // of its own: a view would keep the activation-sized one alive for as long as the
        // gradient (or a sum that holds it) lives.
        let n = x.elem_count();
        let dx = grads.narrow(0, 0, n)?.reshape(x.shape())?;
        let d_scale = grads.narrow(0, n, scale.elem_count())?.to_vec1::<f32>()?;
        let d_scale = Tensor::from_vec(d_scale, scale.shape(), scale.device())?;
        Ok((Some(dx), Some(d_scale)))
    }
}

/// The backward kernel over `(x, scale, grad)`: `d_x = grad ⊙ scale` and `d_scale[j] = Σ grad·x`
/// over group `j` of every row, packed as `[d_x | d_scale]`.
struct GroupScaleGrad;

impl CustomOp3 for GroupScaleGrad {
    fn name(&self) -> &'static str {
        "fused-group-scale-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        scale: &CpuStorage,
        scale_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (width, x, scale) = inputs(name, (x, x_layout), (scale, scale_layout))?;
        let grad = f32_slice(name, "gradient", grad, grad_layout)?;
        super::same_len(name, x, grad)?;
        let (n, groups) = (x.len(), scale.len());
        let row = groups * width;
        let mut out = vec![0.0; n + groups];
        let (dx, d_scale) = out.split_at_mut(n);
        // Each block of rows sums its own share; the shares are added in row order afterwards,
        // so the result does not depend on which thread took which block.
        let shares: Mutex<Vec<(usize, Vec<f32>)>> = Mutex::new(Vec::new());
        par_blocks(dx, row, |first_row, block| {
            let rows = first_row * row..first_row * row + block.len();
            let mut share = vec![0.0; groups];
            kernels::group_scale_grad_rows(
                block,
                &mut share,
                &x[rows.clone()],
                &grad[rows],
                scale,
                width,
            );
            shares
                .lock()
                .expect("not poisoned")
                .push((first_row, share));
        });
        let mut shares = shares.into_inner().expect("not poisoned");
        shares.sort_unstable_by_key(|(first_row, _)| *first_row);
        for (_, share) in shares {
            for (total, part) in d_scale.iter_mut().zip(share) {
                *total += part;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from_dims(&[n + groups])))
    }
}

#[cfg(test)]
mod tests {
    use super::super::scale_groups;
    use super::super::tests::{assert_close, random};
    use candle_core::Var;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn group_scale_matches_the_broadcast_product_and_its_gradients() {
        let mut rng = StdRng::seed_from_u64(23);
        // (rows, groups, width): one neuron per group, heads of 32 columns, odd sizes, and
        // enough rows for several parallel blocks.
        for (rows, groups, width) in [
            (1, 1, 1),
            (3, 5, 1),
            (7, 3, 9),
            (1024, 12, 32),
            (200, 1536, 1),
        ] {
            let x = Var::from_tensor(&random(&[rows, groups * width], 0.0, 1.0, &mut rng)).unwrap();
            let scale = Var::from_tensor(&random(&[groups], 1.0, 0.5, &mut rng)).unwrap();
            let r = random(&[rows, groups * width], 0.0, 1.0, &mut rng);
            let fused = scale_groups(x.as_tensor(), scale.as_tensor()).unwrap();
            let composed = x
                .as_tensor()
                .reshape((rows, groups, width))
                .unwrap()
                .broadcast_mul(&scale.as_tensor().reshape((1, groups, 1)).unwrap())
                .unwrap()
                .reshape((rows, groups * width))
                .unwrap();
            let what = format!("{rows} rows, {groups} groups of {width}");
            assert_close(&format!("output {what}"), &fused, &composed, 1e-6);
            let grads = |out: &candle_core::Tensor| {
                let g = (out * &r).unwrap().sum_all().unwrap().backward().unwrap();
                (
                    g.get(x.as_tensor()).unwrap().clone(),
                    g.get(scale.as_tensor()).unwrap().clone(),
                )
            };
            let (fx, fs) = grads(&fused);
            let (cx, cs) = grads(&composed);
            assert_close(&format!("d_x {what}"), &fx, &cx, 1e-6);
            assert_close(&format!("d_scale {what}"), &fs, &cs, 1e-4);
        }
    }

    #[test]
    fn group_scale_refuses_groups_that_do_not_split_the_rows() {
        let x =
            candle_core::Tensor::zeros((2, 10), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let scale =
            candle_core::Tensor::ones(3, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let err = scale_groups(&x, &scale).unwrap_err().to_string();
        assert!(err.contains("equal groups"), "{err}");
    }
}
