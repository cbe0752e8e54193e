//! The wire format of gilfree's value codec, and a bounds-checked reader for it.
//!
//! The Python-facing encoder and decoder live in `gilfree-py` (`codec.rs`); this module holds
//! what does not need Python: the tags, the integer encodings and a [`Reader`] that never reads
//! past its input and never trusts a length it cannot back with input bytes.
//!
//! ```text
//! message  := MAGIC value
//! value    := tag payload
//! NONE 0x00 | FALSE 0x01 | TRUE 0x02
//! INT      0x03 zigzag-varint            (fits in i64)
//! BIGINT   0x04 varint n, n bytes        (two's complement, little-endian, any size)
//! FLOAT    0x05 f64 (8 bytes LE)         (bit-exact: -0.0 and NaN payloads survive)
//! COMPLEX  0x06 f64 f64
//! STR      0x07 varint n, n bytes UTF-8
//! BYTES    0x08 varint n, n bytes
//! BYTEARR  0x09 varint n, n bytes
//! LIST     0x0A varint count, values
//! TUPLE    0x0B varint count, values
//! DICT     0x0C varint count, (key value) pairs, in insertion order
//! SET      0x0D varint count, values
//! FROZEN   0x0E varint count, values
//! PICKLE   0x0F varint n, n bytes        (pickle protocol 5, for anything else)
//! INTS     0x10 varint count, zigzag-varints   (a list whose items are all INT-sized ints)
//! FLOATS   0x11 varint count, count f64s       (a list whose items are all floats)
//! COMPLEXES 0x15 varint count, count f64 pairs (a list whose items are all complex)
//! INDIRECT 0x16 handle                   (the whole message is in that shared buffer; only as
//!                                         the top value, for messages of INDIRECT_THRESHOLD or
//!                                         more)
//! MVIEW    0x12 varint n, n bytes        (the bytes of a memoryview of unsigned bytes, one
//!                                         dimension (format `B`), sent inline; a view of other
//!                                         items is REDUCED to its bytes, format and shape)
//! SHARED   0x13 kind, handle             (a buffer in shared memory; kind 0 bytes, 1 bytearray,
//!                                         2 memoryview, 3 a FLOATS list's f64s, 4 a COMPLEXES
//!                                         list's f64 pairs (the count is the length / 8 or 16);
//!                                         handle = varint pid, fd, offset, length)
//! PICKLE5  0x14 varint count, count buffers, varint n, n bytes
//!                                        (pickle 5 with its out-of-band buffers beside it)
//! NDARRAY  0x17 order, dtype, shape, buffer   (a numpy array of a plain dtype: see `array`)
//! REDUCED  0x18 varint kind, value       (an object taken apart into `value`, its state, and
//!                                         rebuilt by the receiver's rebuilder number `kind`:
//!                                         pandas frames, series and indexes, memoryviews
//!                                         of other items than bytes; see
//!                                         `gilfree._wire.reducers`)
//!
//! buffer   := INLINE 0x00 varint n, u8 pad, pad zero bytes, n bytes
//!           | SHARED 0x01 handle         (a shared buffer of its own: large, or already shared)
//! ```
//! An INLINE buffer's bytes start `BODY_ALIGN`-aligned from the start of the message (pad is
//! below `BODY_ALIGN`): a message decoded where it lies (INDIRECT) gives arrays over them in
//! place, aligned as numpy wants them.
//! INTS, FLOATS and COMPLEXES are the common homogeneous lists, decoded without a tag per item. SHARED and
//! PICKLE5 carry handles of shared buffers (see `region`): only between trusted processes, as are
//! PICKLE, PICKLE5 and REDUCED, whose decoding runs Python code.
//! Varints are LEB128 (7 bits a byte, low first, at most 10 bytes). A count is only accepted
//! if the input has at least that many bytes left (every value takes one byte or more), so a
//! forged count cannot make the decoder allocate beyond the input's size.
use crate::error::{CoreError, Result};

/// First byte of every encoded message (format version 1).
pub const MAGIC: u8 = 0xC1;

