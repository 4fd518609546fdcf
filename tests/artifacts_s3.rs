//! Artifacts in an S3-compatible object store (moto's server, `scripts/s3.sh`), so machines
//! share no folder: a server and workers, each on its own data directory, share only a
//! PostgreSQL database and a bucket. A worker killed mid-estimation leaves its snapshot in the
//! bucket and a worker on another data directory continues from it; a third, fresh one
//! fine-tunes from the stage-1 model it downloads; the server, which trained nothing and holds
//! no job folder, lists and streams the files from the bucket and deletes them with the job.
//! A file larger than one upload part goes up in parts and streams back byte for byte.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, Worker, data_dir, new_postgres_database};
use futures_util::TryStreamExt;
use lightpeft::server::Artifacts;
use lightpeft_pipeline::ArtifactStore;
use serde_json::json;

const LONG: Duration = Duration::from_secs(300);

/// The test bucket (`scripts/s3.sh start` creates it and exports the AWS_* settings).
fn bucket() -> String {
    std::env::var("LIGHTPEFT_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!(
            "LIGHTPEFT_TEST_S3_BUCKET is not set: run `eval \"$(bash scripts/s3.sh start)\"` \
             first, or the whole suite with `bash scripts/test.sh`"
        )
    })
}

/// An `s3://` URL under a prefix no other test uses.
fn s3_url(test: &str) -> String {
    format!("s3://{}/{test}-{}", bucket(), std::process::id())
}

/// The keys stored under `prefix`, read from the S3 server's own listing (not through
/// lightpeft).
async fn keys_under(prefix: &str) -> Vec<String> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let listing = common::http_client()
        .build()
        .unwrap()
        .get(format!(
            "{endpoint}/{}?list-type=2&prefix={prefix}",
            bucket()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    listing
        .split("<Key>")
        .skip(1)
        .map(|rest| rest.split("</Key>").next().unwrap().to_string())
        .collect()
}

fn prefix_of(url: &str) -> String {
    url.strip_prefix(&format!("s3://{}/", bucket()))
        .unwrap()
        .to_string()
}

#[test]
fn a_file_larger_than_a_part_goes_up_in_parts_and_streams_back() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = s3_url("parts");
    let machine = tempfile::tempdir().unwrap();
    let artifacts = Artifacts::open(Some(&url), machine.path()).unwrap();
    runtime.block_on(artifacts.check_reachable()).unwrap();
    // 8 MiB parts: two and a bit.
    let weights: Vec<u8> = (0..(17 << 20) + 11)
        .map(|i: usize| (i % 253) as u8)
        .collect();
    let job = artifacts.for_job(1, runtime.handle().clone());
    let written = weights.clone();
    std::thread::spawn(move || {
        let dir = job.folder("model").unwrap();
        std::fs::write(dir.join("model.safetensors"), &written).unwrap();
        std::fs::write(dir.join("config.json"), b"{}").unwrap();
        job.seal("model").unwrap();
    })
    .join()
    .unwrap();
    runtime.block_on(async {
        let prefix = prefix_of(&url);
        assert_eq!(
            keys_under(&prefix).await,
            [
                format!("{prefix}/jobs/1/model/config.json"),
                format!("{prefix}/jobs/1/model/model.safetensors"),
            ]
        );
        // Another machine, its cache empty.
        let other = tempfile::tempdir().unwrap();
        let reader = Artifacts::open(Some(&url), other.path()).unwrap();
        let (size, chunks) = reader.stream(1, "model/model.safetensors").await.unwrap();
        assert_eq!(size, weights.len() as u64);
        let chunks: Vec<bytes::Bytes> = chunks.try_collect().await.unwrap();
        assert!(chunks.concat() == weights, "streamed bytes differ");
        let copy = reader.local_copy(1, "model").await.unwrap();
        assert!(copy.starts_with(other.path()));
        assert!(std::fs::read(copy.join("model.safetensors")).unwrap() == weights);
        reader.remove_job(1).await.unwrap();
        assert!(keys_under(&prefix).await.is_empty());
    });
}

#[test]
fn a_bucket_that_does_not_exist_fails_at_start_with_its_name() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    bucket();
    let machine = tempfile::tempdir().unwrap();
    let url = "s3://no-such-bucket-lightpeft/x";
    let artifacts = Artifacts::open(Some(url), machine.path()).unwrap();
    let e = runtime
        .block_on(artifacts.check_reachable())
        .unwrap_err()
        .to_string();
    assert!(e.contains(url), "{e}");
}

