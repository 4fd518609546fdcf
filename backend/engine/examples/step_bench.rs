//! Median seconds per LoRA training step (forward + backward + AdamW), or per inference
//! forward pass, on a real checkpoint.
//!
//! cargo run --release -p lightpeft-engine --example step_bench -- [--batch 16] [--len 64]
//!     [--steps 10] [--model DIR] [--masks] [--plan full|third|paper|half] [--targets all|qv]
//!     [--mode train|infer] [--json]
//! Threads: set RAYON_NUM_THREADS (the README's numbers use 2).
//!
//! Plans (`lightpeft_engine::bench::StepPlan`, defined as in `bench/torch_reference.py`, the
//! PyTorch side of `bench/speed.py`): `full` keeps everything with LoRA r=8 on every target;
//! `third` removes a third of each layer's heads and neurons; `paper` and `half` remove a
//! third and a half, with r=4 on a quarter of the modules. On a GPU machine the same
//! measurement is `lightpeft device-check` (a binary from scripts/cuda-build.sh).

// As in the lightpeft binary: candle's per-op buffers make glibc's malloc page-fault heavily.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use lightpeft_engine::Device;
use lightpeft_engine::bench::{LoraTargets, StepPlan, StepProbe, time_steps};

/// The process's peak resident set, from /proc (Linux); 0 elsewhere.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() -> lightpeft_engine::Result<()> {
    let mut probe = StepProbe {
        batch: 16,
        len: 64,
        steps: 10,
        plan: StepPlan::Full,
        targets: LoraTargets::All,
        masks: false,
        infer: false,
    };
    let mut model = lightpeft_assets::bundled_model_dir(&lightpeft_assets::default_data_dir());
    let mut json = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--batch" => probe.batch = value().parse().expect("--batch: a number"),
            "--len" => probe.len = value().parse().expect("--len: a number"),
            "--steps" => probe.steps = value().parse().expect("--steps: a number"),
            "--model" => model = value().into(),
            "--masks" => probe.masks = true,
            "--plan" => probe.plan = value().parse()?,
            "--targets" => probe.targets = value().parse()?,
            "--mode" => {
                probe.infer = match value().as_str() {
                    "train" => false,
                    "infer" => true,
                    other => panic!("--mode: train or infer, not {other}"),
                }
            }
            "--json" => json = true,
            other => panic!("unknown flag {other}"),
        }
    }
    let threads = candle_core::utils::get_num_threads();
    let mode = if probe.infer { "infer" } else { "train" };
    if !json {
        println!(
            "model {} | plan {} | targets {} | {mode} | batch {} x {} tokens | threads {threads} | masks {}",
            model.display(),
            probe.plan,
            probe.targets.name(),
            probe.batch,
            probe.len,
            probe.masks
        );
    }
    let timing = time_steps(&model, &probe, &Device::Cpu, |step, secs, loss| {
        if !json {
            println!("step {step}: {secs:.3} s, loss {loss:.4}");
        }
    })?;
    let median = timing.median();
    if json {
        let record = serde_json::json!({
            "impl": "lightpeft",
            "plan": probe.plan.name(),
            "targets": probe.targets.name(),
            "mode": mode,
            "batch": probe.batch,
            "len": probe.len,
            "threads": threads,
            "trainable": timing.trainable,
            "median_s": median,
            "min_s": timing.min(),
            "peak_rss_mib": peak_rss_mib(),
        });
        println!("{record}");
    } else {
        println!(
            "median {median:.3} s/step over {} steps (min {:.3}, max {:.3}), trainable {}, peak RSS {:.0} MiB",
            timing.seconds.len(),
            timing.min(),
            timing.max(),
            timing.trainable,
            peak_rss_mib()
        );
    }
    Ok(())
}
