//! A trainable BERT/RoBERTa encoder with Light-PEFT's hooks: per-head and per-neuron masks
//! (light-peft-spec §3.1–§3.2) and LoRA or adapters on chosen linear layers (§2).
//!
//! Written by hand because candle's LayerNorm and fused softmax have no backward pass.

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;

use crate::config::{Architecture, LayerShape, ModelConfig};
use crate::error::{Result, TensorContext, invalid};
use crate::ops;
use crate::peft::{self, FrozenLinear, PeftLinear, index_tensor};
use crate::tokenize::Batch;
use crate::weights::Checkpoint;

/// The PEFT-able linears and their ids belong to the planner's crate, which names plans by them.
pub use lightpeft_plan::{ModuleId, ModuleKind};

/// Training-mode state of a forward pass.
pub struct Training<'a> {
    /// Source of dropout masks.
    pub rng: &'a mut StdRng,
}

/// What the encoder produced.
pub struct EncoderOutput {
    /// `[batch, seq, hidden]`, or `[batch, 1, hidden]` for [`Positions::First`].
    pub hidden: Tensor,
    /// Per-module importance ratios `[batch, seq]` when requested (spec §4.1).
    pub ratios: Vec<(ModuleId, Tensor)>,
}

/// Which positions' final hidden states a forward pass produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Positions {
    /// Every token's.
    All,
    /// The first token's only: all that a classifier head on `[CLS]` (or `<s>`) reads. The
    /// last layer computes its keys and values over the whole sequence, and its queries,
    /// attention output and feed-forward for the first token alone: the same logits and
    /// gradients for about a seventh fewer FLOPs on a six-layer encoder.
    First,
}

/// LayerNorm parameters (frozen), applied with the fused op of `ops::layer_norm`.
#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(ckpt: &Checkpoint, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: ckpt.get(&format!("{prefix}.weight"), &[dim])?,
            bias: ckpt.get(&format!("{prefix}.bias"), &[dim])?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// `LayerNorm(dropout(y) + x)`: a sublayer's output `y` added to its input `x`.
    fn forward_residual(
        &self,
        y: &Tensor,
        x: &Tensor,
        dropout: Option<(f32, &mut StdRng)>,
    ) -> Result<Tensor> {
        ops::residual_layer_norm(y, x, (&self.weight, &self.bias), self.eps, dropout)
    }

    /// This norm after a sublayer whose input was `residual`, without dropout.
    fn after<'t>(&'t self, residual: &'t Tensor) -> ops::AddNorm<'t> {
        ops::AddNorm {
            residual,
            gamma: &self.weight,
            beta: &self.bias,
            eps: self.eps,
        }
    }
}

/// Word, position and token-type embeddings.
pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

/// Self-attention with its output projection and LayerNorm.
pub struct Attention {
    /// Query projection.
    pub query: PeftLinear,
    /// Key projection.
    pub key: PeftLinear,
    /// Value projection.
    pub value: PeftLinear,
    /// Output projection W_O.
    pub output: PeftLinear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    /// Trainable scalar per head, `[heads]`, when masks are on.
    pub head_mask: Option<Var>,
}

/// The position-wise feed-forward block.
pub struct FeedForward {
    /// W_1.
    pub intermediate: PeftLinear,
    /// W_2.
    pub output: PeftLinear,
    norm: LayerNorm,
    /// Trainable scalar per neuron, `[ffn]`, when masks are on.
    pub neuron_mask: Option<Var>,
}

/// One transformer layer (post-LN).
pub struct Layer {
    /// Attention block.
    pub attention: Attention,
    /// FFN block.
    pub ffn: FeedForward,
}

/// The whole encoder.
pub struct Encoder {
    /// Shapes and hyper-parameters.
    pub config: ModelConfig,
    embeddings: Embeddings,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
}

