//! The binary's one error type.

use std::path::PathBuf;

/// Everything that can stop a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the engine (model, data, training). Boxed, like the pipeline's and the store's:
    /// tensor and database errors are large, and every `Result` here would carry their size.
    #[error(transparent)]
    Engine(Box<lightpeft_engine::Error>),
    /// From the planner (a plan the estimation cannot give).
    #[error(transparent)]
    Plan(#[from] lightpeft_engine::plan::Error),
    /// From the pipeline (data, model, artifacts of a run).
    #[error(transparent)]
    Pipeline(Box<lightpeft_pipeline::Error>),
    /// From fetching or importing assets.
    #[error(transparent)]
    Assets(#[from] lightpeft_assets::AssetError),
    /// A hyper-parameter value was rejected.
    #[error("--{}: {}", .0.field.replace('_', "-"), .0.message)]
    Param(lightpeft_api::ParamError),
    /// A file of a run could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The artifact store (a folder or an object store) failed or refused.
    #[error("{0}")]
    Artifacts(String),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// The server could not start or stopped on an error.
    #[error("{0}")]
    Server(String),
    /// The server's store failed (a job's thread reads and writes through it).
    #[error(transparent)]
    Store(Box<crate::server::StoreError>),
}

impl From<lightpeft_engine::Error> for Error {
    fn from(e: lightpeft_engine::Error) -> Self {
        Error::Engine(Box::new(e))
    }
}

impl From<lightpeft_pipeline::Error> for Error {
    fn from(e: lightpeft_pipeline::Error) -> Self {
        Error::Pipeline(Box::new(e))
    }
}

impl From<crate::server::StoreError> for Error {
    fn from(e: crate::server::StoreError) -> Self {
        Error::Store(Box::new(e))
    }
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

/// The binary's result type.
pub type Result<T> = std::result::Result<T, Error>;
