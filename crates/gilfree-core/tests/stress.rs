//! Multi-process stress test of the rings, the shared doorbell and the futex wake-ups.
//!
//! ```text
//!  test process (parent)                           worker processes (this binary again)
//!  ParentPort::send ── request ring, slot 0 ──────> WorkerPort::receive ─┐ check, echo
//!           (outbox when full; flush on doorbell)   WorkerPort::send <───┘
//!  ParentPort::wait/receive <── response ring ────  (rings the doorbell)
//!                    ... and the same for slot 1, sharing the one doorbell
//! ```
//!
//! The parent drives both workers from one thread as a real parent does: it never blocks on a
//! worker (`send` queues, `flush` retries), and sleeps only on the doorbell. Every message carries
//! its sequence number and a checksum; sizes come from a seeded stream both sides replay, so the
//! worker checks each request and the parent each echo: no loss, no duplicate, order kept,
//! content intact. Sizes are mostly small, some up to 64 KiB, and 1% larger than the ring, which
//! is small (8 or 64 KiB), so frames wrap and fragment constantly.
//!
//! A lost wake-up would not hang (every wait times out) but would make a wait last its whole
//! timeout, which nothing else here can take while data flows: either side fails at the first
//! wait that runs out its timeout.
//!
//! `GILFREE_STRESS_FRAMES` sets the number of messages over all scenarios (default 2 million in
//! optimised builds, 200 000 in debug builds).
//! The workers are this test binary run with `--exact stress_child_entry --ignored` and
//! `GILFREE_STRESS_CHILD` set (through `/bin/sh`, since `supervisor::spawn` sets no environment).
mod common;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{build_message, check_message, SplitMix64};
use gilfree_core::notify::WaitPolicy;
use gilfree_core::port::{ParentPort, WorkerPort};
use gilfree_core::segment::Segment;
use gilfree_core::supervisor::{self, ExitStatus};

const CHILD_ENV: &str = "GILFREE_STRESS_CHILD";
const FRAMES_ENV: &str = "GILFREE_STRESS_FRAMES";
/// Messages over all scenarios: 2 million takes ~20 s optimised (CI runs `cargo test --release`);
/// a debug build is ~10× slower, so it does a tenth unless told otherwise.
const DEFAULT_FRAMES: u64 = if cfg!(debug_assertions) {
    200_000
} else {
    2_000_000
};
const SLOTS: usize = 2;
/// Messages the parent keeps in flight per worker (in the ring or in its outbox)...
const WINDOW: usize = 64;
/// ... and payload bytes, in rings: enough to fill the ring, not so much that every send queues.
const WINDOW_RINGS: usize = 2;
/// Every wait's timeout; a wait this long means a lost wake-up (or a worker stuck for as long).
const WAIT_TIMEOUT: Duration = Duration::from_secs(2);
/// A scenario that runs this long has stalled.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(300);
const SIGKILL: i32 = 9;
/// Runs the child in place of the shell, with the configuration in its environment and its
/// test harness's progress lines (not its panics) silenced.
const CHILD_SCRIPT: &str = r#"export GILFREE_STRESS_CHILD="$1"
exec "$0" --exact stress_child_entry --ignored --nocapture --test-threads=1 >/dev/null"#;

/// Scenarios share one machine's cores: run them one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a worker needs to know, passed in `GILFREE_STRESS_CHILD` as comma-separated numbers.
#[derive(Debug, Clone, Copy)]
struct ChildConfig {
    fd: RawFd,
    slot: usize,
    messages: u64,
    ring_capacity: usize,
    spin: Duration,
}

impl ChildConfig {
    fn encode(&self) -> String {
        let spin = self.spin.as_nanos();
        format!(
            "{},{},{},{},{spin}",
            self.fd, self.slot, self.messages, self.ring_capacity
        )
    }

