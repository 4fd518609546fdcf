//! Tensor operations the trainer needs that candle lacks or does wastefully.
//!
//! candle composes LayerNorm, softmax, erf-GELU and dropout out of element-wise ops, each a full
//! pass over the tensor into a freshly allocated buffer, forwards and again backwards. On the CPU
//! the ops here make one pass each way over contiguous f32 rows, on candle's own worker threads;
//! on other devices, and for other dtypes, they fall back to candle's compositions.
//!
//! The linear layers (`ops/linear.rs`: frozen weight, bias, optional LoRA branch and GELU) and
//! multi-head attention (`ops/attention.rs`) are single graph nodes with hand-written backward
//! passes over `gemm` (`ops/gemm.rs`), so that a training step allocates, zero-fills and
//! accumulates far fewer full-size buffers than the composed graph would.
//!
//! The loops over elements and rows (softmax, LayerNorm, GELU, the dropout mask) live in
//! `ops/kernels.rs`, compiled both for the baseline target and for AVX2 with FMA, chosen at
//! run time.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Shape, Storage, Tensor,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

use crate::error::Result;

mod attention;
mod gemm;
mod kernels;
mod linear;
mod mask;
mod residual;

/// A frozen weight as a layer stores it: `[out, in]` (Hugging Face's layout) or, with
/// `transposed`, `[in, out]` (see `peft::FrozenLinear::new` for when).
#[derive(Clone, Copy)]
pub(crate) struct FrozenWeight<'a> {
    pub(crate) tensor: &'a Tensor,
    pub(crate) transposed: bool,
}

impl FrozenWeight<'_> {
    /// `Wᵀ`, `[in, out]`, as a view: what `x · Wᵀ` multiplies by.
    fn t(&self) -> Result<Tensor> {
        Ok(if self.transposed {
            self.tensor.clone()
        } else {
            self.tensor.t()?
        })
    }
}

/// `act(x · Wᵀ + bias)` for a frozen `W` and bias, whose backward computes only the input's
/// gradient.
///
/// candle's own matmul backward always computes the gradient of both operands; for a frozen
/// weight that is a wasted `xᵀ · grad` product per linear layer. The bias is written first and
/// the product accumulates onto it, saving a pass and a buffer; the activation, if any, runs in
/// the same node (its backward too), saving another node's buffers and gradient accumulator.
pub(crate) fn linear(
    x: &Tensor,
    weight: FrozenWeight<'_>,
    bias: Option<&Tensor>,
    activation: Activation,
) -> Result<Tensor> {
    if !fusable(x) || weight.tensor.track_op() || bias.is_some_and(|b| b.track_op()) {
        let y = x.broadcast_matmul(&weight.t()?)?;
        let y = match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        return activation.apply(&y);
    }
    let op = frozen_node(weight, bias, activation)?.with_backward(x.track_op());
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// The fused node of a frozen layer (contiguous weight and bias), followed by `activation`.
fn frozen_node(
    weight: FrozenWeight<'_>,
    bias: Option<&Tensor>,
    activation: Activation,
) -> Result<linear::FrozenLinear> {
    Ok(linear::FrozenLinear::new(
        weight.tensor.contiguous()?,
        weight.transposed,
        bias.map(Tensor::contiguous).transpose()?,
        activation,
    ))
}

/// `LayerNorm(y + residual)` with frozen `gamma` and `beta`: the end of a BERT sublayer
/// without dropout, which [`linear_add_norm`] and [`lora_linear_add_norm`] apply inside the
/// node of the linear layer that makes `y`.
#[derive(Clone, Copy)]
pub(crate) struct AddNorm<'t> {
    pub(crate) residual: &'t Tensor,
    pub(crate) gamma: &'t Tensor,
    pub(crate) beta: &'t Tensor,
    pub(crate) eps: f32,
}

impl AddNorm<'_> {
    /// The norm as its own node, after `y`.
    pub(crate) fn apply(&self, y: &Tensor) -> Result<Tensor> {
        residual_layer_norm(y, self.residual, (self.gamma, self.beta), self.eps, None)
    }

    /// The norm as a fused linear node holds it, or `None` where the node cannot take it
    /// (another device, another dtype, or weights that track gradients).
    fn fused(&self) -> Result<Option<linear::AddNorm>> {
        if !fusable(self.residual)
            || !fusable(self.gamma)
            || !fusable(self.beta)
            || self.residual.track_op()
            || self.gamma.track_op()
            || self.beta.track_op()
        {
            return Ok(None);
        }
        Ok(Some(linear::AddNorm {
            residual: self.residual.contiguous()?,
            gamma: self.gamma.contiguous()?,
            beta: self.beta.contiguous()?,
            eps: self.eps,
        }))
    }
}

