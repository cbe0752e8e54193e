//! Helpers shared by the integration tests: a small deterministic random generator, message
//! contents that carry their own sequence number and checksum, and a second view of a segment.
#![allow(dead_code)] // each test binary uses its own subset of these helpers

use gilfree_core::segment::Segment;

/// `SplitMix64`: tiny, fast and good enough to pick sizes and fill payloads reproducibly.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (`bound > 0`; the slight modulo bias does not matter here).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// `len` pseudo-random bytes determined by `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    fill_pattern(&mut bytes, seed, len);
    bytes
}

fn fill_pattern(bytes: &mut Vec<u8>, seed: u64, len: usize) {
    let mut random = SplitMix64::new(seed);
    while bytes.len() + 8 <= len {
        bytes.extend_from_slice(&random.next_u64().to_le_bytes());
    }
    let rest = len - bytes.len();
    bytes.extend_from_slice(&random.next_u64().to_le_bytes()[..rest]);
}

/// FNV-1a over 64-bit words (and the trailing bytes): cheap, and any corruption changes it.
pub fn checksum(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mut hash = 0xCBF2_9CE4_8422_2325_u64;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("chunks_exact gives 8 bytes"));
        hash = (hash ^ word).wrapping_mul(PRIME);
    }
    for &byte in words.remainder() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
    }
    hash
}

/// Bytes a message needs to carry its sequence number and checksum.
pub const STAMP: usize = 16;

/// Builds message `sequence` of `len` bytes into `buffer`: `[sequence][checksum][random]` when
/// there is room for the stamp, else just the first `len` random bytes of that sequence number.
pub fn build_message(buffer: &mut Vec<u8>, sequence: u64, len: usize) {
    buffer.clear();
    if len < STAMP {
        fill_pattern(buffer, sequence.wrapping_mul(0x0123_4567_89AB_CDEF), len);
        return;
    }
    buffer.extend_from_slice(&sequence.to_le_bytes());
    buffer.extend_from_slice(&[0; 8]);
    let mut body = Vec::new();
    fill_pattern(
        &mut body,
        sequence.wrapping_mul(0x0123_4567_89AB_CDEF),
        len - STAMP,
    );
    buffer[8..STAMP].copy_from_slice(&checksum(&body).to_le_bytes());
    buffer.extend_from_slice(&body);
}

/// Checks that `message` is exactly what `build_message(sequence, len)` produced.
pub fn check_message(message: &[u8], sequence: u64, len: usize) -> Result<(), String> {
    if message.len() != len {
        return Err(format!(
            "message {sequence}: expected {len} bytes, got {} (stamped sequence {:?})",
            message.len(),
            stamped_sequence(message)
        ));
    }
    if len < STAMP {
        let mut expected = Vec::new();
        build_message(&mut expected, sequence, len);
        return if message == expected.as_slice() {
            Ok(())
        } else {
            Err(format!("message {sequence} ({len} bytes): content differs"))
        };
    }
    let stamped = stamped_sequence(message).expect("long enough");
    if stamped != sequence {
        return Err(format!(
            "expected message {sequence}, got message {stamped} ({len} bytes)"
        ));
    }
    let stored = u64::from_le_bytes(message[8..STAMP].try_into().expect("8 bytes"));
    if stored != checksum(&message[STAMP..]) {
        return Err(format!(
            "message {sequence} ({len} bytes): checksum mismatch"
        ));
    }
    Ok(())
}

fn stamped_sequence(message: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(message.get(..8)?.try_into().ok()?))
}

/// A second, independent mapping of `segment`'s memory, as a worker process would have.
pub fn second_mapping(segment: &Segment) -> Segment {
    let fd = segment
        .fd()
        .try_clone_to_owned()
        .expect("dup the segment's descriptor");
    Segment::open(fd).expect("reopen a valid segment")
}
