//! Studies over HTTP: one estimation, a grid of plans, several seeds of stage 2 per plan, the
//! vanilla baselines and the random ablation, all queued as ordinary jobs that name their
//! study; the report groups their results per configuration, with the spread over seeds, the
//! ratios to the all-targets baseline and the Pareto frontier on every cost axis.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lightpeft_api::query::{ExportFormat, ExportQuery};
use lightpeft_api::rest::{
    CreateStudy, Event, Job, JobKind, JobResult, JobStatus, MAX_STUDY_JOBS, MAX_STUDY_SEEDS,
    PlanSettings, STUDY_AXES, Study, StudyAxis, StudyConfiguration, StudyPlans, StudyReport,
    StudyRole, StudyState,
};
use lightpeft_api::{ALL_TARGETS, HyperparamsPatch, PeftKind};
use lightpeft_engine::plan::PlanRequest;
use lightpeft_engine::plan::study::{
    Better, heads_ffn_frontier, pareto_frontier, plan_grid, plan_list, quick_frontier, spread,
};

use super::AppState;
use super::http_error::{ApiFailure, ApiJson, ApiQuery, NoBody, PathId};
use super::store::StudyJob;

type ApiResult<T> = Result<T, ApiFailure>;

/// How often the server looks for studies whose estimation has just succeeded.
const EXPAND_EVERY: Duration = Duration::from_secs(1);

/// The baseline targets a study compares with besides all of them.
const QUERY_VALUE: &str = "query,value";

/// The plans of a request, in grid order.
fn requested_plans(plans: &StudyPlans) -> ApiResult<Vec<PlanRequest>> {
    let plans = match plans {
        StudyPlans::Grid {
            head_ratios,
            ffn_ratios,
            module_ratios,
            rank_ratios,
        } => plan_grid(head_ratios, ffn_ratios, module_ratios, rank_ratios)
            .map_err(|e| ApiFailure::invalid("invalid_study", e.to_string()).field("plans"))?,
        StudyPlans::HeadsFfnFrontier => heads_ffn_frontier(),
        StudyPlans::QuickFrontier => quick_frontier(),
        StudyPlans::List { plans } => {
            let ratios: Vec<[f64; 4]> = plans
                .iter()
                .map(|p| [p.head_ratio, p.ffn_ratio, p.module_ratio, p.rank_ratio])
                .collect();
            plan_list(&ratios)
                .map_err(|e| ApiFailure::invalid("invalid_study", e.to_string()).field("plans"))?
        }
    };
    Ok(plans)
}

/// Jobs a study queues: (plans × (1 + random) + baselines) × seeds.
fn job_count(spec: &CreateStudy, plans: usize, lora: bool) -> usize {
    let per_plan = 1 + usize::from(spec.random);
    let baselines = if spec.baselines {
        1 + usize::from(lora)
    } else {
        0
    };
    (plans * per_plan + baselines) * spec.seeds as usize
}

/// A job's settings: the experiment's seed moved by `k`, and the targets for a baseline.
fn job_settings(base_seed: u64, k: u32, targets: Option<&str>) -> String {
    let mut patch = HyperparamsPatch {
        seed: Some(base_seed.wrapping_add(u64::from(k))),
        ..HyperparamsPatch::default()
    };
    if let Some(targets) = targets {
        patch
            .set("targets", targets)
            .expect("the built-in target lists parse");
    }
    serde_json::to_string(&patch).expect("plain data")
}

/// A plan's settings as a planner patch; `random` prunes the same counts at random.
fn plan_patch(plan: &PlanRequest, random: Option<u64>) -> HyperparamsPatch {
    HyperparamsPatch {
        head_ratio: Some(plan.head_ratio),
        ffn_ratio: Some(plan.ffn_ratio),
        module_ratio: Some(plan.module_ratio),
        rank_ratio: Some(plan.rank_ratio),
        random_seed: Some(random),
        ..HyperparamsPatch::default()
    }
}

