//! Parsing and checking a model file held in memory.
//!
//! The tensor table is never decoded as a whole: [`parse`] walks it entry by entry (once to
//! check its encoding, once to check every entry against the configuration and the payload),
//! and [`ModelFile`] keeps its encoded bytes and decodes one entry at a time when a tensor is
//! looked up. Only the small parts of the header are held decoded (kind, configuration, and
//! the provenance and training state with their texts and trainer options borrowed from the
//! file), so parsing needs a few hundred bytes of stack whatever the size of the table.

use serde::Deserialize;

use crate::error::{error_name, FormatError};
use crate::header::{
    EntryRecord, FileKind, Header, ModelConfig, Provenance, TensorEntry, Text, TrainingState,
    Validation, MAX_TENSORS, MAX_TEXT_LEN, MAX_TRAINER_OPTIONS,
};
use crate::quant::{check_parts, pair_stride, pair_values, Dtype, QuantTensor};
use crate::tensors::{allowed_tensor, expected_tensors, quant_axis};
use crate::{
    payload_start, CLASSIFIER_VERSION, CRC32, MAGIC, PAPER_VERSION, PREFIX_LEN, QUANT_VERSION,
    TRAILER_LEN, VERSION,
};

/// The training state as encoded in the header, its trainer options borrowed from the file.
/// Same wire format as [`TrainingState`] (postcard writes a `heapless::Vec<u8, _>` and a
/// `&[u8]` alike: a varint length and the bytes).
#[derive(Clone, Copy, Debug, Deserialize)]
struct TrainingRecord<'a> {
    step: u64,
    best_val_accuracy: f32,
    best_step: u64,
    skipped_steps: u64,
    rng_state: [u64; 4],
    trainer_options: &'a [u8],
}

/// The provenance as encoded in the header, its texts borrowed from the file. Same wire
/// format as [`Provenance`] (a `heapless::String` and a `&str` are both a varint length and
/// UTF-8 bytes).
#[derive(Clone, Copy, Debug, Deserialize)]
struct ProvenanceRecord<'a> {
    dataset: &'a str,
    shots: u32,
    steps: u64,
    seed: u64,
    validation: Option<Validation>,
    tool: &'a str,
    tool_version: &'a str,
}

impl ProvenanceRecord<'_> {
    /// Fails if a text is longer than [`Provenance`] can hold.
    fn check(&self) -> Result<(), FormatError> {
        let texts = [
            ("dataset", self.dataset),
            ("tool", self.tool),
            ("tool_version", self.tool_version),
        ];
        for (field, text) in texts {
            if text.len() > MAX_TEXT_LEN {
                return Err(FormatError::TextTooLong {
                    field,
                    length: text.len() as u64,
                });
            }
        }
        Ok(())
    }
}

/// A provenance text; `parse` checked that it fits, so nothing is lost.
fn text(s: &str) -> Text {
    Text::try_from(s).unwrap_or_default()
}

/// The header up to its tensor table: the fields of [`Header`] but `tensors`, in its order.
#[derive(Deserialize)]
struct Summary<'a> {
    kind: FileKind,
    config: ModelConfig,
    #[serde(borrow)]
    provenance: ProvenanceRecord<'a>,
    #[serde(borrow)]
    training: Option<TrainingRecord<'a>>,
}