impl Encoder {
    /// Loads the encoder's frozen weights, checking every shape against `config`.
    pub fn load(config: &ModelConfig, ckpt: &Checkpoint) -> Result<Self> {
        let d = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embeddings = Embeddings {
            word: ckpt.get("embeddings.word_embeddings.weight", &[config.vocab_size, d])?,
            position: ckpt.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, d],
            )?,
            token_type: ckpt.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, d],
            )?,
            norm: LayerNorm::load(ckpt, "embeddings.LayerNorm", d, eps)?,
        };
        let head_dim = config.head_dim();
        let layers = config
            .layers
            .iter()
            .enumerate()
            .map(|(l, shape)| load_layer(ckpt, l, *shape, d, head_dim, eps))
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            config: config.clone(),
            embeddings,
            layers,
        })
    }

    /// The linear layer behind `id`.
    pub fn module(&self, id: ModuleId) -> &PeftLinear {
        let layer = &self.layers[id.layer];
        match id.kind {
            ModuleKind::Query => &layer.attention.query,
            ModuleKind::Key => &layer.attention.key,
            ModuleKind::Value => &layer.attention.value,
            ModuleKind::AttentionOutput => &layer.attention.output,
            ModuleKind::Intermediate => &layer.ffn.intermediate,
            ModuleKind::Output => &layer.ffn.output,
        }
    }

    /// Mutable access to the linear layer behind `id`.
    pub fn module_mut(&mut self, id: ModuleId) -> &mut PeftLinear {
        let layer = &mut self.layers[id.layer];
        match id.kind {
            ModuleKind::Query => &mut layer.attention.query,
            ModuleKind::Key => &mut layer.attention.key,
            ModuleKind::Value => &mut layer.attention.value,
            ModuleKind::AttentionOutput => &mut layer.attention.output,
            ModuleKind::Intermediate => &mut layer.ffn.intermediate,
            ModuleKind::Output => &mut layer.ffn.output,
        }
    }

    /// Every module id, layer by layer.
    pub fn module_ids(&self) -> Vec<ModuleId> {
        (0..self.layers.len())
            .flat_map(|layer| ModuleKind::ALL.map(|kind| ModuleId { layer, kind }))
            .collect()
    }

    /// Adds a trainable mask, initialised to 1, on every head and FFN neuron.
    pub fn enable_masks(&mut self, heads: bool, neurons: bool) -> Result<()> {
        let dev = self.embeddings.word.device().clone();
        for layer in &mut self.layers {
            if heads {
                layer.attention.head_mask =
                    Some(Var::ones(layer.attention.heads, DType::F32, &dev)?);
            }
            if neurons {
                layer.ffn.neuron_mask = Some(Var::ones(layer.ffn.width(), DType::F32, &dev)?);
            }
        }
        Ok(())
    }

    /// Removes masks (stage 2 trains without them; the reference never folds them in).
    pub fn disable_masks(&mut self) {
        for layer in &mut self.layers {
            layer.attention.head_mask = None;
            layer.ffn.neuron_mask = None;
        }
    }

    /// Physically keeps only `heads` (sorted, distinct) of layer `layer`, slicing Q/K/V rows,
    /// W_O columns, their LoRA weights and the head mask (spec §5.2, §5.6).
    pub fn keep_heads(&mut self, layer: usize, heads: &[usize]) -> Result<()> {
        let attn = &mut self.layers[layer].attention;
        check_indices("heads", heads, attn.heads)?;
        let dims: Vec<usize> = heads
            .iter()
            .flat_map(|h| h * attn.head_dim..(h + 1) * attn.head_dim)
            .collect();
        attn.query = attn.query.keep_outputs(&dims)?;
        attn.key = attn.key.keep_outputs(&dims)?;
        attn.value = attn.value.keep_outputs(&dims)?;
        attn.output = attn.output.keep_inputs(&dims)?;
        attn.head_mask = keep_mask(attn.head_mask.as_ref(), heads)?;
        attn.heads = heads.len();
        self.config.layers[layer].heads = heads.len();
        Ok(())
    }

    /// Physically keeps only FFN `neurons` (sorted, distinct) of layer `layer` (spec §5.3, §5.6).
    pub fn keep_neurons(&mut self, layer: usize, neurons: &[usize]) -> Result<()> {
        let ffn = &mut self.layers[layer].ffn;
        check_indices("neurons", neurons, ffn.width())?;
        ffn.intermediate = ffn.intermediate.keep_outputs(neurons)?;
        ffn.output = ffn.output.keep_inputs(neurons)?;
        ffn.neuron_mask = keep_mask(ffn.neuron_mask.as_ref(), neurons)?;
        self.config.layers[layer].ffn = neurons.len();
        Ok(())
    }

    /// Runs the encoder. `training` turns dropout on; `record_ratios` collects §4.1's ratios.
    pub fn forward(
        &self,
        batch: &Batch,
        training: Option<Training<'_>>,
        record_ratios: bool,
    ) -> Result<EncoderOutput> {
        self.forward_positions(batch, training, record_ratios, Positions::All)
    }

    /// [`Encoder::forward`] for the hidden states of `positions`.
    ///
    /// §4.1's ratios average over every token. With [`Positions::First`] and `record_ratios`,
    /// the last layer runs once more over every position, forwards only and from a detached
    /// input, to record its modules' ratios (with dropout draws of their own); the pass the
    /// loss flows through computes the first token alone. That costs a third of a layer's
    /// training FLOPs where every position through the backward pass would cost all of them.
    pub fn forward_positions(
        &self,
        batch: &Batch,
        mut training: Option<Training<'_>>,
        record_ratios: bool,
        positions: Positions,
    ) -> Result<EncoderOutput> {
        let first_only = positions == Positions::First;
        let (b, l) = batch.input_ids.dims2()?;
        let mut hidden = self
            .embed(batch, training.as_mut())
            .context(|| "embeddings".into())?;
        // Additive mask: 0 where a token is real, a large negative number on padding.
        let mask_add =
            ((batch.attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, l))?;
        let mut ratios = Vec::new();
        let last = self.layers.len().saturating_sub(1);
        for (index, layer) in self.layers.iter().enumerate() {
            let first_alone = first_only && index == last;
            if first_alone && record_ratios {
                let mut ctx = LayerCtx {
                    index,
                    batch: b,
                    seq: l,
                    queries: l,
                    mask_add: &mask_add,
                    training: training.as_mut(),
                    ratios: Some(&mut ratios),
                    config: &self.config,
                };
                layer
                    .forward(&hidden.detach(), &mut ctx)
                    .context(|| format!("encoder layer {index}, its ratios"))?;
            }
            let mut ctx = LayerCtx {
                index,
                batch: b,
                seq: l,
                queries: if first_alone { 1 } else { l },
                mask_add: &mask_add,
                training: training.as_mut(),
                ratios: (record_ratios && !first_alone).then_some(&mut ratios),
                config: &self.config,
            };
            hidden = layer
                .forward(&hidden, &mut ctx)
                .context(|| format!("encoder layer {index}"))?;
        }
        // The last layer left one row per sequence, or all of them (and so did no layer).
        let hidden = hidden.reshape((b, (), self.config.hidden_size))?;
        let hidden = if first_only {
            hidden.narrow(1, 0, 1)?
        } else {
            hidden
        };
        Ok(EncoderOutput { hidden, ratios })
    }

    fn embed(&self, batch: &Batch, training: Option<&mut Training<'_>>) -> Result<Tensor> {
        let (b, l) = batch.input_ids.dims2()?;
        if l > self.config.max_position_embeddings {
            return Err(invalid(
                "batch",
                format!(
                    "sequence length {l} exceeds max_position_embeddings {}",
                    self.config.max_position_embeddings
                ),
            ));
        }
        let ids = batch.input_ids.flatten_all()?;
        let positions = self.position_ids(batch)?;
        let e = &self.embeddings;
        let x = (e.word.index_select(&ids, 0)?
            + e.position.index_select(&positions.flatten_all()?, 0)?)?;
        let x = (x + e
            .token_type
            .index_select(&batch.type_ids.flatten_all()?, 0)?)?;
        let x = e.norm.forward(&x)?;
        let x = match training {
            Some(t) => ops::dropout(&x, self.config.hidden_dropout_prob, t.rng)?,
            None => x,
        };
        debug_assert_eq!(x.dims(), &[b * l, self.config.hidden_size]);
        Ok(x)
    }

    /// BERT counts positions from 0; RoBERTa from `pad + 1` over real tokens, pad elsewhere.
    fn position_ids(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l) = batch.input_ids.dims2()?;
        let dev = batch.input_ids.device();
        match self.config.architecture {
            Architecture::Bert => Ok(Tensor::arange(0u32, l as u32, dev)?
                .unsqueeze(0)?
                .broadcast_as((b, l))?
                .contiguous()?),
            Architecture::Roberta => {
                let ids: Vec<Vec<u32>> = batch.input_ids.to_vec2()?;
                let pad = self.config.pad_token_id;
                let pos: Vec<u32> = ids
                    .iter()
                    .flat_map(|row| roberta_positions(row, pad))
                    .collect();
                Ok(Tensor::from_vec(pos, (b, l), dev)?)
            }
        }
    }

    /// Frozen parameters of the encoder: embeddings, linear layers and LayerNorms.
    pub fn parameter_count(&self) -> usize {
        // The stored weights, whichever way round: only their sizes are counted.
        self.collect_frozen(|base| Ok(base.stored().tensor.clone()))
            .expect("cloning the stored tensors cannot fail")
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    /// Every frozen tensor under its Hugging Face name (no prefix), in the current (possibly
    /// pruned) shapes and Hugging Face's layouts.
    pub fn frozen_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.collect_frozen(FrozenLinear::weight)
    }

    /// The frozen tensors under their names, each linear layer's weight as `weight` gives it.
    fn collect_frozen(
        &self,
        weight: impl Fn(&FrozenLinear) -> Result<Tensor>,
    ) -> Result<Vec<(String, Tensor)>> {
        let e = &self.embeddings;
        let mut out = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                e.word.clone(),
            ),
            (
                "embeddings.position_embeddings.weight".to_string(),
                e.position.clone(),
            ),
            (
                "embeddings.token_type_embeddings.weight".to_string(),
                e.token_type.clone(),
            ),
        ];
        let push_norm = |out: &mut Vec<(String, Tensor)>, name: String, n: &LayerNorm| {
            out.push((format!("{name}.weight"), n.weight.clone()));
            out.push((format!("{name}.bias"), n.bias.clone()));
        };
        push_norm(&mut out, "embeddings.LayerNorm".into(), &e.norm);
        for id in self.module_ids() {
            let base = &self.module(id).base;
            out.push((format!("{}.weight", id.name()), weight(base)?));
            if let Some(b) = &base.bias {
                out.push((format!("{}.bias", id.name()), b.clone()));
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}");
            push_norm(
                &mut out,
                format!("{p}.attention.output.LayerNorm"),
                &layer.attention.norm,
            );
            push_norm(&mut out, format!("{p}.output.LayerNorm"), &layer.ffn.norm);
        }
        Ok(out)
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embeddings.word.device()
    }
}

