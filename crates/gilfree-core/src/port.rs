//! The two ends of a segment: [`ParentPort`] (one per executor, shared by its threads) and
//! [`WorkerPort`] (one per worker process).
//!
//! The parent never blocks on a worker: a request that does not fit its ring is kept in that
//! slot's outbox and written on later calls to `flush`, while the parent keeps draining
//! responses. Workers may block on the parent (a full response ring), which cannot deadlock
//! because the parent always drains. A request ring with a non-empty outbox is marked stalled, so
//! its worker rings the doorbell when it frees room.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{CoreError, Result};
use crate::notify::WaitPolicy;
use crate::ring::{WriteProgress, FRAME_HEADER};
use crate::segment::Segment;

struct Pending {
    message: Vec<u8>,
    progress: WriteProgress,
}

/// The parent's end: sends requests to any slot, receives responses from every slot.
pub struct ParentPort {
    segment: Segment,
    outboxes: Vec<Mutex<VecDeque<Pending>>>,
    /// Per slot: free request-ring bytes that would let the outbox progress; 0 when not stalled.
    wanted_space: Vec<AtomicUsize>,
    inboxes: Vec<Mutex<Vec<u8>>>,
    kicked: AtomicBool,
}

impl ParentPort {
    /// Takes ownership of a freshly created segment.
    #[must_use]
    pub fn new(segment: Segment) -> Self {
        let slots = segment.slot_count();
        Self {
            outboxes: (0..slots).map(|_| Mutex::default()).collect(),
            wanted_space: (0..slots).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: (0..slots).map(|_| Mutex::default()).collect(),
            kicked: AtomicBool::new(false),
            segment,
        }
    }

    /// The segment (for its descriptor and sizes).
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Sends the message `parts` (concatenated) to `slot`. Returns true if it is fully in the
    /// ring, false if (part of) it waits in the outbox for `flush`. Never blocks on the worker.
    pub fn send(&self, slot: usize, parts: &[&[u8]]) -> bool {
        let ring = self.segment.request(slot);
        let mut outbox = lock(&self.outboxes[slot]);
        let mut progress = WriteProgress::default();
        if outbox.is_empty() && ring.write_message(parts, &mut progress) {
            return true;
        }
        outbox.push_back(Pending {
            message: parts.concat(),
            progress,
        });
        self.stall(slot, &outbox);
        false
    }

    /// Writes what the outboxes hold as far as the rings allow. Returns true when all are empty.
    pub fn flush(&self) -> bool {
        let mut all_empty = true;
        for slot in 0..self.outboxes.len() {
            if self.wanted_space[slot].load(Ordering::SeqCst) == 0 {
                continue;
            }
            let ring = self.segment.request(slot);
            let mut outbox = lock(&self.outboxes[slot]);
            while let Some(pending) = outbox.front_mut() {
                if !ring.write_message(&[&pending.message], &mut pending.progress) {
                    break;
                }
                outbox.pop_front();
            }
            if outbox.is_empty() {
                self.wanted_space[slot].store(0, Ordering::SeqCst);
                ring.set_producer_stalled(false);
            } else {
                self.stall(slot, &outbox);
                all_empty = false;
            }
        }
        all_empty
    }

    fn stall(&self, slot: usize, outbox: &VecDeque<Pending>) {
        let ring = self.segment.request(slot);
        let remaining = outbox
            .front()
            .map_or(0, |p| p.message.len() - p.progress.sent);
        let wanted = (remaining + 2 * FRAME_HEADER).min(ring.capacity() / 2);
        self.wanted_space[slot].store(wanted, Ordering::SeqCst);
        ring.set_producer_stalled(true);
    }

    /// Receives the next complete response of `slot`, if there is one (see `Ring::read_message`).
    pub fn receive<R>(&self, slot: usize, deliver: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mut inbox = lock(&self.inboxes[slot]);
        self.segment
            .response(slot)
            .read_message(&mut inbox, deliver)
    }

