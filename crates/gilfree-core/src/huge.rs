//! Huge pages for large regions, made on a thread of their own.
//!
//! A large buffer is read at memory speed by every process it reaches. With 4 KiB pages, each
//! 4 KiB read through costs a translation: summing a 100 MB float64 array in shared memory takes
//! 10.5 ms with 4 KiB pages and 5.9 ms with 2 MiB pages here, as fast as private memory, which
//! numpy asks huge pages for. The kernel gives shared memory huge pages when they are faulted in
//! only where `/sys/kernel/mm/transparent_hugepage/shmem_enabled` allows it (`never` on these
//! machines); everywhere from Linux 6.1 on, `MADV_COLLAPSE` moves existing pages into huge
//! pages. That is a copy, about 0.4 ms per MiB, so it never runs on the caller's thread: a region
//! is usable at once and becomes faster when its turn is done.
//!
//! A move can cost ten times more, for as long as the kernel draws on memory that the machine
//! below must first provide: on virtual machines that take back free memory (free page
//! reporting gives the host free blocks of exactly 2 MiB), 100 MB took 0.35 to 1 s here instead
//! of 40 ms. Reading the region faster would take hundreds of passes to repay that, and the
//! thread would take a core from the work meanwhile, so a slow step (`SLOW_NANOS_PER_BYTE`) ends
//! the region's turn: what was moved stays moved, the rest keeps its 4 KiB pages.
//!
//! How (the invariants):
//! * [`collapse_later`] queues a `Weak` reference to the mapping and how much of it, from its
//!   start, to move (a pooled region's pages past that are not even allocated), whose turn
//!   comes `DELAY` later.
//!   One thread per process works through the queue, a step of `STEP` bytes at a time, holding the mapping (`Arc`) only for
//!   one step: a region dropped meanwhile is unmapped at most one step later, and the rest of
//!   it is skipped. Each region has one turn, however it ends.
//! * The thread exists only while there is work: it ends when it finds the queue empty, under
//!   the queue's lock, after clearing `worker`; the next `collapse_later` starts another.
//! * The content of a region never changes: the kernel copies each huge page with its old pages
//!   unmapped from every process, so a reader or writer in any process meanwhile waits for the
//!   page and then sees the same bytes.
//! * `fork`: the queue's lock is taken before a fork with the region registries' (see
//!   `region::before_fork`). The child has no collapsing thread: `worker` names the parent, so
//!   the child's next `collapse_later` starts its own, and the parent's queue is emptied in the
//!   child (it holds the parent's regions, not the child's work).
use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::shm::{SharedMemory, HUGE_PAGE};

/// Regions smaller than this keep their 4 KiB pages (a copy of them is quick anyway, and a
/// huge page left half-used would waste up to 2 MiB).
pub const COLLAPSE_MIN: usize = 8 << 20;
/// How long a region waits for its turn: one used only briefly (a large argument or result of
/// one task, dropped at once) never costs a move, and the first moments of a long-lived one,
/// often a burst of short round trips, run without the collapsing thread beside them.
const DELAY: Duration = Duration::from_millis(100);
/// Bytes moved into huge pages per step (between two checks that the region still lives).
const STEP: usize = 2 * HUGE_PAGE;
/// A step that takes more CPU time than this many nanoseconds per byte ends the region's turn (see the module
/// docs): 1.5 ms per MiB, four times what a move costs when the kernel has huge pages at hand
/// (0.35–0.45 ms per MiB here).
const SLOW_NANOS_PER_BYTE: f64 = 1.5e6 / (1 << 20) as f64;

/// The work: mappings waiting for huge pages, and the process whose thread works on them.
pub(crate) struct Queue {
    /// Each with the time its turn may start (in queue order: the same delay for all), and
    /// the bytes to move from its start.
    waiting: VecDeque<(Instant, Weak<SharedMemory>, usize)>,
    /// The pid of the process whose thread works through `waiting`; 0 when none does.
    worker: u32,
}

pub(crate) static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    waiting: VecDeque::new(),
    worker: 0,
});

