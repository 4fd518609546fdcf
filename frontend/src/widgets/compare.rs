//! Light-PEFT against the vanilla baseline (and random pruning when run): every number next
//! to the baseline's, and the artifacts to download.

use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::query::{ArrayFormat, ArrayKind};
use lightpeft_api::rest::{Artifact, ComparedRun, Comparison, Job, JobKind, JobResult, JobStatus};

use crate::{
    api::{self, Failure},
    format,
    store::use_store,
};

struct Column {
    title: String,
    result: JobResult,
    run: Option<ComparedRun>,
}

fn ratio_note(this: f64, base: Option<f64>, what: &str) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{} of baseline{what}", format::pct(this / b)),
        _ => String::new(),
    }
}

fn speed_note(speedup: Option<f64>) -> String {
    match speedup {
        Some(s) if s >= 1.0 => format!("{} faster than baseline", format::times(s)),
        Some(s) => format!("{} slower than baseline", format::times(1.0 / s)),
        None => String::new(),
    }
}

/// The comparison table of an experiment.
#[component]
pub fn ComparePanel(
    /// The experiment.
    experiment: i64,
    /// Its jobs (a finished one triggers a reload).
    #[prop(into)]
    jobs: Signal<Vec<Job>>,
) -> impl IntoView {
    let store = use_store();
    let data = RwSignal::new(None::<Comparison>);
    let failure = RwSignal::new(None::<Failure>);
    let baseline_failure = RwSignal::new(None::<Failure>);
    let finished = Memo::new(move |_| {
        jobs.with(|js| {
            js.iter()
                .filter(|j| j.status == JobStatus::Succeeded)
                .map(|j| j.id)
                .collect::<Vec<_>>()
        })
    });
    Effect::new(move |_| {
        let _ = finished.get();
        spawn_local(async move {
            match api::get::<Comparison>(&format!("/experiments/{experiment}/compare")).await {
                Ok(c) => {
                    data.try_set(Some(c));
                    failure.try_set(None);
                }
                Err(e) => {
                    failure.try_set(Some(e));
                }
            }
        });
    });
    let baseline_running = move || {
        jobs.with(|js| {
            js.iter()
                .any(|j| j.kind == JobKind::Baseline && !j.status.is_final())
        })
    };
    let start_baseline = move |_| {
        spawn_local(async move {
            match api::post_empty::<Job>(&format!("/experiments/{experiment}/baseline")).await {
                Ok(job) => {
                    baseline_failure.set(None);
                    store.upsert(job);
                }
                Err(e) => baseline_failure.set(Some(e)),
            }
        })
    };

    let table = move || {
        let c = data.get()?;
        let mut columns = Vec::new();
        if let Some(b) = &c.baseline {
            columns.push(Column {
                title: format!("vanilla LoRA baseline (job #{})", b.job_id),
                result: b.clone(),
                run: None,
            });
        }
        for r in &c.runs {
            let name = if r.random {
                "random pruning"
            } else {
                "Light-PEFT"
            };
            columns.push(Column {
                title: format!(
                    "{name} (job #{}, plan #{})",
                    r.result.job_id,
                    r.result.plan_id.unwrap_or_default()
                ),
                result: r.result.clone(),
                run: Some(r.clone()),
            });
        }
        if columns.is_empty() {
            return Some(
                view! { <p class="muted">"No finished stage-2 or baseline job yet."</p> }
                    .into_any(),
            );
        }
        let base = c.baseline.clone();
        let head = columns
            .iter()
            .map(|c| view! { <th scope="col">{c.title.clone()}</th> })
            .collect_view();
        let metric = columns[0].result.metric.clone();
        type Cell = Box<dyn Fn(&Column) -> (String, String)>;
        let b = base.clone();
        let rows: Vec<(String, Cell)> = vec![
            (
                format!("dev {metric}"),
                Box::new(|c: &Column| {
                    let metric = c.result.metric.as_str();
                    (
                        format::score(metric, c.result.best_score),
                        c.run
                            .as_ref()
                            .and_then(|r| r.score_delta)
                            .map(|d| format!("{} vs baseline", format::score_delta(metric, d)))
                            .unwrap_or_default(),
                    )
                }),
            ),
            (
                "majority-class score".into(),
                Box::new(|c: &Column| {
                    let metric = c.result.metric.as_str();
                    (
                        format::score(metric, c.result.majority_score),
                        String::new(),
                    )
                }),
            ),
            (
                "trainable parameters".into(),
                Box::new({
                    let b = b.clone();
                    move |c: &Column| {
                        (
                            format::params(c.result.trainable_params),
                            if c.run.is_some() {
                                ratio_note(
                                    c.result.trainable_params as f64,
                                    b.as_ref().map(|b| b.trainable_params as f64),
                                    "",
                                )
                            } else {
                                String::new()
                            },
                        )
                    }
                }),
            ),
            (
                "PEFT parameters".into(),
                Box::new({
                    let b = b.clone();
                    move |c: &Column| {
                        (
                            format::params(c.result.peft_params),
                            if c.run.is_some() {
                                ratio_note(
                                    c.result.peft_params as f64,
                                    b.as_ref().map(|b| b.peft_params as f64),
                                    "",
                                )
                            } else {
                                String::new()
                            },
                        )
                    }
                }),
            ),
            (
                "encoder parameters (total, frozen)".into(),
                Box::new({
                    let b = b.clone();
                    move |c: &Column| {
                        (
                            format::params(c.result.encoder_params),
                            if c.run.is_some() {
                                ratio_note(
                                    c.result.encoder_params as f64,
                                    b.as_ref().map(|b| b.encoder_params as f64),
                                    "",
                                )
                            } else {
                                String::new()
                            },
                        )
                    }
                }),
            ),
            (
                "training step (median)".into(),
                Box::new(|c: &Column| {
                    (
                        format::ms(c.result.median_step_seconds * 1000.0),
                        speed_note(c.run.as_ref().and_then(|r| r.train_speedup)),
                    )
                }),
            ),
            (
                "peak memory (process RSS)".into(),
                Box::new({
                    let b = b.clone();
                    move |c: &Column| {
                        (
                            c.result
                                .peak_rss_mib
                                .map(format::mib)
                                .unwrap_or_else(|| "—".into()),
                            match (
                                c.run.is_some(),
                                c.result.peak_rss_mib,
                                b.as_ref().and_then(|b| b.peak_rss_mib),
                            ) {
                                (true, Some(x), Some(y)) => ratio_note(x, Some(y), ""),
                                _ => String::new(),
                            },
                        )
                    }
                }),
            ),
            (
                "inference (one dev pass)".into(),
                Box::new(|c: &Column| {
                    (
                        format!(
                            "{} · {} / example",
                            format::seconds(c.result.eval_seconds),
                            format::ms(
                                c.result.eval_seconds * 1000.0
                                    / c.result.eval_examples.max(1) as f64
                            )
                        ),
                        speed_note(c.run.as_ref().and_then(|r| r.inference_speedup)),
                    )
                }),
            ),
            (
                "optimiser steps".into(),
                Box::new(|c: &Column| (format::thousands(c.result.steps as u64), String::new())),
            ),
        ];
        let body = rows
            .into_iter()
            .map(|(label, cell)| {
                let cells = columns
                    .iter()
                    .map(|c| {
                        let (value, note) = cell(c);
                        view! { <td class="num">{value}<span class="note">{note}</span></td> }
                    })
                    .collect_view();
                view! { <tr><th scope="row">{label}</th>{cells}</tr> }
            })
            .collect_view();
        let missing = base.is_none().then(|| view! { <p class="muted small">"No baseline yet: ratios appear once the vanilla baseline has finished."</p> });
        Some(view! {
            <table class="compare" id="compare-table">
                <thead><tr><th></th>{head}</tr></thead>
                <tbody>{body}</tbody>
            </table>
            {missing}
            <p class="muted small">"Times and memory measured on this machine in this server process; memory is the whole process's peak, so it includes the server's other work."</p>
        }.into_any())
    };

    view! {
        <div class="compare-box">
            <div class="actions">
                <button id="run-baseline" on:click=start_baseline disabled=baseline_running>
                    {move || if baseline_running() { "Baseline queued or running…" } else { "Run vanilla baseline" }}
                </button>
                {move || baseline_failure.get().map(|f| view! { <span class="error" role="alert">{f.message}</span> })}
            </div>
            {move || failure.get().map(|f| view! { <p class="error">{f.message}</p> })}
            {table}
            <h3>"Downloads"</h3>
            <Downloads jobs=jobs />
        </div>
    }
}

