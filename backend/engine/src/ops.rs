//! Tensor operations the trainer needs that candle lacks or does wastefully.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

use crate::error::Result;

/// `x · Wᵀ` for a frozen `W` (`[out, in]`), whose backward computes only the input's gradient.
///
/// candle's own matmul backward always computes the gradient of both operands; for a frozen
/// weight that is a wasted `xᵀ · grad` product per linear layer.
pub(crate) fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || !x.track_op() {
        return Ok(x.broadcast_matmul(&weight.t()?)?);
    }
    let x = x.contiguous()?;
    Ok(x.apply_op1(FrozenMatmul {
        weight: weight.clone(),
    })?)
}

struct FrozenMatmul {
    weight: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out_dim, in_dim) = self.weight.dims2()?;
        let dims = layout.dims();
        let rows = dims[..dims.len() - 1].iter().product::<usize>();
        if dims.last() != Some(&in_dim) || !layout.is_contiguous() {
            candle_core::bail!(
                "frozen-matmul: input {dims:?} (contiguous: {}) does not fit weight [{out_dim}, {in_dim}]",
                layout.is_contiguous()
            );
        }
        let lhs_layout = Layout::contiguous_with_offset((1, rows, in_dim), layout.start_offset());
        let rhs = self.weight.t()?.unsqueeze(0)?;
        let (rhs_storage, rhs_layout) = rhs.storage_and_layout();
        let Storage::Cpu(rhs_storage) = &*rhs_storage else {
            candle_core::bail!("frozen-matmul: the weight is not on the cpu")
        };
        let out = storage.matmul(
            rhs_storage,
            (1, rows, out_dim, in_dim),
            &lhs_layout,
            rhs_layout,
        )?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 1") = out_dim;
        Ok((out, Shape::from(out_dims)))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.broadcast_matmul(&self.weight)?))
    }
}

/// Inverted dropout with a mask drawn from `rng`, so runs are reproducible from a seed.
pub(crate) fn dropout(x: &Tensor, p: f32, rng: &mut StdRng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep_scale = 1.0 / (1.0 - p);
    // Compare raw 32-bit draws against a threshold: one draw per element, no float maths.
    let threshold = (p as f64 * u32::MAX as f64) as u32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            if rng.next_u32() > threshold {
                keep_scale
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    Ok(x.mul(&mask)?)
}

/// A `[rows, cols]` tensor drawn from U(−bound, bound).
pub(crate) fn uniform(
    rows: usize,
    cols: usize,
    bound: f64,
    rng: &mut impl Rng,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let data: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-bound..bound) as f32)
        .collect();
    Ok(Tensor::from_vec(data, (rows, cols), device)?)
}

/// A `[rows, cols]` tensor drawn from N(0, std²).
pub(crate) fn normal(
    rows: usize,
    cols: usize,
    std: f64,
    rng: &mut impl Rng,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let dist = rand_distr::Normal::new(0.0, std)
        .map_err(|e| crate::error::invalid("std", e.to_string()))?;
    let data: Vec<f32> = (0..rows * cols).map(|_| rng.sample(dist) as f32).collect();
    Ok(Tensor::from_vec(data, (rows, cols), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

    #[test]
    fn frozen_matmul_matches_plain_matmul_and_its_input_gradient() {
        let dev = Device::Cpu;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let w = normal(5, 7, 1.0, &mut rng, &dev).unwrap();
        let x = Var::from_tensor(
            &normal(6, 7, 1.0, &mut rng, &dev)
                .unwrap()
                .reshape((2, 3, 7))
                .unwrap(),
        )
        .unwrap();
        let ours = frozen_matmul(x.as_tensor(), &w).unwrap();
        let plain = x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 5]);
        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(diff(&ours, &plain) < 1e-5);
        // A non-linear loss so the upstream gradient is not constant.
        let g_ours = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g_plain = plain.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_ours.get(&x).unwrap(), g_plain.get(&x).unwrap());
        assert!(diff(a, b) < 1e-4, "gradients differ by {}", diff(a, b));
        assert!(
            a.abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn dropout_zeroes_about_p_and_rescales_the_rest() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let x = Tensor::ones(10_000, candle_core::DType::F32, &Device::Cpu).unwrap();
        let y: Vec<f32> = dropout(&x, 0.25, &mut rng).unwrap().to_vec1().unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count();
        assert!((2_300..2_700).contains(&zeros), "{zeros} zeros");
        assert!(
            y.iter()
                .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6)
        );
        let mut again = rand::rngs::StdRng::seed_from_u64(7);
        let y2: Vec<f32> = dropout(&x, 0.25, &mut again).unwrap().to_vec1().unwrap();
        assert_eq!(y, y2, "same seed, same mask");
    }
}
