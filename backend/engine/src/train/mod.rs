//! Training: the shared loop behind stage 1 (estimation), stage 2 (fine-tuning the pruned
//! model) and the vanilla baseline, with its optimiser, importances and evaluation.

pub mod checkpoint;
mod importance;
pub mod observer;
pub mod optim;

use std::time::Instant;

use candle_core::{D, Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::data::{
    Credit, Example, Metric, Objective, batches, batches_by_length, score_grouped, score_ranked,
    score_values,
};
use crate::encoder::{ModuleId, Training};
use crate::error::{Result, TensorContext, invalid};
use crate::model::{Model, ParamKind, cross_entropy};
use crate::tokenize::{Batch, Encoded, TextEncoder};

pub use checkpoint::TrainState;
pub use observer::{CancelToken, Collect, Discard, EvalRecord, Observer, Stage, StepRecord};
pub use optim::{AdamW, LinearSchedule, ParamGroup, clip_grad_norm};

/// A tokenised split with its gold labels (or numbers).
pub struct TokenizedSplit {
    /// The token sequences: one per example, or for multiple choice one per (example, choice),
    /// an example's choices side by side (`example * choices + choice`).
    pub encoded: Vec<Encoded>,
    /// Gold label per example (the right choice for multiple choice; 0 for regression).
    pub labels: Vec<u32>,
    /// Gold number per example for regression; empty otherwise.
    pub values: Vec<f32>,
    /// What the model predicts, which decides the loss and the predictions.
    pub objective: Objective,
    /// Sequences per example: the number of choices for multiple choice, else 1.
    pub choices: usize,
    /// The question each example answers, where the metric scores questions (MultiRC's exact
    /// match, ReCoRD's queries); empty otherwise.
    pub groups: Vec<Option<u32>>,
    /// What each example earns when chosen as its query's answer (ReCoRD's candidates, ranked
    /// by their label-1 score); empty otherwise.
    pub credits: Vec<Credit>,
}

impl TokenizedSplit {
    /// Tokenises `(text_a, text_b, label)` triples of a classification task.
    pub fn new<'a>(
        encoder: &TextEncoder,
        examples: impl IntoIterator<Item = (&'a str, Option<&'a str>, usize)>,
    ) -> Result<Self> {
        let (texts, labels): (Vec<_>, Vec<_>) = examples
            .into_iter()
            .map(|(a, b, label)| ((a, b), label as u32))
            .unzip();
        Ok(TokenizedSplit {
            encoded: encoder.encode(&texts)?,
            labels,
            values: Vec::new(),
            objective: Objective::Classification,
            choices: 1,
            groups: Vec::new(),
            credits: Vec::new(),
        })
    }

    /// Tokenises examples of a task with `objective`: regression examples must carry a number,
    /// and multiple-choice examples the same number (at least 2) of choices, each paired with
    /// the example's first text. Groups are kept where any example has one.
    pub fn from_examples(
        encoder: &TextEncoder,
        examples: &[Example],
        objective: Objective,
    ) -> Result<Self> {
        let labels: Vec<u32> = examples.iter().map(|e| e.label as u32).collect();
        let mut values = Vec::new();
        let mut choices = 1;
        let encoded = match objective {
            Objective::Classification | Objective::Regression => {
                if objective == Objective::Regression {
                    values = examples
                        .iter()
                        .map(|e| {
                            e.value.ok_or_else(|| {
                                invalid("examples", format!("{}: no gold number", e.id))
                            })
                        })
                        .collect::<Result<_>>()?;
                }
                let texts: Vec<(&str, Option<&str>)> = examples
                    .iter()
                    .map(|e| (e.text_a.as_str(), e.text_b.as_deref()))
                    .collect();
                encoder.encode(&texts)?
            }
            Objective::MultipleChoice => {
                choices = examples.first().map_or(2, |e| e.choices.len());
                if let Some(e) = examples
                    .iter()
                    .find(|e| e.choices.len() != choices || e.choices.len() < 2)
                {
                    return Err(invalid(
                        "examples",
                        format!(
                            "{}: {} choices, expected the same number (at least 2) in every example",
                            e.id,
                            e.choices.len()
                        ),
                    ));
                }
                let texts: Vec<(&str, Option<&str>)> = examples
                    .iter()
                    .flat_map(|e| {
                        e.choices
                            .iter()
                            .map(|choice| (e.text_a.as_str(), Some(choice.as_str())))
                    })
                    .collect();
                encoder.encode(&texts)?
            }
        };
        let groups = if examples.iter().any(|e| e.group.is_some()) {
            examples.iter().map(|e| e.group).collect()
        } else {
            Vec::new()
        };
        let credits = if examples.iter().any(|e| e.credit.is_some()) {
            examples
                .iter()
                .map(|e| {
                    e.credit.ok_or_else(|| {
                        invalid(
                            "examples",
                            format!("{}: a candidate without its credit", e.id),
                        )
                    })
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(TokenizedSplit {
            encoded,
            labels,
            values,
            objective,
            choices,
            groups,
            credits,
        })
    }

    /// The split with the question of every example (one per example).
    pub fn with_groups(mut self, groups: Vec<Option<u32>>) -> Result<Self> {
        if groups.len() != self.labels.len() {
            return Err(crate::error::invalid(
                "groups",
                format!("{} groups for {} examples", groups.len(), self.labels.len()),
            ));
        }
        self.groups = groups;
        Ok(self)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Tokens of an example's longest sequence, which sets the width of its batch.
    pub fn example_len(&self, example: usize) -> usize {
        self.sequences(example)
            .map(|e| e.ids.len())
            .max()
            .unwrap_or(0)
    }

    fn sequences(&self, example: usize) -> impl Iterator<Item = &Encoded> {
        self.encoded[example * self.choices..(example + 1) * self.choices].iter()
    }

    /// The padded sequences of `indices` and their gold targets: labels (u32) or, for
    /// regression, numbers (f32).
    fn batch(&self, indices: &[usize], pad_id: u32, device: &Device) -> Result<(Batch, Targets)> {
        let sequences: Vec<&Encoded> = indices.iter().flat_map(|&i| self.sequences(i)).collect();
        let gold = match self.objective {
            Objective::Regression => Tensor::new(
                indices.iter().map(|&i| self.values[i]).collect::<Vec<_>>(),
                device,
            )?,
            Objective::Classification | Objective::MultipleChoice => Tensor::new(
                indices.iter().map(|&i| self.labels[i]).collect::<Vec<_>>(),
                device,
            )?,
        };
        let targets = Targets {
            gold,
            objective: self.objective,
        };
        Ok((Batch::pad(&sequences, pad_id, device)?, targets))
    }
}

/// A batch's gold answers and the objective that reads them.
struct Targets {
    gold: Tensor,
    objective: Objective,
}

impl Targets {
    fn loss(&self, logits: &Tensor) -> Result<Tensor> {
        task_loss(logits, &self.gold, self.objective)
    }
}

/// The training loss of a batch's head outputs against its targets (see [`Objective`]).
fn task_loss(logits: &Tensor, targets: &Tensor, objective: Objective) -> Result<Tensor> {
    match objective {
        Objective::Classification => cross_entropy(logits, targets),
        Objective::Regression => Ok(candle_nn::loss::mse(&logits.squeeze(1)?, targets)?),
        Objective::MultipleChoice => cross_entropy(&choice_logits(logits, targets)?, targets),
    }
}

/// One output per (example, choice) as `[examples, choices]`.
fn choice_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let examples = targets.dim(0)?;
    let choices = logits.elem_count() / examples.max(1);
    Ok(logits.reshape((examples, choices))?)
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    /// A fixed number of optimiser steps (stage 1's `max_steps`), crossing epochs as needed.
    Steps(usize),
    /// Whole passes over the training split.
    Epochs(usize),
}

/// The optimisation recipe of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Run length.
    pub length: Length,
    /// Examples per step.
    pub batch_size: usize,
    /// Examples per evaluation batch.
    pub eval_batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay on PEFT and classifier weights (not on biases or masks).
    pub weight_decay: f64,
    /// Fraction of steps of linear warm-up.
    pub warmup_ratio: f64,
    /// Global gradient-norm clip.
    pub max_grad_norm: f64,
    /// Seed of data order and dropout.
    pub seed: u64,
    /// Batch examples of similar length together (less padding; a different data order).
    pub group_by_length: bool,
    /// Stage-1 extras; `None` trains without L1 and without recording importances.
    pub estimation: Option<EstimationExtras>,
}

impl TrainConfig {
    /// Optimiser steps of a run over `examples` training examples.
    pub fn total_steps(&self, examples: usize) -> usize {
        match self.length {
            Length::Steps(n) => n,
            Length::Epochs(e) => e * examples.div_ceil(self.batch_size.max(1)),
        }
    }
}

/// What stage 1 adds to plain training (spec §3.4–§3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimationExtras {
    /// λ of the L1 penalty, a sum over every mask scalar.
    pub l1_coef: f64,
    /// Learning-rate multiplier of head masks.
    pub head_mask_lr_coef: f64,
    /// Learning-rate multiplier of neuron masks.
    pub neuron_mask_lr_coef: f64,
}

/// What a run produced besides the records it sent to the observer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Optimiser steps taken.
    pub steps: usize,
    /// Whether the run stopped early on request.
    pub cancelled: bool,
    /// Every evaluation.
    pub evals: Vec<EvalRecord>,
    /// Wall seconds of each step.
    pub step_seconds: Vec<f64>,
    /// Per-module importance ratio of every step (stage 1).
    pub module_importance: Vec<Vec<(ModuleId, f64)>>,
    /// Per-rank importance of every step (stage 1).
    pub rank_importance: Vec<Vec<(ModuleId, Vec<f64>)>>,
}

