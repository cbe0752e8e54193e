//! The encoder's values without nested values: numbers, strings and byte strings. Each method
//! takes an object whose exact type `kind::classify` has established.
#![allow(unsafe_code)] // raw CPython accessors on the hot path; each block says why it holds
#![allow(clippy::cast_sign_loss)] // Py_ssize_t -> usize: sizes of live objects are never negative

use gilfree_core::codec::{self, shared_kind, tag};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::encoder::{Encoder, Stop};

impl Encoder<'_> {
    /// Writes an int as INT, or BIGINT past 64 bits.
    ///
    /// # Safety
    /// `object` must be a live exact int, and the GIL held.
    pub(super) unsafe fn int(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        let mut overflow = 0;
        // SAFETY: `object` is an exact int (the caller's contract); the conversion runs no
        // Python code.
        let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(object, &raw mut overflow) };
        if overflow == 0 {
            // SAFETY: reads the error indicator, GIL held.
            if value == -1 && !unsafe { ffi::PyErr_Occurred() }.is_null() {
                return Err(PyErr::fetch(self.py).into());
            }
            self.out.push(tag::INT);
            codec::write_varint(&mut self.out, codec::zigzag(value));
            return Ok(());
        }
        let number = self.bound(object);
        let bits: usize = number.call_method0("bit_length")?.extract()?;
        let signed = PyDict::new(self.py);
        signed.set_item("signed", true)?;
        // bit_length leaves out the sign: one more bit, rounded up to whole bytes.
        let bytes = number.call_method("to_bytes", (bits / 8 + 1, "little"), Some(&signed))?;
        let bytes = bytes.cast::<PyBytes>().map_err(PyErr::from)?;
        codec::write_blob(&mut self.out, tag::BIGINT, bytes.as_bytes());
        Ok(())
    }

    /// Writes a float as FLOAT, bit for bit.
    ///
    /// # Safety
    /// `object` must be a live exact float, and the GIL held.
    pub(super) unsafe fn float(&mut self, object: *mut ffi::PyObject) {
        // SAFETY: an exact float (the caller's contract): its value is read from its struct.
        let value = unsafe { ffi::PyFloat_AS_DOUBLE(object) };
        self.out.push(tag::FLOAT);
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// Writes a complex as COMPLEX.
    ///
    /// # Safety
    /// `object` must be a live exact complex, and the GIL held.
    pub(super) unsafe fn complex(&mut self, object: *mut ffi::PyObject) {
        // SAFETY: an exact complex (the caller's contract); the accessors run no Python code.
        let (real, imaginary) = unsafe {
            (
                ffi::PyComplex_RealAsDouble(object),
                ffi::PyComplex_ImagAsDouble(object),
            )
        };
        self.out.push(tag::COMPLEX);
        self.out.extend_from_slice(&real.to_le_bytes());
        self.out.extend_from_slice(&imaginary.to_le_bytes());
    }

    /// Writes a str as STR (UTF-8), or pickles it if it holds lone surrogates.
    ///
    /// # Safety
    /// `object` must be a live exact str, and the GIL held.
    pub(super) unsafe fn string(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        let mut length: ffi::Py_ssize_t = 0;
        // SAFETY: an exact str (the caller's contract); the returned buffer, cached in the
        // string, lives as long as the string.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(object, &raw mut length) };
        if data.is_null() {
            // Lone surrogates have no UTF-8 form: pickle keeps them.
            // SAFETY: clears the UnicodeEncodeError just raised, GIL held.
            unsafe { ffi::PyErr_Clear() };
            return self.pickled(object);
        }
        // SAFETY: CPython guarantees `length` valid bytes at `data`, alive with the string.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), length as usize) };
        codec::write_blob(&mut self.out, tag::STR, bytes);
        Ok(())
    }

    /// Writes a bytes as BYTES, or as a shared buffer when large or already shared.
    ///
    /// # Safety
    /// `object` must be a live exact bytes, and the GIL held.
    pub(super) unsafe fn bytes(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        if self.shared(object, shared_kind::BYTES)? {
            return Ok(());
        }
        // SAFETY: an exact bytes (the caller's contract): an immutable buffer of `size` bytes
        // that lives as long as the object.
        let bytes = unsafe {
            let data = ffi::PyBytes_AsString(object).cast::<u8>();
            std::slice::from_raw_parts(data, ffi::PyBytes_Size(object) as usize)
        };
        codec::write_blob(&mut self.out, tag::BYTES, bytes);
        Ok(())
    }

    /// Writes a bytearray as BYTEARRAY, or as a shared buffer when large or already shared.
    ///
    /// # Safety
    /// `object` must be a live exact bytearray, and the GIL held.
    pub(super) unsafe fn bytearray(&mut self, object: *mut ffi::PyObject) -> Result<(), Stop> {
        if self.shared(object, shared_kind::BYTEARRAY)? {
            return Ok(());
        }
        // SAFETY: an exact bytearray (the caller's contract); nothing runs Python code while
        // its buffer is read, so it cannot be resized. An empty one may have no buffer at all.
        let bytes = unsafe {
            let length = ffi::PyByteArray_Size(object) as usize;
            if length == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(ffi::PyByteArray_AsString(object).cast::<u8>(), length)
            }
        };
        codec::write_blob(&mut self.out, tag::BYTEARRAY, bytes);
        Ok(())
    }

    /// A memoryview: shared when large (or already shared), else its bytes inline. A view of
    /// other items than unsigned bytes (another format, or not one dimension) goes as REDUCED
    /// (see `gilfree._wire.reducers`): its bytes, format and shape, cast back on arrival.
    pub(super) fn memoryview(
        &mut self,
        object: *mut ffi::PyObject,
        depth: usize,
    ) -> Result<(), Stop> {
        let view = self.bound(object);
        let plain = view.getattr(intern!(self.py, "ndim"))?.extract::<usize>()? == 1
            && view
                .getattr(intern!(self.py, "format"))?
                .extract::<&str>()?
                == "B";
        if !plain && self.reduced(object, depth)? {
            return Ok(());
        }
        if self.shared(object, shared_kind::MEMORYVIEW)? {
            return Ok(());
        }
        let bytes = self.bound(object).call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>().map_err(PyErr::from)?;
        codec::write_blob(&mut self.out, tag::MEMORYVIEW, bytes.as_bytes());
        Ok(())
    }
}
