//! `lightpeft serve`: the REST API, live events, the job runner and the dashboard's files.

mod analysis;
mod auth;
mod experiments;
mod http_error;
mod job_routes;
mod plans;
mod recorder;
mod runner;
mod store;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use lightpeft_api::rest::{Event, Health};
use tokio::sync::broadcast;
use tower_http::services::{ServeDir, ServeFile};
use utoipa::OpenApi;

pub use auth::Token;
use http_error::ApiFailure;

/// Largest request body accepted (JSON requests are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The most of a refused body the server reads (and discards) before answering 413.
///
/// Answering while the client is still writing and then closing the connection makes the
/// client's kernel see a reset, and many clients report that instead of the answer. Reading a
/// bounded remainder first lets ordinary oversized requests get their 413; beyond this size the
/// server answers at once and lets the connection drop.
const DRAIN_BYTES: usize = 1024 * 1024;

/// How the server runs.
pub struct ServeConfig {
    /// Data directory (models, data, jobs, the database).
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub addr: SocketAddr,
    /// Bearer token; required when `addr` is not loopback.
    pub token: Option<Token>,
    /// Jobs that run at once.
    pub concurrent_jobs: usize,
    /// The built dashboard (index.html and the wasm-bindgen output).
    pub dashboard_dir: PathBuf,
    /// Full mask snapshots kept per job.
    pub max_snapshots: usize,
    /// Estimation steps between resumable snapshots.
    pub checkpoint_every: usize,
    /// The SQLite file.
    pub database: PathBuf,
    /// Benchmarking only: step records are not sent to the store.
    pub discard_records: bool,
    /// Where jobs load and train their models.
    pub device: lightpeft_pipeline::DeviceChoice,
}

/// What every handler reaches.
#[derive(Clone)]
pub struct AppState {
    store: store::Store,
    runner: runner::Runner,
    events: broadcast::Sender<Event>,
    data_dir: PathBuf,
    token: Option<Token>,
    planners: Arc<Mutex<HashMap<i64, Arc<plans::CachedPlanner>>>>,
    /// Pruned sets per snapshot, for the convergence signal.
    pruned_sets: Arc<Mutex<analysis::SetCache>>,
    /// Turns true at shutdown, ending the event streams (which would otherwise hold the
    /// graceful shutdown open forever).
    closing: tokio::sync::watch::Receiver<bool>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lightpeft",
        description = "Light-PEFT fine-tuning you can run, watch and steer. Errors are `{\"error\": {code, message, field}}`."
    ),
    paths(
        health,
        openapi_json,
        job_events,
        all_events,
        experiments::schema,
        experiments::create,
        experiments::list,
        experiments::get,
        experiments::delete,
        experiments::estimate,
        experiments::baseline,
        experiments::compare,
        job_routes::list,
        job_routes::get,
        job_routes::cancel,
        job_routes::resume,
        job_routes::delete,
        job_routes::scalars,
        job_routes::evals,
        job_routes::heatmap,
        job_routes::mask_summary,
        job_routes::importance,
        job_routes::convergence,
        job_routes::result,
        job_routes::artifacts,
        job_routes::artifact,
        job_routes::arrays,
        plans::preview,
        plans::commit,
        plans::list,
        plans::get,
    ),
    components(schemas(lightpeft_api::rest::ErrorBody, lightpeft_api::rest::Event))
)]
struct ApiDoc;

