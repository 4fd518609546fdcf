//! The training loop on a tiny random model: records, evaluations, cancellation.

mod common;

use candle_core::Device;
use common::Tiny;
use lightpeft_engine::data::Metric;
use lightpeft_engine::train::{
    CancelToken, Collect, EstimationExtras, EvalRecord, Length, Observer, Stage, StepRecord,
    TokenizedSplit, TrainConfig, TrainRun,
};
use lightpeft_engine::{
    Architecture, Model, ModelOptions, PeftMethod, REFERENCE_TARGETS, TextEncoder,
};

fn setup() -> (tempfile::TempDir, Model, TokenizedSplit, TokenizedSplit) {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(Architecture::Bert).write(dir.path(), "");
    let options = ModelOptions {
        num_labels: 2,
        head_masks: true,
        neuron_masks: true,
        peft: PeftMethod::lora(4, 8.0, 0.05, &REFERENCE_TARGETS),
        seed: 3,
    };
    let model = Model::load(dir.path(), &options, &Device::Cpu).unwrap();
    let tok = TextEncoder::from_file(&dir.path().join("tokenizer.json"), 16).unwrap();
    let texts = [
        ("good movie", 1),
        ("great film", 1),
        ("bad movie", 0),
        ("awful film", 0),
        ("good great film", 1),
        ("bad awful movie", 0),
        ("great", 1),
    ];
    let split = |n: usize| {
        TokenizedSplit::new(
            &tok,
            texts.iter().cycle().take(n).map(|(t, l)| (*t, None, *l)),
        )
        .unwrap()
    };
    (dir, model, split(21), split(7))
}

fn stage1(length: Length) -> TrainConfig {
    TrainConfig {
        length,
        batch_size: 4,
        eval_batch_size: 8,
        lr: 1e-2,
        weight_decay: 0.0,
        warmup_ratio: 0.0,
        max_grad_norm: 1.0,
        seed: 42,
        group_by_length: false,
        estimation: Some(EstimationExtras {
            l1_coef: 1e-4,
            head_mask_lr_coef: 1.0,
            neuron_mask_lr_coef: 1.0,
        }),
    }
}

/// A run on the toy task's splits, scored by accuracy: every test here differs only in its
/// recipe, its stage and the options it sets.
fn toy_run<'a>(
    model: &'a Model,
    train: &'a TokenizedSplit,
    dev: &'a TokenizedSplit,
    config: &'a TrainConfig,
    stage: Stage,
) -> TrainRun<'a> {
    TrainRun {
        model,
        train,
        dev,
        config,
        stage,
        metric: Metric::Accuracy,
    }
}

#[test]
fn estimation_records_every_step_and_evaluates_at_epoch_ends() {
    let (_dir, model, train_split, dev) = setup();
    let mut seen = Collect::default();
    // 21 examples in batches of 4: 6 steps per epoch; 14 steps cross two epoch ends.
    let out = toy_run(
        &model,
        &train_split,
        &dev,
        &stage1(Length::Steps(14)),
        Stage::Estimation,
    )
    .observer(&mut seen)
    .run()
    .unwrap();
    assert_eq!((out.steps, out.cancelled), (14, false));
    assert_eq!(seen.steps.len(), 14);
    assert_eq!(
        seen.evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        vec![6, 12, 14]
    );
    let first = &seen.steps[0];
    assert_eq!(first.lr, 1e-2);
    assert!(
        (seen.steps[13].lr - 1e-2 / 14.0).abs() < 1e-12,
        "linear decay"
    );
    // L1 starts at λ·(2 layers × (4 heads + 24 neurons)).
    assert!(
        (first.l1_loss - 1e-4 * 56.0).abs() < 1e-6,
        "{}",
        first.l1_loss
    );
    // B = 0 at step 0: both importances are exactly zero, then they are not.
    assert!(first.module_importance.iter().all(|(_, v)| *v == 0.0));
    assert!(
        first
            .rank_importance
            .iter()
            .all(|(_, r)| r.iter().all(|v| *v == 0.0))
    );
    let last = &seen.steps[13];
    assert_eq!(last.module_importance.len(), 12);
    assert!(last.module_importance.iter().all(|(_, v)| *v > 0.0));
    assert!(
        last.rank_importance
            .iter()
            .any(|(_, r)| r.iter().any(|v| *v > 0.0))
    );
    let heads = last.head_masks.as_ref().unwrap();
    assert_eq!((heads.len(), heads[0].len()), (2, 4));
    assert!(
        heads.iter().flatten().any(|m| (m - 1.0).abs() > 1e-3),
        "masks move off 1.0"
    );
    let acc = &seen.evals[2].metrics[0];
    assert_eq!(acc.0, "accuracy");
    assert!((0.0..=1.0).contains(&acc.1));
}

