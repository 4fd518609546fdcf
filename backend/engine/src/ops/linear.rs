//! Linear layers over a frozen weight as single graph nodes: `x·Wᵀ + b`, and the same plus a
//! LoRA branch `s·(dropout(x)·Aᵀ)·Bᵀ`.
//!
//! Composed from candle's ops, a LoRA layer is eight nodes (dropout, two transposes, two
//! matmuls, scale, two adds), each with its own output buffer forwards and a zero-filled
//! accumulator plus an add backwards. Here the forward pass writes the bias once and lets both
//! products accumulate onto it; the backward pass produces the input, A and B gradients in one
//! kernel, and never the frozen weight's.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::gemm::{Mat, Start, Write, matmul, matmul_onto, matmul_onto_then};
use super::{
    Activation, Dropout, GeluErfGrad, f32_slice, gelu_all, host_f32, kernels, par_blocks, threads,
};

/// `act(x·Wᵀ + b)` for a frozen `W` and bias `[out]`.
pub(crate) struct FrozenLinear {
    /// `W` as `[out, in]`, or as `[in, out]` when `transposed`.
    pub(crate) weight: Tensor,
    pub(crate) transposed: bool,
    pub(crate) bias: Option<Tensor>,
    pub(crate) activation: Activation,
    /// Whether a backward pass may follow (an input tracks gradients), which reads the
    /// pre-activation; without one the activation is applied in place.
    keep_pre: bool,
    /// `LayerNorm(y + residual)` after the product, in place (only without a backward pass).
    add_norm: Option<AddNorm>,
    /// The pre-activation, kept for the backward pass when there is an activation.
    pub(crate) pre: Mutex<Option<Vec<f32>>>,
}

/// The end of a BERT sublayer without dropout, `LayerNorm(y + residual)` with frozen `gamma`
/// and `beta`, as a linear node that makes `y` applies it.
pub(crate) struct AddNorm {
    pub(crate) residual: Tensor,
    pub(crate) gamma: Tensor,
    pub(crate) beta: Tensor,
    pub(crate) eps: f32,
}

/// The LoRA branch's trainable-free settings; A and B travel as the op's arguments.
pub(crate) struct LoraLinear {
    pub(crate) base: FrozenLinear,
    pub(crate) scale: f32,
    /// Dropout on the branch input, `None` in inference.
    pub(crate) dropout: Option<Dropout>,
    /// Where the forward pass leaves each row's importance ratio `‖Δ‖ / ‖x·Wᵀ + b‖` (spec
    /// §4.1, before the activation), when the caller asked for it.
    pub(crate) ratio: Option<RatioSlot>,
}

/// The per-row ratios a [`LoraLinear`] forward pass computed, read by the caller after it.
pub(crate) type RatioSlot = std::sync::Arc<Mutex<Option<Vec<f32>>>>;

impl FrozenLinear {
    /// A layer over `weight` (stored as `transposed` says) and `bias` followed by `activation`.
    pub(crate) fn new(
        weight: Tensor,
        transposed: bool,
        bias: Option<Tensor>,
        activation: Activation,
    ) -> Self {
        FrozenLinear {
            weight,
            transposed,
            bias,
            activation,
            keep_pre: true,
            add_norm: None,
            pre: Mutex::new(None),
        }
    }

    /// The layer followed by `norm`, for a forward pass that no backward pass follows.
    pub(crate) fn with_add_norm(mut self, norm: AddNorm) -> Self {
        debug_assert!(
            self.activation == Activation::Identity,
            "an activation before the norm"
        );
        self.keep_pre = false;
        self.add_norm = Some(norm);
        self
    }

