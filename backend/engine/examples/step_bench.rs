//! Median seconds per LoRA training step (forward + backward + AdamW) on a real checkpoint.
//!
//! cargo run --release -p lightpeft-engine --example step_bench -- [--batch 16] [--len 64]
//!     [--steps 10] [--model DIR] [--masks]
//! Threads: set RAYON_NUM_THREADS (the README's numbers use 2).

use std::time::Instant;

// As in the lightpeft binary: candle's per-op buffers make glibc's malloc page-fault heavily.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
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
}

fn parse_args() -> Args {
    let mut args = Args {
        batch: 16,
        len: 64,
        steps: 10,
        model: lightpeft_assets::bundled_model_dir(&lightpeft_assets::default_data_dir()),
        masks: false,
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
    let model = Model::load(&args.model, &options, &device)?;
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
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "model {} | batch {} x {} tokens | trainable {trainable} | threads {threads} | masks {}",
        args.model.display(),
        args.batch,
        args.len,
        args.masks
    );
    let mut times = Vec::new();
    // One warm-up step, not counted.
    for step in 0..=args.steps {
        let start = Instant::now();
        let out = model.forward(&batch, Some(Training { rng: &mut rng }), false)?;
        let loss = cross_entropy(&out.logits, &labels)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        let secs = start.elapsed().as_secs_f64();
        if step > 0 {
            times.push(secs);
        }
        println!(
            "step {step}: {secs:.3} s, loss {:.4}",
            loss.to_scalar::<f32>()?
        );
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "median {median:.3} s/step over {} steps (min {:.3}, max {:.3})",
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    Ok(())
}
