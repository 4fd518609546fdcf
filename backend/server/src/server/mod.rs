//! `lightpeft serve`: the REST API, live events, the job runner and the dashboard's files.

mod analysis;
pub mod artifacts;
mod auth;
mod convergence;
mod dashboard;
mod datasets;
mod downloads;
mod experiments;
mod follow;
mod guard;
mod http_error;
mod jobs;
mod listen;
mod plans;
mod recorder;
mod records;
mod runner;
pub mod store;
mod studies;

pub use artifacts::Artifacts;
pub use runner::{JobSettings, QueueSettings};
pub use store::{Database, WorkerInfo};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures_util::stream::{self, Stream};
use lightpeft_api::rest::{Event, Health, StoreFault, StoreState};
use tokio::sync::broadcast;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Token;
use http_error::{ApiFailure, PathId};
pub(crate) use store::StoreError;

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
    /// A folder with a built dashboard (index.html and the wasm-bindgen output) to serve
    /// instead of the one the binary carries.
    pub dashboard_dir: Option<PathBuf>,
    /// Full mask snapshots kept per job.
    pub max_snapshots: usize,
    /// Estimation steps between resumable snapshots.
    pub checkpoint_every: usize,
    /// Where the store lives: a SQLite file (the default) or a PostgreSQL database.
    pub database: Database,
    /// Where jobs keep their files: the data directory (the default), another folder, or an
    /// object store shared with workers on other machines.
    pub artifacts: Artifacts,
    /// Benchmarking only: step records are not sent to the store.
    pub discard_records: bool,
    /// Where jobs load and train their models.
    pub device: lightpeft_pipeline::DeviceChoice,
    /// Host names the API answers to besides the listening address (and, on loopback,
    /// `localhost`); requests naming any other host are refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; past it new ones get a 503.
    pub max_connections: usize,
    /// Bytes every running job together may use at their peaks; each of the
    /// `concurrent_jobs` gets an equal share, and a job estimated over its share is refused.
    pub memory_budget: u64,
    /// Whether this process trains jobs (its local worker), or only serves the API and the
    /// dashboard while workers elsewhere train.
    pub local_worker: bool,
    /// The local worker's name, unique among the workers of one database (a restarted
    /// server takes back the jobs its name held as interrupted).
    pub worker_name: String,
    /// How long a claim holds without renewal, and how many claims a job gets.
    pub lease: std::time::Duration,
    /// Claims a job gets before the reaper leaves it interrupted instead of queuing it again.
    pub max_attempts: u32,
    /// Largest dataset file accepted from the browser, bytes.
    pub max_upload_bytes: u64,
}

impl ServeConfig {
    /// The share of the memory budget one job may use.
    pub fn job_memory_budget(&self) -> u64 {
        self.memory_budget / self.concurrent_jobs.max(1) as u64
    }
}

/// What every handler reaches.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn store::Store>,
    runner: runner::Runner,
    events: broadcast::Sender<Event>,
    data_dir: PathBuf,
    artifacts: Artifacts,
    token: Option<Token>,
    planners: Arc<Mutex<HashMap<i64, Arc<plans::CachedPlanner>>>>,
    /// Pruned sets per snapshot, for the convergence signal.
    pruned_sets: Arc<Mutex<analysis::SetCache>>,
    /// Turns true at shutdown, ending the event streams (which would otherwise hold the
    /// graceful shutdown open forever).
    closing: tokio::sync::watch::Receiver<bool>,
    /// The folder of the dashboard served under `/`; None serves the embedded one.
    dashboard_dir: Option<PathBuf>,
    /// The names a request's `Host` may give.
    hosts: guard::HostPolicy,
    /// Bytes one job may use at its peak.
    job_memory_budget: u64,
    /// Largest dataset upload, bytes.
    max_upload_bytes: u64,
    /// Held by a study's cancel and resume from start to end: each changes the study's flag and
    /// then its jobs one by one, and two interleaved could leave a study reopened with jobs the
    /// cancel had just cancelled, or cancelled with jobs queued again.
    study_changes: Arc<tokio::sync::Mutex<()>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lightpeft",
        description = "Light-PEFT fine-tuning you can run, watch and steer. Errors are `{\"error\": {code, message, field}}`."
    ),
    // Query parameters reference their enums but do not register them: listed here so that
    // every `$ref` resolves (tests/http.rs checks).
    components(schemas(
        lightpeft_api::rest::ErrorBody,
        lightpeft_api::rest::Event,
        lightpeft_api::rest::NeuronOrder,
        lightpeft_api::rest::MaskKind,
        lightpeft_api::rest::JobStatus,
        lightpeft_api::query::ArrayKind,
        lightpeft_api::query::ArrayFormat,
        lightpeft_api::query::ExportFormat
    ))
)]
struct ApiDoc;

