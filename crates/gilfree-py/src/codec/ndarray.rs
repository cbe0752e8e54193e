//! numpy arrays in the codec (the NDARRAY record of `gilfree_core::array`), without pickle.
//!
//! Only exact `numpy.ndarray`s of plain dtypes are encoded here; subclasses, object and
//! structured dtypes, dtypes carrying metadata, and dtypes numpy cannot export through the
//! buffer protocol (datetimes) go to pickle. A contiguous array's bytes are written as they lie (C or Fortran order); a
//! non-contiguous one is first copied to C order (`numpy.ascontiguousarray`). With a sink, an
//! array that is large or already in shared memory travels as a shared-buffer handle, as bytes
//! do. numpy is never imported by the encoder: until the process imported it, no object can be
//! an array.
//!
//! A received array is always writable. It is a view of the message's shared buffer when the
//! message was decoded where it lies (INDIRECT: no copy), of a shared buffer of its own when it
//! was large or already shared (a `gilfree.shared_ndarray` stays shared), else of a `bytearray`
//! copy of its bytes (see `buffer`).
#![allow(unsafe_code)] // the buffer protocol and type checks; each block says why it holds

use gilfree_core::array::{self, Header};
use gilfree_core::codec::Reader;
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use super::decoder::{decode_error, Decoder};
use super::encoder::{Encoder, Stop};
use super::view::View;
use super::DecodeError;

static NDARRAY_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static NUMPY: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
/// `dtype.str` (bytes) -> the dtype, for the decoder.
static DTYPES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
/// dtype -> `(that dtype, its str if the NDARRAY record carries it, else None)`, for the
/// encoder (see `descr_of`).
static DESCRS: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
/// dtypes remembered by the encoder before its table starts over.
const MAX_DTYPES: usize = 256;

/// `numpy.ndarray` if numpy has been imported in this process, else None.
pub(super) fn ndarray_type(py: Python<'_>) -> Option<*mut ffi::PyTypeObject> {
    if let Some(kind) = NDARRAY_TYPE.get(py) {
        return Some(kind.as_ptr().cast());
    }
    // SAFETY: sys.modules is a dict; the lookup returns a borrowed reference or null and
    // raises nothing (PyDict_GetItemString swallows errors), GIL held.
    let loaded = unsafe {
        !ffi::PyDict_GetItemString(ffi::PyImport_GetModuleDict(), c"numpy".as_ptr()).is_null()
    };
    if !loaded {
        return None;
    }
    let kind = NDARRAY_TYPE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(numpy(py)?.getattr("ndarray")?.unbind())
        })
        .ok()?;
    Some(kind.as_ptr().cast())
}

/// `dtype.str` (such as `"<f8"`) if the NDARRAY record can carry `dtype`, else None: a dtype
/// the record has no item size for (objects, structured), or with metadata (the record has no
/// room for it; pickle keeps it). Kept per dtype object (numpy makes its plain dtypes once; a
/// dtype is immutable), since asking costs two attribute lookups and a new string per array.
/// The table is keyed by dtype, but dtypes that differ only in metadata compare (and hash)
/// equal: an entry counts only for the very object it was made for.
fn descr_of<'py>(dtype: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
    let py = dtype.py();
    let cache = DESCRS.get_or_init(py, || PyDict::new(py).unbind()).bind(py);
    if let Some(known) = cache.get_item(dtype)? {
        let (made_for, descr) = known.extract::<(Bound<'py, PyAny>, Bound<'py, PyAny>)>()?;
        if made_for.is(dtype) {
            return Ok(descr.cast_into::<PyString>().ok());
        }
    }
    let descr = dtype.getattr(intern!(py, "str"))?;
    let descr = descr.cast_into::<PyString>().map_err(PyErr::from)?;
    let carried = dtype.getattr(intern!(py, "metadata"))?.is_none()
        && array::itemsize(descr.to_str()?.as_bytes()).is_some();
    if cache.len() >= MAX_DTYPES {
        cache.clear();
    }
    let descr = carried.then_some(descr);
    cache.set_item(dtype, (dtype, &descr))?;
    Ok(descr)
}