fn job_files(dir: &Path) -> bool {
    dir.join("jobs").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_their_own_data_directories_share_snapshots_and_models_through_the_bucket() {
    let url = s3_url("workers");
    let prefix = prefix_of(&url);
    let database = new_postgres_database();
    let server_dir = data_dir(false);
    let server = Server::start(
        server_dir.path(),
        &[
            "--database",
            &database,
            "--no-local-worker",
            "--lease-seconds",
            "3",
            "--artifacts",
            &url,
        ],
        None,
    );
    let worker_args = [
        "--lease-seconds",
        "3",
        "--checkpoint-every",
        "5",
        "--artifacts",
        &url,
    ];
    let first_dir = data_dir(false);
    let first = Worker::start(first_dir.path(), &database, "first", &worker_args);

    let total = 150;
    let exp = server
        .tiny_experiment(json!({"estimation_steps": total, "max_train_examples": 320}))
        .await;
    let (status, est) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{est}");
    let est = est["id"].as_i64().unwrap();
    // Past a few snapshots, then killed: its snapshot is in the bucket, not in a folder the
    // next worker can see.
    server.wait_steps(est, 22, LONG).await;
    first.signal("KILL");
    drop(first);
    let snapshots = keys_under(&format!("{prefix}/jobs/{est}/checkpoints/")).await;
    assert!(!snapshots.is_empty(), "no snapshot in the bucket");

    let second_dir = data_dir(false);
    let second = Worker::start(second_dir.path(), &database, "second", &worker_args);
    let done = server.wait_job(est, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["worker"], "second", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    assert_eq!(
        server.recorded_steps(est).await,
        (0..total).collect::<Vec<i64>>(),
        "each step once: the second worker continued from the bucket's snapshot"
    );
    // Only the newest snapshot is kept.
    let steps: std::collections::BTreeSet<String> =
        keys_under(&format!("{prefix}/jobs/{est}/checkpoints/"))
            .await
            .iter()
            .map(|k| k.split('/').nth(4).unwrap().to_string())
            .collect();
    assert_eq!(steps.len(), 1, "{steps:?}");
    let mut second = second;
    second.signal("TERM");
    assert!(second.child.wait().unwrap().success());

    // A third worker that has never seen the estimation fine-tunes from its stage-1 model.
    let third_dir = data_dir(false);
    let third = Worker::start(third_dir.path(), &database, "third", &worker_args);
    let (status, committed) = server
        .post(&format!("/jobs/{est}/plans"), json!({"head_ratio": 0.5}))
        .await;
    assert_eq!(status, 201, "{committed}");
    let ft = committed["job"]["id"].as_i64().unwrap();
    let finished = server.wait_job(ft, LONG).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["worker"], "third", "{finished}");

    // The server lists and streams the model from the bucket; it holds no job folder.
    let listed = server.ok(&format!("/jobs/{ft}/artifacts")).await;
    let model = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "model/model.safetensors")
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    let response = server
        .client
        .get(server.url(&format!("/jobs/{ft}/artifacts/model/model.safetensors")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let downloaded = response.bytes().await.unwrap();
    assert_eq!(downloaded.len() as u64, model["bytes"].as_u64().unwrap());
    let trained = third_dir
        .path()
        .join(format!("cache/artifacts/jobs/{ft}/model/model.safetensors"));
    assert!(
        downloaded == std::fs::read(&trained).unwrap(),
        "the download is what the worker trained"
    );
    let (status, _) = server
        .post(&format!("/jobs/{est}/preview"), json!({"head_ratio": 0.25}))
        .await;
    assert_eq!(status, 200, "the planner reads the summary from the bucket");
    for dir in [&server_dir, &first_dir, &second_dir, &third_dir] {
        assert!(!job_files(dir.path()), "a job folder in {:?}", dir.path());
    }

    // Deleting the job deletes its files in the bucket.
    assert!(!keys_under(&format!("{prefix}/jobs/{ft}/")).await.is_empty());
    let status = server
        .client
        .delete(server.url(&format!("/jobs/{ft}")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    assert!(keys_under(&format!("{prefix}/jobs/{ft}/")).await.is_empty());
    drop(third);
}
