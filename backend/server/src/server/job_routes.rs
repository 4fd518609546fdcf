//! Jobs: list, get, cancel, resume, delete; their records (scalars, evaluations, heatmaps,
//! summaries, importances, convergence); results and downloads.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lightpeft_api::rest::{
    Artifact, Convergence, Eval, Event, Heatmap, Importance, Job, JobKind, JobResult, JobStatus,
    MaskKind, MaskSummary, NeuronOrder, Scalars,
};
use serde::Deserialize;

use super::AppState;
use super::analysis::{SetKey, bin_row, downsample, pruned_set, set_distance};
use super::http_error::ApiFailure;
use super::runner::job_dir;

type ApiResult<T> = Result<T, ApiFailure>;
type Id = Result<UrlPath<i64>, PathRejection>;

/// `GET /jobs` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only jobs of this experiment.
    pub experiment_id: Option<i64>,
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", params(JobFilter), responses((status = 200, body = Vec<Job>)))]
pub async fn list(
    State(state): State<AppState>,
    filter: Result<Query<JobFilter>, QueryRejection>,
) -> ApiResult<Json<Vec<Job>>> {
    let Query(filter) = filter?;
    Ok(Json(
        state
            .store
            .jobs(filter.experiment_id, filter.status)
            .await?,
    ))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Job), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn get(State(state): State<AppState>, id: Id) -> ApiResult<Json<Job>> {
    let UrlPath(id) = id?;
    Ok(Json(state.store.job(id).await?))
}

/// Stops a job: a queued one at once, a running one after its current step (202; watch its
/// status).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", params(("id" = i64, Path)),
    responses((status = 202, body = Job), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn cancel(State(state): State<AppState>, id: Id) -> ApiResult<(StatusCode, Json<Job>)> {
    let UrlPath(id) = id?;
    let job = state.store.job(id).await?;
    if job.status == JobStatus::Queued && state.runner.dequeue(id) {
        let job = state
            .store
            .set_status(
                id,
                JobStatus::Cancelled,
                Some("cancelled before it started"),
            )
            .await?;
        state.runner.publish(Event::Job { job: job.clone() });
        return Ok((StatusCode::ACCEPTED, Json(job)));
    }
    if job.status == JobStatus::Running && state.runner.cancel(id) {
        return Ok((StatusCode::ACCEPTED, Json(job)));
    }
    Err(ApiFailure::conflict(format!(
        "job {id} is {}; only queued or running jobs can be cancelled",
        job.status.as_str()
    )))
}

/// Queues an interrupted, cancelled or failed job again. An estimation with a snapshot
/// continues from it (steps after the snapshot are dropped and taken again); other jobs start
/// over.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/resume", params(("id" = i64, Path)),
    responses((status = 202, body = Job), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn resume(State(state): State<AppState>, id: Id) -> ApiResult<(StatusCode, Json<Job>)> {
    let UrlPath(id) = id?;
    let job = state.store.job(id).await?;
    if !matches!(
        job.status,
        JobStatus::Interrupted | JobStatus::Cancelled | JobStatus::Failed
    ) || state.runner.is_running(id)
    {
        return Err(ApiFailure::conflict(format!(
            "job {id} is {}; only interrupted, cancelled or failed jobs can be resumed",
            job.status.as_str()
        )));
    }
    let from_snapshot = job.resumable;
    if !from_snapshot {
        state.store.truncate_records(id, 0).await?;
    }
    let job = state.store.set_status(id, JobStatus::Queued, None).await?;
    // The resumed run records its later steps again: cached sets of those steps go.
    state
        .pruned_sets
        .lock()
        .expect("pruned sets")
        .forget_job(id);
    state.runner.enqueue(id, from_snapshot);
    state.runner.publish(Event::Job { job: job.clone() });
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Queues an evaluation of the model a finished fine-tuning or baseline job trained, on its
/// experiment's dev split (inference time and scores, nothing trained).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/evaluate", params(("id" = i64, Path)),
    responses((status = 202, body = Job), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn evaluate(State(state): State<AppState>, id: Id) -> ApiResult<(StatusCode, Json<Job>)> {
    let UrlPath(id) = id?;
    let job = state.store.job(id).await?;
    if !matches!(job.kind, JobKind::Finetune | JobKind::Baseline)
        || job.status != JobStatus::Succeeded
    {
        return Err(ApiFailure::conflict(format!(
            "job {id} is a {} job that is {}; evaluations score the model of a succeeded finetune or baseline job",
            job.kind.as_str(),
            job.status.as_str()
        )));
    }
    let eval = state
        .store
        .insert_job(job.experiment_id, JobKind::Evaluation, None, Some(id))
        .await?;
    state.runner.enqueue(eval.id, false);
    state.runner.publish(Event::Job { job: eval.clone() });
    Ok((StatusCode::ACCEPTED, Json(eval)))
}

/// Deletes a finished job with its records and files.
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, id: Id) -> ApiResult<StatusCode> {
    let UrlPath(id) = id?;
    let job = state.store.job(id).await?;
    if !job.status.is_final() || state.runner.is_running(id) {
        return Err(ApiFailure::conflict(format!(
            "job {id} is {}; cancel it first",
            job.status.as_str()
        )));
    }
    state.store.delete_job(id).await?;
    state.planners.lock().expect("planners").remove(&id);
    state
        .pruned_sets
        .lock()
        .expect("pruned sets")
        .forget_job(id);
    let _ = std::fs::remove_dir_all(job_dir(&state.data_dir, id));
    Ok(StatusCode::NO_CONTENT)
}

/// A step range and a point budget.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// First step (default 0).
    pub from: Option<i64>,
    /// Last step (default: the newest).
    pub to: Option<i64>,
    /// At most this many points, evenly spread, the last always kept (default 1000; 0 = all).
    pub max_points: Option<usize>,
}

impl Range {
    fn check(&self) -> ApiResult<(i64, i64, usize)> {
        let from = self.from.unwrap_or(0);
        let to = self.to.unwrap_or(i64::MAX);
        if from < 0 || to < from {
            return Err(
                ApiFailure::invalid("invalid_range", "from and to: 0 ≤ from ≤ to")
                    .field(if from < 0 { "from" } else { "to" }),
            );
        }
        let max = self.max_points.unwrap_or(1000);
        if max > 100_000 {
            return Err(
                ApiFailure::invalid("invalid_range", "max_points: at most 100000")
                    .field("max_points"),
            );
        }
        Ok((from, to, max))
    }
}

/// Per-step loss, learning rate, gradient norm and step time.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/scalars", params(("id" = i64, Path), Range),
    responses((status = 200, body = Scalars)))]