/// Liveness, whether a token is needed, and whether the store reads and writes.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health(State(state): State<AppState>) -> Json<Health> {
    let probe = state.store.health().await;
    let last_fault = probe.last_fault.map(|(error, at)| StoreFault {
        error,
        seconds_ago: at.elapsed().as_secs_f64(),
    });
    let (status, error) = match (probe.read_error, probe.failing_since) {
        (Some(error), _) => ("unreadable", Some(error)),
        (None, Some(_)) => ("unwritable", last_fault.as_ref().map(|f| f.error.clone())),
        (None, None) => ("ok", None),
    };
    let store = StoreState {
        status: status.into(),
        error,
        failing_for_seconds: probe.failing_since.map(|at| at.elapsed().as_secs_f64()),
        last_fault,
    };
    Json(Health {
        status: if store.status == "ok" {
            "ok"
        } else {
            "degraded"
        }
        .into(),
        version: env!("CARGO_PKG_VERSION").into(),
        auth: state.token.is_some(),
        store,
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi);
    Json(&*DOCUMENT)
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
#[utoipa::path(get, path = "/events", responses((status = 200, content_type = "text/event-stream", body = Event)))]
async fn all_events(State(state): State<AppState>) -> impl IntoResponse {
    Sse::new(event_stream(
        state.events.subscribe(),
        state.closing.clone(),
        None,
    ))
    .keep_alive(KeepAlive::default())
}

/// Live events of one job.
#[utoipa::path(get, path = "/jobs/{id}/events", params(("id" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream", body = Event)))]
async fn job_events(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiFailure> {
    // Subscribe first, then check: no event between the two is lost.
    let rx = state.events.subscribe();
    state.store.job(id).await?;
    Ok(
        Sse::new(event_stream(rx, state.closing.clone(), Some(id)))
            .keep_alive(KeepAlive::default()),
    )
}

async fn api_method_not_allowed(method: axum::http::Method) -> ApiFailure {
    ApiFailure::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not answer {method}; see /api/v1/openapi.json"),
    )
}

async fn api_not_found() -> ApiFailure {
    ApiFailure::not_found("no such API route; see /api/v1/openapi.json")
}

async fn dashboard_missing() -> Html<&'static str> {
    Html(
        "<!doctype html><title>lightpeft</title><h1>lightpeft</h1><p>The API runs under \
         <a href=\"/api/v1/openapi.json\">/api/v1</a>, but the folder given as \
         <code>--dashboard-dir</code> holds no built dashboard. Run \
         <code>bash scripts/build-dashboard.sh</code>, or leave the option out to serve the \
         dashboard this binary carries.</p>",
    )
}

