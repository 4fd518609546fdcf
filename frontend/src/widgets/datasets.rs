//! Your own data from the browser: upload a train and a dev file (CSV, TSV or JSON lines),
//! see their columns, first rows and label counts, map the columns, and save them as a named
//! dataset that the form then trains on (`dataset:NAME`).

use leptos::{prelude::*, task::spawn_local};
use lightpeft_api::rest::{
    CreateDataset, DatasetColumns, DatasetLabels, SavedDataset, TablePreview, Upload,
};
use wasm_bindgen::JsCast;

use crate::api::{self, Failure};

/// Which of the two files.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Dev,
}

impl Split {
    fn key(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
        }
    }
}

fn encode(text: &str) -> String {
    String::from(js_sys::encode_uri_component(text))
}

/// A first guess at the mapping: the label is a column of few repeated values (one named like
/// a label first), the text the column with the longest values among the rest.
fn guess_columns(preview: &TablePreview) -> (String, String) {
    let few: Vec<&str> = preview
        .columns
        .iter()
        // At least two values, and not one per row (an id, or every text distinct).
        .filter(|c| {
            c.values
                .as_ref()
                .is_some_and(|v| v.len() >= 2 && v.len() < preview.row_count)
        })
        .map(|c| c.name.as_str())
        .collect();
    let label = few
        .iter()
        .find(|n| {
            let n = n.to_lowercase();
            n.contains("label") || n.contains("class") || n.contains("target")
        })
        .or(few.last())
        .map(|n| n.to_string())
        .or_else(|| preview.columns.last().map(|c| c.name.clone()))
        .unwrap_or_default();
    let length = |column: usize| -> usize {
        preview
            .rows
            .iter()
            .map(|r| r.get(column).cloned().flatten().map_or(0, |v| v.len()))
            .sum()
    };
    let text = preview
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.name != label)
        .max_by_key(|(i, _)| length(*i))
        .map(|(_, c)| c.name.clone())
        .unwrap_or_default();
    (text, label)
}

