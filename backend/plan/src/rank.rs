//! Ranking and deciding: the quantile rule applied to one group or to many, the random draw of
//! the ablation, and which heads or FFN neurons a ratio prunes. [`pruned_units`] is the same
//! decision [`crate::Planner::plan`] takes for heads and neurons, for callers that hold mask
//! values rather than a planner (the convergence signal over mask snapshots).

use crate::error::Result;
use crate::quantile::{QuantileValue, compare, quantile_of_sorted};
use crate::rng::{SplitMix64, mix};
use crate::validate::{check_fraction, mask_ranking};
use crate::{PruningScope, Threshold};

/// How one decision over heads or FFN neurons is taken: the importance rule's part of a
/// [`crate::PlanRequest`] for that unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitSelection {
    /// Fraction removed, in [0, 1]; 0 removes nothing.
    pub ratio: f64,
    /// One threshold per layer or one over all layers.
    pub scope: PruningScope,
    /// Every layer keeps at least its highest-valued unit (see
    /// [`crate::PlanRequest::keep_at_least_one`]).
    pub keep_at_least_one: bool,
}

/// Which units of a `[layer][unit]` mask table `selection` prunes, flattened layer by layer:
/// `τ = numpy.quantile(values, ratio)` per layer or over all, values at or below τ pruned
/// (ties included), exactly as [`crate::Planner::plan`] decides heads and neurons by
/// importance. Fails for a ratio outside [0, 1], ragged rows or non-finite values, as the
/// planner does; an empty table prunes nothing.
pub fn pruned_units(masks: &[Vec<f32>], selection: &UnitSelection) -> Result<Vec<bool>> {
    check_fraction("ratio", selection.ratio)?;
    let width = masks.first().map_or(0, Vec::len);
    let Some(ranking) = mask_ranking("masks", masks, masks.len(), width)? else {
        return Ok(Vec::new());
    };
    if width == 0 {
        return Ok(Vec::new());
    }
    let (_, kept) = select_units(&ranking, selection, None);
    let mut pruned = vec![true; masks.len() * width];
    for (layer, kept) in kept.iter().enumerate() {
        for &unit in kept {
            pruned[layer * width + unit] = false;
        }
    }
    Ok(pruned)
}

/// The one head/neuron decision: the threshold and the kept indices of every layer of
/// `ranking` (heads or neurons, `width` per layer). `random` draws the same count at random.
pub(crate) fn select_units(
    ranking: &Grouped<f32>,
    selection: &UnitSelection,
    random: Option<(u64, Stream)>,
) -> (Threshold, Vec<Vec<usize>>) {
    let (layers, width) = (ranking.groups.len(), ranking.width);
    if selection.ratio == 0.0 {
        return (Threshold::Skipped, vec![(0..width).collect(); layers]);
    }
    let global = selection.scope == PruningScope::Global;
    let decided = ranking.decide(&vec![true; layers], selection.ratio, global, random);
    let threshold = if global {
        decided.global_threshold()
    } else {
        Threshold::PerLayer(decided.thresholds)
    };
    let kept = kept_per_group(layers, width, &decided.pruned, selection.keep_at_least_one);
    (threshold, kept)
}

/// Which decision a random stream belongs to: each has its own, so one decision's draws never
/// depend on another's.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Heads = 1,
    Neurons = 2,
    Modules = 3,
    Ranks = 4,
}

/// The stream of one group of one decision, hashed from the seed so streams do not overlap.
pub(crate) fn stream(seed: u64, stream: Stream, group: usize) -> SplitMix64 {
    let decision = mix(seed.wrapping_add((stream as u64).wrapping_mul(SplitMix64::GAMMA)));
    SplitMix64::new(mix(decision.wrapping_add(group as u64)))
}

/// One group's elements sorted once, least important first: ascending value, and among equal
/// values the higher index first, so the last element of a group is its highest-valued one with
/// the lowest index (the one `keep_at_least_one` keeps).
#[derive(Debug, Clone)]
pub(crate) struct Ranked<T> {
    values: Vec<T>,
    ids: Vec<usize>,
}

/// What one decision over one group removes.
pub(crate) struct Decision {
    pub(crate) threshold: f64,
    /// In pruning order: least important first, or the order of the random draw.
    pub(crate) pruned: Vec<usize>,
}

