//! Studies: the plans a study of one estimation runs, and what their results say (the mean and
//! spread over seeds, and the Pareto frontier of score against a cost), so the server that
//! queues a study's jobs and the dashboard that draws its chart share one rule.

use crate::PlanRequest;
use crate::error::Result;

/// Every combination of the listed ratios (head, FFN, module and rank, the rank varying
/// fastest), each a [`PlanRequest`] with the default methods; an empty list means 0 for that
/// ratio. Fails for a ratio outside [0, 1].
pub fn plan_grid(
    heads: &[f64],
    ffn: &[f64],
    modules: &[f64],
    ranks: &[f64],
) -> Result<Vec<PlanRequest>> {
    let or_zero = |values: &[f64]| {
        if values.is_empty() {
            vec![0.0]
        } else {
            values.to_vec()
        }
    };
    let (heads, ffn, modules, ranks) = (
        or_zero(heads),
        or_zero(ffn),
        or_zero(modules),
        or_zero(ranks),
    );
    let mut plans = Vec::with_capacity(heads.len() * ffn.len() * modules.len() * ranks.len());
    for &head_ratio in &heads {
        for &ffn_ratio in &ffn {
            for &module_ratio in &modules {
                for &rank_ratio in &ranks {
                    plans.push(checked_plan([
                        head_ratio,
                        ffn_ratio,
                        module_ratio,
                        rank_ratio,
                    ])?);
                }
            }
        }
    }
    Ok(plans)
}

/// Exactly the given plans, each `[head, ffn, module, rank]`, with the default methods, in
/// order. Fails for an empty list or a ratio outside [0, 1].
pub fn plan_list(ratios: &[[f64; 4]]) -> Result<Vec<PlanRequest>> {
    if ratios.is_empty() {
        return Err(crate::error::invalid(
            "plans",
            "a list needs at least one plan",
        ));
    }
    ratios.iter().copied().map(checked_plan).collect()
}

/// A plan of `[head, ffn, module, rank]` ratios with the default methods, once its ratios are
/// checked.
fn checked_plan(
    [head_ratio, ffn_ratio, module_ratio, rank_ratio]: [f64; 4],
) -> Result<PlanRequest> {
    let plan = PlanRequest {
        head_ratio,
        ffn_ratio,
        module_ratio,
        rank_ratio,
        ..PlanRequest::default()
    };
    plan.validate()?;
    Ok(plan)
}

/// The heads-and-FFN frontier: heads = FFN ∈ {0, 1/6, 1/3, 1/2, 2/3}, modules and ranks kept.
pub fn heads_ffn_frontier() -> Vec<PlanRequest> {
    heads_equal_ffn(&[0.0, 1.0 / 6.0, 1.0 / 3.0, 0.5, 2.0 / 3.0])
}

/// The quick study's plans: heads = FFN ∈ {1/3, 1/2, 2/3}, modules and ranks kept (with the
/// random twins and the two baselines, eight stage-2 runs).
pub fn quick_frontier() -> Vec<PlanRequest> {
    heads_equal_ffn(&[1.0 / 3.0, 0.5, 2.0 / 3.0])
}

fn heads_equal_ffn(ratios: &[f64]) -> Vec<PlanRequest> {
    ratios
        .iter()
        .map(|&ratio| PlanRequest {
            head_ratio: ratio,
            ffn_ratio: ratio,
            ..PlanRequest::default()
        })
        .collect()
}

/// Mean and spread of one configuration's scores over its seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Seeds that reported.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); 0 for a single seed.
    pub std: f64,
}

/// The spread of `values`, or `None` when there is none.
pub fn spread(values: &[f64]) -> Option<Spread> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some(Spread { n, mean, std })
}

/// Which way a cost axis improves: parameters kept and peak memory are better lower, speed-ups
/// higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Less is better.
    Lower,
    /// More is better.
    Higher,
}