/// Starts a study on an experiment: its baselines are queued at once, its stage-2 jobs as
/// soon as the estimation has succeeded (at once when it already has).
#[utoipa::path(post, path = "/experiments/{id}/studies", params(("id" = i64, Path)), request_body = CreateStudy,
    responses((status = 201, body = StudyReport),
        (status = 404, description = "No such experiment or estimation.", body = lightpeft_api::rest::ErrorBody),
        (status = 409, description = "The estimation is another experiment's, or not an estimation.", body = lightpeft_api::rest::ErrorBody),
        (status = 422, description = "More jobs than one study may queue; a plan the planner refuses is the study's `error` instead.", body = lightpeft_api::rest::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(mut spec): ApiJson<CreateStudy>,
) -> ApiResult<(StatusCode, Json<StudyReport>)> {
    let experiment = state.store.experiment(id).await?;
    if !(1..=MAX_STUDY_SEEDS).contains(&spec.seeds) {
        return Err(ApiFailure::invalid(
            "invalid_study",
            format!("seeds: {} is outside 1–{MAX_STUDY_SEEDS}", spec.seeds),
        )
        .field("seeds"));
    }
    let plans = requested_plans(&spec.plans)?;
    if plans.is_empty() {
        return Err(ApiFailure::invalid("invalid_study", "the study has no plan").field("plans"));
    }
    let lora = experiment.params.peft_method == PeftKind::Lora;
    let jobs = job_count(&spec, plans.len(), lora);
    if jobs > MAX_STUDY_JOBS {
        return Err(ApiFailure::unprocessable(
            "too_many_jobs",
            format!(
                "the study would queue {jobs} jobs, over the limit of {MAX_STUDY_JOBS}: fewer plans or seeds"
            ),
        ));
    }
    let estimation = match spec.estimation_job_id {
        Some(job_id) => {
            let job = state.store.job(job_id).await?;
            if job.experiment_id != id || job.kind != JobKind::Estimation {
                return Err(ApiFailure::conflict(format!(
                    "job {job_id} is not an estimation of experiment {id}"
                ))
                .field("estimation_job_id"));
            }
            job
        }
        None => {
            let newest = state
                .store
                .jobs(Some(id), None)
                .await?
                .into_iter()
                .find(|j| j.kind == JobKind::Estimation);
            match newest {
                Some(job) => job,
                None => {
                    let job = state
                        .store
                        .insert_job(id, JobKind::Estimation, None, None)
                        .await?;
                    state.runner.publish(Event::job(job.clone()));
                    job
                }
            }
        }
    };
    spec.estimation_job_id = Some(estimation.id);
    let study = state
        .store
        .insert_study(
            id,
            estimation.id,
            &serde_json::to_string(&spec).expect("plain data"),
        )
        .await?;
    if spec.baselines {
        let seed = experiment.params.seed;
        let mut baselines = Vec::new();
        for k in 0..spec.seeds {
            let targets = lora.then_some(QUERY_VALUE).into_iter().chain([ALL_TARGETS]);
            for targets in targets {
                baselines.push(StudyJob {
                    kind: JobKind::Baseline,
                    settings: job_settings(seed, k, Some(targets)),
                    plan: None,
                });
            }
        }
        announce(
            &state,
            state
                .store
                .queue_study_jobs(study.id, &baselines, false)
                .await?,
        );
    }
    if estimation.status == JobStatus::Succeeded {
        match expand(&state, &study).await {
            // The expander got there first, or a plan was refused: the study exists either way,
            // and its report says which (a refusal is its `error`).
            Err(e)
                if e.status == StatusCode::CONFLICT
                    || e.status == StatusCode::UNPROCESSABLE_ENTITY => {}
            other => other?,
        }
    }
    state.runner.wake();
    let report = report(&state, state.store.study(study.id).await?).await?;
    Ok((StatusCode::CREATED, Json(report)))
}

fn announce(state: &AppState, jobs: Vec<Job>) {
    for job in jobs {
        state.runner.publish(Event::job(job));
    }
}

/// Queues a study's stage-2 jobs (each plan and its random ablation, per seed) in one
/// transaction. A plan the planner cannot make cancels the study with the planner's reason.
async fn expand(state: &AppState, study: &Study) -> ApiResult<()> {
    let experiment = state.store.experiment(study.experiment_id).await?;
    let plans = requested_plans(&study.spec.plans)?;
    let seed = experiment.params.seed;
    let mut jobs = Vec::new();
    for plan in &plans {
        let mut variants = vec![None];
        if study.spec.random {
            variants.push(Some(()));
        }
        for random in variants {
            for k in 0..study.spec.seeds {
                let job_seed = seed.wrapping_add(u64::from(k));
                let patch = plan_patch(plan, random.map(|()| job_seed));
                let computed = super::plans::compute(state, study.estimation_job_id, patch).await;
                let (preview, engine_plan, step) = match computed {
                    Ok(c) => c,
                    Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
                        let why = format!(
                            "plan {}: {}",
                            label_of(plan, random.is_some()),
                            e.error.message.as_str()
                        );
                        state.store.cancel_study(study.id, Some(&why)).await?;
                        return Err(e);
                    }
                    Err(e) => return Err(e),
                };
                jobs.push(StudyJob {
                    kind: JobKind::Finetune,
                    settings: job_settings(seed, k, None),
                    plan: Some((
                        serde_json::to_string(&preview.settings).expect("plain data"),
                        serde_json::to_string(&preview).expect("plain data"),
                        serde_json::to_string(&engine_plan).expect("plain data"),
                        step,
                    )),
                });
            }
        }
    }
    let queued = state.store.queue_study_jobs(study.id, &jobs, true).await?;
    announce(state, queued);
    state.runner.wake();
    Ok(())
}

