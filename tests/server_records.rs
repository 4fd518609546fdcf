//! A record batch the database refuses fails its job with the database's words, the job's
//! later records are not written, and the server goes on serving: the next job succeeds.

mod common;

use std::time::Duration;

use common::{Server, data_dir};
use serde_json::json;
use sqlx::ConnectOptions;

const LONG: Duration = Duration::from_secs(300);

/// The one step the database refuses.
const REFUSED: i64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_write_fails_the_job_and_the_server_stays_healthy() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let total = 400;
    let exp = server
        .tiny_experiment(json!({"estimation_steps": total, "max_train_examples": 320}))
        .await;

    // The database file the server writes, opened beside it, refuses one step: a write of
    // any batch holding it fails, and steps after it would be accepted if anything still
    // sent them.
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("lightpeft.sqlite"))
        .busy_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER refuse_a_step BEFORE INSERT ON step_scalars
         WHEN NEW.step = {REFUSED} BEGIN SELECT RAISE(ABORT, 'disk refused'); END"
    )))
    .execute(&mut conn)
    .await
    .unwrap();

    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_i64().unwrap();
    let failed = server.wait_job(id, LONG).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("disk refused") && error.contains("records"),
        "{error}"
    );

    // What was written is a gap-free prefix before the refused step: the failed batch left
    // nothing behind and no later batch of the job was written.
    let scalars = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    let steps: Vec<i64> = scalars["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert!(steps.len() <= REFUSED as usize, "{steps:?}");
    assert_eq!(steps, (0..steps.len() as i64).collect::<Vec<_>>());
    let later: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM step_scalars WHERE job_id = ? AND step > ?")
            .bind(id)
            .bind(REFUSED)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(later, 0, "records after the failure were written");

    // The database accepts writes again: the server is unharmed.
    sqlx::query("DROP TRIGGER refuse_a_step")
        .execute(&mut conn)
        .await
        .unwrap();
    let health = server.ok("/health").await;
    assert_eq!(health["status"], "ok");
    let (status, next) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{next}");
    let next_id = next["id"].as_i64().unwrap();
    let done = server.wait_job(next_id, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let all = server
        .ok(&format!("/jobs/{next_id}/scalars?max_points=0"))
        .await;
    assert_eq!(all["total"], total, "{all}");
}
