//! The codec's NDARRAY record: a numpy array as dtype, shape, order and raw bytes, no pickle.
//!
//! ```text
//! NDARRAY 0x17 u8 order, blob dtype, varint ndim, ndim varints (the shape), buffer
//! order    0 C (row-major), 1 Fortran (column-major): the order of the bytes that follow
//! dtype    numpy's `dtype.str` for the plain kinds only: a byte order (`<`, `>`, `|`, `=`), a
//!          kind (`b` bool, `i` `u` integers, `f` floats, `c` complex, `S` bytes, `U` str, `M`
//!          `m` datetimes with a `[unit]`) and an item size in bytes (characters for `U`)
//! buffer   the array's bytes, INLINE (aligned) or SHARED (see `codec`)
//! ```
//! Object, structured and void dtypes are never encoded here (they go to pickle): a decoder
//! that accepted them would turn raw bytes into pointers. The byte length must be exactly the
//! product of the shape times the item size; [`Header::read`] checks that with overflow-safe
//! arithmetic before anything is allocated, and refuses more than [`MAX_NDIM`] dimensions.
use crate::codec::{self, Reader};
use crate::error::{CoreError, Result};

/// Most dimensions an array may have (numpy 2's limit).
pub const MAX_NDIM: usize = 64;

/// The bytes of one item of the dtype `descr` (numpy's `dtype.str`), or None if this record
/// does not carry that dtype.
#[must_use]
pub fn itemsize(descr: &[u8]) -> Option<usize> {
    let (&order, rest) = descr.split_first()?;
    if !matches!(order, b'<' | b'>' | b'|' | b'=') {
        return None;
    }
    let (&kind, rest) = rest.split_first()?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || rest[0] == b'0' {
        return None;
    }
    let size: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let unit = &rest[digits..];
    match kind {
        b'b' if size == 1 && unit.is_empty() => Some(1),
        b'i' | b'u' if matches!(size, 1 | 2 | 4 | 8) && unit.is_empty() => Some(size),
        b'f' if matches!(size, 2 | 4 | 8 | 12 | 16) && unit.is_empty() => Some(size),
        b'c' if matches!(size, 8 | 16 | 24 | 32) && unit.is_empty() => Some(size),
        b'S' if unit.is_empty() => Some(size),
        b'U' if unit.is_empty() => size.checked_mul(4),
        b'M' | b'm' if size == 8 && valid_unit(unit) => Some(8),
        _ => None,
    }
}

/// `[unit]` or `[Nunit]` of a datetime dtype (numpy's units), or nothing (generic).
fn valid_unit(unit: &[u8]) -> bool {
    if unit.is_empty() {
        return true;
    }
    let Some(inner) = unit
        .strip_prefix(b"[")
        .and_then(|rest| rest.strip_suffix(b"]"))
    else {
        return false;
    };
    let digits = inner
        .iter()
        .take_while(|byte| byte.is_ascii_digit())
        .count();
    if digits > 9 {
        return false;
    }
    matches!(
        &inner[digits..],
        b"Y" | b"M"
            | b"W"
            | b"D"
            | b"h"
            | b"m"
            | b"s"
            | b"ms"
            | b"us"
            | b"ns"
            | b"ps"
            | b"fs"
            | b"as"
    )
}

/// An NDARRAY record up to its storage: what the decoder needs before the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Fortran (column-major) order; else C.
    pub fortran: bool,
    /// numpy's `dtype.str`, validated by [`itemsize`].
    pub descr: &'a [u8],
    /// The shape.
    pub shape: Vec<usize>,
    /// The exact length of the array's bytes.
    pub byte_length: usize,
}