/// A checked model file: the small parts of its header decoded, its tensor table and payload
/// borrowed from the caller's buffer.
///
/// Every tensor in the table is in bounds, aligned, in canonical order with increasing
/// offsets (so unique and non-overlapping), expected for the configuration and kind and of the
/// right shape, and every required tensor is present.
#[derive(Clone, Debug)]
pub struct ModelFile<'a> {
    kind: FileKind,
    config: ModelConfig,
    provenance: ProvenanceRecord<'a>,
    training: Option<TrainingRecord<'a>>,
    /// The encoded table entries (after the entry count), each a postcard [`TensorEntry`].
    table: &'a [u8],
    /// Number of entries in `table`.
    tensor_count: usize,
    /// Whether the table's entries are version-3 or -4 [`EntryRecord`]s (with dtype and axis).
    typed_entries: bool,
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
    if !(PAPER_VERSION..=VERSION).contains(&version) {
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
    let header = &bytes[PREFIX_LEN..header_end];
    let (mut summary, rest) =
        postcard::take_from_bytes::<Summary<'_>>(header).map_err(FormatError::MalformedHeader)?;
    // Versions 2 and 3 record the classifier; version 1 is the paper's (the `Default`).
    let rest = if version >= CLASSIFIER_VERSION {
        let (classifier, rest) =
            postcard::take_from_bytes(rest).map_err(FormatError::MalformedHeader)?;
        summary.config.classifier = classifier;
        rest
    } else {
        rest
    };
    summary.provenance.check()?;
    if let Some(training) = &summary.training {
        if training.trainer_options.len() > MAX_TRAINER_OPTIONS {
            return Err(FormatError::TrainerOptionsTooLong {
                length: training.trainer_options.len() as u64,
            });
        }
    }
    let (count, entries) =
        postcard::take_from_bytes::<u64>(rest).map_err(FormatError::MalformedHeader)?;
    if count > MAX_TENSORS as u64 {
        return Err(FormatError::TooManyTensors { count });
    }
    // At most MAX_TENSORS: fits a usize.
    let tensor_count = count as usize;
    let typed_entries = version >= QUANT_VERSION;
    let table = table_bytes(
        entries,
        tensor_count,
        header_len,
        typed_entries,
        version == QUANT_VERSION,
    )?;
    let file = ModelFile {
        kind: summary.kind,
        config: summary.config,
        provenance: summary.provenance,
        training: summary.training,
        table,
        tensor_count,
        typed_entries,
        payload: &bytes[start..crc_at],
    };
    file.check(start as u64)?;
    Ok(file)
}

/// The bytes of `count` encoded entries at the start of `entries`, which must be exactly
/// those: every entry is decoded once (and dropped) to check its encoding (and, for version-3
/// and -4 entries, its dtype and axis codes) and find its end. In a version-3 table
/// (`retired_int8`) an int8 entry is [`FormatError::Int8LayoutRetired`]: that version stored
/// int8 tensors row by row.
fn table_bytes(
    entries: &[u8],
    count: usize,
    header_len: u32,
    typed_entries: bool,
    retired_int8: bool,
) -> Result<&[u8], FormatError> {
    let mut rest = entries;
    for _ in 0..count {
        rest = if typed_entries {
            let (record, after) = postcard::take_from_bytes::<EntryRecord>(rest)
                .map_err(FormatError::MalformedHeader)?;
            let entry = record.entry()?;
            if retired_int8 && entry.quant.is_some() {
                return Err(FormatError::Int8LayoutRetired { name: entry.name });
            }
            after
        } else {
            postcard::take_from_bytes::<TensorEntry>(rest)
                .map_err(FormatError::MalformedHeader)?
                .1
        };
    }
    if !rest.is_empty() {
        return Err(FormatError::HeaderLengthMismatch {
            declared: header_len,
            // rest is a suffix of the header, whose length is header_len.
            used: header_len - rest.len() as u32,
        });
    }
    Ok(entries)
}

