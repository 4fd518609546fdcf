//! An experiment's page: its jobs, live training charts, mask and importance heatmaps, the
//! estimation-convergence signal, the pruning planner and the comparison with the baseline.

use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};
use lightpeft_api::rest::{Experiment, Job, JobKind, JobStatus, MaskKind, PlanPreview};

use crate::{
    api::{self, Failure},
    format,
    store::use_store,
    widgets::{
        compare::ComparePanel,
        importance::ImportancePanel,
        jobs::JobCard,
        masks::{ConvergenceChart, MaskPanel, MaskTrendChart},
        planner::Planner,
        study_launch::StudyLauncher,
        training::TrainingCharts,
    },
};

/// `/experiments/:id`.
#[component]
pub fn RunPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").and_then(|s| s.parse::<i64>().ok())));
    move || match id.get() {
        Some(id) => view! { <ExperimentView id=id /> }.into_any(),
        None => view! { <p class="error">"No such experiment."</p> }.into_any(),
    }
}

#[component]
fn ExperimentView(id: i64) -> impl IntoView {
    let store = use_store();
    let failure = RwSignal::new(None::<Failure>);
    let experiment = Memo::new(move |_| {
        store
            .experiments
            .with(|e| e.iter().find(|x| x.id == id).cloned())
    });
    if experiment.get_untracked().is_none() {
        spawn_local(async move {
            match api::get::<Experiment>(&format!("/experiments/{id}")).await {
                Ok(e) => store.add_experiment(e),
                Err(e) => failure.set(Some(e)),
            }
        });
    }
    view! {
        <section class="page">
            {move || failure.get().map(|f| view! { <p class="error">{f.message}</p> })}
            {move || experiment.get().map(|e| view! { <Loaded exp=e /> })}
        </section>
    }
}

/// The job whose charts to show: the one picked, else the running one, else the newest.
fn focus(jobs: &[Job], picked: Option<i64>) -> Option<Job> {
    picked
        .and_then(|p| jobs.iter().find(|j| j.id == p))
        .or_else(|| jobs.iter().find(|j| j.status == JobStatus::Running))
        .or_else(|| jobs.iter().rev().find(|j| j.kind == JobKind::Finetune))
        .or_else(|| jobs.first())
        .cloned()
}

