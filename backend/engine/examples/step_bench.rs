//! Median seconds per LoRA training step (forward + backward + AdamW), or per inference
//! forward pass, on a real checkpoint.
//!
//! cargo run --release -p lightpeft-engine --example step_bench -- [--batch 16] [--len 64]
//!     [--steps 10] [--model DIR] [--masks] [--plan full|third|paper|half] [--targets all|qv]
//!     [--mode train|infer|estimate|lora|peak] [--record] [--hold-freed-ms MS] [--json]
//! `estimate` and `lora` time the trainer's own steps (what `lightpeft estimate` and
//! `lightpeft baseline` run): an estimation step (masks, L1, importances) and a plain LoRA
//! step on every target, on the same batches; `--record` also writes each step's record as
//! JSON text, as the CLI does. `peak` is the best GFLOP/s of a 2048 × 2048 f32 product.
//! `--hold-freed-ms` is how long the allocator keeps freed memory (default: what the lightpeft
//! binary sets, `memory::TRAINING_HOLD`; 1000 is mimalloc's own default).
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
use lightpeft_engine::bench::{
    LoraTargets, StepPlan, StepProbe, StepTiming, TrainerProbe, matmul_peak_gflops, time_steps,
    time_trainer_steps,
};

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
    let mut mode = "train".to_string();
    let mut record = false;
    let mut hold = lightpeft_engine::memory::TRAINING_HOLD;
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
                mode = value();
                probe.infer = match mode.as_str() {
                    "train" | "estimate" | "lora" | "peak" => false,
                    "infer" => true,
                    other => panic!("--mode: train, infer, estimate, lora or peak, not {other}"),
                }
            }
            "--record" => record = true,
            "--hold-freed-ms" => {
                hold = std::time::Duration::from_millis(
                    value().parse().expect("--hold-freed-ms: milliseconds"),
                )
            }
            "--json" => json = true,
            other => panic!("unknown flag {other}"),
        }
    }
    lightpeft_engine::memory::hold_freed_memory(hold);
    let threads = candle_core::utils::get_num_threads();
    if mode == "peak" {
        let gflops = matmul_peak_gflops(2048, 5, &Device::Cpu)?;
        if json {
            println!(
                "{}",
                serde_json::json!({"impl": "lightpeft", "mode": "peak", "threads": threads, "gflops": gflops})
            );
        } else {
            println!(
                "2048 x 2048 f32 product, best of 5 on {threads} threads: {gflops:.1} GFLOP/s"
            );
        }
        return Ok(());
    }
    let mode = mode.as_str();
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
    let timing: StepTiming = if matches!(mode, "estimate" | "lora") {
        let trainer = TrainerProbe {
            batch: probe.batch,
            len: probe.len,
            steps: probe.steps,
            estimation: mode == "estimate",
            record,
        };
        time_trainer_steps(&model, &trainer, &Device::Cpu)?
    } else {
        time_steps(&model, &probe, &Device::Cpu, |step, secs, loss| {
            if !json {
                println!("step {step}: {secs:.3} s, loss {loss:.4}");
            }
        })?
    };
    let median = timing.median();
    if json {
        let record = serde_json::json!({
            "impl": "lightpeft",
            "plan": probe.plan.name(),
            "targets": probe.targets.name(),
            "mode": mode,
            "record": record,
            "hold_freed_ms": hold.as_millis() as u64,
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
