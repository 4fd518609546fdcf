//! The pipeline's one error type.

use std::path::PathBuf;

/// Everything that can stop a run before or while it trains.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the engine (model, data, training, export).
    #[error(transparent)]
    Engine(#[from] lightpeft_engine::Error),
    /// A file of a run or of the data could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The job asks for something impossible (bad task files, an unknown device, no plan).
    #[error("{0}")]
    Usage(String),
    /// The run's estimated peak memory is over the caller's budget; nothing was trained.
    #[error("{message}")]
    OverMemory {
        /// The hyper-parameter that sets the peak (`batch_size` or `eval_batch_size`).
        field: &'static str,
        /// What it needs, the budget and what to lower.
        message: String,
    },
    /// The caller's artifact store could not keep or hand back an artifact (an object store
    /// that is unreachable or refuses a write).
    #[error("{0}")]
    Artifact(String),
    /// The caller's hook refused to let the run go on (e.g. its bookkeeping failed).
    #[error("{0}")]
    Caller(String),
}

impl Error {
    /// A file error from any displayable cause.
    pub fn file(path: impl Into<PathBuf>, cause: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            message: cause.to_string(),
        }
    }
}

/// The pipeline's result type.
pub type Result<T> = std::result::Result<T, Error>;
