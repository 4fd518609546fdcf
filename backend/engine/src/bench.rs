//! Measurements on a real checkpoint, shared by the `step_bench` example (the CPU speed table
//! against PyTorch) and `lightpeft device-check` (a GPU machine's parity and step times):
//! seconds per LoRA training step or inference pass under a fixed pruning plan, and the
//! agreement of logits and gradients between the fused CPU path and another device.
//!
//! Plans are defined by pruning ratios and counted with the planner's quantile rule, so the
//! same plan names the same shapes here, in `bench/torch_reference.py` and on any model size.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::Optimizer;
use rand::{Rng, SeedableRng};

use crate::config::ModelConfig;
use crate::error::{Result, invalid};
use crate::model::{Model, ModelOptions, PeftMethod, REFERENCE_TARGETS, cross_entropy};
use crate::peft::PeftModule;
use crate::tokenize::Batch;
use crate::{Training, with_composed_ops};

/// The reference script's "⅓" (spec §5.1): just under a third, so 16 heads lose 5, not 6.
const THIRD: f64 = 0.333333333;

/// A fixed pruning plan: heads and FFN neurons removed per layer, then LoRA modules and ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPlan {
    /// Nothing removed: LoRA r=8 on every target module.
    Full,
    /// A third of the heads and neurons removed; LoRA r=8 everywhere.
    Third,
    /// The paper's ratios (heads ⅓, FFN ⅓, modules ¾, ranks ½): r=4 on a quarter of the modules.
    Paper,
    /// Half of the heads and neurons removed; r=4 on a quarter of the modules.
    Half,
}

impl StepPlan {
    /// Every plan, in table order.
    pub const ALL: [StepPlan; 4] = [
        StepPlan::Full,
        StepPlan::Third,
        StepPlan::Paper,
        StepPlan::Half,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StepPlan::Full => "full",
            StepPlan::Third => "third",
            StepPlan::Paper => "paper",
            StepPlan::Half => "half",
        }
    }

    /// (head and neuron pruning ratio, LoRA rank kept, every how many modules keep LoRA).
    fn ratios(self) -> (f64, usize, usize) {
        match self {
            StepPlan::Full => (0.0, 8, 1),
            StepPlan::Third => (THIRD, 8, 1),
            StepPlan::Paper => (THIRD, 4, 4),
            StepPlan::Half => (0.5, 4, 4),
        }
    }

    /// Units kept of `n` at the plan's ratio: the planner's rule on distinct scores removes
    /// `floor((n − 1)·ratio) + 1` (e.g. 5 of 16 heads at ⅓, 4 of 12).
    pub fn kept(self, n: usize) -> Result<usize> {
        let (ratio, _, _) = self.ratios();
        if ratio == 0.0 || n == 0 {
            return Ok(n);
        }
        let scores: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let tau = lightpeft_plan::numpy_quantile(&scores, ratio)?;
        Ok(scores.iter().filter(|&&s| s > tau).count())
    }

    /// Removes heads and neurons physically (the first ones are kept: which ones does not
    /// change the cost), then LoRA modules (module number `layer·6 + kind` divisible by the
    /// plan's stride, kinds in `ModuleKind::ALL` order) and ranks.
    pub fn apply(self, model: &mut Model) -> Result<()> {
        let (_, rank, every) = self.ratios();
        let encoder = &mut model.encoder;
        for l in 0..encoder.layers.len() {
            let shape = encoder.config.layers[l];
            let heads: Vec<usize> = (0..self.kept(shape.heads)?).collect();
            let neurons: Vec<usize> = (0..self.kept(shape.ffn)?).collect();
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

impl FromStr for StepPlan {
    type Err = crate::Error;

    fn from_str(name: &str) -> Result<Self> {
        StepPlan::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                invalid(
                    "plan",
                    format!("`{name}`: expected full, third, paper or half"),
                )
            })
    }
}

impl fmt::Display for StepPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which linears carry LoRA before the plan removes any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraTargets {
    /// Query and value only (the usual vanilla LoRA).
    QueryValue,
    /// All six linears of every layer (the reference's targets).
    All,
}

