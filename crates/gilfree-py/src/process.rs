//! Worker processes: start, reap, signal, describe. Exit codes follow Python's convention: a
//! non-negative exit status, or minus the signal number that killed the process.
use std::ffi::OsStr;

use gilfree_core::supervisor::{self, ExitStatus};
use pyo3::prelude::*;

use crate::errors::Result;

/// Starts `argv` (stdin closed) keeping the descriptors `inherit` open in the child; returns its
/// pid. The child is ours to reap with `try_wait`/`wait`.
#[pyfunction]
#[allow(clippy::needless_pass_by_value)] // PyO3 extracts Python lists into owned vectors
fn spawn(argv: Vec<String>, inherit: Vec<i32>) -> PyResult<u32> {
    let (program, arguments) = argv
        .split_first()
        .ok_or_else(|| pyo3::exceptions::PyValueError::new_err("argv must not be empty"))?;
    let arguments: Vec<&OsStr> = arguments.iter().map(OsStr::new).collect();
    Ok(supervisor::spawn(OsStr::new(program), &arguments, &inherit)
        .map_err(crate::errors::Error::from)?)
}

/// Reaps child `pid` if it has ended and returns its exit code; None while it runs.
#[pyfunction]
fn try_wait(pid: u32) -> Result<Option<i32>> {
    Ok(supervisor::try_wait(pid)?.map(ExitStatus::exit_code))
}

/// Waits (GIL released) until child `pid` ends, reaps it and returns its exit code.
#[pyfunction]
fn wait(py: Python<'_>, pid: u32) -> Result<i32> {
    Ok(py.detach(|| supervisor::wait(pid))?.exit_code())
}

/// Sends signal number `signal` to `pid`; a process already gone is not an error.
#[pyfunction]
fn kill(pid: u32, signal: i32) -> Result<()> {
    Ok(supervisor::kill(pid, signal)?)
}

/// Makes the kernel send `signal` to this process when its parent thread exits (Linux); returns
/// False where the system has no such facility.
#[pyfunction]
fn set_parent_death_signal(signal: i32) -> Result<bool> {
    Ok(supervisor::set_parent_death_signal(signal)?)
}

/// Kills this process as soon as its parent is no longer `parent` (checked by a native thread
/// every `interval_seconds`, so a worker busy holding the GIL still dies with its parent).
#[pyfunction]
fn exit_with_parent(parent: u32, interval_seconds: f64) -> Result<()> {
    Ok(supervisor::exit_with_parent(
        parent,
        std::time::Duration::from_secs_f64(interval_seconds.max(0.001)),
    )?)
}

/// Decodes a raw `waitpid` status into an exit code; None if the process has not ended.
#[pyfunction]
fn exit_code_from_status(status: i32) -> Option<i32> {
    ExitStatus::from_raw(status).map(ExitStatus::exit_code)
}

/// Says how a process ended: `"exit code 3"` or `"signal SIGKILL"`.
#[pyfunction]
fn describe_exit(exit_code: i32) -> String {
    let status = if exit_code < 0 {
        ExitStatus::Signal(-exit_code)
    } else {
        ExitStatus::Code(exit_code)
    };
    status.to_string()
}

/// Keeps up to `bytes` of freed memory in this process for reuse (glibc; see
/// `gilfree_core::memory`); returns whether the allocator took the setting.
#[pyfunction]
fn keep_freed_memory(bytes: usize) -> bool {
    gilfree_core::memory::keep_freed_memory(bytes)
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(keep_freed_memory, module)?)?;
    module.add_function(wrap_pyfunction!(spawn, module)?)?;
    module.add_function(wrap_pyfunction!(try_wait, module)?)?;
    module.add_function(wrap_pyfunction!(wait, module)?)?;
    module.add_function(wrap_pyfunction!(kill, module)?)?;
    module.add_function(wrap_pyfunction!(exit_code_from_status, module)?)?;
    module.add_function(wrap_pyfunction!(set_parent_death_signal, module)?)?;
    module.add_function(wrap_pyfunction!(exit_with_parent, module)?)?;
    module.add_function(wrap_pyfunction!(describe_exit, module)?)?;
    Ok(())
}
