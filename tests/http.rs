//! In-process: the server's router called with `tower::ServiceExt::oneshot` over a temporary
//! data directory and SQLite file (no socket, no process), answers decoded as
//! `lightpeft_api::rest` types. The real-binary tests (server_api.rs, server_resume.rs) keep
//! what needs a process: sockets, kills, restarts.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{data_dir, row_counts};
use lightpeft::server::{self, ServeConfig, Started, Token};
use lightpeft_api::rest::{ErrorBody, Experiment, Health, Job, JobStatus, Plan};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt;

const LONG: Duration = Duration::from_secs(300);

/// The app over a fresh data directory (the tiny model and the bundled data).
struct App {
    router: Router,
    started: Started,
    dir: tempfile::TempDir,
}

impl App {
    async fn start(token: Option<&str>) -> App {
        let dir = data_dir(false);
        let config = ServeConfig {
            data_dir: dir.path().to_path_buf(),
            addr: "127.0.0.1:0".parse().unwrap(),
            token: token.map(|t| Token::new(t).unwrap()),
            concurrent_jobs: 1,
            dashboard_dir: Some(dir.path().join("no-dashboard")),
            max_snapshots: 256,
            checkpoint_every: 10,
            database: lightpeft::server::Database::Sqlite {
                path: dir.path().join("lightpeft.sqlite"),
                max_bytes: None,
            },
            artifacts: lightpeft::server::Artifacts::folder(dir.path()).unwrap(),
            discard_records: false,
            device: Default::default(),
            allowed_hosts: Vec::new(),
            max_connections: 64,
            memory_budget: 8 << 30,
            local_worker: true,
            worker_name: "http-test".to_string(),
            lease: std::time::Duration::from_secs(30),
            max_attempts: 3,
            max_upload_bytes: 1 << 20,
        };
        let started = server::start(&config).await.unwrap();
        let router = server::app(started.state.clone());
        App {
            router,
            started,
            dir,
        }
    }

    /// Sends one request to `/api/v1{path}`; returns the status and the body's bytes.
    async fn send(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn call(&self, method: &str, path: &str, body: Option<String>) -> (StatusCode, Vec<u8>) {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"));
        let body = match body {
            Some(b) => {
                builder = builder
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_LENGTH, b.len());
                Body::from(b)
            }
            None => {
                // A bodiless POST still says JSON, as the dashboard's do.
                if method == "POST" {
                    builder = builder.header(header::CONTENT_TYPE, "application/json");
                }
                Body::empty()
            }
        };
        self.send(builder.body(body).unwrap()).await
    }

