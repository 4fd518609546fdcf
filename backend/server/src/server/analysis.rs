//! Pure functions behind the read endpoints: downsampling, heatmap binning, the convergence
//! signal and the step-time estimate of a plan.

use lightpeft_engine::plan::{ModelShape, PruningPlan};
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

/// The units a ratio would prune from `layers` (indices into the flattened values): the
/// `ratio` fraction with the smallest values, over all layers or within each.
pub fn pruned_set(layers: &[Vec<f32>], ratio: f64, layerwise: bool) -> Vec<bool> {
    let mut out = Vec::new();
    if layerwise {
        for row in layers {
            out.extend(lowest(row, ratio));
        }
    } else {
        let flat: Vec<f32> = layers.iter().flatten().copied().collect();
        out = lowest(&flat, ratio);
    }
    out
}

fn lowest(values: &[f32], ratio: f64) -> Vec<bool> {
    let n = ((values.len() as f64) * ratio).round() as usize;
    let mut pruned = vec![false; values.len()];
    if n == 0 {
        return pruned;
    }
    let mut order: Vec<usize> = (0..values.len()).collect();
    // Ties go to the lower index: a total order, so selecting the n lowest (linear time)
    // gives the same set as sorting everything.
    let n = n.min(values.len());
    order.select_nth_unstable_by(n - 1, |&a, &b| {
        values[a].total_cmp(&values[b]).then(a.cmp(&b))
    });
    for &i in &order[..n] {
        pruned[i] = true;
    }
    pruned
}

/// What decides a pruned set: the job, the mask kind, the ratio and whether it applies per
/// layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetKey {
    pub job: i64,
    pub kind: lightpeft_api::rest::MaskKind,
    pub ratio_bits: u64,
    pub layerwise: bool,
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

/// Multiply-adds of one forward pass per token of the encoder layers, with `heads[l]` heads
/// and `ffn[l]` neurons per layer, at `seq` tokens. LoRA adds `r·(in+out)` per kept module.
pub fn layer_flops(
    shape: &ModelShape,
    heads: &[usize],
    ffn: &[usize],
    seq: usize,
    lora: usize,
) -> f64 {
    let d = shape.hidden_size as f64;
    let hd = shape.head_dim() as f64;
    let t = seq as f64;
    heads
        .iter()
        .zip(ffn)
        .map(|(&h, &f)| {
            let a = h as f64 * hd;
            // Q, K, V and the output projection; scores and context; the two FFN matrices.
            4.0 * d * a + 2.0 * t * a + 2.0 * d * f as f64
        })
        .sum::<f64>()
        + lora as f64
}

/// Estimated stage-2 step time ÷ the unpruned model's: forward FLOPs of the layers plus the
/// backward through activations (≈ the forward again, weight gradients being skipped for
/// frozen matrices), with LoRA's own cost. Embeddings and the head are the same on both sides
/// and left out, so the ratio slightly favours pruning.
pub fn step_time_ratio(shape: &ModelShape, plan: &PruningPlan, seq: usize) -> f64 {
    let full_heads = vec![shape.heads; shape.layers];
    let full_ffn = vec![shape.intermediate_size; shape.layers];
    let lora_before: usize = shape
        .lora
        .as_ref()
        .map_or(0, |l| l.modules.len() * l.rank * 2 * shape.hidden_size);
    let lora_after: usize = plan
        .peft
        .modules
        .iter()
        .map(|m| m.kept_ranks.len() * (m.in_dim + m.out_dim))
        .sum();
    let before = layer_flops(shape, &full_heads, &full_ffn, seq, lora_before * 3);
    let heads: Vec<usize> = plan.layers.iter().map(|l| l.kept_heads.len()).collect();
    let ffn: Vec<usize> = plan.layers.iter().map(|l| l.kept_neurons.len()).collect();
    let after = layer_flops(shape, &heads, &ffn, seq, lora_after * 3);
    if before == 0.0 { 1.0 } else { after / before }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selecting_the_lowest_equals_sorting_them_ties_included() {
        let values: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        for ratio in [0.0, 0.01, 0.33, 0.5, 0.999, 1.0] {
            let n = (values.len() as f64 * ratio).round() as usize;
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
            let mut want = vec![false; values.len()];
            order[..n].iter().for_each(|&i| want[i] = true);
            assert_eq!(lowest(&values, ratio), want, "ratio {ratio}");
        }
    }

    #[test]
    fn the_set_cache_keeps_the_most_recent_keys_and_forgets_deleted_jobs() {
        let key = |job, ratio: f64| SetKey {
            job,
            kind: lightpeft_api::rest::MaskKind::Head,
            ratio_bits: ratio.to_bits(),
            layerwise: false,
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

    #[test]
    fn pruned_sets_and_their_distance() {
        let a = pruned_set(&[vec![0.1, 0.9], vec![0.2, 0.8]], 0.5, false);
        assert_eq!(a, vec![true, false, true, false]);
        let b = pruned_set(&[vec![0.1, 0.9], vec![0.9, 0.2]], 0.5, true);
        assert_eq!(b, vec![true, false, false, true]);
        assert!((set_distance(&a, &b) - (1.0 - 1.0 / 3.0)).abs() < 1e-12);
        assert_eq!(set_distance(&a, &a), 0.0);
    }
}
