//! Memory at memory speed: copies for another process to read, large ones spread over the
//! cores, and the allocator policy of worker processes.
//!
//! A buffer copied into shared memory is read next by another process, on another core: this
//! core will not read it again. A plain `memcpy` of it pulls every target line into this core's
//! caches first (a read for ownership) and pushes it out again later: three passes over memory
//! for one copy. glibc switches to non-temporal stores only past a threshold derived from the
//! last-level cache (190 MB on these virtual machines, whose reported 480 MiB cache is the
//! host's). `copy_for_others` streams the target straight to memory past `STREAMING_MIN`,
//! reading four pages at a time: 7 ms instead of 14 ms for 96 MB here, whether in one buffer
//! or in 200 of 480 KB, and the receiver reads the target no slower.
//!
//! A worker decodes the same sizes of arguments task after task. By default glibc gives freed
//! memory at the top of the heap back to the system (past 128 KiB) and serves blocks of 128 KiB
//! or more with fresh mappings, so each task faults its buffers in anew, which costs more than
//! the copies themselves on virtual machines (about 2 ms per MiB here). A worker instead keeps
//! up to a bound of freed memory for the next task.

/// Copies of at least this many bytes bypass this core's caches (see the module's notes).
/// Below it a plain copy is cheaper: its target (a recycled buffer) is often still in this
/// core's caches, and the receiver reads it from there. A 64 KiB array's codec round trip took
/// 4.7 µs streamed and 2.5 µs plain here; a map chunk of 480 KB frames still streams.
pub const STREAMING_MIN: usize = 256 << 10;
/// Copies smaller than this are done by the calling thread alone.
const PARALLEL_COPY_MIN: usize = 8 << 20;
/// The least each thread of a parallel copy copies.
const PARALLEL_COPY_PIECE: usize = 4 << 20;
/// The most threads one copy uses.
const PARALLEL_COPY_THREADS: usize = 4;

/// Copies `source` into `target` (the same length), with a few threads when it is large: one
/// core does not reach the memory's bandwidth (a submit of one 80 MB `DataFrame` waits for this
/// copy alone).
///
/// # Panics
/// If the lengths differ.
pub fn copy_in_parallel(source: &[u8], target: &mut [u8]) {
    assert_eq!(
        source.len(),
        target.len(),
        "a copy between buffers of different lengths"
    );
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = cores
        .min(PARALLEL_COPY_THREADS)
        .min(source.len() / PARALLEL_COPY_PIECE)
        .max(1);
    if source.len() < PARALLEL_COPY_MIN || threads == 1 {
        copy_for_others(source, target);
        return;
    }
    // Pieces of whole pages, the last one taking the rest.
    let piece = (source.len() / threads).next_multiple_of(4096);
    std::thread::scope(|scope| {
        let mut pieces = source.chunks(piece).zip(target.chunks_mut(piece));
        let first = pieces.next();
        for (from, to) in pieces {
            scope.spawn(move || copy_for_others(from, to));
        }
        if let Some((from, to)) = first {
            copy_for_others(from, to);
        }
    });
}

/// Copies `source` into `target` (the same length), which another process reads next: past
/// `STREAMING_MIN` bytes, with non-temporal stores that leave this core's caches alone.
///
/// Ordering: non-temporal stores are not ordered with the stores that follow them, so a copy
/// that streams ends with a store fence. Whatever this thread stores after the call (the
/// release store that publishes the buffer to another process) is seen after the copy, as with
/// a plain copy.
///
/// # Panics
/// If the lengths differ.
pub fn copy_for_others(source: &[u8], target: &mut [u8]) {
    assert_eq!(
        source.len(),
        target.len(),
        "a copy between buffers of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    if source.len() >= STREAMING_MIN {
        streaming::copy(source, target);
        return;
    }
    target.copy_from_slice(source);
}

#[cfg(target_arch = "x86_64")]
mod streaming {
    //! The x86-64 non-temporal copy, with SSE2 only (part of every x86-64 processor).
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    /// A cache line: the unit of a non-temporal store, and the target's alignment.
    const LINE: usize = 64;
    const PAGE: usize = 4096;
    /// Pages read side by side, a line of each in turn: more streams from memory at once
    /// (measured: twice the speed of one page after another).
    const PAGES_AT_ONCE: usize = 4;

