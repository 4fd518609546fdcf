//! The pruning planner: ratios and methods (inputs generated from the schema's `pruning`
//! section), a preview on every change (one request in flight, the newest value sent next),
//! per-layer counts and savings, commit, and committed plans shown read-only.

use std::collections::HashMap;

use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::{
    Hyperparams,
    rest::{
        Committed, Experiment, Job, JobStatus, ParamInfo, ParamTotals, ParamType, Plan,
        PlanPreview, PlanSettings,
    },
};

use crate::{
    api::{self, Failure},
    format,
    store::use_store,
};

/// Parameters the planner shows: the schema's pruning section, plus stage-2 epochs.
fn planner_params(all: &[ParamInfo]) -> Vec<ParamInfo> {
    all.iter()
        .filter(|p| p.section == "pruning" || p.name == "epochs")
        .cloned()
        .collect()
}

/// The request body for `values`, parsed by the parameter table's own text parser (the one
/// the server and the CLI use), so a value the server would refuse is caught here with the
/// same message.
fn settings(
    params: &[ParamInfo],
    values: &HashMap<String, String>,
    commit: bool,
) -> Result<PlanSettings, String> {
    let mut patch = PlanSettings::default();
    for p in params {
        if p.name == "epochs" && !commit {
            continue;
        }
        let Some(text) = values.get(&p.name) else {
            continue;
        };
        patch.set(&p.name, text).map_err(|e| e.to_string())?;
    }
    Ok(patch)
}

/// Sends previews one at a time; a change made while one is in flight is sent when it returns,
/// so a dragged slider never queues up stale requests.
#[derive(Clone, Copy)]
struct PreviewLoop {
    id: i64,
    params: StoredValue<Vec<ParamInfo>>,
    values: RwSignal<HashMap<String, String>>,
    preview: RwSignal<Option<PlanPreview>>,
    failure: RwSignal<Option<Failure>>,
    round_trip: RwSignal<Option<f64>>,
    in_flight: RwSignal<bool>,
    dirty: RwSignal<bool>,
}

impl PreviewLoop {
    fn request(self) {
        let body = match self
            .params
            .with_value(|ps| self.values.with_untracked(|v| settings(ps, v, false)))
        {
            Ok(b) => b,
            Err(message) => {
                self.failure.set(Some(Failure {
                    status: 0,
                    code: "invalid".into(),
                    message,
                    field: None,
                }));
                return;
            }
        };
        self.in_flight.set(true);
        let started = js_sys::Date::now();
        spawn_local(async move {
            let result =
                api::post::<_, PlanPreview>(&format!("/jobs/{}/preview", self.id), &body).await;
            if self.in_flight.try_set(false).is_some() {
                return;
            }
            self.round_trip.set(Some(js_sys::Date::now() - started));
            match result {
                Ok(p) => {
                    self.preview.set(Some(p));
                    self.failure.set(None);
                }
                Err(e) => self.failure.set(Some(e)),
            }
            if self.dirty.get_untracked() {
                self.dirty.set(false);
                self.request();
            }
        });
    }
}

