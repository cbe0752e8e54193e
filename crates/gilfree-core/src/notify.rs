//! Spin-then-futex events on words in shared memory.
//!
//! An [`Event`] is two 32-bit words a producer and a consumer in different processes share: a
//! sequence number the sleeper parks on, and a count of sleepers. The futex is *shared* (never
//! `FUTEX_PRIVATE_FLAG`), so it works across processes that map the same page at different
//! addresses.
//!
//! Invariant (no lost wake-up). The waiter registers in `sleepers` *before* it re-checks its
//! condition; the notifier publishes its data *before* it reads `sleepers`; both sides put a
//! `SeqCst` fence between their store and their load. So at least one of them sees the other: either
//! the waiter sees the data and does not sleep, or the notifier sees a sleeper, bumps `seq` and
//! wakes it (a futex wait on a stale `seq` returns at once). A notifier that sees no sleeper makes
//! no system call, which keeps the busy path free of syscalls.
//!
//! Waits are sliced (see [`Event::wait_until`]) so a waiter regularly gets control back and can
//! notice a dead peer.
use std::hint::spin_loop;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Rounds of 64 pause instructions (a few microseconds) before the spin starts yielding.
const PURE_SPIN_ROUNDS: u32 = 16;

/// A wake-up channel living in shared memory. All-zero bytes are a valid, idle event.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Event {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

/// How a waiter spends its time before the condition holds.
#[derive(Debug, Clone, Copy)]
pub struct WaitPolicy {
    /// Busy-wait this long before parking on the futex (wake-ups are expensive on VMs).
    pub spin: Duration,
    /// Give up after this long in total.
    pub timeout: Duration,
}

impl Event {
    /// Wakes the sleepers, if any. Call it after publishing the data the waiters look for.
    #[inline]
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.seq);
    }

    /// Waits until `ready()` is true or `policy.timeout` has passed; returns the last `ready()`.
    ///
    /// `ready` must read the shared state with Acquire (or stronger) loads; it is called often.
    pub fn wait_until(&self, policy: WaitPolicy, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        let start = Instant::now();
        let mut rounds = 0u32;
        while start.elapsed() < policy.spin {
            // Spin a little, then yield between checks: with more runnable processes than
            // cores (a parent and two workers on two cores), a pure spin would keep the peer we
            // are waiting for off the CPU for a whole time slice.
            if rounds < PURE_SPIN_ROUNDS {
                for _ in 0..64 {
                    spin_loop();
                }
                rounds += 1;
            } else {
                std::thread::yield_now();
            }
            if ready() {
                return true;
            }
        }
        loop {
            let seen = self.seq.load(Ordering::SeqCst);
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let elapsed = start.elapsed();
            if ready() || elapsed >= policy.timeout {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return ready();
            }
            futex::wait(&self.seq, seen, policy.timeout.saturating_sub(elapsed));
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if ready() {
                return true;
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod futex {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use rustix::thread::futex;

    /// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are fine.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let timeout = rustix::time::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        // EAGAIN (value changed), EINTR and ETIMEDOUT all just send the caller back to re-check.
        let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&timeout));
    }

    pub fn wake_all(word: &AtomicU32) {
        // The kernel reads the count as a signed int: u32::MAX would be -1 and wake only one
        // waiter. INT_MAX means "all", as in glibc's pthread_cond_broadcast.
        let _ = futex::wake(word, futex::Flags::empty(), i32::MAX.unsigned_abs());
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod futex {
    //! Portable fallback without a cross-process futex: short sleeps. Slower to wake, same
    //! semantics (callers always re-check their condition).
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let start = Instant::now();
        while word.load(Ordering::SeqCst) == expected && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_micros(200).min(timeout));
        }
    }

    pub fn wake_all(_word: &AtomicU32) {}
}
