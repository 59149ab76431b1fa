//! The AWGIM model file: the only contract between the trainer and the `no_std` engine.
//!
//! See `FORMAT.md` for the byte layout. [`parse`] checks a whole file held in memory and never
//! panics; tensors are then borrowed in place ([`ModelFile::tensor`], [`ModelFile::tensor_i8`]
//! for int8 ones, [`quant`]) or copied. With the `alloc` feature `FileBuilder` writes files;
//! with `std`, `write_atomic` and `read_aligned` move them to and from disk.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod aligned;
mod error;
mod header;
#[cfg(feature = "std")]
mod io;
pub mod quant;
mod read;
pub mod tensors;
#[cfg(feature = "alloc")]
mod write;

pub use aligned::Aligned;
pub use error::FormatError;
pub use header::{
    shape_elements, Classifier, ConfigError, EncoderKind, FeatureNorm, FileKind, Header,
    LayerNormKind, LogitsKind, ModelConfig, Provenance, Shape, Sizes, TensorEntry, TensorName,
    Text, TrainingState, Validation, WeightsKind, MAX_DIMS, MAX_NAME_LEN, MAX_TENSORS,
    MAX_TEXT_LEN, MAX_TRAINER_OPTIONS,
};
#[cfg(feature = "std")]
pub use io::{read_aligned, write_atomic, AlignedBuf};
pub use quant::{Dtype, QuantAxis, QuantTensor};
pub use read::{parse, Entries, ModelFile};
pub use tensors::{
    allowed_tensor, expected_tensors, optional_shape, quant_axis, required_tensor, TensorSpec,
    ADAM_M_PREFIX, ADAM_V_PREFIX,
};
#[cfg(feature = "alloc")]
pub use write::FileBuilder;

/// The first 8 bytes of every model file.
pub const MAGIC: [u8; 8] = *b"AWGIM\0MF";
/// The newest format version this crate reads and writes: 4, int8 tensors in row pairs
/// ([`PAIR_VERSION`]). A file is written with the lowest version that holds it: version 1 for
/// f32 tensors and the paper's classifier (byte for byte the files before version 2), version
/// 2 for f32 tensors and another classifier, version 4 when any tensor is int8. Every version
/// reads, except the int8 tensors of version 3 ([`FormatError::Int8LayoutRetired`]).
pub const VERSION: u16 = PAIR_VERSION;
/// The version of files with the paper's classifier (no classifier field in the header).
pub const PAPER_VERSION: u16 = 1;
/// The version whose header records the classifier variant ([`ModelConfig::classifier`]),
/// every tensor f32.
pub const CLASSIFIER_VERSION: u16 = 2;
/// The first version whose table records each tensor's dtype and int8 axis: the header
/// records the classifier, and every table entry a dtype and an axis code after its offset
/// (FORMAT.md). Version 3 itself stored int8 tensors row by row, a layout this crate no
/// longer reads ([`FormatError::Int8LayoutRetired`]); its files without int8 tensors read.
pub const QUANT_VERSION: u16 = 3;
/// The version of files with int8 tensors: the table of [`QUANT_VERSION`], int8 tensors
/// stored in row pairs ([`quant`]: two rows' int8 values for one position in one i16).
pub const PAIR_VERSION: u16 = 4;
/// Bytes before the header: magic, version, reserved, header length, payload length.
pub const PREFIX_LEN: usize = 20;
/// Bytes of the CRC-32 trailer.
pub const TRAILER_LEN: usize = 4;
/// Alignment of the payload start and of every tensor, in bytes.
pub const ALIGNMENT: usize = 64;

/// The file's CRC-32 with the `crc` crate's default 1 KiB table (one lookup per byte). The
/// 16 KiB slice-by-16 table (`crc::Table<16>`) was measured on the Cortex-M4F firmware (QEMU,
/// instructions): loading the 3.15 MB paper file takes 15.2 M instead of 17.0 M instructions
/// (-10%), the 150 KB edge file 0.95 M instead of 1.04 M, for 15.6 KB more flash; on Thumb-2
/// the sixteen table bases do not fit in registers, so it saves little. Not worth the flash.
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// File offset of the payload for a header of `header_len` bytes.
fn payload_start(header_len: u64) -> u64 {
    (PREFIX_LEN as u64 + header_len).div_ceil(ALIGNMENT as u64) * ALIGNMENT as u64
}
