//! Building a model file (needs an allocator).

use alloc::vec::Vec;

use crate::error::{error_name, FormatError};
use crate::header::{
    Classifier, EntryRecord, FileKind, ModelConfig, Provenance, TensorEntry, TrainingState,
    MAX_TENSORS,
};
use crate::quant::{pair_stride, QuantAxis, QuantTensor};
use crate::tensors::{allowed_tensor, expected_tensors, quant_axis};
use crate::{
    payload_start, CLASSIFIER_VERSION, CRC32, MAGIC, PAIR_VERSION, PAPER_VERSION, PREFIX_LEN,
    QUANT_VERSION,
};

/// A tensor's data as given to the builder.
#[derive(Clone, Copy, Debug)]
enum Data<'t> {
    F32(&'t [f32]),
    I8 {
        values: &'t [i16],
        scales: &'t [f32],
    },
}

/// Assembles a model file from its header fields and named tensors, checking them against
/// the expected tensor set of the configuration and kind.
///
/// ```
/// # use formats::*;
/// let config = ModelConfig::edge(1);
/// let provenance = Provenance {
///     dataset: "random".try_into().unwrap(),
///     shots: 1, steps: 0, seed: 7, validation: None,
///     tool: "doc".try_into().unwrap(), tool_version: "0".try_into().unwrap(),
/// };
/// let data: Vec<(&str, Vec<f32>)> = expected_tensors(&config, FileKind::Inference)
///     .map(|spec| (spec.name, vec![0.5; spec.elements() as usize]))
///     .collect();
/// let mut builder = FileBuilder::new(FileKind::Inference, config, provenance)?;
/// for (name, values) in &data {
///     builder.tensor(name, values)?;
/// }
/// let bytes = builder.build()?;
/// assert_eq!(parse(&bytes)?.to_vec("enc_ap")?, data[0].1);
/// # Ok::<(), FormatError>(())
/// ```
#[derive(Clone, Debug)]
pub struct FileBuilder<'t> {
    kind: FileKind,
    config: ModelConfig,
    provenance: Provenance,
    training: Option<TrainingState>,
    /// (canonical rank, entry without offset, data).
    tensors: Vec<(usize, TensorEntry, Data<'t>)>,
}

impl<'t> FileBuilder<'t> {
    /// Starts a file; fails if the configuration is invalid.
    pub fn new(
        kind: FileKind,
        config: ModelConfig,
        provenance: Provenance,
    ) -> Result<Self, FormatError> {
        config.validate()?;
        Ok(Self {
            kind,
            config,
            provenance,
            training: None,
            tensors: Vec::new(),
        })
    }

    /// Records the training state (training files only; checked by [`Self::build`]).
    pub fn training_state(&mut self, state: TrainingState) -> &mut Self {
        self.training = Some(state);
        self
    }

    /// Adds a tensor. Its name must be a required or optional tensor of the configuration and
    /// kind, not already added, and `data` must have exactly its number of elements (row-major).
    pub fn tensor(&mut self, name: &str, data: &'t [f32]) -> Result<&mut Self, FormatError> {
        let (rank, entry) = self.new_entry(name, None)?;
        let expected = entry.elements().unwrap_or(u64::MAX);
        if expected != data.len() as u64 {
            return Err(FormatError::LengthMismatch {
                name: entry.name,
                expected,
                found: data.len() as u64,
            });
        }
        self.tensors.push((rank, entry, Data::F32(data)));
        Ok(self)
    }

    /// Adds an int8 tensor (which makes the file version 4): `values` are its
    /// `pairs(rows) * pair_stride(depth)` values in the row-pair layout of
    /// [`QuantTensor::values`], and `scales` its `rows` scales, as
    /// [`crate::quant::quantize`] returns them for the tensor's `[in, out]` shape and `axis`
    /// (`rows` and `depth` follow from the shape and axis, [`QuantAxis::rows_depth`]).
    /// The name must be a tensor of the configuration and kind that
    /// [`crate::tensors::quant_axis`] quantises along `axis`, not already added, and the
    /// matrix must be valid ([`QuantTensor::check`]).
    pub fn tensor_i8(
        &mut self,
        name: &str,
        axis: QuantAxis,
        values: &'t [i16],
        scales: &'t [f32],
    ) -> Result<&mut Self, FormatError> {
        if quant_axis(name) != Some(axis) {
            return Err(FormatError::QuantNotAllowed {
                name: error_name(name),
                axis,
            });
        }
        let (rank, entry) = self.new_entry(name, Some(axis))?;
        // quant_axis names only 2-D tensors.
        let (rows, depth) = entry.quant_rows_depth().unwrap_or((0, 0));
        QuantTensor {
            axis,
            rows,
            depth,
            pair_stride: pair_stride(depth),
            values,
            scales,
        }
        .check(name)?;
        self.tensors
            .push((rank, entry, Data::I8 { values, scales }));
        Ok(self)
    }