fn numpy(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    NUMPY
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("numpy")?.unbind()))
        .map(|module| module.bind(py))
}

impl Encoder<'_> {
    /// Writes an exact numpy array as NDARRAY; false (nothing written) if it goes to pickle.
    pub(super) fn ndarray(&mut self, object: &Bound<'_, PyAny>) -> Result<bool, Stop> {
        let py = object.py();
        let descr = descr_of(&object.getattr(intern!(py, "dtype"))?)?;
        let Some(descr) = descr else {
            return Ok(false);
        };
        let descr = descr.to_str()?.as_bytes();
        if let Some(view) = View::contiguous(object) {
            return self.write_array(descr, view).map(|()| true);
        }
        let copy = numpy(py)?.call_method1(intern!(py, "ascontiguousarray"), (object,))?;
        let Some(view) = View::contiguous(&copy) else {
            return Ok(false); // a dtype without a buffer (datetimes): pickle
        };
        self.write_array(descr, view).map(|()| true)
    }

    fn write_array(&mut self, descr: &[u8], view: View) -> Result<(), Stop> {
        let bytes = view.bytes();
        let header = Header {
            fortran: view.fortran(),
            descr,
            shape: view.shape(),
            byte_length: bytes.len(),
        };
        header.write(&mut self.out);
        Ok(self.buffer(view)?)
    }
}

impl<'py> Decoder<'py, '_> {
    /// Decodes an NDARRAY record after its tag.
    pub(super) fn ndarray(&self, reader: &mut Reader<'_>) -> PyResult<Bound<'py, PyAny>> {
        let header = Header::read(reader).map_err(decode_error)?;
        let (source, length) = self.buffer(reader)?;
        check_length(length, &header)?;
        array(self.py, &header, source)
    }
}

/// The array `header` describes, over the bytes of `source`.
fn array<'py>(
    py: Python<'py>,
    header: &Header<'_>,
    source: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let numpy = numpy(py).map_err(|error| {
        DecodeError::new_err(format!("an array needs numpy to decode: {error}"))
    })?;
    let dtype = dtype(py, numpy, header.descr)?;
    let shape = PyTuple::new(py, &header.shape)?;
    let order = if header.fortran {
        intern!(py, "F")
    } else {
        intern!(py, "C")
    };
    if header.byte_length == 0 {
        return numpy.call_method1(intern!(py, "empty"), (shape, dtype, order));
    }
    let flat = numpy.call_method1(intern!(py, "frombuffer"), (source, dtype))?;
    if header.shape.len() == 1 {
        return Ok(flat);
    }
    let keywords = PyDict::new(py);
    keywords.set_item(intern!(py, "order"), order)?;
    flat.call_method(intern!(py, "reshape"), (shape,), Some(&keywords))
}

fn check_length(length: usize, header: &Header<'_>) -> PyResult<()> {
    if length == header.byte_length {
        Ok(())
    } else {
        Err(DecodeError::new_err(format!(
            "an array of shape {:?} needs {} bytes, not {length}",
            header.shape, header.byte_length
        )))
    }
}

/// The dtype named by `descr` (validated by the header), made once per process.
fn dtype<'py>(
    py: Python<'py>,
    numpy: &Bound<'py, PyModule>,
    descr: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let cache = DTYPES.get_or_init(py, || PyDict::new(py).unbind()).bind(py);
    let key = PyBytes::new(py, descr);
    if let Some(dtype) = cache.get_item(&key)? {
        return Ok(dtype);
    }
    let name = std::str::from_utf8(descr)
        .map_err(|_| DecodeError::new_err("a dtype that is not ASCII"))?;
    let dtype = numpy.getattr(intern!(py, "dtype"))?.call1((name,))?;
    cache.set_item(key, &dtype)?;
    Ok(dtype)
}
