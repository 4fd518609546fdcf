//! Experiments: create (validating everything before anything is stored), list, get,
//! delete, start jobs, compare results.

use std::path::{Component, Path, PathBuf};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lightpeft_api::rest::{
    ComparedRun, Comparison, CreateExperiment, Experiment, Job, JobKind, JobResult, Schema,
    TaskInfo,
};
use lightpeft_api::{Hyperparams, ParamError};
use lightpeft_engine::data::{TASKS, TaskId, TaskInputs};

use super::AppState;
use super::http_error::{ApiFailure, ApiJson, NoBody, PathId};
use lightpeft_pipeline::{self as jobs, DataSource, datasets};

type ApiResult<T> = Result<T, ApiFailure>;

/// The form's definition: parameters, presets, tasks and models.
#[utoipa::path(get, path = "/schema", responses((status = 200, body = Schema)))]
pub async fn schema(State(state): State<AppState>) -> Json<Schema> {
    let mut tasks: Vec<TaskInfo> = TASKS
        .iter()
        .map(|spec| {
            let needs_files = matches!(spec.inputs, TaskInputs::UserFiles { .. });
            let available = jobs::bundled_files(spec, &state.data_dir)
                .is_none_or(|files| files.iter().all(|f| f.is_file()));
            TaskInfo {
                name: spec.name.to_string(),
                description: spec.description.to_string(),
                needs_files,
                available,
            }
        })
        .collect();
    // Saved datasets are tasks too; one that does not read is left out of the list (its
    // error comes with any request naming it).
    tasks.extend(
        datasets::list(&state.data_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|saved| TaskInfo {
                name: format!("{}{}", datasets::TASK_PREFIX, saved.name),
                description: saved.summary(),
                needs_files: false,
                available: true,
            }),
    );
    Json(Schema {
        params: lightpeft_api::rest::ParamInfo::all(),
        presets: lightpeft_api::Preset::ALL
            .iter()
            .map(|p| lightpeft_api::rest::PresetInfo {
                preset: *p,
                description: p.description().to_string(),
                params: p.params(),
            })
            .collect(),
        tasks,
        models: models(&state.data_dir),
    })
}

fn models(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("models"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("config.json").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Sets the request's values over the preset's, each through the one validation table.
pub fn apply_params(
    base: Hyperparams,
    values: &serde_json::Map<String, serde_json::Value>,
) -> ApiResult<Hyperparams> {
    let mut params = base;
    for (name, value) in values {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => String::new(),
            _ => {
                return Err(ApiFailure::invalid(
                    "invalid_param",
                    format!("{name}: give a number, a string or a boolean"),
                )
                .field(name.clone()));
            }
        };
        params.set(name, &text).map_err(param_failure)?;
    }
    Ok(params)
}

/// A rejected hyper-parameter as a 400 naming it.
pub fn param_failure(e: ParamError) -> ApiFailure {
    ApiFailure::invalid("invalid_param", format!("{}: {}", e.field, e.message)).field(e.field)
}

/// A user path that must stay inside the data directory.
/// `message` with the data directory's absolute path taken out (`<dir>/models/x` reads
/// `models/x`): a client learns names inside the data directory, never where it lives.
pub fn inside_data_dir(data_dir: &Path, message: &str) -> String {
    let mut out = message.to_string();
    let canonical = data_dir.canonicalize().ok();
    for root in [Some(data_dir.to_path_buf()), canonical]
        .into_iter()
        .flatten()
    {
        let root = root.display().to_string();
        if !root.is_empty() && root != "/" {
            out = out
                .replace(&format!("{root}/"), "")
                .replace(&root, "the data directory");
        }
    }
    out
}

/// Whether `dir` (a model folder) resolves to a place inside the data directory; a folder
/// linked from elsewhere is refused like a file path would be.
fn model_inside(data_dir: &Path, dir: &Path) -> bool {
    match (dir.canonicalize(), data_dir.canonicalize()) {
        (Ok(dir), Ok(root)) => dir.starts_with(root) && dir.is_dir(),
        _ => false,
    }
}

pub fn confined(data_dir: &Path, field: &str, relative: &str) -> ApiResult<PathBuf> {
    let bad = |message: String| ApiFailure::invalid("invalid_path", message).field(field);
    if relative.is_empty() || relative.len() > 1024 || relative.contains('\0') {
        return Err(bad(format!(
            "{field}: give a path relative to the data directory"
        )));
    }
    let path = Path::new(relative);
    if !path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(format!(
            "{field}: `{relative}` leaves the data directory; give a path inside it without `..`"
        )));
    }
    let full = data_dir.join(path);
    let canonical = full.canonicalize().map_err(|_| {
        bad(format!(
            "{field}: no file `{relative}` in the data directory"
        ))
    })?;
    let root = data_dir
        .canonicalize()
        .map_err(|e| ApiFailure::internal(format!("data directory: {e}")))?;
    // A symbolic link inside the data directory must not lead out of it either.
    if !canonical.starts_with(&root) || !canonical.is_file() {
        return Err(bad(format!(
            "{field}: `{relative}` is not a file inside the data directory"
        )));
    }
    Ok(canonical)
}