/// Queues the stage-2 jobs of every study whose estimation has succeeded, every second until
/// `closing` turns true; several servers sharing a store expand each study once.
pub fn spawn_expander(state: AppState) {
    tokio::spawn(async move {
        let mut closing = state.closing.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EXPAND_EVERY) => {}
                _ = closing.changed() => return,
            }
            if *closing.borrow() {
                return;
            }
            let due = match state.store.studies_due().await {
                Ok(due) => due,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the studies");
                    continue;
                }
            };
            for study in due {
                match expand(&state, &study).await {
                    Ok(()) => tracing::info!(study = study.id, "study's stage-2 jobs queued"),
                    // Another server expanded it first.
                    Err(e) if e.status == StatusCode::CONFLICT => {}
                    Err(e) => {
                        tracing::warn!(
                            study = study.id,
                            error = e.error.message.as_str(),
                            "study not expanded"
                        )
                    }
                }
            }
        }
    });
}

/// A study, its jobs and every configuration's numbers.
#[utoipa::path(get, path = "/studies/{id}", params(("id" = i64, Path)),
    responses((status = 200, body = StudyReport)))]
pub async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<StudyReport>> {
    let study = state.store.study(id).await?;
    Ok(Json(report(&state, study).await?))
}

/// Studies, newest first.
#[utoipa::path(get, path = "/studies", responses((status = 200, body = Vec<Study>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Study>>> {
    Ok(Json(state.store.studies(None).await?))
}

/// Cancels a study: nothing more of it is queued, its queued jobs are cancelled and its
/// running ones stop after their current step; finished jobs keep their results.
#[utoipa::path(post, path = "/studies/{id}/cancel", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = StudyReport)))]
pub async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<StudyReport>)> {
    let _one_at_a_time = state.study_changes.lock().await;
    state.store.cancel_study(id, None).await?;
    for job in state.store.jobs_of_study(id).await? {
        if matches!(job.status, JobStatus::Queued | JobStatus::Running) {
            match super::jobs::cancel_job(&state, job.id).await {
                // It ended meanwhile.
                Err(e) if e.status == StatusCode::CONFLICT => {}
                other => {
                    other?;
                }
            }
        }
    }
    let study = state.store.study(id).await?;
    Ok((StatusCode::ACCEPTED, Json(report(&state, study).await?)))
}