    /// `f(finish)`, with `finish(first_row, block)` what follows the product in place on a
    /// block of whole rows of the `rows × out` output when no backward pass needs the product:
    /// the activation, or the residual's add and the LayerNorm.
    fn with_finish<R>(
        &self,
        op: &str,
        rows: usize,
        f: impl FnOnce(&(dyn Fn(usize, &mut [f32]) + Sync)) -> R,
    ) -> candle_core::Result<R> {
        let Some(norm) = &self.add_norm else {
            return Ok(match self.activation {
                Activation::Identity => f(&|_, _| {}),
                Activation::GeluErf => f(&|_, block| kernels::gelu_in_place(block)),
            });
        };
        let out = self.dims()?.0;
        let (r_storage, r_layout) = norm.residual.storage_and_layout();
        let (g_storage, g_layout) = norm.gamma.storage_and_layout();
        let (b_storage, b_layout) = norm.beta.storage_and_layout();
        let residual = host_f32(op, "residual", &r_storage, r_layout)?;
        let gamma = host_f32(op, "gamma", &g_storage, g_layout)?;
        let beta = host_f32(op, "beta", &b_storage, b_layout)?;
        if residual.len() != rows * out || gamma.len() != out || beta.len() != out {
            candle_core::bail!(
                "{op}: a residual of {} and LayerNorm weights of {} and {} do not fit a {rows}×{out} output",
                residual.len(),
                gamma.len(),
                beta.len()
            );
        }
        Ok(f(&|first, block| {
            let residual = &residual[first * out..][..block.len()];
            kernels::add_layer_norm_in_place(block, residual, gamma, beta, norm.eps)
        }))
    }

    /// The layer for a forward pass that no backward pass follows when `backward` is false.
    pub(crate) fn with_backward(mut self, backward: bool) -> Self {
        self.keep_pre = backward;
        self
    }

    /// `act(x·wᵀ + b)`, `[rows, out]`, for `w` (an `[out, in]` view) this layer's weight or
    /// one a LoRA branch is folded into. Where no backward pass will read the pre-activation,
    /// the activation runs in place on each block of rows, by the thread whose product wrote
    /// it, while the block is in its cache: no second buffer, no second pass over memory.
    fn forward_with(&self, op: &str, x: Mat, w: Mat) -> candle_core::Result<Vec<f32>> {
        if self.keep_pre {
            let y = self.onto_bias(op, |start| matmul_onto(start, x, w.t(), 1.0, threads()))?;
            return self.activate(op, y);
        }
        self.with_finish(op, x.rows_count(), |finish| {
            self.onto_bias(op, |start| {
                matmul_onto_then(start, x, w.t(), 1.0, threads(), finish)
            })
        })?
    }

    /// Applies what follows the product to the finished `y`: in place without a backward
    /// pass; else the activation into a new buffer, keeping `y` for the backward pass.
    fn activate(&self, op: &str, mut y: Vec<f32>) -> candle_core::Result<Vec<f32>> {
        if y.is_empty() || (self.activation == Activation::Identity && self.add_norm.is_none()) {
            return Ok(y);
        }
        if !self.keep_pre {
            let out = self.dims()?.0;
            self.with_finish(op, y.len() / out.max(1), |finish| {
                par_blocks(&mut y, out, finish)
            })?;
            return Ok(y);
        }
        Ok(match self.activation {
            Activation::Identity => y,
            Activation::GeluErf => {
                let act = gelu_all(&y);
                *self.pre.lock().expect("not poisoned") = Some(y);
                act
            }
        })
    }

    /// The gradient with respect to the pre-activation, from the one with respect to the
    /// output `y`.
    fn pre_activation_grad(&self, y: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let grad = grad.contiguous()?;
        match self.activation {
            Activation::Identity => Ok(grad),
            Activation::GeluErf => {
                let Some(pre) = self.pre.lock().expect("not poisoned").take() else {
                    candle_core::bail!("linear with GELU: backward ran twice")
                };
                let pre = Tensor::from_vec(pre, y.shape(), y.device())?;
                pre.apply_op3_no_bwd(&y.contiguous()?, &grad, &GeluErfGrad)
            }
        }
    }

