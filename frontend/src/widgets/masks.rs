//! Head and FFN-neuron mask heatmaps with a step slider that follows the run, the cells a
//! plan would remove marked, and the estimation-convergence chart.

use leptos::prelude::*;
use lightpeft_api::rest::{
    Convergence, Heatmap, Job, MaskKind, MaskSummary, NeuronOrder, PlanPreview,
};

use crate::{
    api::Latest,
    format,
    widgets::{
        chart::{LineChart, Series},
        heatmap::{Grid, HeatmapView, Legend},
    },
};

fn column_starts(widths: &[i64]) -> Vec<i64> {
    widths
        .iter()
        .scan(0, |acc, w| {
            let s = *acc;
            *acc += w;
            Some(s)
        })
        .collect()
}

fn head_grid(h: &Heatmap, plan: Option<&PlanPreview>) -> Grid {
    let removed = plan.map(|p| {
        h.values
            .iter()
            .enumerate()
            .map(|(l, row)| {
                let kept = p
                    .layers
                    .get(l)
                    .map(|x| x.kept_heads.as_slice())
                    .unwrap_or(&[]);
                (0..row.len())
                    .map(|c| if kept.contains(&c) { 0.0 } else { 1.0 })
                    .collect()
            })
            .collect()
    });
    Grid {
        rows: (0..h.values.len()).map(|l| format!("layer {l}")).collect(),
        columns: (0..h.values.first().map_or(0, |r| r.len()))
            .map(|c| format!("head {c}"))
            .collect(),
        values: h
            .values
            .iter()
            .map(|r| r.iter().map(|v| *v as f64).collect())
            .collect(),
        min: h.min as f64,
        max: h.max as f64,
        removed,
    }
}

fn neuron_grid(h: &Heatmap, order: NeuronOrder, plan: Option<&PlanPreview>) -> Grid {
    let starts = column_starts(&h.column_width);
    let columns = starts
        .iter()
        .zip(&h.column_width)
        .map(|(s, w)| {
            let what = if order == NeuronOrder::Sorted {
                "sorted position"
            } else {
                "neuron"
            };
            if *w == 1 {
                format!("{what} {s}")
            } else {
                format!("{what}s {s}–{}", s + w - 1)
            }
        })
        .collect();
    let removed = plan.map(|p| {
        (0..h.values.len())
            .map(|l| {
                let layer = p.layers.get(l);
                starts
                    .iter()
                    .zip(&h.column_width)
                    .map(|(s, w)| {
                        let Some(layer) = layer else { return 0.0 };
                        let (s, w) = (*s as usize, (*w).max(1) as usize);
                        let cut = match order {
                            // The lowest-scored neurons go first, so a plan removes the
                            // leftmost `removed_neurons` positions of a sorted row.
                            NeuronOrder::Sorted => layer.removed_neurons.saturating_sub(s).min(w),
                            NeuronOrder::Binned => {
                                let kept = layer
                                    .kept_neurons
                                    .iter()
                                    .filter(|n| (s..s + w).contains(n))
                                    .count();
                                w - kept.min(w)
                            }
                        };
                        cut as f64 / w as f64
                    })
                    .collect()
            })
            .collect()
    });
    Grid {
        rows: (0..h.values.len()).map(|l| format!("layer {l}")).collect(),
        columns,
        values: h
            .values
            .iter()
            .map(|r| r.iter().map(|v| *v as f64).collect())
            .collect(),
        min: h.min as f64,
        max: h.max as f64,
        removed,
    }
}