/// Every API route with its handler and its OpenAPI entry, relative to `/api/v1`.
///
/// Routes are added only through `routes!`, which takes path and method from the handler's
/// `#[utoipa::path]`, so what is served and what is documented cannot drift apart. One
/// `routes!` groups the handlers of one path.
fn api_routes() -> OpenApiRouter<AppState> {
    use experiments as ex;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(ex::schema))
        .routes(routes!(all_events))
        .routes(routes!(ex::list, ex::create))
        .routes(routes!(ex::get, ex::delete))
        .routes(routes!(ex::estimate))
        .routes(routes!(ex::baseline))
        .routes(routes!(ex::compare))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get, jobs::delete))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::resume))
        .routes(routes!(jobs::evaluate))
        .routes(routes!(jobs::workers))
        .routes(routes!(job_events))
        .routes(routes!(records::scalars))
        .routes(routes!(records::evals))
        .routes(routes!(records::heatmap))
        .routes(routes!(records::mask_summary))
        .routes(routes!(records::importance))
        .routes(routes!(convergence::convergence))
        .routes(routes!(records::result))
        .routes(routes!(downloads::artifacts))
        .routes(routes!(downloads::artifact))
        .routes(routes!(downloads::arrays))
        .routes(routes!(plans::preview))
        .routes(routes!(plans::list, plans::commit))
        .routes(routes!(plans::get))
        .routes(routes!(datasets::list, datasets::create))
        .routes(routes!(datasets::delete))
        .routes(routes!(datasets::upload))
        .routes(routes!(datasets::upload_preview))
        .routes(routes!(studies::create))
        .routes(routes!(studies::list))
        .routes(routes!(studies::get, studies::delete))
        .routes(routes!(studies::cancel))
        .routes(routes!(studies::resume))
        .routes(routes!(studies::export))
}

/// The API root every route is nested under.
pub const API_ROOT: &str = "/api/v1";

/// The OpenAPI document of [`app`]'s routes (served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = OpenApiRouter::new()
        .nest(API_ROOT, api_routes())
        .into_openapi();
    // axum spells a rest-of-path parameter `{*name}`; OpenAPI knows only `{name}`.
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    document_edge_errors(&mut doc);
    document_request_values(doc)
}

/// What the derives cannot say, filled in from the tables the server checks against: every
/// hyper-parameter with its range or words (the patch a create, preview or commit sends), and
/// the task names a create accepts.
fn document_request_values(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut json = serde_json::to_value(&doc).expect("the document serialises");
    let schemas = &mut json["components"]["schemas"];
    schemas["HyperparamsPatch"] = lightpeft_api::params::patch_json_schema();
    let create = &mut schemas["CreateExperiment"]["properties"];
    let description = create["params"]["description"].clone();
    create["params"] = serde_json::json!({
        "allOf": [{"$ref": "#/components/schemas/HyperparamsPatch"}],
        "description": description,
    });
    let tasks: Vec<&str> = lightpeft_engine::data::TASKS
        .iter()
        .map(|t| t.name)
        .collect();
    // A built-in task, or a saved dataset.
    let description = create["task"]["description"].clone();
    create["task"] = serde_json::json!({
        "description": description,
        "anyOf": [
            {"type": "string", "enum": tasks},
            {"type": "string", "pattern": "^dataset:[A-Za-z0-9_.-]+$"},
        ],
    });
    // An event stream's schema describes one event (as OpenAPI 3.2's `itemSchema` does), whose
    // `data` is the JSON of an `Event`.
    let sse_event = serde_json::json!({
        "type": "object",
        "description": "One Server-Sent Event: `data` is an `Event` as JSON; an event named `lagged` says in `data` how many events this reader missed.",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/Event"},
            },
        },
    });
    if let Some(paths) = json["paths"].as_object_mut() {
        for item in paths.values_mut() {
            // A pointer, not indexing: indexing a missing key would add it.
            let at = "/get/responses/200/content/text~1event-stream";
            if let Some(stream) = item.pointer_mut(at) {
                stream["schema"] = sse_event.clone();
            }
        }
    }
    serde_json::from_value(json).expect("the edited document is still one")
}

