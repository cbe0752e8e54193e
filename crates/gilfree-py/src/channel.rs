//! The parent's and the worker's ends of a segment, as Python classes.
//!
//! Messages are `Header` + payload. Payloads are handed over as `bytes`; the only copy on the
//! receiving side is the one from the ring into the new `bytes` object. Every wait releases the
//! GIL and is bounded by the caller's timeout, so the Python side regains control regularly (to
//! check signals and dead workers).
use std::os::fd::AsRawFd;
use std::time::Duration;

use gilfree_core::message::Header;
use gilfree_core::notify::WaitPolicy;
use gilfree_core::port::{ParentPort, WorkerPort};
use gilfree_core::segment::Segment;
use gilfree_core::shm::duplicate_fd;
use gilfree_core::supervisor::parent_pid;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::errors::{Error, Result};

/// A received message as the Python tuple `(kind, epoch, task_id, arg, payload)`.
fn message_tuple<'py>(py: Python<'py>, message: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let (header, payload) = Header::decode(message).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err("message shorter than its header")
    })?;
    let payload = PyBytes::new(py, payload);
    (
        header.kind,
        header.epoch,
        header.task_id,
        header.arg,
        payload,
    )
        .into_pyobject(py)
}

pub(crate) fn policy(timeout: f64, spin_microseconds: f64) -> PyResult<WaitPolicy> {
    let seconds = |value: f64, name: &str| {
        Duration::try_from_secs_f64(value).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "{name} must be a finite number >= 0, got {value}"
            ))
        })
    };
    Ok(WaitPolicy {
        spin: seconds(spin_microseconds / 1e6, "spin_us")?,
        timeout: seconds(timeout, "timeout")?,
    })
}

/// The parent's end of a shared segment: one request and one response ring per worker slot.
#[pyclass(module = "gilfree._core", frozen)]
pub struct ParentChannel {
    port: ParentPort,
}

#[pymethods]
impl ParentChannel {
    /// Creates a segment with `slot_count` slots whose rings hold `ring_capacity` bytes each.
    #[new]
    fn new(slot_count: usize, ring_capacity: usize) -> Result<Self> {
        Ok(Self {
            port: ParentPort::new(Segment::create(slot_count, ring_capacity)?),
        })
    }

    /// The segment's file descriptor, to hand to workers (close-on-exec in this process).
    #[getter]
    fn fd(&self) -> i32 {
        self.port.segment().fd().as_raw_fd()
    }

    /// Number of worker slots.
    #[getter]
    fn slot_count(&self) -> usize {
        self.port.segment().slot_count()
    }

    /// Sends a message to `slot`; True if it is all in the ring, False if part waits in the
    /// outbox (written by later `pump` calls). Never blocks on the worker.
    fn send(
        &self,
        slot: usize,
        kind: u32,
        epoch: u32,
        task_id: u64,
        arg: u64,
        payload: &[u8],
    ) -> PyResult<bool> {
        self.check_slot(slot)?;
        let header = Header {
            kind,
            epoch,
            task_id,
            arg,
        }
        .encode();
        Ok(self.port.send(slot, &[&header, payload]))
    }

    /// Returns the responses that have arrived, as `(slot, kind, epoch, task_id, arg, payload)`
    /// tuples. If none has, waits (GIL released: spin `spin_us`, then sleep) until one arrives,
    /// `kick()` is called, or `timeout` seconds pass. Also moves outboxes forward.
    fn pump<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        spin_us: f64,
    ) -> PyResult<Bound<'py, PyList>> {
        let policy = policy(timeout, spin_us)?;
        let mut responses = self.drain(py)?;
        if responses.is_empty() {
            py.detach(|| {
                self.port.flush();
                self.port.wait(policy);
                self.port.flush();
            });
            responses = self.drain(py)?;
        }
        self.port.take_kick();
        PyList::new(py, responses)
    }

    /// Makes a `pump` waiting in another thread return now.
    fn kick(&self) {
        self.port.kick();
    }

    /// Empties `slot`'s rings for a replacement worker. Only once its old worker is reaped.
    fn reset_slot(&self, slot: usize) -> PyResult<()> {
        self.check_slot(slot)?;
        self.port.reset_slot(slot);
        Ok(())
    }
}

impl ParentChannel {
    fn check_slot(&self, slot: usize) -> PyResult<()> {
        let count = self.port.segment().slot_count();
        if slot < count {
            Ok(())
        } else {
            Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "slot {slot} out of range 0..{count}"
            )))
        }
    }

    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let mut responses = Vec::new();
        for slot in 0..self.port.segment().slot_count() {
            while let Some(message) = self
                .port
                .receive(slot, |message| message_tuple(py, message))
            {
                let message = message?;
                let mut items: Vec<Bound<'py, PyAny>> = vec![slot.into_pyobject(py)?.into_any()];
                items.extend(message.iter());
                responses.push(PyTuple::new(py, items)?);
            }
        }
        Ok(responses)
    }
}

/// A worker's end of the segment: receives its slot's requests, sends its responses.
#[pyclass(module = "gilfree._core")]
pub struct WorkerChannel {
    port: WorkerPort,
    parent_pid: Option<u32>,
}

#[pymethods]
impl WorkerChannel {
    /// Maps the segment behind file descriptor `fd` (duplicated; the caller keeps its own) and
    /// takes slot `slot`.
    #[new]
    fn new(fd: i32, slot: usize) -> Result<Self> {
        let port = WorkerPort::new(Segment::open(duplicate_fd(fd)?)?, slot)?;
        Ok(Self {
            port,
            parent_pid: parent_pid(),
        })
    }

    /// The next request as `(kind, epoch, task_id, arg, payload)`, or None if `timeout` seconds
    /// pass first (spinning `spin_us` microseconds before sleeping, GIL released).
    fn receive<'py>(
        &mut self,
        py: Python<'py>,
        timeout: f64,
        spin_us: f64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let policy = policy(timeout, spin_us)?;
        let port = &mut self.port;
        let message: Option<Vec<u8>> = py.detach(|| port.receive(policy, <[u8]>::to_vec));
        message
            .map(|message| message_tuple(py, &message))
            .transpose()
    }

    /// Sends a response; blocks (GIL released) while the ring is full, and fails with
    /// `TimeoutError` if the parent process is gone meanwhile.
    fn send(
        &self,
        py: Python<'_>,
        kind: u32,
        epoch: u32,
        task_id: u64,
        arg: u64,
        payload: &[u8],
    ) -> Result<()> {
        let header = Header {
            kind,
            epoch,
            task_id,
            arg,
        }
        .encode();
        let policy = WaitPolicy {
            spin: Duration::from_micros(20),
            timeout: Duration::from_millis(100),
        };
        let original_parent = self.parent_pid;
        let port = &self.port;
        py.detach(|| {
            port.send(&[&header, payload], policy, || {
                parent_pid() == original_parent
            })
        })
        .map_err(Error::from)
    }

    /// Whether the process that started this worker is still its parent.
    fn parent_alive(&self) -> bool {
        parent_pid() == self.parent_pid
    }
}