    /// A 2xx answer decoded as `T`.
    async fn ok<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<Value>) -> T {
        let (status, bytes) = self.call(method, path, body.map(|b| b.to_string())).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    async fn wait_job(&self, id: i64) -> Job {
        let started = Instant::now();
        loop {
            let job: Job = self.ok("GET", &format!("/jobs/{id}"), None).await;
            if !matches!(job.status, JobStatus::Queued | JobStatus::Running) {
                return job;
            }
            assert!(started.elapsed() < LONG, "job {id} still {:?}", job.status);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A finished estimation job on the tiny model.
    async fn estimated(&self) -> i64 {
        let exp: Experiment = self
            .ok(
                "POST",
                "/experiments",
                Some(
                    json!({"task": "sst2-rt", "model": "tiny-bert", "preset": "quick_demo",
                    "params": {"estimation_steps": 4, "max_train_examples": 64}}),
                ),
            )
            .await;
        let job: Job = self
            .ok(
                "POST",
                &format!("/experiments/{}/estimation", exp.id),
                Some(json!({})),
            )
            .await;
        let done = self.wait_job(job.id).await;
        assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
        job.id
    }
}

/// The routes `lightpeft serve` answered before the router and the document were one
/// registry (method, path under /api/v1).
const SURFACE: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/openapi.json"),
    ("get", "/schema"),
    ("get", "/events"),
    ("get", "/experiments"),
    ("post", "/experiments"),
    ("get", "/experiments/{id}"),
    ("delete", "/experiments/{id}"),
    ("post", "/experiments/{id}/estimation"),
    ("post", "/experiments/{id}/baseline"),
    ("get", "/experiments/{id}/compare"),
    ("get", "/jobs"),
    ("get", "/jobs/{id}"),
    ("delete", "/jobs/{id}"),
    ("post", "/jobs/{id}/cancel"),
    ("post", "/jobs/{id}/resume"),
    ("post", "/jobs/{id}/evaluate"),
    ("get", "/workers"),
    ("get", "/jobs/{id}/events"),
    ("get", "/jobs/{id}/scalars"),
    ("get", "/jobs/{id}/evals"),
    ("get", "/jobs/{id}/heatmap"),
    ("get", "/jobs/{id}/mask-summary"),
    ("get", "/jobs/{id}/importance"),
    ("get", "/jobs/{id}/convergence"),
    ("get", "/jobs/{id}/result"),
    ("get", "/jobs/{id}/artifacts"),
    ("get", "/jobs/{id}/artifacts/{name}"),
    ("get", "/jobs/{id}/arrays"),
    ("post", "/jobs/{id}/preview"),
    ("get", "/jobs/{id}/plans"),
    ("post", "/jobs/{id}/plans"),
    ("get", "/plans/{id}"),
    ("get", "/datasets"),
    ("post", "/datasets"),
    ("delete", "/datasets/{dataset}"),
    ("post", "/datasets/uploads"),
    ("get", "/datasets/uploads/{id}"),
    ("post", "/experiments/{id}/studies"),
    ("get", "/studies"),
    ("get", "/studies/{id}"),
    ("delete", "/studies/{id}"),
    ("post", "/studies/{id}/cancel"),
    ("post", "/studies/{id}/resume"),
    ("get", "/studies/{id}/export"),
];

/// Whether the router has a handler for `method path` (no data exists, so a handler answers
/// 404 `not_found` about the resource, 415 for a missing body, or 200; the router itself
/// answers 405 or the API's "no such API route").
async fn served(app: &App, method: &str, path: &str) -> bool {
    let concrete = path
        .replace("{id}", "999999")
        .replace("{name}", "model/config.json")
        .replace("{dataset}", "none");
    // Saying JSON: otherwise the cross-site guard answers every POST, served or not.
    let request = Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(format!("/api/v1{concrete}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::empty())
        .unwrap();
    // Only a 404's body is read: an event stream's never ends.
    let response = app.router.clone().oneshot(request).await.unwrap();
    match response.status() {
        StatusCode::METHOD_NOT_ALLOWED => false,
        StatusCode::NOT_FOUND => {
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let error: ErrorBody = serde_json::from_slice(&body).unwrap();
            !error.error.message.starts_with("no such API route")
        }
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let app = App::start(None).await;
    let doc: Value = app.ok("GET", "/openapi.json", None).await;
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let path = path
            .strip_prefix("/api/v1")
            .expect("every path under /api/v1");
        for method in ["get", "post", "put", "patch", "delete"] {
            let in_doc = item.get(method).is_some();
            assert_eq!(
                served(&app, method, path).await,
                in_doc,
                "{method} {path}: served and documented must agree"
            );
            if in_doc {
                documented.insert((method.to_string(), path.to_string()));
            }
        }
    }
    let surface: BTreeSet<(String, String)> = SURFACE
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, surface);
    for (method, path) in SURFACE {
        assert!(
            served(&app, method, path).await,
            "{method} {path} is not served"
        );
    }
    assert!(!served(&app, "get", "/no/such/route").await);
    app.started.shutdown().await;
}

/// method, path, raw body, expected status, expected error code, expected field.
type Case = (
    &'static str,
    String,
    Option<String>,
    u16,
    &'static str,
    Option<&'static str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_with_the_error_shape_and_change_nothing() {
    let app = App::start(None).await;
    let est = app.estimated().await;
    let dir = app.dir.path();
    std::fs::create_dir_all(dir.join("glue")).unwrap();
    std::fs::write(dir.join("glue/train.tsv"), "sentence\tlabel\nok\t1\n").unwrap();

    let base = json!({"task": "sst2-rt", "model": "tiny-bert"});
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let huge = "x".repeat(200 * 1024);
    let e = || "/experiments".to_string();
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("POST", e(), Some(with(json!({"params": {"lr": "fast"}}))), 400, "invalid_param", Some("lr")),
        ("POST", e(), Some(with(json!({"params": {"lr": 5.0}}))), 400, "invalid_param", Some("lr")),
        ("POST", e(), Some(with(json!({"params": {"head_ratio": 1.5}}))), 400, "invalid_param", Some("head_ratio")),
        ("POST", e(), Some(with(json!({"params": {"ffn_ratio": -0.1}}))), 400, "invalid_param", Some("ffn_ratio")),
        ("POST", e(), Some(with(json!({"params": {"batch_size": 0}}))), 400, "invalid_param", Some("batch_size")),
        ("POST", e(), Some(with(json!({"params": {"batch_size": 2.5}}))), 400, "invalid_param", Some("batch_size")),
        ("POST", e(), Some(with(json!({"params": {"peft_method": "prefix"}}))), 400, "invalid_param", Some("peft_method")),
        ("POST", e(), Some(with(json!({"params": {"no_such": 1}}))), 400, "invalid_param", Some("no_such")),
        ("POST", e(), Some(with(json!({"params": {"lr": [1]}}))), 400, "invalid_param", Some("lr")),
        ("POST", e(), Some(with(json!({"params": "lr=1"}))), 400, "invalid_body", Some("params")),
        ("POST", e(), Some(with(json!({"task": "sst3"}))), 400, "unknown_task", Some("task")),
        ("POST", e(), Some(with(json!({"task": 7}))), 400, "invalid_body", Some("task")),
        ("POST", e(), Some(with(json!({"model": "gpt-7"}))), 400, "unknown_model", Some("model")),
        ("POST", e(), Some(with(json!({"model": "../models/tiny-bert"}))), 400, "unknown_model", Some("model")),
        ("POST", e(), Some(json!({"model": "tiny-bert"}).to_string()), 400, "invalid_body", Some("task")),
        ("POST", e(), Some(with(json!({"preset": "turbo"}))), 400, "invalid_body", Some("preset")),
        ("POST", e(), Some(with(json!({"colour": "red"}))), 400, "invalid_body", Some("colour")),
        ("POST", e(), Some(with(json!({"name": ""}))), 400, "invalid_name", Some("name")),
        ("POST", e(), Some(with(json!({"train_file": "x.tsv"}))), 400, "unexpected_file", Some("train_file")),
        ("POST", e(), Some(json!({"task": "glue-sst2", "model": "tiny-bert", "train_file": "../../etc/passwd", "dev_file": "glue/train.tsv"}).to_string()), 400, "invalid_path", Some("train_file")),
        ("POST", e(), Some(json!({"task": "glue-sst2", "model": "tiny-bert", "train_file": "/etc/passwd", "dev_file": "glue/train.tsv"}).to_string()), 400, "invalid_path", Some("train_file")),
        ("POST", e(), Some(json!({"task": "glue-sst2", "model": "tiny-bert", "train_file": "glue/train.tsv"}).to_string()), 400, "missing_file", Some("dev_file")),
        ("POST", e(), Some("{\"task\": ".into()), 400, "bad_json", None),
        ("POST", e(), Some("[1, 2]".into()), 400, "invalid_body", None),
        ("POST", e(), Some(format!("{{\"task\":\"sst2-rt\",\"model\":\"tiny-bert\",\"name\":\"{huge}\"}}")), 413, "payload_too_large", None),
        ("GET", "/experiments/abc".into(), None, 400, "invalid_id", None),
        ("GET", "/experiments/999999".into(), None, 404, "not_found", None),
        ("DELETE", "/experiments/999999".into(), None, 404, "not_found", None),
        ("POST", "/experiments/999999/estimation".into(), None, 404, "not_found", None),
        ("GET", "/jobs/-1x".into(), None, 400, "invalid_id", None),
        ("GET", "/jobs?status=flying".into(), None, 400, "invalid_query", Some("status")),
        ("GET", format!("/jobs/{est}/heatmap"), None, 400, "invalid_query", Some("kind")),
        ("GET", format!("/jobs/{est}/heatmap?kind=tail"), None, 400, "invalid_query", Some("kind")),
        ("GET", format!("/jobs/{est}/heatmap?kind=head&step=-3"), None, 400, "invalid_step", Some("step")),
        ("GET", format!("/jobs/{est}/scalars?from=5&to=2"), None, 400, "invalid_range", Some("to")),
        ("GET", format!("/jobs/{est}/arrays?kind=weights"), None, 400, "invalid_query", Some("kind")),
        ("GET", format!("/jobs/{est}/arrays?kind=head&format=npy"), None, 400, "invalid_query", Some("format")),
        ("GET", format!("/jobs/{est}/artifacts/..%2F..%2Flightpeft.sqlite"), None, 404, "not_found", None),
        ("GET", format!("/jobs/{est}/importance?step=99999"), None, 404, "not_found", None),
        ("POST", format!("/jobs/{est}/preview"), Some(json!({"head_ratio": 2}).to_string()), 400, "invalid_param", Some("head_ratio")),
        ("POST", format!("/jobs/{est}/preview"), Some(json!({"head_method": "random"}).to_string()), 400, "invalid_body", Some("head_method")),
        ("POST", format!("/jobs/{est}/preview"), Some(json!({"lr": 0.1}).to_string()), 400, "invalid_param", Some("lr")),
        ("POST", format!("/jobs/{est}/preview"), Some(json!({"speed": 1}).to_string()), 400, "invalid_body", Some("speed")),
        ("POST", format!("/jobs/{est}/plans"), Some(json!({"rank_ratio": -1}).to_string()), 400, "invalid_param", Some("rank_ratio")),
        ("POST", format!("/jobs/{est}/cancel"), None, 409, "conflict", None),
        ("POST", format!("/jobs/{est}/resume"), None, 409, "conflict", None),
        ("GET", "/jobs/424242/result".into(), None, 404, "not_found", None),
        ("GET", "/no/such/route".into(), None, 404, "not_found", None),
        ("PUT", "/health".into(), None, 405, "method_not_allowed", None),
        ("DELETE", "/schema".into(), None, 405, "method_not_allowed", None),
    ];
    assert!(cases.len() >= 45);
    let db = dir.join("lightpeft.sqlite");
    let counts_before = row_counts(&db).await;
    let plans_before: Vec<Plan> = app.ok("GET", &format!("/jobs/{est}/plans"), None).await;
    for (method, path, body, status, code, field) in &cases {
        let (got, bytes) = app.call(method, path, body.clone()).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(got.as_u16(), *status, "{method} {path}: {text}");
        let error: ErrorBody = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {path}: not the error shape: {text}"));
        assert_eq!(error.error.code, *code, "{method} {path}: {text}");
        assert!(!error.error.message.is_empty());
        if let Some(field) = field {
            assert_eq!(
                error.error.field.as_deref(),
                Some(*field),
                "{method} {path}: {text}"
            );
        }
    }
    assert_eq!(
        row_counts(&db).await,
        counts_before,
        "rejected requests store nothing"
    );
    let plans_after: Vec<Plan> = app.ok("GET", &format!("/jobs/{est}/plans"), None).await;
    assert_eq!(plans_after, plans_before);
    app.started.shutdown().await;
}

/// Every byte but ASCII letters and digits as `%XX`, as `encodeURIComponent` and stricter.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_any_printable_characters_work_in_the_header_and_the_query() {
    let secret = "a+b/c=d%e f…0123456789";
    let app = App::start(Some(secret)).await;
    let with_header = |value: &[u8]| {
        Request::builder()
            .uri("/api/v1/experiments")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap()
    };
    let status = |req| async { app.send(req).await.0 };
    let raw = format!("Bearer {secret}");
    assert_eq!(
        status(with_header(raw.as_bytes())).await,
        StatusCode::OK,
        "raw header"
    );
    let encoded = format!("bearer {}", percent_encode(secret));
    assert_eq!(
        status(with_header(encoded.as_bytes())).await,
        StatusCode::OK,
        "encoded header"
    );
    let wrong = format!("Bearer {}", secret.replace('f', "g"));
    assert_eq!(
        status(with_header(wrong.as_bytes())).await,
        StatusCode::UNAUTHORIZED
    );
    let get = |uri: String| Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = app
        .router
        .clone()
        .oneshot(get("/api/v1/experiments".into()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="lightpeft""#,
        "a 401 names its scheme"
    );
    // encodeURIComponent's spelling, and the form spelling (`+` for a space).
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    for query in [percent_encode(secret), form] {
        let (code, body) = app
            .send(get(format!("/api/v1/health?access_token={query}")))
            .await;
        assert_eq!(code, StatusCode::OK, "access_token={query}");
        let health: Health = serde_json::from_slice(&body).unwrap();
        assert!(health.auth);
    }
    // Undecoded, the query's `+` is a space and `%e ` no escape: not the token.
    let (code, _) = app
        .send(get(format!(
            "/api/v1/health?access_token={}",
            secret.replace(' ', "%20").replace('…', "%E2%80%A6")
        )))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    app.started.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_and_foreign_hosts_are_refused() {
    let app = App::start(None).await;
    let exp: Experiment = app
        .ok(
            "POST",
            "/experiments",
            Some(json!({"task": "sst2-rt", "model": "tiny-bert", "preset": "quick_demo"})),
        )
        .await;
    let start = format!("/api/v1/experiments/{}/estimation", exp.id);
    let db = app.dir.path().join("lightpeft.sqlite");
    let before = row_counts(&db).await;
    // What a page in another tab can send without a preflight: a form, text/plain, nothing.
    for content_type in [
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("text/plain"),
        None,
    ] {
        let mut request = Request::builder()
            .method("POST")
            .uri(&start)
            .header(header::HOST, "127.0.0.1:8080");
        if let Some(t) = content_type {
            request = request.header(header::CONTENT_TYPE, t);
        }
        let (status, body) = app.send(request.body(Body::from("{}")).unwrap()).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {text}"
        );
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.error.code, "unsupported_media_type");
    }
    // DNS rebinding: a foreign name resolving to loopback.
    for (method, host) in [
        ("GET", "evil.example:8080"),
        ("POST", "localhost.evil.example"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(&start)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, body) = app.send(request).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {text}");
    }
    assert_eq!(
        row_counts(&db).await,
        before,
        "a refused request changed the database"
    );
    // The same request from the dashboard's origin works.
    let request = Request::builder()
        .method("POST")
        .uri(&start)
        .header(header::HOST, "localhost:8080")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = app.send(request).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    app.started.shutdown().await;
}