pub async fn scalars(
    State(state): State<AppState>,
    id: Id,
    range: Result<Query<Range>, QueryRejection>,
) -> ApiResult<Json<Scalars>> {
    let UrlPath(id) = id?;
    let Query(range) = range?;
    let (from, to, max) = range.check()?;
    state.store.job(id).await?;
    let rows = state.store.scalars(id, from, to).await?;
    let mut out = Scalars {
        total: rows.len() as i64,
        ..Scalars::default()
    };
    for i in downsample(rows.len(), max) {
        let r = &rows[i];
        out.steps.push(r.step);
        out.loss.push(r.loss);
        out.ce_loss.push(r.ce_loss);
        out.l1_loss.push(r.l1_loss);
        out.lr.push(r.lr);
        out.grad_norm.push(r.grad_norm);
        out.seconds.push(r.seconds);
    }
    Ok(Json(out))
}

/// Every dev evaluation.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/evals", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Eval>)))]
pub async fn evals(State(state): State<AppState>, id: Id) -> ApiResult<Json<Vec<Eval>>> {
    let UrlPath(id) = id?;
    state.store.job(id).await?;
    Ok(Json(state.store.evals(id).await?))
}

/// Which snapshot and how to lay it out.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HeatmapQuery {
    /// `head` or `neuron`.
    pub kind: MaskKind,
    /// Step (default: the newest snapshot); the nearest kept snapshot at or before it is used.
    pub step: Option<i64>,
    /// Columns per layer for neurons (default 64; 0 = every neuron). Heads are never binned.
    pub bins: Option<usize>,
    /// `binned` (index order) or `sorted` (ascending values).
    pub order: Option<NeuronOrder>,
}

