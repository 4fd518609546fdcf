//! Tests on the real all-MiniLM-L6-v2 checkpoint (fetched by `lightpeft assets fetch`).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Optimizer, VarBuilder};
use common::{max_abs_diff, minilm_dir};
use lightpeft_engine::{
    Batch, Model, ModelOptions, ModuleKind, PeftMethod, REFERENCE_TARGETS, TextEncoder, Training,
    cross_entropy,
};
use rand::SeedableRng;

const SENTENCES: [&str; 3] = [
    "A man is playing a guitar.",
    "Someone plays the guitar.",
    "The stock market fell sharply today, and investors worried about what comes next.",
];

fn options(head_masks: bool, peft: PeftMethod) -> ModelOptions {
    ModelOptions {
        num_labels: 2,
        head_masks,
        neuron_masks: head_masks,
        peft,
        seed: 42,
    }
}

fn lora_all() -> PeftMethod {
    PeftMethod::lora(8, 16.0, 0.05, &REFERENCE_TARGETS)
}

fn batch(texts: &[&str]) -> Batch {
    let tok = TextEncoder::from_file(&minilm_dir().join("tokenizer.json"), 64).unwrap();
    let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (*t, None)).collect();
    let enc = tok.encode(&pairs).unwrap();
    let refs: Vec<_> = enc.iter().collect();
    Batch::pad(&refs, 0, &Device::Cpu).unwrap()
}

#[test]
fn tokenizer_encodes_pairs_like_the_reference_and_does_not_pad() {
    let tok = TextEncoder::from_file(&minilm_dir().join("tokenizer.json"), 64).unwrap();
    let enc = tok
        .encode(&[("The movie was great!", Some("I loved the film."))])
        .unwrap();
    assert_eq!(
        enc[0].ids,
        vec![
            101, 1996, 3185, 2001, 2307, 999, 102, 1045, 3866, 1996, 2143, 1012, 102
        ]
    );
    assert_eq!(enc[0].type_ids, [vec![0; 7], vec![1; 6]].concat());
    let short = TextEncoder::from_file(&minilm_dir().join("tokenizer.json"), 8).unwrap();
    let enc = short.encode(&[(SENTENCES[2], None)]).unwrap();
    assert_eq!(enc[0].ids.len(), 8, "truncated to max length");
    assert_eq!(*enc[0].ids.last().unwrap(), 102, "truncation keeps [SEP]");
}

/// Reference: candle-transformers' BERT inference on the same weights.
#[test]
fn hidden_states_match_candle_transformers_bert() {
    let dir = minilm_dir();
    let b = batch(&SENTENCES);
    let ours = Model::load(&dir, &options(false, PeftMethod::None), &Device::Cpu).unwrap();
    let hidden = ours.encoder.forward(&b, None, false).unwrap().hidden;

    let config: candle_transformers::models::bert::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let reference = candle_transformers::models::bert::BertModel::load(vb, &config).unwrap();
    let want = reference
        .forward(&b.input_ids, &b.type_ids, Some(&b.attention_mask))
        .unwrap();
    // Compare real tokens only: padded positions are never read downstream.
    let mask = b
        .attention_mask
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let diff = max_abs_diff(
        &hidden.broadcast_mul(&mask).unwrap(),
        &want.broadcast_mul(&mask).unwrap(),
    );
    assert!(diff <= 1e-4, "max abs diff {diff}");
    assert!(
        hidden
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.1
    );
}

/// Mean-pooled, normalised embeddings behave like a sentence encoder.
#[test]
fn sentence_similarities_are_those_of_the_real_checkpoint() {
    let model = Model::load(
        &minilm_dir(),
        &options(false, PeftMethod::None),
        &Device::Cpu,
    )
    .unwrap();
    let b = batch(&[
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]);
    let hidden = model.encoder.forward(&b, None, false).unwrap().hidden;
    let mask = b
        .attention_mask
        .to_dtype(DType::F32)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let pooled = (hidden.broadcast_mul(&mask).unwrap().sum(1).unwrap())
        .broadcast_div(&mask.sum(1).unwrap())
        .unwrap();
    let norm = pooled
        .sqr()
        .unwrap()
        .sum_keepdim(1)
        .unwrap()
        .sqrt()
        .unwrap();
    let e: Vec<Vec<f32>> = pooled.broadcast_div(&norm).unwrap().to_vec2().unwrap();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let similar = cos(&e[0], &e[1]);
    let unrelated = cos(&e[0], &e[2]);
    assert!((similar - 0.8406).abs() < 0.005, "cos(similar) = {similar}");
    assert!(
        (unrelated + 0.054).abs() < 0.01,
        "cos(unrelated) = {unrelated}"
    );
}

