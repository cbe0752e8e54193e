//! The encoder's output: a scratch buffer reused from message to message (its pages stay
//! warm: faulting in fresh pages costs more than copying here), and large array bodies kept as
//! views until the message's size is known, then copied once, straight into its destination
//! (a new `bytes`, or a shared buffer for an INDIRECT message).
#![allow(unsafe_code)] // an uninitialised bytes object, filled before anyone sees it
use std::cell::Cell;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::view::View;

/// Array bodies smaller than this are copied into the scratch buffer at once.
pub(super) const DEFER_MIN: usize = 512;
/// Largest scratch buffer kept for the next message.
const SCRATCH_KEPT: usize = 8 << 20;

thread_local! {
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer, with the capacity the last message left it.
pub(super) fn scratch() -> Vec<u8> {
    let mut buffer = SCRATCH.take();
    buffer.clear();
    buffer
}

/// Keeps `buffer` for the next message (a nested encode, run by a pickled value's reduce,
/// takes an empty one meanwhile: whichever returns last is kept).
pub(super) fn keep(buffer: Vec<u8>) {
    if buffer.capacity() <= SCRATCH_KEPT {
        SCRATCH.set(buffer);
    }
}

/// A body to insert at byte `at` of the scratch buffer.
pub(super) struct Deferred {
    pub(super) at: usize,
    pub(super) view: View,
}

/// The length of the finished message.
pub(super) fn total_length(out: &[u8], deferred: &[Deferred]) -> usize {
    out.len()
        + deferred
            .iter()
            .map(|body| body.view.bytes().len())
            .sum::<usize>()
}

/// Writes the finished message into `target` (exactly `total_length` bytes): the scratch
/// buffer with each deferred body inserted where it belongs. A large body bypasses this core's
/// caches: the message is for another process (see `gilfree_core::memory`).
pub(super) fn gather(out: &[u8], deferred: &[Deferred], target: &mut [u8]) {
    let mut from = 0;
    let mut to = 0;
    for body in deferred {
        let head = &out[from..body.at];
        target[to..to + head.len()].copy_from_slice(head);
        to += head.len();
        from = body.at;
        let bytes = body.view.bytes();
        gilfree_core::memory::copy_for_others(bytes, &mut target[to..to + bytes.len()]);
        to += bytes.len();
    }
    target[to..].copy_from_slice(&out[from..]);
}

/// A new `bytes` of `length` bytes written by `fill`, which must write every byte (unlike
/// `PyBytes::new_with`, the memory is not zeroed first: one pass over it instead of two).
pub(super) fn bytes(
    py: Python<'_>,
    length: usize,
    fill: impl FnOnce(&mut [u8]),
) -> PyResult<Bound<'_, PyBytes>> {
    let size = ffi::Py_ssize_t::try_from(length)
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("message too large"))?;
    // SAFETY: a new bytes object of `size` uninitialised bytes (null raises MemoryError); it is
    // ours alone until returned, and `fill` writes all of its bytes before that (gather's
    // contract: exactly `total_length` bytes), so no one reads uninitialised memory.
    unsafe {
        let object = Bound::from_owned_ptr_or_err(
            py,
            ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?;
        let data = ffi::PyBytes_AsString(object.as_ptr()).cast::<u8>();
        fill(std::slice::from_raw_parts_mut(data, length));
        Ok(object.cast_into_unchecked())
    }
}
