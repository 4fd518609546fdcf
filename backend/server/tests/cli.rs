//! The `lightpeft` binary's asset commands, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn lightpeft(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn imports_a_local_hugging_face_folder_and_lists_it() {
    let minilm = lightpeft_assets::bundled_model_dir(&lightpeft_assets::default_data_dir());
    assert!(
        minilm.join("model.safetensors").is_file(),
        "run `lightpeft assets fetch` first"
    );
    let data = tempfile::tempdir().unwrap();
    let minilm = minilm.to_str().unwrap();
    let out = lightpeft(
        data.path(),
        &["assets", "fetch", "--model", minilm, "--name", "my-minilm"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("my-minilm: imported"), "{stdout}");
    assert!(
        stdout.contains("Bert, 6 layers, 12 heads/layer, FFN 1536/layer"),
        "{stdout}"
    );
    assert!(
        data.path()
            .join("models/my-minilm/model.safetensors")
            .is_file()
    );

    let status = text(&lightpeft(data.path(), &["status"]).stdout);
    assert!(status.contains("model my-minilm: Bert"), "{status}");
    assert!(
        status.contains("dataset vader movie snippets: missing"),
        "{status}"
    );
}

#[test]
fn refuses_folders_that_do_not_load_and_copies_nothing() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("config.json"), r#"{"model_type":"gpt2"}"#).unwrap();
    std::fs::write(src.path().join("model.safetensors"), b"").unwrap();
    std::fs::write(src.path().join("tokenizer.json"), b"{}").unwrap();
    let out = lightpeft(
        data.path(),
        &[
            "assets",
            "fetch",
            "--model",
            src.path().to_str().unwrap(),
            "--name",
            "bad",
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("config.json"), "{stderr}");
    assert!(!data.path().join("models/bad").exists());

    std::fs::remove_file(src.path().join("tokenizer.json")).unwrap();
    let out = lightpeft(
        data.path(),
        &["assets", "fetch", "--model", src.path().to_str().unwrap()],
    );
    assert!(
        text(&out.stderr).contains("tokenizer.json"),
        "{}",
        text(&out.stderr)
    );

    let out = lightpeft(data.path(), &["assets", "fetch", "nonsense"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("known assets: minilm, vader, bigbench"));
}

/// A scratch data directory that sees the real model and datasets.
fn scratch_data_dir() -> tempfile::TempDir {
    let real = lightpeft_assets::default_data_dir();
    assert!(
        lightpeft_assets::vader_movie_file(&real).is_file(),
        "run `lightpeft assets fetch` first"
    );
    let data = tempfile::tempdir().unwrap();
    for sub in ["models", "datasets"] {
        std::os::unix::fs::symlink(real.join(sub), data.path().join(sub)).unwrap();
    }
    data
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

const SMALL: [&str; 8] = [
    "--max-train-examples",
    "64",
    "--max-dev-examples",
    "32",
    "--max-len",
    "32",
    "--batch-size",
    "16",
];

#[test]
fn estimate_plan_finetune_eval_and_baseline_from_the_command_line() {
    let data = scratch_data_dir();
    let d = data.path();
    let mut args = vec![
        "estimate",
        "--run",
        "r1",
        "--preset",
        "quick-demo",
        "--estimation-steps",
        "4",
        "--json",
    ];
    args.extend(SMALL);
    let est = json(&lightpeft(d, &args));
    assert_eq!(est["steps"], 4);
    let run = d.join("runs/r1");
    let steps = std::fs::read_to_string(run.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 4);
    let first: serde_json::Value = serde_json::from_str(steps.lines().next().unwrap()).unwrap();
    assert_eq!(first["head_masks"].as_array().unwrap().len(), 6);
    assert!(
        run.join("estimation.json").is_file() && run.join("stage1/model.safetensors").is_file()
    );

    // 0.333333333 of 12 heads: g = 11·0.333333333 < 4, so 4 are pruned and 8 kept.
    let plan = json(&lightpeft(d, &["plan", "--run", "r1", "--json"]));
    for layer in plan["layers"].as_array().unwrap() {
        assert_eq!(layer["kept_heads"].as_array().unwrap().len(), 8);
    }
    let table = text(&lightpeft(d, &["plan", "--run", "r1", "--head-ratio", "0.5"]).stdout);
    assert!(
        table.contains("layer  heads kept/removed") && table.contains("6 / 6"),
        "{table}"
    );

    let ft = json(&lightpeft(
        d,
        &["finetune", "--run", "r1", "--epochs", "1", "--json"],
    ));
    assert_eq!(ft["stage"], "finetune");
    let evals = ft["evals"].as_array().unwrap();
    assert_eq!(evals.len(), 1);
    assert!(
        ft["params"]["peft"].as_u64().unwrap() < 331_776,
        "PEFT was pruned"
    );
    let export = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("finetune-")
        })
        .unwrap()
        .join("model");
    // The exported pruned model scores the same dev examples exactly as it did in training.
    let ev = json(&lightpeft(
        d,
        &[
            "eval",
            "--export",
            export.to_str().unwrap(),
            "--max-dev-examples",
            "32",
            "--max-len",
            "32",
            "--json",
        ],
    ));
    assert_eq!(ev["metrics"], evals[0]["metrics"]);

    let mut args = vec![
        "baseline",
        "--run",
        "b1",
        "--preset",
        "quick-demo",
        "--epochs",
        "1",
        "--json",
    ];
    args.extend(SMALL);
    let base = json(&lightpeft(d, &args));
    assert_eq!(base["stage"], "baseline");
    let peft = d.join("runs/b1/hf-peft");
    let config = std::fs::read_to_string(peft.join("adapter_config.json")).unwrap();
    assert!(config.contains("\"peft_type\": \"LORA\""), "{config}");
    assert!(peft.join("adapter_model.safetensors").is_file());
    assert!(base["majority_baseline"][0][1].as_f64().unwrap() >= 0.5);
}