/// [`linear`] then [`AddNorm`], as one node that adds the residual and normalises each block of
/// rows in place right after its product, where no backward pass follows (nothing tracks
/// gradients): the sublayer's end in inference and evaluation.
pub(crate) fn linear_add_norm(
    x: &Tensor,
    weight: FrozenWeight<'_>,
    bias: Option<&Tensor>,
    norm: AddNorm<'_>,
) -> Result<Tensor> {
    let tracked = x.track_op() || weight.tensor.track_op() || bias.is_some_and(|b| b.track_op());
    let fused = if fusable(x) && !tracked {
        norm.fused()?
    } else {
        None
    };
    let Some(fused) = fused else {
        return norm.apply(&linear(x, weight, bias, Activation::Identity)?);
    };
    let op = frozen_node(weight, bias, Activation::Identity)?.with_add_norm(fused);
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// [`lora_linear`] without dropout, then [`AddNorm`], as one node where no backward pass follows
/// (see [`linear_add_norm`]).
pub(crate) fn lora_linear_add_norm(
    x: &Tensor,
    (weight, bias): (FrozenWeight<'_>, Option<&Tensor>),
    (a, b): (&Tensor, &Tensor),
    scale: f64,
    norm: AddNorm<'_>,
) -> Result<Tensor> {
    let tracked = x.track_op() || a.track_op() || b.track_op();
    let fused = if fusable(x) && fusable(a) && fusable(b) && !tracked {
        norm.fused()?
    } else {
        None
    };
    let Some(fused) = fused else {
        let y = lora_linear(x, (weight, bias), (a, b), scale, None, Activation::Identity)?;
        return norm.apply(&y);
    };
    let op = linear::LoraLinear {
        base: frozen_node(weight, bias, Activation::Identity)?.with_add_norm(fused),
        scale: scale as f32,
        dropout: None,
        ratio: None,
    };
    Ok(x.contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)?)
}

/// What follows a fused linear layer, inside the same graph node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Nothing.
    Identity,
    /// BERT's exact GELU, as [`gelu_erf`].
    GeluErf,
}

impl Activation {
    /// The activation as its own op.
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(x.clone()),
            Activation::GeluErf => gelu_erf(x),
        }
    }
}

/// A frozen linear layer plus a LoRA branch: `act(x·Wᵀ + bias + scale·(dropout(x)·Aᵀ)·Bᵀ)`,
/// with `A` `[r, in]` and `B` `[out, r]` trainable. `dropout` (probability and RNG) is for
/// training.
///
/// One graph node instead of eight; see `ops/linear.rs`.
pub(crate) fn lora_linear(
    x: &Tensor,
    base: (FrozenWeight<'_>, Option<&Tensor>),
    factors: (&Tensor, &Tensor),
    scale: f64,
    dropout: Option<(f32, &mut StdRng)>,
    activation: Activation,
) -> Result<Tensor> {
    Ok(lora_layer(x, base, factors, scale, dropout, activation, false)?.0)
}

/// [`lora_linear`] that also gives each row's importance ratio `‖Δ‖ / ‖x·Wᵀ + b‖` over the
/// last dimension (spec §4.1, before the activation; detached), with `Δ` the scaled branch.
/// On the CPU the ratio comes out of the same fused node, whose norms are by-products of its
/// forward pass; elsewhere from the composed ops.
pub(crate) fn lora_linear_ratio(
    x: &Tensor,
    base: (FrozenWeight<'_>, Option<&Tensor>),
    factors: (&Tensor, &Tensor),
    scale: f64,
    dropout: Option<(f32, &mut StdRng)>,
    activation: Activation,
) -> Result<(Tensor, Tensor)> {
    let (y, ratio) = lora_layer(x, base, factors, scale, dropout, activation, true)?;
    let ratio = ratio.ok_or_else(|| crate::error::invalid("lora linear", "no ratio was made"))?;
    Ok((y, ratio))
}

/// The LoRA layer of [`lora_linear`], with the ratio of [`lora_linear_ratio`] when `want_ratio`.
fn lora_layer(
    x: &Tensor,
    (weight, bias): (FrozenWeight<'_>, Option<&Tensor>),
    (a, b): (&Tensor, &Tensor),
    scale: f64,
    dropout: Option<(f32, &mut StdRng)>,
    activation: Activation,
    want_ratio: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let dropout = dropout.filter(|(p, _)| *p > 0.0);
    if !fusable(x) || !fusable(a) || !fusable(b) {
        let xd = match dropout {
            Some((p, rng)) => self::dropout(x, p, rng)?,
            None => x.clone(),
        };
        let delta = (xd.broadcast_matmul(&a.t()?)?.broadcast_matmul(&b.t()?)? * scale)?;
        let base = linear(x, weight, bias, Activation::Identity)?;
        let ratio = if want_ratio {
            let norm = |t: &Tensor| -> Result<Tensor> {
                Ok(t.detach().sqr()?.sum(candle_core::D::Minus1)?.sqrt()?)
            };
            Some((norm(&delta)? / norm(&base)?)?)
        } else {
            None
        };
        return Ok((activation.apply(&(base + delta)?)?, ratio));
    }
    let slot = want_ratio.then(linear::RatioSlot::default);
    let op = linear::LoraLinear {
        base: frozen_node(weight, bias, activation)?
            .with_backward(x.track_op() || a.track_op() || b.track_op()),
        scale: scale as f32,
        dropout: dropout.map(|(p, rng)| Dropout::new(p, rng)),
        ratio: slot.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)?;
    let ratio = match slot {
        None => None,
        Some(slot) => {
            let ratios = slot.lock().expect("not poisoned").take().ok_or_else(|| {
                crate::error::invalid("lora linear", "its forward pass left no ratio")
            })?;
            Some(Tensor::from_vec(
                ratios,
                &x.dims()[..x.rank() - 1],
                x.device(),
            )?)
        }
    };
    Ok((y, ratio))
}

/// LayerNorm over the last dimension: `(x − mean) / √(var + eps) · gamma + beta`.
///
/// The fused path differentiates `x` only, which is all our encoder needs: its LayerNorm weights
/// are frozen. A `gamma` or `beta` that tracks gradients takes candle's composed
/// `layer_norm_slow` instead, so their gradients are never silently dropped.
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    if !fusable(x) || gamma.track_op() || beta.track_op() {
        return Ok(candle_nn::ops::layer_norm_slow(x, gamma, beta, eps)?);
    }
    Ok(x.contiguous()?
        .apply_op3(gamma, beta, FusedLayerNorm { eps })?)
}

/// `LayerNorm(dropout(y) + x)`, the end of every BERT sublayer: `y` is the sublayer's output,
/// `x` its input, `gamma` and `beta` frozen. One graph node on the CPU (`ops/residual.rs`),
/// drawing the same dropout mask from `rng` as [`dropout`] would.
pub(crate) fn residual_layer_norm(
    y: &Tensor,
    x: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    eps: f32,
    dropout: Option<(f32, &mut StdRng)>,
) -> Result<Tensor> {
    let dropout = dropout.filter(|(p, _)| *p > 0.0);
    if !fusable(y) || !fusable(x) || !fusable(gamma) || gamma.track_op() || beta.track_op() {
        let y = match dropout {
            Some((p, rng)) => self::dropout(y, p, rng)?,
            None => y.clone(),
        };
        return layer_norm(&(y + x)?, gamma, beta, eps);
    }
    let op = residual::ResidualNorm {
        gamma: gamma.contiguous()?,
        beta: beta.contiguous()?,
        eps,
        dropout: dropout.map(|(p, rng)| Dropout::new(p, rng)),
    };
    Ok(y.contiguous()?.apply_op2(&x.contiguous()?, op)?)
}

/// `softmax(scores · scale + mask)` over the last dimension of `[batch, heads, queries, keys]`
/// attention scores, with an additive `[batch, 1, 1, keys]` padding mask.
///
/// The fused path does not differentiate the mask, which is data; a mask that tracks gradients
/// takes candle's composed ops.
pub(crate) fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    if !fusable(scores) || mask.track_op() {
        let scores = (scores * scale)?.broadcast_add(mask)?;
        return Ok(candle_nn::ops::softmax(&scores, D::Minus1)?);
    }
    let op = MaskedSoftmax {
        scale: scale as f32,
    };
    Ok(scores.contiguous()?.apply_op2(&mask.contiguous()?, op)?)
}

/// The shape of a batch's attention: sequences, their length, the queries per sequence, heads,
/// and each head's width.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionShape {
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    /// `seq`, or fewer (the first positions) where only their outputs are used.
    pub(crate) queries: usize,
    pub(crate) heads: usize,
    pub(crate) head_dim: usize,
}

