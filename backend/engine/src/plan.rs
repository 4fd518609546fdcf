//! The pruning planner, re-exported from `lightpeft-plan` (no tensors, builds for wasm32, so the
//! server and the dashboard use the same rules), plus the one step that needs the engine's
//! config type: the planner's shape of a checkpoint.

pub use lightpeft_plan::*;

use crate::config::{LayerShape, ModelConfig};

/// The shape of an unpruned checkpoint; fails for a config that describes a pruned one,
/// because stage 1 and so the plan start from the full model.
pub fn shape_from_config(
    config: &ModelConfig,
    num_labels: usize,
    lora: Option<LoraShape>,
) -> crate::Result<ModelShape> {
    let full =
        |l: &LayerShape| l.heads == config.num_attention_heads && l.ffn == config.intermediate_size;
    if !config.layers.iter().all(full) {
        return Err(crate::error::invalid(
            "model shape",
            "the config describes a pruned encoder; plan from the unpruned one",
        ));
    }
    let shape = ModelShape {
        architecture: config.architecture,
        layers: config.layers.len(),
        heads: config.num_attention_heads,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        vocab_size: config.vocab_size,
        max_position_embeddings: config.max_position_embeddings,
        type_vocab_size: config.type_vocab_size,
        num_labels,
        lora,
    };
    shape.validate()?;
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_come_from_unpruned_configs_only() {
        let json = |extra: &str| {
            format!(
                r#"{{"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 2,
                "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522,
                "max_position_embeddings": 512, "type_vocab_size": 2{extra}}}"#
            )
        };
        let path = std::path::Path::new("config.json");
        let config = ModelConfig::from_json(&json(""), path).unwrap();
        let shape = shape_from_config(&config, 3, None).unwrap();
        assert_eq!(
            (
                shape.layers,
                shape.heads,
                shape.head_dim(),
                shape.num_labels
            ),
            (2, 12, 32, 3)
        );
        let pruned =
            json(r#", "lightpeft_layers": [{"heads": 7, "ffn": 1536}, {"heads": 12, "ffn": 0}]"#);
        let config = ModelConfig::from_json(&pruned, path).unwrap();
        let error = shape_from_config(&config, 3, None).unwrap_err();
        assert!(error.to_string().contains("pruned"), "{error}");
    }
}