/// The collapsing thread's nice value (this thread only, on Linux). While other threads keep
/// every core busy it gets a tenth of a core against each (the kernel's weight 110 against 1024),
/// enough that a thread waiting for a page it is moving, or for the address space it holds for
/// reading, waits at most a few milliseconds; lower (19) would let such waits grow to a second.
const NICE: i32 = 10;

/// Bytes moved into huge pages by this process since it started (for tests and benchmarks).
static COLLAPSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Moves the pages of `memory`'s first `len` bytes into huge pages soon, on the collapsing
/// thread (see the module docs).
/// `queue` is `QUEUE`, locked by the caller (with the GIL released if it must wait: see
/// `region::lock`). Does nothing on systems without `MADV_COLLAPSE`.
pub(crate) fn collapse_later(queue: &mut Queue, memory: Weak<SharedMemory>, len: usize) {
    if !cfg!(target_os = "linux") {
        return;
    }
    queue
        .waiting
        .push_back((Instant::now() + DELAY, memory, len));
    let me = std::process::id();
    if queue.worker != me {
        let started = std::thread::Builder::new()
            .name("gilfree-huge-pages".into())
            .spawn(work);
        if started.is_ok() {
            queue.worker = me;
        } else {
            queue.waiting.clear(); // no thread to be had: the regions keep their pages
        }
    }
}

impl Queue {
    /// Whether no work is queued and no thread works (for tests).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.worker == 0 && self.waiting.is_empty()
    }
}

/// Bytes this process has moved into huge pages.
#[must_use]
pub fn collapsed_bytes() -> u64 {
    COLLAPSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The collapsing thread: every queued mapping in turn, step by step, until none is left.
fn work() {
    // Lower priority: the thread takes a core from no busy thread for long (see `NICE`).
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE);
    loop {
        let next = {
            // No GIL on this thread: a plain wait is safe, even for a lock held across a fork.
            let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
            let next = queue.waiting.pop_front();
            if next.is_none() {
                queue.worker = 0;
                return;
            }
            next
        };
        let Some((due, memory, len)) = next else {
            return;
        };
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let mut offset = 0;
        while let Some(mapping) = memory.upgrade() {
            let end = len.min(mapping.len());
            if offset >= end {
                break;
            }
            let step = STEP.min(end - offset);
            let started = cpu_nanos();
            if mapping.collapse(offset, step) {
                COLLAPSED.fetch_add(step as u64, std::sync::atomic::Ordering::Relaxed);
            }
            #[allow(clippy::cast_precision_loss)] // nanoseconds and bytes, far below 2^52
            let nanos_per_byte = cpu_nanos().saturating_sub(started) as f64 / step as f64;
            if nanos_per_byte > SLOW_NANOS_PER_BYTE {
                break; // the kernel draws on memory the host must provide: see the module docs
            }
            offset += step;
        }
    }
}

/// The CPU time of this thread, in nanoseconds: a step's cost without the time the thread waited
/// for a core, or for a page someone else was using.
fn cpu_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

