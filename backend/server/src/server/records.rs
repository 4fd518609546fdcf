//! What a job recorded: scalars, evaluations, mask heatmaps and summaries, importances, and
//! the result of a finished job.

use axum::Json;
use axum::extract::State;
use lightpeft_api::query::{HeatmapQuery, ImportanceQuery, Range, SummaryQuery};
use lightpeft_api::rest::{
    Eval, Heatmap, Importance, JobKind, JobResult, MaskKind, MaskSummary, NeuronOrder, Scalars,
};

use super::AppState;
use super::analysis::{bin_row, downsample};
use super::http_error::{ApiFailure, ApiQuery, PathId};

type ApiResult<T> = Result<T, ApiFailure>;

/// The checked bounds of a [`Range`]: (from, to, max points).
fn range_bounds(range: &Range) -> ApiResult<(i64, i64, usize)> {
    let from = range.from.unwrap_or(0);
    let to = range.to.unwrap_or(i64::MAX);
    if from < 0 || to < from {
        return Err(
            ApiFailure::invalid("invalid_range", "from and to: 0 ≤ from ≤ to").field(if from < 0 {
                "from"
            } else {
                "to"
            }),
        );
    }
    let max = range.max_points.unwrap_or(1000);
    if max > 100_000 {
        return Err(
            ApiFailure::invalid("invalid_range", "max_points: at most 100000").field("max_points"),
        );
    }
    Ok((from, to, max))
}

/// Per-step loss, learning rate, gradient norm and step time.
#[utoipa::path(get, path = "/jobs/{id}/scalars", params(("id" = i64, Path), Range),
    responses((status = 200, body = Scalars)))]
pub async fn scalars(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(range): ApiQuery<Range>,
) -> ApiResult<Json<Scalars>> {
    let (from, to, max) = range_bounds(&range)?;
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
#[utoipa::path(get, path = "/jobs/{id}/evals", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Eval>)))]
pub async fn evals(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<Vec<Eval>>> {
    state.store.job(id).await?;
    Ok(Json(state.store.evals(id).await?))
}

/// Mask values at one snapshot, layers × heads or layers × neuron bins.
#[utoipa::path(get, path = "/jobs/{id}/heatmap", params(("id" = i64, Path), HeatmapQuery),
    responses((status = 200, body = Heatmap), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn heatmap(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(q): ApiQuery<HeatmapQuery>,
) -> ApiResult<Json<Heatmap>> {
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

/// Per-layer quantiles of every step's masks (kept for every step, unlike full snapshots).
#[utoipa::path(get, path = "/jobs/{id}/mask-summary", params(("id" = i64, Path), SummaryQuery),
    responses((status = 200, body = Vec<MaskSummary>)))]
pub async fn mask_summary(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(q): ApiQuery<SummaryQuery>,
) -> ApiResult<Json<Vec<MaskSummary>>> {
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

/// Module importance ratios and per-rank importances.
#[utoipa::path(get, path = "/jobs/{id}/importance", params(("id" = i64, Path), ImportanceQuery),
    responses((status = 200, body = Importance)))]
pub async fn importance(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(q): ApiQuery<ImportanceQuery>,
) -> ApiResult<Json<Importance>> {
    state.store.job(id).await?;
    let modules = state.store.job_modules(id).await?;
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

/// The result of a finished fine-tuning or baseline job.
#[utoipa::path(get, path = "/jobs/{id}/result", params(("id" = i64, Path)),
    responses((status = 200, body = JobResult), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn result(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<JobResult>> {
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
