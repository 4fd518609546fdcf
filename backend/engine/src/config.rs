//! The encoder's configuration, read from a Hugging Face `config.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The checkpoint layouts live in the planner's crate, whose parameter counts depend on them.
pub use lightpeft_plan::Architecture;

/// The architecture a Hugging Face `model_type` names, if the engine can load it.
fn architecture_of(model_type: &str) -> Option<Architecture> {
    match model_type {
        "bert" => Some(Architecture::Bert),
        "roberta" | "xlm-roberta" => Some(Architecture::Roberta),
        _ => None,
    }
}

/// The shape of one encoder layer; shrinks when heads or FFN neurons are pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    /// Attention heads kept in this layer (may be 0).
    pub heads: usize,
    /// FFN neurons kept in this layer (may be 0).
    pub ffn: usize,
}

/// Everything the encoder needs to know about a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Checkpoint layout.
    pub architecture: Architecture,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Heads per layer in the unpruned model.
    pub num_attention_heads: usize,
    /// FFN width per layer in the unpruned model.
    pub intermediate_size: usize,
    /// Current per-layer shapes (all equal until something is pruned).
    pub layers: Vec<LayerShape>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Rows of the position-embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Dropout on hidden states.
    pub hidden_dropout_prob: f32,
    /// Dropout on attention probabilities.
    pub attention_probs_dropout_prob: f32,
    /// Dropout in the classification head (falls back to the hidden dropout).
    pub classifier_dropout: f32,
    /// Id of the padding token.
    pub pad_token_id: u32,
    /// Std of the normal init for new head weights.
    pub initializer_range: f64,
}

/// The subset of Hugging Face's config.json that the engine reads.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: Option<String>,
    vocab_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_dropout_prob: Option<f32>,
    attention_probs_dropout_prob: Option<f32>,
    classifier_dropout: Option<f32>,
    pad_token_id: Option<u32>,
    initializer_range: Option<f64>,
    position_embedding_type: Option<String>,
    /// Written by lightpeft when it exports a pruned encoder.
    lightpeft_layers: Option<Vec<LayerShape>>,
}

impl ModelConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses config.json text; `path` is only used in error messages.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| fail(format!("not a valid config: {e}")))?;
        let architecture = detect_architecture(&raw).map_err(fail)?;
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "gelu"
        {
            return Err(fail(format!(
                "hidden_act `{act}` is not supported (only exact-erf `gelu`)"
            )));
        }
        if let Some(kind) = raw.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            return Err(fail(format!(
                "position_embedding_type `{kind}` is not supported (only `absolute`)"
            )));
        }
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(fail(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        let full = LayerShape {
            heads: raw.num_attention_heads,
            ffn: raw.intermediate_size,
        };
        let layers = match raw.lightpeft_layers {
            Some(layers) => {
                if layers.len() != raw.num_hidden_layers {
                    return Err(fail(format!(
                        "lightpeft_layers has {} entries but num_hidden_layers is {}",
                        layers.len(),
                        raw.num_hidden_layers
                    )));
                }
                if let Some((l, s)) = layers
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.heads > full.heads || s.ffn > full.ffn)
                {
                    return Err(fail(format!(
                        "lightpeft_layers[{l}] = {s:?} exceeds the unpruned shape {full:?}"
                    )));
                }
                layers
            }
            None => vec![full; raw.num_hidden_layers],
        };
        let hidden_dropout_prob = raw.hidden_dropout_prob.unwrap_or(0.1);
        let (default_eps, default_pad) = match architecture {
            Architecture::Bert => (1e-12, 0),
            Architecture::Roberta => (1e-5, 1),
        };
        let config = ModelConfig {
            architecture,
            hidden_size: raw.hidden_size,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            layers,
            vocab_size: raw.vocab_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size.unwrap_or(2),
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(default_eps),
            hidden_dropout_prob,
            attention_probs_dropout_prob: raw.attention_probs_dropout_prob.unwrap_or(0.1),
            classifier_dropout: raw.classifier_dropout.unwrap_or(hidden_dropout_prob),
            pad_token_id: raw.pad_token_id.unwrap_or(default_pad),
            initializer_range: raw.initializer_range.unwrap_or(0.02),
        };
        for (what, p) in [
            ("hidden_dropout_prob", config.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                config.attention_probs_dropout_prob,
            ),
            ("classifier_dropout", config.classifier_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(fail(format!("{what} = {p} is outside [0, 1)")));
            }
        }
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Serialises this config as a Hugging Face config.json, with the pruned shapes in
    /// `lightpeft_layers` so that a pruned export loads back.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let model_type = match self.architecture {
            Architecture::Bert => "bert",
            Architecture::Roberta => "roberta",
        };
        serde_json::json!({
            "model_type": model_type,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.layers.len(),
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "classifier_dropout": self.classifier_dropout,
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "lightpeft_layers": self.layers,
        })
    }
}

