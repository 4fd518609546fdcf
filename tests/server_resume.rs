//! Kill and shutdown: a server killed with SIGKILL mid-estimation keeps every recorded step,
//! marks the job interrupted, and resumes it from its snapshot without recording a step twice.

mod common;

use std::time::Duration;

use common::{Server, data_dir};
use serde_json::json;

const LONG: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_estimation_then_restart_and_resume() {
    let dir = data_dir(false);
    let total = 120;
    let mut server = Server::start(dir.path(), &["--checkpoint-every", "5"], None);
    let exp = server
        .tiny_experiment(json!({"estimation_steps": total, "max_train_examples": 320}))
        .await;
    let (_, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let id = job["id"].as_i64().unwrap();
    server.wait_steps(id, 23, LONG).await;
    let seen = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    let recorded_before = seen["total"].as_i64().unwrap();
    server.kill();
    assert!(recorded_before >= 20, "{recorded_before}");

    let server = Server::start(dir.path(), &["--checkpoint-every", "5"], None);
    let job = server.ok(&format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "interrupted", "{job}");
    assert_eq!(job["resumable"], true, "{job}");
    // Every step the first server reported is still there.
    let after = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    let after_total = after["total"].as_i64().unwrap();
    assert!(
        after_total >= recorded_before,
        "{after_total} < {recorded_before}"
    );
    let steps: Vec<i64> = after["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert_eq!(steps, (0..after_total).collect::<Vec<_>>());
    assert!(
        server.ok(&format!("/jobs/{id}/heatmap?kind=head")).await["step"]
            .as_i64()
            .unwrap()
            >= 0
    );

    let (status, resumed) = server.post(&format!("/jobs/{id}/resume"), json!({})).await;
    assert_eq!(status, 202, "{resumed}");
    let done = server.wait_job(id, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let all = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    let steps: Vec<i64> = all["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (0..total).collect::<Vec<i64>>(),
        "each step exactly once"
    );
    // The resumed run continued: its first steps' records survived unchanged, down to their
    // measured wall times (a run started over would take and time step 0 again).
    assert_eq!(all["loss"][0], after["loss"][0]);
    assert_eq!(all["seconds"][0], after["seconds"][0]);
    let imp = server.ok(&format!("/jobs/{id}/importance")).await;
    assert_eq!(imp["steps"], total);
    let (status, _) = server.post(&format!("/jobs/{id}/preview"), json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_after_the_current_step_and_leaves_a_resumable_job() {
    let dir = data_dir(false);
    let mut server = Server::start(dir.path(), &["--checkpoint-every", "50"], None);
    let exp = server
        .tiny_experiment(json!({"estimation_steps": 400, "max_train_examples": 320}))
        .await;
    let (_, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let id = job["id"].as_i64().unwrap();
    server.wait_steps(id, 8, LONG).await;
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    let server = Server::start(dir.path(), &[], None);
    let job = server.ok(&format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "interrupted", "{job}");
    assert_eq!(
        job["resumable"], true,
        "the stop itself wrote a snapshot: {job}"
    );
    let scalars = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    // Graceful: the snapshot follows the last recorded step, so nothing is dropped on resume.
    assert_eq!(scalars["total"], job["step"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_within_a_step_and_a_queued_one_at_once() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let exp = server
        .tiny_experiment(json!({"estimation_steps": 400, "max_train_examples": 320}))
        .await;
    let (_, first) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let (_, second) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let (a, b) = (
        first["id"].as_i64().unwrap(),
        second["id"].as_i64().unwrap(),
    );
    server.wait_steps(a, 5, LONG).await;
    // One slot: the second job waits in the queue and is cancelled without ever running.
    let (status, queued) = server.post(&format!("/jobs/{b}/cancel"), json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(queued["status"], "cancelled", "{queued}");
    assert!(queued["started_at"].is_null());
    let (status, _) = server.post(&format!("/jobs/{a}/cancel"), json!({})).await;
    assert_eq!(status, 202);
    let job = server.wait_job(a, LONG).await;
    let stopped_at = job["step"].as_i64().unwrap();
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(stopped_at < 400, "{job}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = server.ok(&format!("/jobs/{a}/scalars?max_points=0")).await;
    assert_eq!(
        later["total"].as_i64().unwrap(),
        stopped_at,
        "no step after the stop"
    );
    assert_eq!(job["resumable"], true);
}

/// Kills the server while job `id` is past step `kill_at`, restarts it and resumes the job:
/// it continues from its snapshot and records each of its steps once. Returns the restarted
/// server.
async fn killed_and_resumed(
    dir: &std::path::Path,
    mut server: Server,
    id: i64,
    kill_at: i64,
) -> Server {
    server.wait_steps(id, kill_at, LONG).await;
    let before = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    server.kill();

    let server = Server::start(dir, &["--checkpoint-every", "5"], None);
    let job = server.ok(&format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "interrupted", "{job}");
    assert_eq!(job["resumable"], true, "{job}");
    let (status, resumed) = server.post(&format!("/jobs/{id}/resume"), json!({})).await;
    assert_eq!(status, 202, "{resumed}");
    let done = server.wait_job(id, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let total = done["total_steps"].as_i64().unwrap();
    assert_eq!(
        server.recorded_steps(id).await,
        (0..total).collect::<Vec<i64>>(),
        "each step exactly once"
    );
    let all = server.ok(&format!("/jobs/{id}/scalars?max_points=0")).await;
    // Continued, not started over: the steps before the kill kept their records, down to
    // their measured wall times (a run started over would take and time step 0 again).
    assert_eq!(all["loss"][0], before["loss"][0], "{id}");
    assert_eq!(all["seconds"][0], before["seconds"][0], "{id}");
    assert!(
        server.ok(&format!("/jobs/{id}/result")).await["steps"]
            .as_i64()
            .unwrap()
            == total
    );
    server
}

/// Job `resumed` (killed and resumed) ended where the uninterrupted job `whole` of the same
/// work did: the same loss at every step and the same dev scores.
async fn same_run(server: &Server, resumed: i64, whole: i64) {
    let done = server.wait_job(whole, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let a = server
        .ok(&format!("/jobs/{resumed}/scalars?max_points=0"))
        .await;
    let b = server
        .ok(&format!("/jobs/{whole}/scalars?max_points=0"))
        .await;
    assert_eq!(a["steps"], b["steps"]);
    let losses = |v: &serde_json::Value| -> Vec<f64> {
        v["loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_f64().unwrap())
            .collect()
    };
    for (step, (x, y)) in losses(&a).iter().zip(losses(&b)).enumerate() {
        assert!(
            (x - y).abs() < 1e-5,
            "step {step}: resumed {x}, uninterrupted {y}"
        );
    }
    let a = server.ok(&format!("/jobs/{resumed}/evals")).await;
    let b = server.ok(&format!("/jobs/{whole}/evals")).await;
    let a = a.as_array().unwrap();
    let b = b.as_array().unwrap();
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["step"], y["step"]);
        // `metrics` is a list of [name, value] pairs.
        assert_eq!(
            x["metrics"].as_array().unwrap().len(),
            y["metrics"].as_array().unwrap().len()
        );
        for (m, n) in x["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .zip(y["metrics"].as_array().unwrap())
        {
            assert_eq!(m[0], n[0]);
            let (value, other) = (m[1].as_f64().unwrap(), n[1].as_f64().unwrap());
            assert!(
                (value - other).abs() < 1e-6,
                "{} at step {}: resumed {value}, uninterrupted {other}",
                m[0],
                x["step"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_baseline_and_mid_stage_two_then_resume_from_the_snapshot() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &["--checkpoint-every", "5"], None);
    let exp = server
        .tiny_experiment(json!({"estimation_steps": 20, "epochs": 12, "max_train_examples": 320}))
        .await;
    let (_, base) = server
        .post(&format!("/experiments/{exp}/baseline"), json!({}))
        .await;
    let base = base["id"].as_i64().unwrap();
    let server = killed_and_resumed(dir.path(), server, base, 23).await;
    // The same baseline again, uninterrupted.
    let (_, whole) = server
        .post(&format!("/experiments/{exp}/baseline"), json!({}))
        .await;
    same_run(&server, base, whole["id"].as_i64().unwrap()).await;

    let (_, est) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let est = est["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(est, LONG).await["status"], "succeeded");
    let (status, committed) = server
        .post(&format!("/jobs/{est}/plans"), json!({"head_ratio": 0.5}))
        .await;
    assert_eq!(status, 201, "{committed}");
    let ft = committed["job"]["id"].as_i64().unwrap();
    let server = killed_and_resumed(dir.path(), server, ft, 23).await;
    // The same plan committed again, its stage 2 uninterrupted.
    let (status, again) = server
        .post(&format!("/jobs/{est}/plans"), json!({"head_ratio": 0.5}))
        .await;
    assert_eq!(status, 201, "{again}");
    same_run(&server, ft, again["job"]["id"].as_i64().unwrap()).await;
}
