//! lightpeft's ML engine: a trainable BERT/RoBERTa encoder with Light-PEFT's hooks
//! (head and neuron masks, LoRA, bottleneck adapters), tokenisation and physical pruning.
//!
//! It knows nothing of HTTP or SQL; callers drive it through plain Rust types.

#![warn(missing_docs)]

pub mod bench;
pub mod config;
pub mod data;
pub mod encoder;
pub mod error;
pub mod export;
pub mod memory;
pub mod model;
mod ops;
pub mod peft;
pub mod pipeline;
pub mod plan;
pub mod tiny;
pub mod tokenize;
pub mod train;
pub mod weights;

/// The device models run on (CPU unless built with an accelerator).
pub use candle_core::Device;
pub use ops::with_composed_ops;

/// Whether this build has candle's CUDA backend (the `cuda` feature).
pub fn cuda_built() -> bool {
    candle_core::utils::cuda_is_available()
}
pub use config::{Architecture, LayerShape, ModelConfig, ModelFiles};
pub use encoder::{Encoder, ModuleId, ModuleKind, Positions, Training};
pub use error::{Error, Result};
pub use model::{
    Model, ModelOptions, ModelOutput, ModelSummary, NamedVar, ParamKind, PeftMethod,
    REFERENCE_TARGETS, cross_entropy, inspect_model_dir,
};
pub use peft::{AdapterConfig, LoraConfig};
pub use tokenize::{Batch, Encoded, TextEncoder};
pub use weights::Checkpoint;
