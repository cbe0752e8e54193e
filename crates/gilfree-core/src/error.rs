//! The crate's one error type.
use std::io;

/// Everything that can go wrong in gilfree-core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A system call failed.
    #[error("{context}: {source}")]
    Os {
        /// What was being attempted.
        context: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A shared segment did not have the expected layout.
    #[error("invalid shared segment: {0}")]
    InvalidSegment(String),
    /// A caller passed an argument outside the allowed range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Encoded input that is not a valid message.
    #[error("cannot decode: {0}")]
    Decode(String),
    /// A wait ran out of time.
    #[error("timed out")]
    TimedOut,
}

impl CoreError {
    /// Wraps an OS error with what was being attempted.
    #[cold]
    pub fn os(context: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Os {
            context,
            source: source.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
