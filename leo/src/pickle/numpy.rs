//! numpy's pickled forms: dtypes rebuilt from `numpy.dtype(typestr, ...)`
//! plus a BUILD state, and arrays rebuilt from `_reconstruct` plus a BUILD
//! state `(version, shape, dtype, fortran, data)`.

use std::fmt;

use super::object::ObjId;

/// Byte order of a dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    Little,
    Big,
    /// `|`: single bytes, objects, byte strings.
    NotApplicable,
}

impl ByteOrder {
    /// Parses numpy's byte-order character (`=` is the host's order).
    pub(crate) fn from_char(c: u8) -> Option<ByteOrder> {
        match c {
            b'<' => Some(ByteOrder::Little),
            b'>' => Some(ByteOrder::Big),
            b'|' => Some(ByteOrder::NotApplicable),
            b'=' => Some(ByteOrder::native()),
            _ => None,
        }
    }

    fn native() -> ByteOrder {
        if cfg!(target_endian = "big") {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        }
    }
}

/// A numpy element type: kind character (`f`, `i`, `O`, `S`, `U`, ...),
/// size in bytes and byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dtype {
    pub(crate) kind: u8,
    pub(crate) itemsize: usize,
    pub(crate) order: ByteOrder,
}

impl Dtype {
    /// Parses the type string numpy's `dtype.__reduce__` passes to
    /// `numpy.dtype` (`"f4"`, `"O8"`, `"S32"`, `"U9"`; an order prefix is
    /// accepted too). `U` counts characters of 4 bytes each.
    pub(crate) fn from_typestr(s: &[u8]) -> Option<Dtype> {
        let (order, rest) = match s.first().copied().and_then(ByteOrder::from_char) {
            Some(order) => (Some(order), &s[1..]),
            None => (None, s),
        };
        let (&kind, digits) = rest.split_first()?;
        let kind = if kind == b'a' { b'S' } else { kind };
        if !b"biufcOSUVMm".contains(&kind) {
            return None;
        }
        let count: usize = if digits.is_empty() {
            match kind {
                b'O' => std::mem::size_of::<usize>(),
                b'S' | b'U' | b'V' => 0,
                _ => return None,
            }
        } else {
            std::str::from_utf8(digits).ok()?.parse().ok()?
        };
        let itemsize = if kind == b'U' {
            count.checked_mul(4)?
        } else {
            count
        };
        let order = order.unwrap_or(match kind {
            b'O' | b'S' | b'V' | b'b' => ByteOrder::NotApplicable,
            _ if itemsize == 1 => ByteOrder::NotApplicable,
            _ => ByteOrder::native(),
        });
        Some(Dtype {
            kind,
            itemsize,
            order,
        })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = match self.order {
            ByteOrder::Little => '<',
            ByteOrder::Big => '>',
            ByteOrder::NotApplicable => '|',
        };
        let size = if self.kind == b'U' {
            self.itemsize / 4
        } else {
            self.itemsize
        };
        write!(f, "{order}{}{size}", char::from(self.kind))
    }
}

/// Where an array's elements are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ArrayData {
    /// Raw bytes: heap object id of a `Bytes` object of exactly
    /// `len * itemsize` bytes.
    Raw(ObjId),
    /// Object arrays: heap object id of a `List` of `len` values.
    Objects(ObjId),
}

/// A built ndarray.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Array {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: Dtype,
    /// Fortran (column-major) element order.
    pub(crate) fortran: bool,
    pub(crate) data: ArrayData,
}

/// Number of elements of a shape, `None` on overflow.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}