/// The two mask heatmaps of an estimation job.
#[component]
pub fn MaskPanel(
    /// The estimation job (its `step` drives live updates).
    #[prop(into)]
    job: Signal<Job>,
    /// The plan to mark on the heatmaps.
    #[prop(into)]
    plan: Signal<Option<PlanPreview>>,
) -> impl IntoView {
    let id = job.get_untracked().id;
    let follow = RwSignal::new(true);
    let chosen_step = RwSignal::new(None::<i64>);
    let bins = RwSignal::new("64".to_string());
    let order = RwSignal::new(NeuronOrder::Binned);
    let heads = RwSignal::new(None::<Heatmap>);
    let neurons = RwSignal::new(None::<Heatmap>);
    let (head_fetch, neuron_fetch) = (Latest::new(heads), Latest::new(neurons));

    // Re-read the snapshots when the view asks for another step, or, while following, when
    // the job moves on (snapshots arrive with its progress).
    let progress = Memo::new(move |_| {
        let j = job.get();
        (j.step, j.status)
    });
    Effect::new(move |_| {
        let live = follow.get();
        let _ = if live { Some(progress.get()) } else { None };
        let step = if live { None } else { chosen_step.get() };
        let at = step.map(|s| format!("&step={s}")).unwrap_or_default();
        let order_name = match order.get() {
            NeuronOrder::Binned => "binned",
            NeuronOrder::Sorted => "sorted",
        };
        head_fetch.fetch(format!("/jobs/{id}/heatmap?kind=head{at}"));
        neuron_fetch.fetch(format!(
            "/jobs/{id}/heatmap?kind=neuron&bins={}&order={order_name}{at}",
            bins.get()
        ));
    });

    let snapshots = Memo::new(move |_| {
        heads.with(|h| {
            h.as_ref()
                .map(|h| h.snapshot_steps.clone())
                .unwrap_or_default()
        })
    });
    let shown_step = Memo::new(move |_| heads.with(|h| h.as_ref().map(|h| h.step)));
    let slider_index = move || {
        let steps = snapshots.get();
        let at = shown_step.get().unwrap_or(0);
        steps
            .iter()
            .position(|s| *s >= at)
            .unwrap_or(steps.len().saturating_sub(1))
    };
    let on_slide = move |ev: leptos::ev::Event| {
        let i: usize = event_target_value(&ev).parse().unwrap_or(0);
        if let Some(step) = snapshots.with_untracked(|s| s.get(i).copied()) {
            follow.set(false);
            chosen_step.set(Some(step));
        }
    };

    let head_view = Signal::derive(move || {
        heads.with(|h| h.as_ref().map(|h| plan.with(|p| head_grid(h, p.as_ref()))))
    });
    let neuron_view = Signal::derive(move || {
        let o = order.get();
        neurons.with(|h| {
            h.as_ref()
                .map(|h| plan.with(|p| neuron_grid(h, o, p.as_ref())))
        })
    });
    let head_range = Signal::derive(move || {
        heads.with(|h| {
            h.as_ref()
                .map_or((0.0, 1.0), |h| (h.min as f64, h.max as f64))
        })
    });
    let neuron_range = Signal::derive(move || {
        neurons.with(|h| {
            h.as_ref()
                .map_or((0.0, 1.0), |h| (h.min as f64, h.max as f64))
        })
    });
    let has_plan = Signal::derive(move || plan.with(|p| p.is_some()));
    let step_label = move || {
        let n = snapshots.with(|s| s.len());
        match shown_step.get() {
            Some(s) => format!("step {s} · snapshot {} of {n}", (slider_index() + 1).min(n)),
            None => "no snapshot yet".into(),
        }
    };

    view! {
        <div class="mask-controls">
            <label class="slider">
                "Snapshot "
                <input
                    type="range"
                    id="step-slider"
                    min="0"
                    max=move || snapshots.with(|s| s.len().saturating_sub(1))
                    prop:value=move || slider_index().to_string()
                    on:input=on_slide
                    disabled=move || snapshots.with(|s| s.len() < 2)
                />
                <output id="step-label">{step_label}</output>
            </label>
            <label>
                <input type="checkbox" id="follow-live" bind:checked=follow />
                " follow the run live"
            </label>
            <label>
                "FFN columns "
                <select id="neuron-bins" bind:value=bins>
                    <option value="16">"16 bins"</option>
                    <option value="32">"32 bins"</option>
                    <option value="64">"64 bins"</option>
                    <option value="128">"128 bins"</option>
                    <option value="0">"every neuron"</option>
                </select>
            </label>
            <label>
                "FFN order "
                <select
                    id="neuron-order"
                    on:change=move |ev| order.set(if event_target_value(&ev) == "sorted" { NeuronOrder::Sorted } else { NeuronOrder::Binned })
                >
                    <option value="binned">"index (bin mean)"</option>
                    <option value="sorted">"sorted by value"</option>
                </select>
            </label>
        </div>
        <div class="heatmap-pair">
            <div>
                <h3>"Attention heads " <span class="unit">"layers × heads, mask value"</span></h3>
                <Legend id="head" label="mask value" range=head_range with_cut=has_plan />
                <HeatmapView id="head" grid=head_view value_label="mask" row_h=24.0 />
            </div>
            <div>
                <h3>"FFN neurons " <span class="unit">"layers × neurons, mask value (bin mean)"</span></h3>
                <Legend id="neuron" label="mask value" range=neuron_range with_cut=has_plan />
                <HeatmapView id="neuron" grid=neuron_view value_label="mask" row_h=24.0 />
            </div>
        </div>
    }
}