/// Multi-head attention `dropout(softmax(Q·Kᵀ/√d + mask))·V` on `[batch·seq, heads·head_dim]`
/// keys and values and `[batch·queries, heads·head_dim]` queries, with an additive `[batch, 1,
/// 1, seq]` padding mask; the context comes back in the queries' layout. `dropout`
/// (probability and RNG) is for training.
///
/// One graph node without the transposes; see `ops/attention.rs`.
pub(crate) fn attention(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    mask: &Tensor,
    shape: AttentionShape,
    dropout: Option<(f32, &mut StdRng)>,
) -> Result<Tensor> {
    let AttentionShape {
        batch: b,
        seq: l,
        queries: ql,
        heads: h,
        head_dim: dh,
    } = shape;
    let scale = 1.0 / (dh as f64).sqrt();
    let dropout = dropout.filter(|(p, _)| *p > 0.0);
    if !fusable(q) || !fusable(k) || !fusable(v) || mask.track_op() {
        let split = |t: &Tensor, rows: usize| -> Result<Tensor> {
            Ok(t.reshape((b, rows, h, dh))?.transpose(1, 2)?.contiguous()?)
        };
        let scores = split(q, ql)?.matmul(&split(k, l)?.t()?)?;
        let mut probs = masked_softmax(&scores, mask, scale)?;
        if let Some((p, rng)) = dropout {
            probs = self::dropout(&probs, p, rng)?;
        }
        let context = probs.matmul(&split(v, l)?)?;
        return Ok(context.transpose(1, 2)?.reshape((b * ql, h * dh))?);
    }
    let keep = q.track_op() || k.track_op() || v.track_op();
    let op = attention::Attention {
        batch: b,
        seq: l,
        queries: ql,
        heads: h,
        head_dim: dh,
        scale: scale as f32,
        mask: mask.contiguous()?,
        dropout: dropout.map(|(p, rng)| Dropout::new(p, rng)),
        saved: Mutex::new(None),
        keep,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    Ok(if keep {
        q.apply_op3(&k, &v, op)?
    } else {
        q.apply_op3_no_bwd(&k, &v, &op)?
    })
}

/// `x ⊙ scale` on `[rows, cols]`, with each of `scale`'s `groups` values multiplying
/// `cols / groups` neighbouring columns: Light-PEFT's head masks on the attention context (one
/// head's columns each) and its neuron masks on the FFN activations (one column each).
///
/// One graph node on the CPU whose backward gives both gradients in one pass (`ops/mask.rs`);
/// elsewhere candle's broadcast product.
pub(crate) fn scale_groups(x: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let cols = x.dim(D::Minus1)?;
    let groups = scale.elem_count();
    if !fusable(x) || !fusable(scale) {
        if groups == 0 || !cols.is_multiple_of(groups) {
            return Err(crate::error::invalid(
                "group scale",
                format!(
                    "{groups} mask values do not split rows of {cols} columns into equal groups"
                ),
            ));
        }
        let rows = x.elem_count() / cols.max(1);
        return Ok(x
            .reshape((rows, groups, cols / groups))?
            .broadcast_mul(&scale.reshape((1, groups, 1))?)?
            .reshape(x.shape())?);
    }
    Ok(x.contiguous()?
        .apply_op2(&scale.contiguous()?, mask::GroupScale)?)
}

/// The exact GELU of BERT, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fusable(x) {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.contiguous()?.apply_op1(GeluErf)?)
}

