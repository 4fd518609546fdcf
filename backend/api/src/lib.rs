//! Types shared by the server, the CLI and the dashboard. Compiles for wasm32: no I/O here.

#![warn(missing_docs)]

pub mod params;
pub mod query;
pub mod rest;

pub use params::{
    ALL_TARGETS, Choice, Hyperparams, HyperparamsPatch, PARAMS, ParamError, ParamKind, ParamSpec,
    PeftKind, Preset, PruningScope, RankScope, Targets,
};
