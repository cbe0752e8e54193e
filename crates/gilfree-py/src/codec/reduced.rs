//! The REDUCED record: objects that `gilfree._wire.reducers` takes apart into values the codec
//! encodes natively (arrays, tuples, strings) and rebuilds on the other side, instead of
//! pickling them whole: pandas frames, series and indexes, whose pickles cost tens of
//! microseconds each however small they are.
//!
//! The codec knows nothing of pandas: on a value of a type it has no record for, it asks the
//! registered `reducer_for(type)` hook once per type (the answer, a function or None, is kept in
//! a bounded table), then calls the reducer, which gives `(kind, state)` or None (pickle it). The
//! receiver decodes the state and calls the `rebuild(kind, state)` hook.
use gilfree_core::codec::{self, tag, Reader};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

use super::decoder::{decode_error, Decoder};
use super::encoder::{Encoder, Stop};
use super::hooks;

/// type -> its reducer, or None: the answers of `reducer_for`.
static REDUCERS: PyOnceLock<Py<PyDict>> = PyOnceLock::new();
/// Types remembered before the table starts over (classes made at run time come and go).
const MAX_TYPES: usize = 256;

impl<'py> Encoder<'py> {
    /// Writes `object` as REDUCED if a reducer takes it; false (nothing written) if not.
    pub(super) fn reduced(
        &mut self,
        object: *mut ffi::PyObject,
        depth: usize,
    ) -> Result<bool, Stop> {
        let py = self.py;
        let value = self.bound(object);
        let kind = value.get_type();
        let table = REDUCERS
            .get_or_init(py, || PyDict::new(py).unbind())
            .bind(py);
        let reducer = if let Some(reducer) = table.get_item(&kind)? {
            reducer
        } else {
            let reducer = hooks(py)?.reducer_for.bind(py).call1((&kind,))?;
            if table.len() >= MAX_TYPES {
                table.clear();
            }
            table.set_item(&kind, &reducer)?;
            reducer
        };
        if reducer.is_none() {
            return Ok(false);
        }
        let parts = reducer.call1((value,))?;
        if parts.is_none() {
            return Ok(false);
        }
        let (kind, state) = parts.extract::<(u64, Bound<'py, PyAny>)>()?;
        self.out.push(tag::REDUCED);
        codec::write_varint(&mut self.out, kind);
        self.reducing += 1;
        let written = self.value(state.as_ptr(), depth + 1);
        self.reducing -= 1;
        written?;
        Ok(true)
    }
}

impl<'py> Decoder<'py, '_> {
    /// Decodes a REDUCED record after its tag: the state, then the rebuilt object.
    pub(super) fn reduced(
        &self,
        reader: &mut Reader<'_>,
        depth: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let kind = reader.varint().map_err(decode_error)?;
        self.check_trusted("an object to rebuild")?;
        let state = self.value(reader, depth + 1)?;
        let arguments = PyTuple::new(self.py, [kind.into_pyobject(self.py)?.into_any(), state])?;
        hooks(self.py)?.rebuild.bind(self.py).call1(arguments)
    }
}