/// The entry that came before, while walking the table in [`ModelFile::check`].
struct Previous {
    name: crate::TensorName,
    rank: usize,
    start: u64,
    end: u64,
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

impl<'a> ModelFile<'a> {
    /// Checks the configuration and the table against the payload (which starts at file
    /// offset `payload_at`). A first walk checks every entry: aligned, in bounds, expected with
    /// its shape, and after the previous one in canonical order and in the payload (so unique
    /// and not overlapping); then every required tensor must be present; a second walk checks
    /// that every byte between and after the tensors is zero. Errors about the table's order
    /// come before those about gaps it leaves, so a swapped pair of entries is reported as such.
    fn check(&self, payload_at: u64) -> Result<(), FormatError> {
        let config = &self.config;
        config.validate()?;
        if self.kind == FileKind::Inference && self.training.is_some() {
            return Err(FormatError::TrainingStateInInferenceFile);
        }
        let payload_len = self.payload.len() as u64;
        let required = expected_tensors(config, self.kind).count();
        // The first required rank the walk went past without seeing it.
        let mut skipped: Option<usize> = None;
        let mut next_required = 0;
        let mut previous: Option<Previous> = None;
        for entry in self.entries() {
            let (rank, start, end) = self.check_entry(&entry)?;
            if let Some(previous) = &previous {
                if rank == previous.rank {
                    return Err(FormatError::DuplicateTensor { name: entry.name });
                }
                if rank < previous.rank || start < previous.start {
                    return Err(FormatError::TensorOutOfOrder {
                        previous: previous.name.clone(),
                        name: entry.name,
                    });
                }
                if start < previous.end {
                    return Err(FormatError::OverlappingTensors {
                        first: previous.name.clone(),
                        second: entry.name,
                    });
                }
            }
            // Ranks strictly increase: a rank past the next required one skips it (required
            // ranks are `0..required`, optional ones come after).
            if next_required < required && rank != next_required {
                skipped.get_or_insert(next_required);
            }
            if rank < required {
                next_required = rank + 1;
            }
            previous = Some(Previous {
                name: entry.name,
                rank,
                start,
                end,
            });
        }
        if next_required < required {
            skipped.get_or_insert(next_required);
        }
        if let Some(rank) = skipped {
            return Err(FormatError::MissingTensor {
                name: expected_tensors(config, self.kind)
                    .nth(rank)
                    .map(|spec| error_name(spec.name))
                    .unwrap_or_default(),
            });
        }
        // The entries are in increasing, non-overlapping order: the gaps are what lies
        // between consecutive ones.
        let mut covered = 0u64;
        for entry in self.entries() {
            let start = u64::from(entry.offset);
            check_zero(self.payload, covered, start, payload_at)?;
            covered = start + entry.byte_len().unwrap_or(0);
        }
        check_zero(self.payload, covered, payload_len, payload_at)?;
        // Last, the contents of the int8 tensors (versions 3 and 4 only: an earlier version's
        // table is not walked again; version 3 has none): scales, value range, padding.
        let int8_entries = if self.typed_entries {
            self.tensor_count
        } else {
            0
        };
        for entry in self.entries_from(self.table, int8_entries) {
            if let Some((rows, depth)) = entry.quant_rows_depth() {
                let name = entry.name.clone();
                let bytes = self.bytes_of(entry)?;
                // In bounds: `byte_len` counted these values (2 bytes each) and the scales.
                let (values, scales) = bytes.split_at(pair_values(rows, depth) as usize * 2);
                check_parts(
                    &name,
                    rows,
                    depth,
                    pair_stride(depth),
                    values
                        .chunks_exact(2)
                        .map(|c| i16::from_le_bytes([c[0], c[1]])),
                    // In place where aligned (always, in a file read into aligned memory):
                    // the fast pass over little-endian values.
                    bytemuck::try_cast_slice(values)
                        .ok()
                        .filter(|_| cfg!(target_endian = "little")),
                    values.len() / 2,
                    scales
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    scales.len() / 4,
                )?;
            }
        }
        Ok(())
    }