/// Mask values at one snapshot, layers × heads or layers × neuron bins.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/heatmap", params(("id" = i64, Path), HeatmapQuery),
    responses((status = 200, body = Heatmap), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn heatmap(
    State(state): State<AppState>,
    id: Id,
    query: Result<Query<HeatmapQuery>, QueryRejection>,
) -> ApiResult<Json<Heatmap>> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    let bins = match q.kind {
        MaskKind::Head => 0,
        MaskKind::Neuron => q.bins.unwrap_or(64),
    };
    if bins > 100_000 {
        return Err(ApiFailure::invalid("invalid_bins", "bins: at most 100000").field("bins"));
    }
    state.store.job(id).await?;
    let steps = state.store.snapshot_steps(id, q.kind).await?;
    let step = match q.step {
        Some(s) if s < 0 => {
            return Err(ApiFailure::invalid("invalid_step", "step: 0 or more").field("step"));
        }
        Some(s) => steps
            .iter()
            .rev()
            .find(|&&k| k <= s)
            .or(steps.first())
            .copied(),
        None => steps.last().copied(),
    }
    .ok_or_else(|| {
        ApiFailure::not_found(format!(
            "job {id} has no {} mask snapshot yet",
            q.kind.as_str()
        ))
    })?;
    let layers = state.store.snapshot(id, q.kind, step).await?;
    let sorted = q.order.unwrap_or_default() == NeuronOrder::Sorted;
    let mut values = Vec::with_capacity(layers.len());
    let mut widths = Vec::new();
    for row in &layers {
        let (v, w) = bin_row(row, bins, sorted && q.kind == MaskKind::Neuron);
        values.push(v);
        widths = w;
    }
    let all = values.iter().flatten();
    let min = all.clone().copied().fold(f32::INFINITY, f32::min);
    let max = all.copied().fold(f32::NEG_INFINITY, f32::max);
    Ok(Json(Heatmap {
        kind: q.kind,
        step,
        values,
        column_width: widths,
        min,
        max,
        snapshot_steps: steps,
    }))
}

/// A mask family and a point budget.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// `head` or `neuron`.
    pub kind: MaskKind,
    /// At most this many steps (default 200; 0 = all).
    pub max_points: Option<usize>,
}

/// Per-layer quantiles of every step's masks (kept for every step, unlike full snapshots).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/mask-summary", params(("id" = i64, Path), SummaryQuery),
    responses((status = 200, body = Vec<MaskSummary>)))]
pub async fn mask_summary(
    State(state): State<AppState>,
    id: Id,
    query: Result<Query<SummaryQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<MaskSummary>>> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    state.store.job(id).await?;
    let rows = state.store.mask_summaries(id, q.kind).await?;
    let mut steps: Vec<i64> = rows.iter().map(|r| r.0).collect();
    steps.dedup();
    let keep: std::collections::HashSet<i64> = downsample(steps.len(), q.max_points.unwrap_or(200))
        .into_iter()
        .map(|i| steps[i])
        .collect();
    Ok(Json(
        rows.into_iter()
            .filter(|r| keep.contains(&r.0))
            .map(|(step, layer, v)| MaskSummary {
                step,
                layer,
                quantiles: v[..5].iter().map(|&x| x as f32).collect(),
                mean: v[5] as f32,
            })
            .collect(),
    ))
}

/// One step, or the planner's average.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportanceQuery {
    /// Step; without it, the average over the second half of the steps (what the planner
    /// uses).
    pub step: Option<i64>,
}

/// Module importance ratios and per-rank importances.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/importance", params(("id" = i64, Path), ImportanceQuery),
    responses((status = 200, body = Importance)))]
