//! The codec's buffer sub-record (an NDARRAY's bytes, a PICKLE5's out-of-band buffers): INLINE
//! in the message, aligned, or SHARED (a handle). See `gilfree_core::codec`.
//!
//! Decoding an INLINE buffer gives, when the message is decoded where it lies in a shared
//! buffer (INDIRECT), a writable view of those bytes in place (no copy: the receiver's arrays
//! keep that shared buffer in use until they are gone); else a `bytearray` copy.
use gilfree_core::codec::{self, storage, Reader, SHARE_THRESHOLD};
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use super::decoder::{decode_error, open_handle, Decoder};
use super::encoder::Encoder;
use super::view::View;
use super::DecodeError;
use crate::buffers::{share_address, SHARING_SUPPORTED};

impl Encoder<'_> {
    /// Writes `view`'s bytes as a buffer: SHARED when there is a sink and they are large or
    /// already in shared memory, else INLINE (copied once the message is finished).
    pub(super) fn buffer(&mut self, view: View) -> PyResult<()> {
        let bytes = view.bytes();
        if SHARING_SUPPORTED && self.sink.is_some() && !bytes.is_empty() {
            let key = (bytes.as_ptr() as usize, bytes.len());
            // Bytes copied already for this message (before it went to pickle whole) are not
            // copied again.
            let buffer = match self.copies.get(&key) {
                Some(buffer) => Some(buffer.clone()),
                None => share_address(self.py, key.0, key.1, SHARE_THRESHOLD)?
                    .map(|buffer| Bound::new(self.py, buffer))
                    .transpose()?,
            };
            if let Some(buffer) = buffer {
                self.copies.insert(key, buffer.clone());
                self.out.push(storage::SHARED);
                self.handle(&buffer)?;
                return Ok(());
            }
        }
        self.out.push(storage::INLINE);
        codec::write_varint(&mut self.out, bytes.len() as u64);
        let pad = codec::padding(self.position() + 1);
        self.out.push(pad as u8);
        self.out.resize(self.out.len() + pad, 0);
        self.defer(view);
        Ok(())
    }
}

impl<'py> Decoder<'py, '_> {
    /// Reads a buffer sub-record: its bytes as a Python buffer object, and their length.
    pub(super) fn buffer(&self, reader: &mut Reader<'_>) -> PyResult<(Bound<'py, PyAny>, usize)> {
        let py = self.py;
        match reader.byte().map_err(decode_error)? {
            storage::INLINE => {
                let bytes = reader.aligned_blob().map_err(decode_error)?;
                if let Some(view) = self.in_place(bytes) {
                    return Ok((Bound::new(py, view)?.into_any(), bytes.len()));
                }
                Ok((PyByteArray::new(py, bytes).into_any(), bytes.len()))
            }
            storage::SHARED => {
                self.check_trusted("a shared buffer")?;
                let buffer = open_handle(reader)?;
                let length = buffer.bytes().len();
                Ok((Bound::new(py, buffer)?.into_any(), length))
            }
            other => Err(DecodeError::new_err(format!(
                "unknown buffer storage {other}"
            ))),
        }
    }
}