    /// The entry (offset 0) and canonical rank of a tensor `name` not yet added.
    fn new_entry(
        &self,
        name: &str,
        quant: Option<QuantAxis>,
    ) -> Result<(usize, TensorEntry), FormatError> {
        let (rank, shape) = allowed_tensor(&self.config, self.kind, name).ok_or_else(|| {
            FormatError::UnexpectedTensor {
                name: error_name(name),
            }
        })?;
        if self.tensors.iter().any(|(_, e, _)| e.name == name) {
            return Err(FormatError::DuplicateTensor {
                name: error_name(name),
            });
        }
        let entry = TensorEntry {
            name: error_name(name),
            shape,
            offset: 0,
            quant,
        };
        Ok((rank, entry))
    }

    /// Lays out and encodes the file: prefix, header, aligned payload in canonical tensor
    /// order, CRC-32 trailer.
    pub fn build(&self) -> Result<Vec<u8>, FormatError> {
        if self.kind == FileKind::Inference && self.training.is_some() {
            return Err(FormatError::TrainingStateInInferenceFile);
        }
        for spec in expected_tensors(&self.config, self.kind) {
            if !self.tensors.iter().any(|(_, e, _)| e.name == spec.name) {
                return Err(FormatError::MissingTensor {
                    name: error_name(spec.name),
                });
            }
        }
        if self.tensors.len() > MAX_TENSORS {
            return Err(FormatError::TooLarge);
        }
        let mut order: Vec<&(usize, TensorEntry, Data<'_>)> = self.tensors.iter().collect();
        order.sort_by_key(|(rank, _, _)| *rank);

        let mut table = heapless::Vec::<TensorEntry, MAX_TENSORS>::new();
        let mut offset = 0u64;
        for (_, entry, _) in &order {
            let mut entry = entry.clone();
            entry.offset = u32::try_from(offset).map_err(|_| FormatError::TooLarge)?;
            let len = entry.byte_len().ok_or(FormatError::TooLarge)?;
            table.push(entry).map_err(|_| FormatError::TooLarge)?;
            offset = align64(offset + len);
        }
        let payload_len = u32::try_from(offset).map_err(|_| FormatError::TooLarge)?;
        // The header's fields in order (as `Header` encodes them), with the classifier
        // between the training state and the table in a version-2 or -4 file, and a dtype
        // and axis code in every entry of a version-4 table (the table of version 3).
        let classifier = self.config.classifier;
        let version = if table.iter().any(|e| e.quant.is_some()) {
            PAIR_VERSION
        } else if classifier != Classifier::PAPER {
            CLASSIFIER_VERSION
        } else {
            PAPER_VERSION
        };
        let summary = (self.kind, self.config, &self.provenance, &self.training);
        let mut encoded = postcard::to_allocvec(&summary).map_err(FormatError::HeaderEncoding)?;
        if version >= CLASSIFIER_VERSION {
            encoded =
                postcard::to_extend(&classifier, encoded).map_err(FormatError::HeaderEncoding)?;
        }
        let encoded = if version >= QUANT_VERSION {
            let records: Vec<EntryRecord> = table.iter().map(EntryRecord::new).collect();
            postcard::to_extend(&records, encoded)
        } else {
            postcard::to_extend(&table, encoded)
        }
        .map_err(FormatError::HeaderEncoding)?;
        let header_len = u32::try_from(encoded.len()).map_err(|_| FormatError::TooLarge)?;
        let start = payload_start(u64::from(header_len));
        let total = start + u64::from(payload_len) + 4;
        let total = usize::try_from(total).map_err(|_| FormatError::TooLarge)?;

        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&payload_len.to_le_bytes());
        debug_assert_eq!(out.len(), PREFIX_LEN);
        out.extend_from_slice(&encoded);
        let payload_at = start as usize;
        out.resize(payload_at, 0);
        for (entry, (_, _, data)) in table.iter().zip(&order) {
            out.resize(payload_at + entry.offset as usize, 0);
            match data {
                Data::F32(data) => {
                    for value in data.iter() {
                        out.extend_from_slice(&value.to_le_bytes());
                    }
                }
                Data::I8 { values, scales } => {
                    for value in values.iter() {
                        out.extend_from_slice(&value.to_le_bytes());
                    }
                    for scale in scales.iter() {
                        out.extend_from_slice(&scale.to_le_bytes());
                    }
                }
            }
        }
        out.resize(payload_at + payload_len as usize, 0);
        let crc = CRC32.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

fn align64(n: u64) -> u64 {
    n.div_ceil(64) * 64
}
