//! Loading and running tiny random checkpoints written by the tests: both layouts, name
//! prefixes, pruned shapes down to zero, and the errors bad folders give.

mod common;

use candle_core::{Device, Tensor};
use common::{Tiny, max_abs_diff};
use lightpeft_engine::{
    AdapterConfig, Architecture, Batch, Checkpoint, LoraConfig, Model, ModelConfig, ModelOptions,
    PeftMethod, Positions, REFERENCE_TARGETS, TextEncoder, Training, cross_entropy,
};
use rand::SeedableRng;

fn lora_options() -> ModelOptions {
    ModelOptions {
        num_labels: 3,
        head_masks: true,
        neuron_masks: true,
        peft: PeftMethod::lora(2, 4.0, 0.1, &REFERENCE_TARGETS),
        seed: 1,
    }
}

fn tokenized_batch(dir: &std::path::Path, pad: u32) -> Batch {
    let tok = TextEncoder::from_file(&dir.join("tokenizer.json"), 16).unwrap();
    let enc = tok
        .encode(&[("hello world", Some("good movie")), ("bad film", None)])
        .unwrap();
    let refs: Vec<_> = enc.iter().collect();
    Batch::pad(&refs, pad, &Device::Cpu).unwrap()
}

#[test]
fn roberta_layout_with_prefix_loads_tokenizes_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(Architecture::Roberta);
    tiny.write(dir.path(), "roberta.");
    let model = Model::load(dir.path(), &lora_options(), &Device::Cpu).unwrap();
    assert_eq!(model.encoder.config.architecture, Architecture::Roberta);

    let batch = tokenized_batch(dir.path(), 1);
    let ids = batch.input_ids.to_vec2::<u32>().unwrap();
    // <s> hello world </s></s> good movie </s>, then a padded single sentence.
    assert_eq!(ids[0], vec![0, 4, 5, 2, 2, 6, 8, 2]);
    assert_eq!(ids[1], vec![0, 7, 9, 2, 1, 1, 1, 1]);

    let eval = model.forward(&batch, None, false).unwrap().logits;
    assert_eq!(eval.dims(), &[2, 3]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let train = model
        .forward(&batch, Some(Training { rng: &mut rng }), true)
        .unwrap();
    assert!(
        max_abs_diff(&eval, &train.logits) > 0.0,
        "dropout acts in training"
    );
    // 5 target suffixes hit all 6 modules of each of the 2 layers.
    assert_eq!(train.ratios.len(), 12);
}