/// The answers the layers in front of every handler can give (token, Host, content type,
/// body size), added to each operation that does not document them itself.
fn document_edge_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |why: &str| -> RefOr<utoipa::openapi::Response> {
        let body = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build();
        ResponseBuilder::new()
            .description(why)
            .content("application/json", body)
            .build()
            .into()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        // (operation, takes a body, may write to the store)
        let operations = [
            (item.get.as_mut(), false, false),
            (item.post.as_mut(), true, true),
            (item.delete.as_mut(), false, true),
        ];
        for (operation, has_body, writes) in operations {
            let Some(operation) = operation else { continue };
            let answers = &mut operation.responses.responses;
            let mut add = |code: &str, why: &str| {
                answers
                    .entry(code.to_string())
                    .or_insert_with(|| error(why));
            };
            add(
                "401",
                "A token is configured and the request lacks it or has another.",
            );
            add("403", "The Host header names another server.");
            if !operation.parameters.as_ref().is_none_or(Vec::is_empty) {
                add("400", "A path or query parameter does not parse.");
            }
            if path.contains('{') {
                add("404", "No such experiment, job, plan or file.");
            }
            add(
                "500",
                "The server failed; the body's reference matches its log line.",
            );
            if writes {
                add(
                    "507",
                    "The store cannot write (a full disk or store); nothing was stored.",
                );
            }
            if has_body {
                add("413", "The body is larger than the server accepts.");
                add(
                    "415",
                    "The request does not say Content-Type: application/json.",
                );
            }
        }
    }
}

/// The whole HTTP surface over `state`: the API under `/api/v1` (token check, body limits,
/// request tracing, 500s logged) and the dashboard's files under `/`.
pub fn app(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let api = api
        .route_layer(axum::middleware::from_fn(guard::refuse_non_json_post))
        .fallback(api_not_found)
        .method_not_allowed_fallback(api_method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::refuse_foreign_host,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .layer(axum::middleware::from_fn(http_error::log_internal))
        .with_state(state.clone());
    let app = Router::new()
        .nest(API_ROOT, api)
        .layer(TraceLayer::new_for_http());
    let Some(dashboard_dir) = &state.dashboard_dir else {
        return app.fallback(dashboard::serve);
    };
    let index = dashboard_dir.join("index.html");
    if index.is_file() {
        app.fallback_service(ServeDir::new(dashboard_dir).fallback(ServeFile::new(index)))
    } else {
        app.fallback(dashboard_missing)
    }
}

/// Refuses a body whose declared length is over [`MAX_BODY_BYTES`] (for a dataset upload,
/// the upload limit) before any handler (or the token check) runs, after draining up to
/// [`DRAIN_BYTES`] of it. Bodies without a declared length are bounded as they are read: by
/// `DefaultBodyLimit`, and an upload by its handler.
async fn refuse_oversized(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let limit = if guard::is_upload(&request) {
        state.max_upload_bytes
    } else {
        MAX_BODY_BYTES as u64
    };
    match declared {
        Some(len) if len > limit => {
            if len <= DRAIN_BYTES as u64 {
                // The result does not matter: the answer is 413 either way.
                let _ = axum::body::to_bytes(request.into_body(), DRAIN_BYTES).await;
            }
            ApiFailure::payload_too_large().into_response()
        }
        _ => next.run(request).await,
    }
}

/// The server without its socket: the store open, the recorder and the runner started, and
/// the jobs the last shutdown interrupted or left queued dealt with. [`app`] over
/// [`Started::state`] answers requests; tests call it in-process.
pub struct Started {
    /// What every handler reaches.
    pub state: AppState,
    close: tokio::sync::watch::Sender<bool>,
}

impl Started {
    /// Ends the event streams, stops running jobs after their current step (resumable) and
    /// commits their records.
    pub async fn shutdown(&self) {
        let _ = self.close.send(true);
        self.state.runner.shutdown().await;
    }
}

/// Starts the recorder and the runner of `store`'s queue; a worker first takes back, as
/// interrupted, the jobs its name held when its last run stopped.
pub async fn start_runner(
    store: Arc<dyn store::Store>,
    events: broadcast::Sender<Event>,
    queue: QueueSettings,
    settings: JobSettings,
    max_snapshots: usize,
) -> Result<runner::Runner, String> {
    if let Some(worker) = &queue.worker {
        let interrupted = store
            .recover(&worker.name)
            .await
            .map_err(|e| e.to_string())?;
        if !interrupted.is_empty() {
            tracing::warn!(
                ?interrupted,
                "jobs interrupted by the last shutdown (resume them with POST /api/v1/jobs/ID/resume)"
            );
        }
    }
    settings
        .artifacts
        .check_reachable()
        .await
        .map_err(|e| e.to_string())?;
    let recorder =
        recorder::Recorder::start(store.clone(), settings.artifacts.clone(), max_snapshots);
    let runner = runner::Runner::start(store, recorder, events, queue, settings);
    runner.wake();
    Ok(runner)
}

/// Opens the store and starts the job runner for `config` (nothing listens yet).
pub async fn start(config: &ServeConfig) -> Result<Started, String> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let store = config.database.open().await.map_err(|e| e.to_string())?;
    let (events, _) = broadcast::channel(1024);
    let worker = config.local_worker.then(|| WorkerInfo {
        name: config.worker_name.clone(),
        device: config.device.to_string(),
        slots: config.concurrent_jobs,
    });
    let settings = JobSettings {
        data_dir: config.data_dir.clone(),
        artifacts: config.artifacts.clone(),
        checkpoint_every: config.checkpoint_every,
        discard_records: config.discard_records,
        device: config.device,
        job_memory_budget: config.job_memory_budget(),
    };
    let queue = QueueSettings {
        worker,
        lease: config.lease,
        max_attempts: config.max_attempts,
    };
    let runner = start_runner(
        store.clone(),
        events.clone(),
        queue,
        settings,
        config.max_snapshots,
    )
    .await?;
    let (close, closing) = tokio::sync::watch::channel(false);
    follow::spawn(
        store.clone(),
        runner.clone(),
        events.clone(),
        closing.clone(),
    );
    let state = AppState {
        closing,
        store,
        runner,
        events,
        data_dir: config.data_dir.clone(),
        artifacts: config.artifacts.clone(),
        token: config.token.clone(),
        planners: Arc::default(),
        pruned_sets: Arc::default(),
        dashboard_dir: config.dashboard_dir.clone(),
        hosts: guard::HostPolicy::new(config.addr, &config.allowed_hosts),
        job_memory_budget: config.job_memory_budget(),
        max_upload_bytes: config.max_upload_bytes,
        study_changes: Arc::default(),
    };
    studies::spawn_expander(state.clone());
    Ok(Started { state, close })
}

