//! What a plan costs: parameter counts (§5.8) and the FLOP-based estimate of a stage-2 step.
//! Both measure a LoRA module by [`ModelShape::module_dims`], so the unpruned side and the
//! pruned side of a comparison can only differ by what the plan removed.

use crate::error::{Result, invalid};
use crate::{Architecture, ModelShape, ModuleId, ModuleKind, ParameterCounts, PruningPlan};

impl ModelShape {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.heads
    }

    /// `(in, out)` of a module's linear layer when its layer keeps `heads` heads and `ffn`
    /// neurons (§5.2, §5.3, §5.6).
    pub fn module_dims(&self, kind: ModuleKind, heads: usize, ffn: usize) -> (usize, usize) {
        let d = self.hidden_size;
        let attention = heads * self.head_dim();
        match kind {
            ModuleKind::Query | ModuleKind::Key | ModuleKind::Value => (d, attention),
            ModuleKind::AttentionOutput => (attention, d),
            ModuleKind::Intermediate => (d, ffn),
            ModuleKind::Output => (ffn, d),
        }
    }

    /// `(heads, neurons)` of every layer of the unpruned encoder.
    pub(crate) fn full_widths(&self) -> Vec<(usize, usize)> {
        vec![(self.heads, self.intermediate_size); self.layers]
    }

    /// The stage-1 LoRA modules, each at the full rank.
    pub(crate) fn full_lora(&self) -> impl Iterator<Item = (ModuleId, usize)> + '_ {
        self.lora
            .iter()
            .flat_map(|l| l.modules.iter().map(|&id| (id, l.rank)))
    }

    /// LoRA A and B entries of `modules` (`(id, kept ranks)`) on layers of `widths`.
    pub(crate) fn lora_parameters(
        &self,
        widths: &[(usize, usize)],
        modules: impl Iterator<Item = (ModuleId, usize)>,
    ) -> usize {
        modules
            .map(|(id, rank)| {
                let (heads, ffn) = widths[id.layer];
                let (in_dim, out_dim) = self.module_dims(id.kind, heads, ffn);
                rank * (in_dim + out_dim)
            })
            .sum()
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

    pub(crate) fn counts(&self, layers: &[(usize, usize)], peft: usize) -> ParameterCounts {
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

    /// Estimated multiply-adds per token of one stage-2 training step of `plan` at `seq_len`
    /// tokens. The frozen encoder layers cost their forward pass twice (the backward pass
    /// through activations is about the forward again; frozen weights get no gradient); LoRA
    /// costs its forward three times (forward, input gradient, weight gradient). Embeddings and
    /// the classifier head are the same before and after pruning and are left out, so a ratio
    /// of two costs slightly favours pruning. Fails for a plan made for another shape.
    pub fn step_cost(&self, plan: &PruningPlan, seq_len: usize) -> Result<f64> {
        if plan.layers.len() != self.layers {
            return Err(invalid(
                "plan",
                format!(
                    "it has {} layers, the model shape {}",
                    plan.layers.len(),
                    self.layers
                ),
            ));
        }
        let widths: Vec<(usize, usize)> = plan
            .layers
            .iter()
            .map(|l| (l.kept_heads.len(), l.kept_neurons.len()))
            .collect();
        if let Some(m) = plan.peft.modules.iter().find(|m| m.id.layer >= self.layers) {
            return Err(invalid(
                "plan",
                format!(
                    "LoRA module {} is beyond the {} layers",
                    m.id.name(),
                    self.layers
                ),
            ));
        }
        let lora = plan.peft.modules.iter().map(|m| (m.id, m.kept_ranks.len()));
        Ok(self.cost(&widths, lora, seq_len))
    }

    /// [`ModelShape::step_cost`] of the unpruned model with every stage-1 LoRA module at full
    /// rank: what a plan that removes nothing costs.
    pub fn unpruned_step_cost(&self, seq_len: usize) -> f64 {
        self.cost(&self.full_widths(), self.full_lora(), seq_len)
    }

    /// Estimated stage-2 step time of `plan` over the unpruned model's (1.0 for a plan that
    /// removes nothing, below 1 when pruning saves work).
    pub fn step_time_ratio(&self, plan: &PruningPlan, seq_len: usize) -> Result<f64> {
        let before = self.unpruned_step_cost(seq_len);
        let after = self.step_cost(plan, seq_len)?;
        Ok(if before == 0.0 { 1.0 } else { after / before })
    }

    /// Both sides of [`ModelShape::step_time_ratio`]: layers of `widths` with the LoRA
    /// `modules` (`(id, kept ranks)`).
    fn cost(
        &self,
        widths: &[(usize, usize)],
        modules: impl Iterator<Item = (ModuleId, usize)>,
        seq_len: usize,
    ) -> f64 {
        let d = self.hidden_size as f64;
        let head_dim = self.head_dim() as f64;
        let tokens = seq_len as f64;
        let layers: f64 = widths
            .iter()
            .map(|&(heads, ffn)| {
                let attention = heads as f64 * head_dim;
                // Q, K, V and the output projection; scores and context; the two FFN matrices.
                4.0 * d * attention + 2.0 * tokens * attention + 2.0 * d * ffn as f64
            })
            .sum();
        // A LoRA module's forward is r·(in + out) per token, the size of its A and B.
        let lora = self.lora_parameters(widths, modules) as f64;
        2.0 * layers + 3.0 * lora
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::{all_modules, estimation, minilm};
    use crate::{PlanRequest, Planner};

    #[test]
    fn a_plan_that_removes_nothing_costs_exactly_the_unpruned_step() {
        let shape = minilm();
        let planner = Planner::new(shape.clone(), &estimation(&shape, 4)).unwrap();
        let none = planner.plan(&PlanRequest::default()).unwrap();
        for seq in [1, 128, 512] {
            assert_eq!(shape.step_time_ratio(&none, seq).unwrap(), 1.0, "seq {seq}");
        }
        // Only the FFN-side LoRA modules on: their width is d + ffn, not 2d.
        let ffn_only = crate::ModelShape {
            lora: Some(crate::LoraShape {
                modules: all_modules(6, 8)
                    .modules
                    .into_iter()
                    .filter(|id| id.kind >= crate::ModuleKind::Intermediate)
                    .collect(),
                ..all_modules(6, 8)
            }),
            ..shape
        };
        let planner = Planner::new(ffn_only.clone(), &estimation(&ffn_only, 4)).unwrap();
        let none = planner.plan(&PlanRequest::default()).unwrap();
        assert_eq!(ffn_only.step_time_ratio(&none, 128).unwrap(), 1.0);
    }

    #[test]
    fn the_estimate_counts_what_the_plan_removes() {
        let shape = minilm();
        let planner = Planner::new(shape.clone(), &estimation(&shape, 4)).unwrap();
        let seq = 64;
        // All FFN neurons gone: the FFN matrices and the FFN-side LoRA width go with them.
        let no_ffn = planner
            .plan(&PlanRequest {
                ffn_ratio: 1.0,
                ..PlanRequest::default()
            })
            .unwrap();
        let (d, f, r, heads) = (384.0, 1536.0, 8.0, 12.0 * 32.0);
        let attention = 4.0 * d * heads + 2.0 * seq as f64 * heads;
        let lora_attention = 4.0 * r * (d + d);
        let before =
            6.0 * (2.0 * (attention + 2.0 * d * f) + 3.0 * (lora_attention + 2.0 * r * (d + f)));
        let after = 6.0 * (2.0 * attention + 3.0 * (lora_attention + 2.0 * r * d));
        assert_eq!(shape.unpruned_step_cost(seq), before);
        assert_eq!(shape.step_cost(&no_ffn, seq).unwrap(), after);
        let ratio = shape.step_time_ratio(&no_ffn, seq).unwrap();
        assert!((ratio - after / before).abs() < 1e-15, "{ratio}");

        let mut foreign = no_ffn.clone();
        foreign.layers.pop();
        assert!(shape.step_cost(&foreign, seq).is_err());
    }
}