    /// Checks one entry on its own: aligned, int8 only as [`quant_axis`] allows, in bounds,
    /// expected for the configuration and kind, with its shape. Returns its canonical rank and
    /// its payload byte range.
    fn check_entry(&self, entry: &TensorEntry) -> Result<(usize, u64, u64), FormatError> {
        if entry.offset % 64 != 0 {
            return Err(FormatError::MisalignedTensor {
                name: entry.name.clone(),
                offset: entry.offset,
            });
        }
        if let Some(axis) = entry.quant {
            if quant_axis(&entry.name) != Some(axis) {
                return Err(FormatError::QuantNotAllowed {
                    name: entry.name.clone(),
                    axis,
                });
            }
            // The int8 length needs the tensor's own 2-D shape: name and shape are checked
            // before the bounds.
            match allowed_tensor(&self.config, self.kind, &entry.name) {
                None => {
                    return Err(FormatError::UnexpectedTensor {
                        name: entry.name.clone(),
                    })
                }
                Some((_, shape)) if shape != entry.shape => {
                    return Err(FormatError::ShapeMismatch {
                        name: entry.name.clone(),
                        expected: shape,
                        found: entry.shape.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        let payload_len = self.payload.len() as u64;
        let start = u64::from(entry.offset);
        let end = entry
            .byte_len()
            .and_then(|n| n.checked_add(start))
            .unwrap_or(u64::MAX);
        if end > payload_len {
            return Err(FormatError::TensorOutOfBounds {
                name: entry.name.clone(),
                end,
                payload: payload_len,
            });
        }
        match allowed_tensor(&self.config, self.kind, &entry.name) {
            None => Err(FormatError::UnexpectedTensor {
                name: entry.name.clone(),
            }),
            Some((_, shape)) if shape != entry.shape => Err(FormatError::ShapeMismatch {
                name: entry.name.clone(),
                expected: shape,
                found: entry.shape.clone(),
            }),
            Some((rank, _)) => Ok((rank, start, end)),
        }
    }

    /// Inference or training file.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// The model configuration (valid: checked by [`parse`]).
    pub fn config(&self) -> ModelConfig {
        self.config
    }

    /// Where the file came from (a copy: the file holds the texts).
    pub fn provenance(&self) -> Provenance {
        let p = &self.provenance;
        Provenance {
            dataset: text(p.dataset),
            shots: p.shots,
            steps: p.steps,
            seed: p.seed,
            validation: p.validation,
            tool: text(p.tool),
            tool_version: text(p.tool_version),
        }
    }

    /// A copy of the training state, if the file has one (training files only).
    pub fn training(&self) -> Option<TrainingState> {
        self.training.map(|t| TrainingState {
            step: t.step,
            best_val_accuracy: t.best_val_accuracy,
            best_step: t.best_step,
            skipped_steps: t.skipped_steps,
            rng_state: t.rng_state,
            // `parse` checked the length, so `take` keeps every byte.
            trainer_options: t
                .trainer_options
                .iter()
                .copied()
                .take(MAX_TRAINER_OPTIONS)
                .collect(),
        })
    }

    /// The trainer's options of the training state, borrowed from the file (at most
    /// [`MAX_TRAINER_OPTIONS`] bytes).
    pub fn trainer_options(&self) -> Option<&'a [u8]> {
        self.training.map(|t| t.trainer_options)
    }

    /// Number of tensors in the table.
    pub fn tensor_count(&self) -> usize {
        self.tensor_count
    }

    /// The table entries in file order (canonical order), decoded one at a time.
    pub fn entries(&self) -> Entries<'a> {
        self.entries_from(self.table, self.tensor_count)
    }

    /// An owned copy of the whole header, tensor table included. It is large (the table has
    /// room for [`MAX_TENSORS`] entries, about 8 KiB): for host tools and tests; a device
    /// needs only [`Self::config`] and the tensors.
    pub fn to_header(&self) -> Header {
        Header {
            kind: self.kind,
            config: self.config,
            provenance: self.provenance(),
            training: self.training(),
            // `parse` checked the count, so `take` keeps every entry.
            tensors: self.entries().take(MAX_TENSORS).collect(),
        }
    }

    /// The payload (all tensor bytes), borrowed from the file.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The table entry of a tensor.
    pub fn entry(&self, name: &str) -> Result<TensorEntry, FormatError> {
        self.find(name).ok_or_else(|| FormatError::MissingTensor {
            name: error_name(name),
        })
    }

    /// The entry named `name`: one walk of the encoded table that compares each entry's name
    /// bytes in place and skips the rest of it varint by varint (no decoding, no UTF-8 check,
    /// no copy: `parse` checked every entry), and decodes a whole entry only for the match (a
    /// device looks up every tensor this way).
    fn find(&self, name: &str) -> Option<TensorEntry> {
        let mut rest = self.table;
        for _ in 0..self.tensor_count {
            // `parse` decoded every entry once, so these succeed: a name (varint length and
            // bytes), a shape (varint count and varint dimensions), a varint offset, and in a
            // version-3 or -4 table two code bytes.
            let (len, after) = varint(rest)?;
            let found = after.get(..len)?;
            let (dims, mut tail) = varint(after.get(len..)?)?;
            for _ in 0..=dims {
                tail = varint(tail)?.1;
            }
            if self.typed_entries {
                tail = tail.get(2..)?;
            }
            if found == name.as_bytes() {
                return self.entries_from(rest, 1).next();
            }
            rest = tail;
        }
        None
    }

    fn entries_from(&self, rest: &'a [u8], remaining: usize) -> Entries<'a> {
        Entries {
            rest,
            remaining,
            typed: self.typed_entries,
        }
    }

    /// Whether the file holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The element type of a tensor.
    pub fn dtype(&self, name: &str) -> Result<Dtype, FormatError> {
        Ok(self.entry(name)?.dtype())
    }

    /// The raw bytes of a tensor as stored: little-endian f32 values, or for an int8 tensor
    /// its `pairs(rows) * pair_stride(depth)` little-endian i16 values (the row-pair layout of
    /// [`crate::quant`]) followed by its `rows` little-endian f32 scales.
    pub fn tensor_bytes(&self, name: &str) -> Result<&'a [u8], FormatError> {
        self.bytes_of(self.entry(name)?)
    }

    /// The stored bytes of a table entry.
    fn bytes_of(&self, entry: TensorEntry) -> Result<&'a [u8], FormatError> {
        // Checked by `parse`: in bounds, so these casts and the slice are exact.
        let start = entry.offset as usize;
        let len = entry.byte_len().unwrap_or(0) as usize;
        self.payload
            .get(start..start + len)
            .ok_or_else(|| FormatError::TensorOutOfBounds {
                name: entry.name,
                end: (start + len) as u64,
                payload: self.payload.len() as u64,
            })
    }

    /// The bytes of an f32 tensor; [`FormatError::WrongDtype`] for an int8 one.
    fn f32_bytes(&self, name: &str) -> Result<&'a [u8], FormatError> {
        let entry = self.entry(name)?;
        if entry.quant.is_some() {
            return Err(FormatError::WrongDtype {
                name: entry.name,
                expected: Dtype::F32,
                found: Dtype::I8,
            });
        }
        self.bytes_of(entry)
    }

    /// An f32 tensor borrowed in place, without a copy. Fails with [`FormatError::NotZeroCopy`]
    /// when the buffer is not 4-byte aligned or the target is big-endian (use
    /// [`Self::copy_tensor`]), and with [`FormatError::WrongDtype`] for an int8 tensor (use
    /// [`Self::tensor_i8`]).
    pub fn tensor(&self, name: &str) -> Result<&'a [f32], FormatError> {
        let bytes = self.f32_bytes(name)?;
        if cfg!(target_endian = "big") {
            return Err(FormatError::NotZeroCopy {
                name: error_name(name),
            });
        }
        bytemuck::try_cast_slice(bytes).map_err(|_| FormatError::NotZeroCopy {
            name: error_name(name),
        })
    }