#[component]
fn Loaded(exp: Experiment) -> impl IntoView {
    let store = use_store();
    let navigate = use_navigate();
    let id = exp.id;
    let jobs = Memo::new(move |_| store.jobs_of(id));
    // `?job=ID` (a study's point links here) picks the job to show.
    let query = use_query_map();
    let picked =
        RwSignal::new(query.with_untracked(|q| q.get("job").and_then(|j| j.parse::<i64>().ok())));
    let shown_job = Memo::new(move |_| jobs.with(|js| focus(js, picked.get())));
    let shown_id = Memo::new(move |_| shown_job.with(|j| j.as_ref().map(|j| j.id)));
    // The charts restart when the job finishes: from then on they read the stored series
    // instead of listening to a stream that has ended.
    let shown_key =
        Memo::new(move |_| shown_job.with(|j| j.as_ref().map(|j| (j.id, j.status.is_final()))));
    let estimation = Memo::new(move |_| {
        jobs.with(|js| {
            js.iter()
                .rev()
                .find(|j| j.kind == JobKind::Estimation)
                .cloned()
        })
    });
    let estimation_id = Memo::new(move |_| estimation.with(|j| j.as_ref().map(|j| j.id)));
    let overlay = RwSignal::new(None::<PlanPreview>);
    let ratios = RwSignal::new((exp.params.head_ratio, exp.params.ffn_ratio));
    let action_failure = RwSignal::new(None::<Failure>);
    let select = Callback::new(move |job: i64| picked.set(Some(job)));

    let start_estimation = move |_| {
        spawn_local(async move {
            match api::post_empty::<Job>(&format!("/experiments/{id}/estimation")).await {
                Ok(j) => {
                    action_failure.set(None);
                    store.upsert(j)
                }
                Err(e) => action_failure.set(Some(e)),
            }
        })
    };
    let delete = move |_| {
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::delete(&format!("/experiments/{id}")).await {
                Ok(()) => {
                    store.refresh();
                    navigate("/", Default::default());
                }
                Err(e) => action_failure.set(Some(e)),
            }
        })
    };

    let p = &exp.params;
    let recipe = format!(
        "{} · lr {} · batch {} · {} tokens · {} estimation steps · {} epoch(s) · {} r={} on {}",
        exp.preset.as_str().replace('_', " "),
        format::tick(p.lr),
        p.batch_size,
        p.max_len,
        p.estimation_steps,
        p.epochs,
        p.peft_method,
        p.lora_r,
        p.targets
    );
    let all_params = lightpeft_api::PARAMS
        .iter()
        .map(|spec| {
            let v = exp.params.get(spec.name).unwrap_or_default();
            view! { <tr><th>{spec.name}</th><td>{v}</td><td class="muted small">{spec.help}</td></tr> }
        })
        .collect_view();
    let exp_for_planner = StoredValue::new(exp.clone());

    view! {
        <div class="page-head">
            <h1 id="experiment-name">{exp.name.clone()}</h1>
            <span class="muted">{format!("{} · {} · created {}", exp.task, exp.model, format::when(&exp.created_at))}</span>
        </div>
        <p class="recipe">{recipe}</p>
        <details>
            <summary>"All hyper-parameters"</summary>
            <table class="compact params-table"><tbody>{all_params}</tbody></table>
        </details>

        <h2>"Jobs"</h2>
        <div class="jobs">
            <For
                each=move || jobs.get()
                key=|j| format!("{j:?}")
                let:job
            >
                {
                    let me = job.id;
                    let selected = Signal::derive(move || shown_id.get() == Some(me));
                    view! { <JobCard job=job selected=selected on_select=select /> }
                }
            </For>
            <div class="job-actions">
                <Show when=move || estimation.with(|e| e.is_none())>
                    <button class="primary" on:click=start_estimation>"Start estimation"</button>
                </Show>
                <button class="quiet" on:click=delete>"Delete experiment"</button>
                {move || action_failure.get().map(|f| view! { <p class="error" role="alert">{f.message}</p> })}
            </div>
        </div>

        <h2>
            "Training "
            <span class="unit">{move || shown_job.with(|j| j.as_ref().map(|j| format!("job #{} ({})", j.id, j.kind.as_str())))}</span>
        </h2>
        {move || {
            let _ = shown_key.get();
            shown_job.get_untracked().map(|job| view! { <TrainingCharts job=job /> })
        }}

        {move || {
            estimation_id.get().map(|_| {
                let job = Memo::new(move |prev: Option<&Job>| {
                    estimation
                        .get()
                        .or_else(|| prev.cloned())
                        .expect("rendered only once an estimation job exists")
                });
                view! {
                    <h2>"Masks"</h2>
                    <MaskPanel job=job plan=overlay />
                    <div class="chart-grid">
                        <MaskTrendChart job=job kind=MaskKind::Head />
                        <MaskTrendChart job=job kind=MaskKind::Neuron />
                    </div>
                    <h2>"PEFT importance"</h2>
                    <ImportancePanel job=job plan=overlay />
                    <h2>"Is estimation done?"</h2>
                    <div class="chart-narrow">
                        <ConvergenceChart job=job ratios=ratios />
                    </div>
                    <h2>"Pruning planner"</h2>
                    <Planner experiment=exp_for_planner.get_value() job=job overlay=overlay ratios=ratios on_commit=select />
                }
            })
        }}

        <h2>"Comparison"</h2>
        <ComparePanel experiment=id jobs=jobs />

        <h2>"Studies"</h2>
        <StudyLauncher experiment=id estimation=estimation_id />
    }
}
