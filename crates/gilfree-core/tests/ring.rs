//! Single-process tests of the frame ring, the segment layout and the two ports. Parent and
//! worker ends use two separate mappings of one segment, as two processes would; where both
//! sides must run at once, the other side is a thread.
mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{pattern, second_mapping, SplitMix64};
use gilfree_core::notify::WaitPolicy;
use gilfree_core::port::{ParentPort, WorkerPort};
use gilfree_core::ring::{Ring, WriteProgress, FRAME_HEADER};
use gilfree_core::segment::Segment;
use gilfree_core::CoreError;

/// The smallest ring a segment allows: wraps and fragments come quickly.
const CAPACITY: usize = 4096;
/// Generous enough that only a real hang times out.
const PATIENT: WaitPolicy = WaitPolicy {
    spin: Duration::from_micros(20),
    timeout: Duration::from_secs(10),
};

/// A one-slot segment seen by a parent and (through its own mapping) by a worker.
fn ports(capacity: usize) -> (ParentPort, WorkerPort) {
    let segment = Segment::create(1, capacity).expect("create segment");
    let worker_view = second_mapping(&segment);
    (
        ParentPort::new(segment),
        WorkerPort::new(worker_view, 0).expect("slot 0 exists"),
    )
}

/// Writes a whole message in one call; true if it all fit.
fn write_at_once(ring: &Ring<'_>, message: &[u8]) -> bool {
    ring.write_message(&[message], &mut WriteProgress::default())
}

/// Reads the next message into a Vec, if it has fully arrived.
fn read_owned(ring: &Ring<'_>, partial: &mut Vec<u8>) -> Option<Vec<u8>> {
    ring.read_message(partial, <[u8]>::to_vec)
}

/// The worker's next request, waiting for it.
fn worker_receive(worker: &mut WorkerPort) -> Vec<u8> {
    worker
        .receive(PATIENT, <[u8]>::to_vec)
        .expect("a request arrives in time")
}

/// The parent's next response from slot 0, flushing its outbox and waiting as a parent does.
fn parent_receive(parent: &ParentPort) -> Vec<u8> {
    loop {
        if let Some(message) = parent.receive(0, <[u8]>::to_vec) {
            return message;
        }
        parent.flush();
        assert!(
            parent.wait(PATIENT),
            "no response within {:?}",
            PATIENT.timeout
        );
    }
}

/// Flushes the parent's outbox until it is empty, waiting on the doorbell in between.
fn parent_flush_all(parent: &ParentPort) {
    while !parent.flush() {
        assert!(
            parent.wait(PATIENT),
            "the worker freed no room within {:?}",
            PATIENT.timeout
        );
    }
}

#[test]
fn empty_message_round_trips_both_ways() {
    let (parent, mut worker) = ports(CAPACITY);
    assert!(parent.send(0, &[]));
    assert!(parent.send(0, &[&[], &[]]));
    assert_eq!(worker_receive(&mut worker), b"");
    assert_eq!(worker_receive(&mut worker), b"");
    worker
        .send(&[], PATIENT, || false)
        .expect("room for an empty response");
    assert_eq!(parent_receive(&parent), b"");
    assert!(parent.receive(0, <[u8]>::to_vec).is_none());
}

#[test]
fn message_parts_arrive_concatenated() {
    let (parent, mut worker) = ports(CAPACITY);
    assert!(parent.send(0, &[b"ab", b"", b"cde", b"f"]));
    assert_eq!(worker_receive(&mut worker), b"abcdef");
    worker
        .send(&[b"x", b"yz"], PATIENT, || false)
        .expect("room");
    assert_eq!(parent_receive(&parent), b"xyz");
}

#[test]
fn largest_single_frame_fills_an_empty_ring() {
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let ring = segment.request(0);
    let mut partial = Vec::new();
    let largest = pattern(1, CAPACITY - FRAME_HEADER);

    assert!(write_at_once(&ring, &largest));
    assert_eq!(ring.free_space(), 0);
    assert!(
        !write_at_once(&ring, b""),
        "not even an empty frame fits a full ring"
    );
    assert_eq!(
        read_owned(&ring, &mut partial).as_deref(),
        Some(largest.as_slice())
    );
    assert!(partial.is_empty(), "a single frame is delivered in place");
    assert_eq!(ring.free_space(), CAPACITY);
}

