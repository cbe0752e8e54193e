//! Memory at memory speed: large copies spread over the cores, and the allocator policy of
//! worker processes.
//!
//! A worker decodes the same sizes of arguments task after task. By default glibc gives freed
//! memory at the top of the heap back to the system (past 128 KiB) and serves blocks of 128 KiB
//! or more with fresh mappings, so each task faults its buffers in anew, which costs more than
//! the copies themselves on virtual machines (about 2 ms per MiB here). A worker instead keeps
//! up to a bound of freed memory for the next task.

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
        target.copy_from_slice(source);
        return;
    }
    // Pieces of whole pages, the last one taking the rest.
    let piece = (source.len() / threads).next_multiple_of(4096);
    std::thread::scope(|scope| {
        let mut pieces = source.chunks(piece).zip(target.chunks_mut(piece));
        let first = pieces.next();
        for (from, to) in pieces {
            scope.spawn(move || to.copy_from_slice(from));
        }
        if let Some((from, to)) = first {
            to.copy_from_slice(from);
        }
    });
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
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_setting() {
        assert!(super::keep_freed_memory(64 << 20));
    }
}
