//! Linear layers with frozen base weights and an optional LoRA or bottleneck adapter
//! (light-peft-spec §2.1–§2.2).

use candle_core::{D, Device, Tensor, Var};
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, invalid};
use crate::ops;

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r.
    pub r: usize,
    /// α; the branch is scaled by α/r, fixed when the module is created.
    pub alpha: f64,
    /// Dropout on the LoRA branch's input, in training only.
    pub dropout: f32,
}

/// Bottleneck-adapter hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Bottleneck width.
    pub size: usize,
    /// Dropout on the adapter's input, in training only.
    pub dropout: f32,
    /// Output scale (1.0 in the reference scripts).
    pub scale: f64,
}

/// A frozen `y = x·Wᵀ + b`; the weights are plain tensors, never optimiser variables.
#[derive(Clone)]
pub struct FrozenLinear {
    /// `W` as `[out, in]`, or as `[in, out]` when `transposed` (see [`FrozenLinear::new`]).
    weight: Tensor,
    transposed: bool,
    /// `[out]`.
    pub bias: Option<Tensor>,
}

impl FrozenLinear {
    /// The layer over `weight` (`[out, in]`, Hugging Face's layout) and `bias` (`[out]`).
    ///
    /// A layer at least as wide in as out keeps `Wᵀ` instead: the forward product `x·Wᵀ`
    /// then reads its weight row by row, and the CPU kernel's packing is a copy rather than a
    /// transpose — a 1536 → 384 FFN output product runs about a third faster on one core
    /// (BENCHMARKS.md, "Speed, round 3"). Its backward product `grad·W` then packs the transpose,
    /// but over its short side, where the two layouts cost within a few percent.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let transposed = inp >= out;
        let weight = if transposed {
            weight.t()?.contiguous()?
        } else {
            weight
        };
        Ok(FrozenLinear {
            weight,
            transposed,
            bias,
        })
    }

    /// `W`, `[out, in]` (a copy when the layer keeps its transpose).
    pub fn weight(&self) -> Result<Tensor> {
        Ok(if self.transposed {
            self.weight.t()?.contiguous()?
        } else {
            self.weight.clone()
        })
    }

    /// The weight as stored, for the ops.
    pub(crate) fn stored(&self) -> ops::FrozenWeight<'_> {
        ops::FrozenWeight {
            tensor: &self.weight,
            transposed: self.transposed,
        }
    }

    /// The device the weight lives on.
    pub fn device(&self) -> &Device {
        self.weight.device()
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.dims()[if self.transposed { 0 } else { 1 }]
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[if self.transposed { 1 } else { 0 }]
    }

    /// Applies the layer to `x` of shape `[.., in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(
            x,
            self.stored(),
            self.bias.as_ref(),
            ops::Activation::Identity,
        )
    }

    /// Keeps only the given output rows (and their bias entries). The smaller layer is stored
    /// as [`FrozenLinear::new`] would store it, so a pruned model computes exactly as the same
    /// model exported and loaded again.
    pub fn keep_outputs(&self, rows: &Tensor) -> Result<Self> {
        let bias = self
            .bias
            .as_ref()
            .map(|b| b.index_select(rows, 0))
            .transpose()?;
        FrozenLinear::new(self.weight()?.index_select(rows, 0)?, bias)
    }

    /// Keeps only the given input columns; the bias is kept whole. Stored as for
    /// [`FrozenLinear::keep_outputs`].
    pub fn keep_inputs(&self, cols: &Tensor) -> Result<Self> {
        let weight = self.weight()?.index_select(cols, 1)?.contiguous()?;
        FrozenLinear::new(weight, self.bias.clone())
    }
}

/// A trainable value as a forward pass uses it: tracked in training; detached in inference,
/// where no gradient is asked for and a tracked input would keep every activation of the pass
/// alive (as part of the graph) until its output is dropped.
pub(crate) fn value(var: &Var, training: bool) -> Tensor {
    if training {
        var.as_tensor().clone()
    } else {
        var.as_tensor().detach()
    }
}

