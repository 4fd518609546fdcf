//! End-to-end: studies on the real `lightpeft serve` binary with the tiny random model: the
//! jobs a study queues, its report and exports, its cancel, and the requests it refuses.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Server, data_dir};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(600);

/// A recipe that keeps every tiny job to a few seconds.
fn small() -> Value {
    json!({"estimation_steps": 12, "max_train_examples": 64, "max_dev_examples": 32,
           "batch_size": 16, "epochs": 1, "max_len": 32})
}

/// A server on its own data directory with a tiny experiment, and a study of it started with
/// `request`: the directory (kept alive with the server), the server, the experiment's id and
/// the study's first report.
async fn server_with_study(request: Value) -> (tempfile::TempDir, Server, i64, Value) {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let exp = server.tiny_experiment(small()).await;
    let (status, report) = server
        .post(&format!("/experiments/{exp}/studies"), request)
        .await;
    assert_eq!(status, 201, "{report}");
    (dir, server, exp, report)
}

async fn wait_study(server: &Server, id: i64, until: &str) -> Value {
    let started = Instant::now();
    loop {
        let report = server.ok(&format!("/studies/{id}")).await;
        if report["state"] == until {
            return report;
        }
        assert!(
            started.elapsed() < LONG,
            "study {id} is still {}: {report}",
            report["state"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The fields of one CSV line (quoted fields with `""` for a quote; no line breaks inside).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

fn configuration<'a>(report: &'a Value, label: &str) -> &'a Value {
    report["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label)
        .unwrap_or_else(|| panic!("no configuration {label}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_of_two_plans_and_two_seeds_runs_every_job_and_exports_its_numbers() {
    let (_dir, server, exp, report) = server_with_study(
        json!({"plans": {"preset": "grid", "head_ratios": [0.25, 0.5]}, "seeds": 2}),
    )
    .await;
    let id = report["study"]["id"].as_i64().unwrap();
    // No estimation yet: one was queued, and only the baselines wait beside it.
    assert_eq!(report["state"], "waiting_for_estimation", "{report}");
    let est = report["study"]["estimation_job_id"].as_i64().unwrap();
    assert_eq!(
        server.ok(&format!("/jobs/{est}")).await["kind"],
        "estimation"
    );
    let kinds: Vec<&str> = report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds, ["baseline"; 4],
        "q,v and all targets, two seeds each"
    );
    let labels: Vec<&str> = report["configurations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "baseline query,value",
            "baseline all targets",
            "light-peft h0.25 f0.00 m0.00 r0.00",
            "random h0.25 f0.00 m0.00 r0.00",
            "light-peft h0.50 f0.00 m0.00 r0.00",
            "random h0.50 f0.00 m0.00 r0.00",
        ]
    );

    let done = wait_study(&server, id, "finished").await;
    let jobs = done["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4 + 2 * 2 * 2, "{done}");
    for job in jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["study_id"], id);
    }
    // Each configuration ran on the experiment's seed and the next one.
    let seeds: BTreeSet<u64> = jobs
        .iter()
        .map(|j| j["settings"]["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, BTreeSet::from([42, 43]));
    let targets: Vec<&str> = jobs
        .iter()
        .filter(|j| j["kind"] == "baseline")
        .map(|j| j["settings"]["targets"].as_str().unwrap())
        .collect();
    assert_eq!(targets.iter().filter(|t| **t == "query,value").count(), 2);
    // Random plans got their own seeds, so they differ between seeds.
    let mut random_seeds = BTreeSet::new();
    for job in jobs.iter().filter(|j| j["kind"] == "finetune") {
        let plan = server
            .ok(&format!("/plans/{}", job["plan_id"].as_i64().unwrap()))
            .await;
        assert_eq!(plan["estimation_job_id"], est);
        if let Some(seed) = plan["preview"]["settings"]["random_seed"].as_u64() {
            random_seeds.insert(seed);
        }
    }
    assert_eq!(random_seeds, BTreeSet::from([42, 43]));

    assert_eq!(done["metric"], "accuracy");
    for c in done["configurations"].as_array().unwrap() {
        assert_eq!(c["finished"], 2, "{c}");
        assert_eq!(c["job_ids"].as_array().unwrap().len(), 2);
        let mean = c["score_mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{c}");
        assert!(c["score_std"].as_f64().unwrap() >= 0.0);
    }
    let base = configuration(&done, "baseline all targets");
    assert_eq!(base["encoder_params_ratio"], 1.0);
    assert_eq!(base["train_speedup"], 1.0);
    let half = configuration(&done, "light-peft h0.50 f0.00 m0.00 r0.00");
    let quarter = configuration(&done, "light-peft h0.25 f0.00 m0.00 r0.00");
    let random_half = configuration(&done, "random h0.50 f0.00 m0.00 r0.00");
    let ratio = |c: &Value| c["encoder_params_ratio"].as_f64().unwrap();
    assert!(
        ratio(half) < ratio(quarter) && ratio(quarter) < 1.0,
        "{done}"
    );
    assert_eq!(
        half["encoder_params"], random_half["encoder_params"],
        "random prunes the same counts"
    );
    // The fewest encoder parameters: of the two plans that keep that few, the better (or
    // both, on a tie) is on that axis's frontier.
    let on_params = |c: &Value| {
        c["frontier"]
            .as_array()
            .unwrap()
            .contains(&json!("encoder_params"))
    };
    assert!(on_params(half) || on_params(random_half), "{done}");

    // The JSON export is the report; the CSV has its numbers, exactly.
    let json_export = server
        .client
        .get(server.url(&format!("/studies/{id}/export?format=json")))
        .send()
        .await
        .unwrap();
    assert_eq!(json_export.status(), 200);
    assert!(
        json_export.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("study-{id}.json"))
    );
    let exported: Value = json_export.json().await.unwrap();
    assert_eq!(exported["configurations"], done["configurations"]);
    let csv = server
        .client
        .get(server.url(&format!("/studies/{id}/export?format=csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    let header = csv_fields(lines.next().unwrap());
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert_eq!(rows.len(), 6);
    for (row, c) in rows.iter().zip(done["configurations"].as_array().unwrap()) {
        assert_eq!(row.len(), header.len());
        let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].as_str();
        assert_eq!(cell("label"), c["label"]);
        for name in [
            "score_mean",
            "score_std",
            "encoder_params_ratio",
            "train_speedup",
            "inference_speedup",
        ] {
            let parsed: f64 = cell(name).parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            // serde_json's default parser may land one ulp off the shortest form it reads.
            let reported = c[name].as_f64().unwrap();
            assert!(
                (parsed - reported).abs() <= 4.0 * f64::EPSILON * reported.abs(),
                "{name} of {}: {parsed} vs {reported}",
                c["label"]
            );
        }
        let frontier: Vec<&str> = cell("frontier")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        let reported: Vec<&str> = c["frontier"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(frontier, reported);
    }
    let studies = server.ok("/studies").await;
    assert_eq!(studies[0]["id"], id);

    // A study of the finished estimation queues its plans at once; cancelling it cancels what
    // is still queued, and nothing more of it runs.
    let (status, second) = server
        .post(
            &format!("/experiments/{exp}/studies"),
            json!({"estimation_job_id": est, "plans": {"preset": "heads_ffn_frontier"},
                   "seeds": 1, "baselines": false, "random": false}),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["state"], "running");
    let second_id = second["study"]["id"].as_i64().unwrap();
    assert_eq!(second["jobs"].as_array().unwrap().len(), 5);
    let delete = |id: i64| {
        let request = server.client.delete(server.url(&format!("/studies/{id}")));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(second_id).await, 409, "its jobs are queued");
    let (status, cancelled) = server
        .post(&format!("/studies/{second_id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["study"]["cancelled"], true);
    let ended = wait_study(&server, second_id, "cancelled").await;
    let statuses: Vec<&str> = ended["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["status"].as_str().unwrap())
        .collect();
    // One server slot: at most one job had started, so at least four never ran.
    assert!(
        statuses.iter().filter(|s| **s == "cancelled").count() >= 4,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| ["cancelled", "succeeded"].contains(s)),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = server.ok(&format!("/studies/{second_id}")).await;
    assert_eq!(
        later["jobs"], ended["jobs"],
        "nothing of it was queued again"
    );

    // Resuming it queues again what was cancelled (two resumes at once: each job queued once)
    // and it finishes with the same jobs; then there is nothing left to resume.
    let resume_path = format!("/studies/{second_id}/resume");
    let resume = || server.post(&resume_path, json!({}));
    let ((first, a), (other, b)) = tokio::join!(resume(), resume());
    assert!(
        [first, other].contains(&202) && [first, other].iter().all(|s| [202, 409].contains(s)),
        "{first} {a} / {other} {b}"
    );
    let resumed = if first == 202 { a } else { b };
    assert_eq!(resumed["study"]["cancelled"], false, "{resumed}");
    let finished = wait_study(&server, second_id, "finished").await;
    let ids = |report: &Value| -> Vec<i64> {
        report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(ids(&finished), ids(&ended), "the same jobs, none added");
    assert!(
        finished["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "succeeded"),
        "{finished}"
    );
    let (status, body) = resume().await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no cancelled, failed or interrupted job"),
        "{body}"
    );
    assert_eq!(
        server.post("/studies/987654/resume", json!({})).await.0,
        404
    );

    // Deleting it takes its jobs and their plans; the estimation and the other study stay.
    let plans_before = server.ok(&format!("/jobs/{est}/plans")).await;
    assert_eq!(delete(second_id).await, 204);
    assert_eq!(server.get(&format!("/studies/{second_id}")).await.0, 404);
    for job in ended["jobs"].as_array().unwrap() {
        assert_eq!(server.get(&format!("/jobs/{}", job["id"])).await.0, 404);
    }
    let plans_after = server.ok(&format!("/jobs/{est}/plans")).await;
    assert_eq!(
        plans_after.as_array().unwrap().len(),
        plans_before.as_array().unwrap().len() - 5
    );
    assert_eq!(
        server.ok(&format!("/jobs/{est}")).await["status"],
        "succeeded"
    );
    assert_eq!(
        server.ok(&format!("/studies/{id}")).await["state"],
        "finished"
    );
    assert_eq!(delete(second_id).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_study_request_that_cannot_run_is_refused_and_stores_nothing() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let exp = server.tiny_experiment(small()).await;
    let grid = |heads: Value| json!({"preset": "grid", "head_ratios": heads});
    let cases = [
        (
            json!({"plans": grid(json!([0.5])), "seeds": 0}),
            400,
            "seeds",
        ),
        (
            json!({"plans": grid(json!([0.5])), "seeds": 11}),
            400,
            "seeds",
        ),
        (json!({"plans": grid(json!([1.5]))}), 400, "plans"),
        (json!({"plans": grid(json!([]))}), 201, ""),
        (
            json!({"plans": {"preset": "list", "plans": []}}),
            400,
            "plans",
        ),
        (
            json!({"plans": {"preset": "list", "plans": [{"head_ratio": 0.5}, {"rank_ratio": 2.0}]}}),
            400,
            "plans",
        ),
        (
            json!({"plans": {"preset": "list", "plans": [{"head_ratio": 0.5, "ffn_ratio": 0.25}]}}),
            201,
            "",
        ),
    ];
    for (body, want, field) in cases {
        let (status, answer) = server
            .post(&format!("/experiments/{exp}/studies"), body.clone())
            .await;
        assert_eq!(status, want, "{body}: {answer}");
        if want != 201 {
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }
    }
    let many: Vec<f64> = (0..20).map(|i| f64::from(i) / 40.0).collect();
    let (status, answer) = server
        .post(
            &format!("/experiments/{exp}/studies"),
            json!({"plans": {"preset": "grid", "head_ratios": many, "ffn_ratios": [0.0, 0.5]}, "seeds": 3}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 200"),
        "{answer}"
    );
    let (status, answer) = server
        .post(
            "/experiments/999/studies",
            json!({"plans": {"preset": "heads_ffn_frontier"}}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    // A baseline is no estimation to plan from.
    let (_, baseline) = server
        .post(&format!("/experiments/{exp}/baseline"), json!({}))
        .await;
    let (status, answer) = server
        .post(
            &format!("/experiments/{exp}/studies"),
            json!({"estimation_job_id": baseline["id"], "plans": {"preset": "heads_ffn_frontier"}}),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["field"], "estimation_job_id");
    // Only the two studies accepted above exist; the listed plan is the one asked for.
    let studies = server.ok("/studies").await;
    assert_eq!(studies.as_array().unwrap().len(), 2);
    let listed = server.ok(&format!("/studies/{}", studies[0]["id"])).await;
    let plan = configuration(&listed, "light-peft h0.50 f0.25 m0.00 r0.00");
    assert_eq!(plan["ffn_ratio"], 0.25, "{listed}");
}

/// `lightpeft study` with arguments, against `server`; (stdout, stderr), asserting success.
fn study_cli(server: &Server, args: &[&str]) -> (String, String) {
    let root = server.base.strip_suffix("/api/v1").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("study")
        .args(args)
        .args(["--server", root])
        .env_remove("LIGHTPEFT_TOKEN")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_study_command_starts_waits_and_prints_the_table_and_exports() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let exp = server.tiny_experiment(small()).await;
    let exp_arg = exp.to_string();
    let (table, progress) = study_cli(
        &server,
        &[
            "start",
            "--experiment",
            &exp_arg,
            "--head-ratios",
            "0.5",
            "--no-random",
            "--wait",
        ],
    );
    assert!(progress.contains("jobs ended"), "{progress}");
    assert!(table.contains("(finished)"), "{table}");
    for row in [
        "| baseline query,value | 1/1 |",
        "| baseline all targets | 1/1 |",
        "| light-peft h0.50 f0.00 m0.00 r0.00 | 1/1 |",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
    assert!(table.contains("| reference |"), "{table}");
    assert!(table.contains(" %"), "{table}");
    let id = server.ok("/studies").await[0]["id"].as_i64().unwrap();
    let (csv, _) = study_cli(&server, &["show", &id.to_string(), "--format", "csv"]);
    assert_eq!(
        csv.lines().count(),
        4,
        "a header and three configurations: {csv}"
    );
    let (json, _) = study_cli(&server, &["show", &id.to_string(), "--format", "json"]);
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["state"], "finished");
    // A listed plan, cancelled at once and resumed: it ends finished with its one run.
    let (_, started) = study_cli(
        &server,
        &[
            "start",
            "--experiment",
            &exp_arg,
            "--plan",
            "0.25,0,0,0",
            "--no-baselines",
            "--no-random",
        ],
    );
    let listed = server.ok("/studies").await[0]["id"].as_i64().unwrap();
    assert_ne!(listed, id, "{started}");
    let (_, cancelled) = study_cli(&server, &["cancel", &listed.to_string()]);
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    // Its run, if it had started, stops first (a resume before that is refused as stopping).
    for _ in 0..100 {
        let report = server.ok(&format!("/studies/{listed}")).await;
        if report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] != "running" && j["status"] != "queued")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (table, resumed) = study_cli(&server, &["resume", &listed.to_string(), "--wait"]);
    assert!(resumed.contains("resumed"), "{resumed}");
    assert!(table.contains("(finished)"), "{table}");
    assert!(
        table.contains("| light-peft h0.25 f0.00 m0.00 r0.00 | 1/1 |"),
        "{table}"
    );
    // A refused request is one clear line and a failure.
    let root = server.base.strip_suffix("/api/v1").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .args([
            "study",
            "start",
            "--experiment",
            "999",
            "--frontier",
            "--server",
            root,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("experiment 999"),
        "{stderr}"
    );
}

/// A study's cancel and resume sent together leave it consistent either way round: cancelled
/// with nothing of it queued, or reopened with nothing of it cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_resume_leaves_the_study_cancelled_or_reopened_never_between() {
    let (_dir, server, _, report) =
        server_with_study(json!({"plans": {"preset": "grid", "head_ratios": [0.25]}, "seeds": 3}))
            .await;
    let id = report["study"]["id"].as_i64().unwrap();
    let (cancel_path, resume_path) = (
        format!("/studies/{id}/cancel"),
        format!("/studies/{id}/resume"),
    );
    let statuses = |report: &Value| -> Vec<String> {
        report["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["status"].as_str().unwrap().to_string())
            .collect()
    };
    for round in 0..4 {
        let ((cancelled, c), (resumed, r)) = tokio::join!(
            server.post(&cancel_path, json!({})),
            server.post(&resume_path, json!({}))
        );
        assert_eq!(cancelled, 202, "round {round}: {c}");
        assert!([202, 409].contains(&resumed), "round {round}: {r}");
        let report = server.ok(&format!("/studies/{id}")).await;
        let now = statuses(&report);
        if report["study"]["cancelled"] == true {
            assert!(
                !now.iter().any(|s| s == "queued"),
                "round {round}: cancelled, yet {now:?}"
            );
            // Let its stopping run end, then reopen it for the next round.
            let started = Instant::now();
            loop {
                let (status, body) = server.post(&resume_path, json!({})).await;
                if status == 202 {
                    break;
                }
                assert!(
                    status == 409 && started.elapsed() < LONG,
                    "round {round}: {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            assert!(
                !now.iter().any(|s| s == "cancelled"),
                "round {round}: reopened, yet {now:?}"
            );
        }
    }
    // Whatever the rounds did, the study ends with every job run.
    let finished = wait_study(&server, id, "finished").await;
    assert!(
        statuses(&finished).iter().all(|s| s == "succeeded"),
        "{finished}"
    );
}
