//! Every way reading, checking or writing a model file can fail.

use crate::header::{
    ConfigError, Shape, TensorName, MAX_NAME_LEN, MAX_TENSORS, MAX_TEXT_LEN, MAX_TRAINER_OPTIONS,
};
use crate::quant::{Dtype, QuantAxis};

/// A model file could not be read, checked, accessed or written.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file is shorter than its fixed prefix or than the lengths it declares.
    #[error("model file truncated: needs {needed} bytes, has {found}")]
    Truncated {
        /// Bytes the file needs.
        needed: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The file is longer than the lengths it declares.
    #[error("model file has {found} bytes but its lengths account for {expected}")]
    TrailingBytes {
        /// Bytes the file should have.
        expected: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The file does not start with `AWGIM\0MF`.
    #[error("not an AWGIM model file (bad magic)")]
    BadMagic,
    /// The format version is not one this reader understands.
    #[error("model file format version {found} is not supported (this reader: 1 to {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version this reader supports.
        supported: u16,
    },
    /// The reserved prefix field is not zero.
    #[error("reserved field is {value:#06x}, must be 0")]
    NonzeroReserved {
        /// Value found.
        value: u16,
    },
    /// The declared payload length is not a multiple of 4.
    #[error("payload length {length} is not a multiple of 4")]
    PayloadLengthNotMultipleOf4 {
        /// Declared length.
        length: u32,
    },
    /// The CRC-32 trailer does not match the bytes before it.
    #[error("checksum mismatch: stored CRC-32 {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A padding byte (after the header or between tensors) is not zero.
    #[error("padding byte at file offset {offset} is not zero")]
    NonzeroPadding {
        /// Offset of the byte from the start of the file.
        offset: u64,
    },
    /// The header is not a valid postcard encoding of a [`crate::Header`].
    #[error("malformed header: {0}")]
    MalformedHeader(postcard::Error),
    /// The header decodes but does not fill its declared length.
    #[error("header declares {declared} bytes but its encoding uses {used}")]
    HeaderLengthMismatch {
        /// Declared length.
        declared: u32,
        /// Bytes the header actually used.
        used: u32,
    },
    /// The configuration is invalid.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(ConfigError),
    /// An inference file carries a training state.
    #[error("an inference file must not carry a training state")]
    TrainingStateInInferenceFile,
    /// A tensor extends past the end of the payload.
    #[error("tensor `{name}` ends at payload byte {end}, past the payload length {payload}")]
    TensorOutOfBounds {
        /// Tensor name.
        name: TensorName,
        /// End of the tensor in payload bytes.
        end: u64,
        /// Payload length.
        payload: u64,
    },
    /// A tensor's offset is not a multiple of 64.
    #[error("tensor `{name}` starts at payload offset {offset}, not a multiple of 64")]
    MisalignedTensor {
        /// Tensor name.
        name: TensorName,
        /// Its offset.
        offset: u32,
    },
    /// Two tensors share payload bytes.
    #[error("tensors `{first}` and `{second}` overlap")]
    OverlappingTensors {
        /// The tensor that starts first.
        first: TensorName,
        /// The tensor that starts inside it.
        second: TensorName,
    },
    /// A table entry comes before the previous one in canonical order (see
    /// [`crate::expected_tensors`]), or starts before it in the payload.
    #[error(
        "tensor `{name}` follows `{previous}` in the table, out of canonical order \
        or at a lower payload offset"
    )]
    TensorOutOfOrder {
        /// The entry before it in the table.
        previous: TensorName,
        /// The entry out of order.
        name: TensorName,
    },
    /// The tensor table has more than [`crate::MAX_TENSORS`] entries.
    #[error("tensor table has {count} entries, more than the format's {MAX_TENSORS}")]
    TooManyTensors {
        /// Entries the table declares.
        count: u64,
    },
    /// The training state's trainer options exceed [`crate::MAX_TRAINER_OPTIONS`] bytes.
    #[error(
        "trainer options are {length} bytes, more than the format's \
        {MAX_TRAINER_OPTIONS}"
    )]
    TrainerOptionsTooLong {
        /// Their length in bytes.
        length: u64,
    },
    /// A provenance text exceeds [`crate::MAX_TEXT_LEN`] bytes.
    #[error("provenance `{field}` is {length} bytes, more than the format's {MAX_TEXT_LEN}")]
    TextTooLong {
        /// The provenance field.
        field: &'static str,
        /// Its length in bytes.
        length: u64,
    },
    /// Two table entries have the same name.
    #[error("tensor `{name}` appears twice")]
    DuplicateTensor {
        /// The repeated name.
        name: TensorName,
    },
    /// A tensor the configuration and kind require is absent (or a requested one does not exist).
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// Its name.
        name: TensorName,
    },
    /// A tensor that does not belong in a file of this configuration and kind.
    #[error("tensor `{name}` does not belong in a file of this configuration and kind")]
    UnexpectedTensor {
        /// Its name.
        name: TensorName,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("tensor `{name}` has shape {found:?}, the configuration implies {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: TensorName,
        /// Shape the configuration implies.
        expected: Shape,
        /// Shape in the file.
        found: Shape,
    },
    /// A tensor cannot be borrowed as `&[f32]` in place: the buffer is not 4-byte aligned or
    /// the target is big-endian. Copy it instead.
    #[error(
        "tensor `{name}` cannot be borrowed in place (buffer not 4-byte aligned or \
        big-endian target); copy it instead"
    )]
    NotZeroCopy {
        /// Tensor name.
        name: TensorName,
    },
    /// A destination buffer or source slice has the wrong number of elements.
    #[error("tensor `{name}` has {expected} elements, the buffer given has {found}")]
    LengthMismatch {
        /// Tensor name.
        name: TensorName,
        /// Elements the tensor has.
        expected: u64,
        /// Elements given.
        found: u64,
    },
    /// The file would exceed the format's limits (lengths are `u32`, the table has at most
    /// [`crate::MAX_TENSORS`] rows).
    #[error("model file would exceed the format's size limits")]
    TooLarge,
    /// The header could not be encoded.
    #[error("cannot encode header: {0}")]
    HeaderEncoding(postcard::Error),
    /// A tensor is not of the element type the accessor reads ([`crate::ModelFile::tensor`]
    /// on an int8 tensor, [`crate::ModelFile::tensor_i8`] on an f32 one).
    #[error("tensor `{name}` is {found:?}, the accessor reads {expected:?}")]
    WrongDtype {
        /// Tensor name.
        name: TensorName,
        /// The element type the accessor reads.
        expected: Dtype,
        /// The tensor's element type in the file.
        found: Dtype,
    },
    /// A version-3 or -4 table entry has a dtype code this reader does not know (0 = f32, 1 = i8).
    #[error("tensor `{name}` has unknown dtype code {code}")]
    UnknownDtype {
        /// Tensor name.
        name: TensorName,
        /// The code found.
        code: u8,
    },
    /// A version-3 or -4 table entry has an axis code that is unknown or wrong for its dtype (an
    /// f32 tensor has 0, an int8 tensor 1 = [`QuantAxis::Out`] or 2 = [`QuantAxis::In`]).
    #[error("tensor `{name}` has axis code {code}, not valid for its dtype")]
    UnknownQuantAxis {
        /// Tensor name.
        name: TensorName,
        /// The code found.
        code: u8,
    },
    /// An int8 tensor that [`crate::tensors::quant_axis`] does not quantise along this axis
    /// (layer norms, scales and the tensors only training needs stay f32).
    #[error("tensor `{name}` cannot be int8 along {axis:?} (see formats::tensors::quant_axis)")]
    QuantNotAllowed {
        /// Tensor name.
        name: TensorName,
        /// The axis the file or caller gave.
        axis: QuantAxis,
    },
    /// An int8 matrix's pair stride is not its depth rounded up to even
    /// ([`crate::quant::pair_stride`]).
    #[error("int8 tensor `{name}` has pair stride {found}, expected {expected}")]
    QuantStride {
        /// Tensor name.
        name: TensorName,
        /// `depth` rounded up to even.
        expected: u64,
        /// Stride given.
        found: u64,
    },
    /// An int8 matrix has a number of stored values other than `pairs(rows) * pair_stride`
    /// ([`crate::quant::QuantTensor::values`]).
    #[error(
        "int8 tensor `{name}` has {found} values, expected pairs(rows) * pair_stride = {expected}"
    )]
    QuantValuesLength {
        /// Tensor name.
        name: TensorName,
        /// `pairs(rows) * pair_stride`.
        expected: u64,
        /// Values given.
        found: u64,
    },
    /// An int8 matrix has a number of scales other than its row count.
    #[error("int8 tensor `{name}` has {found} scales for {expected} rows")]
    ScaleCount {
        /// Tensor name.
        name: TensorName,
        /// Its rows.
        expected: u64,
        /// Scales given.
        found: u64,
    },
    /// An int8 row's scale is not positive (zero included) or so large (or infinite, or NaN)
    /// that `127 * scale` is not finite.
    #[error(
        "int8 tensor `{name}` row {row} has scale {value}: not positive, or 127 x it is not finite"
    )]
    InvalidScale {
        /// Tensor name.
        name: TensorName,
        /// The row.
        row: u64,
        /// Its scale.
        value: f32,
    },
    /// A stored value of an int8 matrix does not hold two int8 values in `[-127, 127]` (its
    /// low byte is -128, or its high part `(v - low) / 256` is outside `[-127, 127]`), or an
    /// int8 value given to [`crate::quant::pack_pairs`] is -128. Values lie in `[-127, 127]`,
    /// a bound the engine's kernels rely on.
    #[error(
        "int8 tensor `{name}` value {index} holds an int8 value outside [-127, 127] (-128 \
        or more than a byte)"
    )]
    QuantValueOutOfRange {
        /// Tensor name.
        name: TensorName,
        /// Index into its stored values (into the int8 rows given to `pack_pairs`).
        index: u64,
    },
    /// An int8 matrix's padding is not zero: the pad row of an odd row count (reported as row
    /// `rows`), or the padding column of an odd depth (reported as the row whose half of the
    /// value is not zero).
    #[error("int8 tensor `{name}` row {row} has nonzero padding")]
    NonzeroQuantPadding {
        /// Tensor name.
        name: TensorName,
        /// The row (`rows` for the pad row).
        row: u64,
    },
    /// A version-3 file holds an int8 tensor: version 3 stored int8 tensors row by row, and
    /// this reader reads only the row-pair layout of version 4 ([`crate::quant`]).
    #[error(
        "int8 tensor `{name}`: int8 tensors of version-3 files are stored row by row, which \
        this version no longer reads; re-export the f32 model with `trainer export --int8`"
    )]
    Int8LayoutRetired {
        /// The first int8 tensor of the table.
        name: TensorName,
    },
    /// A weight given to [`crate::quant::quantize`] is NaN or infinite.
    #[error("weight {index} is not finite; it cannot be quantised")]
    NonFiniteWeight {
        /// Its index in the row-major matrix.
        index: u64,
    },
}

/// A tensor name for an error message, cut to [`MAX_NAME_LEN`] bytes at a character boundary.
pub(crate) fn error_name(name: &str) -> TensorName {
    let mut end = name.len().min(MAX_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = TensorName::new();
    // Cannot fail: at most MAX_NAME_LEN bytes.
    let _ = out.push_str(&name[..end]);
    out
}

impl From<ConfigError> for FormatError {
    fn from(e: ConfigError) -> Self {
        Self::InvalidConfig(e)
    }
}
