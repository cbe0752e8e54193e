//! `SharedBuffer`: a buffer in a shared region (see `gilfree_core::region`), exposed to Python
//! through the buffer protocol, and the two ways to get one: `export` (send a buffer) and
//! `open_buffer` (receive one).
#![allow(unsafe_code)] // the buffer protocol and raw buffer access; each block says why it holds

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gilfree_core::region::{Origin, Region};
use gilfree_core::CoreError;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::Error;

/// Whether other processes can open this process's buffers (`/proc/<pid>/fd`: Linux).
pub const SHARING_SUPPORTED: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Bytes this process has copied into shared buffers to send them (see `copied_to_shared`).
static COPIED: AtomicU64 = AtomicU64::new(0);

/// Counts `length` bytes copied into shared memory.
fn count_copy(length: usize) {
    COPIED.fetch_add(u64::try_from(length).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Where a shared buffer can be opened from: ``(pid, fd, offset, length)``.
pub type Handle = (u32, i32, usize, usize);

/// A writable window on shared memory that other processes can map too.
#[pyclass(module = "gilfree._core", frozen)]
pub struct SharedBuffer {
    region: Arc<Region>,
    offset: usize,
    length: usize,
}

impl SharedBuffer {
    /// The handle to send to another process.
    #[must_use]
    pub fn handle(&self) -> Handle {
        let Origin { pid, fd } = self.region.origin();
        (pid, fd, self.offset, self.length)
    }

    /// The `length` bytes at `offset` of this buffer, as a buffer of their own (None if they
    /// are not all inside it).
    #[must_use]
    pub fn slice(&self, offset: usize, length: usize) -> Option<Self> {
        (offset.checked_add(length)? <= self.length).then(|| Self {
            region: Arc::clone(&self.region),
            offset: self.offset + offset,
            length,
        })
    }

    /// The bytes (shared memory: another process may write them concurrently).
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: offset + length lies inside the region (checked where the buffer was made)
        // and the region stays mapped while `self` lives.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr().add(self.offset), self.length) }
    }
}

#[pymethods]
impl SharedBuffer {
    /// A new zero-filled shared buffer of ``length`` bytes.
    #[staticmethod]
    fn allocate(length: usize) -> PyResult<Self> {
        if length == 0 {
            return Err(PyValueError::new_err(
                "a shared buffer needs a length of at least 1 byte",
            ));
        }
        let region = Region::create(length).map_err(Error::from)?;
        region.share_by_reference();
        Ok(Self {
            region,
            offset: 0,
            length,
        })
    }

    /// ``(pid, fd, offset, length)``: what another process passes to ``open_buffer``.
    #[getter(handle)]
    fn py_handle(&self) -> Handle {
        self.handle()
    }

    /// Where the bytes start in the memory file ``handle`` names (after the region's header):
    /// the offset to map them again with ``mmap``, privately for instance.
    #[getter]
    fn file_offset(&self) -> usize {
        gilfree_core::region::HEADER + self.offset
    }

    fn __len__(&self) -> usize {
        self.length
    }

    /// The buffer protocol: a simple writable view of the whole buffer.
    ///
    /// # Safety
    /// `view` must point to a `Py_buffer` to fill (`PyO3` calls this from `bf_getbuffer`).
    #[allow(clippy::needless_pass_by_value)] // the signature PyO3 requires
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let buffer = slf.get();
        let start = buffer.bytes().as_ptr().cast_mut().cast::<c_void>();
        let length = ffi::Py_ssize_t::try_from(buffer.length)
            .map_err(|_| PyBufferError::new_err("buffer too large"))?;
        // SAFETY: `view` is the caller's Py_buffer; the memory stays valid while the exporter
        // (`slf`, referenced by the view) lives; writable shared memory (readonly = 0).
        if unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), start, length, 0, flags) } == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// Nothing to release: the view holds the exporter alive.
    ///
    /// # Safety
    /// `view` must be a view this buffer filled (it is not read).
    #[allow(clippy::unused_self)]
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}