/// Each finished job's artifacts, and the estimation arrays.
#[component]
fn Downloads(#[prop(into)] jobs: Signal<Vec<Job>>) -> impl IntoView {
    let finished = Memo::new(move |_| {
        jobs.with(|js| {
            js.iter()
                .filter(|j| j.status == JobStatus::Succeeded)
                .cloned()
                .collect::<Vec<_>>()
        })
    });
    view! {
        <For each=move || finished.get() key=|j| j.id let:job>
            <JobDownloads job=job />
        </For>
    }
}

#[component]
fn JobDownloads(job: Job) -> impl IntoView {
    let id = job.id;
    let list = RwSignal::new(Vec::<Artifact>::new());
    spawn_local(async move {
        if let Ok(a) = api::get::<Vec<Artifact>>(&format!("/jobs/{id}/artifacts")).await {
            list.try_set(a);
        }
    });
    let arrays = (job.kind == JobKind::Estimation).then(|| {
        ArrayKind::ALL
            .into_iter()
            .map(|kind| {
                let href = |format: ArrayFormat| {
                    api::browser_url(&format!(
                        "/jobs/{id}/arrays?kind={}&format={}",
                        kind.as_str(),
                        format.as_str()
                    ))
                };
                view! {
                    <li>
                        {format!("{} array: ", kind.as_str())}
                        <a href=href(ArrayFormat::Csv) download>"CSV"</a>
                        " · "
                        <a href=href(ArrayFormat::Safetensors) download>"safetensors"</a>
                    </li>
                }
            })
            .collect_view()
    });
    view! {
        <div class="downloads" data-job=id>
            <h4>{format!("job #{id} ({})", job.kind.as_str())}</h4>
            <ul>
                {move || {
                    list.get()
                        .into_iter()
                        .map(|a| {
                            let href = api::browser_url(&format!("/jobs/{id}/artifacts/{}", String::from(js_sys::encode_uri_component(&a.name))));
                            view! {
                                <li>
                                    <a href=href download>{a.name.clone()}</a>
                                    " "
                                    <span class="muted small">{format!("{} · {}", format::bytes(a.bytes), a.description)}</span>
                                </li>
                            }
                        })
                        .collect_view()
                }}
                {arrays}
            </ul>
        </div>
    }
}
