//! The decoder: checks every read against the input (see `gilfree_core::codec::Reader`),
//! refuses counts the input cannot back, and limits nesting, so garbage input raises
//! `DecodeError` instead of crashing or allocating without bound.
#![allow(unsafe_code)] // raw CPython constructors on the hot path; each block says why it holds
#![allow(clippy::cast_possible_wrap)] // counts are bounded by the input length (< isize::MAX)

use gilfree_core::codec::{self, shared_kind, tag, Reader, MAX_DEPTH};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFrozenSet, PyList, PyMemoryView, PySet};

use super::{pickle_loads, DecodeError};
use crate::buffers::{open_buffer, SharedBuffer};

/// Decodes what `encode` made. `trusted=False` refuses messages that carry pickles or shared
/// buffer handles (unpickling runs code; a handle opens memory of another process): for input
/// that does not come from gilfree's own processes. Raises `DecodeError` on invalid input.
#[pyfunction]
#[pyo3(signature = (data, *, trusted = true))]
pub fn decode<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    trusted: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: asks `data` for a simple contiguous buffer (bytes, memoryview, SharedBuffer...).
    if unsafe { ffi::PyObject_GetBuffer(data.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) } != 0
    {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: PyObject_GetBuffer succeeded and filled the view.
    let mut view = unsafe { view.assume_init() };
    // SAFETY: the view pins `len` readable bytes at `buf` until it is released below.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            view.buf.cast::<u8>(),
            usize::try_from(view.len).unwrap_or(0),
        )
    };
    let result = decode_bytes(py, bytes, trusted);
    // SAFETY: releases the view acquired above, exactly once.
    unsafe { ffi::PyBuffer_Release(&raw mut view) };
    result
}

fn decode_bytes<'py>(py: Python<'py>, data: &[u8], trusted: bool) -> PyResult<Bound<'py, PyAny>> {
    decode_message(py, data, trusted, None)
}

/// Decodes the message `data`; `backing` is the shared buffer `data` lies in, if it does.
fn decode_message<'py>(
    py: Python<'py>,
    data: &[u8],
    trusted: bool,
    backing: Option<&SharedBuffer>,
) -> PyResult<Bound<'py, PyAny>> {
    if data.get(1) == Some(&tag::INDIRECT) {
        let mut reader = Reader::new(data).map_err(decode_error)?;
        reader.byte().map_err(decode_error)?;
        if !trusted {
            return Err(DecodeError::new_err("the message carries a shared buffer"));
        }
        let buffer = open_handle(&mut reader)?;
        if !reader.at_end() {
            return Err(DecodeError::new_err("bytes after an indirect message"));
        }
        let inner = buffer.bytes();
        if inner.get(1) == Some(&tag::INDIRECT) {
            return Err(DecodeError::new_err(
                "an indirect message points to another",
            ));
        }
        return decode_message(py, inner, trusted, Some(&buffer));
    }
    let mut reader = Reader::new(data).map_err(decode_error)?;
    let value = Decoder {
        py,
        trusted,
        backing,
    }
    .value(&mut reader, 0)?;
    if !reader.at_end() {
        return Err(DecodeError::new_err(format!(
            "{} bytes after the value",
            reader.remaining()
        )));
    }
    Ok(value)
}

#[cold]
#[allow(clippy::needless_pass_by_value)] // shaped for `map_err`
pub(super) fn decode_error(error: gilfree_core::CoreError) -> PyErr {
    DecodeError::new_err(error.to_string())
}

pub(super) struct Decoder<'py, 'data> {
    pub(super) py: Python<'py>,
    trusted: bool,
    /// The shared buffer the message lies in, when it is decoded in place (INDIRECT).
    backing: Option<&'data SharedBuffer>,
}

