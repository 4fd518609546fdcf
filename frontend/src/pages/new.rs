//! The new-experiment form, generated from the API's hyper-parameter schema: one input per
//! `ParamInfo`, grouped by section, with its range, default and help, checked as the user
//! types (with the same table the server uses) and annotated with the server's own errors.

use std::collections::HashMap;

use leptos::{prelude::*, task::spawn_local};
use leptos_router::hooks::use_navigate;
use lightpeft_api::{
    Preset,
    rest::{
        CreateExperiment, Experiment, Job, ParamInfo, ParamType, PresetInfo, SavedDataset, Schema,
        TaskInfo,
    },
};

use crate::{
    api::{self, Failure},
    format,
    store::use_store,
    widgets::datasets::DatasetForm,
};

/// The parameters the form leads with; the rest are folded.
const LEADING: [&str; 4] = ["head_ratio", "ffn_ratio", "module_ratio", "rank_ratio"];

fn range_text(p: &ParamInfo) -> Option<String> {
    let (min, max) = (p.min?, p.max?);
    let open = if p.min_exclusive { "(" } else { "[" };
    Some(format!(
        "{open}{}, {}]",
        format::tick(min),
        format::tick(max)
    ))
}

fn preset_values(info: &PresetInfo, params: &[ParamInfo]) -> HashMap<String, String> {
    params
        .iter()
        .filter_map(|p| Some((p.name.clone(), info.params.get(&p.name).ok()?)))
        .collect()
}

/// The form.
#[component]
pub fn NewExperiment() -> impl IntoView {
    let store = use_store();
    view! {
        <section class="page">
            <h1>"New experiment"</h1>
            {move || match store.schema.get() {
                Some(schema) => view! { <Form schema=schema /> }.into_any(),
                None => {
                    let msg = store
                        .failure
                        .get()
                        .map(|f| f.message)
                        .unwrap_or_else(|| "loading the schema…".into());
                    view! { <p class="muted">{msg}</p> }.into_any()
                }
            }}
        </section>
    }
}

