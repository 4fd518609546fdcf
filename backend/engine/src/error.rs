//! The engine's one error type. Every variant says what was being done and with what.

use std::path::PathBuf;

/// Errors raised by the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model's config.json is malformed or describes something the engine does not support.
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The weights file does not match the config, or lacks a tensor.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// The tensor name as looked up (with its prefix).
        tensor: String,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer file could not be loaded or used.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An argument is outside what the operation accepts.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The argument.
        what: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// A dataset file is malformed, or the dataset it yields is unusable.
    #[error("{path}{}: {message}", line_suffix(.line))]
    Data {
        /// The dataset file.
        path: PathBuf,
        /// The 1-based line at fault, when the fault has one.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The planner refused its inputs (a ratio, a stage-1 record, a shape).
    #[error(transparent)]
    Plan(#[from] lightpeft_plan::Error),
    /// A tensor operation failed.
    #[error("{context}: {source}")]
    Tensor {
        /// What the engine was doing.
        context: String,
        /// candle's error.
        source: candle_core::Error,
    },
}

/// `:12` for line 12, so [`Error::Data`] reads like a compiler's `file:line: message`.
fn line_suffix(line: &Option<usize>) -> String {
    line.map(|line| format!(":{line}")).unwrap_or_default()
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<candle_core::Error> for Error {
    fn from(source: candle_core::Error) -> Self {
        Error::Tensor {
            context: "tensor operation".to_string(),
            source,
        }
    }
}

/// Adds context to candle errors.
pub(crate) trait TensorContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Tensor {
            context: context(),
            source,
        })
    }
}

impl<T> TensorContext<T> for Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| match e {
            Error::Tensor {
                context: inner,
                source,
            } => Error::Tensor {
                context: format!("{}: {inner}", context()),
                source,
            },
            other => other,
        })
    }
}

/// Builds an [`Error::Invalid`].
pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        message: message.into(),
    }
}