/// A LoRA branch `s·B·A·dropout(x)` with `A: [r, in]`, `B: [out, r]`.
pub struct Lora {
    /// `[r, in]`, Kaiming-uniform at creation.
    pub a: Var,
    /// `[out, r]`, zero at creation.
    pub b: Var,
    /// α / r at creation; unchanged when ranks are pruned (spec §5.5).
    pub scale: f64,
    /// Dropout on the branch input.
    pub dropout: f32,
}

impl Lora {
    /// A fresh branch for a `[out, in]` layer.
    pub fn new(
        config: &LoraConfig,
        in_dim: usize,
        out_dim: usize,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        if config.r == 0 {
            return Err(invalid("lora rank", "r must be at least 1"));
        }
        // kaiming_uniform_(a=√5) on a [r, in] matrix is U(−1/√in, 1/√in).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = ops::uniform(config.r, in_dim, bound, rng, device)?;
        let b = Tensor::zeros((out_dim, config.r), candle_core::DType::F32, device)?;
        Ok(Lora {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: config.alpha / config.r as f64,
            dropout: config.dropout,
        })
    }

    /// Current rank (rows of A).
    pub fn rank(&self) -> usize {
        self.a.dims()[0]
    }

    /// The branch from composed ops: the reference the fused layer is tested against.
    #[cfg(test)]
    fn delta(&self, x: &Tensor, train: Option<&mut StdRng>) -> Result<Tensor> {
        let training = train.is_some();
        let x = match train {
            Some(rng) => ops::dropout(x, self.dropout, rng)?,
            None => x.clone(),
        };
        let down = x.broadcast_matmul(&value(&self.a, training).t()?)?;
        let up = down.broadcast_matmul(&value(&self.b, training).t()?)?;
        Ok((up * self.scale)?)
    }

    /// Keeps the given rank dimensions (rows of A, columns of B); `None` if none are kept.
    pub fn keep_ranks(&self, ranks: &[usize]) -> Result<Option<Self>> {
        if ranks.is_empty() {
            return Ok(None);
        }
        let idx = index_tensor(ranks, self.a.device())?;
        Ok(Some(Lora {
            a: Var::from_tensor(&self.a.as_tensor().index_select(&idx, 0)?)?,
            b: Var::from_tensor(&self.b.as_tensor().index_select(&idx, 1)?.contiguous()?)?,
            scale: self.scale,
            dropout: self.dropout,
        }))
    }
}

/// A bottleneck adapter on a layer's output: `h + s·U·relu(D·dropout(h))`.
pub struct Adapter {
    /// `[size, d]`, N(0, 0.02²).
    pub down: Var,
    /// `[d, size]`, N(0, 0.02²) (not zero: the reference's "bert" init).
    pub up: Var,
    /// Output scale.
    pub scale: f64,
    /// Dropout on the adapter input.
    pub dropout: f32,
}

impl Adapter {
    /// A fresh adapter on a layer with `dim` outputs.
    pub fn new(
        config: &AdapterConfig,
        dim: usize,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        if config.size == 0 {
            return Err(invalid("adapter size", "the bottleneck must be at least 1"));
        }
        Ok(Adapter {
            down: Var::from_tensor(&ops::normal(config.size, dim, 0.02, rng, device)?)?,
            up: Var::from_tensor(&ops::normal(dim, config.size, 0.02, rng, device)?)?,
            scale: config.scale,
            dropout: config.dropout,
        })
    }

    /// Keeps the given bottleneck units (rows of down, columns of up); `None` if none are kept.
    pub fn keep_ranks(&self, units: &[usize]) -> Result<Option<Self>> {
        if units.is_empty() {
            return Ok(None);
        }
        let idx = index_tensor(units, self.down.device())?;
        Ok(Some(Adapter {
            down: Var::from_tensor(&self.down.as_tensor().index_select(&idx, 0)?)?,
            up: Var::from_tensor(&self.up.as_tensor().index_select(&idx, 1)?.contiguous()?)?,
            scale: self.scale,
            dropout: self.dropout,
        }))
    }

