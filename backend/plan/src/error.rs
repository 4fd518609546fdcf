//! The planner's one error type. Every failure names the input at fault, so a caller can show
//! it next to the slider or field that produced it.

/// Errors raised by the planner.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An input (a ratio, a record, a shape) is outside what the planner accepts.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// The input, by the name the caller gave it (`head_ratio`, `neuron_masks`, ...).
        what: &'static str,
        /// Why it is rejected.
        message: String,
    },
}

/// The planner's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds an [`Error::Invalid`].
pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        message: message.into(),
    }
}