/// Makes ``obj``'s bytes reachable from another process. A buffer that already lies in memory
/// shared on purpose (a shared array) is shared as it is (no copy, whatever its size); another
/// (received from another process included) is copied into a new shared buffer if it holds at
/// least ``minimum`` bytes. Returns the buffer to keep alive until the
/// receiver has opened it (its ``handle`` is what to send), or None (send it inline). Buffers
/// that are not contiguous give None too.
#[pyfunction]
pub fn export(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    minimum: usize,
) -> PyResult<Option<SharedBuffer>> {
    if !SHARING_SUPPORTED {
        return Ok(None);
    }
    let mut view = std::mem::MaybeUninit::<ffi::Py_buffer>::uninit();
    // SAFETY: asks for a simple (contiguous, unformatted) buffer into our local view.
    if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) } != 0 {
        // SAFETY: clears the error just raised (not contiguous, or no buffer at all).
        unsafe { ffi::PyErr_Clear() };
        return Ok(None);
    }
    // SAFETY: PyObject_GetBuffer succeeded and filled the view.
    let mut view = unsafe { view.assume_init() };
    let result = share_address(
        py,
        view.buf as usize,
        usize::try_from(view.len).unwrap_or(0),
        minimum,
    );
    // SAFETY: releases the view acquired above, exactly once.
    unsafe { ffi::PyBuffer_Release(&raw mut view) };
    result
}

/// `export` for `length` bytes at `address`, which the caller keeps pinned (a buffer view)
/// for the whole call: the shared buffer they already lie in, a copy in a new one if they are
/// at least `minimum` bytes, or None.
pub fn share_address(
    py: Python<'_>,
    address: usize,
    length: usize,
    minimum: usize,
) -> PyResult<Option<SharedBuffer>> {
    if let Some((region, offset)) = shared_on_purpose(address, length) {
        Ok(Some(SharedBuffer {
            region,
            offset,
            length,
        }))
    } else if length == 0 || length < minimum {
        Ok(None)
    } else {
        copy_from_address(py, address, length).map(Some)
    }
}

/// The region shared on purpose that `[address, address + length)` lies in, with its offset
/// there (see `Region::by_reference`).
fn shared_on_purpose(address: usize, length: usize) -> Option<(Arc<Region>, usize)> {
    Region::containing(address, length).filter(|(region, _)| region.by_reference())
}