impl LoraTargets {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LoraTargets::QueryValue => "qv",
            LoraTargets::All => "all",
        }
    }

    fn targets(self) -> &'static [&'static str] {
        match self {
            LoraTargets::QueryValue => &["query", "value"],
            LoraTargets::All => &REFERENCE_TARGETS,
        }
    }
}

impl FromStr for LoraTargets {
    type Err = crate::Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "qv" => Ok(LoraTargets::QueryValue),
            "all" => Ok(LoraTargets::All),
            other => Err(invalid("targets", format!("`{other}`: expected qv or all"))),
        }
    }
}

/// One timing: which steps, on what.
#[derive(Debug, Clone, Copy)]
pub struct StepProbe {
    /// Examples per batch.
    pub batch: usize,
    /// Tokens per example (every example is this long).
    pub len: usize,
    /// Timed steps (one more, untimed, warms up first).
    pub steps: usize,
    /// The pruning plan.
    pub plan: StepPlan,
    /// LoRA's targets before the plan.
    pub targets: LoraTargets,
    /// Head and neuron masks on (an estimation step) or off.
    pub masks: bool,
    /// Inference passes instead of training steps.
    pub infer: bool,
}

/// What a timing measured.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// Trainable parameters after the plan.
    pub trainable: usize,
    /// Seconds of each timed step, in order.
    pub seconds: Vec<f64>,
    /// Loss of each step, the warm-up first.
    pub losses: Vec<f32>,
}

impl StepTiming {
    /// Timed steps, fastest first.
    fn sorted(&self) -> Vec<f64> {
        let mut times = self.seconds.clone();
        times.sort_by(f64::total_cmp);
        times
    }

    /// The median step.
    pub fn median(&self) -> f64 {
        let times = self.sorted();
        times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
    }

    /// The fastest step.
    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    /// The slowest step.
    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

fn lora_options(targets: LoraTargets, masks: bool) -> ModelOptions {
    ModelOptions {
        num_labels: 2,
        head_masks: masks,
        neuron_masks: masks,
        peft: PeftMethod::lora(8, 16.0, 0.05, targets.targets()),
        seed: 42,
    }
}

/// `batch` examples of `len` random word ids (a CLS-like first and SEP-like last id) and
/// alternating labels, drawn from `seed`, so two devices and two libraries see one batch.
pub fn synthetic_batch(
    config: &ModelConfig,
    batch: usize,
    len: usize,
    seed: u64,
    device: &Device,
) -> Result<(Batch, Tensor)> {
    if batch == 0 || len < 2 {
        return Err(invalid("batch", "needs at least one example of two tokens"));
    }
    let ids = synthetic_ids(config, batch, len, seed);
    let input_ids = Tensor::from_vec(ids, (batch, len), device)?;
    let batch_tensors = Batch {
        type_ids: input_ids.zeros_like()?,
        attention_mask: input_ids.ones_like()?,
        input_ids,
    };
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
    Ok((batch_tensors, Tensor::new(labels, device)?))
}

/// `batch × len` random word ids, each example a CLS-like first and SEP-like last id.
fn synthetic_ids(config: &ModelConfig, batch: usize, len: usize, seed: u64) -> Vec<u32> {
    let vocab = config.vocab_size as u32;
    let words = (vocab / 10).max(1)..vocab.max(2) - 1;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..batch * len)
        .map(|i| match i % len {
            0 => 0,
            j if j == len - 1 => vocab.saturating_sub(1),
            _ => rng.random_range(words.clone()),
        })
        .collect()
}

/// A trainer step to time: what `lightpeft estimate` or `lightpeft baseline` runs per batch.
#[derive(Debug, Clone, Copy)]
pub struct TrainerProbe {
    /// Examples per batch.
    pub batch: usize,
    /// Tokens per example.
    pub len: usize,
    /// Timed steps (one more, untimed, warms up first).
    pub steps: usize,
    /// An estimation step (masks, their L1 penalty, the module and rank importances and the
    /// mask read-out) instead of a plain LoRA step on every target.
    pub estimation: bool,
    /// Write every step's record as JSON text, as the CLI's record file does.
    pub record: bool,
}

/// Writes each step's record as a JSON line, as the CLI does, to nowhere.
struct JsonRecords(std::io::Sink);

