//! Regression (STS-B), multiple choice (COPA) and ranked candidates (ReCoRD) through the whole
//! pipeline on the tiny model,
//! run as a user would: estimation, a plan that prunes, stage 2 on the pruned model, and the
//! exported model scored again with the same numbers.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn cli(data: &Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .args(["--json", "--max-len", "32", "--batch-size", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lightpeft {args:?}: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The metric names of a run's first evaluation, in order.
fn first_eval_keys(run: &Value) -> Vec<&str> {
    run["evals"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair[0].as_str().unwrap())
        .collect()
}

const WORDS: [&str; 12] = [
    "a", "man", "is", "playing", "the", "flute", "dog", "runs", "woman", "cuts", "tomato", "fast",
];

/// A sentence made of `n` words drawn from `WORDS` from `start`.
fn sentence(start: usize, n: usize) -> String {
    (0..n)
        .map(|i| WORDS[(start + i * 5) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// STS-B's header and `rows` rows whose score grows with how much the two sentences share.
fn stsb(rows: usize) -> String {
    let mut text =
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
            .to_string();
    for i in 0..rows {
        let shared = i % 6;
        let score = shared as f64 * 5.0 / 5.0;
        text.push_str(&format!(
            "{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{}\t{}\t{score:.3}\n",
            sentence(i, 6),
            format!("{} {}", sentence(i, shared), sentence(i + 3, 6 - shared)).trim()
        ));
    }
    text
}

/// COPA lines, the right choice alternating.
fn copa(rows: usize) -> String {
    (0..rows)
        .map(|i| {
            let question = if i % 2 == 0 { "cause" } else { "effect" };
            format!(
                "{{\"premise\": \"{}\", \"choice1\": \"{}\", \"choice2\": \"{}\", \"question\": \"{question}\", \"idx\": {i}, \"label\": {}}}\n",
                sentence(i, 5),
                sentence(i + 1, 4),
                sentence(i + 7, 4),
                i % 2
            )
        })
        .collect()
}

/// ReCoRD lines: a passage naming four of `NAMES`, two queries whose answer is one of them.
fn record(rows: usize) -> String {
    const NAMES: [&str; 6] = ["Alice", "Bob", "Paris", "London", "Carol", "Rome"];
    (0..rows)
        .map(|i| {
            let named: Vec<&str> = (0..4).map(|k| NAMES[(i + k) % NAMES.len()]).collect();
            let passage = format!(
                "{} met {} in {}. {}\n@highlight\n{} visits {}",
                named[0],
                named[1],
                named[2],
                sentence(i, 5),
                named[1],
                named[3]
            );
            // ASCII only, so character offsets are byte offsets; `end` is inclusive.
            let entities: Vec<String> = named
                .iter()
                .map(|name| {
                    let start = passage.find(name).unwrap();
                    format!("{{\"start\": {start}, \"end\": {}}}", start + name.len() - 1)
                })
                .collect();
            let qa = |q: usize, query: &str, answer: &str| {
                format!(
                    "{{\"query\": \"{query}\", \"answers\": [{{\"start\": 0, \"end\": 0, \"text\": \"{answer}\"}}], \"idx\": {}}}",
                    2 * i + q
                )
            };
            format!(
                "{{\"source\": \"test\", \"passage\": {{\"text\": {}, \"entities\": [{}]}}, \"qas\": [{}, {}], \"idx\": {i}}}\n",
                serde_json::to_string(&passage).unwrap(),
                entities.join(", "),
                qa(0, "@placeholder met someone", named[0]),
                qa(1, "They met in @placeholder", named[2])
            )
        })
        .collect()
}

/// Estimation, plan, stage 2 and eval of the export for one task; returns stage 2's output.
fn whole_pipeline(task: &str, train: &str, dev: &str, measures: &[&str]) -> Value {
    let data = common::data_dir(false);
    let d = data.path();
    let files = tempfile::tempdir().unwrap();
    let (train_name, dev_name) = if task.starts_with("glue") {
        ("train.tsv", "dev.tsv")
    } else {
        ("train.jsonl", "val.jsonl")
    };
    let (train_path, dev_path) = (files.path().join(train_name), files.path().join(dev_name));
    std::fs::write(&train_path, train).unwrap();
    std::fs::write(&dev_path, dev).unwrap();
    let (train_path, dev_path) = (train_path.to_str().unwrap(), dev_path.to_str().unwrap());
    let task_args = [
        "--task",
        task,
        "--train-file",
        train_path,
        "--dev-file",
        dev_path,
    ];

    let mut args = vec![
        "estimate",
        "--run",
        "r",
        "--model",
        "tiny-bert",
        "--preset",
        "quick-demo",
    ];
    args.extend(["--estimation-steps", "4"]);
    args.extend(task_args);
    let estimate = cli(d, &args);
    assert_eq!(estimate["steps"], 4, "{estimate}");
    let keys = first_eval_keys(&estimate);
    assert_eq!(keys, measures, "{estimate}");

    let ratios = ["--head-ratio", "0.5", "--ffn-ratio", "0.5"];
    let mut args = vec!["plan", "--run", "r"];
    args.extend(ratios);
    let plan = cli(d, &args);
    assert!(
        plan["layers"][0]["kept_heads"].as_array().unwrap().len() < 4,
        "the plan prunes heads: {plan}"
    );

    let mut args = vec!["finetune", "--run", "r", "--epochs", "1"];
    args.extend(ratios);
    let finetune = cli(d, &args);
    assert_eq!(finetune["stage"], "finetune");
    let evals = finetune["evals"].as_array().unwrap();
    assert_eq!(evals.len(), 1);
    for pair in evals[0]["metrics"].as_array().unwrap() {
        let value = pair[1].as_f64().unwrap();
        assert!(value.is_finite() && (-1.0..=1.0).contains(&value), "{pair}");
    }
    assert!(evals[0]["loss"].as_f64().unwrap().is_finite());

    let export = std::fs::read_dir(d.join("runs/r"))
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
    let mut args = vec!["eval", "--export", export.to_str().unwrap()];
    args.extend(task_args);
    let scored = cli(d, &args);
    assert_eq!(
        scored["metrics"], evals[0]["metrics"],
        "the export scores as trained"
    );
    finetune
}

#[test]
fn stsb_regression_estimates_prunes_finetunes_and_exports() {
    let finetune = whole_pipeline(
        "glue-stsb",
        &stsb(48),
        &stsb(18),
        &["pearson", "spearmanr", "combined_score"],
    );
    // The constant guess of the train mean correlates with nothing.
    let baseline = finetune["majority_baseline"].as_array().unwrap();
    assert_eq!(baseline[0][0], "pearson");
    assert_eq!(baseline[0][1], 0.0);
}

#[test]
fn copa_multiple_choice_estimates_prunes_finetunes_and_exports() {
    let finetune = whole_pipeline("superglue-copa", &copa(48), &copa(16), &["accuracy"]);
    // Choices alternate, so always choosing the more frequent one is right half the time.
    let baseline = finetune["majority_baseline"].as_array().unwrap();
    assert_eq!(baseline[0][0], "accuracy");
    assert_eq!(baseline[0][1], 0.5);
}

#[test]
fn record_ranked_candidates_estimate_prune_finetune_and_export() {
    let finetune = whole_pipeline(
        "superglue-record",
        &record(12),
        &record(6),
        &["f1", "exact_match"],
    );
    // A constant model picks each query's first candidate in sorted order, the answer of 4 of
    // the 12 dev queries (rows 0 and 1 for the first query, 2 and 4 for the second); no two
    // names share a token, so F1 equals exact match.
    let baseline = finetune["majority_baseline"].as_array().unwrap();
    assert_eq!(baseline[0][0], "f1");
    assert!(
        (baseline[0][1].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
        "{baseline:?}"
    );
    assert_eq!(baseline[0][1], baseline[1][1]);
}

/// Runs `lightpeft` without the training flags; returns success, stdout and stderr.
fn raw(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_csv_saved_as_a_dataset_trains_as_its_own_task() {
    let data = common::data_dir(false);
    let d = data.path();
    let files = tempfile::tempdir().unwrap();
    let csv = |rows: usize| {
        let mut text = "id,review,verdict\n".to_string();
        for i in 0..rows {
            let verdict = ["good", "bad", "meh"][i % 3];
            text.push_str(&format!(
                "{i},\"{}, {verdict}\",{verdict}\n",
                sentence(i, 5)
            ));
        }
        text
    };
    let (train, dev) = (files.path().join("mine.csv"), files.path().join("held.csv"));
    std::fs::write(&train, csv(36)).unwrap();
    std::fs::write(&dev, csv(9)).unwrap();
    let (train, dev) = (train.to_str().unwrap(), dev.to_str().unwrap());

    let (ok, stdout, stderr) = raw(d, &["dataset", "preview", train, "--rows", "1"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("36 rows; columns: id, review, verdict"),
        "{stdout}"
    );

    // A missing column fails and saves nothing.
    let add = |name: &str, label: &str| {
        raw(
            d,
            &[
                "dataset", "add", name, "--train", train, "--dev", dev, "--text", "review",
                "--label", label, "--json",
            ],
        )
    };
    let (ok, _, stderr) = add("broken", "stars");
    assert!(!ok);
    assert!(
        stderr.contains("mine.csv:1: no `stars` column in the header (found: id, review, verdict)"),
        "{stderr}"
    );
    assert!(!d.join("user-datasets/broken").exists());

    let (ok, stdout, stderr) = add("verdicts", "verdict");
    assert!(ok, "{stderr}");
    let saved: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(saved["labels"], serde_json::json!(["bad", "good", "meh"]));
    assert_eq!(
        saved["train"]["label_counts"],
        serde_json::json!([12, 12, 12])
    );
    assert_eq!(saved["dev"]["examples"], 9);
    assert_eq!(saved["train"]["sha256"].as_str().unwrap().len(), 64);
    let (ok, stdout, _) = raw(d, &["dataset", "list"]);
    assert!(ok);
    assert!(
        stdout.contains("dataset verdicts: 36 train / 9 dev examples, 0 rows skipped; labels (train / dev): bad (12 / 3), good (12 / 3), meh (12 / 3)"),
        "{stdout}"
    );

    let estimate = cli(
        d,
        &[
            "estimate",
            "--run",
            "mine",
            "--model",
            "tiny-bert",
            "--preset",
            "quick-demo",
            "--estimation-steps",
            "2",
            "--task",
            "dataset:verdicts",
        ],
    );
    let keys = first_eval_keys(&estimate);
    assert_eq!(
        keys,
        ["accuracy", "macro_f1", "combined_score"],
        "{estimate}"
    );
    // Three balanced classes: the constant guess is right a third of the time.
    let baseline = estimate["majority_baseline"].as_array().unwrap();
    assert!(
        (baseline[0][1].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
        "{baseline:?}"
    );

    let (ok, _, stderr) = raw(
        d,
        &[
            "estimate",
            "--run",
            "x",
            "--model",
            "tiny-bert",
            "--task",
            "dataset:nothing",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("no dataset named `nothing`"), "{stderr}");
    let (ok, _, _) = raw(d, &["dataset", "delete", "verdicts"]);
    assert!(ok);
    assert!(!d.join("user-datasets/verdicts").exists());
}
