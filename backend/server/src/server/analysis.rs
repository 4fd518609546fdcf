//! Pure functions behind the read endpoints: downsampling, heatmap binning and the bookkeeping
//! of the convergence signal. Which units a ratio prunes and what a plan saves are the
//! planner's rules (`lightpeft_engine::plan`); nothing here decides either.

use lightpeft_api::Hyperparams;
use lightpeft_api::rest::MaskKind;
use lightpeft_engine::plan::{PruningScope, UnitSelection, pruned_units};
use std::collections::BTreeMap;

/// Indices of at most `max` points spread evenly over `len`, always keeping the last.
pub fn downsample(len: usize, max: usize) -> Vec<usize> {
    if len == 0 {
        return Vec::new();
    }
    if max == 0 || len <= max {
        return (0..len).collect();
    }
    if max == 1 {
        return vec![len - 1];
    }
    let mut idx: Vec<usize> = (0..max).map(|i| i * (len - 1) / (max - 1)).collect();
    idx.dedup();
    idx
}

/// One heatmap row: `values` averaged over `bins` equal-width bins (0 bins or more bins than
/// values keeps every value). `sorted` sorts ascending first. Returns (means, widths).
pub fn bin_row(values: &[f32], bins: usize, sorted: bool) -> (Vec<f32>, Vec<i64>) {
    let mut v = values.to_vec();
    if sorted {
        v.sort_by(f32::total_cmp);
    }
    if bins == 0 || bins >= v.len() {
        let widths = vec![1; v.len()];
        return (v, widths);
    }
    let mut means = Vec::with_capacity(bins);
    let mut widths = Vec::with_capacity(bins);
    for b in 0..bins {
        let (lo, hi) = (b * v.len() / bins, (b + 1) * v.len() / bins);
        let chunk = &v[lo..hi];
        means.push(chunk.iter().sum::<f32>() / chunk.len().max(1) as f32);
        widths.push(chunk.len() as i64);
    }
    (means, widths)
}

/// What decides a pruned set: the job, the mask kind and the planner's selection for that kind
/// (ratio, scope, keep-one guard), held as bits so the key can be compared exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetKey {
    pub job: i64,
    pub kind: MaskKind,
    ratio_bits: u64,
    scope: PruningScope,
    keep_at_least_one: bool,
}

impl SetKey {
    /// The key of `job`'s `kind` masks under `selection`.
    pub fn new(job: i64, kind: MaskKind, selection: UnitSelection) -> Self {
        SetKey {
            job,
            kind,
            ratio_bits: selection.ratio.to_bits(),
            scope: selection.scope,
            keep_at_least_one: selection.keep_at_least_one,
        }
    }

    /// The planner's selection this key stands for.
    pub fn selection(&self) -> UnitSelection {
        UnitSelection {
            ratio: f64::from_bits(self.ratio_bits),
            scope: self.scope,
            keep_at_least_one: self.keep_at_least_one,
        }
    }

    /// The units the planner would prune from one `[layer][unit]` snapshot under this key.
    pub fn pruned(&self, masks: &[Vec<f32>]) -> lightpeft_engine::plan::Result<Vec<bool>> {
        pruned_units(masks, &self.selection())
    }
}

/// The keys of the convergence signal of `job`: the experiment's pruning settings (methods,
/// keep-one guard) with the chart's head and FFN ratios, decided as a plan would decide them.
pub fn set_keys(job: i64, params: &Hyperparams, head_ratio: f64, ffn_ratio: f64) -> [SetKey; 2] {
    let request = lightpeft_pipeline::plan_request(params);
    [
        SetKey::new(
            job,
            MaskKind::Head,
            UnitSelection {
                ratio: head_ratio,
                ..request.head_selection()
            },
        ),
        SetKey::new(
            job,
            MaskKind::Neuron,
            UnitSelection {
                ratio: ffn_ratio,
                ..request.ffn_selection()
            },
        ),
    ]
}

/// Pruned sets per snapshot step, kept between requests so that a live run's convergence
/// chart costs only its new steps. Snapshots never change once written (retention only
/// deletes them), so a cached set stays right for as long as its step exists. Holds the few
/// most recently used keys.
#[derive(Default)]
pub struct SetCache {
    entries: std::collections::VecDeque<(SetKey, BTreeMap<i64, Vec<bool>>)>,
}

impl SetCache {
    /// Keys kept; each holds one set per kept snapshot (a few MiB at MiniLM's 9,216 neurons).
    const KEYS: usize = 8;

