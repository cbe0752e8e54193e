//! The allocator policy of worker processes.
//!
//! A worker decodes the same sizes of arguments task after task. By default glibc gives freed
//! memory at the top of the heap back to the system (past 128 KiB) and serves blocks of 128 KiB
//! or more with fresh mappings, so each task faults its buffers in anew, which costs more than
//! the copies themselves on virtual machines (about 2 ms per MiB here). A worker instead keeps
//! up to a bound of freed memory for the next task.

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
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_setting() {
        assert!(super::keep_freed_memory(64 << 20));
    }
}