/// How many pruning decisions changed between consecutive snapshots, at the planner's ratios.
#[component]
pub fn ConvergenceChart(
    /// The estimation job.
    #[prop(into)]
    job: Signal<Job>,
    /// Head and FFN ratios from the planner.
    #[prop(into)]
    ratios: Signal<(f64, f64)>,
) -> impl IntoView {
    let id = job.get_untracked().id;
    let data = RwSignal::new(None::<Convergence>);
    let fetcher = Latest::new(data);
    let progress = Memo::new(move |_| job.get().step);
    Effect::new(move |_| {
        let _ = progress.get();
        let (h, f) = ratios.get();
        fetcher.fetch(format!(
            "/jobs/{id}/convergence?head_ratio={h}&ffn_ratio={f}"
        ));
    });
    let series = Signal::derive(move || {
        data.with(|d| {
            let Some(d) = d else { return vec![] };
            let pts = |v: &[f64]| {
                d.steps
                    .iter()
                    .zip(v)
                    .map(|(s, v)| (*s as f64, v * 100.0))
                    .collect()
            };
            vec![
                Series {
                    name: "heads".into(),
                    colour: "#1f5fbf",
                    points: pts(&d.head_change),
                },
                Series {
                    name: "neurons".into(),
                    colour: "#e07b00",
                    points: pts(&d.neuron_change),
                },
            ]
        })
    });
    let verdict = move || {
        data.with(|d| {
            let d = d.as_ref()?;
            let last_h = *d.head_change.last()?;
            let last_n = *d.neuron_change.last()?;
            Some(format!(
                "Last change: {} of heads, {} of neurons at ratios {} / {}. Near 0 means more estimation steps would not change the plan.",
                format::pct(last_h),
                format::pct(last_n),
                format::tick(d.head_ratio),
                format::tick(d.ffn_ratio)
            ))
        })
    };
    view! {
        <LineChart
            title="Estimation convergence"
            unit="% of prune/keep decisions changed since the previous snapshot"
            series=series
            empty="needs two snapshots"
        />
        <p class="muted small" id="convergence-verdict">{verdict}</p>
    }
}

/// Colours of layer lines, cycled for models deeper than the list.
const LAYER_COLOURS: [&str; 12] = [
    "#1f5fbf", "#e07b00", "#2a9d55", "#c23b3b", "#7a4fbf", "#8c6d31", "#d4589e", "#5f6b7a",
    "#17a3b8", "#a3a300", "#3b3bc2", "#c2803b",
];

/// The median mask value of every layer against the step, for one mask family: the L1 penalty
/// pulls masks down from 1, and layers whose masks sink fastest lose the most units at pruning.
/// Drawn from per-step summaries, which are kept for every step (full snapshots are thinned).
#[component]
pub fn MaskTrendChart(
    /// The estimation job (its `step` drives live updates).
    #[prop(into)]
    job: Signal<Job>,
    /// Heads or neurons.
    kind: MaskKind,
) -> impl IntoView {
    let id = job.get_untracked().id;
    let data = RwSignal::new(None::<Vec<MaskSummary>>);
    let fetcher = Latest::new(data);
    let progress = Memo::new(move |_| job.get().step);
    let kind_name = kind.as_str();
    Effect::new(move |_| {
        let _ = progress.get();
        fetcher.fetch(format!(
            "/jobs/{id}/mask-summary?kind={kind_name}&max_points=200"
        ));
    });
    let series = Signal::derive(move || {
        data.with(|rows| {
            let Some(rows) = rows else { return vec![] };
            let layers = rows.iter().map(|r| r.layer + 1).max().unwrap_or(0);
            (0..layers)
                .map(|layer| Series {
                    name: format!("layer {layer}"),
                    colour: LAYER_COLOURS[layer as usize % LAYER_COLOURS.len()],
                    points: rows
                        .iter()
                        .filter(|r| r.layer == layer)
                        .filter_map(|r| Some((r.step as f64, *r.quantiles.get(2)? as f64)))
                        .collect(),
                })
                .collect()
        })
    });
    let title = match kind {
        MaskKind::Head => "Head masks: median per layer",
        MaskKind::Neuron => "FFN-neuron masks: median per layer",
    };
    view! {
        <LineChart
            title=title
            unit="mask value (1 = untouched)"
            series=series
            empty="no steps recorded yet"
        />
    }
}
