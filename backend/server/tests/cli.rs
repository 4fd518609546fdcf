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
