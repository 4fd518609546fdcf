//! Starts a study on an experiment (a preset frontier or a grid of ratios, seeds, baselines,
//! random ablation) and lists the experiment's studies.

use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::use_navigate;
use lightpeft_api::rest::{CreateStudy, Study, StudyPlans, StudyReport};

use crate::api::{self, Failure};

/// Parses `0, 0.33, .5` into ratios; an empty text is an empty list.
fn ratios(text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<f64>()
                .map_err(|_| format!("`{s}` is not a number"))
        })
        .collect()
}

/// The study form and the experiment's studies.
#[component]
pub fn StudyLauncher(
    /// The experiment.
    experiment: i64,
    /// Its newest estimation, which the study plans from (a new one is queued when none).
    #[prop(into)]
    estimation: Signal<Option<i64>>,
) -> impl IntoView {
    let navigate = use_navigate();
    let preset = RwSignal::new("quick_frontier".to_string());
    let heads = RwSignal::new("0.17, 0.33, 0.5".to_string());
    let ffn = RwSignal::new("0.33".to_string());
    let modules = RwSignal::new(String::new());
    let ranks = RwSignal::new(String::new());
    let seeds = RwSignal::new("1".to_string());
    let baselines = RwSignal::new(true);
    let random = RwSignal::new(true);
    let failure = RwSignal::new(None::<Failure>);
    let studies = RwSignal::new(Vec::<Study>::new());
    spawn_local(async move {
        if let Ok(all) = api::get::<Vec<Study>>("/studies").await {
            studies.set(
                all.into_iter()
                    .filter(|s| s.experiment_id == experiment)
                    .collect(),
            );
        }
    });
    let start = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let navigate = navigate.clone();
        let plans = if preset.get_untracked() == "grid" {
            let parsed = (
                ratios(&heads.get_untracked()),
                ratios(&ffn.get_untracked()),
                ratios(&modules.get_untracked()),
                ratios(&ranks.get_untracked()),
            );
            match parsed {
                (Ok(head_ratios), Ok(ffn_ratios), Ok(module_ratios), Ok(rank_ratios)) => {
                    StudyPlans::Grid {
                        head_ratios,
                        ffn_ratios,
                        module_ratios,
                        rank_ratios,
                    }
                }
                (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                    failure.set(Some(Failure::local(format!("ratios: {e}"))));
                    return;
                }
            }
        } else if preset.get_untracked() == "quick_frontier" {
            StudyPlans::QuickFrontier
        } else {
            StudyPlans::HeadsFfnFrontier
        };
        let Ok(seed_count) = seeds.get_untracked().trim().parse::<u32>() else {
            failure.set(Some(Failure::local(
                "seeds: a whole number, 1 to 10".into(),
            )));
            return;
        };
        let body = CreateStudy {
            estimation_job_id: estimation.get_untracked(),
            plans,
            seeds: seed_count,
            baselines: baselines.get_untracked(),
            random: random.get_untracked(),
        };
        spawn_local(async move {
            match api::post::<_, StudyReport>(&format!("/experiments/{experiment}/studies"), &body)
                .await
            {
                Ok(report) => {
                    navigate(&format!("/studies/{}", report.study.id), Default::default())
                }
                Err(e) => failure.set(Some(e)),
            }
        });
    };
    let grid = move || preset.get() == "grid";
    view! {
        <details class="study-launch" id="study-launch">
            <summary>"Study: many plans and seeds on this estimation, with baselines and random pruning"</summary>
            <form on:submit=start>
                <label>
                    "Plans "
                    <select id="study-preset" on:change=move |ev| preset.set(event_target_value(&ev))>
                        <option value="quick_frontier" selected=true>"quick study: heads = FFN ∈ {1/3, 1/2, 2/3} (8 stage-2 runs per seed; about 8 minutes with a new estimation, quick-demo recipe, MiniLM, 2 cores)"</option>
                        <option value="heads_ffn_frontier">"heads = FFN ∈ {0, 1/6, 1/3, 1/2, 2/3}"</option>
                        <option value="grid">"a grid of ratios"</option>
                    </select>
                </label>
                <Show when=grid>
                    <div class="study-grid">
                        <label>"head ratios " <input id="study-heads" bind:value=heads /></label>
                        <label>"FFN ratios " <input id="study-ffn" bind:value=ffn /></label>
                        <label>"module ratios " <input id="study-modules" bind:value=modules placeholder="none pruned" /></label>
                        <label>"rank ratios " <input id="study-ranks" bind:value=ranks placeholder="none pruned" /></label>
                    </div>
                </Show>
                <label>"seeds per configuration " <input id="study-seeds" type="number" min="1" max="10" bind:value=seeds /></label>
                <label><input type="checkbox" id="study-baselines" bind:checked=baselines /> " vanilla baselines (query,value and all targets)"</label>
                <label><input type="checkbox" id="study-random" bind:checked=random /> " random pruning at the same counts"</label>
                <button type="submit" id="study-start">"Start study"</button>
                {move || failure.get().map(|f| view! { <p class="error">{f.message}</p> })}
            </form>
            <ul class="studies">
                {move || {
                    studies
                        .get()
                        .into_iter()
                        .map(|s| {
                            view! {
                                <li>
                                    <a href=format!("/studies/{}", s.id)>{format!("study {}", s.id)}</a>
                                    {format!(" · {} seed(s) · {}", s.spec.seeds, crate::format::when(&s.created_at))}
                                </li>
                            }
                        })
                        .collect_view()
                }}
            </ul>
        </details>
    }
}