    /// An int8 tensor borrowed in place (its row-pair values and its scales), valid
    /// ([`QuantTensor::check`] passed in [`parse`]). Fails with [`FormatError::WrongDtype`]
    /// for an f32 tensor, and with [`FormatError::NotZeroCopy`] when the values and scales
    /// cannot be borrowed (buffer not 4-byte aligned, or a big-endian target).
    pub fn tensor_i8(&self, name: &str) -> Result<QuantTensor<'a>, FormatError> {
        let entry = self.entry(name)?;
        let (Some(axis), Some((rows, depth))) = (entry.quant, entry.quant_rows_depth()) else {
            return Err(FormatError::WrongDtype {
                name: error_name(name),
                expected: Dtype::I8,
                found: entry.dtype(),
            });
        };
        let bytes = self.bytes_of(entry)?;
        // In bounds: `parse` checked the tensor's `byte_len`, which counts these values.
        let (values, scales) = bytes.split_at(pair_values(rows, depth) as usize * 2);
        let not_zero_copy = || FormatError::NotZeroCopy {
            name: error_name(name),
        };
        if cfg!(target_endian = "big") {
            return Err(not_zero_copy());
        }
        Ok(QuantTensor {
            axis,
            rows,
            depth,
            pair_stride: pair_stride(depth),
            values: bytemuck::try_cast_slice(values).map_err(|_| not_zero_copy())?,
            scales: bytemuck::try_cast_slice(scales).map_err(|_| not_zero_copy())?,
        })
    }

    /// Copies an f32 tensor into `out`, which must have exactly its number of elements. Works
    /// for any buffer alignment and target endianness. [`FormatError::WrongDtype`] for an int8
    /// tensor (see [`crate::quant::dequantize`]).
    pub fn copy_tensor(&self, name: &str, out: &mut [f32]) -> Result<(), FormatError> {
        let bytes = self.f32_bytes(name)?;
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

    /// An f32 tensor copied into a new vector ([`FormatError::WrongDtype`] for an int8 one).
    #[cfg(feature = "alloc")]
    pub fn to_vec(&self, name: &str) -> Result<alloc::vec::Vec<f32>, FormatError> {
        let len = self.f32_bytes(name)?.len() / 4;
        let mut out = alloc::vec![0.0; len];
        self.copy_tensor(name, &mut out)?;
        Ok(out)
    }
}

/// A postcard varint (LEB128, at most 10 bytes) at the start of `bytes` and the bytes after
/// it; `None` if it does not end or does not fit a `usize`.
fn varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(value).ok()?, &bytes[i + 1..]));
        }
    }
    None
}

/// The entries of a [`ModelFile`]'s tensor table, decoded one at a time
/// ([`ModelFile::entries`]).
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
    remaining: usize,
    /// Version-3 or -4 entries ([`EntryRecord`]).
    typed: bool,
}

impl Iterator for Entries<'_> {
    type Item = TensorEntry;

    fn next(&mut self) -> Option<TensorEntry> {
        if self.remaining == 0 {
            return None;
        }
        // `parse` decoded every entry once, so this succeeds for all `remaining` of them.
        let (entry, rest) = if self.typed {
            let (record, rest) = postcard::take_from_bytes::<EntryRecord>(self.rest).ok()?;
            (record.entry().ok()?, rest)
        } else {
            postcard::take_from_bytes::<TensorEntry>(self.rest).ok()?
        };
        self.rest = rest;
        self.remaining -= 1;
        Some(entry)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