#[test]
fn two_frames_can_fill_the_ring_exactly() {
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let ring = segment.request(0);
    let mut partial = Vec::new();
    let half = pattern(2, CAPACITY / 2 - FRAME_HEADER);

    assert!(write_at_once(&ring, &half));
    assert!(write_at_once(&ring, &half));
    assert_eq!(ring.free_space(), 0);
    assert!(!write_at_once(&ring, b""));
    assert_eq!(
        read_owned(&ring, &mut partial).as_deref(),
        Some(half.as_slice())
    );
    assert!(write_at_once(&ring, b""), "room again after one read");
    assert_eq!(
        read_owned(&ring, &mut partial).as_deref(),
        Some(half.as_slice())
    );
    assert_eq!(read_owned(&ring, &mut partial).as_deref(), Some(&b""[..]));
    assert!(read_owned(&ring, &mut partial).is_none());
}

#[test]
fn one_byte_over_a_frame_needs_a_second_fragment() {
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let ring = segment.request(0);
    let mut partial = Vec::new();
    let message = pattern(3, CAPACITY - FRAME_HEADER + 1);
    let mut progress = WriteProgress::default();

    assert!(!ring.write_message(&[&message], &mut progress));
    assert_eq!(
        progress,
        WriteProgress {
            sent: CAPACITY - FRAME_HEADER,
            done: false
        }
    );
    assert!(read_owned(&ring, &mut partial).is_none());
    assert_eq!(
        partial.len(),
        CAPACITY - FRAME_HEADER,
        "the fragment moved out of the ring"
    );
    assert_eq!(ring.free_space(), CAPACITY);

    assert!(ring.write_message(&[&message], &mut progress));
    assert_eq!(
        progress,
        WriteProgress {
            sent: message.len(),
            done: true
        }
    );
    assert_eq!(read_owned(&ring, &mut partial), Some(message));
    assert!(partial.is_empty());
}

#[test]
fn partial_message_is_held_until_its_last_fragment() {
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let ring = segment.request(0);
    let mut partial = Vec::new();
    // Parts of odd sizes, so fragment boundaries fall inside and between parts.
    let parts = [
        pattern(4, 3),
        pattern(5, 5000),
        pattern(6, 1),
        pattern(7, 7777),
    ];
    let whole = parts.concat();
    let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let mut progress = WriteProgress::default();
    let mut writes = 0;

    while !ring.write_message(&slices, &mut progress) {
        writes += 1;
        assert!(
            read_owned(&ring, &mut partial).is_none(),
            "delivered before the last fragment"
        );
        assert_eq!(partial.len(), progress.sent);
    }
    assert!(
        writes >= 3,
        "a message of 3+ rings needs 3+ writes, took {writes}"
    );
    assert_eq!(read_owned(&ring, &mut partial), Some(whole));
    assert!(read_owned(&ring, &mut partial).is_none());
}

/// One thread writes a stream of messages of every size 0..200 (and now and then one larger
/// than the ring) while the test reads in bursts of random length, so frames start at every
/// 8-byte offset and the ring wraps thousands of times.
#[test]
fn frames_wrap_around_at_every_alignment() {
    const MESSAGES: u64 = 100_000;
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let ring = segment.request(0);
    let mut random = SplitMix64::new(42);
    let mut partial = Vec::new();
    let mut in_ring: VecDeque<Vec<u8>> = VecDeque::new();
    let mut writing: Option<(Vec<u8>, WriteProgress)> = None;
    let (mut written, mut read) = (0_u64, 0_u64);
    let mut bytes = 0;

    while read < MESSAGES {
        for _ in 0..random.below(8) {
            if writing.is_none() && written < MESSAGES {
                let len = if written % 97 == 0 {
                    2 * CAPACITY + 5
                } else {
                    (written % 200) as usize
                };
                writing = Some((pattern(written, len), WriteProgress::default()));
                written += 1;
            }
            let Some((message, progress)) = writing.as_mut() else {
                break;
            };
            if !ring.write_message(&[message], progress) {
                break;
            }
            in_ring.push_back(writing.take().expect("just written").0);
        }
        for _ in 0..random.below(8) {
            let Some(message) = read_owned(&ring, &mut partial) else {
                break;
            };
            let expected = in_ring.pop_front().expect("only written messages are read");
            assert_eq!(message, expected, "message {read}");
            bytes += message.len();
            read += 1;
        }
    }
    assert!(
        bytes > 1000 * CAPACITY,
        "the ring wrapped only {} times",
        bytes / CAPACITY
    );
    assert!(!ring.has_data());
}

