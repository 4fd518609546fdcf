//! A job's life under concurrent and careless requests, against the real binary: concurrent
//! resumes start a job once, deletes never pull a live job's row away, and ids are never
//! handed out twice.

mod common;

use std::time::Duration;

use common::{Server, data_dir};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

async fn delete(server: &Server, path: &str) -> (u16, Value) {
    let r = server.client.delete(server.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resumes_of_one_cancelled_job_start_it_once() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &["--jobs", "1"], None);
    let total = 300;
    let exp = server
        .tiny_experiment(json!({"estimation_steps": total, "max_train_examples": 320}))
        .await;
    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_i64().unwrap();
    server.wait_steps(id, 15, LONG).await;
    let (status, body) = server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(server.wait_job(id, LONG).await["status"], "cancelled");

    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let client = server.client.clone();
            let url = server.url(&format!("/jobs/{id}/resume"));
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let accepted = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(accepted, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 202) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["error"]["code"], "conflict", "{body}");
    }

    // Never more than `--jobs` running while it trains, and every step recorded once.
    loop {
        let running = server.ok("/jobs?status=running").await;
        assert!(running.as_array().unwrap().len() <= 1, "{running}");
        let job = server.ok(&format!("/jobs/{id}")).await;
        if !["queued", "running"].contains(&job["status"].as_str().unwrap()) {
            assert_eq!(job["status"], "succeeded", "{job}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.recorded_steps(id).await,
        (0..total).collect::<Vec<_>>()
    );
    // A finished job cannot be resumed again.
    let (status, body) = server.post(&format!("/jobs/{id}/resume"), json!({})).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_refuse_live_jobs_and_ids_are_never_reused() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &["--jobs", "1"], None);
    let exp = server
        .tiny_experiment(json!({"estimation_steps": 30, "epochs": 40, "max_train_examples": 320}))
        .await;
    let (_, est) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let est = est["id"].as_i64().unwrap();
    server.wait_steps(est, 1, LONG).await;
    // Running: neither the job nor its experiment can go.
    let (status, body) = delete(&server, &format!("/jobs/{est}")).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = delete(&server, &format!("/experiments/{exp}")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(server.wait_job(est, LONG).await["status"], "succeeded");

    // The estimation is finished, but the stage-2 job of its plan runs: it stays too.
    let (status, committed) = server
        .post(&format!("/jobs/{est}/plans"), json!({"head_ratio": 0.5}))
        .await;
    assert_eq!(status, 201, "{committed}");
    let ft = committed["job"]["id"].as_i64().unwrap();
    server.wait_steps(ft, 1, LONG).await;
    let (status, body) = delete(&server, &format!("/jobs/{est}")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&ft.to_string()),
        "{body}"
    );
    let (status, body) = server.post(&format!("/jobs/{ft}/cancel"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(server.wait_job(ft, LONG).await["status"], "cancelled");

    // Both finished: the newest job goes, and the next job gets a new id, not its old one.
    let (status, body) = delete(&server, &format!("/jobs/{ft}")).await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let next = body["id"].as_i64().unwrap();
    assert!(next > ft, "job id {next} reused (deleted {ft})");
    assert_eq!(server.wait_job(next, LONG).await["status"], "succeeded");
    // Its plans are its own, not the deleted job's.
    assert!(
        server
            .ok(&format!("/jobs/{next}/plans"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, body) = server.get(&format!("/jobs/{ft}")).await;
    assert_eq!(status, 404, "{body}");

    // Experiments too: delete the newest, the next one is new.
    let (status, body) = delete(&server, &format!("/experiments/{exp}")).await;
    assert_eq!(status, 204, "{body}");
    let again = server.tiny_experiment(json!({})).await;
    assert!(again > exp, "experiment id {again} reused (deleted {exp})");
}