    fn delta(&self, h: &Tensor, train: Option<&mut StdRng>) -> Result<Tensor> {
        let training = train.is_some();
        let h = match train {
            Some(rng) => ops::dropout(h, self.dropout, rng)?,
            None => h.clone(),
        };
        let down = h
            .broadcast_matmul(&value(&self.down, training).t()?)?
            .relu()?;
        let up = down.broadcast_matmul(&value(&self.up, training).t()?)?;
        Ok((up * self.scale)?)
    }
}

/// The trainable part attached to a frozen linear layer.
pub enum PeftModule {
    /// A LoRA branch in parallel with the layer.
    Lora(Lora),
    /// A bottleneck adapter on the layer's output.
    Adapter(Adapter),
}

/// A frozen linear layer with at most one PEFT module.
pub struct PeftLinear {
    /// The pretrained layer.
    pub base: FrozenLinear,
    /// LoRA or adapter; `None` costs nothing over the plain layer.
    pub peft: Option<PeftModule>,
}

/// What a forward pass of a [`PeftLinear`] produced.
pub struct LinearOutput {
    /// The layer's output.
    pub output: Tensor,
    /// Per-token importance ratio ‖Δ‖/‖base‖ over the last dimension (spec §4.1), when asked
    /// for and a PEFT module is present. Detached from the graph.
    pub ratio: Option<Tensor>,
}

impl PeftLinear {
    /// A layer without PEFT.
    pub fn plain(base: FrozenLinear) -> Self {
        PeftLinear { base, peft: None }
    }

    /// The LoRA branch, if this layer has one.
    pub fn lora(&self) -> Option<&Lora> {
        match &self.peft {
            Some(PeftModule::Lora(l)) => Some(l),
            _ => None,
        }
    }

    /// Keeps only the given output rows: of the base layer, LoRA's B, or the adapter's weights.
    pub fn keep_outputs(&self, rows: &[usize]) -> Result<Self> {
        let idx = index_tensor(rows, self.base.device())?;
        let peft = match &self.peft {
            None => None,
            Some(PeftModule::Lora(l)) => Some(PeftModule::Lora(Lora {
                a: Var::from_tensor(l.a.as_tensor())?,
                b: Var::from_tensor(&l.b.as_tensor().index_select(&idx, 0)?)?,
                scale: l.scale,
                dropout: l.dropout,
            })),
            Some(PeftModule::Adapter(ad)) => Some(PeftModule::Adapter(Adapter {
                down: Var::from_tensor(&ad.down.as_tensor().index_select(&idx, 1)?.contiguous()?)?,
                up: Var::from_tensor(&ad.up.as_tensor().index_select(&idx, 0)?)?,
                scale: ad.scale,
                dropout: ad.dropout,
            })),
        };
        Ok(PeftLinear {
            base: self.base.keep_outputs(&idx)?,
            peft,
        })
    }

    /// Keeps only the given input columns: of the base layer and of LoRA's A.
    pub fn keep_inputs(&self, cols: &[usize]) -> Result<Self> {
        let idx = index_tensor(cols, self.base.device())?;
        let peft = match &self.peft {
            None => None,
            Some(PeftModule::Lora(l)) => Some(PeftModule::Lora(Lora {
                a: Var::from_tensor(&l.a.as_tensor().index_select(&idx, 1)?.contiguous()?)?,
                b: Var::from_tensor(l.b.as_tensor())?,
                scale: l.scale,
                dropout: l.dropout,
            })),
            Some(PeftModule::Adapter(ad)) => Some(PeftModule::Adapter(Adapter {
                down: Var::from_tensor(ad.down.as_tensor())?,
                up: Var::from_tensor(ad.up.as_tensor())?,
                scale: ad.scale,
                dropout: ad.dropout,
            })),
        };
        Ok(PeftLinear {
            base: self.base.keep_inputs(&idx)?,
            peft,
        })
    }

