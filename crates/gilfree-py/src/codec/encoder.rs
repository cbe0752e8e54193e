//! The encoder. The whole value goes to pickle instead when the codec cannot keep its meaning
//! or would be slower:
//! * a mutable container (list, dict, set, bytearray) reached twice, which covers cycles and
//!   shared references (pickle keeps identity; the codec would copy);
//! * nesting deeper than `ENCODE_DEPTH`;
//! * more than `MAX_FALLBACKS` values that need pickle (one pickle call beats many).
#![allow(unsafe_code)] // raw CPython calls on the hot path; each block says why it holds
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)] // Py_ssize_t <-> usize: sizes of live
                                                              // objects are never negative

use std::collections::HashSet;

use gilfree_core::codec::{self, shared_kind, tag, INDIRECT_THRESHOLD, MAGIC, SHARE_THRESHOLD};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PySet};

use super::ndarray::ndarray_type;
use super::output;
use super::view::View;
use super::pickle_value;
use crate::buffers::{export, filled_region, SharedBuffer, SHARING_SUPPORTED};

/// Values needing pickle before the whole message is pickled instead.
const MAX_FALLBACKS: usize = 64;
/// Nesting the encoder handles itself (the decoder accepts up to `MAX_DEPTH`).
const ENCODE_DEPTH: usize = 256;

pub(super) enum Stop {
    /// A Python error to raise.
    Error(PyErr),
    /// Give the whole value to pickle.
    Whole,
}

impl From<PyErr> for Stop {
    fn from(error: PyErr) -> Self {
        Self::Error(error)
    }
}

pub(super) struct Encoder<'py> {
    pub(super) py: Python<'py>,
    pub(super) out: Vec<u8>,
    /// Array bodies to insert into `out` when the message is finished, and their bytes.
    deferred: Vec<output::Deferred>,
    deferred_bytes: usize,
    containers: HashSet<usize>,
    fallbacks: usize,
    /// Where shared buffers go to be kept alive until the receiver has opened them; None: send
    /// every buffer inline.
    pub(super) sink: Option<Bound<'py, PyList>>,
}

/// Encodes `value` (see the module documentation). With a `sink` list, buffers of at least
/// `SHARE_THRESHOLD` bytes (and any buffer already in shared memory) travel as handles of
/// shared buffers, which are appended to `sink`: keep them until the receiver has decoded.
#[pyfunction]
#[pyo3(signature = (value, sink = None))]
pub fn encode<'py>(
    py: Python<'py>,
    value: &Bound<'py, PyAny>,
    sink: Option<Bound<'py, PyList>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = output::scratch();
    out.push(MAGIC);
    let mut encoder = Encoder {
        py,
        out,
        deferred: Vec::new(),
        deferred_bytes: 0,
        containers: HashSet::new(),
        fallbacks: 0,
        sink,
    };
    let message = encoder.encode(value);
    output::keep(std::mem::take(&mut encoder.out));
    message
}

impl<'py> Encoder<'py> {
    fn encode(&mut self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        match self.value(value.as_ptr(), 0) {
            Ok(()) => {}
            Err(Stop::Error(error)) => return Err(error),
            Err(Stop::Whole) => {
                self.out.truncate(1);
                self.deferred.clear();
                self.deferred_bytes = 0;
                self.pickle(value)?;
            }
        }
        let total = output::total_length(&self.out, &self.deferred);
        if SHARING_SUPPORTED && self.sink.is_some() && total >= INDIRECT_THRESHOLD {
            return self.indirect(total);
        }
        output::bytes(self.py, total, |target| output::gather(&self.out, &self.deferred, target))
    }

    /// Appends `view`'s bytes to the message: now if small, else when the message is finished
    /// (copied once, into its destination).
    pub(super) fn defer(&mut self, view: View) {
        if view.bytes().len() < output::DEFER_MIN {
            self.out.extend_from_slice(view.bytes());
        } else {
            self.deferred_bytes += view.bytes().len();
            self.deferred.push(output::Deferred { at: self.out.len(), view });
        }
    }

