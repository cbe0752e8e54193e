//! The encoder. The whole value goes to pickle instead when the codec cannot keep its meaning
//! or would be slower:
//! * an object reached twice whose identity a copy would lose (pickle keeps identity; the codec
//!   would copy): a mutable container (list, dict, set, bytearray), which covers cycles; a
//!   numpy array; any other object but a class, a function or a module (frames and series,
//!   and what goes to pickle one value at a time). Not inside a REDUCED record's state: its
//!   arrays and indexes are the reducer's, some made for the occasion (an address seen twice
//!   there may be a new object at a freed one's address), and pandas copies on write;
//! * nesting deeper than `ENCODE_DEPTH`;
//! * more than `MAX_FALLBACKS` values that need pickle (one pickle call beats many);
//! * a large str, bytes or tuple reached twice (outside REDUCED states): pickle sends it once
//!   and refers to it again, where the codec would copy it each time (200 references to one
//!   1 MB string made a 200 MB message), or a tuple inside a tuple reached twice (tuples of
//!   tuples reusing them grow exponentially);
//! * an object with identity pickled on its own (outside a REDUCED state) beside another object
//!   with identity: each pickle would copy what they share (two objects holding one list, a
//!   list and an object holding it, a graph of objects), where one pickle keeps it one object.
#![allow(unsafe_code)] // raw CPython calls on the hot path; each block says why it holds
#![allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)] // Py_ssize_t <-> usize: sizes of live
                                                              // objects are never negative

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use gilfree_core::codec::{self, shared_kind, tag, INDIRECT_THRESHOLD, MAGIC, SHARE_THRESHOLD};
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyFrozenSet, PyList, PySet};

use super::kind::{classify, Kind};
use super::output;
use super::pickle_value;
use super::view::View;
use crate::buffers::{export, filled_region, SharedBuffer, SHARING_SUPPORTED};

/// Values needing pickle before the whole message is pickled instead.
const MAX_FALLBACKS: usize = 64;
/// A str or bytes of this many bytes or items, or a tuple of this many items, is noted to find
/// repeats (see the module documentation); smaller ones cost less to copy than to note.
const NOTED_STRING: isize = 1024;
const NOTED_TUPLE: isize = 64;
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
    /// The objects noted by `enter`, by address: each is alive until the encoder ends (held by
    /// the value being encoded).
    containers: HashSet<usize, BuildHasherDefault<AddressHasher>>,
    /// The large immutable objects seen (see `NOTED_STRING`), by address; alive as `containers`.
    immutables: HashSet<usize, BuildHasherDefault<AddressHasher>>,
    /// How many REDUCED states enclose the value being encoded (see the module documentation).
    pub(super) reducing: usize,
    fallbacks: usize,
    /// Objects with identity pickled on their own outside REDUCED states (see the module notes).
    pickled_with_identity: usize,
    /// The shared buffers made for this message, by the (address, length) of the bytes copied:
    /// kept when the value goes to pickle whole, so its arrays are not copied twice.
    pub(super) copies: HashMap<(usize, usize), Bound<'py, SharedBuffer>>,
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
        containers: HashSet::default(),
        immutables: HashSet::default(),
        reducing: 0,
        fallbacks: 0,
        pickled_with_identity: 0,
        copies: HashMap::new(),
        sink,
    };
    let message = encoder.encode(value);
    output::keep(std::mem::take(&mut encoder.out));
    message
}