    /// `(out, in)`, whichever way the weight is stored.
    fn dims(&self) -> candle_core::Result<(usize, usize)> {
        let (rows, cols) = self.weight.dims2()?;
        Ok(if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        })
    }

    /// `f(W)` with `W` viewed as `[out, in]`, whichever way it is stored.
    fn with_weight<R>(&self, op: &str, f: impl FnOnce(Mat) -> R) -> candle_core::Result<R> {
        let (storage, layout) = self.weight.storage_and_layout();
        let w = host_f32(op, "weight", &storage, layout)?;
        let (out, inp) = self.dims()?;
        Ok(f(weight_view(w, out, inp, self.transposed)))
    }

    /// `f(start)` with the bias under every row as the start of a product (zeros without one).
    fn onto_bias<R>(&self, op: &str, f: impl FnOnce(Start) -> R) -> candle_core::Result<R> {
        let Some(bias) = &self.bias else {
            return Ok(f(Start::Zeros));
        };
        let (storage, layout) = bias.storage_and_layout();
        Ok(f(Start::Row(host_f32(op, "bias", &storage, layout)?)))
    }

    /// `x·Wᵀ + b`, `[rows, out]`.
    fn product(&self, op: &str, x: Mat) -> candle_core::Result<Vec<f32>> {
        self.with_weight(op, |w| {
            self.onto_bias(op, |start| matmul_onto(start, x, w.t(), 1.0, threads()))
        })?
    }

    /// The input `[.., in]` as a row-major `rows × in` matrix, and the output's shape.
    fn input<'a>(
        &self,
        op: &str,
        x: &'a CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(Mat<'a>, Shape)> {
        let (out, inp) = self.dims()?;
        let dims = layout.dims();
        if dims.last() != Some(&inp) {
            candle_core::bail!("{op}: input {dims:?} does not fit weight [{out}, {inp}]");
        }
        let x = f32_slice(op, "input", x, layout)?;
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank ≥ 1") = out;
        Ok((Mat::rows(x, x.len() / inp, inp), Shape::from(out_dims)))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, shape) = self.input(name, x, layout)?;
        let y = self.with_weight(name, |w| self.forward_with(name, x, w))??;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = self.pre_activation_grad(y, grad)?;
        Ok(Some(grad.apply_op1_no_bwd(&FrozenLinearGrad(self))?))
    }
}

/// The input gradient `grad·W` of a frozen linear layer.
struct FrozenLinearGrad<'l>(&'l FrozenLinear);