/// Producer and consumer threads on one ring, no waiting but yielding: order and content hold
/// while both sides race around the ring.
#[test]
fn concurrent_producer_and_consumer_keep_order() {
    const MESSAGES: u64 = 100_000;
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let size_of = |sequence: u64| {
        if sequence % 501 == 0 {
            3 * CAPACITY + 11
        } else {
            (sequence * 7 % 200) as usize
        }
    };

    std::thread::scope(|scope| {
        scope.spawn(|| {
            let ring = segment.request(0);
            let deadline = Instant::now() + Duration::from_secs(60);
            for sequence in 0..MESSAGES {
                let message = pattern(sequence, size_of(sequence));
                let mut progress = WriteProgress::default();
                while !ring.write_message(&[&message], &mut progress) {
                    assert!(
                        Instant::now() < deadline,
                        "stuck writing message {sequence}"
                    );
                    std::thread::yield_now();
                }
            }
        });
        let ring = segment.request(0);
        let mut partial = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for sequence in 0..MESSAGES {
            let message = loop {
                if let Some(message) = read_owned(&ring, &mut partial) {
                    break message;
                }
                assert!(
                    Instant::now() < deadline,
                    "stuck waiting for message {sequence}"
                );
                std::thread::yield_now();
            };
            assert_eq!(
                message,
                pattern(sequence, size_of(sequence)),
                "message {sequence}"
            );
        }
    });
}

#[test]
fn message_larger_than_the_ring_crosses_while_the_worker_drains() {
    let (parent, mut worker) = ports(CAPACITY);
    let parts = [pattern(8, 1), pattern(9, 3 * CAPACITY), pattern(10, 13)];
    let whole = parts.concat();
    let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();

    std::thread::scope(|scope| {
        let worker_side = scope.spawn(|| {
            let request = worker_receive(&mut worker);
            // The response is larger than the ring too: `send` blocks until the parent drains.
            worker
                .send(&[&request, b"!"], PATIENT, || false)
                .expect("parent drains in time");
            request
        });
        assert!(
            !parent.send(0, &slices),
            "3 rings' worth cannot fit at once"
        );
        parent_flush_all(&parent);
        let mut expected_response = whole.clone();
        expected_response.push(b'!');
        assert_eq!(parent_receive(&parent), expected_response);
        assert_eq!(worker_side.join().expect("worker thread"), whole);
    });
}

#[test]
fn full_ring_sends_go_to_the_outbox_and_flush_keeps_their_order() {
    let (parent, mut worker) = ports(CAPACITY);
    let messages: Vec<Vec<u8>> = (0..40).map(|sequence| pattern(sequence, 500)).collect();
    let accepted = messages
        .iter()
        .take_while(|message| parent.send(0, &[message]))
        .count();
    assert!(
        accepted > 0 && accepted < 10,
        "{accepted} messages of 500 bytes fit 4 KiB"
    );
    for message in &messages[accepted + 1..] {
        assert!(
            !parent.send(0, &[message]),
            "queued behind the outbox, never overtaking"
        );
    }
    assert!(!parent.flush(), "nothing drained yet");
    assert!(!parent.has_work(), "no response and no room yet");

    let mut received = Vec::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..messages.len() {
                received.push(worker_receive(&mut worker));
            }
        });
        parent_flush_all(&parent);
    });
    assert_eq!(received, messages);
    assert!(parent.flush());
    assert!(!parent.has_work());
}