/// RoBERTa's position ids for one row: `pad + (number of real tokens so far)` on real tokens.
pub fn roberta_positions(ids: &[u32], pad: u32) -> Vec<u32> {
    let mut seen = 0;
    ids.iter()
        .map(|&id| {
            if id == pad {
                pad
            } else {
                seen += 1;
                pad + seen
            }
        })
        .collect()
}

fn check_indices(what: &'static str, keep: &[usize], count: usize) -> Result<()> {
    if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&i| i >= count) {
        return Err(invalid(
            what,
            format!("indices to keep must be sorted, distinct and below {count}: {keep:?}"),
        ));
    }
    Ok(())
}

fn keep_mask(mask: Option<&Var>, keep: &[usize]) -> Result<Option<Var>> {
    mask.map(|m| {
        let idx = index_tensor(keep, m.device())?;
        Ok(Var::from_tensor(&m.as_tensor().index_select(&idx, 0)?)?)
    })
    .transpose()
}

fn load_linear(
    ckpt: &Checkpoint,
    prefix: &str,
    out_dim: usize,
    in_dim: usize,
) -> Result<PeftLinear> {
    Ok(PeftLinear::plain(FrozenLinear::new(
        ckpt.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
        Some(ckpt.get(&format!("{prefix}.bias"), &[out_dim])?),
    )?))
}