impl CustomOp1 for FrozenLinearGrad<'_> {
    fn name(&self) -> &'static str {
        "frozen-linear-grad"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (out, inp) = self.0.dims()?;
        let dims = layout.dims();
        if dims.last() != Some(&out) {
            candle_core::bail!("{name}: gradient {dims:?} does not fit weight [{out}, {inp}]");
        }
        let grad = f32_slice(name, "gradient", grad, layout)?;
        let rows = grad.len() / out;
        let mut dx = vec![0.0; rows * inp];
        self.0.with_weight(name, |w| {
            matmul(
                &mut dx,
                Mat::rows(grad, rows, out),
                w,
                1.0,
                Write::Set,
                threads(),
            );
        })?;
        let mut in_dims = dims.to_vec();
        *in_dims.last_mut().expect("rank ≥ 1") = inp;
        Ok((CpuStorage::F32(dx), Shape::from(in_dims)))
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, shape) = self.base.input(name, x, x_layout)?;
        let (a, b) = self.factors(a, a_layout, b, b_layout, x.cols_count())?;
        let rows = x.rows_count();
        if self.dropout.is_none()
            && self.ratio.is_none()
            && folding_pays(rows, a.cols_count(), b.rows_count())
        {
            // Without dropout the branch reads x itself: x·Wᵀ + s·(x·Aᵀ)·Bᵀ = x·(W + s·B·A)ᵀ,
            // one product over a weight that costs out·in·r to build instead of two skinny
            // products and a pass over the output.
            let w = self.folded_weight(a, b)?;
            let w = weight_view(&w, b.rows_count(), a.cols_count(), self.base.transposed);
            return Ok((CpuStorage::F32(self.base.forward_with(name, x, w)?), shape));
        }
        let mut y = self.base.product(name, x)?;
        let dropped = self.dropped(x)?;
        let x_in = dropped
            .as_deref()
            .map_or(x, |d| Mat::rows(d, rows, x.cols_count()));
        let mut down = vec![0.0; rows * a.rows_count()];
        matmul(&mut down, x_in, a.t(), 1.0, Write::Set, threads());
        let down = Mat::rows(&down, rows, a.rows_count());
        match &self.ratio {
            None => matmul(&mut y, down, b.t(), self.scale, Write::Add, threads()),
            Some(slot) => {
                let ratios = add_branch_with_ratios(&mut y, down, b, self.scale);
                *slot.lock().expect("not poisoned") = Some(ratios);
            }
        }
        Ok((CpuStorage::F32(self.base.activate(name, y)?), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grads = x.apply_op2_no_bwd(
            &self.base.pre_activation_grad(y, grad)?,
            &LoraLinearGrad {
                layer: self,
                a: a.detach(),
                b: b.detach(),
            },
        )?;
        // The kernel packs [dx | dA | dB] into one buffer.
        let (nx, na, nb) = (x.elem_count(), a.elem_count(), b.elem_count());
        let dx = grads.narrow(0, 0, nx)?.reshape(x.shape())?;
        let da = grads.narrow(0, nx, na)?.reshape(a.shape())?;
        let db = grads.narrow(0, nx + na, nb)?.reshape(b.shape())?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

impl LoraLinear {
    /// A `[r, in]` and B `[out, r]` as matrices, checked against the layer.
    fn factors<'a>(
        &self,
        a: &'a CpuStorage,
        a_layout: &Layout,
        b: &'a CpuStorage,
        b_layout: &Layout,
        inp: usize,
    ) -> candle_core::Result<(Mat<'a>, Mat<'a>)> {
        let name = self.name();
        let out = self.base.dims()?.0;
        let (r, a_in) = a_layout.shape().dims2()?;
        let (b_out, b_r) = b_layout.shape().dims2()?;
        if a_in != inp || b_out != out || b_r != r {
            candle_core::bail!(
                "{name}: A {:?} and B {:?} do not fit a [{out}, {inp}] layer",
                a_layout.dims(),
                b_layout.dims()
            );
        }
        let a = f32_slice(name, "A", a, a_layout)?;
        let b = f32_slice(name, "B", b, b_layout)?;
        Ok((Mat::rows(a, r, inp), Mat::rows(b, out, r)))
    }

    /// `W + s·B·A`, stored as the base weight is (`[in, out]` when transposed).
    fn folded_weight(&self, a: Mat, b: Mat) -> candle_core::Result<Vec<f32>> {
        let (storage, layout) = self.base.weight.storage_and_layout();
        let w = host_f32("lora linear", "weight", &storage, layout)?;
        let (lhs, rhs) = if self.base.transposed {
            (a.t(), b.t())
        } else {
            (b, a)
        };
        Ok(matmul_onto(
            Start::Matrix(w),
            lhs,
            rhs,
            self.scale,
            threads(),
        ))
    }

    /// The branch's dropped-out input, or `None` without dropout.
    fn dropped(&self, x: Mat) -> candle_core::Result<Option<Vec<f32>>> {
        Ok(self.dropout.as_ref().map(|d| d.apply(x.contiguous_data())))
    }
}

/// Adds the branch `scale·down·Bᵀ` to the base `y` (`rows × out`) and gives each row's
/// `‖branch‖ / ‖base‖`. Each block of rows is one thread's: its branch into a block-sized
/// buffer, both norms and the sum while the rows are in its cache (a whole-matrix branch buffer
/// and the norms on the calling thread alone left the other threads waiting).
fn add_branch_with_ratios(y: &mut [f32], down: Mat, b: Mat, scale: f32) -> Vec<f32> {
    let (rows, out) = (down.rows_count(), b.rows_count());
    assert_eq!(
        y.len(),
        rows * out,
        "lora ratio: the base is not {rows}×{out}"
    );
    let rows_per_block = super::BLOCK_ELEMS.div_ceil(out.max(1)).max(1);
    let ratios = Mutex::new(vec![0.0; rows]);
    super::each_block(y.chunks_mut(rows_per_block * out.max(1)), |index, base| {
        let first = index * rows_per_block;
        let n = base.len() / out;
        let mut delta = vec![0.0; base.len()];
        matmul(
            &mut delta,
            down.row_block(first, n),
            b.t(),
            scale,
            Write::Set,
            1,
        );
        let (mut base_norms, mut block) = (vec![0.0; n], vec![0.0; n]);
        kernels::row_norms(&mut base_norms, base);
        kernels::row_norms(&mut block, &delta);
        for (r, b) in block.iter_mut().zip(&base_norms) {
            *r /= b;
        }
        for (y, d) in base.iter_mut().zip(&delta) {
            *y += d;
        }
        ratios.lock().expect("not poisoned")[first..first + n].copy_from_slice(&block);
    });
    ratios.into_inner().expect("not poisoned")
}

/// The `[out, in]` matrix in `data`, stored row-major as `[out, in]` or, when `transposed`,
/// as `[in, out]`.
fn weight_view(data: &[f32], out: usize, inp: usize, transposed: bool) -> Mat<'_> {
    if transposed {
        Mat::rows(data, inp, out).t()
    } else {
        Mat::rows(data, out, inp)
    }
}

/// Whether folding the branch into the weight (out·in·r multiply-adds) costs less than running
/// it beside the base product (rows·r·(in + out)): for every batch of more than a few rows.
fn folding_pays(rows: usize, inp: usize, out: usize) -> bool {
    rows * (inp + out) >= inp * out
}

