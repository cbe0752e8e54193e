//! A queue between threads of this process whose waits spin, GIL released, before sleeping:
//! the thread transport's inboxes and outcome queue.
//!
//! A hand-off through `queue.SimpleQueue` costs two thread wake-ups per round trip (the
//! worker's, then the caller's), and on a VM a wake-up of a sleeping thread is tens of
//! microseconds. Here a waiter spins a moment first (`notify::Event::wait_until`: the notifier
//! makes no system call while nobody sleeps), so a reply that comes soon is seen at once.
//!
//! Seeing the item is not all: the waiter must then take the GIL, and if the thread that put the
//! item still holds it, `take_gil` sleeps on the GIL's condition variable, which is the same
//! wake-up again. So a waiter that has its item waits, still spinning, for a hint that the GIL
//! is free before taking it: [`GIL_HINT`], set by every waiter here as it releases the GIL to
//! wait, cleared by the one that takes it next. The hint is only advice. Code elsewhere releases
//! the GIL without setting it, and another thread may take the GIL in between; a waiter that
//! sees no hint within [`HINT_GRACE`] takes the GIL anyway, as any thread would. So the hint can
//! delay a waiter by at most that grace, and never block it.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gilfree_core::notify::{Event, WaitPolicy};
use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::{PyTraverseError, PyVisit};

use crate::channel::policy;

/// Set by a waiter here as it releases the GIL, cleared by the waiter that takes it next: "the
/// GIL is probably free" (see the module docs).
static GIL_HINT: AtomicBool = AtomicBool::new(false);

/// How long a waiter that has its item waits for [`GIL_HINT`] before taking the GIL regardless.
const HINT_GRACE: Duration = Duration::from_micros(30);

/// A FIFO of Python objects between threads of this process (see the module docs). Any thread
/// may `put`; `take` waits with the GIL released.
#[pyclass(module = "gilfree._core", frozen)]
pub struct ThreadQueue {
    items: Mutex<VecDeque<Py<PyAny>>>,
    /// The number of items in `items`, read by waiters without the lock (Acquire), written
    /// under it (Release) after the change: a waiter that reads n > 0 finds n items.
    length: AtomicUsize,
    event: Event,
}

impl ThreadQueue {
    fn items(&self) -> MutexGuard<'_, VecDeque<Py<PyAny>>> {
        // A panic under this lock leaves a valid deque (push and drain do not panic midway).
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[pymethods]
impl ThreadQueue {
    #[new]
    fn new() -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            length: AtomicUsize::new(0),
            event: Event::default(),
        }
    }

    /// Appends `item` and wakes a waiter (no system call unless one sleeps).
    fn put(&self, item: Py<PyAny>) {
        {
            let mut items = self.items();
            items.push_back(item);
            self.length.store(items.len(), Ordering::Release);
        }
        self.event.notify();
    }

    /// Takes up to `most` items, oldest first. If there is none, waits for one (GIL released:
    /// spin `spin_us` microseconds, then sleep) at most `timeout` seconds; an empty list then.
    #[pyo3(signature = (timeout, spin_us=0.0, most=usize::MAX))]
    fn take<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        spin_us: f64,
        most: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let policy: WaitPolicy = policy(timeout, spin_us)?;
        if self.length.load(Ordering::Acquire) == 0 && policy.timeout > Duration::ZERO {
            py.detach(|| {
                GIL_HINT.store(true, Ordering::Release);
                let arrived = self
                    .event
                    .wait_until(policy, || self.length.load(Ordering::Acquire) > 0);
                if arrived {
                    await_gil_hint();
                } else {
                    GIL_HINT.store(false, Ordering::Release); // this thread takes the GIL now
                }
            });
        }
        let mut items = self.items();
        let count = items.len().min(most);
        let taken: Vec<Py<PyAny>> = items.drain(..count).collect();
        self.length.store(items.len(), Ordering::Release);
        drop(items);
        PyList::new(py, taken)
    }

    /// The number of items queued now.
    fn __len__(&self) -> usize {
        self.length.load(Ordering::Acquire)
    }

    /// Visits the queued items for the garbage collector (a unit's function may refer back to
    /// the executor that holds this queue).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // The lock is only ever held by a thread that holds the GIL and calls no Python code
        // meanwhile, so the collector (which holds the GIL) finds it free; if not, skipping
        // the visit only delays collecting a cycle.
        if let Ok(items) = self.items.try_lock() {
            for item in items.iter() {
                visit.call(item)?;
            }
        }
        Ok(())
    }

    /// Drops the queued items (the collector breaking a cycle).
    fn __clear__(&self) {
        let dropped: VecDeque<Py<PyAny>> = std::mem::take(&mut *self.items());
        self.length.store(0, Ordering::Release);
        drop(dropped);
    }
}

/// Waits until [`GIL_HINT`] says the GIL is free (clearing it: this thread takes it next), at
/// most [`HINT_GRACE`]; spins a little, then yields between checks (the thread that holds the
/// GIL may need this CPU to get to its release).
fn await_gil_hint() {
    let start = Instant::now();
    let mut checks = 0u32;
    while !GIL_HINT.swap(false, Ordering::AcqRel) {
        if start.elapsed() >= HINT_GRACE {
            GIL_HINT.store(false, Ordering::Release);
            return;
        }
        checks += 1;
        if checks < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<ThreadQueue>()
}