struct CancelAfter(usize, CancelToken, Collect);

impl Observer for CancelAfter {
    fn on_step(&mut self, record: &StepRecord) {
        if record.step + 1 == self.0 {
            self.1.cancel();
        }
        self.2.on_step(record);
    }
    fn on_eval(&mut self, record: &EvalRecord) {
        self.2.on_eval(record);
    }
}

#[test]
fn cancel_stops_within_one_step() {
    let (_dir, model, train_split, dev) = setup();
    let token = CancelToken::new();
    let mut observer = CancelAfter(3, token.clone(), Collect::default());
    let out = toy_run(
        &model,
        &train_split,
        &dev,
        &stage1(Length::Epochs(5)),
        Stage::Estimation,
    )
    .observer(&mut observer)
    .cancel(&token)
    .run()
    .unwrap();
    assert!(out.cancelled);
    assert_eq!(out.steps, 3);
    assert_eq!(observer.2.steps.len(), 3);
}

#[test]
fn plain_training_keeps_masks_out_and_learns_the_toy_task() {
    let (_dir, mut model, train_split, dev) = setup();
    model.encoder.disable_masks();
    let config = TrainConfig {
        estimation: None,
        lr: 2e-2,
        ..stage1(Length::Epochs(8))
    };
    let mut seen = Collect::default();
    let out = toy_run(&model, &train_split, &dev, &config, Stage::Finetune)
        .observer(&mut seen)
        .run()
        .unwrap();
    assert_eq!(out.steps, 48);
    assert!(
        seen.steps
            .iter()
            .all(|s| s.head_masks.is_none() && s.l1_loss == 0.0 && s.module_importance.is_empty())
    );
    let first_loss = seen.steps[..6].iter().map(|s| s.ce_loss).sum::<f32>();
    let last_loss = seen.steps[42..].iter().map(|s| s.ce_loss).sum::<f32>();
    assert!(
        last_loss < first_loss,
        "loss falls: {first_loss} -> {last_loss}"
    );
}

#[test]
fn length_grouped_batches_train_in_their_own_order_and_still_learn() {
    let (_dir, mut model, train_split, dev) = setup();
    model.encoder.disable_masks();
    let run = |group_by_length: bool| {
        let config = TrainConfig {
            estimation: None,
            lr: 2e-2,
            group_by_length,
            ..stage1(Length::Epochs(8))
        };
        let mut seen = Collect::default();
        let out = toy_run(&model, &train_split, &dev, &config, Stage::Finetune)
            .observer(&mut seen)
            .run()
            .unwrap();
        (
            out.steps,
            seen.steps.iter().map(|s| s.ce_loss).collect::<Vec<_>>(),
        )
    };
    let (steps, grouped) = run(true);
    // Every example once per epoch: as many steps as the random order.
    assert_eq!(steps, 48);
    let first: f32 = grouped[..6].iter().sum();
    let last: f32 = grouped[42..].iter().sum();
    assert!(last < first, "loss falls: {first} -> {last}");
    // The option reaches the loop: the first step's batch already differs.
    let (_, random) = run(false);
    assert_ne!(grouped[0], random[0]);
}

/// Keeps a snapshot every `every` steps and cancels after step `stop_after`.
struct Interrupting {
    inner: Collect,
    every: usize,
    stop_after: usize,
    cancel: CancelToken,
    saved: Option<lightpeft_engine::train::TrainState>,
}