    /// The output for an input of zero width (every input unit pruned): the bias, plus the
    /// adapter's response to it. A LoRA branch has nothing to read and adds nothing.
    pub fn forward_without_inputs(
        &self,
        rows: usize,
        train: Option<&mut StdRng>,
    ) -> Result<Tensor> {
        let device = self.base.device();
        let out = self.base.out_dim();
        let base = match &self.base.bias {
            Some(b) => b.unsqueeze(0)?.broadcast_as((rows, out))?.contiguous()?,
            None => Tensor::zeros((rows, out), candle_core::DType::F32, device)?,
        };
        Ok(match &self.peft {
            Some(PeftModule::Adapter(ad)) => (&base + ad.delta(&base, train)?)?,
            _ => base,
        })
    }

    /// Applies the layer, then BERT's exact GELU, in one graph node when the layer is plain or
    /// has LoRA (an adapter acts between the two, so it takes the separate ops).
    pub(crate) fn forward_gelu(&self, x: &Tensor, train: Option<&mut StdRng>) -> Result<Tensor> {
        let gelu = ops::Activation::GeluErf;
        let training = train.is_some();
        let base = (self.base.stored(), self.base.bias.as_ref());
        match &self.peft {
            None => ops::linear(x, base.0, base.1, gelu),
            Some(PeftModule::Lora(lora)) => ops::lora_linear(
                x,
                base,
                (&value(&lora.a, training), &value(&lora.b, training)),
                lora.scale,
                train.map(|rng| (lora.dropout, rng)),
                gelu,
            ),
            Some(PeftModule::Adapter(_)) => ops::gelu_erf(&self.forward(x, train, false)?.output),
        }
    }

    /// Applies the layer and then `norm` (`LayerNorm(· + residual)`), in a forward pass that no
    /// backward pass follows: one fused node for a plain or a LoRA layer, whose blocks of rows
    /// are normalised in place as their products finish.
    pub(crate) fn forward_add_norm(&self, x: &Tensor, norm: ops::AddNorm<'_>) -> Result<Tensor> {
        let base = (self.base.stored(), self.base.bias.as_ref());
        match &self.peft {
            None => ops::linear_add_norm(x, base.0, base.1, norm),
            Some(PeftModule::Lora(lora)) => ops::lora_linear_add_norm(
                x,
                base,
                (&value(&lora.a, false), &value(&lora.b, false)),
                lora.scale,
                norm,
            ),
            Some(PeftModule::Adapter(_)) => norm.apply(&self.forward(x, None, false)?.output),
        }
    }

    /// Applies the layer. `train` carries the dropout RNG in training mode.
    pub fn forward(
        &self,
        x: &Tensor,
        train: Option<&mut StdRng>,
        want_ratio: bool,
    ) -> Result<LinearOutput> {
        if let Some(PeftModule::Lora(_)) = &self.peft {
            return self.lora_forward(x, train, want_ratio, ops::Activation::Identity);
        }
        let base = self.base.forward(x)?;
        let Some(PeftModule::Adapter(adapter)) = &self.peft else {
            return Ok(LinearOutput {
                output: base,
                ratio: None,
            });
        };
        let delta = adapter.delta(&base, train)?;
        let ratio = want_ratio
            .then(|| norm_ratio(&delta.detach(), &base.detach()))
            .transpose()?;
        Ok(LinearOutput {
            output: (&base + &delta)?,
            ratio,
        })
    }
}