impl<'py> Decoder<'py, '_> {
    pub(super) fn value(
        &self,
        reader: &mut Reader<'_>,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        if depth > MAX_DEPTH {
            return Err(decode_error(codec::too_deep()));
        }
        let py = self.py;
        let tag = reader.byte().map_err(decode_error)?;
        Ok(match tag {
            tag::LIST => {
                let count = reader.count(1).map_err(decode_error)?;
                new_list(py, count, |_| self.value(reader, depth + 1))?
            }
            tag::INTS => {
                let count = reader.count(1).map_err(decode_error)?;
                new_list(py, count, |_| {
                    let value = codec::unzigzag(reader.varint().map_err(decode_error)?);
                    // SAFETY: a plain constructor call with the GIL held; null raises.
                    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromLongLong(value)) }
                })?
            }
            tag::FLOATS => {
                let count = reader.count(8).map_err(decode_error)?;
                floats(py, reader, count)?
            }
            tag::COMPLEXES => {
                let count = reader.count(16).map_err(decode_error)?;
                complexes(py, reader, count)?
            }
            tag::TUPLE => {
                let count = reader.count(1).map_err(decode_error)?;
                let tuple = new_list(py, count, |_| self.value(reader, depth + 1))?;
                // SAFETY: converts a new, exact list into a tuple, GIL held; null raises.
                unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyList_AsTuple(tuple.as_ptr()))? }
            }
            tag::DICT => {
                let count = reader.count(2).map_err(decode_error)?;
                let dict = PyDict::new(py);
                for _ in 0..count {
                    let key = self.value(reader, depth + 1)?;
                    let value = self.value(reader, depth + 1)?;
                    dict.set_item(key, value)?;
                }
                dict.into_any()
            }
            tag::SET => {
                let count = reader.count(1).map_err(decode_error)?;
                PySet::new(py, self.values(reader, count, depth)?)?.into_any()
            }
            tag::FROZENSET => {
                let count = reader.count(1).map_err(decode_error)?;
                PyFrozenSet::new(py, self.values(reader, count, depth)?)?.into_any()
            }
            tag::PICKLE => {
                let bytes = reader.blob().map_err(decode_error)?;
                self.check_trusted("a pickle")?;
                pickle_loads(py)?.call1((PyBytes::new(py, bytes),))?
            }
            tag::SHARED => {
                let kind = reader.byte().map_err(decode_error)?;
                self.check_trusted("a shared buffer")?;
                let buffer = open_handle(reader)?;
                match kind {
                    shared_kind::BYTES => PyBytes::new(py, buffer.bytes()).into_any(),
                    shared_kind::BYTEARRAY => PyByteArray::new(py, buffer.bytes()).into_any(),
                    shared_kind::MEMORYVIEW => {
                        // Read-only, as a small one (a view of bytes) is: the same value.
                        PyMemoryView::from(&Bound::new(py, buffer)?.into_any())?
                            .call_method0(pyo3::intern!(py, "toreadonly"))?
                    }
                    shared_kind::FLOATS | shared_kind::COMPLEXES => {
                        let width = if kind == shared_kind::FLOATS { 8 } else { 16 };
                        let bytes = buffer.bytes();
                        if bytes.len() % width != 0 {
                            return Err(DecodeError::new_err(format!(
                                "a shared list body of {} bytes is not a whole number of items",
                                bytes.len()
                            )));
                        }
                        let mut body = Reader::body(bytes);
                        if width == 8 {
                            floats(py, &mut body, bytes.len() / width)?
                        } else {
                            complexes(py, &mut body, bytes.len() / width)?
                        }
                    }
                    other => {
                        return Err(DecodeError::new_err(format!("unknown shared kind {other}")));
                    }
                }
            }
            tag::PICKLE5 => self.pickle5(reader)?,
            tag::NDARRAY => self.ndarray(reader)?,
            tag::REDUCED => self.reduced(reader, depth)?,
            other => return scalar(py, other, reader),
        })
    }

    /// A PICKLE5 value after its tag: a pickle with its out-of-band buffers.
    fn pickle5(&self, reader: &mut Reader<'_>) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let count = reader.count(2).map_err(decode_error)?;
        self.check_trusted("a pickle")?;
        let buffers = PyList::empty(py);
        for _ in 0..count {
            buffers.append(self.buffer(reader)?.0)?;
        }
        let bytes = reader.blob().map_err(decode_error)?;
        let keywords = PyDict::new(py);
        keywords.set_item("buffers", buffers)?;
        pickle_loads(py)?.call((PyBytes::new(py, bytes),), Some(&keywords))
    }

    /// A view of `bytes` where they lie, if they lie in the message's shared buffer.
    pub(super) fn in_place(&self, bytes: &[u8]) -> Option<SharedBuffer> {
        let backing = self.backing?;
        let start = (bytes.as_ptr() as usize).checked_sub(backing.bytes().as_ptr() as usize)?;
        backing.slice(start, bytes.len())
    }

    pub(super) fn check_trusted(&self, what: &str) -> PyResult<()> {
        if self.trusted {
            Ok(())
        } else {
            Err(DecodeError::new_err(format!("the message carries {what}")))
        }
    }

    fn values(
        &self,
        reader: &mut Reader<'_>,
        count: usize,
        depth: usize,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.value(reader, depth + 1)?);
        }
        Ok(items)
    }
}

/// A new list of `count` items made by `make_item(index)`, filled in place.
/// A list of `count` floats read from `reader` (which holds at least `8 * count` bytes).
fn floats<'py>(
    py: Python<'py>,
    reader: &mut Reader<'_>,
    count: usize,
) -> PyResult<Bound<'py, PyAny>> {
    new_list(py, count, |_| {
        let value = reader.float().map_err(decode_error)?;
        // SAFETY: a plain constructor call with the GIL held; null raises.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyFloat_FromDouble(value)) }
    })
}

