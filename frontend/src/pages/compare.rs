//! Runs of several experiments side by side (`/compare?experiments=1,2`): the jobs to compare,
//! their loss and dev-score curves overlaid on one step axis, their effective hyper-parameters
//! with the differences marked, and their results with ratios to the run chosen as baseline.

use std::collections::BTreeMap;

use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::use_query_map;
use lightpeft_api::rest::{Eval, Experiment, Job, JobKind, JobResult, JobStatus, Plan, Scalars};
use lightpeft_api::{Hyperparams, PARAMS};

use crate::{
    api, format,
    store::use_store,
    widgets::chart::{LineChart, Series},
};

const COLOURS: [&str; 8] = [
    "#2563eb", "#d97706", "#16a34a", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#4b5563",
];
const MAX_POINTS: usize = 400;

/// What is loaded of one compared job.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    job: Job,
    experiment: Experiment,
    /// The values it trained with: the experiment's, its own settings and its plan's on top.
    params: Hyperparams,
    scalars: Option<Scalars>,
    evals: Vec<Eval>,
    result: Option<JobResult>,
}

fn title(l: &Loaded) -> String {
    format!(
        "{} · job {} ({})",
        l.experiment.name,
        l.job.id,
        l.job.kind.as_str()
    )
}

/// The jobs shown at first: each experiment's newest finished stage 2, else its newest
/// finished baseline, else its newest job.
fn default_picks(experiments: &[i64], jobs: &[Job]) -> Vec<i64> {
    experiments
        .iter()
        .filter_map(|e| {
            let mine: Vec<&Job> = jobs
                .iter()
                .filter(|j| j.experiment_id == *e && j.kind != JobKind::Evaluation)
                .collect();
            let newest = |kind: JobKind| {
                mine.iter()
                    .filter(|j| j.kind == kind && j.status == JobStatus::Succeeded)
                    .max_by_key(|j| j.id)
            };
            newest(JobKind::Finetune)
                .or_else(|| newest(JobKind::Baseline))
                .or_else(|| mine.iter().max_by_key(|j| j.id))
                .map(|j| j.id)
        })
        .collect()
}

async fn load(job: Job, experiment: Experiment) -> Loaded {
    let id = job.id;
    let mut params = experiment.params.clone();
    if let Some(plan) = job.plan_id
        && let Ok(plan) = api::get::<Plan>(&format!("/plans/{plan}")).await
    {
        let _ = params.apply(&plan.preview.settings);
    }
    let _ = params.apply(&job.settings);
    let scalars = api::get::<Scalars>(&format!("/jobs/{id}/scalars?max_points={MAX_POINTS}"))
        .await
        .ok();
    let evals = api::get::<Vec<Eval>>(&format!("/jobs/{id}/evals"))
        .await
        .unwrap_or_default();
    let result = if job.status == JobStatus::Succeeded && job.kind != JobKind::Estimation {
        api::get::<JobResult>(&format!("/jobs/{id}/result"))
            .await
            .ok()
    } else {
        None
    };
    Loaded {
        job,
        experiment,
        params,
        scalars,
        evals,
        result,
    }
}

