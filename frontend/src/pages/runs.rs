//! The runs table: one row per experiment with its current job, live from `/events`.

use std::collections::HashMap;

use leptos::{prelude::*, task::spawn_local};
use leptos_router::components::A;
use lightpeft_api::rest::{Comparison, Experiment, Job, JobKind, JobStatus, Plan, Worker};

use crate::{api, format, store::use_store, widgets::jobs::Progress};

/// Results that need extra requests: parameters kept (from the committed plan) and the
/// measured speedup (from the comparison with the baseline).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Outcome {
    kept: Option<(usize, usize)>,
    speedup: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    exp: Experiment,
    current: Option<Job>,
    best: Option<(f64, String)>,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Created,
    Name,
    Status,
    Best,
    Kept,
    Speedup,
}

fn row_of(exp: Experiment, jobs: &[Job], outcome: Outcome) -> Row {
    let mine: Vec<&Job> = jobs.iter().filter(|j| j.experiment_id == exp.id).collect();
    let current = mine
        .iter()
        .filter(|j| !j.status.is_final())
        .min_by_key(|j| j.id)
        .or_else(|| mine.iter().max_by_key(|j| j.id))
        .map(|j| (*j).clone());
    let best = mine
        .iter()
        .filter(|j| j.kind == JobKind::Finetune)
        .chain(mine.iter().filter(|j| j.kind != JobKind::Finetune))
        .find_map(|j| Some((j.best_score?, j.metric.clone().unwrap_or_default())));
    Row {
        exp,
        current,
        best,
        outcome,
    }
}

async fn fetch_outcome(exp: i64, plan: Option<i64>) -> Outcome {
    let mut out = Outcome::default();
    if let Some(plan) = plan
        && let Ok(p) = api::get::<Plan>(&format!("/plans/{plan}")).await
    {
        out.kept = Some((
            p.preview.parameters_after.total,
            p.preview.parameters_before.total,
        ));
    }
    if let Ok(c) = api::get::<Comparison>(&format!("/experiments/{exp}/compare")).await {
        out.speedup = c
            .runs
            .iter()
            .filter(|r| !r.random)
            .find_map(|r| r.train_speedup);
    }
    out
}