fn load_layer(
    ckpt: &Checkpoint,
    index: usize,
    shape: LayerShape,
    d: usize,
    head_dim: usize,
    eps: f64,
) -> Result<Layer> {
    let p = format!("encoder.layer.{index}");
    let inner = shape.heads * head_dim;
    let attention = Attention {
        query: load_linear(ckpt, &format!("{p}.attention.self.query"), inner, d)?,
        key: load_linear(ckpt, &format!("{p}.attention.self.key"), inner, d)?,
        value: load_linear(ckpt, &format!("{p}.attention.self.value"), inner, d)?,
        output: load_linear(ckpt, &format!("{p}.attention.output.dense"), d, inner)?,
        norm: LayerNorm::load(ckpt, &format!("{p}.attention.output.LayerNorm"), d, eps)?,
        heads: shape.heads,
        head_dim,
        head_mask: None,
    };
    let ffn = FeedForward {
        intermediate: load_linear(ckpt, &format!("{p}.intermediate.dense"), shape.ffn, d)?,
        output: load_linear(ckpt, &format!("{p}.output.dense"), d, shape.ffn)?,
        norm: LayerNorm::load(ckpt, &format!("{p}.output.LayerNorm"), d, eps)?,
        neuron_mask: None,
    };
    Ok(Layer { attention, ffn })
}