/// In a child just after `fork`, with the lock still held from `before_fork`: forgets the
/// parent's work (see the module docs).
pub(crate) fn forget_parents_work(queue: &mut Queue) {
    queue.waiting.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    const LEN: usize = 8 * HUGE_PAGE;

    fn words(memory: &SharedMemory) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, `len` bytes long and lives as long as `memory`;
        // every access in these tests is atomic.
        unsafe { std::slice::from_raw_parts(memory.base().as_ptr().cast(), memory.len() / 8) }
    }

    fn pattern(index: usize) -> u64 {
        (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    /// The `ShmemPmdMapped` kB of this process's mapping starting at `address`.
    fn pmd_mapped_kb(address: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let start = format!("{address:x}-");
        let mapping = smaps
            .split('\n')
            .skip_while(|line| !line.starts_with(&start));
        mapping
            .skip(1)
            .take_while(|line| {
                line.split_whitespace()
                    .next()
                    .is_some_and(|key| key.ends_with(':'))
            })
            .find_map(|line| line.strip_prefix("ShmemPmdMapped:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
    }

    #[test]
    fn large_mappings_start_at_a_huge_page_boundary_in_every_process() {
        let memory = SharedMemory::create_populated_huge("gilfree-test", LEN + 4096).unwrap();
        assert_eq!(memory.base().as_ptr() as usize % HUGE_PAGE, 0);
        let again = SharedMemory::open(memory.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(again.base().as_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(again.len(), LEN + 4096);
        words(&memory)[LEN / 8 + 1].store(7, Ordering::SeqCst);
        assert_eq!(
            words(&again)[LEN / 8 + 1].load(Ordering::SeqCst),
            7,
            "one file"
        );
    }

    #[test]
    fn collapsing_keeps_every_byte_while_other_threads_write_and_read() {
        let memory = SharedMemory::create_populated_huge("gilfree-test", LEN).unwrap();
        let all = words(&memory);
        for (index, word) in all.iter().enumerate() {
            word.store(pattern(index), Ordering::Relaxed);
        }
        let stop = AtomicBool::new(false);
        let collapsed = std::thread::scope(|scope| {
            // A writer counts up every 512th word of the first half; a reader checks the
            // second half, which nobody writes.
            let writer = scope.spawn(|| {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for word in all[..all.len() / 2].iter().step_by(512) {
                        word.fetch_add(1, Ordering::Relaxed);
                    }
                    rounds += 1;
                }
                rounds
            });
            let reader = scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let half = all.len() / 2;
                    for (index, word) in all.iter().enumerate().skip(half).step_by(61) {
                        assert_eq!(word.load(Ordering::Relaxed), pattern(index));
                    }
                }
            });
            let collapsed = (0..LEN)
                .step_by(HUGE_PAGE)
                .filter(|&offset| memory.collapse(offset, HUGE_PAGE))
                .count();
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            reader.join().unwrap();
            let rounds = writer.join().unwrap();
            for (index, word) in all[..all.len() / 2].iter().enumerate() {
                let written = if index % 512 == 0 { rounds } else { 0 };
                assert_eq!(
                    word.load(Ordering::Relaxed),
                    pattern(index).wrapping_add(written)
                );
            }
            collapsed
        });
        if collapsed > 0 {
            let kb = pmd_mapped_kb(memory.base().as_ptr() as usize).expect("the mapping's smaps");
            assert!(kb >= 2048, "a collapsed page is mapped whole ({kb} kB)");
        }
    }

    #[test]
    fn collapsing_outside_the_mapping_or_less_than_a_huge_page_does_nothing() {
        let memory = SharedMemory::create_populated_huge("gilfree-test", LEN).unwrap();
        assert!(!memory.collapse(LEN - 4096, 8192), "past the end");
        assert!(!memory.collapse(usize::MAX, 2), "an overflowing range");
        assert!(
            !memory.collapse(4096, HUGE_PAGE),
            "no whole huge page inside"
        );
    }

    /// Waits until no collapsing thread runs in this process (or 30 s).
    fn wait_for_the_thread_to_end() -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let queue = QUEUE.lock().unwrap();
            if queue.worker == 0 && queue.waiting.is_empty() {
                return true;
            }
            drop(queue);
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn the_collapsing_thread_ends_when_its_work_is_done_and_skips_dropped_regions() {
        let kept = Arc::new(SharedMemory::create_populated_huge("gilfree-test", LEN).unwrap());
        for (index, word) in words(&kept).iter().enumerate() {
            word.store(pattern(index), Ordering::Relaxed);
        }
        let dropped = Arc::new(SharedMemory::create_populated_huge("gilfree-test", LEN).unwrap());
        {
            let mut queue = QUEUE.lock().unwrap();
            collapse_later(&mut queue, Arc::downgrade(&dropped), LEN);
            collapse_later(&mut queue, Arc::downgrade(&kept), LEN);
            drop(dropped); // before its turn (the thread waits for the lock held here)
        }
        assert!(wait_for_the_thread_to_end(), "the thread ended");
        for (index, word) in words(&kept).iter().enumerate() {
            assert_eq!(word.load(Ordering::Relaxed), pattern(index));
        }
        assert!(kept.fd().as_fd().try_clone_to_owned().is_ok());
        // And a later region starts a thread again.
        collapse_later(&mut QUEUE.lock().unwrap(), Arc::downgrade(&kept), LEN);
        assert!(wait_for_the_thread_to_end(), "the second thread ended");
    }
}