/// The list of experiments.
#[component]
pub fn RunsPage() -> impl IntoView {
    let store = use_store();
    let outcomes = RwSignal::new(HashMap::<i64, Outcome>::new());
    let filter = RwSignal::new(String::new());
    let status_filter = RwSignal::new(String::new());
    let sort = RwSignal::new((SortKey::Created, true));
    // Experiments ticked for the comparison page.
    let picked = RwSignal::new(Vec::<i64>::new());
    let navigate = leptos_router::hooks::use_navigate();

    // Re-fetch outcomes whenever a stage-2 or baseline job of an experiment finishes.
    let finished = Memo::new(move |_| {
        store.jobs.with(|jobs| {
            let mut keys: Vec<(i64, i64, Option<i64>)> = jobs
                .iter()
                .filter(|j| j.status == JobStatus::Succeeded && j.kind != JobKind::Estimation)
                .map(|j| (j.experiment_id, j.id, j.plan_id))
                .collect();
            keys.sort();
            keys
        })
    });
    Effect::new(move |_| {
        let mut latest_plan = HashMap::<i64, Option<i64>>::new();
        for (exp, _, plan) in finished.get() {
            let slot = latest_plan.entry(exp).or_insert(None);
            if plan.is_some() {
                *slot = plan;
            }
        }
        for (exp, plan) in latest_plan {
            spawn_local(async move {
                let out = fetch_outcome(exp, plan).await;
                outcomes.update(|m| {
                    m.insert(exp, out);
                });
            });
        }
    });

    let rows = Memo::new(move |_| {
        let jobs = store.jobs.get();
        let outs = outcomes.get();
        let needle = filter.get().to_lowercase();
        let wanted = status_filter.get();
        let mut rows: Vec<Row> = store
            .experiments
            .get()
            .into_iter()
            .map(|e| {
                let o = outs.get(&e.id).copied().unwrap_or_default();
                row_of(e, &jobs, o)
            })
            .filter(|r| {
                let status = r
                    .current
                    .as_ref()
                    .map(|j| j.status.as_str())
                    .unwrap_or("new");
                let text = format!("{} {} {} {status}", r.exp.name, r.exp.task, r.exp.model)
                    .to_lowercase();
                text.contains(&needle) && (wanted.is_empty() || status == wanted)
            })
            .collect();
        let (key, desc) = sort.get();
        rows.sort_by(|a, b| {
            let ord = match key {
                SortKey::Created => a.exp.id.cmp(&b.exp.id),
                SortKey::Name => a.exp.name.cmp(&b.exp.name),
                SortKey::Status => status_name(a).cmp(status_name(b)),
                SortKey::Best => {
                    cmp_opt(a.best.as_ref().map(|b| b.0), b.best.as_ref().map(|b| b.0))
                }
                SortKey::Kept => cmp_opt(kept_fraction(a), kept_fraction(b)),
                SortKey::Speedup => cmp_opt(a.outcome.speedup, b.outcome.speedup),
            };
            if desc { ord.reverse() } else { ord }
        });
        rows
    });

    let header = move |label: &'static str, key: SortKey| {
        let arrow = move || match sort.get() {
            (k, true) if k == key => " ▼",
            (k, false) if k == key => " ▲",
            _ => "",
        };
        let aria = move || match sort.get() {
            (k, true) if k == key => "descending",
            (k, false) if k == key => "ascending",
            _ => "none",
        };
        view! {
            <th aria-sort=aria>
                <button
                    class="sort"
                    on:click=move |_| {
                        sort.update(|s| *s = if s.0 == key { (key, !s.1) } else { (key, true) })
                    }
                >
                    {label}
                    {arrow}
                </button>
            </th>
        }
    };

    view! {
        <section class="page">
            <div class="page-head">
                <h1>"Runs"</h1>
                <A href="/new" attr:class="button primary">
                    "New experiment"
                </A>
            </div>
            {move || store.failure.get().map(|f| view! { <p class="error">{f.message}</p> })}
            <div class="filters">
                <label>
                    "Filter "
                    <input
                        type="search"
                        id="runs-filter"
                        placeholder="name, task, model or status"
                        bind:value=filter
                    />
                </label>
                <label>
                    "Status "
                    <select id="runs-status" bind:value=status_filter>
                        <option value="">"any"</option>
                        {["queued", "running", "succeeded", "failed", "cancelled", "interrupted", "new"]
                            .into_iter()
                            .map(|s| view! { <option value=s>{s}</option> })
                            .collect_view()}
                    </select>
                </label>
                <span class="muted">{move || format!("{} experiments", rows.with(|r| r.len()))}</span>
            </div>
            <div class="table-scroll">
            <table class="runs" id="runs-table">
                <thead>
                    <tr>
                        <th class="pick">
                            <button
                                id="compare-runs"
                                class="link-button"
                                title="Compare the chosen experiments' runs"
                                disabled=move || picked.with(|p| p.len() < 2)
                                on:click=move |_| {
                                    let ids: Vec<String> = picked.get_untracked().iter().map(i64::to_string).collect();
                                    navigate(&format!("/compare?experiments={}", ids.join(",")), Default::default());
                                }
                            >
                                {move || format!("Compare ({})", picked.with(Vec::len))}
                            </button>
                        </th>
                        {header("Experiment", SortKey::Name)}
                        <th>"Task"</th>
                        <th>"Model"</th>
                        {header("Status", SortKey::Status)}
                        <th>"Progress"</th>
                        {header("Best score", SortKey::Best)}
                        {header("Parameters kept", SortKey::Kept)}
                        {header("Training speedup", SortKey::Speedup)}
                        {header("Created", SortKey::Created)}
                    </tr>
                </thead>
                <tbody>
                    <For each=move || rows.get() key=|r| (r.exp.id, format!("{r:?}")) let:row>
                        <RunRow row=row picked=picked />
                    </For>
                </tbody>
            </table>
            </div>
            <Show when=move || store.experiments.with(|e| e.is_empty())>
                <p class="muted">"No experiments yet. Start one with New experiment."</p>
            </Show>
            <WorkersPanel />
        </section>
    }
}