impl Observer for Interrupting {
    fn on_step(&mut self, record: &StepRecord) {
        self.inner.on_step(record);
        if record.step + 1 == self.stop_after {
            self.cancel.cancel();
        }
    }
    fn on_eval(&mut self, record: &EvalRecord) {
        self.inner.on_eval(record);
    }
    fn checkpoint_every(&self) -> Option<usize> {
        Some(self.every)
    }
    fn on_checkpoint(&mut self, state: &lightpeft_engine::train::TrainState) {
        self.saved = Some(state.clone());
    }
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    use lightpeft_engine::train::TrainState;
    let config = stage1(Length::Steps(14));
    let (_d1, whole, train_split, dev) = setup();
    let mut all = Collect::default();
    let expected = toy_run(&whole, &train_split, &dev, &config, Stage::Estimation)
        .observer(&mut all)
        .run()
        .unwrap();

    // Interrupted after step 8 (0-based 7), with snapshots every 3 steps: the last one
    // follows step 6, so steps 6 and 7 are taken again after the restart.
    let (_d2, first, _, _) = setup();
    let cancel = CancelToken::new();
    let mut interrupted = Interrupting {
        inner: Collect::default(),
        every: 3,
        stop_after: 8,
        cancel: cancel.clone(),
        saved: None,
    };
    toy_run(&first, &train_split, &dev, &config, Stage::Estimation)
        .observer(&mut interrupted)
        .cancel(&cancel)
        .run()
        .unwrap();
    let saved = interrupted.saved.expect("a snapshot was taken");
    // The cancel itself snapshots, so the last one follows the 8th step.
    assert_eq!(saved.next_step, 8);
    let dir = tempfile::tempdir().unwrap();
    saved.save(dir.path()).unwrap();
    let loaded = TrainState::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.next_step, 8);

    // A fresh process: a new model from the same files, then the snapshot.
    let (_d3, second, _, _) = setup();
    let mut rest = Collect::default();
    let resumed = toy_run(&second, &train_split, &dev, &config, Stage::Estimation)
        .observer(&mut rest)
        .resume(&loaded)
        .run()
        .unwrap();
    assert_eq!(rest.steps.first().map(|s| s.step), Some(8));
    assert_eq!(resumed.steps, expected.steps);
    assert_eq!(resumed.module_importance.len(), 14);
    for (a, b) in all.steps[8..].iter().zip(&rest.steps) {
        assert_eq!(a.step, b.step);
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    for (a, b) in whole.trainable().iter().zip(second.trainable()) {
        let diff = (a.var.as_tensor() - b.var.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{} differs by {diff}", a.name);
    }
    assert_eq!(
        resumed.evals.iter().map(|e| e.step).collect::<Vec<_>>(),
        expected.evals.iter().map(|e| e.step).collect::<Vec<_>>()
    );
}

#[test]
fn a_snapshot_cut_between_its_files_is_refused() {
    let (_d, model, train_split, dev) = setup();
    let cancel = CancelToken::new();
    let mut obs = Interrupting {
        inner: Collect::default(),
        every: 2,
        stop_after: 4,
        cancel: cancel.clone(),
        saved: None,
    };
    toy_run(
        &model,
        &train_split,
        &dev,
        &stage1(Length::Steps(10)),
        Stage::Estimation,
    )
    .observer(&mut obs)
    .cancel(&cancel)
    .run()
    .unwrap();
    let mut state = obs.saved.unwrap();
    let dir = tempfile::tempdir().unwrap();
    state.save(dir.path()).unwrap();
    let meta = std::fs::read(dir.path().join("state.json")).unwrap();
    state.next_step += 1;
    state.save(dir.path()).unwrap();
    // Old metadata next to new tensors, as a kill between the two renames would leave.
    std::fs::write(dir.path().join("state.json"), meta).unwrap();
    let err = lightpeft_engine::train::TrainState::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("cut while being written"), "{err}");
}