    /// Where the next byte written to `out` will lie in the finished message.
    pub(super) fn position(&self) -> usize {
        self.out.len() + self.deferred_bytes
    }

    pub(super) fn value(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Stop> {
        if depth > ENCODE_DEPTH {
            return Err(Stop::Whole);
        }
        // SAFETY: `object` is a live object: the caller holds a reference to it (the argument,
        // or an item whose reference the container loop holds), and the GIL is held.
        let kind = unsafe { ffi::Py_TYPE(object) };
        // SAFETY: comparing type pointers with the addresses of CPython's static type objects.
        unsafe {
            if object == ffi::Py_None() {
                self.out.push(tag::NONE);
            } else if kind == &raw mut ffi::PyBool_Type {
                self.out.push(if object == ffi::Py_True() {
                    tag::TRUE
                } else {
                    tag::FALSE
                });
            } else if kind == &raw mut ffi::PyLong_Type {
                self.int(object)?;
            } else if kind == &raw mut ffi::PyFloat_Type {
                self.out.push(tag::FLOAT);
                self.out
                    .extend_from_slice(&ffi::PyFloat_AS_DOUBLE(object).to_le_bytes());
            } else if kind == &raw mut ffi::PyComplex_Type {
                self.out.push(tag::COMPLEX);
                let real = ffi::PyComplex_RealAsDouble(object);
                let imaginary = ffi::PyComplex_ImagAsDouble(object);
                self.out.extend_from_slice(&real.to_le_bytes());
                self.out.extend_from_slice(&imaginary.to_le_bytes());
            } else if kind == &raw mut ffi::PyUnicode_Type {
                self.string(object)?;
            } else if kind == &raw mut ffi::PyBytes_Type && self.shared(object, shared_kind::BYTES)? {
                // sent as a shared buffer
            } else if kind == &raw mut ffi::PyBytes_Type {
                let data = ffi::PyBytes_AsString(object).cast::<u8>();
                let length = ffi::PyBytes_Size(object) as usize;
                codec::write_blob(
                    &mut self.out,
                    tag::BYTES,
                    std::slice::from_raw_parts(data, length),
                );
            } else if kind == &raw mut ffi::PyMemoryView_Type {
                self.memoryview(object)?;
            } else if kind == &raw mut ffi::PyByteArray_Type {
                self.enter(object)?;
                if self.shared(object, shared_kind::BYTEARRAY)? {
                    return Ok(());
                }
                let data = ffi::PyByteArray_AsString(object).cast::<u8>();
                let length = ffi::PyByteArray_Size(object) as usize;
                let bytes = if length == 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(data, length)
                };
                codec::write_blob(&mut self.out, tag::BYTEARRAY, bytes);
            } else if kind == &raw mut ffi::PyList_Type {
                self.enter(object)?;
                self.list(object, depth)?;
            } else if kind == &raw mut ffi::PyTuple_Type {
                self.tuple(object, depth)?;
            } else if kind == &raw mut ffi::PyDict_Type {
                self.enter(object)?;
                self.dict(object, depth)?;
            } else if kind == &raw mut ffi::PySet_Type || kind == &raw mut ffi::PyFrozenSet_Type {
                if kind == &raw mut ffi::PySet_Type {
                    self.enter(object)?;
                }
                self.set(object, kind == &raw mut ffi::PySet_Type, depth)?;
            } else if Some(kind) == ndarray_type(self.py)
                && self.ndarray(&Bound::from_borrowed_ptr(self.py, object))?
            {
                // an exact numpy array of a plain dtype
            } else if !self.reduced(object, depth)? {
                self.pickled(object)?;
            }
        }
        Ok(())
    }

    /// Notes a mutable container; seeing one twice means shared references or a cycle.
    fn enter(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        if self.containers.insert(object as usize) {
            Ok(())
        } else {
            Err(Stop::Whole)
        }
    }

