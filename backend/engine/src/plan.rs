//! Pruning plans (light-peft-spec §5): which attention heads, FFN neurons, LoRA modules and LoRA
//! rank dimensions survive, decided from the stage-1 results by the reference's quantile rule,
//! and what that does to the parameter count.
//!
//! Plain data in, plain data out: no tensors, no I/O, no threads, so the same code can run in a
//! browser. A [`Planner`] validates and sorts the stage-1 records once; each [`Planner::plan`] is
//! then linear in their size, cheap enough to run on every slider move.
//!
//! # The threshold rule, bit for bit
//! Every decision computes `τ = numpy.quantile(values, ratio)` and keeps a value iff it is
//! strictly above τ, so values tied at τ are pruned (§5.1). [`numpy_quantile`] reproduces NumPy
//! 1.25, the reference's pinned version, checked bit for bit against a table NumPy wrote
//! (`tests/data/quantile_cases.json`). Two details differ from what §5.1 of the spec says:
//! * NumPy 1.25's `'linear'` method takes the virtual index as `(n − 1)·q`, not
//!   `n·q + (1 − q) − 1`; the two round differently in about a quarter of random cases.
//! * For a float32 array (the reference's mask records) NumPy subtracts the two neighbours in
//!   float32, rounding their difference to float32, and does the rest in float64, returning a
//!   float64 τ. The reference calls it with `keepdims=True`, so τ stays an array and the
//!   comparison `values > τ` runs in float64 too; we compare `f64::from(value) > τ` likewise.
//!   (NumPy ≥ 2 works in float32 throughout for float32 input and would give other answers.)

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::config::{Architecture, LayerShape, ModelConfig};
use crate::encoder::{ModuleId, ModuleKind};
use crate::error::{Result, invalid};

/// The shapes the parameter count needs: an unpruned BERT/RoBERTa encoder, its classifier head
/// and the LoRA modules stage 1 trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// Checkpoint layout; decides which part of the classifier head is trainable.
    pub architecture: Architecture,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// Width of the residual stream, a multiple of `heads`.
    pub hidden_size: usize,
    /// FFN neurons per layer.
    pub intermediate_size: usize,
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// Outputs of the classifier (1 for regression, and for multiple choice's logit per choice).
    pub num_labels: usize,
    /// The LoRA modules, or `None` when stage 1 trained none.
    pub lora: Option<LoraShape>,
}

/// Where LoRA sits and at which rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraShape {
    /// The rank r every module was trained at.
    pub rank: usize,
    /// The wrapped modules, in any order.
    pub modules: Vec<ModuleId>,
}

/// What stage 1 measured (§4.3, §5.2, §5.3). A record that stage 1 did not produce is left
/// empty; a plan that needs it then fails with an error naming it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EstimationSummary {
    /// Final head-mask values, `[layer][head]`, ranked by signed value.
    pub head_masks: Vec<Vec<f32>>,
    /// Final FFN-mask values, `[layer][neuron]`, ranked by signed value.
    pub neuron_masks: Vec<Vec<f32>>,
    /// Importance ratio IR of each LoRA module (§4.1), aggregated by [`aggregate_importance`].
    pub module_importance: Vec<(ModuleId, f64)>,
    /// First-order importance of each rank dimension of each LoRA module (§4.2), aggregated by
    /// [`aggregate_importance`].
    pub rank_importance: Vec<(ModuleId, Vec<f64>)>,
}

/// How to rank heads or FFN neurons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruningScope {
    /// One threshold per layer: every layer loses the same number (barring ties).
    Layerwise,
    /// One threshold over all layers: a layer can lose everything.
    Global,
}

/// How to rank the rank dimensions of the LoRA modules that survive module pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankScope {
    /// One threshold over all surviving modules (the scripts' `global`): a module can lose all
    /// its ranks and disappear.
    Global,
    /// One threshold per module (the reference's `layerwise`).
    PerModule,
}

/// Ratios and methods for one plan. A ratio is the fraction removed, in [0, 1]; 0 skips that
/// step, as the reference does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanRequest {
    /// Fraction of attention heads removed (§5.2).
    pub head_ratio: f64,
    /// Fraction of FFN neurons removed (§5.3).
    pub ffn_ratio: f64,
    /// Fraction of LoRA modules removed, ranked by IR over all modules (§5.4).
    pub module_ratio: f64,
    /// Fraction of the surviving modules' rank dimensions removed (§5.5).
    pub rank_ratio: f64,
    /// Layer-wise by default, which is all the reference can do; [`PruningScope::Global`] for
    /// heads is a lightpeft extension.
    pub head_method: PruningScope,
    /// Global by default, as the scripts run it (the reference's own default is layer-wise).
    pub ffn_method: PruningScope,
    /// Global by default, as the scripts run it.
    pub rank_method: RankScope,
    /// A lightpeft extension, off by default as in the reference (§11.3): every layer keeps at
    /// least one head and one FFN neuron. A layer a decision would empty keeps its
    /// highest-valued element (the lowest index among equals); in random mode, the one drawn
    /// last. The removed counts then fall short of the ratio by the elements kept this way.
    pub keep_at_least_one: bool,
    /// The random-pruning ablation with this seed (§11.13: it crashes in the reference, in ours
    /// it works). Every decision removes as many elements as the importance rule would (the
    /// same threshold, ties included), chosen uniformly at random within the same group. Each
    /// decision and group draws from its own stream, and a larger count removes a superset of
    /// a smaller one, so moving one slider never reshuffles the others. Unlike the reference,
    /// which keeps using IR for modules, modules are drawn at random too.
    pub random: Option<u64>,
}

/// A plan: what survives, the thresholds that decided it and the parameter counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruningPlan {
    /// One entry per encoder layer, bottom first.
    pub layers: Vec<LayerPlan>,
    /// The LoRA modules.
    pub peft: PeftPlan,
    /// The τ of each decision.
    pub thresholds: Thresholds,
    /// Parameters of the unpruned model with all its LoRA modules.
    pub parameters_before: ParameterCounts,
    /// Parameters after the plan.
    pub parameters_after: ParameterCounts,
}

/// What survives in one encoder layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerPlan {
    /// Indices of the kept heads, ascending.
    pub kept_heads: Vec<usize>,
    /// How many heads this layer loses.
    pub removed_heads: usize,
    /// Indices of the kept FFN neurons, ascending.
    pub kept_neurons: Vec<usize>,
    /// How many FFN neurons this layer loses.
    pub removed_neurons: usize,
}

/// What survives of the LoRA modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftPlan {
    /// Modules that keep at least one rank dimension, in layer and [`ModuleKind::ALL`] order.
    pub modules: Vec<ModulePlan>,
    /// LoRA modules before pruning.
    pub total_modules: usize,
    /// Modules removed by module pruning (§5.4).
    pub removed_by_module_pruning: usize,
    /// Modules that survived module pruning and then lost every rank dimension (§5.5).
    pub removed_by_rank_pruning: usize,
    /// The reference's reported `removed_peft_proportion` (§11.10): the modules removed by
    /// rank pruning over the modules that survived module pruning, because modules removed
    /// earlier are never wrapped in stage 2. It is not the share of all modules removed.
    /// `None` when no module survived module pruning, where the reference divides by zero.
    pub removed_peft_proportion: Option<f64>,
}

/// A surviving LoRA module, with its dimensions on the pruned encoder (§5.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulePlan {
    /// Which module.
    pub id: ModuleId,
    /// Indices of the kept rank dimensions, ascending (rows of A, columns of B).
    pub kept_ranks: Vec<usize>,
    /// Input width of the pruned linear layer.
    pub in_dim: usize,
    /// Output width of the pruned linear layer.
    pub out_dim: usize,
    /// `kept ranks · (in_dim + out_dim)`.
    pub parameters: usize,
}