/// The upload form; `on_saved` gets the new dataset.
#[component]
pub fn DatasetForm(on_saved: Callback<SavedDataset>) -> impl IntoView {
    let train = RwSignal::new(None::<Upload>);
    let dev = RwSignal::new(None::<Upload>);
    let header = RwSignal::new(true);
    let text = RwSignal::new(String::new());
    let text_pair = RwSignal::new(String::new());
    let label = RwSignal::new(String::new());
    let kind = RwSignal::new(DatasetLabels::Classes);
    let name = RwSignal::new(String::new());
    let failure = RwSignal::new(None::<Failure>);
    let busy = RwSignal::new(false);
    let slot = move |split: Split| match split {
        Split::Train => train,
        Split::Dev => dev,
    };

    let pick_file = move |split: Split, ev: leptos::ev::Event| {
        let Some(input) = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        else {
            return;
        };
        let Some(file) = input.files().and_then(|files| files.get(0)) else {
            return;
        };
        failure.set(None);
        busy.set(true);
        spawn_local(async move {
            let rest = format!(
                "/datasets/uploads?name={}&header={}",
                encode(&file.name()),
                header.get_untracked()
            );
            let result: Result<Upload, Failure> = api::upload(&rest, &file).await;
            busy.set(false);
            // Emptied, so choosing the same file again (edited) uploads it again.
            input.set_value("");
            match result {
                Ok(upload) => {
                    if split == Split::Train {
                        let (t, l) = guess_columns(&upload.preview);
                        text.set(t);
                        label.set(l);
                        if name.get_untracked().is_empty() {
                            let stem = upload
                                .name
                                .rsplit_once('.')
                                .map_or(upload.name.as_str(), |(s, _)| s);
                            let clean: String = stem
                                .chars()
                                .map(|c| {
                                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                                        c
                                    } else {
                                        '-'
                                    }
                                })
                                .collect();
                            name.set(clean);
                        }
                    }
                    slot(split).set(Some(upload));
                }
                Err(e) => {
                    slot(split).set(None);
                    failure.set(Some(Failure {
                        field: Some(split.key().to_string()),
                        ..e
                    }));
                }
            }
        });
    };

    // A different header setting changes every column: read both uploads again.
    let toggle_header = move |on: bool| {
        header.set(on);
        for split in [Split::Train, Split::Dev] {
            let Some(upload) = slot(split).get_untracked() else {
                continue;
            };
            spawn_local(async move {
                let rest = format!("/datasets/uploads/{}?header={on}", upload.id);
                match api::get::<TablePreview>(&rest).await {
                    Ok(preview) => {
                        if split == Split::Train {
                            let (t, l) = guess_columns(&preview);
                            text.set(t);
                            label.set(l);
                        }
                        slot(split).set(Some(Upload { preview, ..upload }));
                    }
                    Err(e) => failure.set(Some(e)),
                }
            });
        }
    };

    let save = move |_| {
        let (Some(t), Some(d)) = (train.get_untracked(), dev.get_untracked()) else {
            return;
        };
        let pair = text_pair.get_untracked();
        let request = CreateDataset {
            name: name.get_untracked().trim().to_string(),
            train_upload: t.id,
            dev_upload: d.id,
            columns: DatasetColumns {
                text: text.get_untracked(),
                text_pair: (!pair.is_empty()).then_some(pair),
                label: label.get_untracked(),
            },
            label_kind: kind.get_untracked(),
            header: header.get_untracked(),
        };
        busy.set(true);
        failure.set(None);
        spawn_local(async move {
            let result: Result<SavedDataset, Failure> = api::post("/datasets", &request).await;
            busy.set(false);
            match result {
                Ok(saved) => {
                    train.set(None);
                    dev.set(None);
                    on_saved.run(saved);
                }
                Err(e) => failure.set(Some(e)),
            }
        });
    };

    let columns = move || {
        train
            .get()
            .map(|u| {
                u.preview
                    .columns
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let column_select = move |id: &'static str, signal: RwSignal<String>, optional: bool| {
        view! {
            <select id=id prop:value=move || signal.get() on:change=move |ev| signal.set(event_target_value(&ev))>
                {optional.then(|| view! { <option value="" prop:selected=move || signal.get().is_empty()>"(none)"</option> })}
                {move || {
                    columns()
                        .into_iter()
                        .map(|c| {
                            let (this, value) = (c.clone(), c.clone());
                            view! { <option value=value prop:selected=move || signal.get() == this>{c}</option> }
                        })
                        .collect_view()
                }}
            </select>
        }
    };
    let error_for = move |field: &'static str| {
        move || {
            failure
                .get()
                .filter(|f| f.is_for(field))
                .map(|f| view! { <p class="error field-error" role="alert">{f.message}</p> })
        }
    };
    let file_field = move |split: Split, id: &'static str, title: &'static str| {
        view! {
            <div class="field">
                <label for=id>{title}</label>
                <input id=id type="file" accept=".csv,.tsv,.jsonl,.ndjson" on:change=move |ev| pick_file(split, ev) />
                <span class="hint">
                    {move || {
                        slot(split)
                            .get()
                            .map(|u| format!("{}: {} rows, {} bytes, sha256 {}…", u.name, u.preview.row_count, u.bytes, &u.sha256[..12]))
                            .unwrap_or_else(|| "CSV, TSV or JSON lines".to_string())
                    }}
                </span>
                {error_for(split.key())}
            </div>
        }
    };
    let label_counts = move || {
        let upload = train.get()?;
        let chosen = label.get();
        let column = upload.preview.columns.iter().find(|c| c.name == chosen)?;
        let text = match &column.values {
            Some(values) => values
                .iter()
                .map(|(v, n)| format!("{v}: {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => "more than 50 distinct values: numbers (regression) or not a label".to_string(),
        };
        Some(view! { <p class="muted" id="ds-label-counts">"train labels — " {text}</p> })
    };

    view! {
        <div class="dataset-form">
            {file_field(Split::Train, "ds-train", "train file")}
            {file_field(Split::Dev, "ds-dev", "dev file")}
            <div class="field">
                <label for="ds-header">"header row"</label>
                <input id="ds-header" type="checkbox" prop:checked=move || header.get() on:change=move |ev| toggle_header(event_target_checked(&ev)) />
                <span class="hint">"the first row of a CSV/TSV file names its columns; without it, columns are 1, 2, …"</span>
            </div>
            <Show when=move || train.get().is_some()>
                <table class="compact" id="ds-preview">
                    <thead>
                        <tr>{move || columns().into_iter().map(|c| view! { <th>{c}</th> }).collect_view()}</tr>
                    </thead>
                    <tbody>
                        {move || {
                            train
                                .get()
                                .map(|u| {
                                    u.preview
                                        .rows
                                        .into_iter()
                                        .map(|row| {
                                            view! {
                                                <tr>{row.into_iter().map(|v| view! { <td>{v.unwrap_or_else(|| "∅".into())}</td> }).collect_view()}</tr>
                                            }
                                        })
                                        .collect_view()
                                })
                        }}
                    </tbody>
                </table>
                <div class="field">
                    <label for="ds-text">"text column"</label>
                    {column_select("ds-text", text, false)}
                </div>
                <div class="field">
                    <label for="ds-text-pair">"second text"</label>
                    {column_select("ds-text-pair", text_pair, true)}
                    <span class="hint">"for pair tasks (premise and hypothesis, two sentences)"</span>
                </div>
                <div class="field">
                    <label for="ds-label">"label column"</label>
                    {column_select("ds-label", label, false)}
                    {error_for("label")}
                </div>
                {label_counts}
                <div class="field">
                    <label for="ds-kind">"labels are"</label>
                    <select id="ds-kind" on:change=move |ev| kind.set(if event_target_value(&ev) == "numbers" { DatasetLabels::Numbers } else { DatasetLabels::Classes })>
                        <option value="classes" prop:selected=move || kind.get() == DatasetLabels::Classes>"classes (accuracy, macro F1)"</option>
                        <option value="numbers" prop:selected=move || kind.get() == DatasetLabels::Numbers>"numbers (regression: Pearson, Spearman)"</option>
                    </select>
                </div>
                <div class="field">
                    <label for="ds-name">"dataset name"</label>
                    <input id="ds-name" type="text" bind:value=name />
                    {error_for("name")}
                </div>
                <button type="button" id="ds-save" disabled=move || busy.get() || dev.get().is_none() on:click=save>
                    {move || if dev.get().is_none() { "Upload a dev file to save" } else { "Save dataset" }}
                </button>
            </Show>
            {move || {
                failure
                    .get()
                    .filter(|f| !["train", "dev", "label", "name"].iter().any(|k| f.is_for(k)))
                    .map(|f| view! { <p class="error" role="alert">{f.message}</p> })
            }}
        </div>
    }
}