impl crate::train::Observer for JsonRecords {
    fn on_step(&mut self, record: &crate::train::StepRecord) {
        use std::io::Write as _;
        let line = serde_json::to_string(record).expect("records serialise");
        let _ = writeln!(self.0, "{line}");
    }
    fn on_eval(&mut self, _: &crate::train::EvalRecord) {}
}

/// Times the trainer's own steps (`probe.steps` after one warm-up) with AdamW on random
/// batches of the checkpoint in `model_dir`: one epoch over distinct batches, so no
/// evaluation falls between steps. The seconds are the trainer's, which include the
/// importances and the record hand-off.
pub fn time_trainer_steps(
    model_dir: &Path,
    probe: &TrainerProbe,
    device: &Device,
) -> Result<StepTiming> {
    use crate::data::Metric;
    use crate::train::{EstimationExtras, Length, Stage, TokenizedSplit, TrainConfig, TrainRun};
    let model = Model::load(
        model_dir,
        &lora_options(LoraTargets::All, probe.estimation),
        device,
    )?;
    let trainable = model.trainable().iter().map(|v| v.var.elem_count()).sum();
    let steps = probe.steps + 1;
    let split = |examples: usize, seed: u64| {
        let ids = synthetic_ids(&model.encoder.config, examples, probe.len, seed);
        TokenizedSplit {
            encoded: ids
                .chunks(probe.len)
                .map(|ids| crate::Encoded {
                    ids: ids.to_vec(),
                    type_ids: vec![0; ids.len()],
                })
                .collect(),
            labels: (0..examples as u32).map(|i| i % 2).collect(),
            values: Vec::new(),
            objective: crate::data::Objective::Classification,
            choices: 1,
            groups: Vec::new(),
            credits: Vec::new(),
        }
    };
    let train = split(steps * probe.batch, 0);
    let dev = split(1, 1);
    let config = TrainConfig {
        length: Length::Steps(steps),
        batch_size: probe.batch,
        eval_batch_size: 1,
        lr: 3e-4,
        weight_decay: 0.0,
        warmup_ratio: 0.0,
        max_grad_norm: 1.0,
        seed: 42,
        group_by_length: false,
        estimation: probe.estimation.then_some(EstimationExtras {
            l1_coef: 1e-4,
            head_mask_lr_coef: 1.0,
            neuron_mask_lr_coef: 1.0,
        }),
    };
    let run = TrainRun {
        model: &model,
        train: &train,
        dev: &dev,
        config: &config,
        stage: if probe.estimation {
            Stage::Estimation
        } else {
            Stage::Baseline
        },
        metric: Metric::Accuracy,
    };
    let outcome = if probe.record {
        run.observer(&mut JsonRecords(std::io::sink())).run()?
    } else {
        run.run()?
    };
    Ok(StepTiming {
        trainable,
        seconds: outcome.step_seconds.iter().skip(1).copied().collect(),
        losses: Vec::new(),
    })
}

/// The best rate of `rounds` products of two `n × n` f32 matrices on `device`, in GFLOP/s
/// (2n³ each): the practical peak the step rows are compared with.
pub fn matmul_peak_gflops(n: usize, rounds: usize, device: &Device) -> Result<f64> {
    let a = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), device)?;
    let mut best = f64::INFINITY;
    for _ in 0..=rounds {
        let start = Instant::now();
        let c = a.matmul(&b)?;
        device.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64());
        drop(c);
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

