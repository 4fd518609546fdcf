//! The PostgreSQL store against a real PostgreSQL server (`scripts/postgres.sh` starts one;
//! `scripts/test.sh` does it for the whole suite): the same job gives the same records, charts
//! and plan as on SQLite; a database that cannot be reached, a wrong password and a schema
//! newer than the binary are refused at start with one line that never shows the password.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, data_dir, new_postgres_database, postgres_server, psql};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// `lightpeft serve` on `data` with `--database URL`, expected to fail at start: its stderr.
fn refused_start(data: &std::path::Path, url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--port", "0", "--database", url])
        .env_remove("LIGHTPEFT_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success(), "started on {url}");
    assert!(
        out.stdout.is_empty(),
        "it listened: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// The part of a URL after `scheme://user:password@`.
fn host_part(url: &str) -> &str {
    url.rsplit_once('@').unwrap().1
}

/// The password of a `scheme://user:password@host` URL.
fn password_of(url: &str) -> &str {
    url.rsplit_once('@').unwrap().0.rsplit_once(':').unwrap().1
}

#[test]
fn an_unreachable_database_or_a_wrong_password_is_one_line_without_the_password() {
    let dir = data_dir(false);
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "not-this-one-7f3a";
    let stderr = refused_start(
        dir.path(),
        &format!("postgres://lightpeft:{secret}@127.0.0.1:{port}/lightpeft"),
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "postgres://lightpeft:***@127.0.0.1:{port}/lightpeft"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");

    // The real server, the real user, a wrong password.
    let server = postgres_server();
    let wrong = format!(
        "postgres://lightpeft:{secret}@{}/postgres",
        host_part(&server)
    );
    let stderr = refused_start(dir.path(), &wrong);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(stderr.contains("lightpeft:***@"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    // Nor is the right one shown when the database named does not exist.
    let stderr = refused_start(dir.path(), &format!("{server}/no_such_database"));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no_such_database"), "{stderr}");
    assert!(!stderr.contains(password_of(&server)), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_schema_is_refused_untouched() {
    // PostgreSQL: migrate a new database by starting a server on it, then mark a migration
    // from the future.
    let dir = data_dir(false);
    let url = new_postgres_database();
    let mut server = Server::start(dir.path(), &["--database", &url], None);
    server.ok("/health").await;
    server.kill();
    psql(
        &url,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from a newer lightpeft', true, '\\x00', 0)",
    );
    let stderr = refused_start(dir.path(), &url);
    assert!(
        stderr.contains("schema is at version 9999, newer than this lightpeft knows (4)"),
        "{stderr}"
    );
    assert!(!stderr.contains(password_of(&url)), "{stderr}");

    // SQLite: the same rule for the file.
    let dir = data_dir(false);
    let mut server = Server::start(dir.path(), &[], None);
    server.ok("/health").await;
    server.kill();
    let db = dir.path().join("lightpeft.sqlite");
    let pool = sqlx::sqlite::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&db),
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from a newer lightpeft', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let stderr = refused_start(dir.path(), &db.display().to_string());
    assert!(
        stderr.contains("schema is at version 9999, newer than this lightpeft knows (5)"),
        "{stderr}"
    );
}

/// What a finished estimation shows through the API, less wall times.
async fn estimation_views(server: &Server, id: i64) -> Vec<Value> {
    let mut views = Vec::new();
    let scalars = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    // Everything but `seconds`, the only value that is not the training's.
    let mut scalars = scalars;
    scalars["seconds"] = Value::Null;
    views.push(scalars);
    for kind in ["head", "neuron"] {
        views.push(
            server
                .ok(&format!("/jobs/{id}/heatmap?kind={kind}&bins=0"))
                .await,
        );
    }
    views.push(server.ok(&format!("/jobs/{id}/importance")).await);
    let (status, mut preview) = server.post(&format!("/jobs/{id}/preview"), json!({})).await;
    assert_eq!(status, 200, "{preview}");
    // Timings of this machine, not of the store.
    for wall in ["compute_ms", "estimated_step_ms", "measured_step_ms"] {
        preview[wall] = Value::Null;
    }
    views.push(preview);
    let mut job = server.ok(&format!("/jobs/{id}")).await;
    for wall in [
        "created_at",
        "started_at",
        "finished_at",
        "step_seconds",
        "eta_seconds",
    ] {
        job[wall] = Value::Null;
    }
    views.push(job);
    views
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_estimation_reads_the_same_on_postgres_and_sqlite() {
    let params = json!({"estimation_steps": 30, "max_train_examples": 160, "batch_size": 16});
    let mut views = Vec::new();
    for database in [None, Some(new_postgres_database())] {
        let dir = data_dir(false);
        let extra: Vec<&str> = match &database {
            Some(url) => vec!["--database", url],
            None => vec![],
        };
        let server = Server::start(dir.path(), &extra, None);
        let exp = server.tiny_experiment(params.clone()).await;
        let (status, job) = server
            .post(&format!("/experiments/{exp}/estimation"), json!({}))
            .await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_i64().unwrap();
        let done = server.wait_job(id, LONG).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(server.recorded_steps(id).await, (0..30).collect::<Vec<_>>());
        views.push(estimation_views(&server, id).await);
    }
    let (sqlite, postgres) = (&views[0], &views[1]);
    assert_eq!(sqlite.len(), postgres.len());
    for (a, b) in sqlite.iter().zip(postgres) {
        assert_eq!(a, b);
    }
}