struct LayerCtx<'a, 'r> {
    index: usize,
    batch: usize,
    seq: usize,
    /// Positions per sequence this layer computes its output for: `seq`, or 1 (the first).
    queries: usize,
    mask_add: &'a Tensor,
    training: Option<&'a mut Training<'r>>,
    ratios: Option<&'a mut Vec<(ModuleId, Tensor)>>,
    config: &'a ModelConfig,
}

impl LayerCtx<'_, '_> {
    fn rng(&mut self) -> Option<&mut StdRng> {
        self.training.as_mut().map(|t| &mut *t.rng)
    }

    /// Runs a linear layer and keeps its importance ratio when asked to.
    fn linear(&mut self, linear: &PeftLinear, kind: ModuleKind, x: &Tensor) -> Result<Tensor> {
        let want = self.ratios.is_some() && linear.peft.is_some();
        let out = linear.forward(x, self.rng(), want)?;
        self.keep_ratio(kind, out)
    }

    /// A sublayer's last linear layer and its end, `LayerNorm(dropout(linear(x)) + residual)`:
    /// one node where no backward pass follows and neither dropout nor a ratio needs the
    /// layer's output apart.
    fn linear_residual_norm(
        &mut self,
        (linear, kind): (&PeftLinear, ModuleKind),
        x: &Tensor,
        residual: &Tensor,
        norm: &LayerNorm,
    ) -> Result<Tensor> {
        let want_ratio = self.ratios.is_some() && linear.peft.is_some();
        if self.training.is_none() && !want_ratio {
            return linear.forward_add_norm(x, norm.after(residual));
        }
        let y = self.linear(linear, kind, x)?;
        self.residual_norm(norm, &y, residual)
    }

    /// `LayerNorm(dropout(y) + residual)`, the end of a sublayer, as its own node.
    fn residual_norm(&mut self, norm: &LayerNorm, y: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let p = self.config.hidden_dropout_prob;
        norm.forward_residual(y, residual, self.rng().map(|rng| (p, rng)))
    }

    /// Keeps a layer's ratio, if it has one, and passes its output on.
    fn keep_ratio(&mut self, kind: ModuleKind, out: crate::peft::LinearOutput) -> Result<Tensor> {
        if let (Some(ratios), Some(r)) = (self.ratios.as_mut(), out.ratio) {
            let id = ModuleId {
                layer: self.index,
                kind,
            };
            ratios.push((id, r.reshape((self.batch, self.seq))?));
        }
        Ok(out.output)
    }
}

impl LayerCtx<'_, '_> {
    /// [`LayerCtx::linear`] followed by exact GELU, in one fused node for LoRA.
    fn linear_gelu(&mut self, linear: &PeftLinear, kind: ModuleKind, x: &Tensor) -> Result<Tensor> {
        if self.ratios.is_some() && linear.peft.is_some() {
            let out = linear.forward_gelu_ratio(x, self.rng())?;
            return self.keep_ratio(kind, out);
        }
        linear.forward_gelu(x, self.rng())
    }
}

impl Layer {
    fn forward(&self, x: &Tensor, ctx: &mut LayerCtx<'_, '_>) -> Result<Tensor> {
        let x = self.attention.forward(x, ctx)?;
        self.ffn.forward(&x, ctx)
    }
}

