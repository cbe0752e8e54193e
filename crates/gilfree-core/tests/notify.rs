//! Wake-up tests of `notify::Event` across threads.
//!
//! A lost wake-up does not hang a waiter (waits time out) but makes it sleep its whole timeout
//! although the condition already holds, so the ping-pong tests count waits that lasted their
//! full timeout and require none.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gilfree_core::notify::{Event, WaitPolicy};

const PING_PONGS: u64 = 100_000;
/// Far longer than any scheduling hiccup, so a wait this long means a lost wake-up.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Two threads passing a counter back and forth, each waking the other through its event.
#[derive(Default)]
struct Table {
    ball: AtomicU64,
    to_ponger: Event,
    to_pinger: Event,
}

/// Waits until `ball == value`; true when it took the whole timeout (or gave up).
fn wait_for_ball(event: &Event, ball: &AtomicU64, value: u64, policy: WaitPolicy) -> bool {
    let started = Instant::now();
    let arrived = event.wait_until(policy, || ball.load(Ordering::Acquire) == value);
    !arrived || started.elapsed() >= policy.timeout
}

/// Plays `PING_PONGS` rounds; returns the number of waits that ran out their timeout.
fn play_ping_pong(spin: Duration) -> u64 {
    let table = Table::default();
    let policy = WaitPolicy {
        spin,
        timeout: TIMEOUT,
    };
    std::thread::scope(|scope| {
        let ponger = scope.spawn(|| {
            let mut slow_waits = 0;
            for round in 0..PING_PONGS {
                slow_waits += u64::from(wait_for_ball(
                    &table.to_ponger,
                    &table.ball,
                    2 * round + 1,
                    policy,
                ));
                table.ball.store(2 * round + 2, Ordering::Release);
                table.to_pinger.notify();
            }
            slow_waits
        });
        let mut slow_waits = 0;
        for round in 0..PING_PONGS {
            table.ball.store(2 * round + 1, Ordering::Release);
            table.to_ponger.notify();
            slow_waits += u64::from(wait_for_ball(
                &table.to_pinger,
                &table.ball,
                2 * round + 2,
                policy,
            ));
        }
        slow_waits + ponger.join().expect("ponger thread")
    })
}

#[test]
fn no_lost_wake_up_when_every_wait_sleeps_on_the_futex() {
    let slow_waits = play_ping_pong(Duration::ZERO);
    assert_eq!(
        slow_waits,
        0,
        "{slow_waits} of {} waits ran out their timeout",
        2 * PING_PONGS
    );
}

#[test]
fn no_lost_wake_up_when_waits_spin_first() {
    let slow_waits = play_ping_pong(Duration::from_micros(20));
    assert_eq!(
        slow_waits,
        0,
        "{slow_waits} of {} waits ran out their timeout",
        2 * PING_PONGS
    );
}

#[test]
fn wait_returns_at_once_when_the_condition_already_holds() {
    let event = Event::default();
    let started = Instant::now();
    let policy = WaitPolicy {
        spin: Duration::from_secs(10),
        timeout: Duration::from_secs(10),
    };
    assert!(event.wait_until(policy, || true));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn wait_gives_up_after_its_timeout() {
    let event = Event::default();
    for spin in [Duration::ZERO, Duration::from_millis(20)] {
        let policy = WaitPolicy {
            spin,
            timeout: Duration::from_millis(100),
        };
        let started = Instant::now();
        assert!(!event.wait_until(policy, || false));
        let waited = started.elapsed();
        assert!(
            waited >= policy.timeout,
            "gave up after {waited:?} (spin {spin:?})"
        );
        assert!(
            waited < Duration::from_secs(5),
            "overslept: {waited:?} (spin {spin:?})"
        );
    }
}

#[test]
fn notify_without_sleepers_does_not_disturb_a_later_wait() {
    let event = Event::default();
    event.notify();
    event.notify();
    let policy = WaitPolicy {
        spin: Duration::ZERO,
        timeout: Duration::from_millis(50),
    };
    let started = Instant::now();
    assert!(!event.wait_until(policy, || false));
    assert!(
        started.elapsed() >= policy.timeout,
        "an old notify ended a new wait early"
    );
}

#[test]
fn notify_wakes_every_sleeper() {
    let event = Event::default();
    let flag = AtomicU64::new(0);
    let policy = WaitPolicy {
        spin: Duration::ZERO,
        timeout: Duration::from_secs(20),
    };
    std::thread::scope(|scope| {
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let started = Instant::now();
                    let woken = event.wait_until(policy, || flag.load(Ordering::Acquire) == 1);
                    (woken, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        flag.store(1, Ordering::Release);
        event.notify();
        for sleeper in sleepers {
            let (woken, waited) = sleeper.join().expect("sleeper thread");
            assert!(
                woken && waited < Duration::from_secs(10),
                "woken {woken} after {waited:?}"
            );
        }
    });
}

#[test]
fn waiter_sees_a_condition_set_without_notify_after_its_timeout_slice() {
    // Waits are sliced by their timeout: a condition that turns true without a notify (a peer
    // that died half-way, say) is still seen when the wait ends.
    let event = Event::default();
    let flag = AtomicU64::new(0);
    let policy = WaitPolicy {
        spin: Duration::ZERO,
        timeout: Duration::from_millis(300),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(1, Ordering::Release);
        });
        assert!(event.wait_until(policy, || flag.load(Ordering::Acquire) == 1));
    });
}