/// The planner of an estimation job.
#[component]
pub fn Planner(
    /// The experiment (starting values).
    experiment: Experiment,
    /// The estimation job.
    #[prop(into)]
    job: Signal<Job>,
    /// Receives the plan to mark on the heatmaps (the live preview or a committed plan).
    overlay: RwSignal<Option<PlanPreview>>,
    /// Receives the head and FFN ratios (for the convergence chart).
    ratios: RwSignal<(f64, f64)>,
    /// Called with the stage-2 job a commit started.
    on_commit: Callback<i64>,
) -> impl IntoView {
    let store = use_store();
    let id = job.get_untracked().id;
    let params = StoredValue::new(store.schema.with_untracked(|s| {
        s.as_ref()
            .map(|s| planner_params(&s.params))
            .unwrap_or_default()
    }));
    let base: Hyperparams = experiment.params.clone();
    let values = RwSignal::new(params.with_value(|ps| {
        ps.iter()
            .filter_map(|p| Some((p.name.clone(), base.get(&p.name).ok()?)))
            .collect::<HashMap<_, _>>()
    }));
    let base = StoredValue::new(base);
    let preview = RwSignal::new(None::<PlanPreview>);
    let preview_failure = RwSignal::new(None::<Failure>);
    let commit_failure = RwSignal::new(None::<Failure>);
    let round_trip = RwSignal::new(None::<f64>);
    let plans = RwSignal::new(Vec::<Plan>::new());
    let viewing = RwSignal::new(None::<Plan>);
    let committing = RwSignal::new(false);
    let in_flight = RwSignal::new(false);
    let dirty = RwSignal::new(false);

    let previews = PreviewLoop {
        id,
        params,
        values,
        preview,
        failure: preview_failure,
        round_trip,
        in_flight,
        dirty,
    };

    let field_error = move |name: &str| -> Option<String> {
        let text = values.with(|v| v.get(name).cloned())?;
        let mut hp = base.get_value();
        hp.set(name, &text).err().map(|e| e.message)
    };
    let any_invalid =
        move || params.with_value(|ps| ps.iter().any(|p| field_error(&p.name).is_some()));

    let status = Memo::new(move |_| job.get().status);
    Effect::new(move |_| {
        values.track();
        let _ = status.get();
        if let Some(h) = values.with(|v| v.get("head_ratio").and_then(|t| t.parse().ok()))
            && let Some(f) = values.with(|v| v.get("ffn_ratio").and_then(|t| t.parse().ok()))
        {
            ratios.set((h, f));
        }
        // Plans are made from a finished estimation; until then there is nothing to ask.
        if status.get() != JobStatus::Succeeded || untrack(any_invalid) {
            return;
        }
        if in_flight.get_untracked() {
            dirty.set(true);
        } else {
            previews.request();
        }
    });
    Effect::new(move |_| {
        let shown = match viewing.get() {
            Some(plan) => Some(plan.preview),
            None => preview.get(),
        };
        overlay.set(shown);
    });

    let load_plans = move || {
        spawn_local(async move {
            if let Ok(list) = api::get::<Vec<Plan>>(&format!("/jobs/{id}/plans")).await {
                plans.try_set(list);
            }
        })
    };
    load_plans();

    let commit = move |_| {
        let body = match params.with_value(|ps| values.with_untracked(|v| settings(ps, v, true))) {
            Ok(b) => b,
            Err(message) => {
                commit_failure.set(Some(Failure {
                    status: 0,
                    code: "invalid".into(),
                    message,
                    field: None,
                }));
                return;
            }
        };
        committing.set(true);
        spawn_local(async move {
            let result = api::post::<_, Committed>(&format!("/jobs/{id}/plans"), &body).await;
            committing.set(false);
            match result {
                Ok(c) => {
                    commit_failure.set(None);
                    store.upsert(c.job.clone());
                    plans.update(|p| p.push(c.plan.clone()));
                    viewing.set(Some(c.plan));
                    on_commit.run(c.job.id);
                }
                Err(e) => commit_failure.set(Some(e)),
            }
        })
    };

    let read_only = move || viewing.with(|v| v.is_some());
    let controls = params
        .get_value()
        .into_iter()
        .map(|p| view! { <PlanField info=p values=values read_only=Signal::derive(read_only) error=Signal::derive(move || None::<String>) /> })
        .collect_view();
    let errors = move || {
        params.with_value(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let msg = preview_failure
                        .get()
                        .filter(|f| f.is_for(&p.name))
                        .map(|f| f.message)
                        .or_else(|| field_error(&p.name))?;
                    Some(view! { <p class="error field-error" data-field=p.name.clone() role="alert">{format!("{}: {msg}", p.name)}</p> })
                })
                .collect_view()
        })
    };
    let shown = Signal::derive(move || overlay.get());

    view! {
        <div class="planner" id="planner">
            <Show when=read_only>
                <div class="banner" id="viewing-plan">
                    {move || viewing.get().map(|p| format!("Committed plan #{} (read-only), made {}", p.id, format::when(&p.created_at)))}
                    <button on:click=move |_| viewing.set(None)>"Back to editing"</button>
                </div>
            </Show>
            <div class="planner-controls">{controls}</div>
            {errors}
            {move || preview_failure.get().filter(|f| f.field.is_none()).map(|f| view! { <p class="error" role="alert" id="preview-error">{f.message}</p> })}
            <PreviewSummary preview=shown round_trip=round_trip lora_r=experiment.params.lora_r />
            <div class="commit-row">
                <Show when=move || !read_only()>
                    <button
                        class="primary"
                        id="commit-plan"
                        disabled=move || committing.get() || preview.with(|p| p.is_none()) || any_invalid()
                        on:click=commit
                    >
                        {move || if committing.get() { "Committing…" } else { "Commit plan and start stage 2" }}
                    </button>
                </Show>
                {move || commit_failure.get().map(|f| view! { <p class="error" role="alert" id="commit-error">{f.message}</p> })}
            </div>
            <h3>"Committed plans"</h3>
            <ul class="plans" id="plans">
                <For each=move || plans.get() key=|p| p.id let:plan>
                    <CommittedRow plan=plan viewing=viewing />
                </For>
            </ul>
            <Show when=move || plans.with(|p| p.is_empty())>
                <p class="muted small">"None yet."</p>
            </Show>
        </div>
    }
}