/// `/compare?experiments=1,2,…`.
#[component]
pub fn ComparePage() -> impl IntoView {
    let store = use_store();
    let query = use_query_map();
    let experiments = Memo::new(move |_| {
        query.with(|q| {
            q.get("experiments")
                .unwrap_or_default()
                .split(',')
                .filter_map(|s| s.trim().parse::<i64>().ok())
                .collect::<Vec<_>>()
        })
    });
    let candidates = Memo::new(move |_| {
        let wanted = experiments.get();
        let mut jobs: Vec<Job> = store.jobs.with(|all| {
            all.iter()
                .filter(|j| wanted.contains(&j.experiment_id) && j.kind != JobKind::Evaluation)
                .cloned()
                .collect()
        });
        jobs.sort_by_key(|j| (j.experiment_id, j.id));
        jobs
    });
    let picked = RwSignal::new(Vec::<i64>::new());
    // The first time the jobs are known, pick each experiment's main run.
    Effect::new(move |done: Option<bool>| {
        if done == Some(true) {
            return true;
        }
        let jobs = candidates.get();
        if jobs.is_empty() {
            return false;
        }
        picked.set(default_picks(&experiments.get_untracked(), &jobs));
        true
    });
    let loaded = RwSignal::new(BTreeMap::<i64, Loaded>::new());
    Effect::new(move |_| {
        for id in picked.get() {
            if loaded.with_untracked(|l| l.contains_key(&id)) {
                continue;
            }
            let Some(job) = candidates.with_untracked(|c| c.iter().find(|j| j.id == id).cloned())
            else {
                continue;
            };
            let Some(experiment) = store
                .experiments
                .with_untracked(|e| e.iter().find(|x| x.id == job.experiment_id).cloned())
            else {
                continue;
            };
            spawn_local(async move {
                let l = load(job, experiment).await;
                loaded.try_update(|m| {
                    m.insert(id, l);
                });
            });
        }
    });
    let shown = Memo::new(move |_| {
        let ids = picked.get();
        loaded.with(|l| {
            ids.iter()
                .filter_map(|id| l.get(id).cloned())
                .collect::<Vec<_>>()
        })
    });
    let baseline = RwSignal::new(None::<i64>);
    let only_differences = RwSignal::new(true);

    let loss_series = Signal::derive(move || {
        shown
            .get()
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let s = l.scalars.as_ref()?;
                Some(Series {
                    name: title(l),
                    colour: COLOURS[i % COLOURS.len()],
                    points: s
                        .steps
                        .iter()
                        .zip(&s.loss)
                        .map(|(x, y)| (*x as f64, *y))
                        .collect(),
                })
            })
            .collect::<Vec<_>>()
    });
    let metric = Memo::new(move |_| {
        shown.with(|s| {
            s.iter().find_map(|l| {
                l.evals
                    .first()
                    .and_then(|e| e.metrics.first())
                    .map(|m| m.0.clone())
            })
        })
    });
    let score_series = Signal::derive(move || {
        let Some(metric) = metric.get() else {
            return Vec::new();
        };
        shown
            .get()
            .iter()
            .enumerate()
            .map(|(i, l)| Series {
                name: title(l),
                colour: COLOURS[i % COLOURS.len()],
                points: l
                    .evals
                    .iter()
                    .filter_map(|e| {
                        let v = e.metrics.iter().find(|m| m.0 == metric)?.1;
                        Some((
                            e.step as f64,
                            if format::is_correlation(&metric) {
                                v
                            } else {
                                v * 100.0
                            },
                        ))
                    })
                    .collect(),
            })
            .collect::<Vec<_>>()
    });

    let toggle = move |id: i64| {
        picked.update(|p| {
            if let Some(at) = p.iter().position(|x| *x == id) {
                p.remove(at);
            } else {
                p.push(id);
            }
        })
    };
    let choices = move || {
        candidates
            .get()
            .into_iter()
            .map(|job| {
                let id = job.id;
                let name = store.experiments.with(|e| {
                    e.iter()
                        .find(|x| x.id == job.experiment_id)
                        .map(|x| x.name.clone())
                        .unwrap_or_default()
                });
                let checked = move || picked.with(|p| p.contains(&id));
                view! {
                    <label class="pick">
                        <input type="checkbox" data-job=id prop:checked=checked on:change=move |_| toggle(id) />
                        {format!(" {name} · job {id} ({}, {})", job.kind.as_str(), job.status.as_str())}
                    </label>
                }
            })
            .collect_view()
    };

    let params_table = move || {
        let runs = shown.get();
        if runs.is_empty() {
            return None;
        }
        let rows = PARAMS
            .iter()
            .filter_map(|spec| {
                let values: Vec<String> = runs
                    .iter()
                    .map(|l| l.params.get(spec.name).unwrap_or_default())
                    .collect();
                let differs = values.iter().any(|v| *v != values[0]);
                if only_differences.get() && !differs {
                    return None;
                }
                let cells = values
                    .into_iter()
                    .map(|v| view! { <td>{v}</td> })
                    .collect_view();
                Some(view! {
                    <tr class:differs=differs data-param=spec.name>
                        <th title=spec.help>{spec.name}</th>
                        {cells}
                    </tr>
                })
            })
            .collect_view();
        let heads = runs
            .iter()
            .map(|l| view! { <th>{title(l)}</th> })
            .collect_view();
        Some(view! {
            <table class="runs compare-params" id="compare-params">
                <thead><tr><th>"parameter"</th>{heads}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        })
    };

    let results_table = move || {
        let runs = shown.get();
        if runs.is_empty() {
            return None;
        }
        let base_id = baseline.get().or_else(|| runs.first().map(|l| l.job.id));
        let base = runs
            .iter()
            .find(|l| Some(l.job.id) == base_id)
            .and_then(|l| l.result.clone());
        type Measure = (&'static str, fn(&JobResult) -> Option<f64>, bool);
        let measures: [Measure; 6] = [
            ("dev score", |r| Some(r.best_score), false),
            (
                "encoder parameters",
                |r| Some(r.encoder_params as f64),
                false,
            ),
            (
                "trainable parameters",
                |r| Some(r.trainable_params as f64),
                false,
            ),
            ("median step", |r| Some(r.median_step_seconds), true),
            ("dev pass", |r| Some(r.eval_seconds), true),
            ("peak memory", |r| r.peak_rss_mib, false),
        ];
        let radios = runs
            .iter()
            .map(|l| {
                let id = l.job.id;
                view! {
                    <th>
                        <label>
                            <input type="radio" name="compare-baseline" data-job=id
                                prop:checked=move || baseline.get().or(base_id) == Some(id)
                                on:change=move |_| baseline.set(Some(id)) />
                            " baseline"
                        </label>
                    </th>
                }
            })
            .collect_view();
        let rows = measures
            .iter()
            .map(|(name, value, time)| {
                let cells = runs
                    .iter()
                    .map(|l| {
                        let Some(r) = &l.result else {
                            return view! { <td class="muted">"no result"</td> }.into_any();
                        };
                        let Some(v) = value(r) else {
                            return view! { <td>"–"</td> }.into_any();
                        };
                        let shown = match *name {
                            "dev score" => format::score(&r.metric, v),
                            "encoder parameters" | "trainable parameters" => {
                                format::params(v as usize)
                            }
                            "peak memory" => format::mib(v),
                            _ => format::seconds(v),
                        };
                        let note = base.as_ref().and_then(value).map(|b| {
                            if *name == "dev score" {
                                format!("{} vs baseline", format::score_delta(&r.metric, v - b))
                            } else if *time && v > 0.0 {
                                format!("{} speed-up", format::times(b / v))
                            } else if b > 0.0 {
                                format!("{} of baseline", format::pct(v / b))
                            } else {
                                String::new()
                            }
                        });
                        view! { <td class="num">{shown}<span class="note">{note}</span></td> }
                            .into_any()
                    })
                    .collect_view();
                view! { <tr><th>{*name}</th>{cells}</tr> }
            })
            .collect_view();
        let heads = runs
            .iter()
            .map(|l| view! { <th>{title(l)}</th> })
            .collect_view();
        Some(view! {
            <table class="runs compare-results" id="compare-results">
                <thead><tr><th>"result"</th>{heads}</tr><tr><th></th>{radios}</tr></thead>
                <tbody>{rows}</tbody>
            </table>
        })
    };

    let unit = move || {
        if metric.get().as_deref().is_some_and(format::is_correlation) {
            "correlation"
        } else {
            "%"
        }
    };
    view! {
        <section class="page compare-page">
            <h1>"Compare runs"</h1>
            <Show
                when=move || experiments.with(|e| !e.is_empty())
                fallback=|| view! { <p class="muted">"Choose runs in the runs table, then Compare."</p> }
            >
                <div class="compare-picks" id="compare-picks">{choices}</div>
                <div class="chart-grid">
                    <LineChart title="Training loss" unit="cross-entropy (+ L1 in stage 1)" series=loss_series />
                    <LineChart title="Dev score" unit="" series=score_series empty="no evaluation yet" />
                </div>
                <p class="muted small">{move || format!("dev score in {}; both against the step", unit())}</p>
                <h2>"Results"</h2>
                {results_table}
                <h2>
                    "Hyper-parameters "
                    <label class="unit">
                        <input type="checkbox" id="compare-only-differences" bind:checked=only_differences />
                        " only the differences"
                    </label>
                </h2>
                {params_table}
            </Show>
        </section>
    }
}