/// A list of `count` complex numbers read from `reader` (at least `16 * count` bytes).
fn complexes<'py>(
    py: Python<'py>,
    reader: &mut Reader<'_>,
    count: usize,
) -> PyResult<Bound<'py, PyAny>> {
    new_list(py, count, |_| {
        let real = reader.float().map_err(decode_error)?;
        let imaginary = reader.float().map_err(decode_error)?;
        // SAFETY: a plain constructor call with the GIL held; null raises.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyComplex_FromDoubles(real, imaginary)) }
    })
}

fn new_list<'py>(
    py: Python<'py>,
    count: usize,
    mut make_item: impl FnMut(usize) -> PyResult<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: a new list of `count` empty slots; each slot is filled once with an owned
    // reference (PyList_SET_ITEM steals it). If making an item fails, the list is released with
    // NULL slots left, which list deallocation skips.
    unsafe {
        let list = Bound::from_owned_ptr_or_err(py, ffi::PyList_New(count as ffi::Py_ssize_t))?;
        for index in 0..count {
            let item = make_item(index)?;
            ffi::PyList_SET_ITEM(list.as_ptr(), index as ffi::Py_ssize_t, item.into_ptr());
        }
        Ok(list)
    }
}

/// Decodes a value without nested values (numbers, strings, bytes).
fn scalar<'py>(py: Python<'py>, tag: u8, reader: &mut Reader<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match tag {
        tag::NONE => py.None().into_bound(py),
        tag::FALSE => false.into_pyobject(py)?.to_owned().into_any(),
        tag::TRUE => true.into_pyobject(py)?.to_owned().into_any(),
        tag::INT => {
            let value = codec::unzigzag(reader.varint().map_err(decode_error)?);
            // SAFETY: plain constructor call with the GIL held; a null result raises.
            unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyLong_FromLongLong(value))? }
        }
        tag::BIGINT => {
            let bytes = reader.blob().map_err(decode_error)?;
            let kwargs = PyDict::new(py);
            kwargs.set_item("signed", true)?;
            py.get_type::<pyo3::types::PyInt>().call_method(
                "from_bytes",
                (PyBytes::new(py, bytes), "little"),
                Some(&kwargs),
            )?
        }
        tag::FLOAT => {
            let value = reader.float().map_err(decode_error)?;
            // SAFETY: plain constructor call with the GIL held; a null result raises.
            unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyFloat_FromDouble(value))? }
        }
        tag::COMPLEX => {
            let real = reader.float().map_err(decode_error)?;
            let imaginary = reader.float().map_err(decode_error)?;
            // SAFETY: plain constructor call with the GIL held; a null result raises.
            unsafe {
                Bound::from_owned_ptr_or_err(py, ffi::PyComplex_FromDoubles(real, imaginary))?
            }
        }
        tag::STR => {
            let bytes = reader.blob().map_err(decode_error)?;
            // SAFETY: CPython validates the UTF-8 itself and raises on invalid input.
            unsafe {
                Bound::from_owned_ptr_or_err(
                    py,
                    ffi::PyUnicode_DecodeUTF8(
                        bytes.as_ptr().cast(),
                        bytes.len() as ffi::Py_ssize_t,
                        c"strict".as_ptr(),
                    ),
                )
                .map_err(|error| DecodeError::new_err(format!("invalid UTF-8: {error}")))?
            }
        }
        tag::BYTES => PyBytes::new(py, reader.blob().map_err(decode_error)?).into_any(),
        tag::BYTEARRAY => PyByteArray::new(py, reader.blob().map_err(decode_error)?).into_any(),
        tag::MEMORYVIEW => {
            let bytes = PyBytes::new(py, reader.blob().map_err(decode_error)?);
            PyMemoryView::from(&bytes.into_any())?.into_any()
        }
        other => return Err(decode_error(codec::unknown_tag(other))),
    })
}

/// Reads a shared buffer's handle and opens it.
pub(super) fn open_handle(reader: &mut Reader<'_>) -> PyResult<SharedBuffer> {
    let mut numbers = [0u64; 4];
    for number in &mut numbers {
        *number = reader.varint().map_err(decode_error)?;
    }
    let [pid, fd, offset, length] = numbers;
    let invalid = || DecodeError::new_err("a shared buffer handle out of range");
    open_buffer(
        u32::try_from(pid).map_err(|_| invalid())?,
        i32::try_from(fd).map_err(|_| invalid())?,
        usize::try_from(offset).map_err(|_| invalid())?,
        usize::try_from(length).map_err(|_| invalid())?,
    )
}
