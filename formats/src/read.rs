//! Parsing and checking a model file held in memory.

use crate::error::{error_name, FormatError};
use crate::header::{FileKind, Header, TensorEntry, MAX_TENSORS};
use crate::tensors::{allowed_tensor, expected_tensors};
use crate::{payload_start, CRC32, MAGIC, PREFIX_LEN, TRAILER_LEN, VERSION};

/// A checked model file: its header and its payload, borrowed from the caller's buffer.
///
/// Every tensor in the table is in bounds, aligned, unique, non-overlapping, expected for the
/// configuration and kind and of the right shape, and every required tensor is present.
#[derive(Clone, Debug)]
pub struct ModelFile<'a> {
    header: Header,
    payload: &'a [u8],
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(b)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b != 0)
}

/// Parses and checks a whole model file. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<ModelFile<'_>, FormatError> {
    let found = bytes.len() as u64;
    let min = (PREFIX_LEN + TRAILER_LEN) as u64;
    if found < PREFIX_LEN as u64 {
        return Err(FormatError::Truncated { needed: min, found });
    }
    if bytes[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = le_u16(bytes, 8);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let reserved = le_u16(bytes, 10);
    if reserved != 0 {
        return Err(FormatError::NonzeroReserved { value: reserved });
    }
    let header_len = le_u32(bytes, 12);
    let payload_len = le_u32(bytes, 16);
    if payload_len % 4 != 0 {
        return Err(FormatError::PayloadLengthNotMultipleOf4 {
            length: payload_len,
        });
    }
    let start = payload_start(u64::from(header_len));
    let total = start + u64::from(payload_len) + TRAILER_LEN as u64;
    if found < total {
        return Err(FormatError::Truncated {
            needed: total,
            found,
        });
    }
    if found > total {
        return Err(FormatError::TrailingBytes {
            expected: total,
            found,
        });
    }
    // From here on every offset is below bytes.len(), which is a usize.
    let start = start as usize;
    let crc_at = bytes.len() - TRAILER_LEN;
    let stored = le_u32(bytes, crc_at);
    let computed = CRC32.checksum(&bytes[..crc_at]);
    if stored != computed {
        return Err(FormatError::ChecksumMismatch { stored, computed });
    }
    let header_end = PREFIX_LEN + header_len as usize;
    if let Some(i) = first_nonzero(&bytes[header_end..start]) {
        return Err(FormatError::NonzeroPadding {
            offset: (header_end + i) as u64,
        });
    }
    let (header, rest) = postcard::take_from_bytes::<Header>(&bytes[PREFIX_LEN..header_end])
        .map_err(FormatError::MalformedHeader)?;
    if !rest.is_empty() {
        return Err(FormatError::HeaderLengthMismatch {
            declared: header_len,
            used: header_len - rest.len() as u32,
        });
    }
    let payload = &bytes[start..crc_at];
    check_header(&header, payload, start as u64)?;
    Ok(ModelFile { header, payload })
}

/// Checks the configuration and the tensor table against the payload.
fn check_header(header: &Header, payload: &[u8], payload_at: u64) -> Result<(), FormatError> {
    let config = &header.config;
    config.validate()?;
    if header.kind == FileKind::Inference && header.training.is_some() {
        return Err(FormatError::TrainingStateInInferenceFile);
    }
    let payload_len = payload.len() as u64;
    // (start, end, table index), sorted by start to find overlaps and padding.
    let mut spans: heapless::Vec<(u64, u64, usize), MAX_TENSORS> = heapless::Vec::new();
    for (index, entry) in header.tensors.iter().enumerate() {
        if entry.offset % 64 != 0 {
            return Err(FormatError::MisalignedTensor {
                name: entry.name.clone(),
                offset: entry.offset,
            });
        }
        let start = u64::from(entry.offset);
        let end = entry
            .elements()
            .and_then(|n| n.checked_mul(4))
            .and_then(|n| n.checked_add(start))
            .unwrap_or(u64::MAX);
        if end > payload_len {
            return Err(FormatError::TensorOutOfBounds {
                name: entry.name.clone(),
                end,
                payload: payload_len,
            });
        }
        if header.tensors[..index].iter().any(|e| e.name == entry.name) {
            return Err(FormatError::DuplicateTensor {
                name: entry.name.clone(),
            });
        }
        // The table and `spans` have the same capacity.
        let _ = spans.push((start, end, index));
    }
    spans.sort_unstable();
    let mut covered = 0u64;
    let mut previous: Option<usize> = None;
    for &(start, end, index) in &spans {
        if let Some(prev) = previous {
            if start < covered {
                return Err(FormatError::OverlappingTensors {
                    first: header.tensors[prev].name.clone(),
                    second: header.tensors[index].name.clone(),
                });
            }
        }
        check_zero(payload, covered, start, payload_at)?;
        covered = end;
        previous = Some(index);
    }
    check_zero(payload, covered, payload_len, payload_at)?;
    for entry in &header.tensors {
        check_entry(header, entry)?;
    }
    for spec in expected_tensors(config, header.kind) {
        if !header.tensors.iter().any(|e| e.name == spec.name) {
            return Err(FormatError::MissingTensor {
                name: error_name(spec.name),
            });
        }
    }
    Ok(())
}