impl<'py> Encoder<'py> {
    fn encode(&mut self, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let encoded = self.value(value.as_ptr(), 0).and_then(|()| {
            // Noted objects are those with identity; each pickled one is noted too.
            let others = self.containers.len() > self.pickled_with_identity;
            if self.pickled_with_identity > 1 || (self.pickled_with_identity == 1 && others) {
                Err(Stop::Whole) // they may share what separate pickles would copy
            } else {
                Ok(())
            }
        });
        match encoded {
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
        output::bytes(self.py, total, |target| {
            output::gather(&self.out, &self.deferred, target);
        })
    }

    /// Appends `view`'s bytes to the message: now if small, else when the message is finished
    /// (copied once, into its destination).
    pub(super) fn defer(&mut self, view: View) {
        if view.bytes().len() < output::DEFER_MIN {
            self.out.extend_from_slice(view.bytes());
        } else {
            self.deferred_bytes += view.bytes().len();
            self.deferred.push(output::Deferred {
                at: self.out.len(),
                view,
            });
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
        // SAFETY: `object` is live: the caller holds a reference to it (the argument, or an
        // item whose reference its container holds while it is encoded), and the GIL is held.
        // The same holds in every arm below, where `classify` has also established the exact
        // type that the arm's method requires.
        let kind = unsafe { classify(self.py, object) };
        match kind {
            Kind::None => self.out.push(tag::NONE),
            Kind::True => self.out.push(tag::TRUE),
            Kind::False => self.out.push(tag::FALSE),
            // SAFETY: a live exact int (see above).
            Kind::Int => unsafe { self.int(object) }?,
            // SAFETY: a live exact float.
            Kind::Float => unsafe { self.float(object) },
            // SAFETY: a live exact complex.
            Kind::Complex => unsafe { self.complex(object) },
            Kind::Str => {
                // SAFETY: a live exact str.
                let length = unsafe { ffi::PyUnicode_GetLength(object) };
                self.note_if_large(object, length, NOTED_STRING)?;
                // SAFETY: as above.
                unsafe { self.string(object) }?;
            }
            Kind::Bytes => {
                // SAFETY: a live exact bytes.
                let length = unsafe { ffi::PyBytes_Size(object) };
                self.note_if_large(object, length, NOTED_STRING)?;
                // SAFETY: as above.
                unsafe { self.bytes(object) }?;
            }
            Kind::ByteArray => {
                self.enter(object)?;
                // SAFETY: a live exact bytearray.
                unsafe { self.bytearray(object) }?;
            }
            Kind::MemoryView => self.memoryview(object, depth)?,
            Kind::List => {
                self.enter(object)?;
                // SAFETY: a live exact list.
                unsafe { self.list(object, depth) }?;
            }
            Kind::Tuple => {
                // SAFETY: a live exact tuple.
                let count = unsafe { ffi::PyTuple_GET_SIZE(object) };
                self.note_if_large(object, count, NOTED_TUPLE)?;
                // SAFETY: as above.
                unsafe { self.tuple(object, depth) }?;
            }
            Kind::Dict => {
                self.enter(object)?;
                // SAFETY: a live exact dict.
                unsafe { self.dict(object, depth) }?;
            }
            Kind::Set => {
                self.enter(object)?;
                // SAFETY: a live exact set.
                unsafe { self.set(object, true, depth) }?;
            }
            // SAFETY: a live exact frozenset.
            Kind::FrozenSet => unsafe { self.set(object, false, depth) }?,
            Kind::NdArray | Kind::Other => {
                // SAFETY: a live object (see above).
                if self.reducing == 0 && (kind == Kind::NdArray || unsafe { has_identity(object) })
                {
                    self.enter(object)?;
                }
                let plain = kind == Kind::NdArray && self.ndarray(&self.bound(object))?;
                if !plain && !self.reduced(object, depth)? {
                    self.pickled(object)?;
                }
            }
        }
        Ok(())
    }

    /// `object` as a bound reference, for calls through `PyO3`.
    pub(super) fn bound(&self, object: *mut ffi::PyObject) -> Bound<'py, PyAny> {
        // SAFETY: every object the encoder handles is kept alive by its caller (the argument, or
        // an item its container holds), and the GIL is held while the encoder runs.
        unsafe { Bound::from_borrowed_ptr(self.py, object) }
    }

    /// Notes an immutable object of `size` (bytes, items) if at least `noted` outside REDUCED
    /// states; seeing one twice sends the whole value to pickle, which sends it once.
    fn note_if_large(
        &mut self,
        object: *mut ffi::PyObject,
        size: isize,
        noted: isize,
    ) -> Result<(), Stop> {
        if size < noted || self.reducing > 0 || self.immutables.insert(object as usize) {
            Ok(())
        } else {
            Err(Stop::Whole)
        }
    }

    /// Notes an object whose identity matters; seeing one twice means shared references or a
    /// cycle.
    fn enter(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        if self.containers.insert(object as usize) {
            Ok(())
        } else {
            Err(Stop::Whole)
        }
    }

    /// Writes a list as LIST, or as INTS, FLOATS or COMPLEXES when its items allow.
    ///
    /// # Safety
    /// `object` must be a live exact list, and the GIL held.
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
    ///
    /// # Safety
    /// `list` must be a live exact list of `count` items, and the GIL held.
    unsafe fn homogeneous(&mut self, list: *mut ffi::PyObject, count: isize) -> Result<bool, Stop> {
        // SAFETY: `list` is an exact list of `count` items and nothing runs Python code here,
        // so it cannot change while we read it.
        let items = unsafe {
            std::slice::from_raw_parts((*list.cast::<ffi::PyListObject>()).ob_item, count as usize)
        };
        // SAFETY: each item is a live object owned by the list.
        let first = unsafe { ffi::Py_TYPE(items[0]) };
        if first == &raw mut ffi::PyFloat_Type || first == &raw mut ffi::PyComplex_Type {
            let same_type = |&item: &*mut ffi::PyObject| {
                // SAFETY: each item is a live object owned by the list: its type can be read.
                unsafe { ffi::Py_TYPE(item) == first }
            };
            if !items.iter().all(same_type) {
                return Ok(false);
            }
            let complex = first == &raw mut ffi::PyComplex_Type;
            let size = items.len() * if complex { 16 } else { 8 };
            if SHARING_SUPPORTED && self.sink.is_some() && size >= SHARE_THRESHOLD {
                // SAFETY: the items were checked to be exact floats or complexes.
                let fill = |body: &mut [u8]| unsafe { write_numbers(items, complex, body) };
                if let Ok(buffer) = filled_region(size, fill) {
                    self.out.push(tag::SHARED);
                    self.out.push(if complex {
                        shared_kind::COMPLEXES
                    } else {
                        shared_kind::FLOATS
                    });
                    self.handle(&Bound::new(self.py, buffer)?)?;
                    return Ok(true);
                } // no shared memory to be had: inline, below
            }
            self.out
                .push(if complex { tag::COMPLEXES } else { tag::FLOATS });
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
            // SAFETY: a live item of the list, whose type can be read.
            let fits = unsafe { ffi::Py_TYPE(item) } == first && {
                // SAFETY: an exact int (checked just before); the conversion runs no Python code.
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

    /// Writes a tuple as TUPLE.
    ///
    /// # Safety
    /// `object` must be a live exact tuple, and the GIL held.
    unsafe fn tuple(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Stop> {
        // SAFETY: `object` is an exact tuple (immutable), GIL held.
        let count = unsafe { ffi::PyTuple_GET_SIZE(object) };
        self.out.push(tag::TUPLE);
        codec::write_varint(&mut self.out, count as u64);
        for index in 0..count {
            // SAFETY: index < size of an immutable tuple that the caller keeps alive.
            let item = unsafe { ffi::PyTuple_GET_ITEM(object, index) };
            // A tuple inside a tuple is noted whatever its size: tuples reusing tuples
            // (`(t, t)`, again and again) would otherwise grow the message exponentially.
            // SAFETY: a live item of the tuple, whose type can be read.
            if unsafe { ffi::PyTuple_CheckExact(item) } != 0 {
                self.note_if_large(item, 0, 0)?;
            }
            self.value(item, depth + 1)?;
        }
        Ok(())
    }

    /// Writes a dict as DICT, in insertion order.
    ///
    /// # Safety
    /// `object` must be a live exact dict, and the GIL held.
    unsafe fn dict(&mut self, object: *mut ffi::PyObject, depth: usize) -> Result<(), Stop> {
        let dict = self.bound(object);
        // SAFETY: an exact dict (the caller's contract).
        let dict = unsafe { dict.cast_unchecked::<PyDict>() };
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

    /// Writes a set as SET, or a frozenset as FROZENSET when not `mutable`.
    ///
    /// # Safety
    /// `object` must be a live exact set (`mutable`) or frozenset, and the GIL held.
    unsafe fn set(
        &mut self,
        object: *mut ffi::PyObject,
        mutable: bool,
        depth: usize,
    ) -> Result<(), Stop> {
        let set = self.bound(object);
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

    /// Writes `object` as a pickle, unless too many values needed one (then the whole value).
    pub(super) fn pickled(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        self.fallbacks += 1;
        if self.fallbacks > MAX_FALLBACKS {
            return Err(Stop::Whole);
        }
        // SAFETY: `object` is live (the caller's contract for every value encoded).
        if self.reducing == 0 && unsafe { has_identity(object) } {
            self.pickled_with_identity += 1;
            if self.pickled_with_identity > 1 {
                return Err(Stop::Whole); // see `encode`: no need to pickle this one first
            }
        }
        Ok(self.pickle(&self.bound(object))?)
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
    pub(super) fn shared(&mut self, object: *mut ffi::PyObject, kind: u8) -> Result<bool, Stop> {
        if self.sink.is_none() {
            return Ok(false);
        }
        let Some(buffer) = export(self.py, &self.bound(object), SHARE_THRESHOLD)? else {
            return Ok(false);
        };
        self.out.push(tag::SHARED);
        self.out.push(kind);
        self.handle(&Bound::new(self.py, buffer)?)?;
        Ok(true)
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

/// Whether a copy of `object` would be another object to its receiver: false for classes,
/// functions and modules, which travel by name (pickle finds the same one again).
///
/// # Safety
/// `object` must be a live Python object, and the GIL held.
unsafe fn has_identity(object: *mut ffi::PyObject) -> bool {
    // SAFETY: type checks of a live object (the caller's contract).
    unsafe {
        ffi::PyType_Check(object) == 0
            && ffi::PyFunction_Check(object) == 0
            && ffi::PyCFunction_Check(object) == 0
            && ffi::PyModule_Check(object) == 0
    }
}

/// Hashes an object's address for `Encoder::containers`: addresses are distinct and 16-byte
/// aligned, so a multiply spreads them well enough, where std's `SipHash` cost as much as the
/// rest of noting an object (100 arrays of 32 KiB: 4.5 µs of 256).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u8(byte);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.write_usize(usize::from(byte));
    }

    fn write_usize(&mut self, address: usize) {
        let spread = (address as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The table indexes by the low bits: fold the well-mixed high half onto them.
        self.0 ^= spread ^ (spread >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