#[test]
fn has_work_reports_responses_room_and_kicks() {
    let (parent, mut worker) = ports(CAPACITY);
    assert!(!parent.has_work());
    assert!(!parent.wait(WaitPolicy {
        spin: Duration::ZERO,
        timeout: Duration::from_millis(1)
    }));

    worker
        .send(&[b"response"], PATIENT, || false)
        .expect("room");
    assert!(parent.has_work(), "a response is waiting");
    assert_eq!(parent_receive(&parent), b"response");
    assert!(!parent.has_work());

    // 8192 bytes: a 4088-byte fragment now, another when the worker drains, then the last 16.
    let big = pattern(11, 2 * CAPACITY);
    let at_once = WaitPolicy {
        spin: Duration::ZERO,
        timeout: Duration::ZERO,
    };
    assert!(!parent.send(0, &[&big]));
    assert!(
        !parent.has_work(),
        "stalled, but the worker has freed nothing yet"
    );
    assert!(worker.receive(at_once, <[u8]>::to_vec).is_none());
    assert!(
        parent.has_work(),
        "the worker drained the first fragment: room for the outbox"
    );
    assert!(!parent.flush(), "the last fragment still waits");
    assert!(!parent.has_work());
    assert!(worker.receive(at_once, <[u8]>::to_vec).is_none());
    assert!(parent.has_work());
    assert!(parent.flush());
    assert!(!parent.has_work(), "nothing stalled any more");
    assert_eq!(worker.receive(at_once, <[u8]>::to_vec), Some(big));

    assert!(!parent.take_kick());
    parent.kick();
    assert!(parent.has_work());
    assert!(parent.wait(PATIENT), "a kick makes wait return");
    assert!(parent.take_kick());
    assert!(!parent.take_kick(), "take_kick clears the flag");
}

#[test]
fn kick_from_another_thread_wakes_a_sleeping_parent() {
    let (parent, _worker) = ports(CAPACITY);
    let sleeping = WaitPolicy {
        spin: Duration::ZERO,
        timeout: Duration::from_secs(20),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            parent.kick();
        });
        let started = Instant::now();
        assert!(parent.wait(sleeping));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woken by the kick, not the timeout"
        );
    });
    assert!(parent.take_kick());
}

#[test]
fn reset_slot_empties_rings_outbox_and_partial_response() {
    let (parent, worker) = ports(CAPACITY);
    assert!(
        !parent.send(0, &[&pattern(12, 3 * CAPACITY)]),
        "part of it waits in the outbox"
    );
    // A response larger than the ring: the parent holds its first fragments as a partial.
    let big_response = pattern(13, CAPACITY + 100);
    let mut progress = WriteProgress::default();
    let response_ring = parent.segment().response(0);
    assert!(!response_ring.write_message(&[&big_response], &mut progress));
    assert!(parent.receive(0, <[u8]>::to_vec).is_none());

    parent.reset_slot(0);

    let request_ring = parent.segment().request(0);
    assert!(!request_ring.has_data() && request_ring.free_space() == CAPACITY);
    assert!(!response_ring.has_data() && response_ring.free_space() == CAPACITY);
    assert!(!request_ring.producer_stalled());
    assert!(parent.flush(), "the outbox is empty");
    assert!(!parent.has_work());
    // The slot works again from a clean state (a fresh worker would also start clean).
    worker.send(&[b"fresh"], PATIENT, || false).expect("room");
    assert_eq!(
        parent_receive(&parent),
        b"fresh",
        "no stale fragment is prepended"
    );
    assert!(parent.send(0, &[b"hello"]));
    let segment_view = second_mapping(parent.segment());
    let mut fresh_worker = WorkerPort::new(segment_view, 0).expect("slot 0");
    assert_eq!(worker_receive(&mut fresh_worker), b"hello");
}

#[test]
fn two_slots_share_one_doorbell() {
    let segment = Segment::create(2, CAPACITY).expect("create segment");
    let mut workers: Vec<WorkerPort> = (0..2)
        .map(|slot| WorkerPort::new(second_mapping(&segment), slot).expect("slot exists"))
        .collect();
    let parent = ParentPort::new(segment);
    assert!(parent.send(0, &[b"to zero"]));
    assert!(parent.send(1, &[b"to one"]));
    assert_eq!(worker_receive(&mut workers[1]), b"to one");
    assert_eq!(worker_receive(&mut workers[0]), b"to zero");
    workers[1]
        .send(&[b"from one"], PATIENT, || false)
        .expect("room");
    assert!(parent.wait(PATIENT));
    assert!(parent.receive(0, <[u8]>::to_vec).is_none());
    assert_eq!(
        parent.receive(1, <[u8]>::to_vec).as_deref(),
        Some(&b"from one"[..])
    );
}

