//! Every way reading, checking or writing a model file can fail.

use core::fmt;

use crate::header::{
    ConfigError, Shape, TensorName, MAX_NAME_LEN, MAX_TENSORS, MAX_TEXT_LEN, MAX_TRAINER_OPTIONS,
};

/// A model file could not be read, checked, accessed or written.
#[derive(Clone, Debug, PartialEq)]
pub enum FormatError {
    /// The file is shorter than its fixed prefix or than the lengths it declares.
    Truncated {
        /// Bytes the file needs.
        needed: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The file is longer than the lengths it declares.
    TrailingBytes {
        /// Bytes the file should have.
        expected: u64,
        /// Bytes it has.
        found: u64,
    },
    /// The file does not start with `AWGIM\0MF`.
    BadMagic,
    /// The format version is not one this reader understands.
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
        /// Version this reader supports.
        supported: u16,
    },
    /// The reserved prefix field is not zero.
    NonzeroReserved {
        /// Value found.
        value: u16,
    },
    /// The declared payload length is not a multiple of 4.
    PayloadLengthNotMultipleOf4 {
        /// Declared length.
        length: u32,
    },
    /// The CRC-32 trailer does not match the bytes before it.
    ChecksumMismatch {
        /// CRC stored in the file.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A padding byte (after the header or between tensors) is not zero.
    NonzeroPadding {
        /// Offset of the byte from the start of the file.
        offset: u64,
    },
    /// The header is not a valid postcard encoding of a [`crate::Header`].
    MalformedHeader(postcard::Error),
    /// The header decodes but does not fill its declared length.
    HeaderLengthMismatch {
        /// Declared length.
        declared: u32,
        /// Bytes the header actually used.
        used: u32,
    },
    /// The configuration is invalid.
    InvalidConfig(ConfigError),
    /// An inference file carries a training state.
    TrainingStateInInferenceFile,
    /// A tensor extends past the end of the payload.
    TensorOutOfBounds {
        /// Tensor name.
        name: TensorName,
        /// End of the tensor in payload bytes.
        end: u64,
        /// Payload length.
        payload: u64,
    },
    /// A tensor's offset is not a multiple of 64.
    MisalignedTensor {
        /// Tensor name.
        name: TensorName,
        /// Its offset.
        offset: u32,
    },
    /// Two tensors share payload bytes.
    OverlappingTensors {
        /// The tensor that starts first.
        first: TensorName,
        /// The tensor that starts inside it.
        second: TensorName,
    },
    /// A table entry comes before the previous one in canonical order (see
    /// [`crate::expected_tensors`]), or starts before it in the payload.
    TensorOutOfOrder {
        /// The entry before it in the table.
        previous: TensorName,
        /// The entry out of order.
        name: TensorName,
    },
    /// The tensor table has more than [`crate::MAX_TENSORS`] entries.
    TooManyTensors {
        /// Entries the table declares.
        count: u64,
    },
    /// The training state's trainer options exceed [`crate::MAX_TRAINER_OPTIONS`] bytes.
    TrainerOptionsTooLong {
        /// Their length in bytes.
        length: u64,
    },
    /// A provenance text exceeds [`crate::MAX_TEXT_LEN`] bytes.
    TextTooLong {
        /// The provenance field.
        field: &'static str,
        /// Its length in bytes.
        length: u64,
    },
    /// Two table entries have the same name.
    DuplicateTensor {
        /// The repeated name.
        name: TensorName,
    },
    /// A tensor the configuration and kind require is absent (or a requested one does not exist).
    MissingTensor {
        /// Its name.
        name: TensorName,
    },
    /// A tensor that does not belong in a file of this configuration and kind.
    UnexpectedTensor {
        /// Its name.
        name: TensorName,
    },
    /// A tensor's shape disagrees with the configuration.
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
    NotZeroCopy {
        /// Tensor name.
        name: TensorName,
    },
    /// A destination buffer or source slice has the wrong number of elements.
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
    TooLarge,
    /// The header could not be encoded.
    HeaderEncoding(postcard::Error),
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

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, found } => {
                write!(f, "model file truncated: needs {needed} bytes, has {found}")
            }
            Self::TrailingBytes { expected, found } => write!(
                f,
                "model file has {found} bytes but its lengths account for {expected}"
            ),
            Self::BadMagic => write!(f, "not an AWGIM model file (bad magic)"),
            Self::UnsupportedVersion { found, supported } => write!(
                f,
                "model file format version {found} is not supported (this reader: {supported})"
            ),
            Self::NonzeroReserved { value } => {
                write!(f, "reserved field is {value:#06x}, must be 0")
            }
            Self::PayloadLengthNotMultipleOf4 { length } => {
                write!(f, "payload length {length} is not a multiple of 4")
            }
            Self::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch: stored CRC-32 {stored:#010x}, computed {computed:#010x}"
            ),
            Self::NonzeroPadding { offset } => {
                write!(f, "padding byte at file offset {offset} is not zero")
            }
            Self::MalformedHeader(e) => write!(f, "malformed header: {e}"),
            Self::HeaderLengthMismatch { declared, used } => write!(
                f,
                "header declares {declared} bytes but its encoding uses {used}"
            ),
            Self::InvalidConfig(e) => write!(f, "invalid model configuration: {e}"),
            Self::TrainingStateInInferenceFile => {
                write!(f, "an inference file must not carry a training state")
            }
            Self::TensorOutOfBounds { name, end, payload } => write!(
                f,
                "tensor `{name}` ends at payload byte {end}, past the payload length {payload}"
            ),
            Self::MisalignedTensor { name, offset } => write!(
                f,
                "tensor `{name}` starts at payload offset {offset}, not a multiple of 64"
            ),
            Self::OverlappingTensors { first, second } => {
                write!(f, "tensors `{first}` and `{second}` overlap")
            }
            Self::TensorOutOfOrder { previous, name } => write!(
                f,
                "tensor `{name}` follows `{previous}` in the table, out of canonical order \
                 or at a lower payload offset"
            ),
            Self::TooManyTensors { count } => write!(
                f,
                "tensor table has {count} entries, more than the format's {MAX_TENSORS}"
            ),
            Self::TrainerOptionsTooLong { length } => write!(
                f,
                "trainer options are {length} bytes, more than the format's \
                 {MAX_TRAINER_OPTIONS}"
            ),
            Self::TextTooLong { field, length } => write!(
                f,
                "provenance `{field}` is {length} bytes, more than the format's {MAX_TEXT_LEN}"
            ),
            Self::DuplicateTensor { name } => write!(f, "tensor `{name}` appears twice"),
            Self::MissingTensor { name } => write!(f, "tensor `{name}` is missing"),
            Self::UnexpectedTensor { name } => write!(
                f,
                "tensor `{name}` does not belong in a file of this configuration and kind"
            ),
            Self::ShapeMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor `{name}` has shape {:?}, the configuration implies {:?}",
                found.as_slice(),
                expected.as_slice()
            ),
            Self::NotZeroCopy { name } => write!(
                f,
                "tensor `{name}` cannot be borrowed in place (buffer not 4-byte aligned or \
                 big-endian target); copy it instead"
            ),
            Self::LengthMismatch {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor `{name}` has {expected} elements, the buffer given has {found}"
            ),
            Self::TooLarge => write!(f, "model file would exceed the format's size limits"),
            Self::HeaderEncoding(e) => write!(f, "cannot encode header: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {}

impl From<ConfigError> for FormatError {
    fn from(e: ConfigError) -> Self {
        Self::InvalidConfig(e)
    }
}