#[test]
fn the_first_token_alone_gives_every_tokens_state_gradients_and_ratios() {
    for arch in [Architecture::Bert, Architecture::Roberta] {
        let tiny = Tiny::new(arch);
        // Without dropout both passes are deterministic and comparable in training.
        let json = tiny.config_json().replace(
            r#""hidden_act":"gelu""#,
            r#""hidden_act":"gelu","hidden_dropout_prob":0.0,"attention_probs_dropout_prob":0.0"#,
        );
        let config = ModelConfig::from_json(&json, "c.json".as_ref()).unwrap();
        let ckpt = Checkpoint::from_tensors("m".as_ref(), &config, tiny.tensors("", 5)).unwrap();
        let options = ModelOptions {
            peft: PeftMethod::lora(2, 4.0, 0.0, &REFERENCE_TARGETS),
            ..lora_options()
        };
        let model = Model::from_checkpoint(&config, &ckpt, &options).unwrap();
        // LoRA's B starts at zero; give it values so that every factor's gradient is live.
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for named in model.trainable() {
            let t = named.var.as_tensor();
            let noise = Tensor::randn(0f32, 0.3, t.dims(), &Device::Cpu).unwrap();
            named.var.set(&(t + noise).unwrap()).unwrap();
        }
        let ids = Tensor::new(&[[3u32, 4, 5, 6, 7, 2], [3, 8, 9, 2, 0, 0]], &Device::Cpu).unwrap();
        let batch = Batch {
            type_ids: ids.zeros_like().unwrap(),
            attention_mask: Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &Device::Cpu)
                .unwrap(),
            input_ids: ids,
        };
        let every = model.encoder.forward(&batch, None, false).unwrap().hidden;
        let first = model
            .encoder
            .forward_positions(&batch, None, false, Positions::First)
            .unwrap()
            .hidden;
        assert_eq!(first.dims(), &[2, 1, 16]);
        let diff = max_abs_diff(&every.narrow(1, 0, 1).unwrap(), &first);
        assert!(
            diff < 1e-5,
            "{arch:?}: first token's hidden state differs by {diff}"
        );
        // The composed ops (a GPU's path) take fewer queries than keys as well.
        let composed = lightpeft_engine::with_composed_ops(|| {
            model
                .encoder
                .forward_positions(&batch, None, false, Positions::First)
                .unwrap()
                .hidden
        });
        let diff = max_abs_diff(&composed, &first);
        assert!(
            diff < 1e-5,
            "{arch:?}: the composed ops' first token differs by {diff}"
        );
        // In training the same loss on the first token must give the same gradients, and the
        // ratios recorded with the first token alone (the last layer's from a pass of their
        // own over every position) must be every position's.
        let weights = Tensor::randn(0f32, 1.0, (2, 16), &Device::Cpu).unwrap();
        let mut run = |positions: Positions| {
            let out = model
                .encoder
                .forward_positions(&batch, Some(Training { rng: &mut rng }), true, positions)
                .unwrap();
            let first = out.hidden.narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
            let loss = (first * &weights).unwrap().sum_all().unwrap();
            (out.ratios, loss.backward().unwrap())
        };
        let (ratios_every, g_every) = run(Positions::All);
        let (ratios_first, g_first) = run(Positions::First);
        assert_eq!(ratios_every.len(), 12, "{arch:?}: ratios of every module");
        assert_eq!(ratios_every.len(), ratios_first.len(), "{arch:?}: ratios");
        for ((id_a, a), (id_b, b)) in ratios_every.iter().zip(&ratios_first) {
            assert_eq!(id_a, id_b, "{arch:?}: ratio order");
            assert!(max_abs_diff(a, b) < 1e-5, "{arch:?}: ratio of {id_a:?}");
        }
        let mut compared = 0;
        for named in model.trainable() {
            let t = named.var.as_tensor();
            let (a, b) = match (g_every.get(t), g_first.get(t)) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => continue,
                _ => panic!("{arch:?}: {} has a gradient on one path only", named.name),
            };
            let scale = a
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = max_abs_diff(a, b);
            assert!(
                diff <= 1e-4 * scale.max(1e-3),
                "{arch:?}: {} gradient differs by {diff} (scale {scale})",
                named.name
            );
            compared += 1;
        }
        assert!(
            compared > 20,
            "{arch:?}: only {compared} gradients compared"
        );
    }
}