/// One training run: what to train on what, with its recipe. Reporting, interruption and
/// resumption are optional and named ([`TrainRun::observer`], [`TrainRun::cancel`],
/// [`TrainRun::resume`]), so a call site says which it uses instead of passing them by
/// position.
///
/// ```ignore
/// let outcome = TrainRun { model: &model, train: &train, dev: &dev, config: &config,
///     stage: Stage::Estimation, metric: Metric::Accuracy }
///     .observer(&mut records)
///     .cancel(&token)
///     .run()?;
/// ```
#[derive(Clone, Copy)]
pub struct TrainRun<'a> {
    /// The model whose trainable variables the run updates.
    pub model: &'a Model,
    /// The examples of the optimiser steps.
    pub train: &'a TokenizedSplit,
    /// The examples scored at each epoch end and after the last step.
    pub dev: &'a TokenizedSplit,
    /// Length, batch sizes, learning rate and the stage-1 extras.
    pub config: &'a TrainConfig,
    /// The stage its records are labelled with.
    pub stage: Stage,
    /// Evaluations report every measure of it.
    pub metric: Metric,
}

/// A [`TrainRun`] with its options chosen; built by the option methods of either type.
pub struct ConfiguredRun<'a> {
    run: TrainRun<'a>,
    observer: Option<&'a mut dyn Observer>,
    cancel: Option<&'a CancelToken>,
    resume: Option<&'a TrainState>,
}