/// Value tags.
#[allow(missing_docs)]
pub mod tag {
    pub const NONE: u8 = 0x00;
    pub const FALSE: u8 = 0x01;
    pub const TRUE: u8 = 0x02;
    pub const INT: u8 = 0x03;
    pub const BIGINT: u8 = 0x04;
    pub const FLOAT: u8 = 0x05;
    pub const COMPLEX: u8 = 0x06;
    pub const STR: u8 = 0x07;
    pub const BYTES: u8 = 0x08;
    pub const BYTEARRAY: u8 = 0x09;
    pub const LIST: u8 = 0x0A;
    pub const TUPLE: u8 = 0x0B;
    pub const DICT: u8 = 0x0C;
    pub const SET: u8 = 0x0D;
    pub const FROZENSET: u8 = 0x0E;
    pub const PICKLE: u8 = 0x0F;
    pub const INTS: u8 = 0x10;
    pub const FLOATS: u8 = 0x11;
    pub const MEMORYVIEW: u8 = 0x12;
    pub const SHARED: u8 = 0x13;
    pub const PICKLE5: u8 = 0x14;
    pub const COMPLEXES: u8 = 0x15;
    pub const INDIRECT: u8 = 0x16;
    pub const NDARRAY: u8 = 0x17;
    pub const REDUCED: u8 = 0x18;
}

/// What a SHARED value was.
#[allow(missing_docs)]
pub mod shared_kind {
    pub const BYTES: u8 = 0;
    pub const BYTEARRAY: u8 = 1;
    pub const MEMORYVIEW: u8 = 2;
    /// The body of a FLOATS list: its f64s, without a count.
    pub const FLOATS: u8 = 3;
    /// The body of a COMPLEXES list: its f64 pairs, without a count.
    pub const COMPLEXES: u8 = 4;
}

/// How a buffer travels (an NDARRAY's bytes, a PICKLE5's out-of-band buffers).
#[allow(missing_docs)]
pub mod storage {
    pub const INLINE: u8 = 0;
    pub const SHARED: u8 = 1;
}

/// Alignment of INLINE buffers within a message.
pub const BODY_ALIGN: usize = 64;

/// The pad that makes a buffer starting at `position` (just after its pad byte) aligned.
#[must_use]
pub fn padding(position: usize) -> usize {
    (BODY_ALIGN - position % BODY_ALIGN) % BODY_ALIGN
}

/// Buffers of at least this many bytes go through shared memory instead of the message.
pub const SHARE_THRESHOLD: usize = 1 << 20;

/// Messages of at least this many bytes are written into a (recycled) shared buffer and sent as
/// INDIRECT: the receiver decodes them where they lie, and neither side allocates and faults in
/// a fresh buffer of that size for each message.
pub const INDIRECT_THRESHOLD: usize = 64 << 10;

/// Deepest nesting the decoder accepts (the encoder hands deeper values to pickle).
pub const MAX_DEPTH: usize = 512;

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Zigzag-maps a signed integer so small magnitudes make short varints.
#[must_use]
#[allow(clippy::cast_sign_loss)] // a bit-level reinterpretation, which is the point
pub fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[must_use]
#[allow(clippy::cast_possible_wrap)] // a bit-level reinterpretation, which is the point
pub fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Appends a tag and a length-prefixed byte string.
pub fn write_blob(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    write_blob_body(out, bytes);
}

/// Appends a length-prefixed byte string (what [`Reader::blob`] reads).
pub fn write_blob_body(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A cursor over an encoded message; every read is checked against the end of the input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `input`, checking the format's magic byte.
    pub fn new(input: &'a [u8]) -> Result<Self> {
        match input.first() {
            Some(&MAGIC) => Ok(Self { input, position: 1 }),
            Some(&other) => Err(invalid(format!("unknown format byte 0x{other:02x}"))),
            None => Err(invalid("empty input".into())),
        }
    }

    /// Starts reading `input`, a part of a message with no magic byte (the body of a shared
    /// FLOATS or COMPLEXES list).
    #[must_use]
    pub fn body(input: &'a [u8]) -> Self {
        Self { input, position: 0 }
    }

    /// Bytes not read yet.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.input.len() - self.position
    }

    /// Whether the whole input has been read.
    #[must_use]
    pub fn at_end(&self) -> bool {
        self.remaining() == 0
    }

    /// The next byte.
    pub fn byte(&mut self) -> Result<u8> {
        let byte = *self.input.get(self.position).ok_or_else(truncated)?;
        self.position += 1;
        Ok(byte)
    }

    /// The next `length` bytes.
    pub fn bytes(&mut self, length: usize) -> Result<&'a [u8]> {
        if length > self.remaining() {
            return Err(truncated());
        }
        let slice = &self.input[self.position..self.position + length];
        self.position += length;
        Ok(slice)
    }

    /// A little-endian f64.
    pub fn float(&mut self) -> Result<f64> {
        let bytes: [u8; 8] = self.bytes(8)?.try_into().map_err(|_| truncated())?;
        Ok(f64::from_le_bytes(bytes))
    }

    /// An unsigned LEB128 varint of at most 10 bytes.
    pub fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(invalid("varint overflows 64 bits".into()));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(invalid("varint longer than 10 bytes".into()))
    }

    /// A length-prefixed byte string.
    pub fn blob(&mut self) -> Result<&'a [u8]> {
        let length = self.varint()?;
        let length = usize::try_from(length).map_err(|_| truncated())?;
        self.bytes(length)
    }

    /// An INLINE buffer's bytes, after its storage byte: length, pad, then the bytes.
    pub fn aligned_blob(&mut self) -> Result<&'a [u8]> {
        let length = usize::try_from(self.varint()?).map_err(|_| truncated())?;
        let pad = usize::from(self.byte()?);
        if pad >= BODY_ALIGN {
            return Err(invalid(format!("a buffer padded by {pad} bytes")));
        }
        self.bytes(pad)?;
        self.bytes(length)
    }

    /// An element count, rejected if the input could not hold that many values (each takes
    /// `minimum_bytes` or more).
    pub fn count(&mut self, minimum_bytes: usize) -> Result<usize> {
        let count = self.varint()?;
        let needed = count.saturating_mul(minimum_bytes as u64);
        if needed > self.remaining() as u64 {
            return Err(invalid(format!(
                "a count of {count} values needs more than the {} bytes left",
                self.remaining()
            )));
        }
        Ok(count as usize)
    }
}