/// The τ of each decision; elements at or below it were pruned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Head pruning.
    pub heads: Threshold,
    /// FFN pruning.
    pub neurons: Threshold,
    /// Module pruning.
    pub modules: Threshold,
    /// Rank pruning.
    pub ranks: Threshold,
}

/// The τ of one decision. In random mode it is still the importance rule's τ, which fixed how
/// many elements the draw removes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// The ratio was 0, or nothing was left to rank.
    Skipped,
    /// One τ over all elements.
    Global(f64),
    /// One τ per encoder layer.
    PerLayer(Vec<f64>),
    /// One τ per module that survived module pruning.
    PerModule(Vec<(ModuleId, f64)>),
}

/// Parameter counts, mask scalars excluded (§5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterCounts {
    /// Word, position and token-type tables and their LayerNorm; pruning never changes them.
    pub embeddings: usize,
    /// All encoder layers: attention, FFN and both LayerNorms.
    pub encoder_layers: usize,
    /// BERT: pooler and classifier; RoBERTa: dense and out_proj.
    pub classifier_head: usize,
    /// LoRA A and B matrices.
    pub peft: usize,
    /// What stage 2 trains: LoRA plus the trainable part of the head (all of RoBERTa's, BERT's
    /// classifier without the frozen pooler).
    pub trainable: usize,
    /// Everything above, trainable or not.
    pub total: usize,
}

/// Plans once: validates the inputs, then decides. [`Planner`] does the same work split so the
/// sorting is done once for many plans.
pub fn plan(
    shape: &ModelShape,
    estimation: &EstimationSummary,
    request: &PlanRequest,
) -> Result<PruningPlan> {
    Planner::new(shape.clone(), estimation)?.plan(request)
}

/// Stage-1 results validated and sorted once, ready for any number of plans.
#[derive(Debug, Clone)]
pub struct Planner {
    shape: ModelShape,
    /// The LoRA modules, sorted; indices into it identify modules below.
    modules: Vec<ModuleId>,
    heads: Option<Grouped<f32>>,
    neurons: Option<Grouped<f32>>,
    module_importance: Option<Ranked<f64>>,
    rank_importance: Option<Grouped<f64>>,
}

/// Value types [`numpy_quantile`] accepts: those NumPy would see for the reference's records.
pub trait QuantileValue: Copy + sealed::Sealed {
    /// The value widened exactly.
    fn to_f64(self) -> f64;
    /// `hi − lo` computed in the value's own precision, as NumPy does before interpolating.
    fn difference(hi: Self, lo: Self) -> f64;
}

impl QuantileValue for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn difference(hi: Self, lo: Self) -> f64 {
        f64::from(hi - lo)
    }
}

impl QuantileValue for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn difference(hi: Self, lo: Self) -> f64 {
        hi - lo
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// `numpy.quantile(values, q)` with the default `'linear'` method, bit for bit as NumPy 1.25
/// computes it (see the module docs). Any NaN makes the result NaN, as in NumPy.
pub fn numpy_quantile<T: QuantileValue>(values: &[T], q: f64) -> Result<f64> {
    if values.is_empty() {
        return Err(invalid("quantile values", "there are none"));
    }
    check_fraction("quantile q", q)?;
    if values.iter().any(|v| v.to_f64().is_nan()) {
        return Ok(f64::NAN);
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| compare(a.to_f64(), b.to_f64()));
    Ok(quantile_of_sorted(&sorted, q))
}

/// Aggregates per-step importances as the reference does at the end of stage 1 (§4.3): only the
/// second half of the steps (`floor(T/2)..T`) counts, and NaN or infinite entries count as 0
/// in the mean rather than being dropped. Each step holds one value per element: one for IR,
/// r for rank importance.
pub fn aggregate_importance<S: AsRef<[f64]>>(per_step: &[S]) -> Result<Vec<f64>> {
    let Some(first) = per_step.first() else {
        return Err(invalid("importance steps", "no training step was recorded"));
    };
    let width = first.as_ref().len();
    if let Some((step, values)) = per_step
        .iter()
        .enumerate()
        .find(|(_, s)| s.as_ref().len() != width)
    {
        return Err(invalid(
            "importance steps",
            format!(
                "step {step} has {} values, step 0 has {width}",
                values.as_ref().len()
            ),
        ));
    }
    let second_half = &per_step[per_step.len() / 2..];
    let mut sums = vec![0.0; width];
    for step in second_half {
        for (sum, &value) in sums.iter_mut().zip(step.as_ref()) {
            if value.is_finite() {
                *sum += value;
            }
        }
    }
    let steps = second_half.len() as f64;
    Ok(sums.into_iter().map(|sum| sum / steps).collect())
}

impl PlanRequest {
    /// The reference's `scripts/train.sh` (§8.3): 0.333333333 of the heads per layer (5 of 16),
    /// 0.333333333 of the FFN neurons globally, 0.75 of the modules, then 0.5 of the ranks
    /// globally.
    pub fn reference() -> Self {
        PlanRequest {
            head_ratio: 0.333333333,
            ffn_ratio: 0.333333333,
            module_ratio: 0.75,
            rank_ratio: 0.5,
            ..PlanRequest::default()
        }
    }

    fn validate(&self) -> Result<()> {
        check_fraction("head_ratio", self.head_ratio)?;
        check_fraction("ffn_ratio", self.ffn_ratio)?;
        check_fraction("module_ratio", self.module_ratio)?;
        check_fraction("rank_ratio", self.rank_ratio)
    }
}

impl Default for PlanRequest {
    /// Prunes nothing; the methods are the scripts'.
    fn default() -> Self {
        PlanRequest {
            head_ratio: 0.0,
            ffn_ratio: 0.0,
            module_ratio: 0.0,
            rank_ratio: 0.0,
            head_method: PruningScope::Layerwise,
            ffn_method: PruningScope::Global,
            rank_method: RankScope::Global,
            keep_at_least_one: false,
            random: None,
        }
    }
}

impl PruningPlan {
    /// Heads removed over all layers.
    pub fn removed_heads(&self) -> usize {
        self.layers.iter().map(|l| l.removed_heads).sum()
    }

    /// FFN neurons removed over all layers.
    pub fn removed_neurons(&self) -> usize {
        self.layers.iter().map(|l| l.removed_neurons).sum()
    }
}

impl ModelShape {
    /// The shape of an unpruned checkpoint; fails for a config that describes a pruned one,
    /// because stage 1 and so the plan start from the full model.
    pub fn from_config(
        config: &ModelConfig,
        num_labels: usize,
        lora: Option<LoraShape>,
    ) -> Result<Self> {
        let full = |l: &LayerShape| {
            l.heads == config.num_attention_heads && l.ffn == config.intermediate_size
        };
        if !config.layers.iter().all(full) {
            return Err(invalid(
                "model shape",
                "the config describes a pruned encoder; plan from the unpruned one",
            ));
        }
        let shape = ModelShape {
            architecture: config.architecture,
            layers: config.layers.len(),
            heads: config.num_attention_heads,
            hidden_size: config.hidden_size,
            intermediate_size: config.intermediate_size,
            vocab_size: config.vocab_size,
            max_position_embeddings: config.max_position_embeddings,
            type_vocab_size: config.type_vocab_size,
            num_labels,
            lora,
        };
        shape.validate()?;
        Ok(shape)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.heads
    }

