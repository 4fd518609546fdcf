//! Light-PEFT's pruning planner (light-peft-spec §5): which attention heads, FFN neurons, LoRA
//! modules and LoRA rank dimensions survive, decided from the stage-1 results by the
//! reference's quantile rule, what that does to the parameter count, and what it saves per
//! training step.
//!
//! Plain data in, plain data out: no tensors, no I/O, no threads, and only serde and thiserror
//! as dependencies, so the same code runs in the engine, the server and the browser (the crate
//! builds for wasm32). Every Light-PEFT rule lives here once: the server's convergence signal
//! asks [`pruned_units`] which units a ratio prunes, the preview asks
//! [`ModelShape::step_time_ratio`] what a plan saves. A [`Planner`] validates and sorts the
//! stage-1 records once; each [`Planner::plan`] is then linear in their size, cheap enough to
//! run on every slider move.
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

#![warn(missing_docs)]

mod counts;
mod error;
mod layout;
mod memory;
mod planner;
mod quantile;
mod rank;
pub mod rng;
pub mod study;
mod validate;

use serde::{Deserialize, Serialize};

pub use error::{Error, Result};
pub use layout::{Architecture, ModuleId, ModuleKind};
pub use memory::{MemoryEstimate, MemoryInputs, Peak};
pub use planner::{Planner, plan};
pub use quantile::{QuantileValue, aggregate_importance, numpy_quantile};
pub use rank::{UnitSelection, pruned_units};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PruningScope {
    /// One threshold per layer: every layer loses the same number (barring ties).
    Layerwise,
    /// One threshold over all layers: a layer can lose everything.
    Global,
}

/// How to rank the rank dimensions of the LoRA modules that survive module pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The reference's model: RoBERTa-large, 2 labels, LoRA r=8 on all six linears (§0, §2.1).
    pub(crate) fn roberta_large() -> ModelShape {
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
    pub(crate) fn minilm() -> ModelShape {
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
    pub(crate) fn tiny(
        layers: usize,
        heads: usize,
        ffn: usize,
        lora: Option<LoraShape>,
    ) -> ModelShape {
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

    pub(crate) fn all_modules(layers: usize, rank: usize) -> LoraShape {
        LoraShape {
            rank,
            modules: (0..layers)
                .flat_map(|layer| ModuleKind::ALL.map(|kind| ModuleId { layer, kind }))
                .collect(),
        }
    }

    /// `n` distinct values in random order (a shuffled 0..n), so no rule can hide behind ties.
    pub(crate) fn distinct(n: usize, seed: u64) -> Vec<f64> {
        let mut pool: Vec<usize> = (0..n).collect();
        crate::rng::SplitMix64::new(seed).shuffle_prefix(&mut pool, n);
        pool.into_iter().map(|v| v as f64).collect()
    }

    pub(crate) fn rows_f32(values: &[f64], width: usize) -> Vec<Vec<f32>> {
        values
            .chunks(width)
            .map(|row| row.iter().map(|&v| v as f32).collect())
            .collect()
    }

    /// Distinct random masks and importances for every record of `shape`.
    pub(crate) fn estimation(shape: &ModelShape, seed: u64) -> EstimationSummary {
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

    pub(crate) fn kept_ranks(plan: &PruningPlan) -> usize {
        plan.peft.modules.iter().map(|m| m.kept_ranks.len()).sum()
    }

    pub(crate) fn without_peft(p: &ParameterCounts) -> usize {
        p.embeddings + p.encoder_layers + p.classifier_head
    }

    pub(crate) fn error_text(result: Result<PruningPlan>) -> String {
        result.expect_err("the plan should fail").to_string()
    }
}
