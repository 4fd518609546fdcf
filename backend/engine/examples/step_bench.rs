//! Median seconds per LoRA training step (forward + backward + AdamW), or per inference
//! forward pass, on a real checkpoint.
//!
//! cargo run --release -p lightpeft-engine --example step_bench -- [--batch 16] [--len 64]
//!     [--steps 10] [--model DIR] [--masks] [--plan full|third|half] [--mode train|infer] [--json]
//! Threads: set RAYON_NUM_THREADS (the README's numbers use 2).
//!
//! Plans, defined exactly as in `bench/torch_reference.py` (the PyTorch side of `bench/speed.py`):
//! - `full`: every head and neuron, LoRA r=8 on all six linears of every layer;
//! - `third`: the first ⅔ of the heads and neurons of each layer kept, LoRA r=8 everywhere;
//! - `half`: the first ½ kept, LoRA r=4 on a quarter of the modules (module number
//!   `layer·6 + kind` divisible by 4, kinds in `ModuleKind::ALL` order).

use std::time::Instant;

// As in the lightpeft binary: candle's per-op buffers make glibc's malloc page-fault heavily.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use lightpeft_engine::peft::PeftModule;
use lightpeft_engine::{
    Batch, Model, ModelOptions, PeftMethod, REFERENCE_TARGETS, Training, cross_entropy,
};
use rand::{Rng, SeedableRng};

struct Args {
    batch: usize,
    len: usize,
    steps: usize,
    model: std::path::PathBuf,
    masks: bool,
    plan: Plan,
    infer: bool,
    json: bool,
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    Full,
    Third,
    Half,
}

impl Plan {
    fn parse(name: &str) -> Plan {
        match name {
            "full" => Plan::Full,
            "third" => Plan::Third,
            "half" => Plan::Half,
            other => panic!("--plan: full, third or half, not {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Plan::Full => "full",
            Plan::Third => "third",
            Plan::Half => "half",
        }
    }

    /// Removes heads and neurons physically, then LoRA modules and ranks.
    fn apply(self, model: &mut Model) -> lightpeft_engine::Result<()> {
        let (keep, rank, every) = match self {
            Plan::Full => return Ok(()),
            Plan::Third => ((2, 3), 8, 1),
            Plan::Half => ((1, 2), 4, 4),
        };
        let encoder = &mut model.encoder;
        for l in 0..encoder.layers.len() {
            let shape = encoder.config.layers[l];
            let heads: Vec<usize> = (0..shape.heads * keep.0 / keep.1).collect();
            let neurons: Vec<usize> = (0..shape.ffn * keep.0 / keep.1).collect();
            encoder.keep_heads(l, &heads)?;
            encoder.keep_neurons(l, &neurons)?;
        }
        for (index, id) in encoder.module_ids().into_iter().enumerate() {
            let module = encoder.module_mut(id);
            module.peft = match (&module.peft, index % every) {
                (Some(PeftModule::Lora(lora)), 0) => lora
                    .keep_ranks(&(0..rank).collect::<Vec<_>>())?
                    .map(PeftModule::Lora),
                _ => None,
            };
        }
        Ok(())
    }
}

/// The process's peak resident set, from /proc (Linux); 0 elsewhere.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn parse_args() -> Args {
    let mut args = Args {
        batch: 16,
        len: 64,
        steps: 10,
        model: lightpeft_assets::bundled_model_dir(&lightpeft_assets::default_data_dir()),
        masks: false,
        plan: Plan::Full,
        infer: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--batch" => args.batch = value().parse().expect("--batch: a number"),
            "--len" => args.len = value().parse().expect("--len: a number"),
            "--steps" => args.steps = value().parse().expect("--steps: a number"),
            "--model" => args.model = value().into(),
            "--masks" => args.masks = true,
            "--plan" => args.plan = Plan::parse(&value()),
            "--mode" => {
                args.infer = match value().as_str() {
                    "train" => false,
                    "infer" => true,
                    other => panic!("--mode: train or infer, not {other}"),
                }
            }
            "--json" => args.json = true,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() -> lightpeft_engine::Result<()> {
    let args = parse_args();
    let device = Device::Cpu;
    let options = ModelOptions {
        num_labels: 2,
        head_masks: args.masks,
        neuron_masks: args.masks,
        peft: PeftMethod::lora(8, 16.0, 0.05, &REFERENCE_TARGETS),
        seed: 42,
    };
    let mut model = Model::load(&args.model, &options, &device)?;
    args.plan.apply(&mut model)?;
    let vars: Vec<_> = model.trainable().into_iter().map(|v| v.var).collect();
    let trainable: usize = vars.iter().map(|v| v.elem_count()).sum();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 3e-4,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let ids: Vec<u32> = (0..args.batch * args.len)
        .map(|i| match i % args.len {
            0 => 101,
            j if j == args.len - 1 => 102,
            _ => rng.random_range(1000..30000),
        })
        .collect();
    let input_ids = Tensor::from_vec(ids, (args.batch, args.len), &device)?;
    let batch = Batch {
        type_ids: input_ids.zeros_like()?,
        attention_mask: input_ids.ones_like()?,
        input_ids,
    };
    let labels: Vec<u32> = (0..args.batch as u32).map(|i| i % 2).collect();
    let labels = Tensor::new(labels, &device)?;
    let threads = candle_core::utils::get_num_threads();
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    say(format!(
        "model {} | plan {} | {} | batch {} x {} tokens | trainable {trainable} | threads {threads} | masks {}",
        args.model.display(),
        args.plan.name(),
        if args.infer { "inference" } else { "training" },
        args.batch,
        args.len,
        args.masks
    ));
    let mut times = Vec::new();
    // One warm-up step, not counted.
    for step in 0..=args.steps {
        let start = Instant::now();
        let loss = if args.infer {
            let logits = model.forward(&batch, None, false)?.logits;
            cross_entropy(&logits, &labels)?
        } else {
            let out = model.forward(&batch, Some(Training { rng: &mut rng }), false)?;
            let loss = cross_entropy(&out.logits, &labels)?;
            opt.step(&loss.backward()?)?;
            loss
        };
        let secs = start.elapsed().as_secs_f64();
        if step > 0 {
            times.push(secs);
        }
        say(format!(
            "step {step}: {secs:.3} s, loss {:.4}",
            loss.to_scalar::<f32>()?
        ));
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if args.json {
        let record = serde_json::json!({
            "impl": "lightpeft",
            "plan": args.plan.name(),
            "mode": if args.infer { "infer" } else { "train" },
            "batch": args.batch,
            "len": args.len,
            "threads": threads,
            "trainable": trainable,
            "median_s": median,
            "min_s": times[0],
            "peak_rss_mib": peak_rss_mib(),
        });
        println!("{record}");
    } else {
        println!(
            "median {median:.3} s/step over {} steps (min {:.3}, max {:.3}), peak RSS {:.0} MiB",
            times.len(),
            times[0],
            times[times.len() - 1],
            peak_rss_mib()
        );
    }
    Ok(())
}