/// LoRA's backward kernel over `(x, grad)`: `[dx | dA | dB]` in one buffer, where with
/// `x̃ = dropout(x)` and `gB = s·grad·B`:
/// `dx = grad·W + dropout(gB·A)`, `dA = gBᵀ·x̃`, `dB = s·gradᵀ·(x̃·Aᵀ)`.
struct LoraLinearGrad<'l> {
    layer: &'l LoraLinear,
    a: Tensor,
    b: Tensor,
}

impl CustomOp2 for LoraLinearGrad<'_> {
    fn name(&self) -> &'static str {
        "lora-linear-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let layer = self.layer;
        let (x, _) = layer.base.input(name, x, x_layout)?;
        let (a_storage, a_layout) = self.a.storage_and_layout();
        let (b_storage, b_layout) = self.b.storage_and_layout();
        let (a, b) = match (&*a_storage, &*b_storage) {
            (candle_core::Storage::Cpu(a), candle_core::Storage::Cpu(b)) => {
                layer.factors(a, a_layout, b, b_layout, x.cols_count())?
            }
            _ => candle_core::bail!("{name}: A and B must be on the cpu"),
        };
        let (rows, inp, r, out) = (
            x.rows_count(),
            x.cols_count(),
            a.rows_count(),
            b.rows_count(),
        );
        let grad = f32_slice(name, "gradient", grad, grad_layout)?;
        if grad.len() != rows * out {
            candle_core::bail!(
                "{name}: gradient has {} elements, not {rows}×{out}",
                grad.len()
            );
        }
        let g = Mat::rows(grad, rows, out);
        let dropped = layer.dropped(x)?;
        let x_in = dropped.as_deref().map_or(x, |d| Mat::rows(d, rows, inp));
        let t = threads();
        let mut packed = vec![0.0; rows * inp + r * inp + out * r];
        let (dx, rest) = packed.split_at_mut(rows * inp);
        let (da, db) = rest.split_at_mut(r * inp);
        let mut gb = vec![0.0; rows * r];
        matmul(&mut gb, g, b, layer.scale, Write::Set, t);
        let gb = Mat::rows(&gb, rows, r);
        matmul(da, gb.t(), x_in, 1.0, Write::Set, t);
        let mut down = vec![0.0; rows * r];
        matmul(&mut down, x_in, a.t(), 1.0, Write::Set, t);
        matmul(
            db,
            g.t(),
            Mat::rows(&down, rows, r),
            layer.scale,
            Write::Set,
            t,
        );
        matmul(dx, gb, a, 1.0, Write::Set, t);
        if let Some(d) = &layer.dropout {
            d.scale_in_place(dx);
        }
        layer
            .base
            .with_weight(name, |w| matmul(dx, g, w, 1.0, Write::Add, t))?;
        let len = packed.len();
        Ok((CpuStorage::F32(packed), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_close, random};
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// The plain composition the fused ops replace.
    fn composed(
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        lora: Option<(&Tensor, &Tensor, f64)>,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let base = x
            .broadcast_matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(bias)
            .unwrap();
        let Some((a, b, s)) = lora else { return base };
        let xd = match mask {
            Some(m) => x.mul(m).unwrap(),
            None => x.clone(),
        };
        let delta = xd
            .broadcast_matmul(&a.t().unwrap())
            .unwrap()
            .broadcast_matmul(&b.t().unwrap())
            .unwrap();
        (base + (delta * s).unwrap()).unwrap()
    }

    /// The activation as candle's own op.
    fn candle_activation(activation: Activation, x: &Tensor) -> Tensor {
        match activation {
            Activation::Identity => x.clone(),
            Activation::GeluErf => x.gelu_erf().unwrap(),
        }
    }

    #[test]
    fn lora_linear_matches_the_composed_ops_and_their_gradients() {
        let mut rng = StdRng::seed_from_u64(21);
        // The last shapes span several parallel blocks and a 3-d input; each weight layout
        // (`transposed`) meets both activations.
        for (dims, out, r, p, activation, transposed) in [
            (vec![3, 5], 4, 2, 0.0, Activation::Identity, false),
            (vec![7, 9], 6, 3, 0.3, Activation::GeluErf, true),
            (vec![4, 50, 96], 80, 8, 0.1, Activation::Identity, true),
            (vec![4, 50, 96], 80, 8, 0.1, Activation::GeluErf, false),
            (vec![4, 50, 96], 120, 8, 0.1, Activation::GeluErf, true),
            // Rows enough for several blocks of the ratio's pass (300 × 200 elements).
            (vec![3, 100, 40], 200, 4, 0.1, Activation::Identity, false),
        ] {
            let inp = *dims.last().unwrap();
            let x = Var::from_tensor(&random(&dims, 0.0, 1.0, &mut rng)).unwrap();
            let w = random(&[out, inp], 0.0, 0.3, &mut rng);
            let bias = random(&[out], 0.0, 0.3, &mut rng);
            let a = Var::from_tensor(&random(&[r, inp], 0.0, 0.3, &mut rng)).unwrap();
            let b = Var::from_tensor(&random(&[out, r], 0.0, 0.3, &mut rng)).unwrap();
            let dropout = (p > 0.0).then(|| Dropout::new(p, &mut rng));
            // The mask the fused op draws, read off a tensor of ones.
            let mask = dropout.as_ref().map(|d| {
                let mut ones = vec![1.0; x.elem_count()];
                d.scale_in_place(&mut ones);
                Tensor::from_vec(ones, x.shape(), x.device()).unwrap()
            });
            let slot = RatioSlot::default();
            let op = LoraLinear {
                base: frozen(&w, &bias, transposed, activation),
                scale: 2.5,
                dropout,
                ratio: Some(slot.clone()),
            };
            let fused = x.apply_op3(a.as_tensor(), b.as_tensor(), op).unwrap();
            // The ratio: ‖branch‖ / ‖base‖ per row, from the composed parts.
            let base = composed(x.as_tensor(), &w, &bias, None, None);
            let branch = (composed(
                x.as_tensor(),
                &w,
                &bias,
                Some((a.as_tensor(), b.as_tensor(), 2.5)),
                mask.as_ref(),
            ) - &base)
                .unwrap();
            let row_norm = |t: &Tensor| {
                t.sqr()
                    .unwrap()
                    .sum(candle_core::D::Minus1)
                    .unwrap()
                    .sqrt()
                    .unwrap()
            };
            let want = (row_norm(&branch) / row_norm(&base))
                .unwrap()
                .flatten_all()
                .unwrap();
            let got = slot
                .lock()
                .unwrap()
                .take()
                .expect("the forward pass left its ratios");
            let got = Tensor::from_vec(got, want.shape(), want.device()).unwrap();
            assert_close("lora linear ratio", &got, &want, 1e-4);
            let plain = composed(
                x.as_tensor(),
                &w,
                &bias,
                Some((a.as_tensor(), b.as_tensor(), 2.5)),
                mask.as_ref(),
            );
            let plain = candle_activation(activation, &plain);
            assert_close("lora linear", &fused, &plain, 1e-5);
            let r_up = random(fused.dims(), 0.0, 1.0, &mut rng);
            let g_fused = (&fused * &r_up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_plain = (&plain * &r_up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (what, var) in [("x", &x), ("A", &a), ("B", &b)] {
                let (got, want) = (
                    g_fused.get(var.as_tensor()).unwrap(),
                    g_plain.get(var.as_tensor()).unwrap(),
                );
                assert_close(&format!("lora linear {what} gradient"), got, want, 1e-4);
            }
        }
    }

    #[test]
    fn lora_linear_without_dropout_folds_the_branch_and_matches_the_composed_ops() {
        let mut rng = StdRng::seed_from_u64(24);
        // Folding pays for the first two shapes (many rows), not for the single row.
        for (dims, out, r, activation, transposed) in [
            (vec![4, 50, 96], 80, 8, Activation::Identity, true),
            (vec![300, 40], 120, 4, Activation::GeluErf, false),
            (vec![300, 40], 120, 4, Activation::Identity, true),
            (vec![1, 40], 30, 8, Activation::Identity, false),
        ] {
            let inp = *dims.last().unwrap();
            let rows = x_rows(&dims);
            assert_eq!(
                folding_pays(rows, inp, out),
                dims[0] != 1,
                "the cases cover both sides of folding_pays"
            );
            let x = Var::from_tensor(&random(&dims, 0.0, 1.0, &mut rng)).unwrap();
            let w = random(&[out, inp], 0.0, 0.3, &mut rng);
            let bias = random(&[out], 0.0, 0.3, &mut rng);
            let a = Var::from_tensor(&random(&[r, inp], 0.0, 0.3, &mut rng)).unwrap();
            let b = Var::from_tensor(&random(&[out, r], 0.0, 0.3, &mut rng)).unwrap();
            let op = LoraLinear {
                base: frozen(&w, &bias, transposed, activation),
                scale: 2.0,
                dropout: None,
                ratio: None,
            };
            let fused = x.apply_op3(a.as_tensor(), b.as_tensor(), op).unwrap();
            let plain = candle_activation(
                activation,
                &composed(
                    x.as_tensor(),
                    &w,
                    &bias,
                    Some((a.as_tensor(), b.as_tensor(), 2.0)),
                    None,
                ),
            );
            assert_close(
                &format!("folded lora linear {dims:?}"),
                &fused,
                &plain,
                1e-5,
            );
            // With no backward pass to follow, the activation runs in place: the same output.
            let untracked = LoraLinear {
                base: frozen(&w, &bias, transposed, activation).with_backward(false),
                scale: 2.0,
                dropout: None,
                ratio: None,
            };
            let (xd, ad, bd) = (
                x.as_tensor().detach(),
                a.as_tensor().detach(),
                b.as_tensor().detach(),
            );
            assert_close(
                &format!("folded lora linear without backward {dims:?}"),
                &xd.apply_op3(&ad, &bd, untracked).unwrap(),
                &plain,
                1e-5,
            );
            let r_up = random(fused.dims(), 0.0, 1.0, &mut rng);
            let grads = |y: &Tensor| (y * &r_up).unwrap().sum_all().unwrap().backward().unwrap();
            let (g_fused, g_plain) = (grads(&fused), grads(&plain));
            for (what, var) in [("x", &x), ("A", &a), ("B", &b)] {
                let (got, want) = (
                    g_fused.get(var.as_tensor()).unwrap(),
                    g_plain.get(var.as_tensor()).unwrap(),
                );
                assert_close(
                    &format!("folded lora {what} gradient {dims:?}"),
                    got,
                    want,
                    1e-4,
                );
            }
        }
    }

    /// A frozen layer over `w` (`[out, in]`) stored as `transposed` says, with `bias`.
    fn frozen(w: &Tensor, bias: &Tensor, transposed: bool, activation: Activation) -> FrozenLinear {
        FrozenLinear::new(
            stored(w, transposed),
            transposed,
            Some(bias.clone()),
            activation,
        )
    }

    /// `w` (`[out, in]`) as a layer stores it: itself, or its transpose made contiguous.
    fn stored(w: &Tensor, transposed: bool) -> Tensor {
        if transposed {
            w.t().unwrap().contiguous().unwrap()
        } else {
            w.clone()
        }
    }

    fn x_rows(dims: &[usize]) -> usize {
        dims[..dims.len() - 1].iter().product()
    }

    #[test]
    fn frozen_linear_matches_the_composed_ops_and_the_input_gradient() {
        let mut rng = StdRng::seed_from_u64(22);
        let layers = [Activation::Identity, Activation::GeluErf]
            .into_iter()
            .flat_map(|activation| [(activation, false), (activation, true)]);
        for (activation, transposed) in layers {
            let x = Var::from_tensor(&random(&[2, 30, 40], 0.0, 1.0, &mut rng)).unwrap();
            let w = random(&[24, 40], 0.0, 0.3, &mut rng);
            let bias = random(&[24], 0.0, 0.3, &mut rng);
            let op = frozen(&w, &bias, transposed, activation);
            let fused = x.apply_op1(op).unwrap();
            let plain =
                candle_activation(activation, &composed(x.as_tensor(), &w, &bias, None, None));
            assert_close("frozen linear", &fused, &plain, 1e-5);
            let untracked = frozen(&w, &bias, transposed, activation).with_backward(false);
            let without_backward = x.as_tensor().detach().apply_op1(untracked).unwrap();
            assert_close(
                "frozen linear without backward",
                &without_backward,
                &plain,
                1e-5,
            );
            let r_up = random(fused.dims(), 0.0, 1.0, &mut rng);
            let g_fused = (&fused * &r_up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g_plain = (&plain * &r_up)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            assert_close(
                "frozen linear x gradient",
                g_fused.get(x.as_tensor()).unwrap(),
                g_plain.get(x.as_tensor()).unwrap(),
                1e-5,
            );
        }
    }
}
