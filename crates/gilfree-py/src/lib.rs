//! `gilfree._core`: thin `PyO3` bindings over `gilfree-core`.
//!
//! * [`channel`]: the parent's and the worker's ends of a shared segment, framing messages with
//!   a fixed `gilfree_core::message::Header` and releasing the GIL around every wait.
//! * [`buffers`]: large buffers in shared memory, sent by handle instead of by copy.
//! * [`codec`]: the value codec (builtin values natively, anything else as pickle).
//! * [`process`]: starting, reaping, signalling and describing worker processes.
//! * [`handoff`]: a queue between threads of this process whose waits spin before sleeping.
//! * [`errors`]: the one mapping from `CoreError` to Python exceptions.
use pyo3::prelude::*;

mod buffers;
mod channel;
mod codec;
mod errors;
mod handoff;
mod process;

/// The native core of gilfree.
#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<channel::ParentChannel>()?;
    module.add_class::<channel::WorkerChannel>()?;
    module.add("HEADER_SIZE", gilfree_core::message::HEADER_SIZE)?;
    module.add("MAX_WORKERS", gilfree_core::segment::MAX_SLOTS)?;
    process::register(module)?;
    codec::register(module)?;
    buffers::register(module)?;
    handoff::register(module)?;
    Ok(())
}