    fn validate(&self) -> Result<()> {
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

    /// `(in, out)` of a module's linear layer when its layer keeps `heads` heads and `ffn`
    /// neurons (§5.2, §5.3, §5.6).
    fn module_dims(&self, kind: ModuleKind, heads: usize, ffn: usize) -> (usize, usize) {
        let d = self.hidden_size;
        let attention = heads * self.head_dim();
        match kind {
            ModuleKind::Query | ModuleKind::Key | ModuleKind::Value => (d, attention),
            ModuleKind::AttentionOutput => (attention, d),
            ModuleKind::Intermediate => (d, ffn),
            ModuleKind::Output => (ffn, d),
        }
    }

    /// One encoder layer: Q, K, V lose rows and biases with their heads, W_O loses columns but
    /// keeps its bias; W_1 loses rows and biases with its neurons, W_2 columns; the two
    /// LayerNorms stay.
    fn layer_parameters(&self, heads: usize, ffn: usize) -> usize {
        let d = self.hidden_size;
        let attention = heads * self.head_dim();
        let qkv = 3 * (attention * d + attention);
        let attention_output = d * attention + d;
        let feed_forward = (d * ffn + ffn) + (ffn * d + d);
        qkv + attention_output + feed_forward + 2 * (2 * d)
    }

    fn counts(&self, layers: &[(usize, usize)], peft: usize) -> ParameterCounts {
        let d = self.hidden_size;
        let embeddings =
            (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * d + 2 * d;
        let encoder_layers = layers
            .iter()
            .map(|&(heads, ffn)| self.layer_parameters(heads, ffn))
            .sum();
        // BERT's pooler and RoBERTa's dense layer are both d×d with a bias.
        let square = d * d + d;
        let output = self.num_labels * d + self.num_labels;
        let trainable_head = match self.architecture {
            Architecture::Bert => output,
            Architecture::Roberta => square + output,
        };
        let classifier_head = square + output;
        ParameterCounts {
            embeddings,
            encoder_layers,
            classifier_head,
            peft,
            trainable: peft + trainable_head,
            total: embeddings + encoder_layers + classifier_head + peft,
        }
    }
}

impl Planner {
    /// Validates the shapes and records (ragged arrays, non-finite values, importances that do
    /// not match the LoRA modules) and sorts each record once.
    pub fn new(shape: ModelShape, estimation: &EstimationSummary) -> Result<Self> {
        shape.validate()?;
        let (rank, mut modules) = match &shape.lora {
            Some(lora) => (lora.rank, lora.modules.clone()),
            None => (0, Vec::new()),
        };
        modules.sort_unstable();
        let heads = mask_ranking(
            "head_masks",
            &estimation.head_masks,
            shape.layers,
            shape.heads,
        )?;
        let neurons = mask_ranking(
            "neuron_masks",
            &estimation.neuron_masks,
            shape.layers,
            shape.intermediate_size,
        )?;
        let module_importance = per_module(
            "module_importance",
            &modules,
            &estimation.module_importance,
            |&value| Ok(vec![value]),
        )?
        .map(|rows| Ranked::new(rows.into_iter().map(|row| row[0]).enumerate()));
        let rank_importance = per_module(
            "rank_importance",
            &modules,
            &estimation.rank_importance,
            |values: &Vec<f64>| {
                if values.len() == rank {
                    Ok(values.clone())
                } else {
                    Err(format!(
                        "has {} values, the LoRA rank is {rank}",
                        values.len()
                    ))
                }
            },
        )?
        .map(|rows| Grouped::new(&rows, rank));
        Ok(Planner {
            shape,
            modules,
            heads,
            neurons,
            module_importance,
            rank_importance,
        })
    }

    /// The model shape plans are made for.
    pub fn shape(&self) -> &ModelShape {
        &self.shape
    }

    /// Decides heads, FFN neurons, modules and ranks in the reference's order (§5.7) and counts
    /// what is left.
    pub fn plan(&self, request: &PlanRequest) -> Result<PruningPlan> {
        request.validate()?;
        let shape = &self.shape;
        let (head_threshold, kept_heads) = self.prune_units(Unit::Heads, request)?;
        let (neuron_threshold, kept_neurons) = self.prune_units(Unit::Neurons, request)?;
        let (module_threshold, reserved) = self.prune_modules(request)?;
        let (rank_threshold, kept_ranks) = self.prune_ranks(request, &reserved)?;

        let layers: Vec<LayerPlan> = kept_heads
            .into_iter()
            .zip(kept_neurons)
            .map(|(kept_heads, kept_neurons)| LayerPlan {
                removed_heads: shape.heads - kept_heads.len(),
                removed_neurons: shape.intermediate_size - kept_neurons.len(),
                kept_heads,
                kept_neurons,
            })
            .collect();
        let widths: Vec<(usize, usize)> = layers
            .iter()
            .map(|l| (l.kept_heads.len(), l.kept_neurons.len()))
            .collect();
        let modules: Vec<ModulePlan> = self
            .modules
            .iter()
            .zip(kept_ranks)
            .filter(|(_, ranks)| !ranks.is_empty())
            .map(|(&id, kept_ranks)| {
                let (heads, ffn) = widths[id.layer];
                let (in_dim, out_dim) = shape.module_dims(id.kind, heads, ffn);
                ModulePlan {
                    id,
                    parameters: kept_ranks.len() * (in_dim + out_dim),
                    kept_ranks,
                    in_dim,
                    out_dim,
                }
            })
            .collect();
        let reserved_count = reserved.iter().filter(|&&r| r).count();
        let removed_by_rank_pruning = reserved_count - modules.len();
        let peft = PeftPlan {
            total_modules: self.modules.len(),
            removed_by_module_pruning: self.modules.len() - reserved_count,
            removed_by_rank_pruning,
            removed_peft_proportion: (reserved_count > 0)
                .then(|| removed_by_rank_pruning as f64 / reserved_count as f64),
            modules,
        };

        let full = vec![(shape.heads, shape.intermediate_size); shape.layers];
        let rank = shape.lora.as_ref().map_or(0, |l| l.rank);
        let peft_before = self
            .modules
            .iter()
            .map(|id| {
                let (in_dim, out_dim) =
                    shape.module_dims(id.kind, shape.heads, shape.intermediate_size);
                rank * (in_dim + out_dim)
            })
            .sum();
        let peft_after = peft.modules.iter().map(|m| m.parameters).sum();
        Ok(PruningPlan {
            parameters_before: shape.counts(&full, peft_before),
            parameters_after: shape.counts(&widths, peft_after),
            layers,
            peft,
            thresholds: Thresholds {
                heads: head_threshold,
                neurons: neuron_threshold,
                modules: module_threshold,
                ranks: rank_threshold,
            },
        })
    }

    /// Heads (§5.2) or FFN neurons (§5.3): the kept indices of each layer.
    fn prune_units(
        &self,
        unit: Unit,
        request: &PlanRequest,
    ) -> Result<(Threshold, Vec<Vec<usize>>)> {
        let (ratio, scope, ranking, width) = match unit {
            Unit::Heads => (
                request.head_ratio,
                request.head_method,
                self.heads.as_ref(),
                self.shape.heads,
            ),
            Unit::Neurons => (
                request.ffn_ratio,
                request.ffn_method,
                self.neurons.as_ref(),
                self.shape.intermediate_size,
            ),
        };
        let layers = self.shape.layers;
        if ratio == 0.0 {
            return Ok((Threshold::Skipped, vec![(0..width).collect(); layers]));
        }
        let Some(ranking) = ranking else {
            return Err(invalid(unit.ratio_name(), unit.missing_record()));
        };
        let all_layers = vec![true; layers];
        let decided = ranking.decide(
            &all_layers,
            ratio,
            scope == PruningScope::Global,
            request.random.map(|seed| (seed, unit.stream())),
        );
        let threshold = match scope {
            PruningScope::Global => decided.global_threshold(),
            PruningScope::Layerwise => Threshold::PerLayer(decided.thresholds),
        };
        let kept = kept_per_group(layers, width, &decided.pruned, request.keep_at_least_one);
        Ok((threshold, kept))
    }

    /// Module pruning (§5.4): which modules are reserved for stage 2.
    fn prune_modules(&self, request: &PlanRequest) -> Result<(Threshold, Vec<bool>)> {
        let mut reserved = vec![true; self.modules.len()];
        if request.module_ratio == 0.0 {
            return Ok((Threshold::Skipped, reserved));
        }
        let ranking = self.module_importance.as_ref().ok_or_else(|| {
            invalid(
                "module_ratio",
                self.missing_peft_record("module importances"),
            )
        })?;
        let stream = request
            .random
            .map(|seed| SplitMix64::stream(seed, Stream::Modules, 0));
        let decided = ranking.decide(request.module_ratio, stream, || {
            (0..self.modules.len()).collect()
        });
        let Some(decided) = decided else {
            return Ok((Threshold::Skipped, reserved));
        };
        for &module in &decided.pruned {
            reserved[module] = false;
        }
        Ok((Threshold::Global(decided.threshold), reserved))
    }

    /// Rank pruning (§5.5) among the reserved modules: the kept rank indices of every module,
    /// empty for modules that are gone.
    fn prune_ranks(
        &self,
        request: &PlanRequest,
        reserved: &[bool],
    ) -> Result<(Threshold, Vec<Vec<usize>>)> {
        let rank = self.shape.lora.as_ref().map_or(0, |l| l.rank);
        let all_ranks = |reserved: bool| {
            if reserved {
                (0..rank).collect()
            } else {
                Vec::new()
            }
        };
        if request.rank_ratio == 0.0 {
            return Ok((
                Threshold::Skipped,
                reserved.iter().map(|&r| all_ranks(r)).collect(),
            ));
        }
        let ranking = self
            .rank_importance
            .as_ref()
            .ok_or_else(|| invalid("rank_ratio", self.missing_peft_record("rank importances")))?;
        let global = request.rank_method == RankScope::Global;
        let decided = ranking.decide(
            reserved,
            request.rank_ratio,
            global,
            request.random.map(|seed| (seed, Stream::Ranks)),
        );
        let threshold = if global {
            decided.global_threshold()
        } else {
            let ids = self.modules.iter().zip(reserved).filter(|(_, r)| **r);
            Threshold::PerModule(ids.map(|(&id, _)| id).zip(decided.thresholds).collect())
        };
        let mut kept = kept_per_group(self.modules.len(), rank, &decided.pruned, false);
        for (ranks, &r) in kept.iter_mut().zip(reserved) {
            if !r {
                ranks.clear();
            }
        }
        Ok((threshold, kept))
    }

    fn missing_peft_record(&self, record: &str) -> String {
        if self.shape.lora.is_none() {
            "is above 0 but the model has no LoRA modules".into()
        } else {
            format!("is above 0 but stage 1 recorded no {record}")
        }
    }
}

/// The two foundation-model decisions.
#[derive(Clone, Copy)]
enum Unit {
    Heads,
    Neurons,
}

impl Unit {
    fn ratio_name(self) -> &'static str {
        match self {
            Unit::Heads => "head_ratio",
            Unit::Neurons => "ffn_ratio",
        }
    }

    fn missing_record(self) -> &'static str {
        match self {
            Unit::Heads => "is above 0 but stage 1 recorded no head masks",
            Unit::Neurons => "is above 0 but stage 1 recorded no FFN-neuron masks",
        }
    }