/// How a `lightpeft worker` runs: the shared store, and the local folders and settings its
/// jobs train with.
pub struct WorkerConfig {
    /// The store the server and every worker share.
    pub database: Database,
    /// Name, device and slots.
    pub worker: WorkerInfo,
    /// What every job is given (data directory, snapshots, device, memory share).
    pub settings: JobSettings,
    /// Lease length and attempts.
    pub lease: std::time::Duration,
    /// Claims a job gets before the reaper leaves it interrupted.
    pub max_attempts: u32,
    /// Full mask snapshots kept per job.
    pub max_snapshots: usize,
}

/// Trains jobs of the shared queue until Ctrl-C or SIGTERM; then stops running jobs after
/// their current step (each resumable, and interrupted so another worker can take it on
/// resume), commits their records and returns.
pub async fn work(config: WorkerConfig) -> Result<(), String> {
    std::fs::create_dir_all(&config.settings.data_dir)
        .map_err(|e| format!("{}: {e}", config.settings.data_dir.display()))?;
    let store = config.database.open().await.map_err(|e| e.to_string())?;
    let (events, _) = broadcast::channel(1024);
    let name = config.worker.name.clone();
    let slots = config.worker.slots;
    let queue = QueueSettings {
        worker: Some(config.worker),
        lease: config.lease,
        max_attempts: config.max_attempts,
    };
    let runner = start_runner(store, events, queue, config.settings, config.max_snapshots).await?;
    // Tests and scripts read this line to know the worker is claiming.
    println!(
        "lightpeft worker {name} on {}: {slots} slot(s)",
        config.database.location()
    );
    shutdown_signal().await;
    tracing::info!("shutting down: stopping jobs after their current step");
    runner.shutdown().await;
    Ok(())
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
    let started = start(&config).await?;
    let app = app(started.state.clone());
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts read this line to find a port chosen by the system.
    println!("lightpeft listening on http://{local}");
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: stopping jobs after their current step");
        started.shutdown().await;
    };
    listen::serve(listener, app, config.max_connections, shutdown).await;
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
