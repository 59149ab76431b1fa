//! Errors of the data module: every message names the file (or the data set)
//! and the problem, so a bad input is refused before any training starts.

use std::path::PathBuf;

/// Why a data set could not be read, or why it cannot serve the requested
/// episodes.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or directory does not exist.
    #[error("{}: not found", path.display())]
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// The operating system refused to read the file.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A `{split}_embeddings.pkl` file is not a LEO or AWGIM pickle the
    /// `leo` crate can read (truncated, unsupported opcode, bad key, ...).
    #[error("{}: {source}", path.display())]
    Leo {
        /// The pickle file.
        path: PathBuf,
        /// What is wrong, with the byte offset, row or array at fault.
        #[source]
        source: leo::LeoError,
    },
    /// An array has a shape the layout does not allow.
    #[error("{}: {array}: shape {shape:?}, expected {expected}", path.display())]
    BadShape {
        /// The file.
        path: PathBuf,
        /// Which array.
        array: String,
        /// Its shape.
        shape: Vec<usize>,
        /// What the layout requires.
        expected: &'static str,
    },
    /// An array has an element type the layout does not allow.
    #[error("{}: {array}: unsupported dtype {dtype}, expected {expected}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// Which array.
        array: String,
        /// The dtype found.
        dtype: String,
        /// What the layout allows.
        expected: &'static str,
    },
    /// A file's contents are malformed (`.npy` header, array data shorter
    /// than its shape, ...).
    #[error("{}: {problem}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A `.npz` archive lacks a required array.
    #[error("{}: missing array {name:?}", path.display())]
    MissingArray {
        /// The archive.
        path: PathBuf,
        /// The missing array name.
        name: String,
    },
    /// The path matches none of the supported layouts.
    #[error("{}: unknown data layout: {hint}", path.display())]
    UnknownLayout {
        /// The path given.
        path: PathBuf,
        /// What was looked for.
        hint: String,
    },
    /// A split's contents are inconsistent (counts, names, sizes).
    #[error("{origin}: split {split:?}: {problem}")]
    InvalidSplit {
        /// File or data set the split came from.
        origin: String,
        /// The split.
        split: String,
        /// What is wrong.
        problem: String,
    },
    /// An embedding value is NaN or infinite.
    #[error("{origin}: split {split:?}: non-finite value in class {class:?}, example {example}")]
    NonFinite {
        /// File or data set the split came from.
        origin: String,
        /// The split.
        split: String,
        /// The class holding the value.
        class: String,
        /// Example index within the class.
        example: usize,
    },
    /// Two splits have different feature dimensions.
    #[error(
        "{origin}: split {split:?} has feature dimension {dim} but split {other:?} has {other_dim}"
    )]
    SplitDimMismatch {
        /// File or data set of the disagreeing split.
        origin: String,
        /// The disagreeing split.
        split: String,
        /// Its dimension.
        dim: usize,
        /// The split it was compared with.
        other: String,
        /// That split's dimension.
        other_dim: usize,
    },
    /// The data set's feature dimension is not what the caller requires.
    #[error("{origin}: feature dimension is {dim}, but {required} is required")]
    WrongDim {
        /// The data set.
        origin: String,
        /// Its dimension.
        dim: usize,
        /// The required dimension.
        required: usize,
    },
    /// One class name appears in two splits (meta-train, meta-val and
    /// meta-test classes must be disjoint).
    #[error("{origin}: class {class:?} appears in both split {first:?} and split {second:?}")]
    SharedClass {
        /// The data set.
        origin: String,
        /// The class.
        class: String,
        /// First split naming it.
        first: String,
        /// Second split naming it.
        second: String,
    },
    /// A split has fewer classes than the episodes' N.
    #[error("{origin}: split {split:?} has {classes} classes, fewer than the {n_way} needed for {n_way}-way episodes")]
    TooFewClasses {
        /// File or data set of the split.
        origin: String,
        /// The split.
        split: String,
        /// Its number of classes.
        classes: usize,
        /// The requested N.
        n_way: usize,
    },
    /// A class has fewer examples than K + Q.
    #[error(
        "{origin}: split {split:?}: class {class:?} has {have} examples, fewer than K + Q = {need}"
    )]
    TooFewExamples {
        /// File or data set of the split.
        origin: String,
        /// The split.
        split: String,
        /// The class.
        class: String,
        /// Its number of examples.
        have: usize,
        /// K + Q.
        need: usize,
    },
    /// Episode or synthetic-data settings that cannot work (zero sizes, ...).
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
}
