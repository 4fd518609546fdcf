//! A study's page: the Pareto chart filling in as runs finish (score against the chosen cost),
//! the table of every configuration with its ratios to the all-targets baseline, exports,
//! cancel and resume.

use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::use_params_map;
use lightpeft_api::rest::{STUDY_AXES, StudyAxis, StudyReport, StudyRole, StudyState};

use crate::{
    api::{self, Failure, Latest},
    format,
    store::use_store,
    widgets::pareto,
};

/// How often a live study's report is read again besides on job events.
const POLL_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

/// `/studies/:id`.
#[component]
pub fn StudyPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").and_then(|s| s.parse::<i64>().ok())));
    move || match id.get() {
        Some(id) => view! { <StudyView id=id /> }.into_any(),
        None => view! { <p class="error">"No such study."</p> }.into_any(),
    }
}

fn state_class(state: StudyState) -> &'static str {
    match state {
        StudyState::WaitingForEstimation => "status-queued",
        StudyState::Running => "status-running",
        StudyState::Finished => "status-succeeded",
        StudyState::Cancelled => "status-cancelled",
    }
}

fn axis_name(axis: StudyAxis) -> &'static str {
    match axis {
        StudyAxis::EncoderParams => "encoder parameters",
        StudyAxis::TrainSpeedup => "step speed-up",
        StudyAxis::InferenceSpeedup => "inference speed-up",
        StudyAxis::PeakMemory => "peak memory",
    }
}

