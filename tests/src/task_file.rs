//! The golden set's task file: a support set and queries as raw little-endian `f32` after a
//! 64-byte header (the layout is documented in `tests/golden/README.md`). The firmware and
//! `trainer infer` take a task as two `.npy` files instead; the device tests write those from
//! this.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `b"AWGIMTSK"` |
//! | 8 | 4 | version, `u32` = 1 |
//! | 12 | 4 | `D`, features per row |
//! | 16 | 4 | `N`, ways |
//! | 20 | 4 | `K`, shots |
//! | 24 | 4 | `M`, queries (at least 1) |
//! | 28 | 36 | zero |
//! | 64 | `N K D 4` | support rows, class-major |
//! | `64 + N K D 4` | `M D 4` | query rows |

use thiserror::Error;

/// The first 8 bytes of a task file.
pub const MAGIC: [u8; 8] = *b"AWGIMTSK";
/// The layout version written and read here.
pub const VERSION: u32 = 1;
/// Bytes before the support rows.
pub const HEADER_LEN: usize = 64;

/// An N-way K-shot task with its queries, as stored in a task file.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFile {
    /// Features per row, `D`.
    pub feature_dim: u32,
    /// Ways `N`.
    pub ways: u32,
    /// Shots `K`.
    pub shots: u32,
    /// `N K` rows of `D` features, class-major: rows `i K .. (i + 1) K` are class `i`.
    pub support: Vec<Vec<f32>>,
    /// Query rows of `D` features.
    pub queries: Vec<Vec<f32>>,
}

/// Why a task cannot be written, or a file cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TaskFileError {
    /// Shorter than the header.
    #[error("task file of {found} bytes is shorter than its {HEADER_LEN}-byte header")]
    Truncated {
        /// Bytes found.
        found: usize,
    },
    /// The first 8 bytes are not `AWGIMTSK`.
    #[error("not a task file (bad magic)")]
    BadMagic,
    /// Another layout version.
    #[error("task file layout version {found}, this reader knows {VERSION}")]
    UnsupportedVersion {
        /// Version found.
        found: u32,
    },
    /// A reserved header byte is not zero.
    #[error("reserved task header byte {offset} is not zero")]
    NonzeroReserved {
        /// Its offset.
        offset: usize,
    },
    /// A size is zero (`M`, or one of `D`, `N`, `K`).
    #[error("task size `{field}` is zero")]
    ZeroSize {
        /// The field.
        field: &'static str,
    },
    /// The file length differs from the one the header implies.
    #[error("task file of {found} bytes, its header implies {expected}")]
    Length {
        /// Bytes implied.
        expected: u64,
        /// Bytes found.
        found: u64,
    },
    /// Writing: the number of support rows is not `N K`, or a row is not `D` long.
    #[error("task to write: {what} is {found}, expected {expected}")]
    Shape {
        /// What is wrong.
        what: &'static str,
        /// Expected count.
        expected: usize,
        /// Count found.
        found: usize,
    },
}

impl TaskFile {
    /// The file's bytes; fails if the rows do not match the sizes or a size is zero.
    pub fn encode(&self) -> Result<Vec<u8>, TaskFileError> {
        self.check()?;
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(&MAGIC);
        for value in [
            VERSION,
            self.feature_dim,
            self.ways,
            self.shots,
            u32::try_from(self.queries.len()).map_err(|_| TaskFileError::Shape {
                what: "the number of queries",
                expected: u32::MAX as usize,
                found: self.queries.len(),
            })?,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.resize(HEADER_LEN, 0);
        for value in self.support.iter().chain(&self.queries).flatten() {
            out.extend_from_slice(&value.to_le_bytes());
        }
        Ok(out)
    }

    /// Reads a task file (any alignment), checking every header field and the length.
    pub fn decode(bytes: &[u8]) -> Result<Self, TaskFileError> {
        if bytes.len() < HEADER_LEN {
            return Err(TaskFileError::Truncated { found: bytes.len() });
        }
        if bytes[..8] != MAGIC {
            return Err(TaskFileError::BadMagic);
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let version = word(8);
        if version != VERSION {
            return Err(TaskFileError::UnsupportedVersion { found: version });
        }
        if let Some(i) = bytes[28..HEADER_LEN].iter().position(|&b| b != 0) {
            return Err(TaskFileError::NonzeroReserved { offset: 28 + i });
        }
        let (feature_dim, ways, shots, queries) = (word(12), word(16), word(20), word(24));
        for (field, value) in [
            ("D", feature_dim),
            ("N", ways),
            ("K", shots),
            ("M", queries),
        ] {
            if value == 0 {
                return Err(TaskFileError::ZeroSize { field });
            }
        }
        // u128: no product of u32 sizes overflows.
        let support_rows = u128::from(ways) * u128::from(shots);
        let rows = support_rows + u128::from(queries);
        let expected = HEADER_LEN as u128 + rows * u128::from(feature_dim) * 4;
        if bytes.len() as u128 != expected {
            return Err(TaskFileError::Length {
                expected: u64::try_from(expected).unwrap_or(u64::MAX),
                found: bytes.len() as u64,
            });
        }
        // The length check bounds every size below by bytes.len(), a usize.
        let mut rows = bytes[HEADER_LEN..]
            .chunks_exact(feature_dim as usize * 4)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect::<Vec<f32>>()
            });
        let support = rows.by_ref().take(support_rows as usize).collect();
        let queries = rows.collect();
        Ok(Self {
            feature_dim,
            ways,
            shots,
            support,
            queries,
        })
    }