fn check_zero(payload: &[u8], from: u64, to: u64, payload_at: u64) -> Result<(), FormatError> {
    // Callers pass from <= to <= payload.len().
    let gap = &payload[from as usize..to as usize];
    match first_nonzero(gap) {
        Some(i) => Err(FormatError::NonzeroPadding {
            offset: payload_at + from + i as u64,
        }),
        None => Ok(()),
    }
}

fn check_entry(header: &Header, entry: &TensorEntry) -> Result<(), FormatError> {
    match allowed_tensor(&header.config, header.kind, &entry.name) {
        None => Err(FormatError::UnexpectedTensor {
            name: entry.name.clone(),
        }),
        Some((_, shape)) if shape != entry.shape => Err(FormatError::ShapeMismatch {
            name: entry.name.clone(),
            expected: shape,
            found: entry.shape.clone(),
        }),
        Some(_) => Ok(()),
    }
}

impl<'a> ModelFile<'a> {
    /// The decoded header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload (all tensor bytes), borrowed from the file.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The table entry of a tensor.
    pub fn entry(&self, name: &str) -> Result<&TensorEntry, FormatError> {
        self.header
            .tensors
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| FormatError::MissingTensor {
                name: error_name(name),
            })
    }

    /// Whether the file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entry(name).is_ok()
    }

    /// The raw little-endian bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&'a [u8], FormatError> {
        let entry = self.entry(name)?;
        // Checked by `parse`: in bounds, so these casts and the slice are exact.
        let start = entry.offset as usize;
        let len = entry.elements().unwrap_or(0) as usize * 4;
        self.payload
            .get(start..start + len)
            .ok_or_else(|| FormatError::TensorOutOfBounds {
                name: entry.name.clone(),
                end: (start + len) as u64,
                payload: self.payload.len() as u64,
            })
    }

    /// A tensor borrowed in place, without a copy. Fails with [`FormatError::NotZeroCopy`] when
    /// the buffer is not 4-byte aligned or the target is big-endian (use [`Self::copy_tensor`]).
    pub fn tensor(&self, name: &str) -> Result<&'a [f32], FormatError> {
        let bytes = self.tensor_bytes(name)?;
        if cfg!(target_endian = "big") {
            return Err(FormatError::NotZeroCopy {
                name: error_name(name),
            });
        }
        bytemuck::try_cast_slice(bytes).map_err(|_| FormatError::NotZeroCopy {
            name: error_name(name),
        })
    }

    /// Copies a tensor into `out`, which must have exactly its number of elements. Works for
    /// any buffer alignment and target endianness.
    pub fn copy_tensor(&self, name: &str, out: &mut [f32]) -> Result<(), FormatError> {
        let bytes = self.tensor_bytes(name)?;
        if bytes.len() != out.len() * 4 {
            return Err(FormatError::LengthMismatch {
                name: error_name(name),
                expected: bytes.len() as u64 / 4,
                found: out.len() as u64,
            });
        }
        for (value, chunk) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Ok(())
    }

    /// A tensor copied into a new vector.
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self, name: &str) -> Result<alloc::vec::Vec<f32>, FormatError> {
        let len = self.tensor_bytes(name)?.len() / 4;
        let mut out = alloc::vec![0.0; len];
        self.copy_tensor(name, &mut out)?;
        Ok(out)
    }
}