impl Attention {
    /// The sublayer's output for the positions the layer computes (`ctx.queries` of each
    /// sequence), from the input `x` at every position.
    fn forward(&self, x: &Tensor, ctx: &mut LayerCtx<'_, '_>) -> Result<Tensor> {
        let residual = if ctx.queries < ctx.seq {
            let d = x.dim(1)?;
            x.reshape((ctx.batch, ctx.seq, d))?
                .narrow(1, 0, ctx.queries)?
                .reshape((ctx.batch * ctx.queries, d))?
        } else {
            x.clone()
        };
        if self.heads == 0 {
            let n = residual.dim(0)?;
            let projected = self.output.forward_without_inputs(n, ctx.rng())?;
            return ctx.residual_norm(&self.norm, &projected, &residual);
        }
        let context = self.context(x, &residual, ctx)?;
        let output = (&self.output, ModuleKind::AttentionOutput);
        ctx.linear_residual_norm(output, &context, &residual, &self.norm)
    }

    /// Per-head attention of the `queries` rows over keys and values from every row of `x`,
    /// masked per head, merged back to `[queries rows, heads·head_dim]`.
    fn context(&self, x: &Tensor, queries: &Tensor, ctx: &mut LayerCtx<'_, '_>) -> Result<Tensor> {
        let (b, l, h, dh) = (ctx.batch, ctx.seq, self.heads, self.head_dim);
        let q = ctx.linear(&self.query, ModuleKind::Query, queries)?;
        let k = ctx.linear(&self.key, ModuleKind::Key, x)?;
        let v = ctx.linear(&self.value, ModuleKind::Value, x)?;
        let shape = ops::AttentionShape {
            batch: b,
            seq: l,
            queries: ctx.queries,
            heads: h,
            head_dim: dh,
        };
        let p = ctx.config.attention_probs_dropout_prob;
        let mask = ctx.mask_add;
        let dropout = ctx.rng().map(|rng| (p, rng));
        let context = ops::attention((&q, &k, &v), mask, shape, dropout)?;
        // Scaling each head's context equals scaling its (post-dropout) probabilities.
        match &self.head_mask {
            Some(mask) => ops::scale_groups(&context, &peft::value(mask, ctx.training.is_some())),
            None => Ok(context),
        }
    }
}

impl FeedForward {
    /// Current number of neurons.
    pub fn width(&self) -> usize {
        self.intermediate.base.out_dim()
    }

    fn forward(&self, x: &Tensor, ctx: &mut LayerCtx<'_, '_>) -> Result<Tensor> {
        let n = x.dim(0)?;
        if self.width() == 0 {
            let out = self.output.forward_without_inputs(n, ctx.rng())?;
            return ctx.residual_norm(&self.norm, &out, x);
        }
        let mut act = ctx.linear_gelu(&self.intermediate, ModuleKind::Intermediate, x)?;
        if let Some(mask) = &self.neuron_mask {
            act = ops::scale_groups(&act, &peft::value(mask, ctx.training.is_some()))?;
        }
        let output = (&self.output, ModuleKind::Output);
        ctx.linear_residual_norm(output, &act, x, &self.norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roberta_positions_start_after_pad_and_skip_padding() {
        assert_eq!(
            roberta_positions(&[0, 5, 6, 2, 1, 1], 1),
            vec![2, 3, 4, 5, 1, 1]
        );
    }

    #[test]
    fn suffix_targets_match_both_output_denses() {
        let targets = vec!["output.dense".to_string()];
        let hits: Vec<ModuleKind> = ModuleKind::ALL
            .into_iter()
            .filter(|&kind| ModuleId { layer: 2, kind }.matches_any(&targets))
            .collect();
        assert_eq!(hits, vec![ModuleKind::AttentionOutput, ModuleKind::Output]);
        let qv = vec!["query".to_string(), "value".to_string()];
        assert!(
            ModuleId {
                layer: 0,
                kind: ModuleKind::Query
            }
            .matches_any(&qv)
        );
        assert!(
            !ModuleId {
                layer: 0,
                kind: ModuleKind::Key
            }
            .matches_any(&qv)
        );
    }
}
