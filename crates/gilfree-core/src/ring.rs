//! A single-producer single-consumer ring of variable-size frames in shared memory.
//!
//! Layout: a [`RingHeader`] (producer and consumer fields on separate cache lines) followed by
//! `capacity` data bytes. `head` and `tail` are 64-bit byte counters that only grow (no ABA); the
//! position in the data area is `counter % capacity`. Only offsets live in shared memory.
//!
//! Frames are 8-byte aligned: an 8-byte [`FrameHeader`] (payload length, flags) then the payload,
//! padded to 8. A frame never wraps: when the space left before the end is too small, the
//! producer writes a `WRAP` marker and continues at offset 0. A message larger than the free
//! space is split into fragments; the last one carries `LAST`.
//!
//! Invariants:
//! * Only the producer writes `head` and the bytes in `[head, tail + capacity)`; only the consumer
//!   writes `tail`. `tail <= head <= tail + capacity` at all times.
//! * The producer writes a frame's bytes, then publishes it with a Release store of `head`; the
//!   consumer reads `head` with Acquire before reading the bytes (and the reverse for `tail`).
//! * After publishing, the producer calls `data_ready.notify()`; after consuming, the consumer
//!   calls `space_ready.notify()` (see `notify` for why no wake-up is lost).
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::notify::Event;

/// Bytes of the frame header.
pub const FRAME_HEADER: usize = 8;
const FLAG_LAST: u32 = 1;
const FLAG_WRAP: u32 = 2;
/// A fragment smaller than this is not worth a frame; the producer wraps instead.
const MIN_FRAGMENT: usize = 64;

/// Aligns a field to its own cache line so producer and consumer do not false-share.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct CacheLine<T>(pub T);

/// The shared control block of one ring. All-zero bytes plus `capacity` make a valid empty ring.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RingHeader {
    head: CacheLine<AtomicU64>,
    tail: CacheLine<AtomicU64>,
    /// The consumer sleeps here waiting for frames.
    pub data_ready: CacheLine<Event>,
    /// The producer sleeps here waiting for room.
    pub space_ready: CacheLine<Event>,
    /// Set by a producer that has more to write but no room, for producers that sleep elsewhere
    /// than on `space_ready` (the parent sleeps on one doorbell for all its rings).
    producer_stalled: CacheLine<AtomicU32>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FrameHeader {
    len: u32,
    flags: u32,
}

/// A view of a ring living in a shared mapping.
#[derive(Debug, Clone, Copy)]
pub struct Ring<'a> {
    header: &'a RingHeader,
    data: *mut u8,
    capacity: usize,
}

/// Where a producer stands in writing one message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteProgress {
    /// Payload bytes already published.
    pub sent: usize,
    /// Whether the frame carrying `LAST` has been published.
    pub done: bool,
}

impl<'a> Ring<'a> {
    /// Bytes a ring of `capacity` data bytes occupies, header included.
    #[must_use]
    pub const fn footprint(capacity: usize) -> usize {
        std::mem::size_of::<RingHeader>() + capacity
    }

    /// Views the ring at `base`.
    ///
    /// # Safety
    /// `base` must be 64-byte aligned and point to `footprint(capacity)` bytes of a live shared
    /// mapping that outlives `'a`, initialised as a ring (zeroed memory is an empty ring), and
    /// each side of the ring must be used by one thread of one process at a time.
    /// `capacity` must be a non-zero multiple of 8 below 2^32.
    #[must_use]
    pub unsafe fn from_raw(base: *mut u8, capacity: usize) -> Self {
        debug_assert!(capacity % 8 == 0 && capacity > 0 && u32::try_from(capacity).is_ok());
        // SAFETY: the caller guarantees the memory is a valid, aligned RingHeader for 'a.
        let header = unsafe { &*base.cast::<RingHeader>() };
        // SAFETY: the data area follows the header inside the same mapping.
        let data = unsafe { base.add(std::mem::size_of::<RingHeader>()) };
        Self {
            header,
            data,
            capacity,
        }
    }

