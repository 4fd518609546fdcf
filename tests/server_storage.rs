//! The server when its storage fills: the job whose records cannot be written fails with the
//! database's words, its final status is stored once space returns, `/health` reports the
//! fault, and the next job runs normally. Two ways to fill it: a real full disk (a small tmpfs
//! as the data directory, where this machine lets the test mount one) and the store's own
//! size cap (`--max-store-mb`), which needs no privileges.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, data_dir, fill_data_dir};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// Unmounts on drop (lazily, so a process still holding a file cannot keep it mounted).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A tmpfs of `mib` at `dir`, or None where this machine refuses (not root, no mount).
fn mount_tmpfs(dir: &Path, mib: u64) -> Option<Mounted> {
    std::fs::create_dir_all(dir).unwrap();
    let size = format!("size={mib}m");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mounted(dir.to_path_buf()))
}

/// Writes zeros to `path` until the disk refuses, returning the bytes written.
fn fill_disk(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "not ENOSPC: {e}");
                break;
            }
        }
    }
    // What the page cache held back fails here, if anywhere.
    let _ = file.sync_all();
    written
}

/// Starts an estimation of `steps` on the tiny model; returns its job id.
async fn start_estimation(server: &Server, steps: u64) -> i64 {
    let experiment = server
        .tiny_experiment(json!({"estimation_steps": steps}))
        .await;
    let (status, job) = server
        .post(&format!("/experiments/{experiment}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_i64().unwrap()
}

/// Polls job `id` until `done` holds (or `timeout`).
async fn wait_for(
    server: &Server,
    id: i64,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let job = server.ok(&format!("/jobs/{id}")).await;
        if done(&job) {
            return job;
        }
        assert!(started.elapsed() < timeout, "job {id}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The failed job's error names the full storage, and the steps it did record have no holes
/// and no repeats.
async fn assert_failed_for_space(server: &Server, job: &Value) {
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("records could not be written") && error.contains("full"),
        "{error}"
    );
    let steps = server.recorded_steps(job["id"].as_i64().unwrap()).await;
    assert!(!steps.is_empty(), "{job}");
    let expected: Vec<i64> = (0..steps.len() as i64).collect();
    assert_eq!(steps, expected, "recorded steps with holes or repeats");
}

/// A short estimation runs to its end and the store reports itself well.
async fn assert_store_works(server: &Server) {
    let next = start_estimation(server, 20).await;
    let job = server.wait_job(next, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(server.recorded_steps(next).await.len(), 20);
    let health = server.ok("/health").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["store"]["status"], "ok", "{health}");
    let fault = &health["store"]["last_fault"];
    assert!(
        fault["error"].as_str().unwrap().contains("full")
            && fault["seconds_ago"].as_f64().unwrap() > 0.0,
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_job_and_the_store_works_again_once_space_returns() {
    let root = tempfile::tempdir().unwrap();
    let disk = root.path().join("disk");
    let Some(_mounted) = mount_tmpfs(&disk, 32) else {
        // The same failure, without a real disk, is the next test's.
        eprintln!("cannot mount a tmpfs here (root needed): the full disk is not tried");
        return;
    };
    fill_data_dir(&disk, false);
    let server = Server::start(&disk, &["--jobs", "1"], None);
    let id = start_estimation(&server, 100_000).await;
    server.wait_steps(id, 10, LONG).await;

    let filler = disk.join("filler");
    assert!(fill_disk(&filler) > 0);
    // Reads still work: the job is shown failed even before its status can be stored.
    let job = wait_for(&server, id, LONG, |j| j["status"] != "running").await;
    assert_failed_for_space(&server, &job).await;
    // Creating while the disk is full either fits in the pages the store already has or
    // is refused as the storage's fault, never a bare 500.
    let (status, body) = server
        .post(
            "/experiments",
            json!({"task": "sst2-rt", "model": "tiny-bert", "preset": "quick_demo"}),
        )
        .await;
    assert!(status == 201 || status == 507, "{status} {body}");
    if status == 507 {
        assert_eq!(body["error"]["code"], "store_unwritable", "{body}");
        let health = server.ok("/health").await;
        assert_eq!(health["store"]["status"], "unwritable", "{health}");
    }

    std::fs::remove_file(&filler).unwrap();
    // The final status lands once there is room again.
    let job = wait_for(&server, id, LONG, |j| {
        !j["error"].as_str().unwrap_or("").contains("not stored yet")
    })
    .await;
    assert_failed_for_space(&server, &job).await;
    assert_store_works(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_fails_the_job_and_deleting_it_makes_room() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &["--jobs", "1", "--max-store-mb", "1"], None);
    // The tiny model's masks fill a MiB in a few hundred steps.
    let id = start_estimation(&server, 100_000).await;
    let job = wait_for(&server, id, LONG, |j| {
        j["status"] == "failed" && !j["error"].as_str().unwrap_or("").contains("not stored yet")
    })
    .await;
    assert_failed_for_space(&server, &job).await;
    let health = server.ok("/health").await;
    assert!(
        health["store"]["last_fault"]["error"]
            .as_str()
            .unwrap()
            .contains("database or disk is full"),
        "{health}"
    );

    let deleted = server
        .client
        .delete(server.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    assert_store_works(&server).await;
}
