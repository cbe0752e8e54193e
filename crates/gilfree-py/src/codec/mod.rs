//! gilfree's value codec: builtin values in a compact binary form, everything else as pickle.
//!
//! The format is described in `gilfree_core::codec`. Exact builtin types are encoded natively
//! (subclasses such as `OrderedDict` or int enums are not exact and go to pickle, so types
//! survive a round trip), and so are numpy arrays of plain dtypes (`ndarray`); pandas objects
//! are taken apart into such values and rebuilt (`reduced`). Anything else is
//! pickled (protocol 5) in place, inside the same message. See `encode` for when the whole value
//! goes to pickle instead.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

mod buffer;
mod decoder;
mod encoder;
mod kind;
mod ndarray;
mod output;
mod reduced;
mod scalars;
mod view;

pub use decoder::decode;
pub use encoder::encode;

pyo3::create_exception!(
    gilfree._core,
    DecodeError,
    PyValueError,
    "Bytes that are not a valid gilfree message."
);

/// `gilfree._protocol.pickle_value`: pickle, or cloudpickle for what pickle refuses (so a
/// lambda can be an argument too). The policy lives in Python; the codec only calls it.
static PICKLE_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static PICKLE_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python function `module.name`, looked up once per process and kept in `cell`.
fn python_function<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || Ok(py.import(module)?.getattr(name)?.unbind()))
        .map(|function| function.bind(py))
}

/// `(pickle bytes, [SharedBuffer])`: the buffers are the out-of-band ones (only when `share`).
fn pickle_value<'py>(value: &Bound<'py, PyAny>, share: bool) -> PyResult<Bound<'py, PyAny>> {
    python_function(
        value.py(),
        &PICKLE_DUMPS,
        "gilfree._protocol",
        "pickle_value",
    )?
    .call1((value, share))
}

/// Makes `_core.encode`, `_core.decode` and `_core.DecodeError` available.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(encode, module)?)?;
    module.add_function(wrap_pyfunction!(decode, module)?)?;
    module.add("DecodeError", module.py().get_type::<DecodeError>())?;
    module.add("SHARE_THRESHOLD", gilfree_core::codec::SHARE_THRESHOLD)?;
    Ok(())
}