/// The points (cost, score) on the Pareto frontier, a higher score always better: those no
/// other point dominates (at least as good on both axes and strictly better on one). Points
/// that tie exactly are all kept. A point with a NaN is never on it. Indices come in order of
/// cost, the best first.
pub fn pareto_frontier(points: &[(f64, f64)], better: Better) -> Vec<usize> {
    // Costs turned so that lower is better everywhere.
    let cost = |i: usize| match better {
        Better::Lower => points[i].0,
        Better::Higher => -points[i].0,
    };
    let valid = |i: usize| !points[i].0.is_nan() && !points[i].1.is_nan();
    let dominated = |i: usize| {
        (0..points.len()).any(|j| {
            j != i
                && valid(j)
                && cost(j) <= cost(i)
                && points[j].1 >= points[i].1
                && (cost(j) < cost(i) || points[j].1 > points[i].1)
        })
    };
    let mut frontier: Vec<usize> = (0..points.len())
        .filter(|&i| valid(i) && !dominated(i))
        .collect();
    frontier.sort_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)));
    frontier
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_every_combination_and_refuses_bad_ratios() {
        let plans = plan_grid(&[0.0, 0.5], &[0.25], &[], &[0.0, 0.5]).unwrap();
        let ratios: Vec<(f64, f64, f64, f64)> = plans
            .iter()
            .map(|p| (p.head_ratio, p.ffn_ratio, p.module_ratio, p.rank_ratio))
            .collect();
        assert_eq!(
            ratios,
            [
                (0.0, 0.25, 0.0, 0.0),
                (0.0, 0.25, 0.0, 0.5),
                (0.5, 0.25, 0.0, 0.0),
                (0.5, 0.25, 0.0, 0.5)
            ]
        );
        let error = plan_grid(&[1.5], &[], &[], &[]).unwrap_err().to_string();
        assert!(error.contains("head_ratio"), "{error}");
        assert!(plan_grid(&[], &[f64::NAN], &[], &[]).is_err());
        let frontier = heads_ffn_frontier();
        assert_eq!(frontier.len(), 5);
        assert!(
            frontier
                .iter()
                .all(|p| p.head_ratio == p.ffn_ratio && p.rank_ratio == 0.0)
        );
        let quick: Vec<f64> = quick_frontier().iter().map(|p| p.head_ratio).collect();
        assert_eq!(quick, [1.0 / 3.0, 0.5, 2.0 / 3.0]);
        let listed = plan_list(&[[0.5, 0.5, 0.0, 0.0], [0.25, 0.0, 0.75, 0.5]]).unwrap();
        assert_eq!(
            (
                listed[1].head_ratio,
                listed[1].module_ratio,
                listed[1].rank_ratio
            ),
            (0.25, 0.75, 0.5)
        );
        assert!(plan_list(&[]).is_err());
        let error = plan_list(&[[0.0, 0.0, 2.0, 0.0]]).unwrap_err().to_string();
        assert!(error.contains("module_ratio"), "{error}");
        assert!(quick_frontier().iter().all(|p| p.ffn_ratio == p.head_ratio));
    }

    #[test]
    fn spread_is_the_mean_and_the_sample_deviation() {
        let s = spread(&[0.80, 0.84, 0.82]).unwrap();
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.82).abs() < 1e-12);
        assert!((s.std - 0.02).abs() < 1e-12, "{s:?}");
        assert_eq!(spread(&[0.5]).unwrap().std, 0.0);
        assert!(spread(&[]).is_none());
    }

    #[test]
    fn the_frontier_drops_dominated_points_and_keeps_ties() {
        // (parameters kept in millions, score)
        let table = [
            (22.0, 0.87),    // 0: the full model, best score
            (15.0, 0.86),    // 1: on the frontier
            (15.0, 0.84),    // 2: same cost, lower score: dominated by 1
            (10.0, 0.86),    // 3: cheaper than 1 at the same score: dominates 1
            (10.0, 0.86),    // 4: the exact tie of 3: kept with it
            (8.0, 0.70),     // 5: cheapest: on the frontier
            (12.0, 0.80),    // 6: dominated by 3
            (9.0, f64::NAN), // 7: no score: never on it
        ];
        assert_eq!(pareto_frontier(&table, Better::Lower), [5, 3, 4, 0]);
        // Speed-ups are better higher: (speed-up, score).
        let speed = [(1.0, 0.87), (1.5, 0.86), (1.4, 0.85), (2.0, 0.70)];
        assert_eq!(pareto_frontier(&speed, Better::Higher), [3, 1, 0]);
        assert!(pareto_frontier(&[], Better::Lower).is_empty());
    }
}