/// How often the workers table is read again (heartbeats come every 5 s).
const WORKERS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The processes that train jobs: this server's local worker and every `lightpeft worker`
/// sharing its database, with their last heartbeat and running jobs.
#[component]
fn WorkersPanel() -> impl IntoView {
    let workers = RwSignal::new(None::<Vec<Worker>>);
    let failure = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match api::get::<Vec<Worker>>("/workers").await {
                Ok(list) => {
                    workers.set(Some(list));
                    failure.set(None);
                }
                Err(e) => failure.set(Some(e.message)),
            }
        })
    };
    load();
    if let Ok(handle) = set_interval_with_handle(load, WORKERS_EVERY) {
        on_cleanup(move || handle.clear());
    }
    view! {
        <h2 id="workers-heading">"Workers"</h2>
        {move || failure.get().map(|f| view! { <p class="error small">{f}</p> })}
        <div class="table-scroll">
            <table class="runs" id="workers-table" aria-labelledby="workers-heading">
                <thead>
                    <tr>
                        <th>"Name"</th>
                        <th>"Device"</th>
                        <th>"Slots"</th>
                        <th>"Running jobs"</th>
                        <th>"Last heartbeat"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        workers
                            .get()
                            .unwrap_or_default()
                            .into_iter()
                            .map(|w| {
                                let running = if w.running.is_empty() {
                                    "none".to_string()
                                } else {
                                    w.running
                                        .iter()
                                        .map(|id| format!("#{id}"))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                };
                                let name = w.name.clone();
                                view! {
                                    <tr data-worker=name>
                                        <td>{w.name}</td>
                                        <td>{w.device}</td>
                                        <td>{w.slots}</td>
                                        <td>{running}</td>
                                        <td>{format!("{} ago", format::duration(w.seconds_since_heartbeat))}</td>
                                    </tr>
                                }
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
        </div>
    }
}

fn status_name(r: &Row) -> &'static str {
    r.current
        .as_ref()
        .map(|j| j.status.as_str())
        .unwrap_or("new")
}

fn kept_fraction(r: &Row) -> Option<f64> {
    r.outcome.kept.map(|(a, b)| a as f64 / b.max(1) as f64)
}

fn cmp_opt(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(&b),
        (a, b) => a.is_some().cmp(&b.is_some()),
    }
}

#[component]
fn RunRow(row: Row, picked: RwSignal<Vec<i64>>) -> impl IntoView {
    let href = format!("/experiments/{}", row.exp.id);
    let id = row.exp.id;
    let checked = move || picked.with(|p| p.contains(&id));
    let toggle = move |_| {
        picked.update(|p| {
            if let Some(at) = p.iter().position(|x| *x == id) {
                p.remove(at);
            } else {
                p.push(id);
            }
        })
    };
    let status = status_name(&row);
    let stage = row
        .current
        .as_ref()
        .map(|j| j.kind.as_str())
        .unwrap_or("not started");
    let (best, metric) = row
        .best
        .as_ref()
        .map(|(v, m)| (format::score(m, *v), format!("dev {m}")))
        .unwrap_or_else(|| ("—".into(), String::new()));
    let (kept, kept_note) = row
        .outcome
        .kept
        .map(|(a, b)| {
            (
                format::pct(a as f64 / b.max(1) as f64),
                format!("{} of {}", format::count(a), format::params(b)),
            )
        })
        .unwrap_or_else(|| ("—".into(), String::new()));
    let (speedup, speedup_note) = row
        .outcome
        .speedup
        .map(|s| (format::times(s), "step time vs baseline".to_string()))
        .unwrap_or_else(|| ("—".into(), "needs a baseline".into()));
    view! {
        <tr data-experiment=row.exp.id>
            <td class="pick">
                <input type="checkbox" class="compare-pick" aria-label="compare" prop:checked=checked on:change=toggle />
            </td>
            <td>
                <A href=href>{row.exp.name.clone()}</A>
            </td>
            <td>{row.exp.task.clone()}</td>
            <td>{row.exp.model.clone()}</td>
            <td>
                <span class=format!("status status-{status}")>{status}</span>
                <span class="note">{stage}</span>
            </td>
            <td class="progress-cell">
                {row.current.map(|job| view! { <Progress job=job /> })}
            </td>
            <td class="num">{best}<span class="note">{metric}</span></td>
            <td class="num">{kept}<span class="note">{kept_note}</span></td>
            <td class="num">{speedup}<span class="note">{speedup_note}</span></td>
            <td class="muted">{format::when(&row.exp.created_at)}</td>
        </tr>
    }
}