    /// Takes the sets of `key` out of the cache (empty if absent), to be filled and put back.
    pub fn take(&mut self, key: SetKey) -> BTreeMap<i64, Vec<bool>> {
        match self.entries.iter().position(|(k, _)| *k == key) {
            Some(i) => self.entries.remove(i).expect("present").1,
            None => BTreeMap::new(),
        }
    }

    /// Puts sets back as the most recently used, dropping the least recently used beyond
    /// [`SetCache::KEYS`].
    pub fn put(&mut self, key: SetKey, sets: BTreeMap<i64, Vec<bool>>) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push_front((key, sets));
        self.entries.truncate(Self::KEYS);
    }

    /// Forgets every set of a deleted job.
    pub fn forget_job(&mut self, job: i64) {
        self.entries.retain(|(k, _)| k.job != job);
    }
}

/// Jaccard distance of two pruned sets (0: the same units; 1: disjoint).
pub fn set_distance(a: &[bool], b: &[bool]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        inter += (*x && *y) as usize;
        union += (*x || *y) as usize;
    }
    if union == 0 {
        0.0
    } else {
        1.0 - inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightpeft_engine::Architecture;
    use lightpeft_engine::plan::{EstimationSummary, ModelShape, Planner};

    #[test]
    fn the_set_cache_keeps_the_most_recent_keys_and_forgets_deleted_jobs() {
        let key = |job, ratio: f64| {
            let selection = UnitSelection {
                ratio,
                scope: PruningScope::Global,
                keep_at_least_one: false,
            };
            SetKey::new(job, MaskKind::Head, selection)
        };
        let mut cache = SetCache::default();
        let sets = |step| BTreeMap::from([(step, vec![true, false])]);
        for job in 0..SetCache::KEYS as i64 + 2 {
            cache.put(key(job, 0.5), sets(job));
        }
        // The two oldest fell out; the others come back as they were put.
        assert!(cache.take(key(0, 0.5)).is_empty());
        assert!(cache.take(key(1, 0.5)).is_empty());
        assert_eq!(cache.take(key(2, 0.5)), sets(2));
        // A different ratio is a different key.
        assert!(cache.take(key(3, 0.25)).is_empty());
        cache.put(key(3, 0.25), sets(9));
        cache.forget_job(3);
        assert!(cache.take(key(3, 0.25)).is_empty());
        assert!(cache.take(key(3, 0.5)).is_empty());
        assert_eq!(cache.take(key(4, 0.5)), sets(4));
    }

    #[test]
    fn downsampling_spreads_and_keeps_the_last_point() {
        assert_eq!(downsample(10, 0), (0..10).collect::<Vec<_>>());
        assert_eq!(downsample(10, 4), vec![0, 3, 6, 9]);
        assert_eq!(downsample(800, 100).len(), 100);
        assert_eq!(*downsample(800, 100).last().unwrap(), 799);
        assert_eq!(downsample(5, 1), vec![4]);
        assert!(downsample(0, 3).is_empty());
    }

    #[test]
    fn bins_average_and_report_widths() {
        let (m, w) = bin_row(&[1.0, 3.0, 5.0, 7.0, 9.0], 2, false);
        assert_eq!(m, vec![2.0, 7.0]);
        assert_eq!(w, vec![2, 3]);
        let (m, w) = bin_row(&[3.0, 1.0, 2.0], 0, true);
        assert_eq!(m, vec![1.0, 2.0, 3.0]);
        assert_eq!(w, vec![1, 1, 1]);
    }

    fn key(scope: PruningScope, ratio: f64) -> SetKey {
        let selection = UnitSelection {
            ratio,
            scope,
            keep_at_least_one: false,
        };
        SetKey::new(1, MaskKind::Head, selection)
    }

    #[test]
    fn pruned_sets_and_their_distance() {
        let a = key(PruningScope::Global, 0.5)
            .pruned(&[vec![0.1, 0.9], vec![0.2, 0.8]])
            .unwrap();
        assert_eq!(a, vec![true, false, true, false]);
        let b = key(PruningScope::Layerwise, 0.5)
            .pruned(&[vec![0.1, 0.9], vec![0.9, 0.2]])
            .unwrap();
        assert_eq!(b, vec![true, false, false, true]);
        assert!((set_distance(&a, &b) - (1.0 - 1.0 / 3.0)).abs() < 1e-12);
        assert_eq!(set_distance(&a, &a), 0.0);
    }

    /// A small deterministic generator for the tables below (SplitMix64's mixer).
    struct Draw(u64);

    impl Draw {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            (lightpeft_engine::plan::rng::mix(self.0) % n as u64) as usize
        }

        fn table(&mut self, layers: usize, width: usize, levels: usize) -> Vec<Vec<f32>> {
            (0..layers)
                .map(|_| {
                    (0..width)
                        .map(|_| self.below(levels) as f32 / 7.0)
                        .collect()
                })
                .collect()
        }
    }

    fn shape(layers: usize, heads: usize, ffn: usize) -> ModelShape {
        ModelShape {
            architecture: Architecture::Bert,
            layers,
            heads,
            hidden_size: 8 * heads,
            intermediate_size: ffn,
            vocab_size: 16,
            max_position_embeddings: 16,
            type_vocab_size: 2,
            num_labels: 2,
            lora: None,
        }
    }

    /// A set as the planner reports it: every unit not in a layer's kept list.
    fn removed(kept: impl Iterator<Item = Vec<usize>>, width: usize) -> Vec<bool> {
        kept.flat_map(|kept| (0..width).map(move |i| !kept.contains(&i)))
            .collect()
    }

    #[test]
    fn the_convergence_sets_are_the_planners_removed_units() {
        let mut draw = Draw(2024);
        let ratios = [0.0, 0.1, 0.2, 0.25, 1.0 / 3.0, 0.5, 0.75, 0.9, 1.0];
        let methods = [PruningScope::Layerwise, PruningScope::Global];
        for case in 0..400 {
            let (layers, heads) = (1 + draw.below(6), 1 + draw.below(16));
            let ffn = 1 + draw.below(64);
            // Few levels make many ties; many levels make nearly distinct values.
            let levels = [1, 3, 8, 10_000][case % 4];
            let estimation = EstimationSummary {
                head_masks: draw.table(layers, heads, levels),
                neuron_masks: draw.table(layers, ffn, levels),
                ..EstimationSummary::default()
            };
            let params = Hyperparams {
                head_method: methods[draw.below(2)],
                ffn_method: methods[draw.below(2)],
                keep_at_least_one: draw.below(2) == 1,
                head_ratio: ratios[draw.below(ratios.len())],
                ffn_ratio: ratios[draw.below(ratios.len())],
                // The shapes carry no LoRA: no module or rank pruning to plan.
                module_ratio: 0.0,
                rank_ratio: 0.0,
                ..Hyperparams::default()
            };

            let planner = Planner::new(shape(layers, heads, ffn), &estimation).unwrap();
            let plan = planner
                .plan(&lightpeft_pipeline::plan_request(&params))
                .unwrap();
            let [head_key, neuron_key] = set_keys(7, &params, params.head_ratio, params.ffn_ratio);
            let context = format!(
                "case {case}: {layers}×{heads} heads, {ffn} neurons, {} {:?} / {} {:?}, keep one {}",
                params.head_ratio,
                params.head_method,
                params.ffn_ratio,
                params.ffn_method,
                params.keep_at_least_one
            );
            assert_eq!(
                head_key.pruned(&estimation.head_masks).unwrap(),
                removed(plan.layers.iter().map(|l| l.kept_heads.clone()), heads),
                "{context}: heads"
            );
            assert_eq!(
                neuron_key.pruned(&estimation.neuron_masks).unwrap(),
                removed(plan.layers.iter().map(|l| l.kept_neurons.clone()), ffn),
                "{context}: neurons"
            );
        }
    }

    #[test]
    fn a_head_ratio_of_a_tenth_prunes_two_of_twelve_heads_per_layer_in_both() {
        let mut draw = Draw(5);
        let estimation = EstimationSummary {
            head_masks: draw.table(6, 12, 10_000),
            ..EstimationSummary::default()
        };
        let params = Hyperparams {
            head_ratio: 0.1,
            head_method: PruningScope::Layerwise,
            ffn_ratio: 0.0,
            module_ratio: 0.0,
            rank_ratio: 0.0,
            ..Hyperparams::default()
        };
        let planner = Planner::new(shape(6, 12, 4), &estimation).unwrap();
        let plan = planner
            .plan(&lightpeft_pipeline::plan_request(&params))
            .unwrap();
        assert!(
            plan.layers.iter().all(|l| l.removed_heads == 2),
            "{:?}",
            plan.layers
        );
        let [head_key, _] = set_keys(1, &params, 0.1, 0.0);
        let pruned = head_key.pruned(&estimation.head_masks).unwrap();
        for layer in pruned.chunks(12) {
            assert_eq!(layer.iter().filter(|&&p| p).count(), 2);
        }
    }
}
