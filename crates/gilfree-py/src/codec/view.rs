//! A held buffer view (the buffer protocol), released when dropped.
#![allow(unsafe_code)] // the buffer protocol; each block says why it holds

use pyo3::ffi;
use pyo3::prelude::*;

/// A contiguous buffer view of an array, released when dropped.
pub(super) struct View(ffi::Py_buffer);

impl View {
    /// The array's buffer if it is C- or Fortran-contiguous and numpy can export its dtype.
    pub(super) fn contiguous(object: &Bound<'_, PyAny>) -> Option<Self> {
        let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
        // SAFETY: asks for a contiguous buffer with its shape and strides into our view.
        if unsafe {
            ffi::PyObject_GetBuffer(
                object.as_ptr(),
                view.as_mut_ptr(),
                ffi::PyBUF_ANY_CONTIGUOUS,
            )
        } != 0
        {
            // SAFETY: clears the error just raised (not contiguous, or a dtype with no buffer).
            unsafe { ffi::PyErr_Clear() };
            return None;
        }
        // SAFETY: PyObject_GetBuffer succeeded and filled the view.
        Some(Self(unsafe { view.assume_init() }))
    }

    pub(super) fn shape(&self) -> Vec<usize> {
        let ndim = usize::try_from(self.0.ndim).unwrap_or(0);
        if ndim == 0 || self.0.shape.is_null() {
            return Vec::new();
        }
        // SAFETY: a view with PyBUF_STRIDES has `ndim` sizes at `shape`, live while it is held.
        let sizes = unsafe { std::slice::from_raw_parts(self.0.shape, ndim) };
        sizes
            .iter()
            .map(|&size| usize::try_from(size).unwrap_or(0))
            .collect()
    }

    /// Whether the bytes are in Fortran order and not also in C order.
    pub(super) fn fortran(&self) -> bool {
        #[allow(clippy::cast_possible_wrap)] // 'C' is ASCII: the same in i8 and u8
        const C_ORDER: std::ffi::c_char = b'C' as std::ffi::c_char;
        // SAFETY: the view is live; the call only reads its shape and strides.
        self.0.ndim >= 2 && unsafe { ffi::PyBuffer_IsContiguous(&raw const self.0, C_ORDER) } == 0
    }

    pub(super) fn bytes(&self) -> &[u8] {
        let length = usize::try_from(self.0.len).unwrap_or(0);
        if length == 0 {
            return &[];
        }
        // SAFETY: the view pins `len` readable bytes at `buf` while it is held.
        unsafe { std::slice::from_raw_parts(self.0.buf.cast::<u8>(), length) }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        // SAFETY: releases the buffer acquired in `contiguous`, exactly once (GIL held: views
        // live only inside encoder calls, which hold it).
        unsafe { ffi::PyBuffer_Release(&raw mut self.0) };
    }
}