#[component]
fn CommittedRow(plan: Plan, viewing: RwSignal<Option<Plan>>) -> impl IntoView {
    let s = &plan.preview.settings;
    let ratio = |v: Option<f64>| v.map(format::tick).unwrap_or_else(|| "—".into());
    let text = format!(
        "#{} · heads {} · FFN {} · modules {} · ranks {}{} · {} → {}",
        plan.id,
        ratio(s.head_ratio),
        ratio(s.ffn_ratio),
        ratio(s.module_ratio),
        ratio(s.rank_ratio),
        s.random_seed
            .flatten()
            .map(|r| format!(" · random (seed {r})"))
            .unwrap_or_default(),
        format::params(plan.preview.parameters_before.total),
        format::params(plan.preview.parameters_after.total),
    );
    let id = plan.id;
    view! {
        <li>
            <span>{text}</span>
            " "
            <button
                aria-pressed=move || viewing.with(|v| v.as_ref().is_some_and(|v| v.id == id)).to_string()
                on:click=move |_| viewing.set(Some(plan.clone()))
            >
                "Show"
            </button>
        </li>
    }
}

/// One planner input: a ratio gets a slider and a number box; a choice a segmented toggle.
#[component]
fn PlanField(
    info: ParamInfo,
    values: RwSignal<HashMap<String, String>>,
    read_only: Signal<bool>,
    error: Signal<Option<String>>,
) -> impl IntoView {
    let name = StoredValue::new(info.name.clone());
    let value = move || values.with(|v| name.with_value(|n| v.get(n).cloned().unwrap_or_default()));
    let set = move |text: String| {
        values.update(|v| {
            v.insert(name.get_value(), text);
        })
    };
    let id = format!("plan-{}", info.name);
    let label = info.name.replace('_', " ");
    let input = match info.kind {
        ParamType::Float => {
            let (min, max) = (info.min.unwrap_or(0.0), info.max.unwrap_or(1.0));
            view! {
                <input type="range" id=id.clone() min=min max=max step="0.01" prop:value=value disabled=read_only on:input=move |ev| set(event_target_value(&ev)) aria-label=label.clone() />
                <input type="text" inputmode="decimal" class="num-box" id=format!("{id}-text") prop:value=value disabled=read_only on:change=move |ev| set(event_target_value(&ev)) aria-label=format!("{label} value") />
            }.into_any()
        }
        ParamType::Choice => {
            let options = info.options.clone();
            view! {
                <span class="segmented" role="radiogroup" aria-label=label.clone()>
                    {options
                        .into_iter()
                        .map(|o| {
                            let o2 = o.clone();
                            let o3 = o.clone();
                            view! {
                                <button
                                    type="button"
                                    role="radio"
                                    aria-checked=move || (value() == o2).to_string()
                                    class:on=move || value() == o3
                                    disabled=read_only
                                    on:click={
                                        let o = o.clone();
                                        move |_| set(o.clone())
                                    }
                                >
                                    {o.replace('_', " ")}
                                </button>
                            }
                        })
                        .collect_view()}
                </span>
            }.into_any()
        }
        ParamType::Bool => view! {
            <input type="checkbox" id=id.clone() prop:checked=move || value() == "true" disabled=read_only on:change=move |ev| set(event_target_checked(&ev).to_string()) />
        }.into_any(),
        _ => view! {
            <input type="text" id=id.clone() class="num-box" inputmode="numeric" placeholder="none" prop:value=value disabled=read_only on:change=move |ev| set(event_target_value(&ev)) />
        }.into_any(),
    };
    view! {
        <div class="plan-field" data-param=info.name.clone() title=info.help.clone()>
            <label for=id>{info.name.replace('_', " ")}</label>
            {input}
            <span class="help small">{info.help.clone()}</span>
            {move || error.get().map(|e| view! { <span class="error">{e}</span> })}
        </div>
    }
}

fn totals_row(label: &'static str, before: usize, after: usize) -> impl IntoView {
    let kept = if before > 0 {
        after as f64 / before as f64
    } else {
        1.0
    };
    view! {
        <tr>
            <th>{label}</th>
            <td class="num">{format::params(before)}</td>
            <td class="num">{format::params(after)}</td>
            <td class="num">{format::pct(kept)}</td>
        </tr>
    }
}