    fn stream(self) -> Stream {
        match self {
            Unit::Heads => Stream::Heads,
            Unit::Neurons => Stream::Neurons,
        }
    }
}

/// Which decision a random stream belongs to: each has its own, so one decision's draws never
/// depend on another's.
#[derive(Clone, Copy)]
enum Stream {
    Heads = 1,
    Neurons = 2,
    Modules = 3,
    Ranks = 4,
}

/// One group's elements sorted once, least important first: ascending value, and among equal
/// values the higher index first, so the last element of a group is its highest-valued one with
/// the lowest index (the one `keep_at_least_one` keeps).
#[derive(Debug, Clone)]
struct Ranked<T> {
    values: Vec<T>,
    ids: Vec<usize>,
}

/// What one decision over one group removes.
struct Decision {
    threshold: f64,
    /// In pruning order: least important first, or the order of the random draw.
    pruned: Vec<usize>,
}

impl<T: QuantileValue> Ranked<T> {
    fn new(entries: impl Iterator<Item = (usize, T)>) -> Self {
        let mut entries: Vec<(usize, T)> = entries.collect();
        entries.sort_unstable_by(|a, b| compare(a.1.to_f64(), b.1.to_f64()).then(b.0.cmp(&a.0)));
        let (ids, values) = entries.into_iter().unzip();
        Ranked { values, ids }
    }

    /// The entries whose id passes `keep`, still sorted.
    fn filter(&self, keep: impl Fn(usize) -> bool) -> Self {
        let (values, ids) = self
            .values
            .iter()
            .zip(&self.ids)
            .filter(|(_, id)| keep(**id))
            .map(|(&v, &id)| (v, id))
            .unzip();
        Ranked { values, ids }
    }

    /// Applies the quantile rule. In random mode the same number of elements is drawn from
    /// `pool()`, the group's ids in a fixed order so that a seed means the same draw whatever
    /// the values. `None` for an empty group.
    fn decide(
        &self,
        ratio: f64,
        random: Option<SplitMix64>,
        pool: impl FnOnce() -> Vec<usize>,
    ) -> Option<Decision> {
        if self.values.is_empty() {
            return None;
        }
        let threshold = quantile_of_sorted(&self.values, ratio);
        let count = self.values.partition_point(|v| v.to_f64() <= threshold);
        let pruned = match random {
            None => self.ids[..count].to_vec(),
            Some(mut rng) => {
                let mut pool = pool();
                rng.shuffle_prefix(&mut pool, count);
                pool.truncate(count);
                pool
            }
        };
        Some(Decision { threshold, pruned })
    }
}

/// A record of equal-width groups (layers of heads or neurons, modules of ranks), ranked both
/// as a whole and per group. Element ids are `group · width + index`.
#[derive(Debug, Clone)]
struct Grouped<T> {
    width: usize,
    all: Ranked<T>,
    groups: Vec<Ranked<T>>,
}

/// The decisions over some groups of a [`Grouped`] record.
struct GroupedDecision {
    /// One per decided group, or at most one for a global decision.
    thresholds: Vec<f64>,
    pruned: Vec<usize>,
}

impl GroupedDecision {
    fn global_threshold(&self) -> Threshold {
        self.thresholds
            .first()
            .map_or(Threshold::Skipped, |&t| Threshold::Global(t))
    }
}

impl<T: QuantileValue> Grouped<T> {
    fn new(rows: &[Vec<T>], width: usize) -> Self {
        let all = Ranked::new(rows.iter().flatten().copied().enumerate());
        // Splitting the global order keeps each group sorted: one sort serves both scopes.
        let mut groups = vec![
            Ranked {
                values: Vec::with_capacity(width),
                ids: Vec::with_capacity(width),
            };
            rows.len()
        ];
        for (&value, &id) in all.values.iter().zip(&all.ids) {
            let group = &mut groups[id / width];
            group.values.push(value);
            group.ids.push(id);
        }
        Grouped { width, all, groups }
    }

