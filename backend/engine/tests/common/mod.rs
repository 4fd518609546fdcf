//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use lightpeft_engine::Architecture;
use rand::{Rng, SeedableRng};

/// The real all-MiniLM-L6-v2 folder fetched by `lightpeft assets fetch`.
pub fn minilm_dir() -> PathBuf {
    let dir = lightpeft_assets::bundled_model_dir(&lightpeft_assets::default_data_dir());
    assert!(
        dir.join("model.safetensors").is_file(),
        "the real MiniLM checkpoint is missing at {}: run `cargo run --release -p lightpeft -- assets fetch` first",
        dir.display()
    );
    dir
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Sizes of the tiny random checkpoints.
pub struct Tiny {
    pub arch: Architecture,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
    pub vocab: usize,
}

impl Tiny {
    pub fn new(arch: Architecture) -> Self {
        Tiny {
            arch,
            layers: 2,
            hidden: 16,
            heads: 4,
            ffn: 24,
            vocab: 12,
        }
    }

    pub fn config_json(&self) -> String {
        let (model_type, pad, type_vocab) = match self.arch {
            Architecture::Bert => ("bert", 0, 2),
            Architecture::Roberta => ("roberta", 1, 1),
        };
        format!(
            r#"{{"model_type":"{model_type}","hidden_size":{},"num_hidden_layers":{},
            "num_attention_heads":{},"intermediate_size":{},"vocab_size":{},
            "max_position_embeddings":32,"type_vocab_size":{type_vocab},"pad_token_id":{pad},
            "hidden_act":"gelu"}}"#,
            self.hidden, self.layers, self.heads, self.ffn, self.vocab
        )
    }

    /// Random tensors under Hugging Face names, each name prefixed with `prefix`.
    pub fn tensors(&self, prefix: &str, seed: u64) -> HashMap<String, Tensor> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut t = HashMap::new();
        let mut add = |name: String, shape: &[usize]| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
            let tensor = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
            t.insert(format!("{prefix}{name}"), tensor);
        };
        let (d, f) = (self.hidden, self.ffn);
        let type_vocab = if self.arch == Architecture::Bert {
            2
        } else {
            1
        };
        add("embeddings.word_embeddings.weight".into(), &[self.vocab, d]);
        add("embeddings.position_embeddings.weight".into(), &[32, d]);
        add(
            "embeddings.token_type_embeddings.weight".into(),
            &[type_vocab, d],
        );
        add("embeddings.LayerNorm.weight".into(), &[d]);
        add("embeddings.LayerNorm.bias".into(), &[d]);
        for l in 0..self.layers {
            let p = format!("encoder.layer.{l}");
            for (name, out, inp) in [
                ("attention.self.query", d, d),
                ("attention.self.key", d, d),
                ("attention.self.value", d, d),
                ("attention.output.dense", d, d),
                ("intermediate.dense", f, d),
                ("output.dense", d, f),
            ] {
                add(format!("{p}.{name}.weight"), &[out, inp]);
                add(format!("{p}.{name}.bias"), &[out]);
            }
            for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
                add(format!("{p}.{ln}.weight"), &[d]);
                add(format!("{p}.{ln}.bias"), &[d]);
            }
        }
        if self.arch == Architecture::Bert {
            add("pooler.dense.weight".into(), &[d, d]);
            add("pooler.dense.bias".into(), &[d]);
        }
        t
    }

    /// A word-level tokenizer.json for the tiny vocabulary, with the architecture's template.
    pub fn tokenizer_json(&self) -> String {
        let words = [
            "hello", "world", "good", "bad", "movie", "film", "great", "awful",
        ];
        let (specials, post) = match self.arch {
            Architecture::Bert => (
                ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                r#"{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}"#,
            ),
            Architecture::Roberta => (
                ["<s>", "<pad>", "</s>", "<unk>"],
                r#"{"type":"RobertaProcessing","sep":["</s>",2],"cls":["<s>",0],"trim_offsets":true,"add_prefix_space":false}"#,
            ),
        };
        let vocab: Vec<String> = specials
            .iter()
            .chain(words.iter())
            .enumerate()
            .map(|(i, w)| format!("\"{w}\":{i}"))
            .collect();
        let unk = specials[if self.arch == Architecture::Bert {
            1
        } else {
            3
        }];
        format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{{"type":"Whitespace"}},"post_processor":{post},
            "decoder":null,"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"{unk}"}}}}"#,
            vocab.join(",")
        )
    }

    /// Writes config.json, model.safetensors and tokenizer.json into `dir`.
    pub fn write(&self, dir: &Path, prefix: &str) {
        std::fs::write(dir.join("config.json"), self.config_json()).unwrap();
        std::fs::write(dir.join("tokenizer.json"), self.tokenizer_json()).unwrap();
        candle_core::safetensors::save(&self.tensors(prefix, 11), dir.join("model.safetensors"))
            .unwrap();
    }
}