    /// The data capacity in bytes.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The ring's events and flags.
    #[must_use]
    pub fn header(&self) -> &'a RingHeader {
        self.header
    }

    /// Whether a frame is waiting (consumer side; Acquire).
    #[must_use]
    pub fn has_data(&self) -> bool {
        self.header.head.0.load(Ordering::Acquire) != self.header.tail.0.load(Ordering::Relaxed)
    }

    /// Free bytes (producer side; Acquire on `tail`).
    #[must_use]
    pub fn free_space(&self) -> usize {
        let head = self.header.head.0.load(Ordering::Relaxed);
        let tail = self.header.tail.0.load(Ordering::Acquire);
        self.capacity - (head - tail) as usize
    }

    /// Marks or clears "the producer waits for room" (see `RingHeader::producer_stalled`).
    pub fn set_producer_stalled(&self, stalled: bool) {
        self.header
            .producer_stalled
            .0
            .store(u32::from(stalled), Ordering::SeqCst);
    }

    /// Whether the producer said it waits for room.
    #[must_use]
    pub fn producer_stalled(&self) -> bool {
        self.header.producer_stalled.0.load(Ordering::SeqCst) != 0
    }

    /// Empties the ring. Only when neither side is using it (its worker is dead and reaped).
    pub fn reset(&self) {
        self.header.head.0.store(0, Ordering::SeqCst);
        self.header.tail.0.store(0, Ordering::SeqCst);
        self.header.producer_stalled.0.store(0, Ordering::SeqCst);
    }

    /// Producer: writes as much of the message `parts` (concatenated) as fits now, resuming at
    /// `progress`. Returns true once the whole message is published. Never blocks.
    pub fn write_message(&self, parts: &[&[u8]], progress: &mut WriteProgress) -> bool {
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let tail = self.header.tail.0.load(Ordering::Acquire);
        let mut head = self.header.head.0.load(Ordering::Relaxed);
        let start_head = head;
        while !progress.done {
            let free = self.capacity - (head - tail) as usize;
            let position = (head % self.capacity as u64) as usize;
            let contiguous = self.capacity - position;
            let remaining = total - progress.sent;
            let wanted = FRAME_HEADER + remaining.min(MIN_FRAGMENT);
            if contiguous < wanted && contiguous < self.capacity {
                if free < contiguous {
                    break;
                }
                self.write_frame_header(position, 0, FLAG_WRAP);
                head += contiguous as u64;
                continue;
            }
            let room = free.min(contiguous);
            if room < wanted {
                break;
            }
            let length = remaining.min((room - FRAME_HEADER) & !7);
            let last = length == remaining;
            self.write_frame_header(position, length, if last { FLAG_LAST } else { 0 });
            self.copy_in(position + FRAME_HEADER, parts, progress.sent, length);
            progress.sent += length;
            progress.done = last;
            head += frame_size(length) as u64;
        }
        if head != start_head {
            self.header.head.0.store(head, Ordering::Release);
            self.header.data_ready.0.notify();
        }
        progress.done
    }

    /// Consumer: reads the next message if all of it has arrived, else moves the fragments that
    /// have arrived into `partial` and returns None. A complete single-frame message is handed to
    /// `deliver` in place, without a copy; a fragmented one from `partial`.
    pub fn read_message<R>(
        &self,
        partial: &mut Vec<u8>,
        deliver: impl FnOnce(&[u8]) -> R,
    ) -> Option<R> {
        let head = self.header.head.0.load(Ordering::Acquire);
        let mut tail = self.header.tail.0.load(Ordering::Relaxed);
        let mut result = None;
        let mut deliver = Some(deliver);
        while tail != head {
            let position = (tail % self.capacity as u64) as usize;
            let frame = self.read_frame_header(position);
            if frame.flags & FLAG_WRAP != 0 {
                tail += (self.capacity - position) as u64;
                continue;
            }
            let length = frame.len as usize;
            // SAFETY: the producer published this frame (head was read with Acquire) and will not
            // touch it until `tail` moves past it; the frame lies inside the data area.
            let payload = unsafe {
                std::slice::from_raw_parts(self.data.add(position + FRAME_HEADER), length)
            };
            let last = frame.flags & FLAG_LAST != 0;
            if last && partial.is_empty() {
                result = deliver.take().map(|deliver| deliver(payload));
            } else {
                partial.extend_from_slice(payload);
                if last {
                    result = deliver.take().map(|deliver| deliver(partial));
                    partial.clear();
                }
            }
            tail += frame_size(length) as u64;
            if last {
                break;
            }
        }
        if tail != self.header.tail.0.load(Ordering::Relaxed) {
            self.header.tail.0.store(tail, Ordering::Release);
            self.header.space_ready.0.notify();
        }
        result
    }

    fn write_frame_header(&self, position: usize, length: usize, flags: u32) {
        let header = FrameHeader {
            len: length as u32,
            flags,
        };
        // SAFETY: `position` is 8-aligned and at least 8 bytes before the end of the data area
        // (capacity is a multiple of 8), and it lies in the producer-owned free region.
        unsafe { self.data.add(position).cast::<FrameHeader>().write(header) };
    }

    fn read_frame_header(&self, position: usize) -> FrameHeader {
        // SAFETY: as in write_frame_header, for a published frame owned by the consumer.
        unsafe { self.data.add(position).cast::<FrameHeader>().read() }
    }

    /// Copies `length` bytes of the concatenated `parts`, starting at `offset`, to `position`.
    fn copy_in(&self, mut position: usize, parts: &[&[u8]], mut offset: usize, mut length: usize) {
        for part in parts {
            if length == 0 {
                break;
            }
            if offset >= part.len() {
                offset -= part.len();
                continue;
            }
            let chunk = &part[offset..(offset + length).min(part.len())];
            // SAFETY: the destination range lies in the producer-owned free region checked by
            // write_message, and cannot overlap `parts` (process-local memory or another ring).
            unsafe {
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), self.data.add(position), chunk.len());
            }
            position += chunk.len();
            length -= chunk.len();
            offset = 0;
        }
    }
}

const fn frame_size(payload: usize) -> usize {
    FRAME_HEADER + ((payload + 7) & !7)
}