    /// Streams `source` into `target` (the same length, checked by the caller).
    pub(super) fn copy(source: &[u8], target: &mut [u8]) {
        let length = source.len();
        let head = target.as_ptr().align_offset(LINE).min(length);
        target[..head].copy_from_slice(&source[..head]);
        let mut at = head;
        let block = PAGES_AT_ONCE * PAGE;
        while at + block <= length {
            for line in (0..PAGE).step_by(LINE) {
                for page in 0..PAGES_AT_ONCE {
                    let offset = at + page * PAGE + line;
                    // SAFETY: offset + LINE <= at + block <= length, in both slices of that
                    // length; target + offset is line-aligned (target + head is, and offset -
                    // head is a multiple of LINE).
                    unsafe {
                        copy_line(source.as_ptr().add(offset), target.as_mut_ptr().add(offset));
                    }
                }
            }
            at += block;
        }
        while at + LINE <= length {
            // SAFETY: as above, at + LINE <= length and target + at is line-aligned.
            unsafe { copy_line(source.as_ptr().add(at), target.as_mut_ptr().add(at)) };
            at += LINE;
        }
        target[at..].copy_from_slice(&source[at..]);
        // SAFETY: SSE, part of every x86-64 processor; a fence touches no memory. It orders the
        // streamed stores before any later store (see the caller).
        unsafe { _mm_sfence() };
    }

    /// Copies one line from `from` to the line-aligned `to` with non-temporal stores.
    ///
    /// # Safety
    /// `from` must be readable and `to` writable for `LINE` bytes, `to` aligned to `LINE`.
    unsafe fn copy_line(from: *const u8, to: *mut u8) {
        for part in (0..LINE).step_by(16) {
            // SAFETY: within the line the caller vouches for; the loads are unaligned, the
            // stores 16-byte aligned (`to` is line-aligned).
            unsafe {
                let value = _mm_loadu_si128(from.add(part).cast::<__m128i>());
                _mm_stream_si128(to.add(part).cast::<__m128i>(), value);
            }
        }
    }
}

/// Keeps up to `bytes` of freed heap memory in this process for reuse, and serves blocks
/// smaller than `bytes / 2` from the heap. Returns false where the allocator has no such
/// setting (only glibc's has), leaving the process unchanged.
#[must_use]
pub fn keep_freed_memory(bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        let keep = i32::try_from(bytes).unwrap_or(i32::MAX);
        // SAFETY: mallopt only changes two of glibc's tunables; it takes the allocator's own
        // lock and is safe to call at any time.
        unsafe { mallopt(M_TRIM_THRESHOLD, keep) == 1 && mallopt(M_MMAP_THRESHOLD, keep / 2) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parallel_copy_copies_every_byte() {
        for length in [0, 5, (8 << 20) + 12_345, 33 << 20] {
            let source: Vec<u8> = (0..length).map(|index| (index % 251) as u8).collect();
            let mut target = vec![0u8; length];
            super::copy_in_parallel(&source, &mut target);
            assert!(source == target, "length {length}");
        }
    }

    #[test]
    fn a_copy_for_others_copies_every_byte_at_any_alignment() {
        let streamed = super::STREAMING_MIN;
        for length in [
            0,
            1,
            63,
            64,
            streamed - 1,
            streamed,
            streamed + 4096 * 4 + 100,
            3 << 20,
        ] {
            let source: Vec<u8> = (0..length + 64).map(|index| (index % 253) as u8).collect();
            for shift in [0, 1, 17, 63] {
                let mut target = vec![0u8; length + 64];
                let from = &source[shift..shift + length];
                super::copy_for_others(from, &mut target[64 - shift..64 - shift + length]);
                assert!(
                    &target[64 - shift..64 - shift + length] == from,
                    "length {length}, shift {shift}"
                );
                assert!(
                    target[..64 - shift].iter().all(|&byte| byte == 0),
                    "wrote before"
                );
                assert!(
                    target[64 - shift + length..].iter().all(|&byte| byte == 0),
                    "wrote after"
                );
            }
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_setting() {
        assert!(super::keep_freed_memory(64 << 20));
    }
}