pub async fn importance(
    State(state): State<AppState>,
    id: Id,
    query: Result<Query<ImportanceQuery>, QueryRejection>,
) -> ApiResult<Json<Importance>> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    state.store.job(id).await?;
    let (modules, _) = state.store.job_modules_and_shape(id).await?;
    let modules: Vec<String> = modules
        .and_then(|m| serde_json::from_str(&m).ok())
        .ok_or_else(|| ApiFailure::not_found(format!("job {id} records no importances")))?;
    let module_steps = state.store.importances(id, "module").await?;
    let rank_steps = state.store.importances(id, "rank").await?;
    let n = modules.len().max(1);
    let pick = |steps: &[(i64, Vec<f64>)]| -> ApiResult<Vec<f64>> {
        match q.step {
            Some(s) => steps
                .iter()
                .find(|(k, _)| *k == s)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| ApiFailure::not_found(format!("no importances at step {s}"))),
            None => {
                let values: Vec<Vec<f64>> = steps.iter().map(|(_, v)| v.clone()).collect();
                if values.is_empty() {
                    return Ok(Vec::new());
                }
                lightpeft_engine::plan::aggregate_importance(&values)
                    .map_err(|e| ApiFailure::internal(e.to_string()))
            }
        }
    };
    let module_importance = pick(&module_steps)?;
    let flat = pick(&rank_steps)?;
    let r = flat.len() / n;
    Ok(Json(Importance {
        step: q.step,
        rank_importance: if r == 0 {
            Vec::new()
        } else {
            flat.chunks(r).map(<[f64]>::to_vec).collect()
        },
        modules,
        module_importance,
        steps: module_steps.len() as i64,
    }))
}

/// Ratios the convergence signal uses.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConvergenceQuery {
    /// Head ratio (default: the experiment's).
    pub head_ratio: Option<f64>,
    /// FFN ratio (default: the experiment's).
    pub ffn_ratio: Option<f64>,
}

/// How much the set a plan would prune still changes between consecutive snapshots (Jaccard
/// distance of the pruned sets): near 0 means estimation has settled.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/convergence", params(("id" = i64, Path), ConvergenceQuery),
    responses((status = 200, body = Convergence)))]
pub async fn convergence(
    State(state): State<AppState>,
    id: Id,
    query: Result<Query<ConvergenceQuery>, QueryRejection>,
) -> ApiResult<Json<Convergence>> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    let job = state.store.job(id).await?;
    let params = state.store.experiment(job.experiment_id).await?.params;
    let check = |name: &str, v: Option<f64>, default: f64| -> ApiResult<f64> {
        let v = v.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            return Err(ApiFailure::invalid(
                "invalid_param",
                format!("{name}: {v} is outside [0, 1]"),
            )
            .field(name));
        }
        Ok(v)
    };
    let head_ratio = check("head_ratio", q.head_ratio, params.head_ratio)?;
    let ffn_ratio = check("ffn_ratio", q.ffn_ratio, params.ffn_ratio)?;
    let mut out = Convergence {
        steps: Vec::new(),
        head_change: Vec::new(),
        neuron_change: Vec::new(),
        head_ratio,
        ffn_ratio,
    };
    let steps = state.store.snapshot_steps(id, MaskKind::Head).await?;
    let key = |kind, ratio: f64, method: &str| SetKey {
        job: id,
        kind,
        ratio_bits: ratio.to_bits(),
        layerwise: method == "layerwise",
    };
    let keys = [
        key(MaskKind::Head, head_ratio, &params.head_method),
        key(MaskKind::Neuron, ffn_ratio, &params.ffn_method),
    ];
    let mut sets = {
        let mut cache = state.pruned_sets.lock().expect("pruned sets");
        keys.map(|k| cache.take(k))
    };
    for (key, sets) in keys.iter().zip(&mut sets) {
        // Steps that retention deleted leave; new steps are computed once.
        sets.retain(|step, _| steps.binary_search(step).is_ok());
        for &step in &steps {
            if let std::collections::btree_map::Entry::Vacant(slot) = sets.entry(step) {
                let masks = state.store.snapshot(id, key.kind, step).await?;
                let ratio = f64::from_bits(key.ratio_bits);
                slot.insert(pruned_set(&masks, ratio, key.layerwise));
            }
        }
    }
    // Both kinds are snapshotted at the same steps.
    let heads: Vec<(&i64, &Vec<bool>)> = sets[0].iter().collect();
    let neurons: Vec<&Vec<bool>> = sets[1].values().collect();
    for i in 1..heads.len().min(neurons.len()) {
        out.steps.push(*heads[i].0);
        out.head_change
            .push(set_distance(heads[i - 1].1, heads[i].1));
        out.neuron_change
            .push(set_distance(neurons[i - 1], neurons[i]));
    }
    {
        let mut cache = state.pruned_sets.lock().expect("pruned sets");
        for (key, sets) in keys.into_iter().zip(sets) {
            cache.put(key, sets);
        }
    }
    Ok(Json(out))
}

