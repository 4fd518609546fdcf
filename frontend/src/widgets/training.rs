//! A job's live training charts: loss, learning rate, dev score and step time. Loaded from
//! `/scalars` and `/evals`, then extended by the job's event stream.

use std::time::Duration;

use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::rest::{Eval, Event, Job, JobKind, Scalars};

use crate::{
    api,
    events::{self, Link},
    format,
    widgets::chart::{LineChart, Series},
};

const MAX_POINTS: usize = 600;

/// The charts of `job`, live while it runs.
#[component]
pub fn TrainingCharts(job: Job) -> impl IntoView {
    let id = job.id;
    let scalars = RwSignal::new(Scalars::default());
    let evals = RwSignal::new(Vec::<Eval>::new());
    let link = RwSignal::new(Link::Connecting);
    let refetch_pending = RwSignal::new(false);

    let load = move || {
        spawn_local(async move {
            if let Ok(s) =
                api::get::<Scalars>(&format!("/jobs/{id}/scalars?max_points={MAX_POINTS}")).await
            {
                scalars.try_set(s);
            }
            if let Ok(e) = api::get::<Vec<Eval>>(&format!("/jobs/{id}/evals")).await {
                evals.try_set(e);
            }
        })
    };
    // Steps arrive one by one; the full series (with its downsampling) is re-read at most
    // every few seconds so the chart never drifts from the store.
    let schedule_refetch = move || {
        if refetch_pending.get_untracked() {
            return;
        }
        refetch_pending.set(true);
        set_timeout(
            move || {
                if refetch_pending.try_set(false).is_none() {
                    load();
                }
            },
            Duration::from_secs(4),
        );
    };

    if job.status.is_final() {
        load();
    } else {
        events::subscribe(
            format!("/jobs/{id}/events"),
            link,
            move |event| match event {
                Event::Step { step, loss, lr, .. } => {
                    scalars.update(|s| {
                        if s.steps.last().is_none_or(|last| *last < step) {
                            s.steps.push(step);
                            s.loss.push(loss);
                            s.lr.push(lr);
                            s.total += 1;
                        }
                    });
                    schedule_refetch();
                }
                Event::Eval { eval, .. } => evals.update(|e| e.push(eval)),
                Event::Job { .. } => {}
            },
            load,
        );
    }

    let xy = |xs: &[i64], ys: &[f64]| -> Vec<(f64, f64)> {
        xs.iter().zip(ys).map(|(x, y)| (*x as f64, *y)).collect()
    };
    let estimation = job.kind == JobKind::Estimation;
    let loss = Signal::derive(move || {
        scalars.with(|s| {
            let mut out = vec![Series {
                name: "loss".into(),
                colour: "#1f5fbf",
                points: xy(&s.steps, &s.loss),
            }];
            if estimation && s.ce_loss.len() == s.steps.len() && !s.ce_loss.is_empty() {
                out.push(Series {
                    name: "cross-entropy".into(),
                    colour: "#e07b00",
                    points: xy(&s.steps, &s.ce_loss),
                });
                out.push(Series {
                    name: "L1".into(),
                    colour: "#8a3ffc",
                    points: xy(&s.steps, &s.l1_loss),
                });
            }
            out
        })
    });
    let lr = Signal::derive(move || {
        scalars.with(|s| {
            vec![Series {
                name: "lr".into(),
                colour: "#198038",
                points: xy(&s.steps, &s.lr),
            }]
        })
    });
    // The primary metric: a fraction drawn as 0–100 %, or a correlation on its own −1…1 axis.
    let metric = Signal::derive(move || {
        evals.with(|e| {
            e.first()
                .and_then(|e| e.metrics.first())
                .map(|m| m.0.clone())
                .unwrap_or_else(|| "score".into())
        })
    });
    let correlation = Signal::derive(move || format::is_correlation(&metric.get()));
    let score = Signal::derive(move || {
        let metric = metric.get();
        let scale = if format::is_correlation(&metric) {
            1.0
        } else {
            100.0
        };
        evals.with(|e| {
            vec![Series {
                name: format!("dev {metric}"),
                colour: "#d7263d",
                points: e
                    .iter()
                    .filter_map(|ev| {
                        let v = ev.metrics.iter().find(|m| m.0 == metric)?.1;
                        Some((ev.step as f64, v * scale))
                    })
                    .collect(),
            }]
        })
    });
    let seconds = Signal::derive(move || {
        scalars.with(|s| {
            vec![Series {
                name: "step time".into(),
                colour: "#555",
                points: s
                    .steps
                    .iter()
                    .zip(&s.seconds)
                    .map(|(x, y)| (*x as f64, y * 1000.0))
                    .collect(),
            }]
        })
    });
    view! {
        <div class="chart-grid" data-job=id>
            <LineChart title="Training loss" unit="nats / example" series=loss />
            <LineChart title="Learning rate" unit="per step" series=lr />
            {move || {
                if correlation.get() {
                    view! {
                        <LineChart
                            title="Dev score"
                            unit="correlation, −1 to 1"
                            series=score
                            y_range=(-1.0, 1.0)
                            empty="no evaluation yet (after each epoch)"
                        />
                    }
                        .into_any()
                } else {
                    view! {
                        <LineChart
                            title="Dev score"
                            unit="%"
                            series=score
                            y_range=(0.0, 100.0)
                            empty="no evaluation yet (after each epoch)"
                        />
                    }
                        .into_any()
                }
            }}
            <LineChart title="Step time" unit="ms" series=seconds />
        </div>
        <p class="muted small">
            {move || {
                scalars.with(|s| format!("{} steps recorded", s.total))
            }}
            {move || (link.get() == Link::Reconnecting).then_some(" · job stream lost, reconnecting…")}
        </p>
    }
}