    fn decode(text: &str) -> Self {
        let fields: Vec<u64> = text
            .split(',')
            .map(|field| {
                field
                    .parse()
                    .unwrap_or_else(|_| panic!("bad {CHILD_ENV}: {text}"))
            })
            .collect();
        let [fd, slot, messages, ring_capacity, spin] = fields[..] else {
            panic!("bad {CHILD_ENV}: {text}");
        };
        let number = |value: u64| usize::try_from(value).expect("fits usize");
        Self {
            fd: RawFd::try_from(fd).expect("a descriptor number"),
            slot: number(slot),
            messages,
            ring_capacity: number(ring_capacity),
            spin: Duration::from_nanos(spin),
        }
    }
}

/// The stream of message sizes for `slot`, replayed identically by parent and worker.
fn size_stream(slot: usize) -> SplitMix64 {
    SplitMix64::new(0x5EED_0000 + slot as u64)
}

/// 90% of 0–256 bytes, 9% up to 64 KiB, 1% larger than the ring (up to 3 rings).
fn next_message_len(sizes: &mut SplitMix64, ring_capacity: usize) -> usize {
    match sizes.below(100) {
        0..=89 => sizes.below(257),
        90..=98 => 257 + sizes.below(65_536 - 256),
        _ => ring_capacity + 1 + sizes.below(2 * ring_capacity),
    }
}

fn frames_budget() -> u64 {
    std::env::var(FRAMES_ENV).map_or(DEFAULT_FRAMES, |text| {
        text.parse()
            .unwrap_or_else(|_| panic!("{FRAMES_ENV} must be a number, got {text:?}"))
    })
}

/// The worker processes of one scenario; killed and reaped on drop, however the test ends.
struct Workers {
    /// Per slot: the pid, until it has been reaped.
    pids: Vec<Option<u32>>,
}

impl Workers {
    fn spawn(configs: &[ChildConfig]) -> Self {
        let program = std::env::current_exe().expect("the test binary's path");
        let mut workers = Self { pids: Vec::new() };
        for config in configs {
            let encoded = config.encode();
            let args = [
                OsStr::new("-c"),
                OsStr::new(CHILD_SCRIPT),
                program.as_os_str(),
                OsStr::new(&encoded),
            ];
            let pid = supervisor::spawn(OsStr::new("/bin/sh"), &args, &[config.fd])
                .expect("spawn a worker");
            workers.pids.push(Some(pid));
        }
        workers
    }

    /// Panics if a worker has already ended (it can only end early by failing).
    fn check_running(&mut self) {
        for (slot, pid) in self.pids.iter_mut().enumerate() {
            let Some(running) = *pid else { continue };
            if let Some(status) = supervisor::try_wait(running).expect("try_wait") {
                *pid = None;
                panic!("worker {slot} ended early with {status} (its stderr says why)");
            }
        }
    }

    /// Waits for every worker to end by itself (at most 10 s each) and returns the statuses.
    fn wait_all(&mut self) -> Vec<ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut statuses = Vec::new();
        for (slot, pid) in self.pids.iter_mut().enumerate() {
            let Some(running) = *pid else { continue };
            let status = loop {
                if let Some(status) = supervisor::try_wait(running).expect("try_wait") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "worker {slot} did not exit after its last echo"
                );
                std::thread::sleep(Duration::from_millis(2));
            };
            *pid = None;
            statuses.push(status);
        }
        statuses
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for pid in self.pids.iter().flatten() {
            let _ = supervisor::kill(*pid, SIGKILL);
            let _ = supervisor::wait(*pid);
        }
    }
}

/// One run: ring size, how both sides wait, and how many messages each worker echoes.
struct Scenario {
    name: &'static str,
    ring_capacity: usize,
    parent_spin: Duration,
    worker_spin: Duration,
    messages_per_worker: u64,
}

/// What the parent saw, printed with `--nocapture`.
#[derive(Default)]
struct Report {
    messages: u64,
    bytes: u64,
    queued_sends: u64,
    waits: u64,
    elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} messages ({} MiB each way) in {:.2?}: {} sends queued in the outbox, \
             {} doorbell waits, none ran out its {WAIT_TIMEOUT:?} timeout",
            self.messages,
            self.bytes >> 20,
            self.elapsed,
            self.queued_sends,
            self.waits,
        )
    }
}