/// Inverted dropout with a mask derived from `rng`, so runs are reproducible from a seed.
///
/// Each element's keep/drop draw is a hash of its index and a seed taken from `rng`: blocks can
/// be filled in any order, and the backward pass recomputes the mask rather than keeping a mask
/// tensor alive until then.
pub(crate) fn dropout(x: &Tensor, p: f32, rng: &mut StdRng) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let op = Dropout::new(p, rng);
    if fusable(x) {
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    // Elsewhere: the same mask, built on the host (by blocks, on every core: a GPU step's
    // attention dropout alone draws batch·heads·seq² factors per layer), as an ordinary product.
    let mut mask = vec![0.0; x.elem_count()];
    par_blocks(&mut mask, 1, |first, block| op.write_mask(first, block));
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
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

thread_local! {
    // Off inside `with_composed_ops`: the graph built on this thread takes the composed path.
    static FUSED_ON_CPU: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Runs `f` with the fused CPU kernels off on this thread, so every op takes the composed
/// candle path that a GPU runs: a CPU-only check of the ops a CUDA device would execute.
pub fn with_composed_ops<R>(f: impl FnOnce() -> R) -> R {
    // Restores the setting even if `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FUSED_ON_CPU.with(|on| on.set(self.0));
        }
    }
    let _restore = Restore(FUSED_ON_CPU.with(|on| on.replace(false)));
    f()
}

/// Whether the fused kernels apply: they read f32 host memory.
fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && FUSED_ON_CPU.with(|on| on.get())
}

struct FusedLayerNorm {
    eps: f32,
}

impl CustomOp3 for FusedLayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        beta: &CpuStorage,
        beta_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let d = row_len(name, x_layout)?;
        let x = f32_slice(name, "input", x, x_layout)?;
        let gamma = f32_vector(name, "gamma", gamma, gamma_layout, d)?;
        let beta = f32_vector(name, "beta", beta, beta_layout, d)?;
        let mut y = vec![0.0; x.len()];
        par_blocks(&mut y, d, |first_row, block| {
            let x = &x[first_row * d..][..block.len()];
            kernels::layer_norm_rows(block, x, gamma, beta, self.eps);
        });
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx =
            x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        // `layer_norm` only fuses frozen gamma and beta, so neither needs a gradient.
        Ok((Some(dx), None, None))
    }
}

/// LayerNorm's input gradient from `(x, gamma, grad)`, recomputing each row's statistics.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "fused-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let d = row_len(name, x_layout)?;
        let x = f32_slice(name, "input", x, x_layout)?;
        let gamma = f32_vector(name, "gamma", gamma, gamma_layout, d)?;
        let grad = f32_slice(name, "gradient", grad, grad_layout)?;
        same_len(name, x, grad)?;
        let mut dx = vec![0.0; x.len()];
        par_blocks(&mut dx, d, |first_row, block| {
            let rows = first_row * d..first_row * d + block.len();
            kernels::layer_norm_grad_rows(block, &x[rows.clone()], &grad[rows], gamma, self.eps);
        });
        Ok((CpuStorage::F32(dx), x_layout.shape().clone()))
    }
}

struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (batch, heads, queries, _) = scores_layout.shape().dims4()?;
        let keys = row_len(name, scores_layout)?;
        if mask_layout.dims() != [batch, 1, 1, keys] {
            candle_core::bail!(
                "{name}: mask {:?} is not [{batch}, 1, 1, {keys}] for scores {:?}",
                mask_layout.dims(),
                scores_layout.dims()
            );
        }
        let scores = f32_slice(name, "scores", scores, scores_layout)?;
        let mask = f32_slice(name, "mask", mask, mask_layout)?;
        let mut probs = vec![0.0; scores.len()];
        par_blocks(&mut probs, keys, |first_row, block| {
            let rows = scores[first_row * keys..].chunks_exact(keys);
            for (row, (s, p)) in (first_row..).zip(rows.zip(block.chunks_exact_mut(keys))) {
                let b = row / (heads * queries);
                let mask = &mask[b * keys..(b + 1) * keys];
                kernels::scaled_softmax_row(p, s, mask, self.scale);
            }
        });
        Ok((CpuStorage::F32(probs), scores_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = SoftmaxGrad { scale: self.scale };
        Ok((
            Some(probs.apply_op2_no_bwd(&grad.contiguous()?, &op)?),
            None,
        ))
    }
}