#[test]
fn create_rejects_bad_sizes() {
    for (slots, capacity) in [
        (0, 4096),
        (4097, 4096),
        (1, 0),
        (1, 4095),
        (1, 6000),
        (1, 1 << 32),
    ] {
        let result = Segment::create(slots, capacity);
        assert!(
            matches!(result, Err(CoreError::InvalidArgument(_))),
            "{slots} slots of {capacity}: {result:?}"
        );
    }
}

#[test]
fn worker_port_rejects_a_slot_out_of_range() {
    let segment = Segment::create(2, CAPACITY).expect("create segment");
    assert!(matches!(
        WorkerPort::new(segment, 2),
        Err(CoreError::InvalidArgument(_))
    ));
}

#[test]
fn open_maps_the_same_memory() {
    let segment = Segment::create(3, 2 * CAPACITY).expect("create segment");
    let view = second_mapping(&segment);
    assert_eq!((view.slot_count(), view.ring_capacity()), (3, 2 * CAPACITY));
    assert!(write_at_once(&segment.request(2), b"shared"));
    assert!(view.request(2).has_data());
    assert!(!view.request(1).has_data() && !view.response(2).has_data());
}

/// Writes `bytes` at `offset` of the segment's memory file, through the descriptor.
fn overwrite(segment: &Segment, offset: u64, bytes: &[u8]) {
    let written = rustix::io::pwrite(segment.fd(), bytes, offset).expect("pwrite");
    assert_eq!(written, bytes.len());
}

fn open_copy(segment: &Segment) -> Result<Segment, CoreError> {
    Segment::open(segment.fd().try_clone_to_owned().expect("dup"))
}

#[test]
fn open_rejects_a_bad_magic_number() {
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    overwrite(&segment, 0, b"notmagic");
    let error = open_copy(&segment).expect_err("bad magic accepted");
    assert!(matches!(error, CoreError::InvalidSegment(_)), "{error}");
    assert!(error.to_string().contains("magic"), "{error}");
}

#[test]
fn open_rejects_a_size_that_does_not_match_the_header() {
    let segment = Segment::create(2, CAPACITY).expect("create segment");
    let length = u64::try_from(rustix::fs::fstat(segment.fd()).expect("fstat").st_size)
        .expect("non-negative size");
    let fd = segment.fd().try_clone_to_owned().expect("dup");
    rustix::fs::ftruncate(&fd, length + 4096).expect("grow");
    let error = Segment::open(fd).expect_err("wrong size accepted");
    assert!(matches!(error, CoreError::InvalidSegment(_)), "{error}");
}

#[test]
fn open_rejects_a_header_claiming_more_slots() {
    let segment = Segment::create(2, CAPACITY).expect("create segment");
    overwrite(&segment, 8, &3_u64.to_le_bytes());
    assert!(matches!(
        open_copy(&segment),
        Err(CoreError::InvalidSegment(_))
    ));
}

#[test]
fn open_rejects_rings_of_zero_bytes() {
    // A header with zero-byte rings and a file sized to match: without a check, every ring
    // operation would divide by a zero capacity.
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let fd = segment.fd().try_clone_to_owned().expect("dup");
    overwrite(&segment, 16, &0_u64.to_le_bytes());
    rustix::fs::ftruncate(&fd, 4096 + 2 * Ring::footprint(0) as u64).expect("shrink");
    assert!(matches!(
        Segment::open(fd),
        Err(CoreError::InvalidSegment(_))
    ));
    // Zero slots are rejected as well, as `create` does.
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let fd = segment.fd().try_clone_to_owned().expect("dup");
    overwrite(&segment, 8, &0_u64.to_le_bytes());
    rustix::fs::ftruncate(&fd, 4096).expect("shrink");
    assert!(matches!(
        Segment::open(fd),
        Err(CoreError::InvalidSegment(_))
    ));
}

#[test]
fn open_rejects_a_file_shorter_than_its_header() {
    let segment = Segment::create(1, CAPACITY).expect("create segment");
    let fd = segment.fd().try_clone_to_owned().expect("dup");
    rustix::fs::ftruncate(&fd, 100).expect("shrink");
    // The first mapping is now mostly beyond the end of the file: drop it before touching it.
    drop(segment);
    assert!(matches!(
        Segment::open(fd),
        Err(CoreError::InvalidSegment(_))
    ));
}