/// Creates an experiment after checking the task, the model, the files and every value.
#[utoipa::path(post, path = "/experiments", request_body = CreateExperiment,
    responses((status = 201, body = Experiment), (status = 400, body = lightpeft_api::rest::ErrorBody),
        (status = 422, description = "the model or data does not load, or the run would not fit the memory budget", body = lightpeft_api::rest::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateExperiment>,
) -> ApiResult<(StatusCode, Json<Experiment>)> {
    // A built-in task, or a dataset saved under the data directory (`dataset:NAME`).
    let (task, needs_files) = match datasets::dataset_name(&req.task) {
        Some(dataset) => {
            datasets::manifest(&state.data_dir, dataset).map_err(|e| {
                ApiFailure::invalid(
                    "unknown_task",
                    inside_data_dir(&state.data_dir, &e.to_string()),
                )
                .field("task")
            })?;
            (req.task.clone(), false)
        }
        None => {
            let id: TaskId = req.task.parse().map_err(|_| {
                let known: Vec<&str> = TASKS.iter().map(|t| t.name).collect();
                ApiFailure::invalid(
                    "unknown_task",
                    format!(
                        "no task `{}`; known: {}, or {}NAME for a saved dataset",
                        req.task,
                        known.join(", "),
                        datasets::TASK_PREFIX
                    ),
                )
                .field("task")
            })?;
            let spec = id.spec();
            (
                spec.name.to_string(),
                matches!(spec.inputs, TaskInputs::UserFiles { .. }),
            )
        }
    };
    let model_dir = lightpeft_assets::model_dir(&state.data_dir, &req.model);
    if lightpeft_assets::validate_model_name(&req.model).is_err() || !model_dir.is_dir() {
        let known = models(&state.data_dir);
        return Err(ApiFailure::invalid(
            "unknown_model",
            format!(
                "no model `{}` in the data directory; available: {} (import one with `lightpeft assets fetch --model DIR`)",
                req.model,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ),
        )
        .field("model"));
    }
    if !model_inside(&state.data_dir, &model_dir) {
        return Err(ApiFailure::invalid(
            "invalid_path",
            format!(
                "model `{}` links to a folder outside the data directory; copy it in (`lightpeft assets fetch --model DIR`)",
                req.model
            ),
        )
        .field("model"));
    }
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| format!("{} · {}", req.task, req.model));
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(
            ApiFailure::invalid("invalid_name", "name: 1 to 200 printable characters")
                .field("name"),
        );
    }
    let params = apply_params(req.preset.params(), &req.params)?;
    let mut files = Vec::new();
    for (field, value) in [("train_file", &req.train_file), ("dev_file", &req.dev_file)] {
        match (needs_files, value) {
            (true, Some(v)) => {
                confined(&state.data_dir, field, v)?;
                files.push(Some(v.clone()));
            }
            (true, None) => {
                return Err(ApiFailure::invalid(
                    "missing_file",
                    format!(
                        "task {task} reads your files: give {field} (relative to the data directory)"
                    ),
                )
                .field(field));
            }
            (false, Some(_)) => {
                return Err(ApiFailure::invalid(
                    "unexpected_file",
                    format!("task {task} reads its own data; drop {field}"),
                )
                .field(field));
            }
            (false, None) => files.push(None),
        }
    }
    // Load the model and the data once now, so a bad folder or file fails here, not in a job.
    let data_dir = state.data_dir.clone();
    let model = req.model.clone();
    let source = DataSource {
        task: task.clone(),
        train_file: files[0].as_ref().map(|f| data_dir.join(f)),
        dev_file: files[1].as_ref().map(|f| data_dir.join(f)),
    };
    let budget = state.job_memory_budget;
    let run_params = params.clone();
    let checked = tokio::task::spawn_blocking(move || -> Result<(), ApiFailure> {
        let dir = lightpeft_assets::model_dir(&data_dir, &model);
        let inside = |e: &dyn std::fmt::Display| inside_data_dir(&data_dir, &e.to_string());
        let summary = lightpeft_engine::inspect_model_dir(&dir).map_err(|e| {
            let why = inside(&e);
            ApiFailure::unprocessable("bad_model", format!("model `{model}` does not load: {why}"))
                .field("model")
        })?;
        let dataset = jobs::load_dataset(&source, &data_dir)
            .map_err(|e| ApiFailure::unprocessable("bad_data", inside(&e)).field("task"))?;
        // A run too big for the machine would abort the process: refuse it now.
        jobs::check_run_memory(
            &dir,
            summary.encoder_parameters,
            dataset,
            &run_params,
            budget,
        )
        .map_err(|e| match e {
            jobs::Error::OverMemory { field, message } => {
                ApiFailure::unprocessable("over_memory_budget", message).field(field)
            }
            e => ApiFailure::unprocessable("bad_data", inside(&e)).field("task"),
        })?;
        Ok(())
    })
    .await
    .map_err(|e| ApiFailure::internal(format!("validation thread: {e}")))?;
    checked?;
    let experiment = state
        .store
        .insert_experiment(
            &name,
            &task,
            &req.model,
            req.preset,
            &params,
            (files[0].as_deref(), files[1].as_deref()),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(experiment)))
}