#[test]
fn training_commands_reject_bad_input_clearly() {
    let data = scratch_data_dir();
    let d = data.path();
    for (args, expect) in [
        (
            vec!["estimate", "--run", "x", "--lr", "0"],
            "--lr: 0 is outside (0, 1]",
        ),
        (
            vec!["estimate", "--run", "x", "--task", "nope"],
            "unknown task `nope`",
        ),
        (vec!["estimate", "--run", "../x"], "run name"),
        (
            vec!["estimate", "--run", "x", "--task", "glue-rte"],
            "--train-file",
        ),
        (
            vec!["estimate", "--run", "x", "--model", "/nonexistent"],
            "no such model",
        ),
        (
            vec!["plan", "--run", "missing"],
            "run `missing` does not exist",
        ),
        (
            vec!["estimate", "--run", "x", "--preset", "fast"],
            "paper, vanilla-reference or quick-demo",
        ),
        (
            vec!["estimate", "--run", "x", "--device", "tpu"],
            "device `tpu`: expected one of cpu, cuda, cuda:N",
        ),
    ] {
        let out = lightpeft(d, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    // A GPU where this build or machine has none: refused before anything is written. A
    // CUDA build is asked for a GPU no machine has.
    let (spellings, refusal) = if lightpeft_engine::cuda_built() {
        (["cuda:99"; 4], "no usable CUDA GPU 99")
    } else {
        (
            ["cuda:0", "gpu", "cuda", "CUDA:1"],
            "this lightpeft was built without CUDA",
        )
    };
    let commands: [&[&str]; 4] = [
        &["estimate", "--run", "x", "--device"],
        &["serve", "--port", "0", "--device"],
        &[
            "worker",
            "--database",
            "postgres://nobody@127.0.0.1:1/none",
            "--device",
        ],
        &["device-check", "parity", "--device"],
    ];
    for (command, spelling) in commands.iter().zip(spellings) {
        let args: Vec<&str> = command.iter().copied().chain([spelling]).collect();
        let out = lightpeft(d, &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(refusal), "{args:?}: {stderr}");
    }
    assert!(
        !d.join("runs/x").exists(),
        "failed commands leave no run behind"
    );
}