/// The parent's bookkeeping for one worker.
struct SlotState {
    sizes: SplitMix64,
    next_to_send: u64,
    /// (sequence, length) of messages sent and not yet echoed, oldest first.
    in_flight: VecDeque<(u64, usize)>,
    bytes_in_flight: usize,
    echoed: u64,
}

impl SlotState {
    fn may_send(&self, messages: u64, ring_capacity: usize) -> bool {
        self.next_to_send < messages
            && self.in_flight.len() < WINDOW
            && (self.in_flight.is_empty() || self.bytes_in_flight < WINDOW_RINGS * ring_capacity)
    }
}

impl Scenario {
    fn run(&self) -> Report {
        let _one_at_a_time = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let segment = Segment::create(SLOTS, self.ring_capacity).expect("create the segment");
        let fd = segment.fd().as_raw_fd();
        let port = ParentPort::new(segment);
        let configs: Vec<ChildConfig> = (0..SLOTS)
            .map(|slot| ChildConfig {
                fd,
                slot,
                messages: self.messages_per_worker,
                ring_capacity: self.ring_capacity,
                spin: self.worker_spin,
            })
            .collect();
        let mut workers = Workers::spawn(&configs);
        let report = self.drive(&port, &mut workers);
        for (slot, status) in workers.wait_all().into_iter().enumerate() {
            assert_eq!(
                status,
                ExitStatus::Code(0),
                "worker {slot} failed (its stderr says why)"
            );
        }
        eprintln!("{}: {report}", self.name);
        report
    }

    /// Sends every message, checks every echo; returns once all are back.
    fn drive(&self, port: &ParentPort, workers: &mut Workers) -> Report {
        let policy = WaitPolicy {
            spin: self.parent_spin,
            timeout: WAIT_TIMEOUT,
        };
        let mut slots: Vec<SlotState> = (0..SLOTS)
            .map(|slot| SlotState {
                sizes: size_stream(slot),
                next_to_send: 0,
                in_flight: VecDeque::new(),
                bytes_in_flight: 0,
                echoed: 0,
            })
            .collect();
        let mut report = Report::default();
        let mut message = Vec::new();
        let started = Instant::now();
        while slots
            .iter()
            .any(|state| state.echoed < self.messages_per_worker)
        {
            let mut progressed = false;
            for (slot, state) in slots.iter_mut().enumerate() {
                while state.may_send(self.messages_per_worker, self.ring_capacity) {
                    let len = next_message_len(&mut state.sizes, self.ring_capacity);
                    build_message(&mut message, state.next_to_send, len);
                    if !port.send(slot, &[&message]) {
                        report.queued_sends += 1;
                    }
                    state.in_flight.push_back((state.next_to_send, len));
                    state.bytes_in_flight += len;
                    state.next_to_send += 1;
                    report.bytes += len as u64;
                    progressed = true;
                }
            }
            port.flush();
            for (slot, state) in slots.iter_mut().enumerate() {
                while let Some(checked) = port.receive(slot, |echo| match state.in_flight.front() {
                    Some(&(sequence, len)) => check_message(echo, sequence, len),
                    None => Err(format!("an echo of {} bytes nobody sent", echo.len())),
                }) {
                    if let Err(problem) = checked {
                        panic!("{}: echo from worker {slot}: {problem}", self.name);
                    }
                    let (_, len) = state.in_flight.pop_front().expect("checked above");
                    state.bytes_in_flight -= len;
                    state.echoed += 1;
                    progressed = true;
                }
            }
            if !progressed {
                let before = Instant::now();
                port.wait(policy);
                report.waits += 1;
                if before.elapsed() >= WAIT_TIMEOUT {
                    workers.check_running();
                    panic!(
                        "{}: the parent's wait ran out its {WAIT_TIMEOUT:?} timeout (lost wake-up?); \
                         echoes so far: {:?}",
                        self.name,
                        slots.iter().map(|state| state.echoed).collect::<Vec<_>>()
                    );
                }
                assert!(
                    started.elapsed() < SCENARIO_DEADLINE,
                    "{}: stalled; echoes so far: {:?}",
                    self.name,
                    slots.iter().map(|state| state.echoed).collect::<Vec<_>>()
                );
            }
        }
        report.messages = self.messages_per_worker * SLOTS as u64;
        report.elapsed = started.elapsed();
        report
    }
}

