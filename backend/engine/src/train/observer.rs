//! How training reports what it records: a trait the CLI and the server each implement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::checkpoint::TrainState;
use crate::encoder::ModuleId;

/// Which training stage produced a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Stage 1: masks + PEFT + importances.
    Estimation,
    /// Stage 2: the pruned model.
    Finetune,
    /// Vanilla PEFT on the unpruned model.
    Baseline,
}

/// Everything recorded at one optimiser step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The stage.
    pub stage: Stage,
    /// 0-based optimiser step.
    pub step: usize,
    /// Steps the run will take.
    pub total_steps: usize,
    /// 0-based epoch.
    pub epoch: usize,
    /// Total loss (cross-entropy + L1 in stage 1).
    pub loss: f32,
    /// Cross-entropy part.
    pub ce_loss: f32,
    /// λ·Σ|m| part (0 outside stage 1).
    pub l1_loss: f32,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall seconds of this step (forward, backward, importances, update).
    pub seconds: f64,
    /// Head masks after the update, `[layer][head]` (stage 1 only).
    pub head_masks: Option<Vec<Vec<f32>>>,
    /// FFN neuron masks after the update, `[layer][neuron]` (stage 1 only).
    pub neuron_masks: Option<Vec<Vec<f32>>>,
    /// Module importance ratio of this step per PEFT module (spec §4.1; stage 1 only).
    pub module_importance: Vec<(ModuleId, f64)>,
    /// First-order Taylor importance per rank of each PEFT module (spec §4.2; stage 1 only).
    pub rank_importance: Vec<(ModuleId, Vec<f64>)>,
}

/// An evaluation on the dev split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The stage.
    pub stage: Stage,
    /// Optimiser steps done before this evaluation.
    pub step: usize,
    /// 0-based epoch that just ended (or the epoch in progress at the last step).
    pub epoch: usize,
    /// Metric name → value, e.g. `accuracy`.
    pub metrics: Vec<(String, f64)>,
    /// Mean dev cross-entropy.
    pub loss: f64,
    /// Wall seconds of the evaluation.
    pub seconds: f64,
}

/// Receives records as training produces them. Implementations must return quickly (hand the
/// record to a queue, a channel or a buffered writer): the trainer waits for nothing else.
pub trait Observer {
    /// Called after every optimiser step.
    fn on_step(&mut self, record: &StepRecord);
    /// Called after every evaluation.
    fn on_eval(&mut self, record: &EvalRecord);
    /// Every how many steps the observer wants a [`TrainState`] to keep (`None`: never).
    fn checkpoint_every(&self) -> Option<usize> {
        None
    }
    /// Receives a snapshot after the step it follows was reported (and its evaluation, if any).
    fn on_checkpoint(&mut self, _state: &TrainState) {}
}

/// An observer that keeps nothing.
pub struct Discard;

impl Observer for Discard {
    fn on_step(&mut self, _: &StepRecord) {}
    fn on_eval(&mut self, _: &EvalRecord) {}
}

/// Collects every record in memory (for tests and small runs).
#[derive(Default)]
pub struct Collect {
    /// Steps, in order.
    pub steps: Vec<StepRecord>,
    /// Evaluations, in order.
    pub evals: Vec<EvalRecord>,
}

impl Observer for Collect {
    fn on_step(&mut self, record: &StepRecord) {
        self.steps.push(record.clone());
    }
    fn on_eval(&mut self, record: &EvalRecord) {
        self.evals.push(record.clone());
    }
}

/// A shared flag that stops training at the end of the current step.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop after its current step.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether cancellation was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
