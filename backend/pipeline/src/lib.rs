//! The Light-PEFT pipeline, once, for every front end: a [`JobSpec`] (what to do, on which
//! model and data, with which hyper-parameters and device, resumed or not) runs to one typed
//! [`RunOutcome`]. Progress goes to the caller's [`Reporter`] (the engine's observer plus a
//! hook before the first step), files to its [`ArtifactStore`]. Nothing here speaks HTTP or
//! SQL: the CLI's run folders and the server's jobs are both callers.

pub mod data;
pub mod datasets;
pub mod device;
mod error;
pub mod memory;
pub mod recipe;
mod run;
pub mod store;

pub use data::{
    DataSource, Splits, bundled_files, limit_examples, load_dataset, resolve_model, subsample,
    tokenize,
};
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use memory::{check_memory, check_run_memory, machine_memory_budget, memory_inputs};
pub use recipe::{ParamCounts, plan_request, train_config};
pub use run::{EstimationFile, ForJob, JobSpec, Loaded, Prepared, Reporter, RunOutcome, Work, run};
pub use store::{ArtifactStore, Nowhere, RunFolder};