/// The worker: check and echo `messages` requests, then exit.
fn run_worker(config: &ChildConfig) {
    // SAFETY: the parent passed this descriptor to this process for the segment alone; nothing
    // else here owns or closes it.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(config.fd) };
    let segment = Segment::open(fd).expect("open the inherited segment");
    assert_eq!(segment.ring_capacity(), config.ring_capacity);
    let mut port = WorkerPort::new(segment, config.slot).expect("open my slot");
    let policy = WaitPolicy {
        spin: config.spin,
        timeout: WAIT_TIMEOUT,
    };
    let parent = std::os::unix::process::parent_id();
    let parent_alive = || std::os::unix::process::parent_id() == parent;
    let mut sizes = size_stream(config.slot);
    let mut echo = Vec::new();
    let suspect = || {
        if parent_alive() {
            "lost wake-up?"
        } else {
            "the parent is gone"
        }
    };

    for sequence in 0..config.messages {
        let len = next_message_len(&mut sizes, config.ring_capacity);
        let before = Instant::now();
        let received = port.receive(policy, |request| {
            echo.clear();
            echo.extend_from_slice(request);
            check_message(request, sequence, len)
        });
        match received {
            Some(Ok(())) => assert!(
                before.elapsed() < WAIT_TIMEOUT,
                "worker {}: request {sequence} came only after the whole {WAIT_TIMEOUT:?} \
                 timeout ({})",
                config.slot,
                suspect()
            ),
            Some(Err(problem)) => panic!("worker {}: request: {problem}", config.slot),
            None => panic!(
                "worker {}: no request {sequence} within {WAIT_TIMEOUT:?} ({})",
                config.slot,
                suspect()
            ),
        }
        // Two parts, so the echo also exercises gathering writes across fragment boundaries.
        let (first, second) = echo.split_at(echo.len() / 3);
        port.send(&[first, second], policy, || {
            panic!(
                "worker {}: no room for echo {sequence} within {WAIT_TIMEOUT:?} ({})",
                config.slot,
                suspect()
            )
        })
        .unwrap_or_else(|error| panic!("worker {}: echo {sequence}: {error}", config.slot));
    }
}

#[test]
#[ignore = "entry point of the stress test's worker processes, which the test starts itself"]
fn stress_child_entry() {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        run_worker(&ChildConfig::decode(&config));
    }
}

/// Messages per worker for a scenario taking `percent` of the frame budget.
fn share_of_budget(percent: u64) -> u64 {
    (frames_budget() * percent / 100 / SLOTS as u64).max(1)
}

#[test]
fn stress_small_rings_spin_then_sleep() {
    Scenario {
        name: "8 KiB rings, spin 50 µs",
        ring_capacity: 8192,
        parent_spin: Duration::from_micros(50),
        worker_spin: Duration::from_micros(50),
        messages_per_worker: share_of_budget(40),
    }
    .run();
}

#[test]
fn stress_large_rings_spin_then_sleep() {
    Scenario {
        name: "64 KiB rings, spin 50 µs",
        ring_capacity: 65_536,
        parent_spin: Duration::from_micros(50),
        worker_spin: Duration::from_micros(50),
        messages_per_worker: share_of_budget(30),
    }
    .run();
}

/// No spinning anywhere: every wait parks on a futex, so a lost wake-up cannot hide.
#[test]
fn stress_pure_futex_never_spinning() {
    Scenario {
        name: "8 KiB rings, no spin (futex only)",
        ring_capacity: 8192,
        parent_spin: Duration::ZERO,
        worker_spin: Duration::ZERO,
        messages_per_worker: share_of_budget(30),
    }
    .run();
}
