//! The CLI and the server are two callers of one pipeline: the same job on the tiny model,
//! run once by `lightpeft estimate/finetune/baseline` and once as server jobs, gives the same
//! metrics, the same parameter counts and byte-identical exported files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, data_dir};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// The hyper-parameters both sides use, over the quick-demo preset.
const PARAMS: [(&str, &str); 6] = [
    ("estimation_steps", "4"),
    ("max_train_examples", "64"),
    ("max_dev_examples", "32"),
    ("max_len", "32"),
    ("batch_size", "16"),
    ("epochs", "1"),
];

fn cli(data: &Path, args: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightpeft"));
    cmd.arg("--data-dir").arg(data).args(args);
    for (name, value) in PARAMS {
        cmd.arg(format!("--{}", name.replace('_', "-"))).arg(value);
    }
    // The server's test processes train on one thread; so does this side.
    let out = cmd
        .args(["--json", "--device", "cpu"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lightpeft {args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every file under `dir`, by its path inside it.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn assert_same_files(cli: &Path, server: &Path, expect: &[&str]) {
    let (a, b) = (files(cli), files(server));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{} vs {}",
        cli.display(),
        server.display()
    );
    for name in expect {
        assert!(
            a.contains_key(*name),
            "{name} missing from {}",
            cli.display()
        );
    }
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{name} differs between {} and {}",
            cli.display(),
            server.display()
        );
    }
}

/// The CLI's `results.json` numbers next to the server's `JobResult`.
fn assert_same_result(cli: &Value, server: &Value) {
    assert_eq!(
        cli["best"]["metrics"], server["best_metrics"],
        "{cli}\n{server}"
    );
    assert_eq!(cli["steps"], server["steps"]);
    assert_eq!(cli["params"]["peft"], server["peft_params"]);
    assert_eq!(cli["params"]["trainable"], server["trainable_params"]);
    assert_eq!(cli["params"]["encoder"], server["encoder_params"]);
    let key = server["metric"].as_str().unwrap();
    let majority = cli["majority_baseline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m[0] == key)
        .unwrap();
    assert_eq!(majority[1], server["majority_score"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_the_server_train_and_export_the_same_models() {
    let dir = data_dir(false);
    let d = dir.path();
    let ratios = ["--head-ratio", "0.5", "--ffn-ratio", "0.5"];

    // The CLI: estimate, finetune a plan of it, and a baseline.
    let est = cli(
        d,
        &[
            "estimate",
            "--run",
            "e",
            "--model",
            "tiny-bert",
            "--preset",
            "quick-demo",
        ],
    );
    assert_eq!(est["steps"], 4);
    let mut args = vec!["finetune", "--run", "e"];
    args.extend(ratios);
    let ft = cli(d, &args);
    let base = cli(
        d,
        &[
            "baseline",
            "--run",
            "b",
            "--model",
            "tiny-bert",
            "--preset",
            "quick-demo",
        ],
    );
    assert_eq!(base["stage"], "baseline");

    // The server: the same three as jobs of one experiment.
    let server = Server::start(d, &[], None);
    let params: serde_json::Map<String, Value> = PARAMS
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.parse::<u64>().unwrap())))
        .collect();
    let exp = server.tiny_experiment(Value::Object(params)).await;
    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let est_id = job["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(est_id, LONG).await["status"], "succeeded");
    let (status, committed) = server
        .post(
            &format!("/jobs/{est_id}/plans"),
            json!({"head_ratio": 0.5, "ffn_ratio": 0.5}),
        )
        .await;
    assert_eq!(status, 201, "{committed}");
    let ft_id = committed["job"]["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(ft_id, LONG).await["status"], "succeeded");
    let (status, job) = server
        .post(&format!("/experiments/{exp}/baseline"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let base_id = job["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(base_id, LONG).await["status"], "succeeded");

    // Same numbers.
    assert_eq!(
        committed["plan"]["preview"]["layers"]
            .as_array()
            .unwrap()
            .len(),
        ft["plan"]["layers"].as_array().unwrap().len()
    );
    for (i, layer) in ft["plan"]["layers"].as_array().unwrap().iter().enumerate() {
        let served = &committed["plan"]["preview"]["layers"][i];
        assert_eq!(layer["kept_heads"], served["kept_heads"], "layer {i}");
    }
    assert_same_result(&ft, &server.ok(&format!("/jobs/{ft_id}/result")).await);
    assert_same_result(&base, &server.ok(&format!("/jobs/{base_id}/result")).await);
    let served_evals = server.ok(&format!("/jobs/{est_id}/evals")).await;
    let served_evals = served_evals.as_array().unwrap();
    let cli_evals = est["evals"].as_array().unwrap();
    assert_eq!(cli_evals.len(), served_evals.len());
    for (a, b) in cli_evals.iter().zip(served_evals) {
        assert_eq!(a["metrics"], b["metrics"]);
    }

    // Same files: the stage-1 export and summary, the pruned model, the baseline in both
    // formats.
    let jobs = d.join("jobs");
    let runs = d.join("runs");
    let exported = ["model.safetensors", "config.json", "tokenizer.json"];
    assert_same_files(
        &runs.join("e/stage1"),
        &jobs.join(format!("{est_id}/stage1")),
        &exported,
    );
    assert_eq!(
        std::fs::read(runs.join("e/estimation.json")).unwrap(),
        std::fs::read(jobs.join(format!("{est_id}/estimation.json"))).unwrap(),
        "estimation.json"
    );
    let finetuned = std::fs::read_dir(runs.join("e"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("finetune-")
        })
        .unwrap();
    assert_same_files(
        &finetuned.join("model"),
        &jobs.join(format!("{ft_id}/model")),
        &exported,
    );
    assert_same_files(
        &runs.join("b/model"),
        &jobs.join(format!("{base_id}/model")),
        &exported,
    );
    assert_same_files(
        &runs.join("b/hf-peft"),
        &jobs.join(format!("{base_id}/hf-peft")),
        &["adapter_model.safetensors", "adapter_config.json"],
    );
    let config = std::fs::read_to_string(runs.join("b/hf-peft/adapter_config.json")).unwrap();
    assert!(config.contains("\"tiny-bert\""), "{config}");
}
