//! The fixed header in front of every message's payload.
//!
//! ```text
//! offset  0: kind     u32  what the message is (the Python side names the kinds)
//! offset  4: epoch    u32  the worker generation it belongs to (late replies are dropped)
//! offset  8: task_id  u64  which task
//! offset 16: arg      u64  per-kind extra: function id in requests, busy nanoseconds in replies
//! offset 24: payload ...
//! ```
//! Little-endian, so the format does not depend on the machine's byte order.

/// Bytes in front of each payload.
pub const HEADER_SIZE: usize = 24;

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub epoch: u32,
    pub task_id: u64,
    pub arg: u64,
}

impl Header {
    /// The wire form.
    #[must_use]
    pub fn encode(self) -> [u8; HEADER_SIZE] {
        let mut bytes = [0u8; HEADER_SIZE];
        bytes[0..4].copy_from_slice(&self.kind.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.epoch.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.task_id.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.arg.to_le_bytes());
        bytes
    }

    /// Splits a message into its header and payload; None if it is shorter than a header.
    #[must_use]
    pub fn decode(message: &[u8]) -> Option<(Self, &[u8])> {
        let (head, payload) = message.split_at_checked(HEADER_SIZE)?;
        let word = |range: std::ops::Range<usize>| -> u64 {
            head[range]
                .iter()
                .rev()
                .fold(0, |value, &byte| value << 8 | u64::from(byte))
        };
        let header = Self {
            kind: word(0..4) as u32,
            epoch: word(4..8) as u32,
            task_id: word(8..16),
            arg: word(16..24),
        };
        Some((header, payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let header = Header {
            kind: 7,
            epoch: u32::MAX,
            task_id: 1 << 40,
            arg: u64::MAX - 1,
        };
        let mut message = header.encode().to_vec();
        message.extend_from_slice(b"xyz");
        assert_eq!(Header::decode(&message), Some((header, &b"xyz"[..])));
        assert_eq!(Header::decode(&message[..HEADER_SIZE - 1]), None);
    }
}