/// Times `probe.steps` steps (after one warm-up) of LoRA with AdamW, or of inference, on the
/// checkpoint in `model_dir`; `on_step(step, seconds, loss)` hears each one, the warm-up as 0.
pub fn time_steps(
    model_dir: &Path,
    probe: &StepProbe,
    device: &Device,
    mut on_step: impl FnMut(usize, f64, f32),
) -> Result<StepTiming> {
    let mut model = Model::load(model_dir, &lora_options(probe.targets, probe.masks), device)?;
    probe.plan.apply(&mut model)?;
    let vars: Vec<_> = model.trainable().into_iter().map(|v| v.var).collect();
    let trainable = vars.iter().map(|v| v.elem_count()).sum();
    let mut opt = candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 3e-4,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let (batch, labels) =
        synthetic_batch(&model.encoder.config, probe.batch, probe.len, 0, device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut timing = StepTiming {
        trainable,
        seconds: Vec::with_capacity(probe.steps),
        losses: Vec::with_capacity(probe.steps + 1),
    };
    for step in 0..=probe.steps {
        let start = Instant::now();
        let loss = if probe.infer {
            let logits = model.forward(&batch, None, false)?.logits;
            cross_entropy(&logits, &labels)?
        } else {
            let out = model.forward(&batch, Some(Training { rng: &mut rng }), probe.masks)?;
            let loss = cross_entropy(&out.logits, &labels)?;
            opt.step(&loss.backward()?)?;
            loss
        };
        // A GPU queues its kernels: the step ends when the device has run them.
        device.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        let loss = loss.to_scalar::<f32>()?;
        if step > 0 {
            timing.seconds.push(secs);
        }
        timing.losses.push(loss);
        on_step(step, secs, loss);
    }
    Ok(timing)
}

/// How one device's training step agrees with the fused CPU path's.
#[derive(Debug, Clone)]
pub struct Parity {
    /// The checked step's loss on the CPU and on the other device.
    pub loss: (f32, f32),
    /// Largest |difference| between the two devices' logits.
    pub logits_max_abs: f64,
    /// Largest |difference| between the module importance ratios (§4.1) of the two.
    pub ratios_max_abs: f64,
    /// Every trainable variable's gradient: (name, ‖g_cpu − g_dev‖ / ‖g_cpu‖, ‖g_cpu‖).
    pub gradients: Vec<(String, f64, f64)>,
}

impl Parity {
    /// The largest relative gradient error, with its variable.
    pub fn worst_gradient(&self) -> Option<&(String, f64, f64)> {
        self.gradients.iter().max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// One device's record of a checked step.
struct StepRecord {
    loss: f32,
    logits: Vec<f32>,
    ratios: Vec<f32>,
    gradients: Vec<(String, Vec<f32>)>,
}

/// Two estimation steps (masks on, LoRA on every target, dropout from one seed) on the CPU's
/// fused kernels and on `device`; the second step (after an AdamW update, so LoRA's B is no
/// longer zero and every gradient is live) is compared. On the CPU, `device` runs the composed
/// ops a GPU runs instead of the fused kernels.
pub fn parity(model_dir: &Path, batch: usize, len: usize, device: &Device) -> Result<Parity> {
    let reference = checked_step(model_dir, batch, len, &Device::Cpu)?;
    let other = if device.is_cpu() {
        with_composed_ops(|| checked_step(model_dir, batch, len, device))?
    } else {
        checked_step(model_dir, batch, len, device)?
    };
    let mut gradients = Vec::with_capacity(reference.gradients.len());
    for ((name, want), (other_name, got)) in reference.gradients.iter().zip(&other.gradients) {
        if name != other_name || want.len() != got.len() {
            return Err(invalid(
                "parity",
                format!("{name} and {other_name} differ in shape"),
            ));
        }
        let norm = want
            .iter()
            .map(|&w| f64::from(w).powi(2))
            .sum::<f64>()
            .sqrt();
        let diff = want
            .iter()
            .zip(got)
            .map(|(&w, &g)| f64::from(w - g).powi(2))
            .sum::<f64>()
            .sqrt();
        let relative = if norm > 0.0 { diff / norm } else { diff };
        gradients.push((name.clone(), relative, norm));
    }
    Ok(Parity {
        loss: (reference.loss, other.loss),
        logits_max_abs: max_abs_diff(&reference.logits, &other.logits),
        ratios_max_abs: max_abs_diff(&reference.ratios, &other.ratios),
        gradients,
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

fn checked_step(model_dir: &Path, batch: usize, len: usize, device: &Device) -> Result<StepRecord> {
    let model = Model::load(model_dir, &lora_options(LoraTargets::All, true), device)?;
    let named = model.trainable();
    let mut opt = candle_nn::AdamW::new(
        named.iter().map(|v| v.var.clone()).collect(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let (inputs, labels) = synthetic_batch(&model.encoder.config, batch, len, 1, device)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let out = model.forward(&inputs, Some(Training { rng: &mut rng }), true)?;
    opt.step(&cross_entropy(&out.logits, &labels)?.backward()?)?;
    let out = model.forward(&inputs, Some(Training { rng: &mut rng }), true)?;
    let loss = cross_entropy(&out.logits, &labels)?;
    let grads = loss.backward()?;
    let host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let mut ratios = Vec::new();
    for (_, ratio) in &out.ratios {
        ratios.extend(host(ratio)?);
    }
    let mut gradients = Vec::with_capacity(named.len());
    for var in &named {
        let grad = match grads.get(var.var.as_tensor()) {
            Some(g) => host(g)?,
            None => vec![0.0; var.var.elem_count()],
        };
        gradients.push((var.name.clone(), grad));
    }
    Ok(StepRecord {
        loss: loss.to_scalar::<f32>()?,
        logits: host(&out.logits)?,
        ratios,
        gradients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_what_the_planner_rule_counts() {
        // MiniLM's 12 heads and 1,536 neurons: the CPU table's shapes since session 6.
        assert_eq!(StepPlan::Third.kept(12).unwrap(), 8);
        assert_eq!(StepPlan::Third.kept(1536).unwrap(), 1024);
        assert_eq!(StepPlan::Half.kept(12).unwrap(), 6);
        assert_eq!(StepPlan::Half.kept(1536).unwrap(), 768);
        // RoBERTa-large: ⅓ of 16 heads removes 5 (spec §5.1), keeping 11.
        assert_eq!(StepPlan::Paper.kept(16).unwrap(), 11);
        assert_eq!(StepPlan::Full.kept(16).unwrap(), 16);
        for plan in StepPlan::ALL {
            assert_eq!(plan.to_string().parse::<StepPlan>().unwrap(), plan);
        }
        assert!("quarter".parse::<StepPlan>().is_err());
    }

    #[test]
    fn the_composed_path_matches_the_fused_kernels_on_a_whole_model() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::tiny::TinySpec::demo(crate::Architecture::Bert);
        crate::tiny::write_tiny_model(dir.path(), &spec, 3).unwrap();
        let parity = parity(dir.path(), 3, 9, &Device::Cpu).unwrap();
        assert!(parity.logits_max_abs <= 1e-5, "{parity:?}");
        assert!(parity.ratios_max_abs <= 1e-4, "{parity:?}");
        assert!((parity.loss.0 - parity.loss.1).abs() <= 1e-5, "{parity:?}");
        // Masks, LoRA A and B of every module, the classifier: all live and all agreeing.
        assert!(parity.gradients.len() > 20, "{parity:?}");
        for (name, relative, norm) in &parity.gradients {
            assert!(*norm > 0.0, "{name} has no gradient");
            assert!(*relative <= 1e-4, "{name}: {relative}");
        }
        // Rounding differs somewhere, or the switch left the fused kernels on.
        assert!(parity.worst_gradient().unwrap().1 > 0.0, "{parity:?}");
    }

    #[test]
    fn a_timing_runs_the_plan_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let spec = crate::tiny::TinySpec {
            heads: 4,
            ffn: 64,
            ..crate::tiny::TinySpec::demo(crate::Architecture::Roberta)
        };
        crate::tiny::write_tiny_model(dir.path(), &spec, 3).unwrap();
        let probe = |plan, targets, infer| StepProbe {
            batch: 2,
            len: 8,
            steps: 2,
            plan,
            targets,
            masks: false,
            infer,
        };
        let full = time_steps(
            dir.path(),
            &probe(StepPlan::Full, LoraTargets::All, false),
            &Device::Cpu,
            |_, _, _| {},
        )
        .unwrap();
        let qv = time_steps(
            dir.path(),
            &probe(StepPlan::Full, LoraTargets::QueryValue, false),
            &Device::Cpu,
            |_, _, _| {},
        )
        .unwrap();
        let half = time_steps(
            dir.path(),
            &probe(StepPlan::Half, LoraTargets::All, true),
            &Device::Cpu,
            |_, _, _| {},
        )
        .unwrap();
        assert_eq!(full.seconds.len(), 2);
        assert_eq!(full.losses.len(), 3);
        assert!(full.median() > 0.0 && full.min() <= full.max());
        // Two layers × six linears at r=8, against two × two.
        assert!(
            qv.trainable < full.trainable,
            "{} {}",
            qv.trainable,
            full.trainable
        );
        assert!(half.trainable < full.trainable);
        assert!(full.losses.iter().all(|l| l.is_finite()));
    }
}
