//! Past one process: a `serve --no-local-worker` and `lightpeft worker` processes sharing a
//! real PostgreSQL database (and, on this one machine, the data directory). Jobs spread over
//! the workers; a worker killed mid-estimation loses its job to the reaper when its lease
//! expires, and another worker continues it from its snapshot with every step recorded once;
//! a worker frozen past its lease and then continued writes nothing into the next attempt.
//! The server's event stream reports steps trained by every worker.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Server, Worker, data_dir, new_postgres_database};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// Short leases, so a lost worker's job moves on in seconds.
const LEASE: &[&str] = &["--lease-seconds", "3"];

/// Reads the server's event stream in the background; the events so far.
fn collect_events(server: &Server) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = server.client.clone();
    let url = server.url("/events");
    tokio::spawn(async move {
        let mut response = client.get(url).send().await.unwrap();
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data: ")
                        && let Ok(event) = serde_json::from_str::<Value>(data)
                    {
                        sink.lock().unwrap().push(event);
                    }
                }
            }
        }
    });
    events
}

/// Waits until `done` holds for `GET /workers`.
async fn wait_workers(server: &Server, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let workers = server.ok("/workers").await;
        let workers = workers.as_array().unwrap().clone();
        if done(&workers) {
            return workers;
        }
        assert!(started.elapsed() < LONG, "{what}: {workers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn running_on(workers: &[Value], name: &str) -> Vec<i64> {
    workers
        .iter()
        .find(|w| w["name"] == name)
        .map(|w| {
            w["running"]
                .as_array()
                .unwrap()
                .iter()
                .map(|id| id.as_i64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_spread_over_two_workers_and_a_killed_workers_job_continues_on_the_other() {
    let dir = data_dir(false);
    let url = new_postgres_database();
    let mut args = vec!["--database", &url, "--no-local-worker"];
    args.extend(LEASE);
    let server = Server::start(dir.path(), &args, None);
    let events = collect_events(&server);
    let worker_args = ["--lease-seconds", "3", "--checkpoint-every", "5"];
    let first = Worker::start(dir.path(), &url, "first", &worker_args);
    let second = Worker::start(dir.path(), &url, "second", &worker_args);

    let total = 150;
    let exp = server
        .tiny_experiment(json!({"estimation_steps": total, "max_train_examples": 320}))
        .await;
    let mut jobs = Vec::new();
    for _ in 0..6 {
        let (status, job) = server
            .post(&format!("/experiments/{exp}/estimation"), json!({}))
            .await;
        assert_eq!(status, 202, "{job}");
        jobs.push(job["id"].as_i64().unwrap());
    }
    // Both workers train at once, one job each (one slot each).
    let workers = wait_workers(&server, "both workers running", |w| {
        running_on(w, "first").len() == 1 && running_on(w, "second").len() == 1
    })
    .await;
    let victim = running_on(&workers, "first")[0];
    assert_ne!(victim, running_on(&workers, "second")[0]);
    // Killed past a snapshot (every 5 steps), mid-estimation.
    server.wait_steps(victim, 12, LONG).await;
    first.signal("KILL");
    let before = server.ok(&format!("/jobs/{victim}")).await;
    assert_eq!(before["status"], "running", "{before}");
    assert_eq!(before["worker"], "first", "{before}");
    drop(first);

    // The reaper queues it again once the lease runs out; the second worker, the only one
    // left, trains everything, the victim continuing from its snapshot.
    for &id in &jobs {
        let done = server.wait_job(id, LONG).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(
            server.recorded_steps(id).await,
            (0..total).collect::<Vec<i64>>(),
            "job {id}: each step exactly once"
        );
    }
    let victim_job = server.ok(&format!("/jobs/{victim}")).await;
    assert_eq!(victim_job["attempt"], 2, "{victim_job}");
    assert_eq!(victim_job["worker"], "second", "{victim_job}");
    let workers = server.ok("/workers").await;
    let names: BTreeSet<&str> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["first", "second"]), "{workers}");

    // The server trained nothing, yet its stream carried steps of jobs of both workers.
    let events = events.lock().unwrap().clone();
    let stepped: BTreeSet<i64> = events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["job_id"].as_i64().unwrap())
        .collect();
    let by_first: BTreeSet<i64> = events
        .iter()
        .filter(|e| e["type"] == "job" && e["job"]["worker"] == "first")
        .map(|e| e["job"]["id"].as_i64().unwrap())
        .collect();
    assert!(by_first.contains(&victim), "{by_first:?}");
    assert!(
        stepped.contains(&victim),
        "the victim's steps on both workers: {stepped:?}"
    );
    assert!(
        jobs.iter().all(|id| stepped.contains(id)),
        "{stepped:?} of {jobs:?}"
    );
    // The victim's steps reached the stream from the first worker's attempt (before the event
    // that shows the second worker holding it) and from the second's (after it).
    let handed_over = events
        .iter()
        .position(|e| {
            e["type"] == "job" && e["job"]["id"] == victim && e["job"]["worker"] == "second"
        })
        .expect("the stream shows the second worker taking the victim");
    let is_victim_step = |e: &Value| e["type"] == "step" && e["job_id"] == victim;
    assert!(
        events[..handed_over].iter().any(is_victim_step),
        "no step of the first attempt"
    );
    assert!(
        events[handed_over..].iter().any(is_victim_step),
        "no step of the second attempt"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_writes_nothing_into_the_next_attempt() {
    let dir = data_dir(false);
    let url = new_postgres_database();
    let mut args = vec!["--database", &url, "--no-local-worker"];
    args.extend(LEASE);
    let server = Server::start(dir.path(), &args, None);
    let worker_args = ["--lease-seconds", "2", "--checkpoint-every", "5"];
    let mut frozen = Worker::start(dir.path(), &url, "frozen", &worker_args);

    let total = 300;
    let exp = server
        .tiny_experiment(json!({"estimation_steps": total, "max_train_examples": 320}))
        .await;
    let (_, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    let id = job["id"].as_i64().unwrap();
    server.wait_steps(id, 12, LONG).await;
    frozen.signal("STOP");
    // Reaped and queued again; a second worker takes it as attempt 2.
    let started = Instant::now();
    loop {
        let job = server.ok(&format!("/jobs/{id}")).await;
        if job["status"] == "queued" {
            assert_eq!(job["attempt"], 1, "{job}");
            assert!(job["error"].as_str().unwrap().contains("frozen"), "{job}");
            break;
        }
        assert!(started.elapsed() < LONG, "never reaped: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = Worker::start(dir.path(), &url, "next", &worker_args);
    let started = Instant::now();
    let resumed_at = loop {
        let job = server.ok(&format!("/jobs/{id}")).await;
        if job["status"] == "running"
            && job["worker"] == "next"
            && job["step"].as_i64().is_some_and(|s| s > 0)
        {
            break job["step"].as_i64().unwrap();
        }
        assert!(started.elapsed() < LONG, "not taken: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        resumed_at >= 5,
        "continued from a snapshot, not step 0: {resumed_at}"
    );
    // The frozen worker wakes in the middle of the next attempt: its step, its records and
    // its final status are refused, and it lets the job go.
    frozen.signal("CONT");
    let done = server.wait_job(id, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(done["worker"], "next", "{done}");
    assert_eq!(
        server.recorded_steps(id).await,
        (0..total).collect::<Vec<i64>>(),
        "each step exactly once"
    );
    // Alive, heard from again, and holding nothing.
    let workers = wait_workers(&server, "the frozen worker beats again", |w| {
        w.iter().any(|w| {
            w["name"] == "frozen"
                && w["seconds_since_heartbeat"]
                    .as_f64()
                    .is_some_and(|s| s < 6.0)
        })
    })
    .await;
    assert!(running_on(&workers, "frozen").is_empty(), "{workers:?}");
    assert!(frozen.is_alive());
    drop(next);
}
