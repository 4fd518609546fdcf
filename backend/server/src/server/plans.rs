//! The pruning planner over HTTP: preview (pure, milliseconds, nothing stored) and commit (a
//! stored plan plus its stage-2 job).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lightpeft_api::rest::{
    Committed, Event, JobKind, JobStatus, LayerPlan, ModulePlan, PLAN_SECTIONS, ParamTotals, Plan,
    PlanPreview, PlanSettings,
};
use lightpeft_api::{Hyperparams, PARAMS};
use lightpeft_engine::plan::{ParameterCounts, Planner, PruningPlan};
use lightpeft_pipeline::EstimationFile;
use lightpeft_pipeline::store::ESTIMATION;

use super::AppState;
use super::experiments::param_failure;
use super::http_error::{ApiFailure, ApiJson, PathId};

type ApiResult<T> = Result<T, ApiFailure>;

/// A finished estimation's planner, kept in memory so previews cost only the planning.
pub struct CachedPlanner {
    planner: Planner,
    /// The snapshot step the plan uses (the last).
    last_step: i64,
}

async fn planner(state: &AppState, job_id: i64) -> ApiResult<(Arc<CachedPlanner>, Hyperparams)> {
    let job = state.store.job(job_id).await?;
    if job.kind != JobKind::Estimation {
        return Err(ApiFailure::conflict(format!(
            "job {job_id} is a {} job; plans are made from estimation jobs",
            job.kind.as_str()
        )));
    }
    if job.status != JobStatus::Succeeded {
        return Err(ApiFailure::conflict(format!(
            "job {job_id} is {}; plans need a finished estimation",
            job.status.as_str()
        )));
    }
    let params = state.store.experiment(job.experiment_id).await?.params;
    if let Some(cached) = state.planners.lock().expect("planners").get(&job_id) {
        return Ok((cached.clone(), params));
    }
    let text = (state.artifacts.read(job_id, ESTIMATION).await)
        .map_err(|e| ApiFailure::internal(e.to_string()))?;
    let file: EstimationFile = serde_json::from_slice(&text)
        .map_err(|e| ApiFailure::internal(format!("job {job_id}'s {ESTIMATION}: {e}")))?;
    let planner = Planner::new(file.shape, &file.summary)
        .map_err(|e| ApiFailure::internal(format!("planner: {e}")))?;
    let cached = Arc::new(CachedPlanner {
        planner,
        last_step: (job.total_steps - 1).max(0),
    });
    state
        .planners
        .lock()
        .expect("planners")
        .insert(job_id, cached.clone());
    Ok((cached, params))
}

/// The experiment's values with the request's settings on top, checked by the one table; the
/// settings returned are the plan's whole section of it, as applied.
fn merged(mut params: Hyperparams, patch: &PlanSettings) -> ApiResult<(Hyperparams, PlanSettings)> {
    let outside = patch.names().into_iter().find(|name| {
        !PARAMS
            .iter()
            .any(|spec| spec.name == *name && PLAN_SECTIONS.contains(&spec.section))
    });
    if let Some(name) = outside {
        return Err(ApiFailure::invalid(
            "invalid_param",
            format!(
                "{name}: a plan sets only the {} parameters; change the experiment for the others",
                PLAN_SECTIONS.join(" and ")
            ),
        )
        .field(name));
    }
    params.apply(patch).map_err(|errors| {
        param_failure(errors.into_iter().next().expect("a refusal names a field"))
    })?;
    let settings = PlanSettings::of_sections(&params, &PLAN_SECTIONS);
    Ok((params, settings))
}

fn totals(c: &ParameterCounts) -> ParamTotals {
    ParamTotals {
        encoder_layers: c.encoder_layers,
        embeddings: c.embeddings,
        classifier_head: c.classifier_head,
        peft: c.peft,
        trainable: c.trainable,
        total: c.total,
    }
}

pub(super) async fn compute(
    state: &AppState,
    job_id: i64,
    body: PlanSettings,
) -> ApiResult<(PlanPreview, PruningPlan, i64)> {
    let started = Instant::now();
    let (cached, base) = planner(state, job_id).await?;
    let (params, settings) = merged(base, &body)?;
    let plan = cached
        .planner
        .plan(&lightpeft_pipeline::plan_request(&params))
        .map_err(|e| ApiFailure::unprocessable("unplannable", e.to_string()))?;
    let ratio = cached
        .planner
        .shape()
        .step_time_ratio(&plan, params.max_len)
        .map_err(|e| ApiFailure::internal(format!("step-time estimate: {e}")))?;
    let measured = state
        .store
        .job(job_id)
        .await?
        .step_seconds
        .map(|s| s * 1000.0);
    let preview = PlanPreview {
        settings,
        layers: plan
            .layers
            .iter()
            .map(|l| LayerPlan {
                kept_heads: l.kept_heads.clone(),
                removed_heads: l.removed_heads,
                kept_neurons: l.kept_neurons.clone(),
                removed_neurons: l.removed_neurons,
            })
            .collect(),
        modules: plan
            .peft
            .modules
            .iter()
            .map(|m| ModulePlan {
                module: m.id.name(),
                kept_ranks: m.kept_ranks.clone(),
            })
            .collect(),
        total_modules: plan.peft.total_modules,
        parameters_before: totals(&plan.parameters_before),
        parameters_after: totals(&plan.parameters_after),
        estimated_step_time_ratio: ratio,
        measured_step_ms: measured,
        estimated_step_ms: measured.map(|m| m * ratio),
        compute_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    Ok((preview, plan, cached.last_step))
}

/// What a plan would remove and save; nothing is stored.
#[utoipa::path(post, path = "/jobs/{id}/preview", params(("id" = i64, Path)), request_body = PlanSettings,
    responses((status = 200, body = PlanPreview), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn preview(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(body): ApiJson<PlanSettings>,
) -> ApiResult<Json<PlanPreview>> {
    Ok(Json(compute(&state, id, body).await?.0))
}

/// Stores the plan and queues its stage-2 job.
#[utoipa::path(post, path = "/jobs/{id}/plans", params(("id" = i64, Path)), request_body = PlanSettings,
    responses((status = 201, body = Committed), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn commit(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(body): ApiJson<PlanSettings>,
) -> ApiResult<(StatusCode, Json<Committed>)> {
    let (preview, plan, step) = compute(&state, id, body).await?;
    let experiment_id = state.store.job(id).await?.experiment_id;
    let plan_id = state
        .store
        .insert_plan(
            id,
            &serde_json::to_string(&preview.settings).expect("plain data"),
            &serde_json::to_string(&preview).expect("plain data"),
            &serde_json::to_string(&plan).expect("plain data"),
            step,
        )
        .await?;
    let job = state
        .store
        .insert_job(experiment_id, JobKind::Finetune, Some(plan_id), None)
        .await?;
    state.runner.wake();
    state.runner.publish(Event::job(job.clone()));
    let (plan, _) = state.store.plan(plan_id).await?;
    Ok((StatusCode::CREATED, Json(Committed { plan, job })))
}

/// Plans made from an estimation job.
#[utoipa::path(get, path = "/jobs/{id}/plans", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Plan>)))]
pub async fn list(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Json<Vec<Plan>>> {
    state.store.job(id).await?;
    Ok(Json(state.store.plans_of(id).await?))
}

/// One committed plan (read-only).
#[utoipa::path(get, path = "/plans/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Plan), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Json<Plan>> {
    Ok(Json(state.store.plan(id).await?.0))
}