/// The scores' gradient from `(probs, grad)`: `scale · p · (g − Σ g·p)` per row.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-masked-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        probs: &CpuStorage,
        probs_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let keys = row_len(name, probs_layout)?;
        let probs = f32_slice(name, "probabilities", probs, probs_layout)?;
        let grad = f32_slice(name, "gradient", grad, grad_layout)?;
        same_len(name, probs, grad)?;
        let mut ds = vec![0.0; probs.len()];
        par_blocks(&mut ds, keys, |first_row, block| {
            let start = first_row * keys;
            let rows = probs[start..]
                .chunks_exact(keys)
                .zip(grad[start..].chunks_exact(keys));
            for ((p, g), ds) in rows.zip(block.chunks_exact_mut(keys)) {
                kernels::softmax_grad_row(ds, p, g, self.scale);
            }
        });
        Ok((CpuStorage::F32(ds), probs_layout.shape().clone()))
    }
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), "input", storage, layout)?;
        Ok((CpuStorage::F32(gelu_all(x)), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(
            y,
            &grad.contiguous()?,
            &GeluErfGrad,
        )?))
    }
}

/// GELU's input gradient from `(x, y, grad)`, where `y` is the forward's output.
struct GeluErfGrad;

impl CustomOp3 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        y: &CpuStorage,
        y_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let name = self.name();
        let x = f32_slice(name, "input", x, x_layout)?;
        let y = f32_slice(name, "output", y, y_layout)?;
        let grad = f32_slice(name, "gradient", grad, grad_layout)?;
        same_len(name, x, y)?;
        same_len(name, x, grad)?;
        let mut dx = vec![0.0; x.len()];
        par_blocks(&mut dx, 1, |first, block| {
            let elements = first..first + block.len();
            kernels::gelu_backward(
                block,
                &x[elements.clone()],
                &y[elements.clone()],
                &grad[elements],
            );
        });
        Ok((CpuStorage::F32(dx), x_layout.shape().clone()))
    }
}

struct Dropout {
    seed: u64,
    /// A draw above this keeps its element.
    threshold: u32,
    keep_scale: f32,
}

impl Dropout {
    /// Dropout with probability `p`, its seed taken from `rng`.
    fn new(p: f32, rng: &mut StdRng) -> Self {
        Dropout {
            seed: rng.next_u64(),
            // Raw 32-bit draws are compared against a threshold: no float maths per element.
            threshold: (p as f64 * u32::MAX as f64) as u32,
            keep_scale: 1.0 / (1.0 - p),
        }
    }

    /// Multiplies `data`, elements `0..`, by their factors, in parallel.
    fn scale_in_place(&self, data: &mut [f32]) {
        par_blocks(data, 1, |first, block| {
            let mut factors = [0.0; 256];
            for (i, chunk) in block.chunks_mut(factors.len()).enumerate() {
                let factors = &mut factors[..chunk.len()];
                self.write_mask(first + i * 256, factors);
                kernels::scale_by(chunk, factors);
            }
        });
    }

    /// `x`, elements `0..`, times their factors, in parallel.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; x.len()];
        self.apply_into(x, &mut y);
        y
    }

    /// [`Dropout::apply`] into `y` (as long as `x`).
    fn apply_into(&self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "dropout: input and output lengths differ");
        par_blocks(y, 1, |first, block| {
            self.write_mask(first, block);
            kernels::scale_by(block, &x[first..][..block.len()]);
        });
    }

    /// Writes the factors (0 or `keep_scale`) of elements `first..first + out.len()`.
    fn write_mask(&self, first: usize, out: &mut [f32]) {
        // One 64-bit hash decides a pair of neighbouring elements; a range that starts mid-pair
        // takes its first element from the pair's upper half.
        let (head, rest) = out.split_at_mut((first % 2).min(out.len()));
        for m in head {
            *m = self.factor((self.pair_bits(first / 2) >> 32) as u32);
        }
        let (pairs, last) = rest.split_at_mut(rest.len() / 2 * 2);
        let first_pair = first.div_ceil(2);
        kernels::dropout_pairs(
            pairs,
            self.seed,
            first_pair as u64,
            self.threshold,
            self.keep_scale,
        );
        if let [last] = last {
            *last = self.factor(self.pair_bits(first_pair + pairs.len() / 2) as u32);
        }
    }

    /// The factor for one 32-bit draw.
    fn factor(&self, draw: u32) -> f32 {
        kernels::dropout_factor(draw, self.threshold, self.keep_scale)
    }

    /// The 64 random bits of pair `pair_index`.
    fn pair_bits(&self, pair_index: usize) -> u64 {
        kernels::pair_bits(self.seed, pair_index as u64)
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(self.name(), "input", storage, layout)?;
        Ok((CpuStorage::F32(self.apply(x)), layout.shape().clone()))
    }

    /// Dropout is linear and diagonal: its gradient is the incoming one through the same mask.
    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// GELU of every element of `x`, in parallel.
