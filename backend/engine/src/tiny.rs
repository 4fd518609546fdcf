//! A tiny random BERT/RoBERTa checkpoint in the Hugging Face layout, for plumbing tests and
//! demos where the real model's seconds per step would only slow things down. Its word-level
//! tokenizer knows a few hundred common English words; everything else is unknown.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use crate::config::Architecture;
use crate::error::{Error, Result};
use crate::model::POOLER_NAMES;

/// Sizes of a tiny checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinySpec {
    /// BERT or RoBERTa names and special tokens.
    pub arch: Architecture,
    /// Encoder layers.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads per layer.
    pub heads: usize,
    /// FFN width.
    pub ffn: usize,
    /// Longest sequence, in tokens.
    pub max_positions: usize,
}

impl TinySpec {
    /// Two layers, width 32, four heads, FFN 64, 128 positions.
    pub fn demo(arch: Architecture) -> Self {
        TinySpec {
            arch,
            layers: 2,
            hidden: 32,
            heads: 4,
            ffn: 64,
            max_positions: 128,
        }
    }
}

const WORDS: &str = "the a an and or but not no of to in on for with at by from as is are was were be been \
it this that these those he she they we you i my your his her their our its there here what which who \
good great best better fine nice love loved lovely wonderful excellent beautiful brilliant funny fun \
charming moving powerful enjoyable delightful fresh smart clever perfect solid strong warm touching \
bad worst worse awful terrible boring dull poor weak stupid mess waste tedious bland flat lame ugly \
annoying pointless predictable silly slow painful disappointing forgettable \
movie film story plot script cast actor actors acting performance characters director scenes scene \
comedy drama thriller music ending audience time life world work way people man woman year years \
very too so more most much little less just only really quite rather well even still never ever \
all some any every one two first last new old long short big small high low real true hard easy \
make makes made see seen look looks feel feels watch watching get gets go goes come comes \
like likes enjoy hate hates want give takes take find found think thought know";

/// Writes `config.json`, `model.safetensors` and `tokenizer.json` of a random model into `dir`.
pub fn write_tiny_model(dir: &Path, spec: &TinySpec, seed: u64) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let (specials, post, pad, type_vocab) = match spec.arch {
        Architecture::Bert => (
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
            r#"{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}"#,
            0,
            2,
        ),
        Architecture::Roberta => (
            ["<s>", "<pad>", "</s>", "<unk>"],
            r#"{"type":"RobertaProcessing","sep":["</s>",2],"cls":["<s>",0],"trim_offsets":true,"add_prefix_space":false}"#,
            1,
            1,
        ),
    };
    let mut words: Vec<&str> = specials.to_vec();
    for w in WORDS.split_whitespace() {
        if !words.contains(&w) {
            words.push(w);
        }
    }
    let model_type = match spec.arch {
        Architecture::Bert => "bert",
        Architecture::Roberta => "roberta",
    };
    let config = format!(
        r#"{{"model_type":"{model_type}","hidden_size":{},"num_hidden_layers":{},"num_attention_heads":{},"intermediate_size":{},"vocab_size":{},"max_position_embeddings":{},"type_vocab_size":{type_vocab},"pad_token_id":{pad},"hidden_act":"gelu","layer_norm_eps":1e-12}}"#,
        spec.hidden,
        spec.layers,
        spec.heads,
        spec.ffn,
        words.len(),
        spec.max_positions
            + if spec.arch == Architecture::Roberta {
                2
            } else {
                0
            },
    );
    let vocab: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| format!("\"{w}\":{i}"))
        .collect();
    let unk = if spec.arch == Architecture::Bert {
        "[UNK]"
    } else {
        "<unk>"
    };
    let tokenizer = format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":{{"type":"Lowercase"}},"pre_tokenizer":{{"type":"Whitespace"}},"post_processor":{post},"decoder":null,"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"{unk}"}}}}"#,
        vocab.join(",")
    );
    let path = dir.join("config.json");
    std::fs::write(&path, config).map_err(|e| io(&path, e))?;
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, tokenizer).map_err(|e| io(&path, e))?;
    let tensors = tiny_tensors(spec, words.len(), type_vocab, seed)?;
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &path).map_err(|e| Error::Weights {
        path: path.clone(),
        tensor: String::new(),
        message: e.to_string(),
    })
}

fn tiny_tensors(
    spec: &TinySpec,
    vocab: usize,
    type_vocab: usize,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    let mut add = |name: String, shape: &[usize], fill: Option<f32>| -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match fill {
            Some(v) => vec![v; n],
            None => (0..n).map(|_| rng.random_range(-0.1..0.1)).collect(),
        };
        out.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        Ok(())
    };
    let (d, f) = (spec.hidden, spec.ffn);
    let positions = spec.max_positions
        + if spec.arch == Architecture::Roberta {
            2
        } else {
            0
        };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab, d],
        None,
    )?;
    add(
        "embeddings.position_embeddings.weight".into(),
        &[positions, d],
        None,
    )?;
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[type_vocab, d],
        None,
    )?;
    add("embeddings.LayerNorm.weight".into(), &[d], Some(1.0))?;
    add("embeddings.LayerNorm.bias".into(), &[d], Some(0.0))?;
    for l in 0..spec.layers {
        let p = format!("encoder.layer.{l}");
        for (name, rows, cols) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", f, d),
            ("output.dense", d, f),
        ] {
            add(format!("{p}.{name}.weight"), &[rows, cols], None)?;
            add(format!("{p}.{name}.bias"), &[rows], Some(0.0))?;
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}.{ln}.weight"), &[d], Some(1.0))?;
            add(format!("{p}.{ln}.bias"), &[d], Some(0.0))?;
        }
    }
    if spec.arch == Architecture::Bert {
        add(POOLER_NAMES[0].into(), &[d, d], None)?;
        add(POOLER_NAMES[1].into(), &[d], Some(0.0))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::inspect_model_dir;

    #[test]
    fn both_layouts_load_and_name_their_shapes() {
        for arch in [Architecture::Bert, Architecture::Roberta] {
            let dir = tempfile::tempdir().unwrap();
            write_tiny_model(dir.path(), &TinySpec::demo(arch), 1).unwrap();
            let summary = inspect_model_dir(dir.path()).unwrap();
            assert_eq!(summary.layers, 2, "{arch:?}");
        }
    }
}