/// Makes ``obj``'s bytes shared on purpose, for ``gilfree.joblib`` to send one array to every
/// task of a call by reference: the shared buffer they already lie in if it was shared on
/// purpose (a shared array), else a copy in a new buffer, itself shared on purpose while it
/// lives. None for an empty or non-contiguous buffer, or where sharing is not supported.
#[pyfunction]
pub fn share(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Option<SharedBuffer>> {
    let shared = export(py, obj, 1)?;
    if let Some(buffer) = &shared {
        buffer.region.share_by_reference();
    }
    Ok(shared)
}

fn copy_from_address(py: Python<'_>, address: usize, length: usize) -> PyResult<SharedBuffer> {
    let region = Region::acquire(length).map_err(Error::from)?;
    count_copy(length);
    let target = region.as_ptr() as usize;
    // SAFETY: the source is pinned by the caller's Py_buffer for the whole copy; the target is
    // a region of `length` bytes acquired just now, that no one else uses; they cannot overlap.
    // The GIL is released meanwhile: only the memory is touched.
    py.detach(|| unsafe {
        let source = std::slice::from_raw_parts(address as *const u8, length);
        let target = std::slice::from_raw_parts_mut(target as *mut u8, length);
        gilfree_core::memory::copy_in_parallel(source, target);
    });
    Ok(SharedBuffer {
        region,
        offset: 0,
        length,
    })
}

/// A shared buffer of `length` bytes written by `fill` (GIL held: it may read Python objects).
pub fn filled_region(length: usize, fill: impl FnOnce(&mut [u8])) -> PyResult<SharedBuffer> {
    let region = Region::acquire(length).map_err(Error::from)?;
    count_copy(length);
    // SAFETY: a region of at least `length` bytes, acquired just now: no other process knows
    // it yet and no other view of it exists in this one.
    fill(unsafe { std::slice::from_raw_parts_mut(region.as_ptr(), length) });
    Ok(SharedBuffer {
        region,
        offset: 0,
        length,
    })
}

/// Bytes this process has copied into shared buffers to send them, since it started: large
/// buffers and large messages (buffers already in shared memory travel without a copy). A
/// measure of the data plane's copies, for tests and benchmarks.
#[pyfunction]
pub fn copied_to_shared() -> u64 {
    COPIED.load(Ordering::Relaxed)
}

/// Bytes of this process's large shared buffers moved into huge pages so far, by the thread that
/// does it in the background (``gilfree_core::huge``): a measure for tests and benchmarks. Stays
/// 0 where the system cannot do it.
#[pyfunction]
pub fn huge_page_bytes() -> u64 {
    gilfree_core::huge::collapsed_bytes()
}

/// Opens a buffer another process exported (its ``handle``).
#[pyfunction]
pub fn open_buffer(pid: u32, fd: i32, offset: usize, length: usize) -> PyResult<SharedBuffer> {
    let region = Region::open(Origin { pid, fd }).map_err(Error::from)?;
    if offset
        .checked_add(length)
        .is_none_or(|end| end > region.len())
    {
        return Err(Error::from(CoreError::Decode(format!(
            "a shared buffer of {} bytes has no bytes {offset}..{offset}+{length}",
            region.len()
        )))
        .into());
    }
    Ok(SharedBuffer {
        region,
        offset,
        length,
    })
}

/// Takes the shared-buffer registries' locks before `os.fork()` (see `os.register_at_fork`).
#[pyfunction]
fn before_fork() {
    gilfree_core::region::before_fork();
}

/// Releases them in the parent after `os.fork()`.
#[pyfunction]
fn after_fork_in_parent() {
    gilfree_core::region::after_fork_in_parent();
}

/// Releases them in the child after `os.fork()`.
#[pyfunction]
fn after_fork_in_child() {
    gilfree_core::region::after_fork_in_child();
}

/// Runs `wait` with the GIL released if this thread holds it (see
/// `gilfree_core::region::set_blocking_wait`).
fn wait_without_gil(wait: &mut dyn FnMut()) {
    // SAFETY: PyGILState_Check only reads this thread's state; when it reports the GIL held,
    // releasing and restoring it around a wait that runs no Python code is what
    // Py_BEGIN_ALLOW_THREADS does.
    unsafe {
        if ffi::PyGILState_Check() == 1 {
            let state = ffi::PyEval_SaveThread();
            wait();
            ffi::PyEval_RestoreThread(state);
        } else {
            wait();
        }
    }
}

/// Makes `SharedBuffer`, `export` and `open_buffer` available.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    gilfree_core::region::set_blocking_wait(wait_without_gil);
    module.add_class::<SharedBuffer>()?;
    module.add_function(wrap_pyfunction!(before_fork, module)?)?;
    module.add_function(wrap_pyfunction!(after_fork_in_parent, module)?)?;
    module.add_function(wrap_pyfunction!(after_fork_in_child, module)?)?;
    module.add_function(wrap_pyfunction!(export, module)?)?;
    module.add_function(wrap_pyfunction!(share, module)?)?;
    module.add_function(wrap_pyfunction!(open_buffer, module)?)?;
    module.add_function(wrap_pyfunction!(copied_to_shared, module)?)?;
    module.add_function(wrap_pyfunction!(huge_page_bytes, module)?)?;
    Ok(())
}