/// Liveness and whether a token is needed.
#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = Health)))]
async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: state.token.is_some(),
    })
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses((status = 200, content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

fn event_stream(
    rx: broadcast::Receiver<Event>,
    closing: tokio::sync::watch::Receiver<bool>,
    job: Option<i64>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold((rx, closing), move |(mut rx, mut closing)| async move {
        loop {
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = closing.wait_for(|c| *c) => return None,
            };
            match received {
                Ok(event) => {
                    let id = match &event {
                        Event::Job { job } => job.id,
                        Event::Step { job_id, .. } | Event::Eval { job_id, .. } => *job_id,
                    };
                    if job.is_some_and(|j| j != id) {
                        continue;
                    }
                    let data = serde_json::to_string(&event).expect("plain data");
                    return Some((Ok(SseEvent::default().data(data)), (rx, closing)));
                }
                // A slow reader skips what it missed; the client re-reads state on `lagged`.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = SseEvent::default().event("lagged").data(n.to_string());
                    return Some((Ok(note), (rx, closing)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Live events of every job (Server-Sent Events; `data` is an `Event`).
#[utoipa::path(get, path = "/api/v1/events", responses((status = 200, content_type = "text/event-stream", body = Event)))]
async fn all_events(State(state): State<AppState>) -> impl IntoResponse {
    Sse::new(event_stream(
        state.events.subscribe(),
        state.closing.clone(),
        None,
    ))
    .keep_alive(KeepAlive::default())
}

/// Live events of one job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/events", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream", body = Event)))]
async fn job_events(
    State(state): State<AppState>,
    id: Result<UrlPath<i64>, PathRejection>,
) -> Result<impl IntoResponse, ApiFailure> {
    let UrlPath(id) = id?;
    // Subscribe first, then check: no event between the two is lost.
    let rx = state.events.subscribe();
    state.store.job(id).await?;
    Ok(
        Sse::new(event_stream(rx, state.closing.clone(), Some(id)))
            .keep_alive(KeepAlive::default()),
    )
}

async fn api_not_found() -> ApiFailure {
    ApiFailure::not_found("no such API route; see /api/v1/openapi.json")
}

async fn dashboard_missing() -> Html<&'static str> {
    Html(
        "<!doctype html><title>lightpeft</title><h1>lightpeft</h1><p>The API runs under \
         <a href=\"/api/v1/openapi.json\">/api/v1</a>, but the dashboard is not built. Run \
         <code>bash scripts/run.sh</code> (or <code>bash scripts/build-dashboard.sh</code>) and \
         restart the server.</p>",
    )
}

fn router(state: AppState, dashboard_dir: &std::path::Path) -> Router {
    use experiments as ex;
    use job_routes as jr;
    let api = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .route("/schema", get(ex::schema))
        .route("/events", get(all_events))
        .route("/experiments", get(ex::list).post(ex::create))
        .route("/experiments/{id}", get(ex::get).delete(ex::delete))
        .route("/experiments/{id}/estimation", post(ex::estimate))
        .route("/experiments/{id}/baseline", post(ex::baseline))
        .route("/experiments/{id}/compare", get(ex::compare))
        .route("/jobs", get(jr::list))
        .route("/jobs/{id}", get(jr::get).delete(jr::delete))
        .route("/jobs/{id}/cancel", post(jr::cancel))
        .route("/jobs/{id}/resume", post(jr::resume))
        .route("/jobs/{id}/evaluate", post(jr::evaluate))
        .route("/jobs/{id}/events", get(job_events))
        .route("/jobs/{id}/scalars", get(jr::scalars))
        .route("/jobs/{id}/evals", get(jr::evals))
        .route("/jobs/{id}/heatmap", get(jr::heatmap))
        .route("/jobs/{id}/mask-summary", get(jr::mask_summary))
        .route("/jobs/{id}/importance", get(jr::importance))
        .route("/jobs/{id}/convergence", get(jr::convergence))
        .route("/jobs/{id}/result", get(jr::result))
        .route("/jobs/{id}/artifacts", get(jr::artifacts))
        .route("/jobs/{id}/artifacts/{*name}", get(jr::artifact))
        .route("/jobs/{id}/arrays", get(jr::arrays))
        .route("/jobs/{id}/preview", post(plans::preview))
        .route("/jobs/{id}/plans", get(plans::list).post(plans::commit))
        .route("/plans/{id}", get(plans::get))
        .fallback(api_not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .with_state(state);
    let app = Router::new().nest("/api/v1", api);
    let index = dashboard_dir.join("index.html");
    if index.is_file() {
        app.fallback_service(ServeDir::new(dashboard_dir).fallback(ServeFile::new(index)))
    } else {
        app.fallback(dashboard_missing)
    }
}

/// Refuses a body whose declared length is over [`MAX_BODY_BYTES`] before any handler (or the
/// token check) runs, after draining up to [`DRAIN_BYTES`] of it. Bodies without a declared
/// length are bounded by `DefaultBodyLimit` as they are read.
async fn refuse_oversized(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(len) if len > MAX_BODY_BYTES as u64 => {
            if len <= DRAIN_BYTES as u64 {
                // The result does not matter: the answer is 413 either way.
                let _ = axum::body::to_bytes(request.into_body(), DRAIN_BYTES).await;
            }
            ApiFailure::payload_too_large().into_response()
        }
        _ => next.run(request).await,
    }
}

/// Runs the server until Ctrl-C or SIGTERM; then stops running jobs after their current
/// step (resumable), commits their records and returns.
pub async fn serve(config: ServeConfig) -> Result<(), String> {
    if !config.addr.ip().is_loopback() && config.token.is_none() {
        return Err(format!(
            "listening on {} (not loopback) needs a token: set LIGHTPEFT_TOKEN or --token-file",
            config.addr
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let store = store::Store::open(&config.database).await?;
    let (events, _) = broadcast::channel(1024);
    let recorder = recorder::Recorder::start(store.clone(), config.max_snapshots);
    let runner = runner::Runner::start(
        store.clone(),
        recorder.clone(),
        events.clone(),
        config.concurrent_jobs,
        runner::JobSettings {
            data_dir: config.data_dir.clone(),
            checkpoint_every: config.checkpoint_every,
            discard_records: config.discard_records,
            device: config.device,
        },
    );
    let (interrupted, queued) = store.recover().await.map_err(|e| e.error.message)?;
    if !interrupted.is_empty() {
        eprintln!(
            "jobs interrupted by the last shutdown (resume them with POST /api/v1/jobs/ID/resume): {interrupted:?}"
        );
    }
    for id in queued {
        runner.enqueue(id, false);
    }
    let (close, closing) = tokio::sync::watch::channel(false);
    let state = AppState {
        closing,
        store,
        runner: runner.clone(),
        events,
        data_dir: config.data_dir.clone(),
        token: config.token.clone(),
        planners: Arc::default(),
        pruned_sets: Arc::default(),
    };
    let app = router(state, &config.dashboard_dir);
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to find a port chosen by the system.
    println!("lightpeft listening on http://{local}");
    let shutdown_runner = runner.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("shutting down: stopping jobs after their current step");
            let _ = close.send(true);
            shutdown_runner.shutdown().await;
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