fn gelu_all(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    par_blocks(&mut y, 1, |first, block| {
        kernels::gelu_forward(block, &x[first..][..block.len()]);
    });
    y
}

/// Elements per unit of parallel work: enough to amortise the hand-off to another thread, few
/// enough that two threads share a LayerNorm or softmax evenly. Even, as dropout's pairs need.
const BLOCK_ELEMS: usize = 16 * 1024;

/// Fills `out` by blocks of whole `unit`-long rows, calling `fill(first_row, block)`, spread over
/// candle's CPU worker pool (the threads that its own element-wise ops and matmuls use).
fn par_blocks(out: &mut [f32], unit: usize, fill: impl Fn(usize, &mut [f32]) + Sync) {
    let rows_per_block = BLOCK_ELEMS.div_ceil(unit);
    let block_len = rows_per_block * unit;
    if out.len() <= block_len {
        fill(0, out);
        return;
    }
    each_block(out.chunks_mut(block_len), |index, block| {
        fill(index * rows_per_block, block)
    });
}

/// Runs `f(index, block)` for every block, spread over candle's CPU worker pool (on the calling
/// thread alone when there is one block).
fn each_block<'b, T: Send + 'b>(
    blocks: impl Iterator<Item = &'b mut [T]>,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    // The pool hands out indices, not slices: each block sits behind its own (uncontended)
    // lock so that threads can take disjoint blocks without unsafe code.
    let blocks: Vec<Mutex<&mut [T]>> = blocks.map(Mutex::new).collect();
    let run = |index: usize| {
        let mut block = blocks[index].lock().expect("a block is taken once");
        f(index, &mut block);
    };
    if blocks.len() == 1 {
        run(0);
    } else {
        candle_core::utils::barrier_pool()
            .execute_chunked(blocks.len(), |range| range.for_each(run));
    }
}

/// Worker threads for the matrix kernels: candle's setting (`RAYON_NUM_THREADS`, else all cores).
fn threads() -> usize {
    candle_core::utils::get_num_threads()
}

/// The contiguous f32 host data of a tensor's storage, as `storage_and_layout` hands it out.
fn host_f32<'a>(
    op: &str,
    what: &str,
    storage: &'a Storage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => f32_slice(op, what, cpu, layout),
        _ => candle_core::bail!("{op}: {what} is not on the cpu"),
    }
}

/// The contiguous f32 data behind `layout`.
fn f32_slice<'a>(
    op: &str,
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: {what} is {:?}, not f32", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: {what} {:?} is not contiguous", layout.dims()),
    }
}

/// A contiguous f32 vector of `len` elements, as LayerNorm's weights are.
fn f32_vector<'a>(
    op: &str,
    what: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
) -> candle_core::Result<&'a [f32]> {
    if layout.dims() != [len] {
        candle_core::bail!("{op}: {what} is {:?}, not [{len}]", layout.dims());
    }
    f32_slice(op, what, storage, layout)
}

/// The length of the rows a row-wise op works on: the last dimension, which must not be empty.
fn row_len(op: &str, layout: &Layout) -> candle_core::Result<usize> {
    match layout.dims().last() {
        Some(&len) if len > 0 => Ok(len),
        _ => candle_core::bail!("{op}: input {:?} has no rows to work on", layout.dims()),
    }
}

