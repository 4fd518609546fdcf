//! The Light-PEFT pipeline on the real MiniLM and `sst2-rt`: a short estimation, a plan, the
//! physically pruned model, and a short stage 2 that beats the majority class.

mod common;

use candle_core::{Device, Tensor};
use common::{max_abs_diff, minilm_dir};
use lightpeft_engine::data::Metric;
use lightpeft_engine::data::{Example, TaskFiles, TaskId, load_task};
use lightpeft_engine::export::{export_model, load_exported};
use lightpeft_engine::pipeline::{apply_plan, model_shape, summarize_estimation};
use lightpeft_engine::plan::{PlanRequest, Planner};
use lightpeft_engine::train::{
    Collect, EstimationExtras, Length, Stage, TokenizedSplit, TrainConfig, TrainRun,
};
use lightpeft_engine::{Batch, Model, ModelOptions, PeftMethod, REFERENCE_TARGETS, TextEncoder};

fn split(tok: &TextEncoder, examples: &[Example], stride: usize) -> TokenizedSplit {
    TokenizedSplit::new(
        tok,
        examples
            .iter()
            .step_by(stride)
            .map(|e| (e.text_a.as_str(), e.text_b.as_deref(), e.label)),
    )
    .unwrap()
}

fn set_masks(model: &Model, plan: &lightpeft_engine::plan::PruningPlan) {
    for (layer, lp) in model.encoder.layers.iter().zip(&plan.layers) {
        let heads: Vec<f32> = (0..12)
            .map(|h| lp.kept_heads.contains(&h) as u8 as f32)
            .collect();
        let neurons: Vec<f32> = (0..1536)
            .map(|n| lp.kept_neurons.binary_search(&n).is_ok() as u8 as f32)
            .collect();
        layer
            .attention
            .head_mask
            .as_ref()
            .unwrap()
            .set(&Tensor::new(heads, &Device::Cpu).unwrap())
            .unwrap();
        layer
            .ffn
            .neuron_mask
            .as_ref()
            .unwrap()
            .set(&Tensor::new(neurons, &Device::Cpu).unwrap())
            .unwrap();
    }
}