/// The result of a finished fine-tuning or baseline job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/result", params(("id" = i64, Path)),
    responses((status = 200, body = JobResult), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn result(State(state): State<AppState>, id: Id) -> ApiResult<Json<JobResult>> {
    let UrlPath(id) = id?;
    let job = state.store.job(id).await?;
    state.store.result(id).await?.map(Json).ok_or_else(|| {
        ApiFailure::not_found(format!(
            "job {id} ({}) has no result{}",
            job.kind.as_str(),
            if job.kind == JobKind::Estimation {
                ": estimation jobs produce masks and importances, see /heatmap and /importance"
            } else {
                " yet"
            }
        ))
    })
}

/// What a job's folder offers for download, by name.
fn artifacts_of(state: &AppState, id: i64) -> Vec<(Artifact, std::path::PathBuf)> {
    let dir = job_dir(&state.data_dir, id);
    let mut out = Vec::new();
    for (folder, what) in [
        (
            "stage1",
            "stage-1 model (masks, PEFT and head), lightpeft export",
        ),
        (
            "model",
            "trained model, pruned when a plan was applied (safetensors + config + tokenizer)",
        ),
        (
            "hf-peft",
            "Hugging Face PEFT adapter of the unpruned LoRA model",
        ),
    ] {
        let Ok(entries) = std::fs::read_dir(dir.join(folder)) else {
            continue;
        };
        let mut files: Vec<_> = entries.flatten().filter(|e| e.path().is_file()).collect();
        files.sort_by_key(|e| e.file_name());
        for e in files {
            let name = format!("{folder}/{}", e.file_name().to_string_lossy());
            out.push((
                Artifact {
                    bytes: e.metadata().map_or(0, |m| m.len()),
                    description: what.to_string(),
                    name,
                },
                e.path(),
            ));
        }
    }
    let summary = dir.join("estimation.json");
    if let Ok(m) = summary.metadata() {
        out.push((
            Artifact {
                name: "estimation.json".into(),
                bytes: m.len(),
                description: "final masks and averaged importances the planner reads".into(),
            },
            summary,
        ));
    }
    out
}

/// Files a job wrote.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/artifacts", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Artifact>)))]
pub async fn artifacts(State(state): State<AppState>, id: Id) -> ApiResult<Json<Vec<Artifact>>> {
    let UrlPath(id) = id?;
    state.store.job(id).await?;
    Ok(Json(
        artifacts_of(&state, id)
            .into_iter()
            .map(|(a, _)| a)
            .collect(),
    ))
}

/// Downloads one artifact by the name `/artifacts` lists (nothing else is reachable).
#[utoipa::path(get, path = "/api/v1/jobs/{id}/artifacts/{name}", params(("id" = i64, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn artifact(
    State(state): State<AppState>,
    path: Result<UrlPath<(i64, String)>, PathRejection>,
) -> ApiResult<Response> {
    let UrlPath((id, name)) = path?;
    state.store.job(id).await?;
    let (_, file) = artifacts_of(&state, id)
        .into_iter()
        .find(|(a, _)| a.name == name)
        .ok_or_else(|| ApiFailure::not_found(format!("job {id} has no artifact `{name}`")))?;
    let bytes = tokio::fs::read(&file)
        .await
        .map_err(|e| ApiFailure::internal(format!("{}: {e}", file.display())))?;
    Ok(download(
        bytes,
        name.rsplit('/').next().unwrap_or("file"),
        "application/octet-stream",
    ))
}