    /// Prunes `ratio` of the elements of the `active` groups, ranked across all of them
    /// (`global`) or within each.
    fn decide(
        &self,
        active: &[bool],
        ratio: f64,
        global: bool,
        random: Option<(u64, Stream)>,
    ) -> GroupedDecision {
        let width = self.width;
        let group_ids = |group: usize| group * width..(group + 1) * width;
        let stream = |group: usize| random.map(|(seed, s)| SplitMix64::stream(seed, s, group));
        let mut thresholds = Vec::new();
        let mut pruned = Vec::new();
        let mut take = |decision: Option<Decision>| {
            if let Some(d) = decision {
                thresholds.push(d.threshold);
                pruned.extend(d.pruned);
            }
        };
        if global {
            let subset;
            let ranked = if active.iter().all(|&a| a) {
                &self.all
            } else {
                subset = self.all.filter(|id| active[id / width]);
                &subset
            };
            let pool = || {
                (0..active.len())
                    .filter(|&g| active[g])
                    .flat_map(group_ids)
                    .collect()
            };
            take(ranked.decide(ratio, stream(0), pool));
        } else {
            for (group, ranked) in self.groups.iter().enumerate() {
                if active[group] {
                    take(ranked.decide(ratio, stream(group), || group_ids(group).collect()));
                }
            }
        }
        GroupedDecision { thresholds, pruned }
    }
}

/// The kept indices of each group after removing `pruned` (ids `group · width + index`, in
/// pruning order). With `keep_one`, a group left empty keeps its last-pruned element.
fn kept_per_group(
    groups: usize,
    width: usize,
    pruned: &[usize],
    keep_one: bool,
) -> Vec<Vec<usize>> {
    let mut keep = vec![true; groups * width];
    for &id in pruned {
        keep[id] = false;
    }
    if keep_one {
        let mut kept: Vec<usize> = keep
            .chunks(width)
            .map(|group| group.iter().filter(|&&k| k).count())
            .collect();
        for &id in pruned.iter().rev() {
            if kept[id / width] == 0 {
                keep[id] = true;
                kept[id / width] = 1;
            }
        }
    }
    keep.chunks(width)
        .map(|group| (0..width).filter(|&i| group[i]).collect())
        .collect()
}

/// NumPy 1.25's `'linear'` interpolation on already sorted, non-empty values (see the module
/// docs for why each step is written this way).
fn quantile_of_sorted<T: QuantileValue>(sorted: &[T], q: f64) -> f64 {
    let last = sorted.len() - 1;
    let virtual_index = last as f64 * q;
    // At or past the last element NumPy takes it for both neighbours, with the weight measured
    // from index −1; the formula below then yields that element.
    let (lo, hi, weight) = if virtual_index >= last as f64 {
        (last, last, virtual_index + 1.0)
    } else {
        let floor = virtual_index.floor();
        (floor as usize, floor as usize + 1, virtual_index - floor)
    };
    let (a, b) = (sorted[lo], sorted[hi]);
    let difference = T::difference(b, a);
    // NumPy interpolates from the nearer neighbour, which changes the rounding.
    if weight >= 0.5 {
        b.to_f64() - difference * (1.0 - weight)
    } else {
        a.to_f64() + difference * weight
    }
}

/// Orders values numerically; callers have excluded NaN.
fn compare(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

fn check_fraction(what: &'static str, value: f64) -> Result<()> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(what, format!("must lie in [0, 1], got {value}")))
    }
}

/// Checks a `[layer][unit]` mask record and ranks it; `None` when stage 1 left it empty.
fn mask_ranking(
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
fn per_module<V>(
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

/// SplitMix64 (Steele, Lea and Flood): tiny, seedable and good enough for an ablation's draws.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The stream of one group of one decision, hashed from the seed so streams do not overlap.
    fn stream(seed: u64, stream: Stream, group: usize) -> Self {
        let decision = mix(seed.wrapping_add((stream as u64).wrapping_mul(Self::GAMMA)));
        SplitMix64(mix(decision.wrapping_add(group as u64)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        mix(self.0)
    }

    /// Uniform in `0..bound`, without modulo bias (Lemire's multiply-and-reject).
    fn below(&mut self, bound: usize) -> usize {
        let bound = bound as u64;
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as usize;
            }
        }
    }

    /// Moves `count` uniformly drawn elements to the front of `pool`, in draw order. The first
    /// k draws do not depend on `count`, so a larger count extends a smaller one.
    fn shuffle_prefix(&mut self, pool: &mut [usize], count: usize) {
        for i in 0..count {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
    }
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's model: RoBERTa-large, 2 labels, LoRA r=8 on all six linears (§0, §2.1).
    fn roberta_large() -> ModelShape {
        ModelShape {
            architecture: Architecture::Roberta,
            layers: 24,
            heads: 16,
            hidden_size: 1024,
            intermediate_size: 4096,
            vocab_size: 50265,
            max_position_embeddings: 514,
            type_vocab_size: 1,
            num_labels: 2,
            lora: Some(all_modules(24, 8)),
        }
    }

    /// MiniLM-L6-H384 (BERT layout), 2 labels, LoRA r=8 on all six linears: 36 modules.
    fn minilm() -> ModelShape {
        ModelShape {
            architecture: Architecture::Bert,
            layers: 6,
            heads: 12,
            hidden_size: 384,
            intermediate_size: 1536,
            vocab_size: 30522,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            num_labels: 2,
            lora: Some(all_modules(6, 8)),
        }
    }

    /// A model small enough to reason about by hand.
    fn tiny(layers: usize, heads: usize, ffn: usize, lora: Option<LoraShape>) -> ModelShape {
        ModelShape {
            architecture: Architecture::Roberta,
            layers,
            heads,
            hidden_size: 4 * heads,
            intermediate_size: ffn,
            vocab_size: 10,
            max_position_embeddings: 8,
            type_vocab_size: 1,
            num_labels: 2,
            lora,
        }
    }

    fn all_modules(layers: usize, rank: usize) -> LoraShape {
        LoraShape {
            rank,
            modules: (0..layers)
                .flat_map(|layer| ModuleKind::ALL.map(|kind| ModuleId { layer, kind }))
                .collect(),
        }
    }

    /// `n` distinct values in random order (a shuffled 0..n), so no rule can hide behind ties.
    fn distinct(n: usize, seed: u64) -> Vec<f64> {
        let mut pool: Vec<usize> = (0..n).collect();
        SplitMix64(seed).shuffle_prefix(&mut pool, n);
        pool.into_iter().map(|v| v as f64).collect()
    }

    fn rows_f32(values: &[f64], width: usize) -> Vec<Vec<f32>> {
        values
            .chunks(width)
            .map(|row| row.iter().map(|&v| v as f32).collect())
            .collect()
    }

    /// Distinct random masks and importances for every record of `shape`.
    fn estimation(shape: &ModelShape, seed: u64) -> EstimationSummary {
        let lora = shape.lora.as_ref().expect("test shapes have LoRA");
        let ranks = distinct(lora.modules.len() * lora.rank, seed + 3);
        EstimationSummary {
            head_masks: rows_f32(&distinct(shape.layers * shape.heads, seed), shape.heads),
            neuron_masks: rows_f32(
                &distinct(shape.layers * shape.intermediate_size, seed + 1),
                shape.intermediate_size,
            ),
            module_importance: lora
                .modules
                .iter()
                .copied()
                .zip(distinct(lora.modules.len(), seed + 2))
                .collect(),
            rank_importance: lora
                .modules
                .iter()
                .copied()
                .zip(ranks.chunks(lora.rank).map(<[f64]>::to_vec))
                .collect(),
        }
    }

    fn kept_ranks(plan: &PruningPlan) -> usize {
        plan.peft.modules.iter().map(|m| m.kept_ranks.len()).sum()
    }

    fn without_peft(p: &ParameterCounts) -> usize {
        p.embeddings + p.encoder_layers + p.classifier_head
    }

    fn error_text(result: Result<PruningPlan>) -> String {
        result.expect_err("the plan should fail").to_string()
    }

    #[test]
    fn quantile_matches_numpy_table() {
        #[derive(Deserialize)]
        struct Table {
            numpy: String,
            cases: Vec<Case>,
        }
        #[derive(Deserialize)]
        struct Case {
            dtype: String,
            values: Vec<String>,
            q: Vec<(String, String, usize)>,
        }
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/quantile_cases.json"
        ));
        let table: Table = serde_json::from_str(text).expect("the table parses");
        assert!(table.numpy.starts_with("1.25."), "{}", table.numpy);
        assert!(table.cases.len() >= 60, "only {} cases", table.cases.len());
        let mut checked = 0;
        for (index, case) in table.cases.iter().enumerate() {
            let hex = |h: &String| u64::from_str_radix(h, 16).expect("hex");
            let (f32s, f64s): (Vec<f32>, Vec<f64>) = match case.dtype.as_str() {
                "float32" => (
                    case.values
                        .iter()
                        .map(|h| f32::from_bits(hex(h) as u32))
                        .collect(),
                    Vec::new(),
                ),
                "float64" => (
                    Vec::new(),
                    case.values.iter().map(|h| f64::from_bits(hex(h))).collect(),
                ),
                other => panic!("case {index}: dtype {other}"),
            };
            for (q, tau, kept) in &case.q {
                let q: f64 = q.parse().expect("q parses");
                let expected = f64::from_bits(hex(tau));
                let (got, got_kept) = if f32s.is_empty() {
                    let t = numpy_quantile(&f64s, q).unwrap();
                    (t, f64s.iter().filter(|&&v| v > t).count())
                } else {
                    let t = numpy_quantile(&f32s, q).unwrap();
                    (t, f32s.iter().filter(|&&v| f64::from(v) > t).count())
                };
                let n = case.values.len();
                assert_eq!(
                    got.to_bits(),
                    expected.to_bits(),
                    "case {index} ({}, n={n}), q={q}: {got:e} != numpy {expected:e}",
                    case.dtype
                );
                assert_eq!(got_kept, *kept, "case {index} (n={n}), q={q}: kept");
                checked += 1;
            }
        }
        assert!(checked >= 500, "only {checked} quantiles checked");
    }

    #[test]
    fn quantile_edge_cases_follow_numpy() {
        assert!(numpy_quantile::<f32>(&[], 0.5).is_err());
        assert!(numpy_quantile(&[1.0f64], -0.1).is_err());
        assert!(numpy_quantile(&[1.0f64], 1.1).is_err());
        assert!(numpy_quantile(&[1.0f64], f64::NAN).is_err());
        assert!(
            numpy_quantile(&[1.0f32, f32::NAN, 3.0], 0.0)
                .unwrap()
                .is_nan()
        );
        assert_eq!(numpy_quantile(&[7.0f32], 0.3).unwrap(), 7.0);
        assert_eq!(numpy_quantile(&[1.0f64, 2.0, 3.0, 4.0], 0.5).unwrap(), 2.5);
        // Infinities go through NumPy's arithmetic unchanged (checked against NumPy 1.25).
        let inf = f32::INFINITY;
        assert!(numpy_quantile(&[1.0, inf], 1.0).unwrap().is_nan());
        assert!(numpy_quantile(&[1.0, inf], 0.5).unwrap().is_nan());
        assert_eq!(numpy_quantile(&[1.0, inf], 0.2).unwrap(), f64::INFINITY);
        assert!(numpy_quantile(&[-inf, 1.0], 0.0).unwrap().is_nan());
    }

    #[test]
    fn shapes_come_from_unpruned_configs_only() {
        let json = |extra: &str| {
            format!(
                r#"{{"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 2,
                "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522,
                "max_position_embeddings": 512, "type_vocab_size": 2{extra}}}"#
            )
        };
        let path = std::path::Path::new("config.json");
        let config = ModelConfig::from_json(&json(""), path).unwrap();
        let shape = ModelShape::from_config(&config, 3, None).unwrap();
        assert_eq!(
            (
                shape.layers,
                shape.heads,
                shape.head_dim(),
                shape.num_labels
            ),
            (2, 12, 32, 3)
        );
        let pruned =
            json(r#", "lightpeft_layers": [{"heads": 7, "ffn": 1536}, {"heads": 12, "ffn": 0}]"#);
        let config = ModelConfig::from_json(&pruned, path).unwrap();
        let error = ModelShape::from_config(&config, 3, None).unwrap_err();
        assert!(error.to_string().contains("pruned"), "{error}");
    }