    fn check(&self) -> Result<(), TaskFileError> {
        for (field, empty) in [
            ("D", self.feature_dim == 0),
            ("N", self.ways == 0),
            ("K", self.shots == 0),
            ("M", self.queries.is_empty()),
        ] {
            if empty {
                return Err(TaskFileError::ZeroSize { field });
            }
        }
        let support_rows = self.ways as usize * self.shots as usize;
        if self.support.len() != support_rows {
            return Err(TaskFileError::Shape {
                what: "the number of support rows",
                expected: support_rows,
                found: self.support.len(),
            });
        }
        let D = self.feature_dim as usize;
        if let Some(row) = self
            .support
            .iter()
            .chain(&self.queries)
            .find(|r| r.len() != D)
        {
            return Err(TaskFileError::Shape {
                what: "a row's length",
                expected: D,
                found: row.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskFile {
        TaskFile {
            feature_dim: 3,
            ways: 2,
            shots: 2,
            support: (0..4)
                .map(|r| vec![r as f32, -1.5, f32::MIN_POSITIVE])
                .collect(),
            queries: vec![vec![0.25, 1e30, -0.0]],
        }
    }

    #[test]
    fn encode_layout_and_round_trip() {
        let bytes = task().encode().unwrap();
        assert_eq!(bytes.len(), 64 + 5 * 3 * 4);
        assert_eq!(&bytes[..8], b"AWGIMTSK");
        assert_eq!(
            bytes[8..28],
            [1, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]
        );
        assert!(bytes[28..64].iter().all(|&b| b == 0));
        // Row 1 of the support, feature 0: 1.0 little-endian.
        assert_eq!(bytes[64 + 12..64 + 16], 1.0f32.to_le_bytes());
        let back = TaskFile::decode(&bytes).unwrap();
        assert_eq!(back, task());
        assert!(back.queries[0][2].is_sign_negative());
    }

    #[test]
    fn decode_rejects_each_bad_field() {
        let good = task().encode().unwrap();
        let edit = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            TaskFile::decode(&b).unwrap_err()
        };
        assert_eq!(
            TaskFile::decode(&good[..63]).unwrap_err(),
            TaskFileError::Truncated { found: 63 }
        );
        assert_eq!(edit(0, b'X'), TaskFileError::BadMagic);
        assert_eq!(edit(8, 2), TaskFileError::UnsupportedVersion { found: 2 });
        assert_eq!(edit(40, 1), TaskFileError::NonzeroReserved { offset: 40 });
        assert_eq!(edit(24, 0), TaskFileError::ZeroSize { field: "M" });
        assert_eq!(
            edit(24, 2),
            TaskFileError::Length {
                expected: 64 + 6 * 12,
                found: 64 + 5 * 12
            }
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            TaskFile::decode(&long),
            Err(TaskFileError::Length { .. })
        ));
        // A huge declared size is a length error, not an overflow or an allocation.
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            TaskFile::decode(&huge),
            Err(TaskFileError::Length { .. })
        ));
    }

    #[test]
    fn encode_rejects_inconsistent_rows() {
        let mut t = task();
        t.support.pop();
        assert_eq!(
            t.encode().unwrap_err(),
            TaskFileError::Shape {
                what: "the number of support rows",
                expected: 4,
                found: 3
            }
        );
        let mut t = task();
        t.queries[0].push(1.0);
        assert_eq!(
            t.encode().unwrap_err(),
            TaskFileError::Shape {
                what: "a row's length",
                expected: 3,
                found: 4
            }
        );
        let mut t = task();
        t.queries.clear();
        assert_eq!(
            t.encode().unwrap_err(),
            TaskFileError::ZeroSize { field: "M" }
        );
    }
}