impl<T: QuantileValue> Ranked<T> {
    pub(crate) fn new(entries: impl Iterator<Item = (usize, T)>) -> Self {
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
    pub(crate) fn decide(
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
pub(crate) struct Grouped<T> {
    width: usize,
    all: Ranked<T>,
    groups: Vec<Ranked<T>>,
}

/// The decisions over some groups of a [`Grouped`] record.
pub(crate) struct GroupedDecision {
    /// One per decided group, or at most one for a global decision.
    pub(crate) thresholds: Vec<f64>,
    pub(crate) pruned: Vec<usize>,
}

impl GroupedDecision {
    pub(crate) fn global_threshold(&self) -> Threshold {
        self.thresholds
            .first()
            .map_or(Threshold::Skipped, |&t| Threshold::Global(t))
    }
}

impl<T: QuantileValue> Grouped<T> {
    pub(crate) fn new(rows: &[Vec<T>], width: usize) -> Self {
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
    pub(crate) fn decide(
        &self,
        active: &[bool],
        ratio: f64,
        global: bool,
        random: Option<(u64, Stream)>,
    ) -> GroupedDecision {
        let width = self.width;
        let group_ids = |group: usize| group * width..(group + 1) * width;
        let stream = |group: usize| random.map(|(seed, s)| stream(seed, s, group));
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
pub(crate) fn kept_per_group(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::tests::tiny;
    use crate::{EstimationSummary, PlanRequest, Planner};

    /// A mask table with many ties: values drawn from a few levels.
    fn table(rng: &mut SplitMix64, layers: usize, width: usize, levels: usize) -> Vec<Vec<f32>> {
        (0..layers)
            .map(|_| {
                (0..width)
                    .map(|_| rng.below(levels) as f32 * 0.125 - 0.5)
                    .collect()
            })
            .collect()
    }

    fn flags(layers: &[Vec<usize>], width: usize) -> Vec<bool> {
        let mut pruned = vec![true; layers.len() * width];
        for (l, kept) in layers.iter().enumerate() {
            kept.iter().for_each(|&k| pruned[l * width + k] = false);
        }
        pruned
    }

    #[test]
    fn pruned_units_are_the_planners_heads_and_neurons() {
        let mut rng = SplitMix64::new(17);
        for case in 0..300 {
            let (layers, heads, ffn) = (1 + rng.below(4), 1 + rng.below(16), 1 + rng.below(40));
            let levels = [2, 5, 1000][case % 3];
            let estimation = EstimationSummary {
                head_masks: table(&mut rng, layers, heads, levels),
                neuron_masks: table(&mut rng, layers, ffn, levels),
                ..EstimationSummary::default()
            };
            let planner = Planner::new(tiny(layers, heads, ffn, None), &estimation).unwrap();
            let ratios = [0.0, 0.1, 0.25, 1.0 / 3.0, 0.5, 0.9, 1.0];
            let scopes = [PruningScope::Layerwise, PruningScope::Global];
            let request = PlanRequest {
                head_ratio: ratios[rng.below(ratios.len())],
                ffn_ratio: ratios[rng.below(ratios.len())],
                head_method: scopes[rng.below(2)],
                ffn_method: scopes[rng.below(2)],
                keep_at_least_one: rng.below(2) == 1,
                ..PlanRequest::default()
            };
            let plan = planner.plan(&request).unwrap();
            let kept_heads: Vec<Vec<usize>> =
                plan.layers.iter().map(|l| l.kept_heads.clone()).collect();
            let kept_neurons: Vec<Vec<usize>> =
                plan.layers.iter().map(|l| l.kept_neurons.clone()).collect();
            assert_eq!(
                pruned_units(&estimation.head_masks, &request.head_selection()).unwrap(),
                flags(&kept_heads, heads),
                "case {case}: heads, {request:?}"
            );
            assert_eq!(
                pruned_units(&estimation.neuron_masks, &request.ffn_selection()).unwrap(),
                flags(&kept_neurons, ffn),
                "case {case}: neurons, {request:?}"
            );
        }
    }

    #[test]
    fn a_tenth_of_twelve_heads_is_two_and_ties_go_together() {
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let selection = UnitSelection {
            ratio: 0.1,
            scope: PruningScope::Layerwise,
            keep_at_least_one: false,
        };
        // Virtual index 11 · 0.1 = 1.1: τ lies between v₁ and v₂, so v₀ and v₁ go.
        let pruned = pruned_units(&[values.clone(), values], &selection).unwrap();
        assert_eq!(pruned.iter().filter(|&&p| p).count(), 4);
        assert!(pruned[0] && pruned[1] && !pruned[2] && pruned[12] && pruned[13]);

        let tied = vec![vec![0.3, 0.1, 0.1, 0.1, 0.9]];
        let pruned = pruned_units(&tied, &selection).unwrap();
        assert_eq!(pruned, vec![false, true, true, true, false]);
        let all = UnitSelection {
            ratio: 1.0,
            keep_at_least_one: true,
            ..selection
        };
        assert_eq!(
            pruned_units(&tied, &all).unwrap(),
            vec![true, true, true, true, false],
            "the highest value stays"
        );
        let none = UnitSelection {
            ratio: 0.0,
            ..selection
        };
        assert_eq!(pruned_units(&tied, &none).unwrap(), vec![false; 5]);
    }

    #[test]
    fn pruned_units_refuses_what_the_planner_refuses() {
        let selection = UnitSelection {
            ratio: 0.5,
            scope: PruningScope::Global,
            keep_at_least_one: false,
        };
        assert!(pruned_units(&[], &selection).unwrap().is_empty());
        assert!(
            pruned_units(&[vec![], vec![]], &selection)
                .unwrap()
                .is_empty()
        );
        let ragged = pruned_units(&[vec![0.1, 0.2], vec![0.3]], &selection).unwrap_err();
        assert!(ragged.to_string().contains("layer 1"), "{ragged}");
        let nan = pruned_units(&[vec![0.1, f32::NAN]], &selection).unwrap_err();
        assert!(nan.to_string().contains("index 1"), "{nan}");
        let bad = UnitSelection {
            ratio: 1.5,
            ..selection
        };
        assert!(
            pruned_units(&[vec![0.1]], &bad)
                .unwrap_err()
                .to_string()
                .contains("ratio")
        );
    }
}