/// Every experiment, newest first.
#[utoipa::path(get, path = "/experiments", responses((status = 200, body = Vec<Experiment>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Experiment>>> {
    Ok(Json(state.store.experiments().await?))
}

/// One experiment.
#[utoipa::path(get, path = "/experiments/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Experiment), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Json<Experiment>> {
    Ok(Json(state.store.experiment(id).await?))
}

/// Deletes an experiment, its jobs, records and files; refused while one of its jobs is
/// queued or running.
#[utoipa::path(delete, path = "/experiments/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<StatusCode> {
    state.store.experiment(id).await?;
    let jobs = state.store.jobs(Some(id), None).await?;
    if let Some(active) = jobs.iter().find(|j| !j.status.is_final()) {
        return Err(ApiFailure::conflict(format!(
            "job {} of this experiment is {}; cancel it first",
            active.id,
            active.status.as_str()
        )));
    }
    state.store.delete_experiment(id).await?;
    for job in jobs {
        state.artifacts.remove_job_logged(job.id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn start(state: &AppState, id: i64, kind: JobKind) -> ApiResult<(StatusCode, Json<Job>)> {
    state.store.experiment(id).await?;
    let job = state.store.insert_job(id, kind, None, None).await?;
    state.runner.wake();
    state
        .runner
        .publish(lightpeft_api::rest::Event::job(job.clone()));
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Queues stage 1 of an experiment.
#[utoipa::path(post, path = "/experiments/{id}/estimation", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = Job), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn estimate(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<Job>)> {
    start(&state, id, JobKind::Estimation).await
}

/// Queues the vanilla PEFT baseline of an experiment (unpruned model, same data and epochs).
#[utoipa::path(post, path = "/experiments/{id}/baseline", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = Job), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn baseline(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<Job>)> {
    start(&state, id, JobKind::Baseline).await
}

/// Stage-2 results next to the newest baseline, with ratios.
#[utoipa::path(get, path = "/experiments/{id}/compare", params(("id" = i64, Path)),
    responses((status = 200, body = Comparison)))]
pub async fn compare(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<Comparison>> {
    state.store.experiment(id).await?;
    let results = state.store.results_of(id).await?;
    let baseline = results
        .iter()
        .rev()
        .find(|r| r.kind == JobKind::Baseline)
        .cloned();
    let mut runs = Vec::new();
    for result in results.into_iter().filter(|r| r.kind == JobKind::Finetune) {
        let random = match result.plan_id {
            Some(p) => state
                .store
                .plan(p)
                .await?
                .0
                .preview
                .settings
                .random_seed
                // A patch's seed is `Some(None)` when the plan names no seed: importance-based.
                .flatten()
                .is_some(),
            None => false,
        };
        runs.push(compared(result, baseline.as_ref(), random));
    }
    Ok(Json(Comparison { baseline, runs }))
}

fn compared(result: JobResult, baseline: Option<&JobResult>, random: bool) -> ComparedRun {
    let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
    ComparedRun {
        random,
        score_delta: baseline.map(|b| result.best_score - b.best_score),
        train_speedup: baseline
            .and_then(|b| ratio(b.median_step_seconds, result.median_step_seconds)),
        inference_speedup: baseline.and_then(|b| ratio(b.eval_seconds, result.eval_seconds)),
        encoder_params_ratio: baseline
            .and_then(|b| ratio(result.encoder_params as f64, b.encoder_params as f64)),
        trainable_params_ratio: baseline
            .and_then(|b| ratio(result.trainable_params as f64, b.trainable_params as f64)),
        result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("glue")).unwrap();
        std::fs::write(dir.path().join("glue/train.tsv"), "x").unwrap();
        assert!(confined(dir.path(), "train_file", "glue/train.tsv").is_ok());
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "glue/../../x",
            "",
            "glue",
            "nope.tsv",
        ] {
            let err = confined(dir.path(), "train_file", bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(err.error.field.as_deref(), Some("train_file"));
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
            assert!(confined(dir.path(), "train_file", "link").is_err());
        }
    }
}