fn same_len(op: &str, input: &[f32], grad: &[f32]) -> candle_core::Result<()> {
    if input.len() != grad.len() {
        candle_core::bail!(
            "{op}: gradient has {} elements for an input of {}",
            grad.len(),
            input.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::SeedableRng;

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

    #[test]
    fn a_sublayer_end_inside_the_linear_node_is_the_separate_norm_exactly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(31);
        // Folding pays for 120 rows, not for one; the weight stored either way.
        for (rows, transposed) in [(120, false), (120, true), (1, false), (1, true)] {
            let (inp, out) = (48, 40);
            let x = random(&[rows, inp], 0.0, 1.0, &mut rng);
            let residual = random(&[rows, out], 0.0, 1.0, &mut rng);
            let w = random(&[out, inp], 0.0, 0.2, &mut rng);
            let stored = if transposed {
                w.t().unwrap().contiguous().unwrap()
            } else {
                w.clone()
            };
            let weight = FrozenWeight {
                tensor: &stored,
                transposed,
            };
            let bias = random(&[out], 0.0, 0.2, &mut rng);
            let (a, b) = (
                random(&[4, inp], 0.0, 0.2, &mut rng),
                random(&[out, 4], 0.0, 0.2, &mut rng),
            );
            let (gamma, beta) = (
                random(&[out], 1.0, 0.1, &mut rng),
                random(&[out], 0.0, 0.1, &mut rng),
            );
            let norm = AddNorm {
                residual: &residual,
                gamma: &gamma,
                beta: &beta,
                eps: 1e-12,
            };
            let exact = |got: &Tensor, want: &Tensor, what: &str| {
                let (g, w): (Vec<f32>, Vec<f32>) = (
                    got.flatten_all().unwrap().to_vec1().unwrap(),
                    want.flatten_all().unwrap().to_vec1().unwrap(),
                );
                assert_eq!(g, w, "{what}, {rows} rows, transposed {transposed}");
            };
            let plain = norm
                .apply(&linear(&x, weight, Some(&bias), Activation::Identity).unwrap())
                .unwrap();
            exact(
                &linear_add_norm(&x, weight, Some(&bias), norm).unwrap(),
                &plain,
                "plain layer",
            );
            let lora = lora_linear(
                &x,
                (weight, Some(&bias)),
                (&a, &b),
                2.0,
                None,
                Activation::Identity,
            )
            .unwrap();
            let lora = norm.apply(&lora).unwrap();
            let fused =
                lora_linear_add_norm(&x, (weight, Some(&bias)), (&a, &b), 2.0, norm).unwrap();
            exact(&fused, &lora, "lora layer");
            // An input that tracks gradients takes the separate nodes, and its gradient flows.
            let tracked = Var::from_tensor(&x).unwrap();
            let y = lora_linear_add_norm(
                tracked.as_tensor(),
                (weight, Some(&bias)),
                (&a, &b),
                2.0,
                norm,
            )
            .unwrap();
            exact(&y, &lora, "tracked lora layer");
            let grads = y.sum_all().unwrap().backward().unwrap();
            assert!(
                grads.get(tracked.as_tensor()).is_some(),
                "no gradient through the tracked path"
            );
        }
    }

    /// N(mean, std²) draws in `dims`.
    pub(super) fn random(dims: &[usize], mean: f64, std: f64, rng: &mut StdRng) -> Tensor {
        let n = dims.iter().product();
        let t = normal(1, n, std, rng, &Device::Cpu).unwrap();
        (t.reshape(dims).unwrap() + mean).unwrap()
    }

    /// Fails unless every |got − want| ≤ rtol·(|want| + mean |want|): relative per element, with
    /// a floor at the tensor's typical magnitude, because near 0 the f32 reference itself is
    /// only that accurate (GELU's 1 + erf cancels, LayerNorm's gradient is a difference).
    pub(super) fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f32) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
        let typical = want.iter().map(|w| w.abs()).sum::<f32>() / want.len() as f32;
        let (at, worst) = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / (w.abs() + typical))
            .enumerate()
            .fold(
                (0, 0.0f32),
                |best, (i, d)| if d > best.1 { (i, d) } else { best },
            );
        assert!(
            worst <= rtol,
            "{what}: relative difference {worst:e} at element {at}: {} vs {}",
            got[at],
            want[at]
        );
    }

    /// The gradient of Σ y·r with respect to `x`: a fixed random `r` gives every element its own
    /// upstream gradient.
    fn gradient(y: &Tensor, r: &Tensor, x: &Var) -> Tensor {
        let grads = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
        grads.get(x.as_tensor()).expect("x has a gradient").clone()
    }

    #[test]
    fn fused_layer_norm_matches_the_composed_op_and_its_input_gradient() {
        let mut rng = StdRng::seed_from_u64(11);
        // The last shape spans several parallel blocks.
        for (rows, d, eps) in [
            (1, 7, 1e-5),
            (5, 384, 1e-12),
            (33, 64, 1e-5),
            (70, 384, 1e-12),
        ] {
            let x = Var::from_tensor(&random(&[rows, d], 2.0, 3.0, &mut rng)).unwrap();
            let gamma = random(&[d], 1.0, 0.2, &mut rng);
            let beta = random(&[d], 0.0, 0.2, &mut rng);
            let r = random(&[rows, d], 0.0, 1.0, &mut rng);
            let fused = layer_norm(x.as_tensor(), &gamma, &beta, eps).unwrap();
            let composed =
                candle_nn::ops::layer_norm_slow(x.as_tensor(), &gamma, &beta, eps).unwrap();
            assert_close("layer norm", &fused, &composed, 1e-5);
            let (g_fused, g_composed) = (gradient(&fused, &r, &x), gradient(&composed, &r, &x));
            assert_close("layer norm x gradient", &g_fused, &g_composed, 1e-5);
        }
    }

    #[test]
    fn layer_norm_with_trainable_weights_still_differentiates_them() {
        let mut rng = StdRng::seed_from_u64(12);
        let x = random(&[6, 16], 0.5, 2.0, &mut rng);
        let gamma = Var::from_tensor(&random(&[16], 1.0, 0.2, &mut rng)).unwrap();
        let beta = Var::from_tensor(&random(&[16], 0.0, 0.2, &mut rng)).unwrap();
        let r = random(&[6, 16], 0.0, 1.0, &mut rng);
        let ours = layer_norm(&x, gamma.as_tensor(), beta.as_tensor(), 1e-5).unwrap();
        let composed =
            candle_nn::ops::layer_norm_slow(&x, gamma.as_tensor(), beta.as_tensor(), 1e-5).unwrap();
        assert_close("layer norm", &ours, &composed, 1e-5);
        for weight in [&gamma, &beta] {
            let (g_ours, g_composed) =
                (gradient(&ours, &r, weight), gradient(&composed, &r, weight));
            assert_close("layer norm weight gradient", &g_ours, &g_composed, 1e-5);
        }
    }

    #[test]
    fn fused_masked_softmax_matches_the_composed_ops_and_their_gradient() {
        let mut rng = StdRng::seed_from_u64(13);
        // The last shape spans several parallel blocks.
        for (b, h, l) in [(1, 1, 3), (2, 3, 5), (3, 4, 64)] {
            let scores = Var::from_tensor(&random(&[b, h, l, l], 0.0, 4.0, &mut rng)).unwrap();
            // As the encoder's mask: every other sequence ends in padding; the first key is real.
            let mask: Vec<f32> = (0..b)
                .flat_map(|i| {
                    (0..l).map(move |j| {
                        if i % 2 == 1 && j > 0 && j + 2 >= l {
                            -1e9
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (b, 1, 1, l), &Device::Cpu).unwrap();
            let r = random(&[b, h, l, l], 0.0, 1.0, &mut rng);
            let scale = 1.0 / 8f64.sqrt();
            let fused = masked_softmax(scores.as_tensor(), &mask, scale).unwrap();
            let composed = (scores.as_tensor() * scale)
                .unwrap()
                .broadcast_add(&mask)
                .unwrap();
            let composed = candle_nn::ops::softmax(&composed, D::Minus1).unwrap();
            assert_close("softmax", &fused, &composed, 1e-5);
            let (g_fused, g_composed) = (
                gradient(&fused, &r, &scores),
                gradient(&composed, &r, &scores),
            );
            assert_close("softmax scores gradient", &g_fused, &g_composed, 1e-5);
        }
    }

    #[test]
    fn fused_gelu_matches_candle_and_its_gradient() {
        let mut rng = StdRng::seed_from_u64(14);
        // Zero, both sides of the switch between erf's formulas (|x| = √2), saturation, and
        // (over several parallel blocks) values of a pre-activation's spread.
        let edges = [0.0, 1e-3, 1.414, 1.4143, 3.0, 5.6, 8.0, 20.0];
        let edges: Vec<f32> = edges.iter().flat_map(|&e| [e, -e]).collect();
        let spread = random(&[40_000], 0.0, 3.0, &mut rng);
        for x in [Tensor::new(edges, &Device::Cpu).unwrap(), spread] {
            let x = Var::from_tensor(&x).unwrap();
            let r = random(x.dims(), 0.0, 1.0, &mut rng);
            let fused = gelu_erf(x.as_tensor()).unwrap();
            let composed = x.as_tensor().gelu_erf().unwrap();
            assert_close("gelu", &fused, &composed, 1e-5);
            let (g_fused, g_composed) = (gradient(&fused, &r, &x), gradient(&composed, &r, &x));
            assert_close("gelu gradient", &g_fused, &g_composed, 1e-5);
        }
    }

    #[test]
    fn dropout_gradient_applies_the_forward_mask() {
        let mut rng = StdRng::seed_from_u64(15);
        // Several parallel blocks, and an odd count so that the last pair is cut.
        let n = 3 * BLOCK_ELEMS + 5;
        let x = Var::from_tensor(&random(&[n], 3.0, 1.0, &mut rng)).unwrap();
        let y = dropout(x.as_tensor(), 0.3, &mut rng).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let grad: Vec<f32> = grads.get(x.as_tensor()).unwrap().to_vec1().unwrap();
        let factors: Vec<f32> = (&y / x.as_tensor()).unwrap().to_vec1().unwrap();
        for (g, f) in grad.iter().zip(&factors) {
            assert!(*g == 0.0 || (g - 1.0 / 0.7).abs() < 1e-6, "factor {g}");
            assert!(
                (g - f).abs() < 1e-5,
                "gradient {g} for a forward factor {f}"
            );
        }
    }

    #[test]
    fn dropout_mask_is_the_same_however_the_elements_are_split() {
        let op = Dropout {
            seed: 42,
            threshold: u32::MAX / 2,
            keep_scale: 2.0,
        };
        let mut whole = vec![0.0; 101];
        op.write_mask(0, &mut whole);
        for first in [1, 2, 37, 100] {
            let mut part = vec![0.0; 101 - first];
            op.write_mask(first, &mut part);
            assert_eq!(part, whole[first..], "starting at {first}");
        }
    }

    #[test]
    fn the_composed_dropout_draws_the_fused_mask_over_many_blocks() {
        use rand::SeedableRng;
        // Several parallel blocks and an odd length, so blocks start mid-pair.
        let n = 3 * BLOCK_ELEMS + 7;
        let x = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap();
        let fused = dropout(&x, 0.1, &mut StdRng::seed_from_u64(5)).unwrap();
        let composed =
            with_composed_ops(|| dropout(&x, 0.1, &mut StdRng::seed_from_u64(5))).unwrap();
        let (fused, composed) = (
            fused.to_vec1::<f32>().unwrap(),
            composed.to_vec1::<f32>().unwrap(),
        );
        assert_eq!(fused, composed);
        let dropped = fused.iter().filter(|&&f| f == 0.0).count();
        assert!((n / 20..n / 5).contains(&dropped), "{dropped} of {n}");
    }
}
