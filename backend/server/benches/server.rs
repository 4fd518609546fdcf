//! `cargo bench -p lightpeft --bench server`: what the store costs and how fast the read
//! endpoints answer, on a real server over HTTP. Prints a markdown table.
//!
//! The model is a random encoder with all-MiniLM-L6-v2's mask shapes (6 layers × 12 heads,
//! 1,536 FFN neurons) but a narrow hidden width, so 800 recorded steps take seconds while
//! every record (9,288 mask values, 36 module and 288 rank importances per step) is as large
//! as the real model's.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Value, json};

const STEPS: usize = 800;

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn seconds_between(a: &str, b: &str) -> f64 {
    // RFC 3339 with milliseconds, same day in practice; parse h:m:s.
    let secs = |t: &str| {
        let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
        let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    (secs(b) - secs(a)).rem_euclid(86_400.0)
}

async fn estimation_wall(server: &Server, exp: i64) -> (i64, f64) {
    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_i64().unwrap();
    let done = server.wait_job(id, Duration::from_secs(3600)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let wall = seconds_between(
        done["started_at"].as_str().unwrap(),
        done["finished_at"].as_str().unwrap(),
    );
    (id, wall)
}

async fn latency(server: &Server, paths: &[String], post: Option<&[Value]>) -> (f64, f64) {
    let mut ms = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let started = Instant::now();
        let status = match post {
            Some(bodies) => server.post(path, bodies[i].clone()).await.0,
            None => server.get(path).await.0,
        };
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{path}");
    }
    (percentile(&mut ms, 0.5), percentile(&mut ms, 0.95))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = common::data_dir(false);
    let status = Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "assets",
            "tiny",
            "--name",
            "minilm-shaped",
            "--layers",
            "6",
            "--heads",
            "12",
        ])
        .args(["--head-dim", "4", "--ffn", "1536"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let params = json!({"estimation_steps": STEPS, "max_train_examples": 400, "max_dev_examples": 64,
                        "batch_size": 4, "max_len": 16});
    let create = json!({"task": "sst2-rt", "model": "minilm-shaped", "preset": "quick_demo", "params": params});

    // Recording overhead: the same job with the store and with records discarded, twice each,
    // alternating, on the same machine in the same build.
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut recorded = None;
    for round in 0..2 {
        for discard in [false, true] {
            let extra: &[&str] = if discard { &["--discard-records"] } else { &[] };
            let server = Server::start(dir.path(), extra, None);
            let (_, exp) = server.post("/experiments", create.clone()).await;
            let (id, wall) = estimation_wall(&server, exp["id"].as_i64().unwrap()).await;
            eprintln!("round {round}, store {}: {wall:.2} s", !discard);
            if discard {
                without.push(wall);
            } else {
                with.push(wall);
                recorded = Some(id);
            }
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (w, wo) = (best(&with), best(&without));

    // Read latencies on the recorded 800-step job.
    let server = Server::start(dir.path(), &[], None);
    let id = recorded.unwrap();
    let snapshots = server.ok(&format!("/jobs/{id}/heatmap?kind=head")).await["snapshot_steps"]
        .as_array()
        .unwrap()
        .len();
    let steps: Vec<usize> = (0..40).map(|i| i * (STEPS - 1) / 39).collect();
    let heads: Vec<String> = steps
        .iter()
        .map(|s| format!("/jobs/{id}/heatmap?kind=head&step={s}"))
        .collect();
    let binned: Vec<String> = steps
        .iter()
        .map(|s| format!("/jobs/{id}/heatmap?kind=neuron&step={s}"))
        .collect();
    let all: Vec<String> = steps
        .iter()
        .map(|s| format!("/jobs/{id}/heatmap?kind=neuron&bins=0&order=sorted&step={s}"))
        .collect();
    let scalars: Vec<String> = (0..20).map(|_| format!("/jobs/{id}/scalars")).collect();
    let convergence: Vec<String> = (0..10).map(|_| format!("/jobs/{id}/convergence")).collect();
    let bodies: Vec<Value> = (0..40)
        .map(|i| {
            json!({"head_ratio": (i % 10) as f64 / 10.0, "ffn_ratio": ((i * 3) % 10) as f64 / 10.0,
                        "module_ratio": 0.5, "rank_ratio": 0.25})
        })
        .collect();
    let previews: Vec<String> = (0..40).map(|_| format!("/jobs/{id}/preview")).collect();
    // Warm the planner cache, as a dashboard's first slider move does.
    server.post(&previews[0], bodies[0].clone()).await;
    let h = latency(&server, &heads, None).await;
    let b = latency(&server, &binned, None).await;
    let a = latency(&server, &all, None).await;
    let s = latency(&server, &scalars, None).await;
    let c = latency(&server, &convergence, None).await;
    let p = latency(&server, &previews, Some(&bodies)).await;
    let db = std::fs::metadata(dir.path().join("lightpeft.sqlite")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("lightpeft.sqlite-wal")).map_or(0, |m| m.len());

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| estimation job, {STEPS} steps, with the store (best of 2) | {w:.2} s ({:.1} ms/step) |",
        w * 1000.0 / STEPS as f64
    );
    println!(
        "| same job, records discarded (best of 2) | {wo:.2} s ({:.1} ms/step) |",
        wo * 1000.0 / STEPS as f64
    );
    println!(
        "| recording overhead | {:+.1} % ({:+.2} ms/step) |",
        (w / wo - 1.0) * 100.0,
        (w - wo) * 1000.0 / STEPS as f64
    );
    println!("| full snapshots kept of {STEPS} steps (cap 256) | {snapshots} |");
    println!(
        "| database size after two {STEPS}-step jobs | {:.1} MiB |",
        db as f64 / 1048576.0
    );
    for (name, (p50, p95)) in [
        ("heatmap, heads 6 × 12", h),
        ("heatmap, neurons 6 × 64 bins", b),
        ("heatmap, neurons 6 × 1536 sorted", a),
        (&format!("scalars, {STEPS} steps → 1000 points") as &str, s),
        ("convergence over all snapshots", c),
        ("plan preview (planner cached)", p),
    ] {
        println!("| {name}: median / p95 | {p50:.2} / {p95:.2} ms |");
    }
}