impl PeftLinear {
    /// A LoRA layer as one fused node, followed by `activation`; with `want_ratio` the node
    /// also gives §4.1's ratio (of the pre-activation parts), a by-product of its forward pass.
    fn lora_forward(
        &self,
        x: &Tensor,
        train: Option<&mut StdRng>,
        want_ratio: bool,
        activation: ops::Activation,
    ) -> Result<LinearOutput> {
        let Some(PeftModule::Lora(lora)) = &self.peft else {
            return Err(crate::error::invalid("peft", "not a LoRA layer"));
        };
        let training = train.is_some();
        let base = (self.base.stored(), self.base.bias.as_ref());
        let factors = (&value(&lora.a, training), &value(&lora.b, training));
        let dropout = train.map(|rng| (lora.dropout, rng));
        if want_ratio {
            let (output, ratio) =
                ops::lora_linear_ratio(x, base, factors, lora.scale, dropout, activation)?;
            return Ok(LinearOutput {
                output,
                ratio: Some(ratio),
            });
        }
        let output = ops::lora_linear(x, base, factors, lora.scale, dropout, activation)?;
        Ok(LinearOutput {
            output,
            ratio: None,
        })
    }

    /// [`PeftLinear::forward`] with §4.1's ratio, followed by exact GELU (the ratio is of the
    /// pre-activation parts). One fused node for LoRA.
    pub(crate) fn forward_gelu_ratio(
        &self,
        x: &Tensor,
        train: Option<&mut StdRng>,
    ) -> Result<LinearOutput> {
        if let Some(PeftModule::Lora(_)) = &self.peft {
            return self.lora_forward(x, train, true, ops::Activation::GeluErf);
        }
        let out = self.forward(x, train, true)?;
        Ok(LinearOutput {
            output: ops::gelu_erf(&out.output)?,
            ratio: out.ratio,
        })
    }
}

fn norm_ratio(num: &Tensor, den: &Tensor) -> Result<Tensor> {
    let norm = |t: &Tensor| -> Result<Tensor> { Ok(t.sqr()?.sum(D::Minus1)?.sqrt()?) };
    Ok((norm(num)? / norm(den)?)?)
}

