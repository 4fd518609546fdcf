//! End-to-end: the real `lightpeft serve` binary over HTTP with a real SQLite file.

mod common;

use std::time::Duration;

use common::{Server, data_dir, row_counts};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(300);

/// Reads Server-Sent Events from `path` until `want` step events arrived; returns the events.
async fn read_events(server: &Server, path: &str, want: usize) -> Vec<Value> {
    let mut response = server.client.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + LONG;
    while events
        .iter()
        .filter(|e: &&Value| e["type"] == "step")
        .count()
        < want
    {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events arrive")
            .unwrap()
            .expect("stream open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            for line in block.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    events.push(serde_json::from_str(data.trim()).unwrap());
                }
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_estimate_watch_plan_commit_finetune_compare_download() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let health = server.ok("/health").await;
    assert_eq!(health["auth"], false);
    let schema = server.ok("/schema").await;
    assert!(
        schema["models"]
            .as_array()
            .unwrap()
            .contains(&json!("tiny-bert"))
    );
    assert_eq!(
        schema["params"].as_array().unwrap().len(),
        lightpeft_api::PARAMS.len(),
        "the schema is the one parameter table"
    );

    let exp = server
        .tiny_experiment(
            json!({"estimation_steps": 40, "max_train_examples": 320, "batch_size": 16}),
        )
        .await;
    // Subscribe before starting, so no step is missed.
    let (status, job) = server
        .post(&format!("/experiments/{exp}/estimation"), json!({}))
        .await;
    assert_eq!(status, 202, "{job}");
    let est = job["id"].as_i64().unwrap();
    let events = read_events(&server, &format!("/jobs/{est}/events"), 3).await;
    let steps: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "step")
        .map(|e| e["step"].as_i64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[1] > w[0]), "{steps:?}");
    assert!(
        events
            .iter()
            .all(|e| e["job_id"] == est || e["job"]["id"] == est)
    );

    // Heatmap cells exist while the job runs (once the writer has committed a step).
    let heat = loop {
        let (status, heat) = server.get(&format!("/jobs/{est}/heatmap?kind=head")).await;
        if status == 200 {
            break heat;
        }
        assert_eq!(status, 404, "{heat}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        heat["values"].as_array().unwrap().len(),
        2,
        "tiny model: 2 layers"
    );
    assert_eq!(heat["values"][0].as_array().unwrap().len(), 4, "4 heads");

    let done = server.wait_job(est, LONG).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let scalars = server
        .ok(&format!("/jobs/{est}/scalars?max_points=10"))
        .await;
    assert_eq!(scalars["total"], 40);
    assert_eq!(scalars["steps"].as_array().unwrap().len(), 10);
    assert_eq!(scalars["steps"].as_array().unwrap().last().unwrap(), 39);
    // Masks moved away from their initial 1.0 under L1 and gradients.
    let last = server
        .ok(&format!("/jobs/{est}/heatmap?kind=neuron&bins=0"))
        .await;
    assert_eq!(last["step"], 39);
    assert_eq!(last["values"][0].as_array().unwrap().len(), 64);
    assert!(last["min"].as_f64().unwrap() < 1.0);
    let first = server
        .ok(&format!("/jobs/{est}/heatmap?kind=neuron&step=0&bins=8"))
        .await;
    assert_eq!(first["step"], 0);
    assert_eq!(first["column_width"], json!([8, 8, 8, 8, 8, 8, 8, 8]));
    let imp = server.ok(&format!("/jobs/{est}/importance")).await;
    assert_eq!(
        imp["modules"].as_array().unwrap().len(),
        12,
        "6 targets × 2 layers"
    );
    assert!(
        imp["module_importance"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64().unwrap() > 0.0)
    );
    assert_eq!(imp["rank_importance"][0].as_array().unwrap().len(), 8);
    let conv = server.ok(&format!("/jobs/{est}/convergence")).await;
    assert_eq!(conv["steps"].as_array().unwrap().len(), 39);
    // The second answer comes from the server's cache of pruned sets, and must not differ.
    let again = server.ok(&format!("/jobs/{est}/convergence")).await;
    assert_eq!(again, conv);
    let other = server
        .ok(&format!(
            "/jobs/{est}/convergence?head_ratio=0.5&ffn_ratio=0.1"
        ))
        .await;
    assert_eq!(other["steps"], conv["steps"]);
    assert_eq!(other["head_ratio"], 0.5);
    let summary = server
        .ok(&format!("/jobs/{est}/mask-summary?kind=head&max_points=5"))
        .await;
    assert_eq!(summary.as_array().unwrap().len(), 5 * 2);

    // Preview: a larger ratio removes more; nothing is stored.
    let (s1, p1) = server
        .post(&format!("/jobs/{est}/preview"), json!({"head_ratio": 0.25}))
        .await;
    let (s2, p2) = server
        .post(
            &format!("/jobs/{est}/preview"),
            json!({"head_ratio": 0.5, "ffn_ratio": 0.5}),
        )
        .await;
    assert_eq!((s1, s2), (200, 200), "{p1} {p2}");
    let removed = |p: &Value| -> i64 {
        p["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["removed_heads"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(removed(&p1), 2);
    assert_eq!(removed(&p2), 4);
    assert!(p2["parameters_after"]["total"].as_i64() < p1["parameters_after"]["total"].as_i64());
    assert!(p2["estimated_step_time_ratio"].as_f64() < p1["estimated_step_time_ratio"].as_f64());
    assert!(
        server
            .ok(&format!("/jobs/{est}/plans"))
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Commit → stage 2; baseline; compare.
    let (status, committed) = server
        .post(
            &format!("/jobs/{est}/plans"),
            json!({"head_ratio": 0.5, "ffn_ratio": 0.5}),
        )
        .await;
    assert_eq!(status, 201, "{committed}");
    assert_eq!(
        committed["plan"]["preview"]["layers"], p2["layers"],
        "commit plans what preview showed"
    );
    let ft = committed["job"]["id"].as_i64().unwrap();
    let (status, base) = server
        .post(&format!("/experiments/{exp}/baseline"), json!({}))
        .await;
    assert_eq!(status, 202);
    let base = base["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(ft, LONG).await["status"], "succeeded");
    assert_eq!(server.wait_job(base, LONG).await["status"], "succeeded");
    let cmp = server.ok(&format!("/experiments/{exp}/compare")).await;
    assert_eq!(cmp["baseline"]["job_id"], base);
    let run = &cmp["runs"][0];
    assert_eq!(run["result"]["job_id"], ft);
    assert_eq!(
        run["random"], false,
        "a plan without a seed is Light-PEFT, not random pruning"
    );
    assert!(run["encoder_params_ratio"].as_f64().unwrap() < 0.8, "{run}");
    assert!(run["train_speedup"].as_f64().unwrap() > 0.0);
    assert!(run["result"]["best_score"].as_f64().unwrap() > 0.0);

    // An evaluation job scores the pruned model again: same predictions, same score.
    let (status, ev) = server
        .post(&format!("/jobs/{ft}/evaluate"), json!({}))
        .await;
    assert_eq!(status, 202, "{ev}");
    let ev = ev["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(ev, LONG).await["status"], "succeeded");
    let scored = server.ok(&format!("/jobs/{ev}/result")).await;
    let last_eval = server.ok(&format!("/jobs/{ft}/evals")).await;
    let last_eval = last_eval.as_array().unwrap().last().unwrap().clone();
    assert_eq!(scored["best_metrics"], last_eval["metrics"], "{scored}");
    assert_eq!(
        server
            .post(&format!("/jobs/{est}/evaluate"), json!({}))
            .await
            .0,
        409
    );

    // Downloads: the pruned model and the arrays.
    let artifacts = server.ok(&format!("/jobs/{ft}/artifacts")).await;
    let names: Vec<&str> = artifacts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"model/model.safetensors"), "{names:?}");
    let bytes = server
        .client
        .get(server.url(&format!("/jobs/{ft}/artifacts/model/config.json")))
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.status(), 200);
    let config: Value = bytes.json().await.unwrap();
    assert_eq!(config["num_hidden_layers"], 2);
    let csv = server
        .client
        .get(server.url(&format!("/jobs/{est}/arrays?kind=head")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("step,row,column,value\n0,0,0,"));
    let openapi = server.ok("/openapi.json").await;
    assert!(openapi["paths"]["/api/v1/jobs/{id}/preview"]["post"].is_object());
    assert!(openapi["components"]["schemas"]["PlanPreview"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_minilm_estimation_gives_layers_by_heads_and_a_plan_of_its_shape() {
    let dir = data_dir(true);
    let server = Server::start(dir.path(), &[], None);
    let (status, exp) = server
        .post(
            "/experiments",
            json!({"task": "sst2-rt", "model": "all-MiniLM-L6-v2", "preset": "quick_demo",
                   "params": {"estimation_steps": 3, "max_train_examples": 48, "max_dev_examples": 16,
                              "batch_size": 8, "max_len": 24, "lr": 0.01}}),
        )
        .await;
    assert_eq!(status, 201, "{exp}");
    let (_, job) = server
        .post(&format!("/experiments/{}/estimation", exp["id"]), json!({}))
        .await;
    let id = job["id"].as_i64().unwrap();
    assert_eq!(server.wait_job(id, LONG).await["status"], "succeeded");
    let heads = server.ok(&format!("/jobs/{id}/heatmap?kind=head")).await;
    let rows = heads["values"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r.as_array().unwrap().len() == 12));
    assert!((heads["min"].as_f64().unwrap() - heads["max"].as_f64().unwrap()).abs() > 0.0);
    let neurons = server
        .ok(&format!("/jobs/{id}/heatmap?kind=neuron&bins=0"))
        .await;
    assert_eq!(neurons["values"][5].as_array().unwrap().len(), 1536);
    let (status, preview) = server.post(&format!("/jobs/{id}/preview"), json!({})).await;
    assert_eq!(status, 200, "{preview}");
    // The reference's 1/3 head ratio, layer-wise: 4 of 12 heads per layer.
    for layer in preview["layers"].as_array().unwrap() {
        assert_eq!(layer["removed_heads"], 4, "{layer}");
    }
    assert_eq!(preview["parameters_before"]["encoder_layers"], 10_646_784);
    assert!(preview["compute_ms"].as_f64().unwrap() < 1000.0);
}

/// The bad-input table runs in-process (tests/http.rs); what only a socket shows stays here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_socket_an_oversized_body_gets_its_413_and_an_untyped_one_its_415() {
    let dir = data_dir(false);
    let server = Server::start(dir.path(), &[], None);
    let db = dir.path().join("lightpeft.sqlite");
    let counts_before = row_counts(&db).await;
    // Three times the 64 KiB limit: more than the loopback socket buffers hold, so the client is
    // still writing when the server decides; the server drains it and answers 413, not a reset.
    let huge = "x".repeat(200 * 1024);
    let r = server
        .client
        .post(server.url("/experiments"))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"task\":\"sst2-rt\",\"model\":\"tiny-bert\",\"name\":\"{huge}\"}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "payload_too_large");
    // A missing content type is a 415 in the same shape.
    let base = json!({"task": "sst2-rt", "model": "tiny-bert"});
    let r = server
        .client
        .post(server.url("/experiments"))
        .body(base.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let json: Value = r.json().await.unwrap();
    assert_eq!(json["error"]["code"], "unsupported_media_type");
    assert_eq!(
        row_counts(&db).await,
        counts_before,
        "rejected requests store nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_configured_and_compared_exactly() {
    let dir = data_dir(false);
    let secret = "a-test-secret-of-some-length";
    let server = Server::start(dir.path(), &[], Some(secret));
    let anonymous = server
        .client
        .get(server.url("/experiments"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = server
        .client
        .get(server.url("/experiments"))
        .bearer_auth("a-test-secret-of-some-lengtH")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(server.get("/experiments").await.0, 200);
    let via_query = server
        .client
        .get(server.url(&format!("/health?access_token={secret}")))
        .send()
        .await
        .unwrap();
    assert_eq!(via_query.status().as_u16(), 200);
    // No token on a public address: the server refuses to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lightpeft"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("LIGHTPEFT_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"));
}
