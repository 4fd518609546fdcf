//! A real `lightpeft serve` process on a free port, with a temporary data directory, for the
//! end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The real data directory `lightpeft assets fetch` filled.
pub fn real_data_dir() -> PathBuf {
    lightpeft_assets::default_data_dir()
}

/// A data directory with the bundled sst2-rt data and a tiny model; `minilm` adds the real
/// MiniLM (linked, not copied).
pub fn data_dir(minilm: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fill_data_dir(dir.path(), minilm);
    dir
}

/// [`data_dir`]'s contents, written into `dir`.
pub fn fill_data_dir(dir: &Path, minilm: bool) {
    let real = real_data_dir();
    let vader = lightpeft_assets::vader_movie_file(&real);
    assert!(
        vader.is_file(),
        "the bundled data are missing at {}: run `lightpeft assets fetch` first",
        vader.display()
    );
    let dest = lightpeft_assets::vader_movie_file(dir);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(&vader, &dest).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .args(["--data-dir"])
        .arg(dir)
        .args(["assets", "tiny", "--name", "tiny-bert"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    if minilm {
        let src = lightpeft_assets::bundled_model_dir(&real);
        assert!(
            src.join("model.safetensors").is_file(),
            "MiniLM missing at {}",
            src.display()
        );
        let dst = lightpeft_assets::model_dir(dir, "all-MiniLM-L6-v2");
        std::fs::create_dir_all(&dst).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::os::unix::fs::symlink(src.join(f), dst.join(f)).unwrap();
        }
    }
}

/// An HTTP client for the tests. lightpeft's object-store client turns on reqwest's rustls
/// without a built-in crypto provider, and that feature reaches every reqwest client of the
/// build, so the process's provider (ring's, as the binary installs it) is set first.
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The PostgreSQL server the tests use, as `postgres://USER:PASSWORD@HOST:PORT` (no database):
/// `scripts/postgres.sh start` starts one and prints it (`scripts/test.sh` does both).
pub fn postgres_server() -> String {
    std::env::var("LIGHTPEFT_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "LIGHTPEFT_TEST_POSTGRES_URL is not set: run `eval \"$(bash scripts/postgres.sh start)\"` \
             first, or the whole suite with `bash scripts/test.sh`"
        )
    })
}

/// Runs `sql` with psql against `url`; its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("psql (Debian's postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A new, empty database on the test server; its URL.
pub fn new_postgres_database() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let server = postgres_server();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("lp_{}_{n}", std::process::id());
    psql(
        &format!("{server}/postgres"),
        &format!("CREATE DATABASE {name}"),
    );
    format!("{server}/{name}")
}

/// Whether this run's servers keep their store in PostgreSQL (`LIGHTPEFT_TEST_STORE=postgres`)
/// rather than in the data directory's SQLite file.
pub fn on_postgres() -> bool {
    std::env::var("LIGHTPEFT_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// The PostgreSQL database of the servers started on `data_dir` (one per data directory, so a
/// restarted server finds its jobs), made on first use.
fn postgres_database_of(data_dir: &Path) -> String {
    let marker = data_dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url;
    }
    let url = new_postgres_database();
    std::fs::write(&marker, &url).unwrap();
    url
}

/// A running server; killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

impl Server {
    /// Starts `lightpeft serve` on a free loopback port with `extra` arguments.
    pub fn start(data_dir: &Path, extra: &[&str], token: Option<&str>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightpeft"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--port", "0", "--dashboard-dir"])
            .arg(data_dir.join("no-dashboard"))
            .args(extra)
            .env_remove("LIGHTPEFT_TOKEN")
            .env_remove("LIGHTPEFT_DATABASE_URL")
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(t) = token {
            cmd.env("LIGHTPEFT_TOKEN", t);
        }
        if on_postgres() && !extra.contains(&"--database") {
            cmd.env("LIGHTPEFT_DATABASE_URL", postgres_database_of(data_dir));
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        // Keep draining, so a later write to stdout never meets a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let base = line
            .trim()
            .strip_prefix("lightpeft listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Server {
            child,
            base: format!("{base}/api/v1"),
            data_dir: data_dir.to_path_buf(),
            client: http_client().build().unwrap(),
            token: token.map(str::to_string),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.client.get(self.url(path)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .auth(self.client.post(self.url(path)))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Creates an experiment on the tiny model and returns its id.
    pub async fn tiny_experiment(&self, params: Value) -> i64 {
        let (status, body) = self
            .post(
                "/experiments",
                json!({"task": "sst2-rt", "model": "tiny-bert", "preset": "quick_demo", "params": params}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Waits until job `id` reaches a final status (or `timeout`), returning the job.
    pub async fn wait_job(&self, id: i64, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job = self.ok(&format!("/jobs/{id}")).await;
            let status = job["status"].as_str().unwrap().to_string();
            if !["queued", "running"].contains(&status.as_str()) {
                return job;
            }
            assert!(
                started.elapsed() < timeout,
                "job {id} still {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until job `id` has taken at least `steps` steps.
    pub async fn wait_steps(&self, id: i64, steps: i64, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let job = self.ok(&format!("/jobs/{id}")).await;
            if job["step"].as_i64().unwrap() >= steps {
                return job;
            }
            assert!(started.elapsed() < timeout, "job {id} slow: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The steps job `id` recorded, in order.
    pub async fn recorded_steps(&self, id: i64) -> Vec<i64> {
        let scalars = self.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
        scalars["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_i64().unwrap())
            .collect()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

/// A running `lightpeft worker`; killed on drop.
pub struct Worker {
    pub child: Child,
    pub name: String,
}

impl Worker {
    /// Starts `lightpeft worker` named `name` on `database`, with the shared `data_dir` and
    /// `extra` arguments; returns once it claims.
    pub fn start(data_dir: &Path, database: &str, name: &str, extra: &[&str]) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lightpeft"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["worker", "--name", name])
            .args(extra)
            .env("LIGHTPEFT_DATABASE_URL", database)
            .env("RAYON_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        assert!(
            line.starts_with(&format!("lightpeft worker {name} on ")),
            "unexpected first line: {line:?}"
        );
        Worker {
            child,
            name: name.to_string(),
        }
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Whether the process still runs.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rows in the tables a request could add to, read beside the server (read-only), to check
/// that refused requests stored nothing.
pub async fn row_counts(db: &Path) -> Vec<i64> {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for q in [
        "SELECT COUNT(*) FROM experiments",
        "SELECT COUNT(*) FROM jobs",
        "SELECT COUNT(*) FROM step_scalars",
        "SELECT COUNT(*) FROM plans",
        "SELECT COUNT(*) FROM results",
    ] {
        out.push(sqlx::query_scalar(q).fetch_one(&mut conn).await.unwrap());
    }
    out
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