impl<'a> Header<'a> {
    /// Reads the record after its tag, up to its buffer, checking everything.
    pub fn read(reader: &mut Reader<'a>) -> Result<Self> {
        let fortran = match reader.byte()? {
            0 => false,
            1 => true,
            other => return Err(invalid(format!("unknown array order {other}"))),
        };
        let descr = reader.blob()?;
        let item = itemsize(descr).ok_or_else(|| {
            invalid(format!(
                "unsupported array dtype {:?}",
                String::from_utf8_lossy(descr)
            ))
        })?;
        let ndim = reader.count(1)?;
        if ndim > MAX_NDIM {
            return Err(invalid(format!(
                "an array of {ndim} dimensions (at most {MAX_NDIM})"
            )));
        }
        let mut shape = Vec::with_capacity(ndim);
        let mut byte_length = Some(item);
        for _ in 0..ndim {
            let size = usize::try_from(reader.varint()?).map_err(|_| too_large())?;
            byte_length = byte_length.and_then(|length| length.checked_mul(size));
            shape.push(size);
        }
        let byte_length = byte_length.filter(|&length| isize::try_from(length).is_ok());
        let byte_length = byte_length.ok_or_else(too_large)?;
        Ok(Self {
            fortran,
            descr,
            shape,
            byte_length,
        })
    }

    /// Writes the record's tag and header; the caller writes the buffer after it.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(codec::tag::NDARRAY);
        out.push(u8::from(self.fortran));
        codec::write_blob_body(out, self.descr);
        codec::write_varint(out, self.shape.len() as u64);
        for &size in &self.shape {
            codec::write_varint(out, size as u64);
        }
    }
}

#[cold]
fn invalid(message: String) -> CoreError {
    CoreError::Decode(message)
}

#[cold]
fn too_large() -> CoreError {
    CoreError::Decode("an array larger than the address space".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_dtypes_have_their_item_sizes() {
        for (descr, size) in [
            ("|b1", 1),
            ("<i8", 8),
            (">u2", 2),
            ("<f4", 4),
            ("<f16", 16),
            ("<c16", 16),
            ("|S5", 5),
            ("<U3", 12),
            ("<M8[ns]", 8),
            ("<m8[25s]", 8),
            ("<M8", 8),
        ] {
            assert_eq!(itemsize(descr.as_bytes()), Some(size), "{descr}");
        }
    }

    #[test]
    fn other_dtypes_are_refused() {
        for descr in [
            "",
            "<",
            "|O8",
            "|V16",
            "<f",
            "<f0",
            "<f3",
            "|S0",
            "|S01",
            "<i16",
            "i8",
            "<M8[xs]",
            "<M8[ns",
            "<U99999999999",
            "<f8x",
            "|b2",
        ] {
            assert_eq!(itemsize(descr.as_bytes()), None, "{descr}");
        }
    }

    fn header_bytes(descr: &str, shape: &[u64]) -> Vec<u8> {
        let mut out = vec![codec::MAGIC, 0];
        codec::write_blob_body(&mut out, descr.as_bytes());
        codec::write_varint(&mut out, shape.len() as u64);
        for &size in shape {
            codec::write_varint(&mut out, size);
        }
        out
    }

    #[test]
    fn a_header_round_trips() {
        let header = Header {
            fortran: true,
            descr: b"<f8",
            shape: vec![3, 0, 2],
            byte_length: 0,
        };
        let mut out = vec![codec::MAGIC];
        header.write(&mut out);
        let mut reader = Reader::new(&out).unwrap();
        assert_eq!(reader.byte().unwrap(), codec::tag::NDARRAY);
        assert_eq!(Header::read(&mut reader).unwrap(), header);
        assert!(reader.at_end());
    }

    #[test]
    fn shapes_whose_size_overflows_are_refused() {
        let bytes = header_bytes("<f8", &[1 << 40, 1 << 40]);
        assert!(Header::read(&mut Reader::new(&bytes).unwrap()).is_err());
        let bytes = header_bytes("<f8", &[u64::MAX / 4]);
        assert!(Header::read(&mut Reader::new(&bytes).unwrap()).is_err());
    }

    #[test]
    fn too_many_dimensions_are_refused() {
        let bytes = header_bytes("<f8", &[1; MAX_NDIM + 1]);
        assert!(Header::read(&mut Reader::new(&bytes).unwrap()).is_err());
        let bytes = header_bytes("<f8", &[1; MAX_NDIM]);
        let header = Header::read(&mut Reader::new(&bytes).unwrap()).unwrap();
        assert_eq!(header.byte_length, 8);
    }

    #[test]
    fn a_zero_dimensional_array_holds_one_item() {
        let bytes = header_bytes("<c8", &[]);
        assert_eq!(
            Header::read(&mut Reader::new(&bytes).unwrap())
                .unwrap()
                .byte_length,
            8
        );
    }
}