#[test]
fn roberta_positions_start_after_the_padding_index() {
    let tiny = Tiny::new(Architecture::Roberta);
    let config = ModelConfig::from_json(&tiny.config_json(), "c.json".as_ref()).unwrap();
    let options = ModelOptions {
        peft: PeftMethod::None,
        ..lora_options()
    };
    let run = |tensors| {
        let ckpt = Checkpoint::from_tensors("m".as_ref(), &config, tensors).unwrap();
        let model = Model::from_checkpoint(&config, &ckpt, &options).unwrap();
        let ids = Tensor::new(&[[0u32, 4, 5, 2, 1]], &Device::Cpu).unwrap();
        let batch = Batch {
            type_ids: ids.zeros_like().unwrap(),
            attention_mask: Tensor::new(&[[1u32, 1, 1, 1, 0]], &Device::Cpu).unwrap(),
            input_ids: ids,
        };
        let out = model.encoder.forward(&batch, None, false).unwrap().hidden;
        out.narrow(1, 0, 4).unwrap()
    };
    let base = tiny.tensors("", 3);
    let with_row = |row: usize| {
        let mut t = base.clone();
        let key = "embeddings.position_embeddings.weight".to_string();
        let bumped = t[&key]
            .slice_assign(
                &[row..row + 1, 0..16],
                &Tensor::ones((1, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
            )
            .unwrap();
        t.insert(key, bumped);
        run(t)
    };
    let reference = run(base.clone());
    assert_eq!(
        max_abs_diff(&reference, &with_row(0)),
        0.0,
        "row 0 is never used"
    );
    assert!(
        max_abs_diff(&reference, &with_row(2)) > 1e-3,
        "the first token sits at row 2"
    );
}

#[test]
fn bert_layout_loads_with_and_without_prefix() {
    let tiny = Tiny::new(Architecture::Bert);
    for prefix in ["", "bert."] {
        let dir = tempfile::tempdir().unwrap();
        tiny.write(dir.path(), prefix);
        let model = Model::load(dir.path(), &lora_options(), &Device::Cpu).unwrap();
        assert!(!model.pooler_initialised);
        let batch = tokenized_batch(dir.path(), 0);
        assert_eq!(
            batch.input_ids.to_vec2::<u32>().unwrap()[0][0],
            2,
            "[CLS] first"
        );
        let logits = model.forward(&batch, None, false).unwrap().logits;
        assert_eq!(logits.dims(), &[2, 3], "prefix {prefix:?}");
    }
}

#[test]
fn layers_pruned_to_zero_heads_and_zero_neurons_equal_fully_masked_layers() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = Tiny::new(Architecture::Bert);
    tiny.write(dir.path(), "");
    let masked = Model::load(dir.path(), &lora_options(), &Device::Cpu).unwrap();
    for layer in &masked.encoder.layers {
        let b = layer.ffn.output.lora().unwrap().b.clone();
        b.set(&Tensor::ones(b.shape(), candle_core::DType::F32, &Device::Cpu).unwrap())
            .unwrap();
    }
    let l0 = &masked.encoder.layers[0];
    l0.attention
        .head_mask
        .as_ref()
        .unwrap()
        .set(&Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let l1 = &masked.encoder.layers[1];
    l1.ffn
        .neuron_mask
        .as_ref()
        .unwrap()
        .set(&Tensor::zeros(24, candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap();

    let mut pruned = Model::load(dir.path(), &lora_options(), &Device::Cpu).unwrap();
    for (a, b) in masked.trainable().iter().zip(pruned.trainable()) {
        b.var.set(a.var.as_tensor()).unwrap();
    }
    pruned.encoder.keep_heads(0, &[]).unwrap();
    pruned.encoder.keep_neurons(1, &[]).unwrap();
    assert_eq!(pruned.encoder.config.layers[0].heads, 0);
    assert_eq!(pruned.encoder.config.layers[1].ffn, 0);

    let batch = tokenized_batch(dir.path(), 0);
    let want = masked.forward(&batch, None, false).unwrap().logits;
    let got = pruned.forward(&batch, None, false).unwrap().logits;
    assert!(
        max_abs_diff(&want, &got) < 1e-5,
        "{}",
        max_abs_diff(&want, &got)
    );
    // Training still works with empty layers.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let out = pruned
        .forward(&batch, Some(Training { rng: &mut rng }), true)
        .unwrap();
    let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
    let grads = cross_entropy(&out.logits, &labels)
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        grads
            .get(pruned.trainable().last().unwrap().var.as_tensor())
            .is_some()
    );
}

#[test]
fn adapters_get_gradients_on_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    Tiny::new(Architecture::Roberta).write(dir.path(), "");
    let options = ModelOptions {
        peft: PeftMethod::Adapter {
            config: AdapterConfig {
                // The last layer's FFN only reaches the loss through the first token, so a
                // narrow ReLU bottleneck could be dead there by chance; 8 units make it unlikely.
                size: 8,
                dropout: 0.1,
                scale: 1.0,
            },
            targets: vec!["output.dense".into()],
        },
        ..lora_options()
    };
    let model = Model::load(dir.path(), &options, &Device::Cpu).unwrap();
    let vars = model.trainable();
    // 2 masks + 2 adapters × 2 tensors per layer, 4 head tensors.
    assert_eq!(vars.len(), 2 * (2 + 4) + 4);
    let batch = tokenized_batch(dir.path(), 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let out = model
        .forward(&batch, Some(Training { rng: &mut rng }), true)
        .unwrap();
    assert_eq!(out.ratios.len(), 4);
    let labels = Tensor::new(&[1u32, 2], &Device::Cpu).unwrap();
    let grads = cross_entropy(&out.logits, &labels)
        .unwrap()
        .backward()
        .unwrap();
    for v in &vars {
        let g = grads
            .get(v.var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {}", v.name));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "zero gradient for {}", v.name);
    }
}

#[test]
fn bad_folders_give_errors_naming_the_file_and_problem() {
    let tiny = Tiny::new(Architecture::Bert);
    let options = lora_options();

    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path(), "");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = Model::load(dir.path(), &options, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path(), "");
    let wrong = tiny
        .config_json()
        .replace("\"intermediate_size\":24", "\"intermediate_size\":32");
    std::fs::write(dir.path().join("config.json"), wrong).unwrap();
    let err = Model::load(dir.path(), &options, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(
        err.contains("encoder.layer.0.intermediate.dense.weight"),
        "{err}"
    );
    assert!(
        err.contains("[24, 16]") && err.contains("[32, 16]"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path(), "");
    let unknown = tiny.config_json().replace("\"bert\"", "\"t5\"");
    std::fs::write(dir.path().join("config.json"), unknown).unwrap();
    let err = Model::load(dir.path(), &options, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("unknown architecture"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path(), "");
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = Model::load(dir.path(), &options, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("safetensors"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path(), "roberta.");
    let err = Model::load(dir.path(), &options, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("embeddings.word_embeddings.weight") && err.contains("missing"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path(), "");
    let bad_targets = ModelOptions {
        peft: PeftMethod::Lora {
            config: LoraConfig {
                r: 2,
                alpha: 4.0,
                dropout: 0.0,
            },
            targets: vec!["nonexistent".into()],
        },
        ..options
    };
    let err = Model::load(dir.path(), &bad_targets, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nonexistent") && err.contains("match no module"),
        "{err}"
    );
}

#[test]
fn a_pruned_export_loads_back_with_the_same_predictions() {
    use lightpeft_engine::export::{export_hf_peft, export_model, load_exported};
    use lightpeft_engine::peft::PeftModule;
    use lightpeft_engine::{ModuleId, ModuleKind};
    for arch in [Architecture::Bert, Architecture::Roberta] {
        let src = tempfile::tempdir().unwrap();
        Tiny::new(arch).write(src.path(), "");
        let mut model = Model::load(src.path(), &lora_options(), &Device::Cpu).unwrap();
        // The unpruned model exports to the Hugging Face PEFT layout.
        let hf = tempfile::tempdir().unwrap();
        export_hf_peft(&model, "tiny", hf.path()).unwrap();
        let adapter = candle_core::safetensors::load(
            hf.path().join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let prefix = if arch == Architecture::Bert {
            "bert"
        } else {
            "roberta"
        };
        let key = format!("base_model.model.{prefix}.encoder.layer.1.output.dense.lora_A.weight");
        assert_eq!(adapter[&key].dims(), &[2, 24], "{key}");
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(hf.path().join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()),
            (Some(2), Some(4.0))
        );

        for v in model.trainable() {
            if v.name.ends_with("lora_B") {
                v.var
                    .set(
                        &Tensor::ones(v.var.shape(), candle_core::DType::F32, &Device::Cpu)
                            .unwrap(),
                    )
                    .unwrap();
            }
        }
        model.encoder.keep_heads(0, &[1, 3]).unwrap();
        model.encoder.keep_neurons(1, &[0, 5, 7]).unwrap();
        let q = ModuleId {
            layer: 1,
            kind: ModuleKind::Query,
        };
        let kept = model
            .encoder
            .module(q)
            .lora()
            .unwrap()
            .keep_ranks(&[1])
            .unwrap();
        model.encoder.module_mut(q).peft = kept.map(PeftModule::Lora);
        model
            .encoder
            .module_mut(ModuleId {
                layer: 0,
                kind: ModuleKind::Key,
            })
            .peft = None;
        model.encoder.disable_masks();
        assert!(
            export_hf_peft(&model, "tiny", hf.path()).is_err(),
            "pruned models have no PEFT layout"
        );

        let out = tempfile::tempdir().unwrap();
        export_model(&model, &src.path().join("tokenizer.json"), out.path()).unwrap();
        let back = load_exported(out.path(), &Device::Cpu).unwrap();
        assert_eq!(back.encoder.config.layers, model.encoder.config.layers);
        assert_eq!(back.encoder.module(q).lora().unwrap().rank(), 1);
        let pad = if arch == Architecture::Bert { 0 } else { 1 };
        let batch = tokenized_batch(out.path(), pad);
        let want = model.forward(&batch, None, false).unwrap().logits;
        let got = back.forward(&batch, None, false).unwrap().logits;
        assert_eq!(max_abs_diff(&want, &got), 0.0, "{arch:?}");
        assert_eq!(back.trainable().len(), model.trainable().len());
    }
}