#[test]
fn estimate_plan_prune_and_finetune_on_real_data() {
    let data_dir = lightpeft_assets::default_data_dir();
    let movie = lightpeft_assets::vader_movie_file(&data_dir);
    assert!(
        movie.is_file(),
        "{} missing: run `lightpeft assets fetch`",
        movie.display()
    );
    let dataset = load_task(TaskId::Sst2Rt.spec(), &TaskFiles::Assets(vec![movie])).unwrap();
    let tok = TextEncoder::from_file(&minilm_dir().join("tokenizer.json"), 48).unwrap();
    // Strided subsets keep the test short; the file is sorted by label, so never take a prefix.
    let train_split = split(&tok, &dataset.train, 8);
    let dev = split(&tok, &dataset.dev, 3);
    let majority = {
        let ones = dev.labels.iter().filter(|l| **l == 1).count() as f64 / dev.len() as f64;
        ones.max(1.0 - ones)
    };

    let options = ModelOptions {
        num_labels: 2,
        head_masks: true,
        neuron_masks: true,
        peft: PeftMethod::lora(8, 16.0, 0.05, &REFERENCE_TARGETS),
        seed: 42,
    };
    let stage1 = Model::load(&minilm_dir(), &options, &Device::Cpu).unwrap();
    let config = TrainConfig {
        length: Length::Steps(40),
        batch_size: 16,
        eval_batch_size: 64,
        lr: 5e-4,
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
    };
    let mut records = Collect::default();
    let outcome = TrainRun {
        model: &stage1,
        train: &train_split,
        dev: &dev,
        config: &config,
        stage: Stage::Estimation,
        metric: Metric::Accuracy,
    }
    .observer(&mut records)
    .run()
    .unwrap();
    assert_eq!(records.steps.len(), 40);

    let summary = summarize_estimation(&stage1, &outcome).unwrap();
    let moved = summary
        .neuron_masks
        .iter()
        .flatten()
        .filter(|m| (**m - 1.0).abs() > 1e-3)
        .count();
    assert!(moved > 1000, "only {moved} neuron masks moved off 1.0");
    assert!(
        summary
            .head_masks
            .iter()
            .flatten()
            .any(|m| (m - 1.0).abs() > 1e-3)
    );
    assert_eq!(summary.module_importance.len(), 36);
    assert!(
        summary.module_importance.iter().all(|(_, ir)| *ir > 0.0),
        "{:?}",
        summary.module_importance
    );
    assert!(
        summary
            .rank_importance
            .iter()
            .all(|(_, r)| r.len() == 8 && r.iter().any(|v| *v > 0.0))
    );

    let planner = Planner::new(model_shape(&stage1).unwrap(), &summary).unwrap();
    let plan = planner
        .plan(&PlanRequest {
            head_ratio: 0.5,
            ffn_ratio: 0.5,
            ..PlanRequest::reference()
        })
        .unwrap();
    assert!(plan.parameters_after.encoder_layers < plan.parameters_before.encoder_layers * 11 / 20);

    // Two copies of the stage-1 model: one pruned physically, one with the same units masked.
    let saved = tempfile::tempdir().unwrap();
    export_model(&stage1, &minilm_dir().join("tokenizer.json"), saved.path()).unwrap();
    let mut pruned = load_exported(saved.path(), &Device::Cpu).unwrap();
    apply_plan(&mut pruned, &plan).unwrap();
    let mut masked = load_exported(saved.path(), &Device::Cpu).unwrap();
    let mut peft_only = plan.clone();
    for lp in &mut peft_only.layers {
        lp.kept_heads = (0..12).collect();
        lp.kept_neurons = (0..1536).collect();
    }
    apply_plan(&mut masked, &peft_only).unwrap();
    masked.encoder.enable_masks(true, true).unwrap();
    set_masks(&masked, &plan);

    // The planner's parameter count is the physical model's.
    let after = &plan.parameters_after;
    assert_eq!(
        pruned.encoder.parameter_count(),
        after.embeddings + after.encoder_layers
    );
    assert!(after.encoder_layers < plan.parameters_before.encoder_layers * 11 / 20);
    let peft_params = |m: &Model| -> usize {
        m.trainable()
            .iter()
            .filter(|v| v.name.contains("lora"))
            .map(|v| v.var.elem_count())
            .sum()
    };
    assert_eq!(peft_params(&pruned), plan.parameters_after.peft);
    let examples: Vec<_> = dev.encoded.iter().take(24).collect();
    let batch = Batch::pad(&examples, 0, &Device::Cpu).unwrap();
    let want = masked.forward(&batch, None, false).unwrap().logits;
    let got = pruned.forward(&batch, None, false).unwrap().logits;
    assert!(
        max_abs_diff(&want, &got) < 1e-4,
        "pruned vs masked: {}",
        max_abs_diff(&want, &got)
    );

    let stage2 = TrainConfig {
        length: Length::Epochs(1),
        estimation: None,
        ..config
    };
    let mut records = Collect::default();
    TrainRun {
        model: &pruned,
        train: &train_split,
        dev: &dev,
        config: &stage2,
        stage: Stage::Finetune,
        metric: Metric::Accuracy,
    }
    .observer(&mut records)
    .run()
    .unwrap();
    let acc = records.evals.last().unwrap().metrics[0].1;
    assert!(
        acc > majority + 0.05,
        "stage-2 dev accuracy {acc:.3} vs majority {majority:.3}"
    );
    eprintln!(
        "stage 2 dev accuracy {acc:.3}, majority {majority:.3}, plan {plan:?}",
        plan = (
            plan.removed_heads(),
            plan.removed_neurons(),
            plan.parameters_after.peft
        )
    );
}