    /// Whether a response, room for a stalled outbox, or a kick is waiting.
    #[must_use]
    pub fn has_work(&self) -> bool {
        self.kicked.load(Ordering::SeqCst)
            || (0..self.segment.slot_count()).any(|slot| {
                let wanted = self.wanted_space[slot].load(Ordering::SeqCst);
                self.segment.response(slot).has_data()
                    || (wanted != 0 && self.segment.request(slot).free_space() >= wanted)
            })
    }

    /// Waits (spin, then futex on the doorbell) until `has_work`; returns `has_work()`.
    pub fn wait(&self, policy: WaitPolicy) -> bool {
        self.segment
            .doorbell()
            .wait_until(policy, || self.has_work())
    }

    /// Makes the current or next `wait` return (another thread wants the parent's attention).
    pub fn kick(&self) {
        self.kicked.store(true, Ordering::SeqCst);
        self.segment.doorbell().notify();
    }

    /// Clears and returns the kick flag.
    pub fn take_kick(&self) -> bool {
        self.kicked.swap(false, Ordering::SeqCst)
    }

    /// Empties both rings and the buffers of `slot`, for a replacement worker. Only call once the
    /// slot's previous worker has been reaped.
    pub fn reset_slot(&self, slot: usize) {
        let mut outbox = lock(&self.outboxes[slot]);
        let mut inbox = lock(&self.inboxes[slot]);
        outbox.clear();
        inbox.clear();
        self.wanted_space[slot].store(0, Ordering::SeqCst);
        self.segment.request(slot).reset();
        self.segment.response(slot).reset();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain buffers behind; they stay usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A worker's end: receives requests from, and sends responses to, its own slot.
pub struct WorkerPort {
    segment: Segment,
    slot: usize,
    partial: Vec<u8>,
}

impl WorkerPort {
    /// Opens `slot` of a segment received from the parent.
    pub fn new(segment: Segment, slot: usize) -> Result<Self> {
        if slot >= segment.slot_count() {
            return Err(CoreError::InvalidArgument(format!(
                "slot {slot} out of range 0..{}",
                segment.slot_count()
            )));
        }
        Ok(Self {
            segment,
            slot,
            partial: Vec::new(),
        })
    }

    /// Receives the next request, waiting by `policy`. None when the wait timed out first.
    pub fn receive<R>(
        &mut self,
        policy: WaitPolicy,
        deliver: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let ring = self.segment.request(self.slot);
        let mut deliver = Some(deliver);
        loop {
            let result = ring.read_message(&mut self.partial, |message| {
                deliver.take().map(|deliver| deliver(message))
            });
            if ring.producer_stalled() {
                self.segment.doorbell().notify();
            }
            if let Some(result) = result {
                return result;
            }
            if !ring
                .header()
                .data_ready
                .0
                .wait_until(policy, || ring.has_data())
            {
                return None;
            }
        }
    }

    /// Sends one response, blocking while the ring is full. `keep_waiting` is asked after each
    /// fruitless wait of `policy.timeout`; when it says no, gives up with `TimedOut`.
    pub fn send(
        &self,
        parts: &[&[u8]],
        policy: WaitPolicy,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<()> {
        let ring = self.segment.response(self.slot);
        let doorbell = self.segment.doorbell();
        let mut progress = WriteProgress::default();
        loop {
            let done = ring.write_message(parts, &mut progress);
            doorbell.notify();
            if done {
                return Ok(());
            }
            let total: usize = parts.iter().map(|part| part.len()).sum();
            let wanted = (total - progress.sent + 2 * FRAME_HEADER).min(ring.capacity() / 2);
            if !ring
                .header()
                .space_ready
                .0
                .wait_until(policy, || ring.free_space() >= wanted)
                && !keep_waiting()
            {
                return Err(CoreError::TimedOut);
            }
        }
    }
}

/// A policy that never spins and waits at most `timeout` (for tests and shutdown paths).
#[must_use]
pub fn sleep_policy(timeout: Duration) -> WaitPolicy {
    WaitPolicy {
        spin: Duration::ZERO,
        timeout,
    }
}