    /// The counts of §5.1 and §5.8 on RoBERTa-large with distinct random values.
    #[test]
    fn reference_counts_on_roberta_large() {
        let shape = roberta_large();
        let planner = Planner::new(shape.clone(), &estimation(&shape, 7)).unwrap();
        let plan = planner.plan(&PlanRequest::reference()).unwrap();
        for layer in &plan.layers {
            assert_eq!((layer.kept_heads.len(), layer.removed_heads), (11, 5));
        }
        assert_eq!(plan.removed_neurons(), 32_768);
        assert_eq!(plan.peft.total_modules, 144);
        assert_eq!(plan.peft.removed_by_module_pruning, 108);
        assert_eq!(kept_ranks(&plan), 144, "half of 36 × 8 rank entries");
        assert!(matches!(plan.thresholds.heads, Threshold::PerLayer(ref t) if t.len() == 24));
        assert!(matches!(plan.thresholds.neurons, Threshold::Global(_)));
        let before = &plan.parameters_before;
        assert_eq!(without_peft(before), 355_361_794);
        assert_eq!(before.peft, 3_538_944);
        assert_eq!(without_peft(&plan.parameters_after), 256_739_842);
        assert_eq!(
            plan.parameters_after.total,
            without_peft(&plan.parameters_after) + plan.parameters_after.peft
        );

        let exact_third = PlanRequest {
            head_ratio: 1.0 / 3.0,
            ..PlanRequest::reference()
        };
        let plan = planner.plan(&exact_third).unwrap();
        assert!(plan.layers.iter().all(|l| l.removed_heads == 6));

        let halves = PlanRequest {
            head_ratio: 0.5,
            ffn_ratio: 0.5,
            ..PlanRequest::default()
        };
        let plan = planner.plan(&halves).unwrap();
        assert_eq!(without_peft(&plan.parameters_after), 204_280_834);
        assert_eq!(plan.peft.modules.len(), 144);
        assert_eq!(plan.thresholds.modules, Threshold::Skipped);
    }

    #[test]
    fn ties_at_the_threshold_are_pruned() {
        let shape = tiny(3, 6, 1, None);
        let estimation = EstimationSummary {
            head_masks: vec![
                vec![0.2, 0.1, 0.2, 1.0, 0.2, 0.9],
                vec![0.5; 6],
                vec![0.3, 0.9, 0.1, 0.9, 0.0, 0.2],
            ],
            ..EstimationSummary::default()
        };
        // n = 6, q = 0.4: τ = v[2]; without ties 3 heads would go.
        let mut request = PlanRequest {
            head_ratio: 0.4,
            ..PlanRequest::default()
        };
        let plan = plan(&shape, &estimation, &request).unwrap();
        assert_eq!(plan.layers[0].kept_heads, vec![3, 5], "all three 0.2s go");
        assert!(
            plan.layers[1].kept_heads.is_empty(),
            "an all-equal layer goes"
        );
        assert_eq!(plan.layers[2].kept_heads, vec![0, 1, 3]);
        assert_eq!(
            plan.thresholds.heads,
            Threshold::PerLayer(vec![f64::from(0.2f32), 0.5, f64::from(0.2f32)])
        );

        request.keep_at_least_one = true;
        let plan = super::plan(&shape, &estimation, &request).unwrap();
        assert_eq!(plan.layers[1].kept_heads, vec![0], "the first of equals");
        assert_eq!(plan.layers[0].kept_heads, vec![3, 5], "untouched");

        request.head_ratio = 1.0;
        let plan = super::plan(&shape, &estimation, &request).unwrap();
        let kept: Vec<_> = plan.layers.iter().map(|l| l.kept_heads.clone()).collect();
        assert_eq!(kept, vec![vec![3], vec![0], vec![1]], "the highest value");
    }

