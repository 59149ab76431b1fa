//! The task file: a support set and queries as raw little-endian `f32`, after a 64-byte header
//! so the data is as aligned as the file (64 bytes in a `formats::Aligned` static).
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `b"AWGIMTSK"` |
//! | 8 | 4 | version, `u32` = 1 |
//! | 12 | 4 | `D`, features per row (`u32`) |
//! | 16 | 4 | `N`, ways (`u32`) |
//! | 20 | 4 | `K`, shots (`u32`) |
//! | 24 | 4 | `M`, queries (`u32`, at least 1) |
//! | 28 | 36 | zero |
//! | 64 | `N K D 4` | support rows, class-major: rows `i K .. (i + 1) K` are class `i` |
//! | `64 + N K D 4` | `M D 4` | query rows |
//!
//! All integers are little-endian; the file ends right after the last query.

use core::fmt;

use crate::config::{D, NK, SIZES};

/// The first 8 bytes of a task file.
pub const MAGIC: [u8; 8] = *b"AWGIMTSK";
/// The layout version this firmware reads.
pub const VERSION: u32 = 1;
/// Bytes before the support rows.
pub const HEADER_LEN: usize = 64;

/// A task borrowed from the embedded file.
pub struct Task<'a> {
    /// The `N K` support rows, class-major.
    pub support: &'a [[f32; D]; NK],
    /// The query rows.
    pub queries: &'a [[f32; D]],
}

/// Why the embedded task file cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskError {
    /// Shorter than the header.
    Truncated {
        /// Bytes found.
        found: usize,
    },
    /// The first 8 bytes are not `AWGIMTSK`.
    BadMagic,
    /// A layout version this firmware does not read.
    UnsupportedVersion {
        /// Version found.
        found: u32,
    },
    /// A header size differs from the compiled configuration.
    SizeMismatch {
        /// `D`, `N` or `K`.
        field: &'static str,
        /// Size compiled into the firmware.
        expected: usize,
        /// Size in the file.
        found: u32,
    },
    /// The header declares no queries.
    NoQueries,
    /// A reserved header byte is not zero.
    NonzeroReserved {
        /// Its offset.
        offset: usize,
    },
    /// The file length is not the one the header implies.
    Length {
        /// Bytes the header implies.
        expected: u64,
        /// Bytes found.
        found: usize,
    },
    /// The rows cannot be borrowed as `f32` (the file is not 4-byte aligned).
    Misaligned,
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { found } => {
                write!(
                    f,
                    "{found} bytes, shorter than the {HEADER_LEN}-byte header"
                )
            }
            Self::BadMagic => write!(f, "bad magic (expected \"AWGIMTSK\")"),
            Self::UnsupportedVersion { found } => {
                write!(f, "layout version {found}, this firmware reads {VERSION}")
            }
            Self::SizeMismatch {
                field,
                expected,
                found,
            } => write!(
                f,
                "`{field}` is {found}, this firmware is compiled for {expected}"
            ),
            Self::NoQueries => write!(f, "the file declares no queries"),
            Self::NonzeroReserved { offset } => {
                write!(f, "reserved header byte {offset} is not zero")
            }
            Self::Length { expected, found } => {
                write!(f, "{found} bytes, the header implies {expected}")
            }
            Self::Misaligned => write!(f, "the rows are not 4-byte aligned"),
        }
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Checks the header against the compiled configuration and borrows the rows in place (the
/// target is little-endian, so the file's `f32` need no conversion).
pub fn parse(bytes: &[u8]) -> Result<Task<'_>, TaskError> {
    if bytes.len() < HEADER_LEN {
        return Err(TaskError::Truncated { found: bytes.len() });
    }
    if bytes[..8] != MAGIC {
        return Err(TaskError::BadMagic);
    }
    let version = le_u32(bytes, 8);
    if version != VERSION {
        return Err(TaskError::UnsupportedVersion { found: version });
    }
    for (field, at, expected) in [("D", 12, D), ("N", 16, SIZES.N), ("K", 20, SIZES.K)] {
        let found = le_u32(bytes, at);
        if found as usize != expected {
            return Err(TaskError::SizeMismatch {
                field,
                expected,
                found,
            });
        }
    }
    let queries = le_u32(bytes, 24);
    if queries == 0 {
        return Err(TaskError::NoQueries);
    }
    if let Some(i) = bytes[28..HEADER_LEN].iter().position(|&b| b != 0) {
        return Err(TaskError::NonzeroReserved { offset: 28 + i });
    }
    let rows = NK as u64 + u64::from(queries);
    let expected = HEADER_LEN as u64 + rows * D as u64 * 4;
    if bytes.len() as u64 != expected {
        return Err(TaskError::Length {
            expected,
            found: bytes.len(),
        });
    }
    let rows: &[[f32; D]] =
        bytemuck::try_cast_slice(&bytes[HEADER_LEN..]).map_err(|_| TaskError::Misaligned)?;
    let (support, queries) = rows.split_at(NK);
    // The length check above makes `support` exactly NK rows long.
    let support = support.try_into().map_err(|_| TaskError::Length {
        expected,
        found: bytes.len(),
    })?;
    Ok(Task { support, queries })
}