    unsafe fn int(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        let mut overflow = 0;
        // SAFETY: `object` is an exact int (checked by the caller), the GIL is held.
        let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(object, &raw mut overflow) };
        if overflow == 0 {
            if value == -1 && !unsafe { ffi::PyErr_Occurred() }.is_null() {
                return Err(PyErr::fetch(self.py).into());
            }
            self.out.push(tag::INT);
            codec::write_varint(&mut self.out, codec::zigzag(value));
            return Ok(());
        }
        // SAFETY: a borrowed reference to a live object, made into a bound one for a method call.
        let number = unsafe { Bound::from_borrowed_ptr(self.py, object) };
        let bits: usize = number.call_method0("bit_length")?.extract()?;
        let signed = PyDict::new(self.py);
        signed.set_item("signed", true)?;
        // bit_length leaves out the sign: one more bit, rounded up to whole bytes.
        let bytes = number.call_method("to_bytes", (bits / 8 + 1, "little"), Some(&signed))?;
        let bytes = bytes.cast::<PyBytes>().map_err(PyErr::from)?;
        codec::write_blob(&mut self.out, tag::BIGINT, bytes.as_bytes());
        Ok(())
    }

    unsafe fn string(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        let mut length: ffi::Py_ssize_t = 0;
        // SAFETY: `object` is an exact str; the returned buffer lives as long as the string.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(object, &raw mut length) };
        if data.is_null() {
            // Lone surrogates have no UTF-8 form: pickle keeps them.
            // SAFETY: clears the UnicodeEncodeError just raised, GIL held.
            unsafe { ffi::PyErr_Clear() };
            return self.pickled(object);
        }
        // SAFETY: CPython guarantees `length` valid bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length as usize) };
        codec::write_blob(&mut self.out, tag::STR, bytes);
        Ok(())
    }

    unsafe fn list(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Stop> {
        // SAFETY: `object` is an exact list, GIL held.
        let count = unsafe { ffi::PyList_GET_SIZE(object) };
        // SAFETY: as above.
        if count > 0 && unsafe { self.homogeneous(object, count) }? {
            return Ok(());
        }
        self.out.push(tag::LIST);
        codec::write_varint(&mut self.out, count as u64);
        for index in 0..count {
            // The list can change under us only if a pickled item's __reduce__ mutates it.
            // SAFETY: as above; the size is re-read before each access.
            if unsafe { ffi::PyList_GET_SIZE(object) } != count {
                return Err(PyRuntimeError::new_err("list changed size during encoding").into());
            }
            // SAFETY: index < size; we own a new reference for the time the item is encoded.
            let item =
                unsafe { Bound::from_borrowed_ptr(self.py, ffi::PyList_GET_ITEM(object, index)) };
            self.value(item.as_ptr(), depth + 1)?;
        }
        Ok(())
    }

    /// Writes the list as INTS, FLOATS or COMPLEXES if all its items allow; false if they do
    /// not (nothing written then). A large FLOATS or COMPLEXES body goes straight into a shared
    /// buffer when there is a sink: written once, where the receiver reads it.
    unsafe fn homogeneous(&mut self, list: *mut ffi::PyObject, count: isize) -> Result<bool, Stop> {
        // SAFETY: `list` is an exact list of `count` items and nothing runs Python code here,
        // so it cannot change while we read it.
        let items = unsafe {
            std::slice::from_raw_parts((*list.cast::<ffi::PyListObject>()).ob_item, count as usize)
        };
        // SAFETY: each item is a live object owned by the list.
        let first = unsafe { ffi::Py_TYPE(items[0]) };
        if first == &raw mut ffi::PyFloat_Type || first == &raw mut ffi::PyComplex_Type {
            // SAFETY: type pointers compared to CPython's static types.
            if !items.iter().all(|&item| unsafe { ffi::Py_TYPE(item) } == first) {
                return Ok(false);
            }
            let complex = first == &raw mut ffi::PyComplex_Type;
            let size = items.len() * if complex { 16 } else { 8 };
            if SHARING_SUPPORTED && self.sink.is_some() && size >= SHARE_THRESHOLD {
                // SAFETY: the items were checked to be exact floats or complexes.
                let fill = |body: &mut [u8]| unsafe { write_numbers(items, complex, body) };
                if let Ok(buffer) = filled_region(size, fill) {
                    self.out.push(tag::SHARED);
                    self.out
                        .push(if complex { shared_kind::COMPLEXES } else { shared_kind::FLOATS });
                    self.handle(&Bound::new(self.py, buffer)?)?;
                    return Ok(true);
                } // no shared memory to be had: inline, below
            }
            self.out.push(if complex { tag::COMPLEXES } else { tag::FLOATS });
            codec::write_varint(&mut self.out, count as u64);
            let start = self.out.len();
            self.out.resize(start + size, 0);
            // SAFETY: as above.
            unsafe { write_numbers(items, complex, &mut self.out[start..]) };
            return Ok(true);
        }
        if first != &raw mut ffi::PyLong_Type {
            return Ok(false);
        }
        let start = self.out.len();
        self.out.push(tag::INTS);
        codec::write_varint(&mut self.out, count as u64);
        for &item in items {
            let mut overflow = 0;
            // SAFETY: the type is checked before the conversion, which cannot run Python code.
            let fits = unsafe { ffi::Py_TYPE(item) } == first && {
                let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(item, &raw mut overflow) };
                overflow == 0 && {
                    codec::write_varint(&mut self.out, codec::zigzag(value));
                    true
                }
            };
            if !fits {
                self.out.truncate(start);
                return Ok(false);
            }
        }
        Ok(true)
    }

    unsafe fn tuple(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Stop> {
        // SAFETY: `object` is an exact tuple (immutable), GIL held.
        let count = unsafe { ffi::PyTuple_GET_SIZE(object) };
        self.out.push(tag::TUPLE);
        codec::write_varint(&mut self.out, count as u64);
        for index in 0..count {
            // SAFETY: index < size of an immutable tuple that the caller keeps alive.
            let item = unsafe { ffi::PyTuple_GET_ITEM(object, index) };
            self.value(item, depth + 1)?;
        }
        Ok(())
    }

    unsafe fn dict(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Stop> {
        // SAFETY: `object` is an exact dict that the caller keeps alive.
        let dict = unsafe { Bound::from_borrowed_ptr(self.py, object) };
        let dict = dict.cast::<PyDict>().map_err(PyErr::from)?;
        let count = dict.len();
        self.out.push(tag::DICT);
        codec::write_varint(&mut self.out, count as u64);
        let mut written = 0;
        for (key, value) in dict.iter() {
            self.value(key.as_ptr(), depth + 1)?;
            self.value(value.as_ptr(), depth + 1)?;
            written += 1;
        }
        if written != count {
            return Err(PyRuntimeError::new_err("dict changed size during encoding").into());
        }
        Ok(())
    }

    unsafe fn set(
        &mut self,
        object: *mut ffi::PyObject,
        mutable: bool,
        depth: usize,
    ) -> Result<(), Stop> {
        // SAFETY: `object` is an exact set or frozenset that the caller keeps alive.
        let set = unsafe { Bound::from_borrowed_ptr(self.py, object) };
        let items: Vec<Bound<'_, PyAny>> = if mutable {
            set.cast::<PySet>().map_err(PyErr::from)?.iter().collect()
        } else {
            set.cast::<PyFrozenSet>()
                .map_err(PyErr::from)?
                .iter()
                .collect()
        };
        self.out
            .push(if mutable { tag::SET } else { tag::FROZENSET });
        codec::write_varint(&mut self.out, items.len() as u64);
        for item in &items {
            self.value(item.as_ptr(), depth + 1)?;
        }
        Ok(())
    }

    fn pickled(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        self.fallbacks += 1;
        if self.fallbacks > MAX_FALLBACKS {
            return Err(Stop::Whole);
        }
        // SAFETY: a live object the caller keeps alive, GIL held.
        let value = unsafe { Bound::from_borrowed_ptr(self.py, object) };
        Ok(self.pickle(&value)?)
    }

    /// Writes `value` as PICKLE, or as PICKLE5 when its large buffers went to shared memory.
    fn pickle(&mut self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let pickled = pickle_value(value, self.sink.is_some())?;
        let (data, buffers) = pickled.extract::<(Bound<'_, PyBytes>, Vec<Bound<'_, PyAny>>)>()?;
        if buffers.is_empty() {
            codec::write_blob(&mut self.out, tag::PICKLE, data.as_bytes());
            return Ok(());
        }
        self.out.push(tag::PICKLE5);
        codec::write_varint(&mut self.out, buffers.len() as u64);
        for buffer in &buffers {
            let view = View::contiguous(buffer).ok_or_else(|| {
                PyRuntimeError::new_err("an out-of-band pickle buffer is not contiguous")
            })?;
            self.buffer(view)?;
        }
        codec::write_blob_body(&mut self.out, data.as_bytes());
        Ok(())
    }

    /// Moves the finished message into a shared buffer and returns a message naming it (a
    /// large message then never goes through the ring, nor through a `bytes` copy).
    fn indirect(&mut self, total: usize) -> PyResult<Bound<'py, PyBytes>> {
        let (out, deferred) = (&self.out, &self.deferred);
        let buffer = filled_region(total, |target| output::gather(out, deferred, target))?;
        let buffer = Bound::new(self.py, buffer)?;
        self.deferred.clear();
        self.deferred_bytes = 0;
        self.out.clear();
        self.out.extend_from_slice(&[MAGIC, tag::INDIRECT]);
        self.handle(&buffer)?;
        Ok(PyBytes::new(self.py, &self.out))
    }

    /// Writes a buffer's handle and keeps the buffer in the sink.
    pub(super) fn handle(&mut self, buffer: &Bound<'_, SharedBuffer>) -> PyResult<()> {
        let (pid, fd, offset, length) = buffer.get().handle();
        for number in [u64::from(pid), fd as u64, offset as u64, length as u64] {
            codec::write_varint(&mut self.out, number);
        }
        if let Some(sink) = &self.sink {
            sink.append(buffer)?;
        }
        Ok(())
    }

    /// Sends `object`'s bytes as a SHARED value if there is a sink and the buffer is large or
    /// already shared; false if it must go inline.
    fn shared(&mut self, object: *mut ffi::PyObject, kind: u8) -> Result<bool, Stop> {
        if self.sink.is_none() {
            return Ok(false);
        }
        // SAFETY: a live object the caller keeps alive, GIL held.
        let value = unsafe { Bound::from_borrowed_ptr(self.py, object) };
        let Some(buffer) = export(self.py, &value, SHARE_THRESHOLD)? else {
            return Ok(false);
        };
        self.out.push(tag::SHARED);
        self.out.push(kind);
        self.handle(&Bound::new(self.py, buffer)?)?;
        Ok(true)
    }

    /// A memoryview: shared when large (or already shared), else its bytes inline.
    fn memoryview(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        if self.shared(object, shared_kind::MEMORYVIEW)? {
            return Ok(());
        }
        // SAFETY: a live memoryview the caller keeps alive, GIL held.
        let view = unsafe { Bound::from_borrowed_ptr(self.py, object) };
        let bytes = view.call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>().map_err(PyErr::from)?;
        codec::write_blob(&mut self.out, tag::MEMORYVIEW, bytes.as_bytes());
        Ok(())
    }
}

/// Writes the values of `items` (all exact floats, or all exact complexes when `complex`) as
/// little-endian f64s (pairs for complexes) into `out`, which holds exactly that many bytes.
///
/// # Safety
/// Every item must be a live exact float (or exact complex when `complex`), GIL held.
unsafe fn write_numbers(items: &[*mut ffi::PyObject], complex: bool, out: &mut [u8]) {
    if complex {
        for (&item, slot) in items.iter().zip(out.chunks_exact_mut(16)) {
            // SAFETY: an exact complex (the caller's contract).
            let value = unsafe { (*item.cast::<ffi::PyComplexObject>()).cval };
            slot[..8].copy_from_slice(&value.real.to_le_bytes());
            slot[8..].copy_from_slice(&value.imag.to_le_bytes());
        }
    } else {
        for (&item, slot) in items.iter().zip(out.chunks_exact_mut(8)) {
            // SAFETY: an exact float (the caller's contract).
            slot.copy_from_slice(&unsafe { ffi::PyFloat_AS_DOUBLE(item) }.to_le_bytes());
        }
    }
}