fn totals(before: &ParamTotals, after: &ParamTotals) -> impl IntoView + use<> {
    view! {
        {totals_row("encoder layers", before.encoder_layers, after.encoder_layers)}
        {totals_row("embeddings", before.embeddings, after.embeddings)}
        {totals_row("classifier head", before.classifier_head, after.classifier_head)}
        {totals_row("PEFT (LoRA/adapter)", before.peft, after.peft)}
        {totals_row("trainable", before.trainable, after.trainable)}
        {totals_row("total", before.total, after.total)}
    }
}

/// Counts, parameters before → after and estimated savings of a preview.
#[component]
fn PreviewSummary(
    preview: Signal<Option<PlanPreview>>,
    round_trip: RwSignal<Option<f64>>,
    lora_r: usize,
) -> impl IntoView {
    move || {
        let Some(p) = preview.get() else {
            return view! { <p class="muted">"The preview appears when the estimation has finished: plans are made from its final masks and averaged importances."</p> }.into_any();
        };
        let heads_total: usize = p
            .layers
            .iter()
            .map(|l| l.kept_heads.len() + l.removed_heads)
            .sum();
        let heads_kept: usize = p.layers.iter().map(|l| l.kept_heads.len()).sum();
        let neurons_total: usize = p
            .layers
            .iter()
            .map(|l| l.kept_neurons.len() + l.removed_neurons)
            .sum();
        let neurons_kept: usize = p.layers.iter().map(|l| l.kept_neurons.len()).sum();
        let ranks_kept: usize = p.modules.iter().map(|m| m.kept_ranks.len()).sum();
        let ranks_total = p.total_modules * lora_r;
        let step = match (p.estimated_step_ms, p.measured_step_ms) {
            (Some(est), Some(measured)) => format!(
                "{} per step estimated vs {} measured unpruned ({}, {})",
                format::ms(est),
                format::ms(measured),
                format::times(p.estimated_step_time_ratio),
                format::pct(p.estimated_step_time_ratio - 1.0).replace("-", "−")
            ),
            _ => format!(
                "{} of the unpruned step time (FLOP estimate)",
                format::pct(p.estimated_step_time_ratio)
            ),
        };
        let timing = format!(
            "computed in {} on the server{}",
            format::ms(p.compute_ms),
            round_trip
                .get()
                .map(|r| format!(", {} round trip", format::ms(r)))
                .unwrap_or_default()
        );
        let layers = p
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let ht = l.kept_heads.len() + l.removed_heads;
                let nt = l.kept_neurons.len() + l.removed_neurons;
                view! {
                    <tr data-layer=i>
                        <th>{format!("layer {i}")}</th>
                        <td class="num">{format!("{} / {}", l.kept_heads.len(), ht)}</td>
                        <td class="num">{l.removed_heads}</td>
                        <td class="num">{format!("{} / {}", format::thousands(l.kept_neurons.len() as u64), format::thousands(nt as u64))}</td>
                        <td class="num">{format::thousands(l.removed_neurons as u64)}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <div class="preview" id="preview">
                <div class="tiles">
                    <div class="tile"><span class="big" id="preview-heads">{format!("{heads_kept} / {heads_total}")}</span><span>"heads kept"</span></div>
                    <div class="tile"><span class="big" id="preview-neurons">{format!("{} / {}", format::thousands(neurons_kept as u64), format::thousands(neurons_total as u64))}</span><span>"FFN neurons kept"</span></div>
                    <div class="tile"><span class="big" id="preview-modules">{format!("{} / {}", p.modules.len(), p.total_modules)}</span><span>"PEFT modules kept"</span></div>
                    <div class="tile"><span class="big" id="preview-ranks">{format!("{ranks_kept} / {ranks_total}")}</span><span>"rank dimensions kept"</span></div>
                    <div class="tile"><span class="big" id="preview-params">{format!("{} → {}", format::count(p.parameters_before.total), format::count(p.parameters_after.total))}</span><span>"parameters, before → after"</span></div>
                </div>
                <p class="savings" id="preview-step">"Stage-2 step time: " {step}</p>
                <p class="muted small">{timing}</p>
                <div class="two-col">
                    <table class="compact" id="preview-layers">
                        <thead><tr><th>"layer"</th><th>"heads kept"</th><th>"removed"</th><th>"neurons kept"</th><th>"removed"</th></tr></thead>
                        <tbody>{layers}</tbody>
                    </table>
                    <table class="compact" id="preview-totals">
                        <thead><tr><th>"parameters"</th><th>"before"</th><th>"after"</th><th>"kept"</th></tr></thead>
                        <tbody>{totals(&p.parameters_before, &p.parameters_after)}</tbody>
                    </table>
                </div>
            </div>
        }
        .into_any()
    }
}