#[cold]
fn truncated() -> CoreError {
    CoreError::Decode("input ends in the middle of a value".into())
}

#[cold]
fn invalid(message: String) -> CoreError {
    CoreError::Decode(message)
}

/// The error for a tag the decoder does not know.
#[cold]
#[must_use]
pub fn unknown_tag(tag: u8) -> CoreError {
    CoreError::Decode(format!("unknown value tag 0x{tag:02x}"))
}

/// The error for nesting deeper than [`MAX_DEPTH`].
#[cold]
#[must_use]
pub fn too_deep() -> CoreError {
    CoreError::Decode(format!("values nested deeper than {MAX_DEPTH}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8]) -> Reader<'_> {
        Reader {
            input: bytes,
            position: 0,
        }
    }

    #[test]
    fn a_body_reader_needs_no_magic_and_stops_at_its_end() {
        let mut body = Reader::body(&[0, 0, 0, 0, 0, 0, 0xF0, 0x3F]);
        assert_eq!(body.float().unwrap().to_bits(), 1.0f64.to_bits());
        assert!(body.at_end());
        assert!(body.float().is_err());
        assert!(Reader::body(&[1, 2, 3]).float().is_err());
    }

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, value);
            assert!(out.len() <= 10);
            assert_eq!(reader(&out).varint().unwrap(), value);
        }
    }

    #[test]
    fn zigzag_round_trips_the_extremes() {
        for value in [0, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
        assert_eq!(zigzag(-1), 1);
    }

    #[test]
    fn varint_rejects_truncation_overflow_and_overlength() {
        assert!(reader(&[0x80]).varint().is_err());
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(reader(&overflow).varint().is_err());
        assert!(reader(&[0x80; 11]).varint().is_err());
    }

    #[test]
    fn reads_never_pass_the_end() {
        let mut input = reader(&[1, 2, 3]);
        assert!(input.bytes(4).is_err());
        assert_eq!(input.bytes(3).unwrap(), &[1, 2, 3]);
        assert!(input.byte().is_err());
        assert!(reader(&[1, 2, 3]).float().is_err());
    }

    #[test]
    fn blobs_with_lengths_beyond_the_input_are_refused() {
        let mut out = Vec::new();
        write_varint(&mut out, 1 << 40);
        out.push(0);
        assert!(reader(&out).blob().is_err());
    }

    #[test]
    fn counts_the_input_cannot_back_are_refused() {
        let mut out = Vec::new();
        write_varint(&mut out, 4);
        out.extend_from_slice(&[0, 0, 0]);
        assert!(reader(&out).count(1).is_err());
        let mut out = Vec::new();
        write_varint(&mut out, u64::MAX);
        assert!(reader(&out).count(2).is_err());
        let mut out = Vec::new();
        write_varint(&mut out, 3);
        out.extend_from_slice(&[0, 0, 0]);
        assert_eq!(reader(&out).count(1).unwrap(), 3);
    }

    #[test]
    fn the_magic_byte_is_checked() {
        assert!(Reader::new(&[]).is_err());
        assert!(Reader::new(&[0x80, 0]).is_err());
        let ok = Reader::new(&[MAGIC, tag::NONE]).unwrap();
        assert_eq!(ok.remaining(), 1);
    }
}
