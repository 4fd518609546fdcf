//! PEFT module importance (layers × module type) and rank importance (module × rank), with
//! the modules and ranks a plan would drop marked.

use leptos::prelude::*;
use lightpeft_api::rest::{Importance, Job, PlanPreview};

use crate::api::Latest;
use crate::widgets::heatmap::{Grid, HeatmapView, Legend};

/// Splits `encoder.layer.3.attention.self.query` into (3, "query").
fn parse_module(name: &str) -> (usize, String) {
    let rest = name.strip_prefix("encoder.layer.").unwrap_or(name);
    let (layer, kind) = rest.split_once('.').unwrap_or(("0", rest));
    let short = match kind {
        "attention.self.query" => "query",
        "attention.self.key" => "key",
        "attention.self.value" => "value",
        "attention.output.dense" => "attn out",
        "intermediate.dense" => "ffn in",
        "output.dense" => "ffn out",
        other => other,
    };
    (layer.parse().unwrap_or(0), short.to_string())
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn module_grid(imp: &Importance, plan: Option<&PlanPreview>) -> Grid {
    let parsed: Vec<(usize, String)> = imp.modules.iter().map(|m| parse_module(m)).collect();
    let mut kinds: Vec<String> = Vec::new();
    for (_, k) in &parsed {
        if !kinds.contains(k) {
            kinds.push(k.clone());
        }
    }
    let layers = parsed.iter().map(|p| p.0 + 1).max().unwrap_or(0);
    let mut values = vec![vec![f64::NAN; kinds.len()]; layers];
    let mut removed = vec![vec![0.0; kinds.len()]; layers];
    for (i, (l, k)) in parsed.iter().enumerate() {
        let c = kinds.iter().position(|x| x == k).unwrap_or(0);
        values[*l][c] = imp.module_importance.get(i).copied().unwrap_or(f64::NAN);
        if let Some(p) = plan
            && !p.modules.iter().any(|m| m.module == imp.modules[i])
        {
            removed[*l][c] = 1.0;
        }
    }
    let (min, max) = range(imp.module_importance.iter().copied());
    Grid {
        rows: (0..layers).map(|l| format!("layer {l}")).collect(),
        columns: kinds,
        values,
        min,
        max,
        removed: plan.map(|_| removed),
    }
}

fn rank_grid(imp: &Importance, plan: Option<&PlanPreview>) -> Grid {
    let width = imp
        .rank_importance
        .iter()
        .map(|r| r.len())
        .max()
        .unwrap_or(0);
    let removed = plan.map(|p| {
        imp.modules
            .iter()
            .map(|m| {
                let kept = p.modules.iter().find(|x| &x.module == m);
                (0..width)
                    .map(|r| match kept {
                        Some(k) if k.kept_ranks.contains(&r) => 0.0,
                        _ => 1.0,
                    })
                    .collect()
            })
            .collect()
    });
    let (min, max) = range(imp.rank_importance.iter().flatten().copied());
    Grid {
        rows: imp
            .modules
            .iter()
            .map(|m| {
                let (l, k) = parse_module(m);
                format!("L{l} {k}")
            })
            .collect(),
        columns: (0..width).map(|r| format!("rank {r}")).collect(),
        values: imp
            .rank_importance
            .iter()
            .map(|r| {
                (0..width)
                    .map(|i| r.get(i).copied().unwrap_or(f64::NAN))
                    .collect()
            })
            .collect(),
        min,
        max,
        removed,
    }
}

/// Module and rank importance of an estimation job (second-half average, as the planner uses).
#[component]
pub fn ImportancePanel(
    /// The estimation job.
    #[prop(into)]
    job: Signal<Job>,
    /// The plan to mark.
    #[prop(into)]
    plan: Signal<Option<PlanPreview>>,
) -> impl IntoView {
    let id = job.get_untracked().id;
    let data = RwSignal::new(None::<Importance>);
    let fetcher = Latest::new(data);
    // Importances change every step while the job runs; a snapshot's worth of progress is
    // plenty for a view of averages.
    let bucket = Memo::new(move |_| {
        let j = job.get();
        (j.step / 5, j.status)
    });
    Effect::new(move |_| {
        let _ = bucket.get();
        fetcher.fetch(format!("/jobs/{id}/importance"));
    });
    let modules = Signal::derive(move || {
        data.with(|d| {
            d.as_ref()
                .filter(|d| !d.modules.is_empty())
                .map(|d| plan.with(|p| module_grid(d, p.as_ref())))
        })
    });
    let ranks = Signal::derive(move || {
        data.with(|d| {
            d.as_ref()
                .filter(|d| !d.modules.is_empty())
                .map(|d| plan.with(|p| rank_grid(d, p.as_ref())))
        })
    });
    let module_range =
        Signal::derive(move || modules.with(|g| g.as_ref().map_or((0.0, 1.0), |g| (g.min, g.max))));
    let rank_range =
        Signal::derive(move || ranks.with(|g| g.as_ref().map_or((0.0, 1.0), |g| (g.min, g.max))));
    let has_plan = Signal::derive(move || plan.with(|p| p.is_some()));
    let rows = Signal::derive(move || ranks.with(|g| g.as_ref().map_or(0, |g| g.rows.len())));
    view! {
        <div class="heatmap-pair">
            <div>
                <h3>"Module importance " <span class="unit">"layers × module, ‖ΔWx‖ / ‖Wx‖ (ratio), mean of the second half of estimation"</span></h3>
                <Legend id="module" label="importance ratio" range=module_range with_cut=has_plan />
                <HeatmapView id="module" grid=modules value_label="importance" row_h=24.0 empty="no importances recorded yet" />
            </div>
            <div>
                <h3>"Rank importance " <span class="unit">"module × rank dimension, first-order Taylor score"</span></h3>
                <Legend id="rank" label="Taylor score" range=rank_range with_cut=has_plan />
                <div class="scroll-y" style=move || format!("max-height:{}px", if rows.get() > 24 { 420 } else { 2000 })>
                    <HeatmapView id="rank" grid=ranks value_label="score" row_h=14.0 left=92.0 empty="no importances recorded yet" />
                </div>
            </div>
        </div>
    }
}
