//! One executor's shared segment: a header with the parent's doorbell, then one slot per worker,
//! each a request ring (parent → worker) and a response ring (worker → parent).
//!
//! ```text
//! [ SegmentHeader (page) ][ slot 0: request ring | response ring ][ slot 1: ... ] ...
//! ```
//! The parent sleeps on the doorbell only: a worker rings it after publishing a response, and
//! after consuming requests when the parent marked that request ring as stalled.
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::error::{CoreError, Result};
use crate::notify::Event;
use crate::ring::{CacheLine, Ring};
use crate::shm::SharedMemory;

const MAGIC: u64 = u64::from_le_bytes(*b"gilfree1");
const HEADER_BYTES: usize = 4096;

#[repr(C)]
struct SegmentHeader {
    magic: u64,
    slot_count: u64,
    ring_capacity: u64,
    doorbell: CacheLine<Event>,
}

/// A mapped segment, in the parent or in a worker.
#[derive(Debug)]
pub struct Segment {
    memory: SharedMemory,
    slot_count: usize,
    ring_capacity: usize,
}

/// Most slots (workers) a segment has.
pub const MAX_SLOTS: usize = 4096;

impl Segment {
    /// Creates a segment with `slot_count` ring pairs of `ring_capacity` bytes each.
    pub fn create(slot_count: usize, ring_capacity: usize) -> Result<Self> {
        if slot_count == 0 || slot_count > MAX_SLOTS {
            return Err(CoreError::InvalidArgument(format!(
                "slot count must be in 1..={MAX_SLOTS}, got {slot_count}"
            )));
        }
        if ring_capacity < 4096 || ring_capacity % 4096 != 0 || ring_capacity > 1 << 31 {
            return Err(CoreError::InvalidArgument(format!(
                "ring capacity must be a multiple of 4096 in 4096..=2^31, got {ring_capacity}"
            )));
        }
        let length = HEADER_BYTES + slot_count * slot_stride(ring_capacity);
        let memory = SharedMemory::create("gilfree", length)?;
        let header = SegmentHeader {
            magic: MAGIC,
            slot_count: slot_count as u64,
            ring_capacity: ring_capacity as u64,
            doorbell: CacheLine(Event::default()),
        };
        // SAFETY: the fresh mapping is page-aligned, at least HEADER_BYTES long and not yet
        // shared with anyone; rings need no initialisation beyond the zero fill.
        unsafe { memory.base().as_ptr().cast::<SegmentHeader>().write(header) };
        Ok(Self {
            memory,
            slot_count,
            ring_capacity,
        })
    }

    /// Maps a segment received from the parent, checking its layout against its size.
    pub fn open(fd: OwnedFd) -> Result<Self> {
        let memory = SharedMemory::open(fd)?;
        if memory.len() < HEADER_BYTES {
            return Err(CoreError::InvalidSegment("shorter than its header".into()));
        }
        // SAFETY: the mapping is page-aligned and long enough for the header.
        let header = unsafe { &*memory.base().as_ptr().cast::<SegmentHeader>() };
        if header.magic != MAGIC {
            return Err(CoreError::InvalidSegment("bad magic number".into()));
        }
        let slot_count = usize::try_from(header.slot_count).unwrap_or(usize::MAX);
        let ring_capacity = usize::try_from(header.ring_capacity).unwrap_or(usize::MAX);
        let expected = (ring_capacity <= 1 << 31)
            .then(|| slot_count.checked_mul(slot_stride(ring_capacity)))
            .flatten()
            .and_then(|slots| slots.checked_add(HEADER_BYTES));
        // Zero slots or zero-byte rings would "fit" a header-sized file; reject them as `create`
        // does (a zero capacity would make every ring operation divide by zero).
        if slot_count == 0
            || ring_capacity == 0
            || ring_capacity % 4096 != 0
            || expected != Some(memory.len())
        {
            return Err(CoreError::InvalidSegment(format!(
                "{slot_count} slots of {ring_capacity} bytes do not fill {} bytes",
                memory.len()
            )));
        }
        Ok(Self {
            memory,
            slot_count,
            ring_capacity,
        })
    }

    /// Number of worker slots.
    #[must_use]
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Data bytes of each ring.
    #[must_use]
    pub fn ring_capacity(&self) -> usize {
        self.ring_capacity
    }

    /// The memory file to hand to workers.
    #[must_use]
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.memory.fd()
    }

    /// The parent's doorbell.
    #[must_use]
    pub fn doorbell(&self) -> &Event {
        // SAFETY: the header was written by `create` (or checked by `open`) and lives as long
        // as `self`; the doorbell is only used through atomics.
        unsafe {
            &(*self.memory.base().as_ptr().cast::<SegmentHeader>())
                .doorbell
                .0
        }
    }

    /// The parent → worker ring of `slot`.
    ///
    /// # Panics
    /// If `slot` is out of range.
    #[must_use]
    pub fn request(&self, slot: usize) -> Ring<'_> {
        self.ring(slot, 0)
    }

    /// The worker → parent ring of `slot`.
    ///
    /// # Panics
    /// If `slot` is out of range.
    #[must_use]
    pub fn response(&self, slot: usize) -> Ring<'_> {
        self.ring(slot, 1)
    }

    fn ring(&self, slot: usize, which: usize) -> Ring<'_> {
        assert!(
            slot < self.slot_count,
            "slot {slot} out of range 0..{}",
            self.slot_count
        );
        let offset = HEADER_BYTES
            + slot * slot_stride(self.ring_capacity)
            + which * Ring::footprint(self.ring_capacity);
        // SAFETY: the offset lies inside the mapping (checked layout), is 64-byte aligned (the
        // header and the ring footprints are multiples of 64) and the mapping outlives the view.
        unsafe { Ring::from_raw(self.memory.base().as_ptr().add(offset), self.ring_capacity) }
    }
}

const fn slot_stride(ring_capacity: usize) -> usize {
    2 * Ring::footprint(ring_capacity)
}