fn download(bytes: Vec<u8>, filename: &str, mime: &str) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", filename.replace('"', ""));
    (
        [
            (header::CONTENT_TYPE, mime.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from(bytes),
    )
        .into_response()
}

/// Which arrays, in which format.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ArraysQuery {
    /// `head`, `neuron`, `module` or `rank`.
    pub kind: String,
    /// `csv` (default) or `safetensors`.
    pub format: Option<String>,
}

/// Every kept snapshot of masks, or every step's importances, as CSV or safetensors.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/arrays", params(("id" = i64, Path), ArraysQuery),
    responses((status = 200, content_type = "text/csv"), (status = 400, body = lightpeft_api::rest::ErrorBody)))]
pub async fn arrays(
    State(state): State<AppState>,
    id: Id,
    query: Result<Query<ArraysQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let UrlPath(id) = id?;
    let Query(q) = query?;
    let format = q.format.as_deref().unwrap_or("csv");
    if format != "csv" && format != "safetensors" {
        return Err(
            ApiFailure::invalid("invalid_format", "format: csv or safetensors").field("format"),
        );
    }
    state.store.job(id).await?;
    // (step, rows × columns)
    let mut arrays: Vec<(i64, Vec<Vec<f64>>)> = Vec::new();
    match q.kind.as_str() {
        "head" | "neuron" => {
            let kind = if q.kind == "head" {
                MaskKind::Head
            } else {
                MaskKind::Neuron
            };
            for step in state.store.snapshot_steps(id, kind).await? {
                let layers = state.store.snapshot(id, kind, step).await?;
                let rows = layers
                    .iter()
                    .map(|l| l.iter().map(|&v| v as f64).collect())
                    .collect();
                arrays.push((step, rows));
            }
        }
        "module" | "rank" => {
            let (modules, _) = state.store.job_modules_and_shape(id).await?;
            let n = modules
                .and_then(|m| serde_json::from_str::<Vec<String>>(&m).ok())
                .map_or(1, |m| m.len().max(1));
            for (step, values) in state.store.importances(id, &q.kind).await? {
                let width = if q.kind == "module" {
                    values.len()
                } else {
                    values.len() / n
                };
                let rows = values.chunks(width.max(1)).map(<[f64]>::to_vec).collect();
                arrays.push((step, rows));
            }
        }
        other => {
            return Err(ApiFailure::invalid(
                "invalid_kind",
                format!("kind: `{other}` is not one of head, neuron, module, rank"),
            )
            .field("kind"));
        }
    }
    let name = format!("job{id}-{}", q.kind);
    if format == "csv" {
        let mut text = String::from("step,row,column,value\n");
        for (step, rows) in &arrays {
            for (r, row) in rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    text.push_str(&format!("{step},{r},{c},{v}\n"));
                }
            }
        }
        return Ok(download(
            text.into_bytes(),
            &format!("{name}.csv"),
            "text/csv",
        ));
    }
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = arrays
        .iter()
        .map(|(step, rows)| {
            let cols = rows.first().map_or(0, Vec::len);
            let bytes = rows
                .iter()
                .flatten()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect();
            (format!("step_{step}"), vec![rows.len(), cols], bytes)
        })
        .collect();
    Ok(download(
        safetensors_bytes(&tensors),
        &format!("{name}.safetensors"),
        "application/octet-stream",
    ))
}

/// The safetensors layout: an 8-byte little-endian header length, a JSON header naming
/// each tensor's dtype, shape and byte range, then the data.
fn safetensors_bytes(tensors: &[(String, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
    }
    let mut head = serde_json::to_vec(&header).expect("plain data");
    // Data starts on an 8-byte boundary.
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut out = (head.len() as u64).to_le_bytes().to_vec();
    out.extend(head);
    for (_, _, bytes) in tensors {
        out.extend(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_layout_is_readable() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = safetensors_bytes(&[("step_0".into(), vec![2, 2], data.clone())]);
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(header["step_0"]["shape"], serde_json::json!([2, 2]));
        assert_eq!(&bytes[8 + n..], &data[..]);
        assert_eq!((8 + n) % 8, 0);
    }
}
