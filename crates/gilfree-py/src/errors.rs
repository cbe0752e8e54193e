//! The one conversion from the core's errors to Python exceptions.
use gilfree_core::CoreError;
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::PyErr;

/// A core error on its way to Python.
pub struct Error(CoreError);

impl From<CoreError> for Error {
    fn from(error: CoreError) -> Self {
        Self(error)
    }
}

impl From<Error> for PyErr {
    #[cold]
    fn from(Error(error): Error) -> Self {
        match error {
            CoreError::Os { context, source } => {
                let message = format!("{context}: {source}");
                match source.raw_os_error() {
                    Some(errno) => PyOSError::new_err((errno, message)),
                    None => PyOSError::new_err(message),
                }
            }
            CoreError::InvalidSegment(_) | CoreError::InvalidArgument(_) => {
                PyValueError::new_err(error.to_string())
            }
            CoreError::TimedOut => PyTimeoutError::new_err(error.to_string()),
            CoreError::Decode(_) => crate::codec::DecodeError::new_err(error.to_string()),
        }
    }
}

/// The bindings' result type.
pub type Result<T> = std::result::Result<T, Error>;