#[component]
fn Form(schema: Schema) -> impl IntoView {
    let store = use_store();
    let navigate = use_navigate();
    let params = StoredValue::new(schema.params.clone());
    let presets = StoredValue::new(schema.presets.clone());
    let start_preset = schema
        .presets
        .iter()
        .find(|p| p.preset == Preset::QuickDemo)
        .or(schema.presets.first())
        .map(|p| p.preset)
        .unwrap_or(Preset::Paper);
    let preset = RwSignal::new(start_preset);
    let preset_info =
        move || presets.with_value(|all| all.iter().find(|p| p.preset == preset.get()).cloned());
    let values = RwSignal::new(
        preset_info()
            .map(|i| params.with_value(|p| preset_values(&i, p)))
            .unwrap_or_default(),
    );
    let pick_preset = move |p: Preset| {
        preset.set(p);
        if let Some(info) = preset_info() {
            values.set(params.with_value(|all| preset_values(&info, all)));
        }
    };

    let default_task = schema
        .tasks
        .iter()
        .find(|t| t.available && !t.needs_files)
        .or(schema.tasks.first())
        .map(|t| t.name.clone())
        .unwrap_or_default();
    let default_model = schema
        .models
        .iter()
        .find(|m| m.contains("minilm"))
        .or(schema.models.first())
        .cloned()
        .unwrap_or_default();
    let task = RwSignal::new(default_task);
    let model = RwSignal::new(default_model);
    let name = RwSignal::new(String::new());
    let train_file = RwSignal::new(String::new());
    let dev_file = RwSignal::new(String::new());
    let with_baseline = RwSignal::new(true);
    let failure = RwSignal::new(None::<Failure>);
    let busy = RwSignal::new(false);
    let tasks = RwSignal::new(schema.tasks.clone());
    let needs_files =
        move || tasks.with(|t| t.iter().any(|t| t.name == task.get() && t.needs_files));
    // A dataset saved from this form joins the task list, chosen.
    let dataset_saved = Callback::new(move |saved: SavedDataset| {
        let info = TaskInfo {
            name: format!("dataset:{}", saved.name),
            description: saved.summary(),
            needs_files: false,
            available: true,
        };
        let chosen = info.name.clone();
        tasks.update(|all| {
            all.retain(|t| t.name != info.name);
            all.push(info);
        });
        task.set(chosen);
    });

    // Local check with the same table the server validates against.
    let local_error = move |name: &str| -> Option<String> {
        let info = preset_info()?;
        let text = values.with(|v| v.get(name).cloned())?;
        let mut hp = info.params;
        hp.set(name, &text).err().map(|e| e.message)
    };
    // The server's word on a field holds until the field is edited.
    let submitted = RwSignal::new(HashMap::<String, String>::new());
    let field_error = move |name: String| {
        move || {
            let unchanged = values.with(|v| submitted.with(|s| v.get(&name) == s.get(&name)));
            failure
                .get()
                .filter(|f| f.is_for(&name) && unchanged)
                .map(|f| f.message)
                .or_else(|| local_error(&name))
        }
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(info) = preset_info() else { return };
        let base = params.with_value(|p| preset_values(&info, p));
        let changed: serde_json::Map<String, serde_json::Value> = values
            .get_untracked()
            .into_iter()
            .filter(|(k, v)| base.get(k) != Some(v))
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let opt = |s: RwSignal<String>| {
            let v = s.get_untracked().trim().to_string();
            (!v.is_empty()).then_some(v)
        };
        let request = CreateExperiment {
            name: opt(name),
            task: task.get_untracked(),
            model: model.get_untracked(),
            preset: preset.get_untracked(),
            params: changed,
            train_file: opt(train_file),
            dev_file: opt(dev_file),
        };
        let baseline = with_baseline.get_untracked();
        submitted.set(values.get_untracked());
        let navigate = navigate.clone();
        busy.set(true);
        spawn_local(async move {
            let result = async {
                let exp: Experiment = api::post("/experiments", &request).await?;
                store.add_experiment(exp.clone());
                let job: Job =
                    api::post_empty(&format!("/experiments/{}/estimation", exp.id)).await?;
                store.upsert(job);
                if baseline {
                    let job: Job =
                        api::post_empty(&format!("/experiments/{}/baseline", exp.id)).await?;
                    store.upsert(job);
                }
                Ok::<_, Failure>(exp.id)
            }
            .await;
            busy.set(false);
            match result {
                Ok(id) => navigate(&format!("/experiments/{id}"), Default::default()),
                Err(e) => failure.set(Some(e)),
            }
        });
    };

    let sections = {
        let mut order: Vec<String> = Vec::new();
        for p in &schema.params {
            if !order.contains(&p.section) {
                order.push(p.section.clone());
            }
        }
        order
    };
    let field_view = move |p: ParamInfo| {
        let error = field_error(p.name.clone());
        view! { <ParamField info=p values=values preset_info=Signal::derive(preset_info) error=Signal::derive(error) /> }
    };
    let leading = params.with_value(|all| {
        LEADING
            .iter()
            .filter_map(|name| all.iter().find(|p| p.name == *name).cloned())
            .collect::<Vec<_>>()
    });
    let leading_views = leading.into_iter().map(field_view).collect_view();
    // The folded parameters open by themselves when the server names one of them.
    let folded_open = RwSignal::new(false);
    Effect::new(move |_| {
        if let Some(field) = failure.with(|f| f.as_ref().and_then(|f| f.field.clone()))
            && !LEADING.contains(&field.as_str())
            && params.with_value(|all| all.iter().any(|p| p.name == field))
        {
            folded_open.set(true);
        }
    });
    let section_views = sections
        .into_iter()
        .map(|section| {
            let fields = params.with_value(|all| {
                all.iter()
                    .filter(|p| p.section == section && !LEADING.contains(&p.name.as_str()))
                    .cloned()
                    .collect::<Vec<_>>()
            });
            view! {
                <fieldset class="section">
                    <legend>{section.clone()}</legend>
                    {fields.into_iter().map(field_view).collect_view()}
                </fieldset>
            }
        })
        .collect_view();

    let top_error = move |field: &'static str| {
        move || {
            failure
                .get()
                .filter(|f| f.is_for(field))
                .map(|f| view! { <p class="error field-error" role="alert">{f.message}</p> })
        }
    };

    view! {
        <form class="new-experiment" on:submit=submit novalidate>
            <fieldset class="section">
                <legend>"What to train"</legend>
                <div class="field">
                    <label for="f-task">"task"</label>
                    <select id="f-task" bind:value=task>
                        {move || tasks
                            .get()
                            .into_iter()
                            .map(|t| {
                                let label = if t.available || t.needs_files {
                                    format!("{} — {}", t.name, t.description)
                                } else {
                                    format!("{} — data missing", t.name)
                                };
                                let unusable = !t.available && !t.needs_files;
                                let this = t.name.clone();
                                view! {
                                    <option
                                        value=t.name.clone()
                                        disabled=unusable
                                        prop:selected=move || task.get() == this
                                    >
                                        {label}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                    {top_error("task")}
                </div>
                <details class="field-wide" id="own-data">
                    <summary>"Your own data: upload a CSV, TSV or JSON-lines train and dev file"</summary>
                    <DatasetForm on_saved=dataset_saved />
                </details>
                <div class="field">
                    <label for="f-model">"model"</label>
                    <select id="f-model" bind:value=model>
                        {schema
                            .models
                            .iter()
                            .map(|m| {
                                let this = m.clone();
                                view! {
                                    <option value=m.clone() prop:selected=move || model.get() == this>
                                        {m.clone()}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                    {top_error("model")}
                </div>
                <div class="field">
                    <label for="f-name">"name"</label>
                    <input id="f-name" type="text" placeholder="defaults to task and model" bind:value=name />
                    {top_error("name")}
                </div>
                <Show when=needs_files>
                    <div class="field">
                        <label for="f-train-file">"train file"</label>
                        <input id="f-train-file" type="text" placeholder="relative to the data directory" bind:value=train_file />
                        {top_error("train_file")}
                    </div>
                    <div class="field">
                        <label for="f-dev-file">"dev file"</label>
                        <input id="f-dev-file" type="text" bind:value=dev_file />
                        {top_error("dev_file")}
                    </div>
                </Show>
            </fieldset>
            <fieldset class="section presets">
                <legend>"Preset"</legend>
                {schema
                    .presets
                    .iter()
                    .map(|p| {
                        let which = p.preset;
                        view! {
                            <label class="preset" data-preset=which.as_str()>
                                <input
                                    type="radio"
                                    name="preset"
                                    value=which.as_str()
                                    prop:checked=move || preset.get() == which
                                    on:change=move |_| pick_preset(which)
                                />
                                <b>{which.as_str().replace('_', " ")}</b>
                                <span class="muted">{p.description.clone()}</span>
                            </label>
                        }
                    })
                    .collect_view()}
            </fieldset>
            <fieldset class="section">
                <legend>"Pruning ratios (what stage 2 removes; the planner can change them later)"</legend>
                <div class="param-grid">{leading_views}</div>
            </fieldset>
            <details
                class="all-params"
                id="all-params"
                prop:open=move || folded_open.get()
                on:toggle=move |ev| {
                    use wasm_bindgen::JsCast;
                    if let Some(d) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlDetailsElement>().ok()) {
                        folded_open.set(d.open());
                    }
                }
            >
                <summary>"Every other hyper-parameter: data, optimiser, PEFT, estimation, pruning methods, stage 2"</summary>
                <div class="param-grid">{section_views}</div>
            </details>
            <div class="submit-row">
                <label>
                    <input type="checkbox" id="f-with-baseline" bind:checked=with_baseline />
                    " also run the vanilla LoRA baseline (same data and recipe) for the comparison"
                </label>
                <button type="submit" class="primary" id="launch" disabled=move || busy.get()>
                    {move || if busy.get() { "Launching…" } else { "Launch estimation" }}
                </button>
                {move || {
                    failure
                        .get()
                        .filter(|f| f.field.is_none())
                        .map(|f| view! { <p class="error" role="alert">{f.message}</p> })
                }}
            </div>
        </form>
    }
}

/// One hyper-parameter's input, chosen by its kind.
#[component]
fn ParamField(
    info: ParamInfo,
    values: RwSignal<HashMap<String, String>>,
    preset_info: Signal<Option<PresetInfo>>,
    error: Signal<Option<String>>,
) -> impl IntoView {
    let name = StoredValue::new(info.name.clone());
    let id = format!("p-{}", info.name);
    let value = move || values.with(|v| name.with_value(|n| v.get(n).cloned().unwrap_or_default()));
    let set = move |text: String| {
        values.update(|v| {
            v.insert(name.get_value(), text);
        })
    };
    let changed = move || {
        let preset_value = preset_info
            .get()
            .and_then(|p| name.with_value(|n| p.params.get(n).ok()));
        preset_value.is_some_and(|d| d != value())
    };
    let input = match info.kind {
        ParamType::Bool => view! {
            <input
                id=id.clone()
                type="checkbox"
                prop:checked=move || value() == "true"
                on:change=move |ev| set(event_target_checked(&ev).to_string())
            />
        }
        .into_any(),
        ParamType::Choice => view! {
            <select id=id.clone() prop:value=value on:change=move |ev| set(event_target_value(&ev))>
                {info
                    .options
                    .iter()
                    .map(|o| {
                        let this = o.clone();
                        view! {
                            <option value=o.clone() prop:selected=move || value() == this>
                                {o.clone()}
                            </option>
                        }
                    })
                    .collect_view()}
            </select>
        }
        .into_any(),
        kind => {
            let mode = match kind {
                ParamType::Int | ParamType::OptionalSeed => "numeric",
                ParamType::List => "text",
                _ => "decimal",
            };
            let placeholder = if kind == ParamType::OptionalSeed {
                "none"
            } else {
                ""
            };
            view! {
                <input
                    id=id.clone()
                    type="text"
                    inputmode=mode
                    placeholder=placeholder
                    prop:value=value
                    on:input=move |ev| set(event_target_value(&ev))
                    aria-invalid=move || error.get().is_some().to_string()
                />
            }
            .into_any()
        }
    };
    let hint = [
        range_text(&info),
        Some(format!(
            "default {}",
            if info.default.is_empty() {
                "none"
            } else {
                &info.default
            }
        )),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" · ");
    view! {
        <div class="field" data-param=info.name.clone() class:changed=changed>
            <label for=id>{info.name.clone()}</label>
            {input}
            <span class="hint">{hint}</span>
            <span class="help">{info.help.clone()}</span>
            {move || error.get().map(|e| view! { <p class="error field-error" role="alert">{e}</p> })}
        </div>
    }
}
