//! What the encoder does with an object, decided from its exact type alone: the one place that
//! reads an object's type pointer. The encoder then calls one method per kind, whose contract
//! ("a live exact int", "a live exact list") `classify` has established.
#![allow(unsafe_code)] // reads a type pointer and CPython's singletons; the blocks say why

use pyo3::ffi;
use pyo3::Python;

use super::ndarray::ndarray_type;

/// An object's kind, by its exact type (subclasses are `Other`: they go to pickle, so that
/// their type survives the round trip).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    None,
    True,
    False,
    Int,
    Float,
    Complex,
    Str,
    Bytes,
    ByteArray,
    MemoryView,
    List,
    Tuple,
    Dict,
    Set,
    FrozenSet,
    /// An exact `numpy.ndarray` (numpy imported).
    NdArray,
    /// Anything else: rebuilt by a reducer, or pickled.
    Other,
}

/// The kind of `object`.
///
/// # Safety
/// `object` must point to a live Python object, and the GIL must be held.
pub(super) unsafe fn classify(py: Python<'_>, object: *mut ffi::PyObject) -> Kind {
    // SAFETY: `object` is live (the caller's contract), so its header, and the type pointer in
    // it, can be read; the singletons are static objects of the interpreter.
    let (kind, none, true_) = unsafe { (ffi::Py_TYPE(object), ffi::Py_None(), ffi::Py_True()) };
    if object == none {
        return Kind::None;
    }
    // The most common types first: a chain of pointer comparisons, each against the address
    // of one of CPython's static type objects (an array of candidates would be built on the
    // stack at every call: this runs once per value encoded).
    let kind = kind.cast_const();
    if kind == &raw const ffi::PyLong_Type {
        Kind::Int
    } else if kind == &raw const ffi::PyUnicode_Type {
        Kind::Str
    } else if kind == &raw const ffi::PyFloat_Type {
        Kind::Float
    } else if kind == &raw const ffi::PyTuple_Type {
        Kind::Tuple
    } else if kind == &raw const ffi::PyList_Type {
        Kind::List
    } else if kind == &raw const ffi::PyDict_Type {
        Kind::Dict
    } else if kind == &raw const ffi::PyBool_Type {
        if object == true_ {
            Kind::True
        } else {
            Kind::False
        }
    } else if kind == &raw const ffi::PyBytes_Type {
        Kind::Bytes
    } else if kind == &raw const ffi::PyComplex_Type {
        Kind::Complex
    } else if kind == &raw const ffi::PyByteArray_Type {
        Kind::ByteArray
    } else if kind == &raw const ffi::PyMemoryView_Type {
        Kind::MemoryView
    } else if kind == &raw const ffi::PySet_Type {
        Kind::Set
    } else if kind == &raw const ffi::PyFrozenSet_Type {
        Kind::FrozenSet
    } else if Some(kind.cast_mut()) == ndarray_type(py) {
        Kind::NdArray
    } else {
        Kind::Other
    }
}