#[component]
fn StudyView(id: i64) -> impl IntoView {
    let store = use_store();
    let report = RwSignal::new(None::<StudyReport>);
    let failure = RwSignal::new(None::<Failure>);
    let latest = Latest::new(report).reporting(failure);
    // A job of the study (or its estimation) that moves reloads the report.
    let key = Memo::new(move |_| {
        let estimation = report.with(|r| r.as_ref().map(|r| r.study.estimation_job_id));
        store.jobs.with(|jobs| {
            jobs.iter()
                .filter(|j| j.study_id == Some(id) || Some(j.id) == estimation)
                .map(|j| (j.id, j.status))
                .collect::<Vec<_>>()
        })
    });
    Effect::new(move |_| {
        key.track();
        latest.fetch(format!("/studies/{id}"));
    });
    // And every few seconds while it runs: a report can change with no job event reaching
    // this page (an event stream that lagged, a request that failed).
    let live = move || {
        report.with_untracked(|r| {
            r.as_ref().is_none_or(|r| {
                matches!(
                    r.state,
                    StudyState::Running | StudyState::WaitingForEstimation
                )
            })
        })
    };
    if let Ok(handle) = set_interval_with_handle(
        move || {
            if live() {
                latest.fetch(format!("/studies/{id}"));
            }
        },
        POLL_EVERY,
    ) {
        on_cleanup(move || handle.clear());
    }
    let axis = RwSignal::new(StudyAxis::EncoderParams);
    // Cancel and resume answer the study's report.
    let act = move |action: &'static str| {
        spawn_local(async move {
            match api::post_empty::<StudyReport>(&format!("/studies/{id}/{action}")).await {
                Ok(r) => {
                    failure.set(None);
                    report.set(Some(r));
                }
                Err(e) => failure.set(Some(e)),
            }
        })
    };
    let chart = Memo::new(move |_| {
        report.with(|r| {
            r.as_ref().map(|r| {
                let experiment = r.study.experiment_id;
                pareto::svg(r, axis.get(), &|c| {
                    c.job_ids
                        .first()
                        .map(|job| format!("/experiments/{experiment}?job={job}"))
                })
            })
        })
    });
    let download = move || {
        chart.get().map(|svg| {
            format!(
                "data:image/svg+xml;charset=utf-8,{}",
                String::from(js_sys::encode_uri_component(&svg))
            )
        })
    };
    let body = move || {
        report.get().map(|r| {
            let live = matches!(r.state, StudyState::Running | StudyState::WaitingForEstimation);
            let metric = r.metric.clone().unwrap_or_else(|| "score".into());
            let experiment = r.study.experiment_id;
            let jobs_done = r.jobs.iter().filter(|j| j.status.is_final()).count();
            let resumable = r.study.error.is_none()
                && (matches!(r.state, StudyState::Cancelled)
                    || r.jobs.iter().any(|j| j.status.can_resume()));
            let rows = r
                .configurations
                .iter()
                .map(|c| {
                    let (colour, _) = pareto::role_style(c.role);
                    let score = c
                        .score_mean
                        .map(|m| {
                            format!(
                                "{} ± {}",
                                format::score(&metric, m),
                                format::score(&metric, c.score_std.unwrap_or(0.0))
                            )
                        })
                        .unwrap_or_else(|| "–".into());
                    let delta = if c.role == StudyRole::BaselineAllTargets {
                        "reference".to_string()
                    } else {
                        c.score_delta
                            .map(|d| format::score_delta(&metric, d))
                            .unwrap_or_default()
                    };
                    let params = c
                        .encoder_params
                        .map(|p| {
                            let ratio = c
                                .encoder_params_ratio
                                .map(|r| format!(" ({})", format::pct(r)))
                                .unwrap_or_default();
                            format!("{}{ratio}", format::params(p.round() as usize))
                        })
                        .unwrap_or_default();
                    let speed = |s: Option<f64>, t: Option<f64>| match (s, t) {
                        (Some(secs), Some(up)) => format!("{} ({})", format::seconds(secs), format::times(up)),
                        (Some(secs), None) => format::seconds(secs),
                        _ => String::new(),
                    };
                    let frontier = c
                        .frontier
                        .iter()
                        .map(|a| axis_name(*a))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let link = c.job_ids.first().map(|j| format!("/experiments/{experiment}?job={j}"));
                    let label = c.label.clone();
                    view! {
                        <tr data-role=format!("{:?}", c.role)>
                            <td>
                                <span class="swatch" style=format!("background:{colour}")></span>
                                {match link {
                                    Some(href) => view! { <a href=href>{label}</a> }.into_any(),
                                    None => view! { <span>{label}</span> }.into_any(),
                                }}
                            </td>
                            <td class="num">{format!("{}/{}", c.finished, c.job_ids.len())}</td>
                            <td class="num">{score}</td>
                            <td class="num">{delta}</td>
                            <td class="num">{params}</td>
                            <td class="num">{speed(c.step_seconds, c.train_speedup)}</td>
                            <td class="num">{speed(c.eval_seconds, c.inference_speedup)}</td>
                            <td class="num">{c.peak_rss_mib.map(format::mib).unwrap_or_default()}</td>
                            <td class="small">{frontier}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <h2>
                    {format!("Study {id}")}
                    <span class=format!("status {}", state_class(r.state)) id="study-state">
                        {r.state.describe()}
                    </span>
                </h2>
                <p class="muted">
                    "Plans of estimation job " {r.study.estimation_job_id} " in "
                    <a href=format!("/experiments/{experiment}")>{format!("experiment {experiment}")}</a>
                    {format!(
                        " · {} seed(s) per configuration · {jobs_done} of {} jobs ended",
                        r.study.spec.seeds,
                        r.jobs.len()
                    )}
                </p>
                {r.study.error.clone().map(|e| view! { <p class="error">{e}</p> })}
                <div class="study-tools">
                    <label for="study-axis">"Cost axis "</label>
                    <select
                        id="study-axis"
                        on:change=move |ev| {
                            let v = event_target_value(&ev);
                            if let Some(a) = STUDY_AXES.iter().find(|a| a.as_str() == v) {
                                axis.set(*a);
                            }
                        }
                    >
                        {STUDY_AXES
                            .iter()
                            .map(|a| view! {
                                <option value=a.as_str() selected=move || axis.get() == *a>{axis_name(*a)}</option>
                            })
                            .collect_view()}
                    </select>
                    <a class="button" href=api::browser_url(&format!("/studies/{id}/export?format=csv")) download="">"CSV"</a>
                    <a class="button" href=api::browser_url(&format!("/studies/{id}/export?format=json")) download="">"JSON"</a>
                    <a class="button" id="study-svg" href=download download=move || format!("study-{id}-{}.svg", axis.get().as_str())>"Chart (SVG)"</a>
                    <button
                        id="study-png"
                        on:click=move |_| {
                            if let Some(svg) = chart.get_untracked() {
                                let name = format!("study-{id}-{}.png", axis.get_untracked().as_str());
                                if let Err(e) = pareto::save_png(&svg, name) {
                                    failure.set(Some(Failure::local(format!("PNG: {e}"))));
                                }
                            }
                        }
                    >
                        "Chart (PNG)"
                    </button>
                    {live.then(|| view! { <button id="study-cancel" on:click=move |_| act("cancel")>"Cancel study"</button> })}
                    {resumable.then(|| view! { <button id="study-resume" on:click=move |_| act("resume")
                        title="Queue its cancelled, failed or interrupted jobs again; finished ones keep their results">"Resume study"</button> })}
                </div>
                <div class="pareto-box" id="study-chart" inner_html=move || chart.get().unwrap_or_default()></div>
                <table class="runs study-table" id="study-table">
                    <thead>
                        <tr>
                            <th>"configuration"</th>
                            <th>"seeds done"</th>
                            <th>{format!("dev {metric}")}</th>
                            <th>"vs all-targets baseline"</th>
                            <th>"encoder (of baseline)"</th>
                            <th>"step (speed-up)"</th>
                            <th>"dev pass (speed-up)"</th>
                            <th>"peak memory"</th>
                            <th>"on the frontier of"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            }
        })
    };
    view! {
        <section class="page study">
            {move || failure.get().map(|f| view! { <p class="error">{f.message}</p> })}
            {body}
        </section>
    }
}