/// With masks and LoRA on all six targets, one backward pass reaches every trainable tensor.
/// At the very first step B = 0, so A's gradient is exactly zero (spec §4.2); after one
/// optimiser step every tensor's gradient is non-zero.
#[test]
fn every_trainable_variable_gets_a_gradient() {
    let model = Model::load(&minilm_dir(), &options(true, lora_all()), &Device::Cpu).unwrap();
    let vars = model.trainable();
    // 6 layers × (2 masks + 6 modules × 2) + classifier weight and bias.
    assert_eq!(vars.len(), 6 * (2 + 12) + 2);
    let b = batch(&SENTENCES);
    let labels = Tensor::new(&[1u32, 1, 0], &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut step = |model: &Model| {
        let out = model
            .forward(&b, Some(Training { rng: &mut rng }), false)
            .unwrap();
        cross_entropy(&out.logits, &labels)
            .unwrap()
            .backward()
            .unwrap()
    };
    let grad_norm = |grads: &candle_core::backprop::GradStore, v: &Var| -> Option<f32> {
        grads
            .get(v.as_tensor())
            .map(|g| g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap())
    };
    let grads = step(&model);
    for v in &vars {
        let norm =
            grad_norm(&grads, &v.var).unwrap_or_else(|| panic!("no gradient reaches {}", v.name));
        if v.name.ends_with("lora_A") {
            assert_eq!(norm, 0.0, "{}: B = 0 at the first step", v.name);
        } else {
            assert!(norm > 0.0, "zero gradient for {}", v.name);
        }
    }
    let mut opt = candle_nn::AdamW::new(
        vars.iter().map(|v| v.var.clone()).collect(),
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    opt.step(&grads).unwrap();
    let grads = step(&model);
    for v in &vars {
        let norm = grad_norm(&grads, &v.var).unwrap();
        assert!(norm > 0.0, "zero gradient for {} after one step", v.name);
    }
}

/// Zeroing a head's (or a neuron's) mask gives the same output as removing it physically,
/// with LoRA on every target; so estimation and pruning agree.
#[test]
fn zero_mask_equals_physical_removal() {
    let dir = minilm_dir();
    let masked = Model::load(&dir, &options(true, lora_all()), &Device::Cpu).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    // Give every LoRA B values so that the sliced LoRA weights matter.
    for v in masked.trainable() {
        if v.name.ends_with("lora_B") {
            let (rows, cols) = v.var.dims2().unwrap();
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| rand::Rng::random_range(&mut rng, -0.05..0.05))
                .collect();
            v.var
                .set(&Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let removed_heads: [&[usize]; 6] = [&[0, 5], &[], &[11], &[1, 2, 3], &[7], &[0, 11]];
    let removed_neurons =
        |l: usize| -> Vec<usize> { (0..1536).filter(|n| (n + l).is_multiple_of(3)).collect() };
    let mut pruned = Model::load(&dir, &options(true, lora_all()), &Device::Cpu).unwrap();
    for (a, b) in masked.trainable().iter().zip(pruned.trainable()) {
        assert_eq!(a.name, b.name);
        b.var.set(a.var.as_tensor()).unwrap();
    }
    for (l, (layer, removed)) in masked.encoder.layers.iter().zip(removed_heads).enumerate() {
        let mut heads = vec![1f32; 12];
        removed.iter().for_each(|&h| heads[h] = 0.0);
        layer
            .attention
            .head_mask
            .as_ref()
            .unwrap()
            .set(&Tensor::new(heads, &Device::Cpu).unwrap())
            .unwrap();
        let mut neurons = vec![1f32; 1536];
        removed_neurons(l).iter().for_each(|&n| neurons[n] = 0.0);
        layer
            .ffn
            .neuron_mask
            .as_ref()
            .unwrap()
            .set(&Tensor::new(neurons, &Device::Cpu).unwrap())
            .unwrap();

        let kept_heads: Vec<usize> = (0..12).filter(|h| !removed.contains(h)).collect();
        let kept_neurons: Vec<usize> = (0..1536).filter(|n| !(n + l).is_multiple_of(3)).collect();
        pruned.encoder.keep_heads(l, &kept_heads).unwrap();
        pruned.encoder.keep_neurons(l, &kept_neurons).unwrap();
    }
    let q = pruned.encoder.module(lightpeft_engine::ModuleId {
        layer: 3,
        kind: ModuleKind::Query,
    });
    assert_eq!(q.base.out_dim(), 9 * 32, "physically smaller");
    assert_eq!(q.lora().unwrap().b.dims(), &[9 * 32, 8]);
    assert_eq!(pruned.encoder.layers[0].ffn.width(), 1024);

    let b = batch(&SENTENCES);
    let want = masked.forward(&b, None, false).unwrap().logits;
    let got = pruned.forward(&b, None, false).unwrap().logits;
    let diff = max_abs_diff(&want, &got);
    assert!(diff < 1e-4, "masked vs pruned logits differ by {diff}");
    let unmasked = Model::load(&dir, &options(false, lora_all()), &Device::Cpu).unwrap();
    for (a, b) in unmasked.trainable().iter().zip(
        masked
            .trainable()
            .iter()
            .filter(|v| !v.name.contains("mask")),
    ) {
        a.var.set(b.var.as_tensor()).unwrap();
    }
    let full = unmasked.forward(&b, None, false).unwrap().logits;
    assert!(
        max_abs_diff(&full, &got) > 1e-4,
        "pruning must change the output"
    );
}

#[test]
fn inspection_counts_the_real_checkpoint() {
    let summary = lightpeft_engine::inspect_model_dir(&minilm_dir()).unwrap();
    assert_eq!(summary.heads, vec![12; 6]);
    assert_eq!(summary.ffn, vec![1536; 6]);
    assert!(summary.has_pooler);
    // 22,713,728 values in the file, less the pooler's 384·384 + 384 and the 512
    // `position_ids` buffer entries.
    assert_eq!(summary.encoder_parameters, 22_713_728 - 147_840 - 512);
}