fn detect_architecture(raw: &RawConfig) -> std::result::Result<Architecture, String> {
    if let Some(model_type) = raw.model_type.as_deref() {
        return architecture_of(model_type).ok_or_else(|| {
            format!("unknown architecture: model_type `{model_type}` (supported: bert, roberta)")
        });
    }
    let names = raw.architectures.as_deref().unwrap_or_default();
    for name in names {
        if name.starts_with("Bert") {
            return Ok(Architecture::Bert);
        }
        if name.starts_with("Roberta") || name.starts_with("XLMRoberta") {
            return Ok(Architecture::Roberta);
        }
    }
    Err(format!(
        "unknown architecture: no model_type and architectures {names:?} names no BERT or RoBERTa model"
    ))
}

/// The files of a Hugging Face model folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// config.json
    pub config: PathBuf,
    /// model.safetensors
    pub weights: PathBuf,
    /// tokenizer.json
    pub tokenizer: PathBuf,
}

impl ModelFiles {
    /// Finds the three required files in `dir`, failing with the first missing one.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let need = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::Io {
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("the model folder must contain {name}"),
                    ),
                    path,
                })
            }
        };
        Ok(ModelFiles {
            config: need("config.json")?,
            weights: need("model.safetensors")?,
            tokenizer: need("tokenizer.json")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"{"model_type":"bert","hidden_size":8,"num_hidden_layers":2,
        "num_attention_heads":2,"intermediate_size":16,"vocab_size":10,
        "max_position_embeddings":16,"hidden_act":"gelu"}"#;

    #[test]
    fn parses_defaults_per_architecture() {
        let c = ModelConfig::from_json(MINI, Path::new("c.json")).unwrap();
        assert_eq!(c.architecture, Architecture::Bert);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.layers, vec![LayerShape { heads: 2, ffn: 16 }; 2]);
        assert_eq!(c.head_dim(), 4);
        let r = ModelConfig::from_json(
            &MINI.replace("\"bert\"", "\"roberta\""),
            Path::new("c.json"),
        )
        .unwrap();
        assert_eq!((r.layer_norm_eps, r.pad_token_id), (1e-5, 1));
    }

    #[test]
    fn round_trips_pruned_shapes() {
        let mut c = ModelConfig::from_json(MINI, Path::new("c.json")).unwrap();
        c.layers[1] = LayerShape { heads: 0, ffn: 3 };
        let back =
            ModelConfig::from_json(&c.to_hf_json().to_string(), Path::new("c.json")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_unknown_architecture_naming_file() {
        let err = ModelConfig::from_json(
            &MINI.replace("\"bert\"", "\"gpt2\""),
            Path::new("/m/config.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/m/config.json"), "{err}");
        assert!(
            err.contains("unknown architecture") && err.contains("gpt2"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_values() {
        for (from, to, expect) in [
            ("\"gelu\"", "\"relu\"", "hidden_act"),
            (
                "\"num_attention_heads\":2",
                "\"num_attention_heads\":3",
                "multiple",
            ),
            (
                "\"hidden_size\":8",
                "\"hidden_size\":\"x\"",
                "not a valid config",
            ),
        ] {
            let err = ModelConfig::from_json(&MINI.replace(from, to), Path::new("c.json"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{from}->{to}: {err}");
        }
    }
}
