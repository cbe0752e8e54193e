//! gilfree's value codec: builtin values in a compact binary form, everything else as pickle.
//!
//! The format is described in `gilfree_core::codec`. Exact builtin types are encoded natively
//! (subclasses such as `OrderedDict` or int enums are not exact and go to pickle, so types
//! survive a round trip), and so are numpy arrays of plain dtypes (`ndarray`); pandas objects
//! are taken apart into such values and rebuilt (`reduced`). Anything else is
//! pickled (protocol 5) in place, inside the same message. See `encode` for when the whole value
//! goes to pickle instead.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
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

/// The Python functions the codec calls, which `gilfree._wire.protocol` registers when it is
/// imported (`register_hooks`): the policy lives in Python, the codec only calls it.
pub(super) struct Hooks {
    /// `pickle_value(value, share)`: `(pickle bytes, [SharedBuffer])`, the buffers being the
    /// out-of-band ones (only when `share`); cloudpickle for what pickle refuses.
    pub(super) pickle_value: Py<PyAny>,
    /// `reducer_for(type)`: the function taking such values apart (REDUCED), or None.
    pub(super) reducer_for: Py<PyAny>,
    /// `rebuild(kind, state)`: the object a REDUCED record stands for.
    pub(super) rebuild: Py<PyAny>,
}

static HOOKS: PyOnceLock<Hooks> = PyOnceLock::new();
static PICKLE_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Registers the codec's Python functions (see `Hooks`); the first registration stays, and
/// later ones return False.
#[pyfunction]
fn register_hooks(
    py: Python<'_>,
    pickle_value: Py<PyAny>,
    reducer_for: Py<PyAny>,
    rebuild: Py<PyAny>,
) -> bool {
    HOOKS
        .set(
            py,
            Hooks {
                pickle_value,
                reducer_for,
                rebuild,
            },
        )
        .is_ok()
}

/// The registered hooks; an error if nothing registered them yet.
pub(super) fn hooks(py: Python<'_>) -> PyResult<&Hooks> {
    HOOKS.get(py).ok_or_else(|| {
        PyRuntimeError::new_err(
            "gilfree's codec has no pickle fallback yet: import gilfree (gilfree._wire.protocol \
             registers it) before encoding",
        )
    })
}

/// `pickle.loads`, looked up once.
fn pickle_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    PICKLE_LOADS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("pickle")?.getattr("loads")?.unbind())
        })
        .map(|function| function.bind(py))
}

/// `(pickle bytes, [SharedBuffer])` of `value`: the buffers are the out-of-band ones (only
/// when `share`).
fn pickle_value<'py>(value: &Bound<'py, PyAny>, share: bool) -> PyResult<Bound<'py, PyAny>> {
    hooks(value.py())?
        .pickle_value
        .bind(value.py())
        .call1((value, share))
}

/// Makes `_core.encode`, `_core.decode` and `_core.DecodeError` available.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(encode, module)?)?;
    module.add_function(wrap_pyfunction!(decode, module)?)?;
    module.add_function(wrap_pyfunction!(register_hooks, module)?)?;
    module.add("DecodeError", module.py().get_type::<DecodeError>())?;
    module.add("SHARE_THRESHOLD", gilfree_core::codec::SHARE_THRESHOLD)?;
    Ok(())
}