/// Resumes a cancelled study, or one with jobs that failed or were interrupted: it is no
/// longer cancelled, and each of its jobs that did not finish (and its estimation, when the
/// plans still wait for it) is queued again, from its snapshot when it has one. Finished jobs
/// keep their results.
#[utoipa::path(post, path = "/studies/{id}/resume", params(("id" = i64, Path)), request_body = lightpeft_api::rest::NoOptions,
    responses((status = 202, body = StudyReport),
        (status = 404, description = "No such study.", body = lightpeft_api::rest::ErrorBody),
        (status = 409, description = "Nothing of it to resume, a job of it is still stopping, or its plans stopped it.", body = lightpeft_api::rest::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    PathId(id): PathId,
    _: NoBody,
) -> ApiResult<(StatusCode, Json<StudyReport>)> {
    let _one_at_a_time = state.study_changes.lock().await;
    let study = state.store.study(id).await?;
    let all = state.store.jobs_of_study(id).await?;
    let mut jobs: Vec<Job> = all
        .iter()
        .filter(|j| j.status.can_resume())
        .cloned()
        .collect();
    if !study.expanded && jobs.iter().all(|j| j.id != study.estimation_job_id) {
        let estimation = state.store.job(study.estimation_job_id).await?;
        if estimation.status.can_resume() {
            jobs.push(estimation);
        }
    }
    // Checked before anything changes, so a refusal leaves the study as it was. A cancelled
    // study's running jobs are stopping too: resumed now, they would end cancelled after the
    // study was reopened, and the study would read finished with them undone.
    let stopping = jobs
        .iter()
        .find(|j| state.runner.is_running(j.id))
        .or_else(|| {
            all.iter()
                .find(|j| study.cancelled && j.status == JobStatus::Running)
        });
    if let Some(job) = stopping {
        return Err(ApiFailure::conflict(format!(
            "job {} of study {id} is still stopping; resume the study once it has",
            job.id
        )));
    }
    if jobs.is_empty() && !study.cancelled {
        return Err(ApiFailure::conflict(format!(
            "study {id} has no cancelled, failed or interrupted job to resume"
        )));
    }
    state.store.reopen_study(id).await.map_err(|e| match e {
        super::StoreError::Conflict(why) => ApiFailure::conflict(format!(
            "{why}; it would stop the same way: start a study with other plans"
        )),
        other => other.into(),
    })?;
    for job in jobs {
        match super::jobs::resume_job(&state, job.id).await {
            // A concurrent resume (of the study or of the job) queued it first.
            Err(e) if e.status == StatusCode::CONFLICT => {}
            other => {
                other?;
            }
        }
    }
    let study = state.store.study(id).await?;
    Ok((StatusCode::ACCEPTED, Json(report(&state, study).await?)))
}

/// Deletes a study that has ended (or been cancelled and stopped): its jobs, their plans,
/// records and files. The estimation it planned from stays.
#[utoipa::path(delete, path = "/studies/{id}", params(("id" = i64, Path)),
    responses((status = 204), (status = 409, description = "A job of it is queued or running.", body = lightpeft_api::rest::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, PathId(id): PathId) -> ApiResult<StatusCode> {
    let local = state.store.jobs_of_study(id).await?;
    if let Some(job) = local.iter().find(|j| state.runner.is_running(j.id)) {
        return Err(ApiFailure::conflict(format!(
            "job {} of study {id} is still stopping; delete the study once it has",
            job.id
        )));
    }
    for job_id in state.store.delete_study(id).await? {
        super::jobs::forget_job(&state, job_id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The study's table as CSV (one row per configuration) or its whole report as JSON.
#[utoipa::path(get, path = "/studies/{id}/export", params(("id" = i64, Path), ExportQuery),
    responses((status = 200, content_type = "text/csv", body = String),
        (status = 200, content_type = "application/json", body = StudyReport)))]
pub async fn export(
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    let study = state.store.study(id).await?;
    let report = report(&state, study).await?;
    let (media, name, body) = match query.format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv", to_csv(&report)),
        ExportFormat::Json => (
            "application/json",
            "json",
            serde_json::to_string_pretty(&report).expect("plain data"),
        ),
    };
    let disposition = format!("attachment; filename=\"study-{id}.{name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, media.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// The columns of [`to_csv`], in order.
pub const CSV_COLUMNS: [&str; 19] = [
    "label",
    "role",
    "head_ratio",
    "ffn_ratio",
    "module_ratio",
    "rank_ratio",
    "jobs",
    "finished",
    "score_mean",
    "score_std",
    "score_delta",
    "encoder_params",
    "encoder_params_ratio",
    "step_seconds",
    "train_speedup",
    "eval_seconds",
    "inference_speedup",
    "peak_rss_mib",
    "frontier",
];

/// One row per configuration; empty cells for numbers not known yet. Numbers are written in
/// Rust's shortest round-trip form, so they parse back to the report's values exactly.
fn to_csv(report: &StudyReport) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push('\n');
    let number = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for c in &report.configurations {
        let role = serde_json::to_value(c.role).expect("plain data");
        let frontier: Vec<&str> = c.frontier.iter().map(|a| a.as_str()).collect();
        let cells = [
            c.label.clone(),
            role.as_str().unwrap_or_default().to_string(),
            number(c.head_ratio),
            number(c.ffn_ratio),
            number(c.module_ratio),
            number(c.rank_ratio),
            c.job_ids.len().to_string(),
            c.finished.to_string(),
            number(c.score_mean),
            number(c.score_std),
            number(c.score_delta),
            number(c.encoder_params),
            number(c.encoder_params_ratio),
            number(c.step_seconds),
            number(c.train_speedup),
            number(c.eval_seconds),
            number(c.inference_speedup),
            number(c.peak_rss_mib),
            frontier.join(" "),
        ];
        // Labels hold no comma or quote; the check keeps the file readable if one ever does.
        let line: Vec<String> = cells
            .into_iter()
            .map(|cell| {
                if cell.contains([',', '"', '\n']) {
                    format!("\"{}\"", cell.replace('"', "\"\""))
                } else {
                    cell
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}

fn label_of(plan: &PlanRequest, random: bool) -> String {
    format!(
        "{} h{:.2} f{:.2} m{:.2} r{:.2}",
        if random { "random" } else { "light-peft" },
        plan.head_ratio,
        plan.ffn_ratio,
        plan.module_ratio,
        plan.rank_ratio
    )
}

fn empty_configuration(
    label: String,
    role: StudyRole,
    plan: Option<&PlanRequest>,
) -> StudyConfiguration {
    StudyConfiguration {
        label,
        role,
        head_ratio: plan.map(|p| p.head_ratio),
        ffn_ratio: plan.map(|p| p.ffn_ratio),
        module_ratio: plan.map(|p| p.module_ratio),
        rank_ratio: plan.map(|p| p.rank_ratio),
        job_ids: Vec::new(),
        finished: 0,
        score_mean: None,
        score_std: None,
        encoder_params: None,
        encoder_params_ratio: None,
        step_seconds: None,
        train_speedup: None,
        eval_seconds: None,
        inference_speedup: None,
        peak_rss_mib: None,
        score_delta: None,
        frontier: Vec::new(),
    }
}

/// Which configuration a study's job belongs to: a baseline by its targets, a stage-2 job
/// by its plan's ratios (`plan`) and whether the plan was random.
fn configuration_of(
    job: &Job,
    plan: Option<&PlanSettings>,
    configurations: &[StudyConfiguration],
) -> Option<usize> {
    match job.kind {
        JobKind::Baseline => {
            let query_value = job
                .settings
                .targets
                .as_ref()
                .is_some_and(|t| t.to_string() == QUERY_VALUE);
            let role = if query_value {
                StudyRole::BaselineQueryValue
            } else {
                StudyRole::BaselineAllTargets
            };
            configurations.iter().position(|c| c.role == role)
        }
        JobKind::Finetune => {
            let settings = plan?;
            let random = settings.random_seed.flatten().is_some();
            let role = if random {
                StudyRole::Random
            } else {
                StudyRole::LightPeft
            };
            let same = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => false,
            };
            configurations.iter().position(|c| {
                c.role == role
                    && same(c.head_ratio, settings.head_ratio)
                    && same(c.ffn_ratio, settings.ffn_ratio)
                    && same(c.module_ratio, settings.module_ratio)
                    && same(c.rank_ratio, settings.rank_ratio)
            })
        }
        _ => None,
    }
}

async fn report(state: &AppState, study: Study) -> ApiResult<StudyReport> {
    let experiment = state.store.experiment(study.experiment_id).await?;
    let lora = experiment.params.peft_method == PeftKind::Lora;
    let mut configurations = Vec::new();
    if study.spec.baselines {
        if lora {
            configurations.push(empty_configuration(
                format!("baseline {QUERY_VALUE}"),
                StudyRole::BaselineQueryValue,
                None,
            ));
        }
        configurations.push(empty_configuration(
            "baseline all targets".into(),
            StudyRole::BaselineAllTargets,
            None,
        ));
    }
    for plan in requested_plans(&study.spec.plans)? {
        configurations.push(empty_configuration(
            label_of(&plan, false),
            StudyRole::LightPeft,
            Some(&plan),
        ));
        if study.spec.random {
            configurations.push(empty_configuration(
                label_of(&plan, true),
                StudyRole::Random,
                Some(&plan),
            ));
        }
    }
    let jobs: Vec<Job> = (state.store.jobs_of_study(study.id).await?)
        .into_iter()
        .map(|j| state.runner.current(j))
        .collect();
    // One read each for the plans' settings and the results, whatever the study's size.
    let mut plans = HashMap::new();
    for (job_id, text) in state.store.study_plan_settings(study.id).await? {
        let settings: PlanSettings = serde_json::from_str(&text)
            .map_err(|e| ApiFailure::internal(format!("job {job_id}'s plan settings: {e}")))?;
        plans.insert(job_id, settings);
    }
    let mut finished: HashMap<i64, JobResult> =
        (state.store.results_of(study.experiment_id).await?)
            .into_iter()
            .map(|r| (r.job_id, r))
            .collect();
    let mut results: Vec<Vec<JobResult>> = vec![Vec::new(); configurations.len()];
    let mut metric = None;
    for job in &jobs {
        let Some(index) = configuration_of(job, plans.get(&job.id), &configurations) else {
            continue;
        };
        configurations[index].job_ids.push(job.id);
        if job.status == JobStatus::Succeeded
            && let Some(result) = finished.remove(&job.id)
        {
            metric.get_or_insert_with(|| result.metric.clone());
            results[index].push(result);
        }
    }
    summarize(&mut configurations, &results);
    let live = jobs
        .iter()
        .any(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running));
    let state_now = if study.cancelled && !live {
        StudyState::Cancelled
    } else if !study.expanded && !study.cancelled {
        StudyState::WaitingForEstimation
    } else if live {
        StudyState::Running
    } else {
        StudyState::Finished
    };
    Ok(StudyReport {
        study,
        state: state_now,
        metric,
        jobs,
        configurations,
    })
}

/// Means over seeds, ratios to the all-targets baseline, and the frontier on each axis.
fn summarize(configurations: &mut [StudyConfiguration], results: &[Vec<JobResult>]) {
    let mean = |values: Vec<f64>| spread(&values).map(|s| s.mean);
    for (c, runs) in configurations.iter_mut().zip(results) {
        c.finished = runs.len();
        let scores: Vec<f64> = runs.iter().map(|r| r.best_score).collect();
        if let Some(s) = spread(&scores) {
            c.score_mean = Some(s.mean);
            c.score_std = Some(s.std);
        }
        c.encoder_params = mean(runs.iter().map(|r| r.encoder_params as f64).collect());
        c.step_seconds = mean(runs.iter().map(|r| r.median_step_seconds).collect());
        c.eval_seconds = mean(runs.iter().map(|r| r.eval_seconds).collect());
        c.peak_rss_mib = mean(runs.iter().filter_map(|r| r.peak_rss_mib).collect());
    }
    let reference = configurations
        .iter()
        .find(|c| c.role == StudyRole::BaselineAllTargets)
        .cloned();
    if let Some(base) = reference {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        for c in configurations.iter_mut() {
            c.encoder_params_ratio = ratio(c.encoder_params, base.encoder_params);
            c.train_speedup = ratio(base.step_seconds, c.step_seconds);
            c.inference_speedup = ratio(base.eval_seconds, c.eval_seconds);
            c.score_delta = c.score_mean.zip(base.score_mean).map(|(a, b)| a - b);
        }
    }
    for axis in STUDY_AXES {
        let (cost, better): (fn(&StudyConfiguration) -> Option<f64>, Better) = match axis {
            StudyAxis::EncoderParams => (|c| c.encoder_params, Better::Lower),
            StudyAxis::TrainSpeedup => (|c| c.train_speedup, Better::Higher),
            StudyAxis::InferenceSpeedup => (|c| c.inference_speedup, Better::Higher),
            StudyAxis::PeakMemory => (|c| c.peak_rss_mib, Better::Lower),
        };
        let measured: Vec<usize> = (0..configurations.len())
            .filter(|&i| {
                cost(&configurations[i]).is_some() && configurations[i].score_mean.is_some()
            })
            .collect();
        let points: Vec<(f64, f64)> = measured
            .iter()
            .map(|&i| {
                let c = &configurations[i];
                (cost(c).expect("measured"), c.score_mean.expect("measured"))
            })
            .collect();
        for on in pareto_frontier(&points, better) {
            configurations[measured[on]].frontier.push(axis);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(score: f64, encoder: usize, step: f64, eval: f64) -> JobResult {
        JobResult {
            job_id: 0,
            kind: JobKind::Finetune,
            plan_id: None,
            metric: "accuracy".into(),
            best_score: score,
            best_metrics: vec![],
            majority_score: 0.5,
            peft_params: 0,
            trainable_params: 0,
            encoder_params: encoder,
            median_step_seconds: step,
            peak_rss_mib: Some(100.0),
            eval_seconds: eval,
            eval_examples: 10,
            steps: 1,
        }
    }

    #[test]
    fn summaries_take_means_ratios_to_the_baseline_and_the_frontier() {
        let plan = PlanRequest {
            head_ratio: 0.5,
            ffn_ratio: 0.5,
            ..PlanRequest::default()
        };
        let mut configurations = vec![
            empty_configuration("base".into(), StudyRole::BaselineAllTargets, None),
            empty_configuration(label_of(&plan, false), StudyRole::LightPeft, Some(&plan)),
            empty_configuration(label_of(&plan, true), StudyRole::Random, Some(&plan)),
        ];
        let results = vec![
            // Scores exact in binary, so the means tie exactly.
            vec![result(0.75, 1000, 2.0, 4.0), result(0.875, 1000, 2.0, 4.0)],
            vec![result(0.8125, 500, 1.0, 2.0), result(0.8125, 500, 1.0, 2.0)],
            // Random: the same cost, a lower score: dominated on every axis.
            vec![result(0.7, 500, 1.0, 2.0)],
        ];
        summarize(&mut configurations, &results);
        let [base, light, random] = &configurations[..] else {
            panic!()
        };
        assert_eq!(base.score_mean, Some(0.8125));
        assert!((base.score_std.unwrap() - 0.0883883476).abs() < 1e-9);
        assert_eq!(light.encoder_params_ratio, Some(0.5));
        assert_eq!(light.train_speedup, Some(2.0));
        assert_eq!(light.inference_speedup, Some(2.0));
        assert_eq!(light.score_delta, Some(0.0));
        assert_eq!(random.score_std, Some(0.0));
        assert!(random.frontier.is_empty(), "{:?}", random.frontier);
        // Light-PEFT: the baseline's score at half the cost, so the baseline is dominated on
        // every axis but memory, where the two tie exactly and both stay.
        assert_eq!(light.frontier, STUDY_AXES);
        assert_eq!(base.frontier, [StudyAxis::PeakMemory]);
    }

    #[test]
    fn the_csv_has_one_row_per_configuration_and_round_trips_numbers() {
        let plan = PlanRequest::default();
        let mut c = empty_configuration(label_of(&plan, false), StudyRole::LightPeft, Some(&plan));
        c.score_mean = Some(0.1 + 0.2);
        let study = Study {
            id: 1,
            experiment_id: 1,
            estimation_job_id: 1,
            spec: CreateStudy {
                estimation_job_id: Some(1),
                plans: StudyPlans::HeadsFfnFrontier,
                seeds: 1,
                baselines: false,
                random: false,
            },
            expanded: true,
            cancelled: false,
            error: None,
            created_at: String::new(),
        };
        let report = StudyReport {
            study,
            state: StudyState::Finished,
            metric: None,
            jobs: vec![],
            configurations: vec![c],
        };
        let csv = to_csv(&report);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split(',').count(), CSV_COLUMNS.len());
        let cells: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(cells[1], "light_peft");
        assert_eq!(cells[8].parse::<f64>().unwrap(), 0.1 + 0.2);
    }
}
