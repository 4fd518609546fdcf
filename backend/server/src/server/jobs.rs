//! Jobs and their lifecycle: list, get, cancel, resume, evaluate, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lightpeft_api::query::JobFilter;
use lightpeft_api::rest::{Event, Job, JobKind, JobStatus, Worker};

use super::AppState;
use super::http_error::{ApiFailure, ApiQuery, NoBody, PathId};

type ApiResult<T> = Result<T, ApiFailure>;

/// Jobs, newest first.
#[utoipa::path(get, path = "/jobs", params(JobFilter), responses((status = 200, body = Vec<Job>)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(filter): ApiQuery<JobFilter>,
) -> ApiResult<Json<Vec<Job>>> {
    let jobs = state
        .store
        .jobs(filter.experiment_id, filter.status)
        .await?;
    Ok(Json(
        jobs.into_iter().map(|j| state.runner.current(j)).collect(),
    ))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = Job), (status = 404, body = lightpeft_api::rest::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<Json<Job>> {
    Ok(Json(state.runner.current(state.store.job(id).await?)))
}

/// The workers that train jobs (each `lightpeft worker`, and the local worker of a `serve`),
/// with their heartbeats and running jobs.
#[utoipa::path(get, path = "/workers", responses((status = 200, body = Vec<Worker>)))]
pub async fn workers(State(state): State<AppState>) -> ApiResult<Json<Vec<Worker>>> {
    Ok(Json(state.store.workers().await?))
}

/// Stops a job: a queued one at once, a running one after its current step (202; watch its
/// status), wherever it runs.
#[utoipa::path(post, path = "/jobs/{id}/cancel", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = Job), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((StatusCode::ACCEPTED, Json(cancel_job(&state, id).await?)))
}

/// Cancels job `id` as `POST /jobs/{id}/cancel` does (a study's cancel uses it for each job).
pub async fn cancel_job(state: &AppState, id: i64) -> ApiResult<Job> {
    let refused = |status: JobStatus| {
        ApiFailure::conflict(format!(
            "job {id} is {}; only queued or running jobs can be cancelled",
            status.as_str()
        ))
    };
    let job = state.runner.current(state.store.job(id).await?);
    if job.status == JobStatus::Queued {
        match state
            .store
            .set_status(
                id,
                JobStatus::Cancelled,
                Some("cancelled before it started"),
            )
            .await
        {
            Ok(job) => {
                state.runner.publish(Event::job(job.clone()));
                return Ok(job);
            }
            // Claimed meanwhile: cancelled as a running job below.
            Err(super::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    } else if job.status != JobStatus::Running {
        return Err(refused(job.status));
    }
    // The worker holding it hears the request at its next lease renewal (within a second);
    // one in this process stops at once.
    let job = match state.store.request_cancel(id).await {
        Ok(job) => job,
        Err(super::StoreError::Conflict(_)) => {
            return Err(refused(state.store.job(id).await?.status));
        }
        Err(e) => return Err(e.into()),
    };
    state.runner.cancel(id);
    Ok(state.runner.current(job))
}

/// Queues an interrupted, cancelled or failed job again. An interrupted or cancelled training
/// job (estimation, stage 2, baseline) with a snapshot continues from it (steps after the
/// snapshot are dropped and taken again); a failed job, or one without a snapshot, starts over.
#[utoipa::path(post, path = "/jobs/{id}/resume", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = Job), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((StatusCode::ACCEPTED, Json(resume_job(&state, id).await?)))
}

/// Queues an interrupted, cancelled or failed job again (from its snapshot when it has one);
/// refused (409) while it is still stopping or when it is in any other state.
pub(super) async fn resume_job(state: &AppState, id: i64) -> ApiResult<Job> {
    // Whether it continues from its snapshot is decided by the state it leaves (the job read
    // after the change is `queued`, which is never resumable).
    let from_snapshot = state.store.job(id).await?.resumable;
    if state.runner.is_running(id) {
        return Err(ApiFailure::conflict(format!(
            "job {id} is still stopping; resume it once its status is final"
        )));
    }
    // The one conditional update decides: of concurrent resumes exactly one gets here, the
    // others are refused with the status it set.
    let job = state
        .store
        .requeue(id, from_snapshot)
        .await
        .map_err(|e| match e {
            super::StoreError::Conflict(now) => ApiFailure::conflict(format!(
                "{now}; only interrupted, cancelled or failed jobs can be resumed"
            )),
            other => other.into(),
        })?;
    // A run that starts over drops the old records when a worker claims it (fenced by that
    // attempt, so a claim that comes first cannot lose its own records).
    // The resumed run records its later steps again: cached sets of those steps go.
    state
        .pruned_sets
        .lock()
        .expect("pruned sets")
        .forget_job(id);
    state.runner.wake();
    state.runner.publish(Event::job(job.clone()));
    Ok(job)
}

/// Queues an evaluation of the model a finished fine-tuning or baseline job trained, on its
/// experiment's dev split (inference time and scores, nothing trained).
#[utoipa::path(post, path = "/jobs/{id}/evaluate", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = Job), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn evaluate(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<Job>)> {
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
    state.runner.wake();
    state.runner.publish(Event::job(eval.clone()));
    Ok((StatusCode::ACCEPTED, Json(eval)))
}

/// Deletes a finished job with its records and files.
#[utoipa::path(delete, path = "/jobs/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 409, body = lightpeft_api::rest::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<StatusCode> {
    let job = state.store.job(id).await?;
    if !job.status.is_final() || state.runner.is_running(id) {
        let job = state.runner.current(job);
        let why = if job.status.is_final() {
            "its final status is not stored yet; delete it once it is"
        } else {
            "cancel it first"
        };
        return Err(ApiFailure::conflict(format!(
            "job {id} is {}; {why}",
            job.status.as_str()
        )));
    }
    state.store.delete_job(id).await?;
    forget_job(&state, id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Drops what this server keeps of a deleted job: its caches and its files.
pub async fn forget_job(state: &AppState, id: i64) {
    state.planners.lock().expect("planners").remove(&id);
    state
        .pruned_sets
        .lock()
        .expect("pruned sets")
        .forget_job(id);
    state.artifacts.remove_job_logged(id).await;
}
