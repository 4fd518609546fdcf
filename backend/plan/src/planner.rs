//! [`Planner`]: stage-1 records validated and sorted once, then any number of plans, each
//! deciding heads, FFN neurons, modules and ranks in the reference's order (§5.7).

use crate::error::{Result, invalid};
use crate::rank::{Grouped, Ranked, Stream, UnitSelection, kept_per_group, select_units, stream};
use crate::validate::{mask_ranking, per_module};
use crate::{
    EstimationSummary, LayerPlan, ModelShape, ModuleId, ModulePlan, PeftPlan, PlanRequest,
    PruningPlan, RankScope, Threshold, Thresholds,
};

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

        let full = shape.full_widths();
        let peft_before = shape.lora_parameters(&full, shape.full_lora());
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

    /// Heads (§5.2) or FFN neurons (§5.3): the kept indices of each layer, decided by
    /// [`crate::pruned_units`]'s rule.
    fn prune_units(
        &self,
        unit: Unit,
        request: &PlanRequest,
    ) -> Result<(Threshold, Vec<Vec<usize>>)> {
        let (ranking, width) = match unit {
            Unit::Heads => (self.heads.as_ref(), self.shape.heads),
            Unit::Neurons => (self.neurons.as_ref(), self.shape.intermediate_size),
        };
        let selection = request.selection(unit);
        let Some(ranking) = ranking else {
            if selection.ratio == 0.0 {
                // Nothing to rank and nothing asked: every unit stays.
                return Ok((
                    Threshold::Skipped,
                    vec![(0..width).collect(); self.shape.layers],
                ));
            }
            return Err(invalid(unit.ratio_name(), unit.missing_record()));
        };
        let random = request.random.map(|seed| (seed, unit.stream()));
        Ok(select_units(ranking, &selection, random))
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
        let random = request.random.map(|seed| stream(seed, Stream::Modules, 0));
        let decided = ranking.decide(request.module_ratio, random, || {
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

impl PlanRequest {
    /// The part of this request that decides heads by importance, for [`crate::pruned_units`].
    pub fn head_selection(&self) -> UnitSelection {
        self.selection(Unit::Heads)
    }

    /// The part of this request that decides FFN neurons by importance, for
    /// [`crate::pruned_units`].
    pub fn ffn_selection(&self) -> UnitSelection {
        self.selection(Unit::Neurons)
    }

    fn selection(&self, unit: Unit) -> UnitSelection {
        let (ratio, scope) = match unit {
            Unit::Heads => (self.head_ratio, self.head_method),
            Unit::Neurons => (self.ffn_ratio, self.ffn_method),
        };
        UnitSelection {
            ratio,
            scope,
            keep_at_least_one: self.keep_at_least_one,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::*;
    use crate::{LoraShape, ModuleKind, PruningScope};

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