    #[test]
    fn global_ffn_pruning_can_empty_a_layer() {
        let shape = tiny(3, 1, 10, None);
        let low: Vec<f32> = (0..10).map(|i| i as f32 * 0.01).collect();
        let high: Vec<f32> = (0..10).map(|i| 1.0 + i as f32 * 0.1).collect();
        let estimation = EstimationSummary {
            neuron_masks: vec![low, high.clone(), high],
            ..EstimationSummary::default()
        };
        // Global: 30 values, g = 29 · 0.34 = 9.86, so the 10 lowest go, all of layer 0.
        let mut request = PlanRequest {
            ffn_ratio: 0.34,
            ffn_method: PruningScope::Global,
            ..PlanRequest::default()
        };
        let plan = plan(&shape, &estimation, &request).unwrap();
        let widths: Vec<usize> = plan.layers.iter().map(|l| l.kept_neurons.len()).collect();
        assert_eq!(widths, vec![0, 10, 10]);
        // An empty FFN keeps only W_2's bias and the LayerNorms: each neuron was 2d + 1.
        let d = shape.hidden_size;
        assert_eq!(
            plan.parameters_before.encoder_layers - plan.parameters_after.encoder_layers,
            10 * (2 * d + 1)
        );

        request.keep_at_least_one = true;
        let plan = super::plan(&shape, &estimation, &request).unwrap();
        assert_eq!(plan.layers[0].kept_neurons, vec![9], "its highest value");
        assert_eq!(plan.removed_neurons(), 9);

        // Layer-wise: g = 9 · 0.34 = 3.06, so 4 go from every layer.
        request.ffn_method = PruningScope::Layerwise;
        let plan = super::plan(&shape, &estimation, &request).unwrap();
        assert!(plan.layers.iter().all(|l| l.removed_neurons == 4));
        assert_eq!(plan.layers[0].kept_neurons, vec![4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn global_head_pruning_is_an_extension_that_ranks_across_layers() {
        let shape = tiny(2, 4, 1, None);
        let estimation = EstimationSummary {
            head_masks: vec![vec![0.1, 0.2, 0.3, 0.4], vec![0.5, 0.6, 0.7, 0.8]],
            ..EstimationSummary::default()
        };
        let request = PlanRequest {
            head_ratio: 0.5,
            head_method: PruningScope::Global,
            ..PlanRequest::default()
        };
        let plan = plan(&shape, &estimation, &request).unwrap();
        assert!(plan.layers[0].kept_heads.is_empty());
        assert_eq!(plan.layers[1].kept_heads, vec![0, 1, 2, 3]);
    }

    #[test]
    fn rank_pruning_can_remove_a_whole_module() {
        let query = ModuleId {
            layer: 0,
            kind: ModuleKind::Query,
        };
        let value = ModuleId {
            layer: 0,
            kind: ModuleKind::Value,
        };
        let key = ModuleId {
            layer: 0,
            kind: ModuleKind::Key,
        };
        let lora = LoraShape {
            rank: 4,
            modules: vec![value, query, key],
        };
        let shape = tiny(1, 2, 4, Some(lora));
        let estimation = EstimationSummary {
            module_importance: vec![(query, 0.5), (value, 0.7), (key, 0.1)],
            rank_importance: vec![
                (query, vec![0.0; 4]),
                (value, vec![1.0, 4.0, 3.0, 2.0]),
                (key, vec![9.0; 4]),
            ],
            ..EstimationSummary::default()
        };
        // Module pruning: g = 2 · 0.4 = 0.8, τ between 0.1 and 0.5: the key goes. Ranks, global
        // over query and value: [0, 0, 0, 0, 1, 2, 3, 4], τ = 0.5, so the query loses all four.
        let mut request = PlanRequest {
            module_ratio: 0.4,
            rank_ratio: 0.5,
            ..PlanRequest::default()
        };
        let plan = plan(&shape, &estimation, &request).unwrap();
        assert_eq!(plan.peft.removed_by_module_pruning, 1);
        assert_eq!(plan.peft.removed_by_rank_pruning, 1);
        assert_eq!(plan.peft.removed_peft_proportion, Some(0.5));
        assert_eq!(plan.peft.modules.len(), 1);
        let survivor = &plan.peft.modules[0];
        assert_eq!(
            (survivor.id, survivor.kept_ranks.clone()),
            (value, vec![0, 1, 2, 3])
        );
        assert_eq!(plan.thresholds.ranks, Threshold::Global(0.5));
        // A 2-head layer of width 8: in 8, out 8.
        assert_eq!(survivor.parameters, 4 * (8 + 8));
        assert_eq!(plan.parameters_after.peft, survivor.parameters);
        assert_eq!(plan.parameters_before.peft, 3 * 4 * 16);

        // Per module: all-equal query still goes entirely; value keeps its top two.
        request.rank_method = RankScope::PerModule;
        let plan = super::plan(&shape, &estimation, &request).unwrap();
        assert_eq!(plan.peft.modules.len(), 1);
        assert_eq!(plan.peft.modules[0].kept_ranks, vec![1, 2]);
        assert_eq!(
            plan.thresholds.ranks,
            Threshold::PerModule(vec![(query, 0.0), (value, 2.5)])
        );
    }

    #[test]
    fn minilm_parameter_counts() {
        let shape = minilm();
        let estimation = estimation(&shape, 11);
        let planner = Planner::new(shape, &estimation).unwrap();
        let none = planner.plan(&PlanRequest::default()).unwrap();
        let before = none.parameters_before;
        assert_eq!(none.parameters_after, before);
        assert_eq!(
            before.encoder_layers,
            6 * (4 * 384 * 384 + 4 * 384 + 2 * 384 * 1536 + 1536 + 384 + 4 * 384)
        );
        assert_eq!(before.embeddings, (30522 + 512 + 2) * 384 + 2 * 384);
        assert_eq!(before.classifier_head, (384 * 384 + 384) + (2 * 384 + 2));
        let lora_per_layer = 4 * 8 * (384 + 384) + 2 * 8 * (384 + 1536);
        assert_eq!(before.peft, 6 * lora_per_layer);
        assert_eq!(before.trainable, before.peft + 2 * 384 + 2, "pooler frozen");
        assert_eq!(none.peft.modules.len(), 36);

        // 11 · 0.4 = 4.4: 5 of 12 heads go from every layer, 7 · 32 = 224 columns stay.
        let request = PlanRequest {
            head_ratio: 0.4,
            ..PlanRequest::default()
        };
        let plan = planner.plan(&request).unwrap();
        assert!(plan.layers.iter().all(|l| l.kept_heads.len() == 7));
        let qkv = 3 * (224 * 384 + 224);
        let attention_output = 384 * 224 + 384;
        let ffn = 2 * 384 * 1536 + 1536 + 384;
        assert_eq!(
            plan.parameters_after.encoder_layers,
            6 * (qkv + attention_output + ffn + 4 * 384)
        );
        let lora_after = 4 * 8 * (384 + 224) + 2 * 8 * (384 + 1536);
        assert_eq!(plan.parameters_after.peft, 6 * lora_after);
        let attention_out = &plan.peft.modules[3];
        assert_eq!(attention_out.id.kind, ModuleKind::AttentionOutput);
        assert_eq!((attention_out.in_dim, attention_out.out_dim), (224, 384));
    }

    #[test]
    fn random_pruning_keeps_the_counts_and_depends_on_the_seed() {
        let shape = ModelShape {
            layers: 4,
            intermediate_size: 256,
            lora: Some(all_modules(4, 8)),
            ..minilm()
        };
        let planner = Planner::new(shape.clone(), &estimation(&shape, 5)).unwrap();
        let request = PlanRequest {
            head_ratio: 0.3,
            ffn_ratio: 0.4,
            module_ratio: 0.5,
            rank_ratio: 0.5,
            ..PlanRequest::default()
        };
        let by_importance = planner.plan(&request).unwrap();
        let random = |seed| {
            planner
                .plan(&PlanRequest {
                    random: Some(seed),
                    ..request
                })
                .unwrap()
        };
        let (one, two) = (random(1), random(2));
        for plan in [&one, &two] {
            for (a, b) in plan.layers.iter().zip(&by_importance.layers) {
                assert_eq!(a.removed_heads, b.removed_heads, "layer-wise heads");
            }
            assert_eq!(plan.removed_neurons(), by_importance.removed_neurons());
            assert_eq!(
                plan.peft.removed_by_module_pruning,
                by_importance.peft.removed_by_module_pruning
            );
            assert_eq!(kept_ranks(plan), kept_ranks(&by_importance));
            // The rank τ is taken over other reserved modules, so only these must agree.
            let (t, u) = (&plan.thresholds, &by_importance.thresholds);
            assert_eq!(
                (&t.heads, &t.neurons, &t.modules),
                (&u.heads, &u.neurons, &u.modules)
            );
        }
        assert_ne!(one.layers, two.layers);
        assert_ne!(one.peft.modules, two.peft.modules);
        assert_ne!(one.layers, by_importance.layers);
        assert_eq!(one, random(1), "a seed gives one plan");

        // A larger ratio removes a superset: the draw extends, it does not reshuffle.
        let more = planner
            .plan(&PlanRequest {
                ffn_ratio: 0.6,
                random: Some(1),
                ..request
            })
            .unwrap();
        for (few, many) in one.layers.iter().zip(&more.layers) {
            assert!(
                many.kept_neurons
                    .iter()
                    .all(|n| few.kept_neurons.contains(n))
            );
            assert_eq!(few.kept_heads, many.kept_heads, "other decisions unchanged");
        }
    }

    #[test]
    fn invalid_inputs_are_named() {
        let shape = tiny(2, 2, 3, Some(all_modules(2, 2)));
        let good = estimation(&shape, 1);
        let request = PlanRequest::reference();
        assert!(plan(&shape, &good, &request).is_ok());

        for (field, value) in [
            ("head_ratio", -0.1),
            ("ffn_ratio", 1.5),
            ("rank_ratio", f64::NAN),
        ] {
            let mut bad = request;
            match field {
                "head_ratio" => bad.head_ratio = value,
                "ffn_ratio" => bad.ffn_ratio = value,
                _ => bad.rank_ratio = value,
            }
            let text = error_text(plan(&shape, &good, &bad));
            assert!(text.contains(field), "{text}");
        }

        let mut ragged = good.clone();
        ragged.head_masks[1].pop();
        let text = error_text(plan(&shape, &ragged, &request));
        assert!(
            text.contains("head_masks") && text.contains("layer 1"),
            "{text}"
        );

        let mut nan = good.clone();
        nan.neuron_masks[0][2] = f32::NAN;
        let text = error_text(plan(&shape, &nan, &request));
        assert!(
            text.contains("neuron_masks") && text.contains("index 2"),
            "{text}"
        );

        let mut missing = good.clone();
        missing.module_importance.pop();
        let text = error_text(plan(&shape, &missing, &request));
        assert!(
            text.contains("module_importance") && text.contains("missing"),
            "{text}"
        );

        let mut short = good.clone();
        short.rank_importance[0].1.pop();
        let text = error_text(plan(&shape, &short, &request));
        assert!(
            text.contains("rank_importance") && text.contains("rank is 2"),
            "{text}"
        );

        let mut foreign = good.clone();
        foreign.module_importance[0].0.layer = 5;
        assert!(error_text(plan(&shape, &foreign, &request)).contains("not a LoRA module"));

        let mut twice = good.clone();
        twice.rank_importance[1].0 = twice.rank_importance[0].0;
        assert!(error_text(plan(&shape, &twice, &request)).contains("listed twice"));

        // Absent records are fine until a ratio needs them.
        let masks_only = EstimationSummary {
            module_importance: Vec::new(),
            rank_importance: Vec::new(),
            ..good.clone()
        };
        let text = error_text(plan(&shape, &masks_only, &request));
        assert!(
            text.contains("module_ratio") && text.contains("module importances"),
            "{text}"
        );
        let fm_only = PlanRequest {
            module_ratio: 0.0,
            rank_ratio: 0.0,
            ..request
        };
        assert!(plan(&shape, &masks_only, &fm_only).is_ok());
        let no_lora = ModelShape {
            lora: None,
            ..shape.clone()
        };
        assert!(error_text(plan(&no_lora, &masks_only, &request)).contains("no LoRA modules"));
        assert!(error_text(plan(&no_lora, &good, &fm_only)).contains("no LoRA modules"));

        let uneven = ModelShape {
            hidden_size: 7,
            ..shape
        };
        assert!(error_text(plan(&uneven, &good, &fm_only)).contains("model shape"));
    }

    #[test]
    fn aggregation_uses_the_second_half_and_zeroes_non_finite_values() {
        let steps = vec![
            vec![100.0, 100.0],
            vec![100.0, 100.0],
            vec![1.0, f64::NAN],
            vec![2.0, 4.0],
            vec![3.0, f64::INFINITY],
        ];
        // floor(5 / 2) = 2: steps 2, 3, 4; the non-finite entries count as zeros.
        assert_eq!(aggregate_importance(&steps).unwrap(), vec![2.0, 4.0 / 3.0]);
        assert_eq!(aggregate_importance(&[[5.0]]).unwrap(), vec![5.0]);
        assert!(aggregate_importance::<Vec<f64>>(&[]).is_err());
        let ragged = vec![vec![1.0, 2.0], vec![1.0]];
        let text = aggregate_importance(&ragged).unwrap_err().to_string();
        assert!(text.contains("step 1"), "{text}");
    }

    #[test]
    fn plans_round_trip_through_json() {
        let shape = tiny(2, 2, 3, Some(all_modules(2, 2)));
        let plan = plan(&shape, &estimation(&shape, 3), &PlanRequest::reference()).unwrap();
        let json = serde_json::to_string(&plan).unwrap();
        let back: PruningPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (&back.layers, &back.peft, back.parameters_after),
            (&plan.layers, &plan.peft, plan.parameters_after)
        );
        // serde_json parses floats to within an ulp unless its `float_roundtrip` feature is on.
        let (Threshold::PerLayer(read), Threshold::PerLayer(written)) =
            (&back.thresholds.heads, &plan.thresholds.heads)
        else {
            panic!("heads are planned layer-wise: {:?}", back.thresholds.heads);
        };
        for (r, w) in read.iter().zip(written) {
            assert!(r.to_bits().abs_diff(w.to_bits()) <= 1, "{r} != {w}");
        }
        let request: PlanRequest = serde_json::from_str(r#"{"head_ratio": 0.5}"#).unwrap();
        assert_eq!(request.ffn_method, PruningScope::Global);
        assert_eq!(request.head_method, PruningScope::Layerwise);
    }
}