/// Builds a u32 index tensor.
pub(crate) fn index_tensor(indices: &[usize], device: &Device) -> Result<Tensor> {
    let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    Ok(Tensor::from_vec(idx, indices.len(), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn layer(rng: &mut rand::rngs::StdRng, r: usize) -> PeftLinear {
        let dev = Device::Cpu;
        let base = FrozenLinear::new(
            ops::normal(6, 5, 1.0, rng, &dev).unwrap(),
            Some(
                ops::normal(1, 6, 1.0, rng, &dev)
                    .unwrap()
                    .squeeze(0)
                    .unwrap(),
            ),
        )
        .unwrap();
        let cfg = LoraConfig {
            r,
            alpha: 16.0,
            dropout: 0.3,
        };
        let lora = Lora::new(&cfg, 5, 6, rng, &dev).unwrap();
        // B starts at zero; give it values so the branch is visible.
        lora.b
            .set(&ops::normal(6, r, 1.0, rng, &dev).unwrap())
            .unwrap();
        PeftLinear {
            base,
            peft: Some(PeftModule::Lora(lora)),
        }
    }

    #[test]
    fn a_pruned_layer_is_stored_as_a_new_layer_of_its_shape() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dev = Device::Cpu;
        let w = ops::normal(6, 5, 1.0, &mut rng, &dev).unwrap();
        let layer = FrozenLinear::new(w.clone(), None).unwrap();
        assert!(!layer.transposed, "5 in, 6 out: kept as [out, in]");
        let rows = index_tensor(&[0, 2, 4], &dev).unwrap();
        let kept = layer.keep_outputs(&rows).unwrap();
        assert!(kept.transposed, "5 in, 3 out: kept as [in, out]");
        let want = w.index_select(&rows, 0).unwrap();
        assert_eq!(max_diff(&kept.weight().unwrap(), &want), 0.0);
        assert_eq!((kept.in_dim(), kept.out_dim()), (5, 3));
        let cols = index_tensor(&[1, 3], &dev).unwrap();
        let narrow = kept.keep_inputs(&cols).unwrap();
        assert!(!narrow.transposed, "2 in, 3 out: back to [out, in]");
        let want = want.index_select(&cols, 1).unwrap();
        assert_eq!(max_diff(&narrow.weight().unwrap(), &want), 0.0);
        let x = ops::normal(4, 2, 1.0, &mut rng, &dev).unwrap();
        let plain = x.matmul(&want.t().unwrap()).unwrap();
        assert!(max_diff(&narrow.forward(&x).unwrap(), &plain) < 1e-5);
    }

    #[test]
    fn lora_in_eval_is_wx_plus_b_plus_scaled_ba_x() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let l = layer(&mut rng, 4);
        let x = ops::normal(3, 5, 1.0, &mut rng, &Device::Cpu).unwrap();
        let got = l.forward(&x, None, false).unwrap().output;
        let lora = l.lora().unwrap();
        assert_eq!(lora.scale, 4.0);
        let w = &l.base.weight().unwrap();
        let b = l.base.bias.as_ref().unwrap();
        let ba = lora.b.as_tensor().matmul(lora.a.as_tensor()).unwrap();
        let want = (x.matmul(&w.t().unwrap()).unwrap().broadcast_add(b).unwrap()
            + (x.matmul(&ba.t().unwrap()).unwrap() * 4.0).unwrap())
        .unwrap();
        assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
    }

    #[test]
    fn rank_zero_module_is_the_plain_linear() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut l = layer(&mut rng, 3);
        let x = ops::normal(2, 5, 1.0, &mut rng, &Device::Cpu).unwrap();
        let plain = l.base.forward(&x).unwrap();
        let with_lora = l.forward(&x, None, false).unwrap().output;
        assert!(
            max_diff(&plain, &with_lora) > 1e-3,
            "the branch must matter"
        );
        let kept = l.lora().unwrap().keep_ranks(&[]).unwrap();
        assert!(kept.is_none());
        l.peft = kept.map(PeftModule::Lora);
        assert_eq!(
            max_diff(&plain, &l.forward(&x, None, false).unwrap().output),
            0.0
        );
    }

    #[test]
    fn keeping_ranks_drops_their_contribution_and_keeps_the_scale() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let l = layer(&mut rng, 4);
        let lora = l.lora().unwrap();
        let half = lora.keep_ranks(&[0, 2]).unwrap().unwrap();
        assert_eq!((half.rank(), half.scale), (2, lora.scale));
        let x = ops::normal(2, 5, 1.0, &mut rng, &Device::Cpu).unwrap();
        // The kept ranks' contribution equals the full branch with ranks 1 and 3 zeroed in A.
        let mask = Tensor::new(&[[1f32], [0.], [1.], [0.]], &Device::Cpu).unwrap();
        let a_masked = lora.a.as_tensor().broadcast_mul(&mask).unwrap();
        let want = (x
            .matmul(&a_masked.t().unwrap())
            .unwrap()
            .matmul(&lora.b.as_tensor().t().unwrap())
            .unwrap()
            * lora.scale)
            .unwrap();
        let got = half.delta(&x, None).unwrap();
        assert!(max_diff(&got, &want) < 1e-4);
    }

    #[test]
    fn training_dropout_changes_only_the_branch_and_ratio_is_reported() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let l = layer(&mut rng, 2);
        let x = ops::normal(4, 5, 1.0, &mut rng, &Device::Cpu).unwrap();
        let mut drop_rng = rand::rngs::StdRng::seed_from_u64(9);
        let out = l.forward(&x, Some(&mut drop_rng), true).unwrap();
        let ratio = out.ratio.unwrap();
        assert_eq!(ratio.dims(), &[4]);
        let delta = (&out.output - l.base.forward(&x).unwrap()).unwrap();
        let want = norm_ratio(&delta, &l.base.forward(&x).unwrap()).unwrap();
        assert!(max_diff(&ratio, &want) < 1e-4);
        let eval = l.forward(&x, None, false).unwrap().output;
        assert!(
            max_diff(&eval, &out.output) > 1e-4,
            "dropout must act in training"
        );
    }
}
