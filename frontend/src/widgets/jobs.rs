//! A job's progress bar and its card with the actions that apply to it.

use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::rest::{Job, JobStatus};

use crate::{
    api::{self, Failure},
    format,
    store::use_store,
};

/// Steps done of total, percent, and the time left.
#[component]
pub fn Progress(job: Job) -> impl IntoView {
    let frac = if job.total_steps > 0 {
        (job.step as f64 / job.total_steps as f64).clamp(0.0, 1.0)
    } else if job.status == JobStatus::Succeeded {
        1.0
    } else {
        0.0
    };
    let detail = match job.status {
        JobStatus::Queued => "queued".to_string(),
        JobStatus::Running if job.total_steps == 0 => "starting…".to_string(),
        JobStatus::Running => {
            let eta = job
                .eta_seconds
                .map(|s| format!(" · {} left", format::duration(s)))
                .unwrap_or_else(|| " · estimating time left".into());
            format!("step {} / {}{eta}", job.step, job.total_steps)
        }
        _ => format!("{} / {} steps", job.step, job.total_steps),
    };
    view! {
        <div class="progress" data-job=job.id data-status=job.status.as_str()>
            <progress max="1" value=frac aria-label=format!("{} progress", job.kind.as_str())></progress>
            <span class="progress-text">{format::pct(frac)} " · " {detail}</span>
        </div>
    }
}

/// One job: kind, status, progress, pace, best score; cancel, resume and delete.
#[component]
pub fn JobCard(
    job: Job,
    /// Whether this job's charts are the ones shown.
    #[prop(into)]
    selected: Signal<bool>,
    /// Selects it.
    on_select: Callback<i64>,
) -> impl IntoView {
    let store = use_store();
    let failure = RwSignal::new(None::<Failure>);
    let id = job.id;
    let act = move |verb: &'static str| {
        spawn_local(async move {
            let result = match verb {
                "delete" => api::delete(&format!("/jobs/{id}")).await,
                _ => api::post_empty::<Job>(&format!("/jobs/{id}/{verb}"))
                    .await
                    .map(|j| store.upsert(j)),
            };
            match result {
                Ok(()) => {
                    failure.set(None);
                    if verb == "delete" {
                        store.refresh();
                    }
                }
                Err(e) => failure.set(Some(e)),
            }
        })
    };
    let status = job.status.as_str();
    let pace = job
        .step_seconds
        .map(|s| format!("{} / step", format::seconds(s)))
        .unwrap_or_default();
    let best = match (job.best_score, job.metric.clone()) {
        (Some(v), Some(m)) => format!("best {m} {}", format::score(&m, v)),
        _ => String::new(),
    };
    // Which worker trains it (or last trained it), and which claim this is after a retry.
    let held_by = match (&job.worker, job.attempt) {
        (Some(w), a) if a > 1 => format!("on {w} · attempt {a}"),
        (Some(w), _) => format!("on {w}"),
        (None, _) => String::new(),
    };
    let running = !job.status.is_final();
    let resumable = job.resumable;
    let error = job.error.clone();
    view! {
        <article
            class="job-card"
            class:selected=selected
            data-kind=job.kind.as_str()
            data-status=status
            id=format!("job-{id}")
        >
            <header>
                <button
                    class="link-button"
                    aria-pressed=move || selected.get().to_string()
                    on:click=move |_| on_select.run(id)
                >
                    {format!("#{id} {}", job.kind.as_str())}
                </button>
                <span class=format!("status status-{status}")>{status}</span>
            </header>
            <Progress job=job.clone() />
            <p class="muted small">{pace} " " {best}</p>
            <p class="muted small job-worker">{held_by}</p>
            {error.map(|e| view! { <p class="error small">{e}</p> })}
            <div class="actions">
                <Show when=move || running>
                    <button on:click=move |_| act("cancel")>"Cancel"</button>
                </Show>
                <Show when=move || resumable && !running>
                    <button on:click=move |_| act("resume")>"Resume"</button>
                </Show>
                <Show when=move || !running>
                    <button class="quiet" on:click=move |_| act("delete")>"Delete"</button>
                </Show>
            </div>
            {move || failure.get().map(|f| view! { <p class="error small" role="alert">{f.message}</p> })}
        </article>
    }
}
