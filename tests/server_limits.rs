//! The server against requests too big for the machine: a run estimated over the memory
//! budget is refused before anything is stored or allocated, and the server stays healthy.

mod common;

use std::time::Duration;

use common::{Server, data_dir};
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_memory_budget_is_refused_naming_what_to_lower() {
    let dir = data_dir(true);
    // The default budget: three quarters of this machine's memory.
    let server = Server::start(dir.path(), &["--jobs", "1"], None);
    let create = |params: serde_json::Value| json!({"task": "sst2-rt", "model": "all-MiniLM-L6-v2", "preset": "quick_demo", "params": params});
    // The request that once aborted the process: every value inside the parameter table.
    let (status, body) = server
        .post(
            "/experiments",
            create(json!({"batch_size": 4096, "eval_batch_size": 4096, "max_len": 512})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "over_memory_budget", "{body}");
    assert_eq!(body["error"]["field"], "batch_size", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("lower batch_size or max_len") && message.contains("MiB"),
        "{message}"
    );
    // A huge evaluation batch alone is named as such.
    let (status, body) = server
        .post(
            "/experiments",
            create(json!({"batch_size": 2, "eval_batch_size": 4096, "max_len": 512, "max_train_examples": 64})),
        )
        .await;
    if status == 422 {
        assert_eq!(body["error"]["field"], "eval_batch_size", "{body}");
    } else {
        // On a machine with room for it the same request is simply accepted.
        assert_eq!(status, 201, "{body}");
    }
    let health = server.ok("/health").await;
    assert_eq!(health["status"], "ok", "{health}");

    // The same run within the budget trains to its end.
    let (status, body) = server
        .post(
            "/experiments",
            create(
                json!({"batch_size": 16, "eval_batch_size": 64, "max_len": 512,
                "estimation_steps": 3, "max_train_examples": 64, "max_dev_examples": 32}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let exp = body["id"].as_i64().unwrap();
    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let job = server.wait_job(job["id"].as_i64().unwrap(), LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_a_lowered_budget_fails_alone_before_its_first_step() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &["--jobs", "1"], None);
    let exp = server
        .tiny_experiment(json!({"estimation_steps": 3, "batch_size": 64, "max_len": 128}))
        .await;
    drop(server);
    // Restarted with a budget the experiment no longer fits: the job fails, the server lives.
    let mut server = Server::start(dir.path(), &["--jobs", "1", "--memory-budget", "64"], None);
    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let job = server.wait_job(job["id"].as_i64().unwrap(), LONG).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("memory budget of 64 MiB"), "{job}");
    assert_eq!(
        server.recorded_steps(job["id"].as_i64().unwrap()).await,
        Vec::<i64>::new()
    );
    assert_eq!(server.ok("/health").await["status"], "ok");
    server.terminate();
}