/// Every `$ref` in `value`, in document order.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => out.push(target.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_openapi_document_defines_every_schema_it_references() {
    let doc = serde_json::to_value(server::openapi()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    let dangling: Vec<&String> = found
        .iter()
        .filter(|r| {
            r.strip_prefix("#/components/schemas/")
                .is_none_or(|name| !schemas.contains_key(name))
        })
        .collect();
    assert!(dangling.is_empty(), "dangling references: {dangling:?}");
    // Every route answers errors in the one shape, and documents at least one of them.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has_error = responses
                .iter()
                .any(|(code, r)| code.starts_with('4') && r.to_string().contains("ErrorBody"));
            assert!(
                has_error,
                "{method} {path} documents no 4xx answer with the error shape"
            );
        }
    }
}

/// A create the app refuses: status, code, field and the whole body, which must name no
/// absolute path of `paths`.
async fn refused_create(
    app: &App,
    body: Value,
    paths: &[String],
) -> (u16, String, Option<String>, String) {
    let (status, bytes) = app
        .call("POST", "/experiments", Some(body.to_string()))
        .await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    for path in paths {
        assert!(!text.contains(path.as_str()), "an absolute path in {text}");
    }
    let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
    (status.as_u16(), body.error.code, body.error.field, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_echo_no_file_contents_no_absolute_paths_and_no_linked_model() {
    let app = App::start(None).await;
    let data = app.dir.path();
    let root = data.canonicalize().unwrap().display().to_string();
    let given = data.display().to_string();
    let paths = [root, given];
    let create = |body: Value| refused_create(&app, body, &paths);

    // A one-line file inside the data directory named as data: its line is not echoed.
    std::fs::write(data.join("secret.txt"), "hunter2-the-token\n").unwrap();
    let files = json!({"task": "glue-sst2", "model": "tiny-bert",
        "train_file": "secret.txt", "dev_file": "secret.txt"});
    let (status, code, field, text) = create(files).await;
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (422, "bad_data", Some("task")),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("secret.txt"),
        "the file is still named: {text}"
    );

    // A missing file is named by its relative path only.
    let missing = json!({"task": "glue-sst2", "model": "tiny-bert",
        "train_file": "nowhere.tsv", "dev_file": "secret.txt"});
    let (status, code, _, text) = create(missing).await;
    assert_eq!((status, code.as_str()), (400, "invalid_path"), "{text}");

    // A model folder that does not load: the error names it inside the data directory.
    let broken = data.join("models/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{}").unwrap();
    let (status, code, _, text) = create(json!({"task": "sst2-rt", "model": "broken"})).await;
    assert_eq!((status, code.as_str()), (422, "bad_model"), "{text}");

    // A model folder linked from outside the data directory is refused.
    let outside = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(
            data.join("models/tiny-bert").join(f),
            outside.path().join(f),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink(outside.path(), data.join("models/linked")).unwrap();
    let (status, code, field, text) = create(json!({"task": "sst2-rt", "model": "linked"})).await;
    assert_eq!(
        (status, code.as_str(), field.as_deref()),
        (400, "invalid_path", Some("model")),
        "{text}"
    );
    // The same files inside it are a model like any other.
    let (status, bytes) = app
        .call(
            "POST",
            "/experiments",
            Some(json!({"task": "sst2-rt", "model": "tiny-bert"}).to_string()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}

impl App {
    /// Uploads `bytes` as `name` (percent-encoded here); returns the status and the body.
    async fn upload(&self, name: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method("POST")
            .uri(format!(
                "/api/v1/datasets/uploads?name={}",
                percent_encode(name)
            ))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::from(bytes))
            .unwrap();
        let (status, body) = self.send(request).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The files left in the uploads folder.
    fn uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("uploads"))
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn reviews(rows: usize, label: &str) -> Vec<u8> {
    let mut text = format!("id,review,{label}\n");
    for i in 0..rows {
        let verdict = ["good", "bad"][i % 2];
        text.push_str(&format!("{i},\"a {verdict} film, take {i}\",{verdict}\n"));
    }
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_become_a_dataset_that_experiments_train_on_and_bad_uploads_leave_nothing() {
    let app = App::start(None).await;

    // Bad uploads: each a clear error, and no file left behind.
    let (status, body) = app.upload("../../escape.csv", reviews(4, "verdict")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_file_name");
    let (status, body) = app.upload("notes.exe", reviews(4, "verdict")).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("name"))
    );
    let (status, body) = app.upload("huge.csv", vec![b'a'; (1 << 20) + 1]).await;
    assert_eq!(status, 413, "{body}");
    let garbage = vec![
        0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n', 0, 0, 0, b'\r',
    ];
    let (status, body) = app.upload("garbage.csv", garbage).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "garbage.csv:3: binary data (a NUL byte), not a text file"
    );
    let (status, _) = app.upload("empty.csv", Vec::new()).await;
    assert_eq!(status, 422);
    // A form could send a file as text/plain without asking: refused.
    let request = Request::builder()
        .method("POST")
        .uri("/api/v1/datasets/uploads?name=a.csv")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(reviews(4, "verdict")))
        .unwrap();
    assert_eq!(
        app.send(request).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert!(app.uploads().is_empty(), "{:?}", app.uploads());

    // A good upload is previewed: columns, first rows, the label column's counts.
    let (status, train) = app.upload("mine.csv", reviews(60, "verdict")).await;
    assert_eq!(status, 201, "{train}");
    let preview = &train["preview"];
    assert_eq!(preview["row_count"], 60);
    assert_eq!(preview["rows"].as_array().unwrap().len(), 5);
    assert_eq!(preview["columns"][1]["name"], "review");
    assert_eq!(
        preview["columns"][1]["values"],
        Value::Null,
        "60 distinct reviews: not counted"
    );
    assert_eq!(
        preview["columns"][2]["values"],
        json!([["bad", 30], ["good", 30]])
    );
    assert_eq!(train["sha256"].as_str().unwrap().len(), 64);
    let id = train["id"].as_str().unwrap().to_string();
    let headless: Value = app
        .ok("GET", &format!("/datasets/uploads/{id}?header=false"), None)
        .await;
    assert_eq!(headless["row_count"], 61);
    assert_eq!(headless["columns"][0]["name"], "1");

    // A dev file without the label column: refused, the uploads kept for another try.
    let (_, wrong_dev) = app.upload("held.csv", reviews(10, "stars")).await;
    let request = |dev: &Value, name: &str| {
        json!({"name": name, "train_upload": id, "dev_upload": dev["id"],
            "columns": {"text": "review", "label": "verdict"}, "label_kind": "classes"})
    };
    let (status, bytes) = app
        .call(
            "POST",
            "/datasets",
            Some(request(&wrong_dev, "reviews").to_string()),
        )
        .await;
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("held.csv:1: no `verdict` column in the header (found: id, review, stars)"),
        "{text}"
    );
    assert!(
        !text.contains(app.dir.path().to_str().unwrap()),
        "no absolute path: {text}"
    );
    assert_eq!(app.uploads().len(), 2);
    let (status, _) = app
        .call(
            "POST",
            "/datasets",
            Some(request(&wrong_dev, "../x").to_string()),
        )
        .await;
    assert_eq!(status, 400);

    let (_, dev) = app.upload("held.csv", reviews(10, "verdict")).await;
    let saved: Value = app
        .ok("POST", "/datasets", Some(request(&dev, "reviews")))
        .await;
    assert_eq!(saved["labels"], json!(["bad", "good"]));
    assert_eq!(saved["train"]["label_counts"], json!([30, 30]));
    assert_eq!(saved["dev"]["examples"], 10);
    assert_eq!(
        app.uploads().len(),
        1,
        "the used uploads are gone, the refused one stays"
    );
    let (status, _) = app
        .call(
            "POST",
            "/datasets",
            Some(request(&dev, "reviews").to_string()),
        )
        .await;
    assert_eq!(status, 409, "the name is taken");
    let listed: Vec<Value> = app.ok("GET", "/datasets", None).await;
    assert_eq!(listed.len(), 1);
    let schema: Value = app.ok("GET", "/schema", None).await;
    let task = schema["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "dataset:reviews")
        .expect("the dataset is a task");
    assert_eq!(
        task["description"],
        "your dataset: 60 train / 10 dev examples, 2 classes (bad, good)"
    );

    // An experiment trains on it; the dataset cannot be deleted while it does.
    let (status, body) = app
        .call(
            "POST",
            "/experiments",
            Some(json!({"task": "dataset:nothing", "model": "tiny-bert"}).to_string()),
        )
        .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let exp: Experiment = app
        .ok(
            "POST",
            "/experiments",
            Some(
                json!({"task": "dataset:reviews", "model": "tiny-bert", "preset": "quick_demo",
                "params": {"estimation_steps": 4}}),
            ),
        )
        .await;
    assert_eq!(exp.task, "dataset:reviews");
    let job: Job = app
        .ok(
            "POST",
            &format!("/experiments/{}/estimation", exp.id),
            Some(json!({})),
        )
        .await;
    let done = app.wait_job(job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let (status, _) = app.call("DELETE", "/datasets/reviews", None).await;
    assert_eq!(status, 409);
    let (status, _) = app
        .call("DELETE", &format!("/experiments/{}", exp.id), None)
        .await;
    assert!(status.is_success(), "{status}");
    let (status, _) = app.call("DELETE", "/datasets/reviews", None).await;
    assert_eq!(status, 204);
    let listed: Vec<Value> = app.ok("GET", "/datasets", None).await;
    assert!(listed.is_empty());
    app.started.shutdown().await;
}