impl<'a> From<TrainRun<'a>> for ConfiguredRun<'a> {
    fn from(run: TrainRun<'a>) -> Self {
        ConfiguredRun {
            run,
            observer: None,
            cancel: None,
            resume: None,
        }
    }
}

impl<'a> TrainRun<'a> {
    /// Sends every step, evaluation and snapshot to `observer` (without one, they are dropped).
    pub fn observer(self, observer: &'a mut dyn Observer) -> ConfiguredRun<'a> {
        ConfiguredRun::from(self).observer(observer)
    }

    /// Stops after the step during which `token` was cancelled.
    pub fn cancel(self, token: &'a CancelToken) -> ConfiguredRun<'a> {
        ConfiguredRun::from(self).cancel(token)
    }

    /// Continues from a snapshot; see [`ConfiguredRun::resume`].
    pub fn resume(self, state: &'a TrainState) -> ConfiguredRun<'a> {
        ConfiguredRun::from(self).resume(state)
    }

    /// Trains to the end, reporting nowhere and never cancelled.
    pub fn run(self) -> Result<TrainOutcome> {
        ConfiguredRun::from(self).run()
    }
}

impl<'a> ConfiguredRun<'a> {
    /// Sends every step, evaluation and snapshot to `observer`.
    pub fn observer(mut self, observer: &'a mut dyn Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Stops after the step during which `token` was cancelled.
    pub fn cancel(mut self, token: &'a CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Continues from `state`: the model's variables and the optimiser's moments are set from
    /// it and the run goes on at its next step, reporting only the steps that follow. The
    /// result equals that of a run that was never interrupted.
    pub fn resume(mut self, state: &'a TrainState) -> Self {
        self.resume = Some(state);
        self
    }

    /// Trains, evaluating on the dev split at each epoch end and after the last step.
    pub fn run(self) -> Result<TrainOutcome> {
        let never = CancelToken::new();
        let mut discard = Discard;
        let observer: &mut dyn Observer = match self.observer {
            Some(o) => o,
            None => &mut discard,
        };
        run_training(
            &self.run,
            observer,
            self.cancel.unwrap_or(&never),
            self.resume,
        )
    }
}

fn run_training(
    run: &TrainRun,
    observer: &mut dyn Observer,
    cancel: &CancelToken,
    resume: Option<&TrainState>,
) -> Result<TrainOutcome> {
    let TrainRun {
        model,
        train,
        dev,
        config,
        stage,
        metric,
    } = *run;
    if train.is_empty() || config.batch_size == 0 {
        return Err(invalid("training data", "no examples or a zero batch size"));
    }
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let total_steps = config.total_steps(train.len());
    let schedule = LinearSchedule::with_warmup_ratio(config.lr, config.warmup_ratio, total_steps);
    let mut optimizer = AdamW::new(param_groups(model, config))?;
    let device = model.encoder.device().clone();
    let pad = model.encoder.config.pad_token_id;
    let mut outcome = TrainOutcome {
        steps: 0,
        cancelled: false,
        evals: Vec::new(),
        step_seconds: Vec::new(),
        module_importance: Vec::new(),
        rank_importance: Vec::new(),
    };
    let mut first = 0;
    if let Some(state) = resume {
        if state.next_step > total_steps {
            return Err(invalid(
                "checkpoint",
                format!(
                    "it continues at step {} of a run of {total_steps} steps",
                    state.next_step
                ),
            ));
        }
        state.restore(model, &mut optimizer)?;
        outcome = state.outcome.clone();
        outcome.cancelled = false;
        first = state.next_step;
    }
    let checkpoint_every = observer.checkpoint_every().filter(|&n| n > 0);
    let lengths: Option<Vec<usize>> = config
        .group_by_length
        .then(|| (0..train.len()).map(|i| train.example_len(i)).collect());
    let mut order = Vec::new();
    for step in first..total_steps {
        let epoch = step / steps_per_epoch;
        let in_epoch = step % steps_per_epoch;
        if in_epoch == 0 || step == first {
            order = if let Some(lengths) = &lengths {
                batches_by_length(lengths, config.batch_size, config.seed, epoch as u64)?
            } else {
                batches(train.len(), config.batch_size, config.seed, epoch as u64)?
            };
        }
        let indices = &order[in_epoch];
        let started = Instant::now();
        // Dropout draws from a stream of its own per step, so a resumed run draws the same.
        let mut rng = StdRng::seed_from_u64(step_seed(config.seed, step));
        let (batch, targets) = train.batch(indices, pad, &device)?;
        let mut record = optimisation_step(
            model,
            &batch,
            &targets,
            config,
            &mut optimizer,
            schedule.lr(step),
            &mut rng,
        )
        .context(|| format!("training step {step}"))?;
        record.stage = stage;
        record.step = step;
        record.total_steps = total_steps;
        record.epoch = epoch;
        record.seconds = started.elapsed().as_secs_f64();
        outcome.steps = step + 1;
        outcome.step_seconds.push(record.seconds);
        if config.estimation.is_some() {
            outcome
                .module_importance
                .push(record.module_importance.clone());
            outcome.rank_importance.push(record.rank_importance.clone());
        }
        observer.on_step(&record);
        let last = step + 1 == total_steps;
        if in_epoch + 1 == steps_per_epoch || last {
            let eval = evaluate(model, dev, config.eval_batch_size, metric)?;
            let eval = EvalRecord {
                stage,
                step: step + 1,
                epoch,
                ..eval
            };
            observer.on_eval(&eval);
            outcome.evals.push(eval);
        }
        if let Some(every) = checkpoint_every
            && ((step + 1) % every == 0 || cancel.is_cancelled())
            && !last
        {
            observer.on_checkpoint(&TrainState::capture(model, &optimizer, step + 1, &outcome)?);
        }
        if cancel.is_cancelled() && !last {
            outcome.cancelled = true;
            break;
        }
    }
    Ok(outcome)
}

/// The dropout seed of one step: SplitMix64 of (seed, step), so streams of nearby steps are
/// unrelated.
fn step_seed(seed: u64, step: usize) -> u64 {
    let mut z = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn param_groups(model: &Model, config: &TrainConfig) -> Vec<ParamGroup> {
    let (head_coef, neuron_coef) = config
        .estimation
        .as_ref()
        .map_or((1.0, 1.0), |e| (e.head_mask_lr_coef, e.neuron_mask_lr_coef));
    let mut groups: Vec<ParamGroup> = [
        (ParamKind::Peft, 1.0, config.weight_decay),
        (ParamKind::HeadWeight, 1.0, config.weight_decay),
        (ParamKind::HeadMask, head_coef, config.weight_decay),
        (ParamKind::NeuronMask, neuron_coef, config.weight_decay),
        (ParamKind::HeadBias, 1.0, 0.0),
    ]
    .into_iter()
    .map(|(kind, lr_scale, weight_decay)| ParamGroup {
        vars: model
            .trainable()
            .into_iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.var)
            .collect(),
        lr_scale,
        weight_decay,
    })
    .collect();
    groups.retain(|g| !g.vars.is_empty());
    groups
}

fn optimisation_step(
    model: &Model,
    batch: &Batch,
    targets: &Targets,
    config: &TrainConfig,
    optimizer: &mut AdamW,
    lr: f64,
    rng: &mut StdRng,
) -> Result<StepRecord> {
    let estimating = config.estimation.as_ref();
    let out = model.forward(batch, Some(Training { rng }), estimating.is_some())?;
    let ce = targets.loss(&out.logits)?;
    let (loss, l1) = match estimating {
        Some(extras) => {
            let l1 = mask_l1(model)?;
            ((&ce + (&l1 * extras.l1_coef)?)?, Some(l1))
        }
        None => (ce.clone(), None),
    };
    let mut grads = loss.backward()?;
    // Importances read the raw gradients, before clipping and the update (spec §3.5).
    let (module_importance, rank_importance) = if estimating.is_some() {
        (
            importance::module_ratios(&out.ratios, &batch.attention_mask)?,
            importance::rank_importance(&model.encoder, &grads)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let grad_norm = clip_grad_norm(&mut grads, optimizer.vars(), config.max_grad_norm)?;
    optimizer.step(&grads, lr)?;
    let ce_loss = ce.to_scalar::<f32>()?;
    let l1_loss = match (l1, estimating) {
        (Some(l1), Some(extras)) => (l1.to_scalar::<f32>()? as f64 * extras.l1_coef) as f32,
        _ => 0.0,
    };
    let (head_masks, neuron_masks) = if estimating.is_some() {
        mask_values(model)?
    } else {
        (None, None)
    };
    Ok(StepRecord {
        stage: Stage::Estimation,
        step: 0,
        total_steps: 0,
        epoch: 0,
        loss: ce_loss + l1_loss,
        ce_loss,
        l1_loss,
        lr,
        grad_norm,
        seconds: 0.0,
        head_masks,
        neuron_masks,
        module_importance,
        rank_importance,
    })
}

/// Σ|m| over every head and neuron mask (a sum, not a mean: spec §3.4).
fn mask_l1(model: &Model) -> Result<Tensor> {
    let mut total = Tensor::zeros((), candle_core::DType::F32, model.encoder.device())?;
    for v in model.trainable() {
        if matches!(v.kind, ParamKind::HeadMask | ParamKind::NeuronMask) {
            total = (total + v.var.as_tensor().abs()?.sum_all()?)?;
        }
    }
    Ok(total)
}

type MaskSnapshot = Option<Vec<Vec<f32>>>;

/// Current mask values per layer; `None` for a family that is switched off.
pub fn mask_values(model: &Model) -> Result<(MaskSnapshot, MaskSnapshot)> {
    let layers = &model.encoder.layers;
    let read = |m: Option<&candle_core::Var>| -> Result<Option<Vec<f32>>> {
        m.map(|m| Ok(m.as_tensor().to_vec1::<f32>()?)).transpose()
    };
    let heads: Option<Vec<Vec<f32>>> = layers
        .iter()
        .map(|l| read(l.attention.head_mask.as_ref()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .collect();
    let neurons: Option<Vec<Vec<f32>>> = layers
        .iter()
        .map(|l| read(l.ffn.neuron_mask.as_ref()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .collect();
    Ok((heads, neurons))
}

/// Predictions, mean loss and metrics on `split`, with dropout off.
pub fn evaluate(
    model: &Model,
    split: &TokenizedSplit,
    batch_size: usize,
    metric: Metric,
) -> Result<EvalRecord> {
    let started = Instant::now();
    let device = model.encoder.device().clone();
    let pad = model.encoder.config.pad_token_id;
    let mut labels = vec![0; split.len()];
    // Regression's predicted numbers, or ranked candidates' label-1 margins.
    let mut numbers = vec![0.0; split.len()];
    let ranked = !split.credits.is_empty();
    let mut loss_sum = 0.0;
    // Batches of similar lengths carry little padding; scores do not depend on the order.
    let mut indices: Vec<usize> = (0..split.len()).collect();
    indices.sort_by_key(|&i| split.example_len(i));
    for chunk in indices.chunks(batch_size.max(1)) {
        let (batch, targets) = split.batch(chunk, pad, &device)?;
        let logits = model.forward(&batch, None, false)?.logits;
        loss_sum += targets.loss(&logits)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        match split.objective {
            Objective::Regression => {
                let predicted: Vec<f32> = logits.squeeze(1)?.to_vec1()?;
                for (&i, p) in chunk.iter().zip(predicted) {
                    numbers[i] = f64::from(p);
                }
            }
            Objective::Classification if ranked => {
                let margin = (logits.narrow(1, 1, 1)? - logits.narrow(1, 0, 1)?)?.squeeze(1)?;
                for (&i, m) in chunk.iter().zip(margin.to_vec1::<f32>()?) {
                    numbers[i] = f64::from(m);
                }
            }
            Objective::Classification | Objective::MultipleChoice => {
                let scores = match split.objective {
                    Objective::MultipleChoice => choice_logits(&logits, &targets.gold)?,
                    _ => logits,
                };
                let argmax: Vec<u32> = scores.argmax(D::Minus1)?.to_vec1()?;
                for (&i, p) in chunk.iter().zip(argmax) {
                    labels[i] = p as usize;
                }
            }
        }
    }
    let values = if ranked {
        score_ranked(metric, &numbers, &split.groups, &split.credits)?
    } else if split.objective == Objective::Regression {
        let gold: Vec<f64> = split.values.iter().map(|&v| f64::from(v)).collect();
        score_values(metric, &numbers, &gold)?
    } else {
        let gold: Vec<usize> = split.labels.iter().map(|&l| l as usize).collect();
        score_grouped(metric, &labels, &gold, &split.groups)?
    };
    Ok(EvalRecord {
        stage: Stage::Estimation,
        step: 0,
        epoch: 0,
        metrics: values
            .values()
            .iter()
            .map(|(measure, value)| (measure.key().to_string(), *value))
            .collect(),
        loss: loss_sum / split.len().max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_follow_the_objective() {
        let device = Device::Cpu;
        // Two examples of two choices: outputs (1, 3) and (2, 0), right choices 1 and 0.
        let logits = Tensor::new(&[[1f32], [3.], [2.], [0.]], &device).unwrap();
        let right = Tensor::new(&[1u32, 0], &device).unwrap();
        let loss = task_loss(&logits, &right, Objective::MultipleChoice)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Each example's softmax over its choices gives the right one e²/(1 + e²).
        let expected = (1.0 + (-2f32).exp()).ln();
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        // Regression: the mean squared error of the single output.
        let outputs = Tensor::new(&[[1f32], [4.]], &device).unwrap();
        let gold = Tensor::new(&[2f32, 1.], &device).unwrap();
        let loss = task_loss(&outputs, &gold, Objective::Regression)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((loss - 5.0).abs() < 1e-6, "{loss}");
        // Classification: cross-entropy over the outputs of one example.
        let logits = Tensor::new(&[[0f32, 0.]], &device).unwrap();
        let label = Tensor::new(&[1u32], &device).unwrap();
        let loss = task_loss(&logits, &label, Objective::Classification)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((loss - 2f32.ln()).abs() < 1e-6, "{loss}");
    }
}
