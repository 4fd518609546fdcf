//! What the planner knows of a checkpoint's layout: its architecture and the linear layers of
//! an encoder layer that PEFT modules attach to. The engine builds its encoder around the same
//! types, so a plan's module ids are the engine's.

use serde::{Deserialize, Serialize};

/// The checkpoint layouts the engine can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// BERT: absolute positions from 0, token types, pooler + classifier head.
    Bert,
    /// RoBERTa: positions from `pad_token_id + 1`, `RobertaClassificationHead`.
    Roberta,
}

impl Architecture {
    /// The prefix Hugging Face puts in front of encoder tensors in task checkpoints.
    pub fn checkpoint_prefix(self) -> &'static str {
        match self {
            Architecture::Bert => "bert.",
            Architecture::Roberta => "roberta.",
        }
    }
}

/// The six linear layers of an encoder layer that PEFT modules can attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// `attention.self.query`
    Query,
    /// `attention.self.key`
    Key,
    /// `attention.self.value`
    Value,
    /// `attention.output.dense` (W_O)
    AttentionOutput,
    /// `intermediate.dense` (W_1)
    Intermediate,
    /// `output.dense` (W_2)
    Output,
}

impl ModuleKind {
    /// All kinds, in the order they run.
    pub const ALL: [ModuleKind; 6] = [
        ModuleKind::Query,
        ModuleKind::Key,
        ModuleKind::Value,
        ModuleKind::AttentionOutput,
        ModuleKind::Intermediate,
        ModuleKind::Output,
    ];

    /// The module's path inside `encoder.layer.N.`, as in Hugging Face checkpoints.
    pub fn hf_path(self) -> &'static str {
        match self {
            ModuleKind::Query => "attention.self.query",
            ModuleKind::Key => "attention.self.key",
            ModuleKind::Value => "attention.self.value",
            ModuleKind::AttentionOutput => "attention.output.dense",
            ModuleKind::Intermediate => "intermediate.dense",
            ModuleKind::Output => "output.dense",
        }
    }
}

/// One PEFT-able linear layer: which layer, which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModuleId {
    /// Encoder layer index.
    pub layer: usize,
    /// Which of the six linears.
    pub kind: ModuleKind,
}

impl ModuleId {
    /// The qualified name, e.g. `encoder.layer.3.attention.output.dense`.
    pub fn name(&self) -> String {
        format!("encoder.layer.{}.{}", self.layer, self.kind.hf_path())
    }

    /// Whether the qualified name ends with one of `targets` (the reference's suffix rule:
    /// `output.dense` matches both the attention output and the FFN output).
    pub fn matches_any(&self, targets: &[String]) -> bool {
        let name = self.name();
        targets
            .iter()
            .any(|t| !t.is_empty() && name.ends_with(t.as_str()))
    }
}
