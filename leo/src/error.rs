//! Why a pickle could not be read: a failure of the pickle machine, or a
//! file that is not a LEO or AWGIM embeddings pickle. The messages name the
//! byte offset, row or array at fault; the caller adds the file's path.

/// Why [`read_classes`](crate::read_classes) refused a pickle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LeoError {
    /// The pickle machine failed (truncated file, unsupported opcode, ...).
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// The pickle holds something other than a LEO dict or an AWGIM array.
    #[error("top-level object is {found}, expected a dict with \"keys\" and \"embeddings\" (LEO) or a 3-D ndarray (AWGIM)")]
    NotEmbeddings {
        /// What the pickle holds instead.
        found: String,
    },
    /// A LEO dict lacks a required entry.
    #[error("missing {key:?} key")]
    MissingKey {
        /// The missing dict key.
        key: &'static str,
    },
    /// "keys" and "embeddings" disagree on the number of examples.
    #[error("keys/embeddings length mismatch: {keys} keys but {rows} embedding rows")]
    LengthMismatch {
        /// Number of keys.
        keys: usize,
        /// Number of embedding rows.
        rows: usize,
    },
    /// A key is not of the form `"<x>-<class>-<image file>"`.
    #[error("bad key format at row {row}: {key:?} ({problem})")]
    BadKey {
        /// Row of the key in the file.
        row: usize,
        /// The key (lossily decoded).
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The class field of a key disagrees with its image file name.
    #[error("key at row {row} {key:?}: class {class:?} but the image file does not start with \"{class}_\"")]
    ClassMismatch {
        /// Row of the key in the file.
        row: usize,
        /// The key.
        key: String,
        /// The class field of the key.
        class: String,
    },
    /// Two keys name the same image file.
    #[error("image file {image:?} appears twice (rows {first} and {row})")]
    DuplicateImage {
        /// The repeated image file name.
        image: String,
        /// First row naming it.
        first: usize,
        /// Second row naming it.
        row: usize,
    },
    /// An array has a shape the layout does not allow.
    #[error("{array}: shape {shape:?}, expected {expected}")]
    BadShape {
        /// Which array ("embeddings", "keys", "top-level array").
        array: &'static str,
        /// Its shape.
        shape: Vec<usize>,
        /// What the layout requires.
        expected: &'static str,
    },
    /// An array has an element type the layout does not allow.
    #[error("{array}: unsupported dtype {dtype}, expected {expected}")]
    UnsupportedDtype {
        /// Which array.
        array: &'static str,
        /// The dtype found, as numpy writes it (`<i4`).
        dtype: String,
        /// What the layout allows.
        expected: &'static str,
    },
    /// An array's data is missing or shorter than its shape.
    #[error("{array}: array data missing or shorter than its shape")]
    MissingData {
        /// Which array.
        array: &'static str,
    },
}

/// A failure of the pickle machine, with the byte offset of the opcode at
/// fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The file ends inside an opcode or before STOP.
    #[error("truncated at byte {end}: opcode at byte {offset} is incomplete or STOP is missing")]
    Truncated {
        /// Start of the incomplete opcode.
        offset: usize,
        /// Length of the file.
        end: usize,
    },
    /// An opcode this reader does not implement (or no opcode at all).
    #[error("unsupported opcode 0x{opcode:02x} ({name}) at byte {offset}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its name in Python's pickletools, or "unknown".
        name: &'static str,
        /// Its position.
        offset: usize,
    },
    /// A PROTO opcode announcing a protocol newer than 5.
    #[error("unsupported pickle protocol {protocol} at byte {offset}")]
    UnsupportedProtocol {
        /// The protocol number.
        protocol: u8,
        /// Position of the PROTO opcode.
        offset: usize,
    },
    /// A call of a Python callable other than the numpy/codecs ones a
    /// numpy-array pickle needs.
    #[error("unsupported callable {name} at byte {offset}")]
    UnsupportedCallable {
        /// "module.name" of the callable.
        name: String,
        /// Position of the opcode that called or built it.
        offset: usize,
    },
    /// A structural problem (stack underflow, wrong argument types, bad
    /// literal, array data of the wrong size, ...).
    #[error("malformed at byte {offset}: {problem}")]
    Malformed {
        /// Position of the opcode at fault.
        offset: usize,
        /// What is wrong.
        problem: String,
    },
}
