//! The trainer's error type: every failure names the file or setting and the problem.

use std::path::PathBuf;

use autodiff::AutodiffError;

use crate::awgim::BuildError;
use crate::data::DataError;

/// Why a trainer command failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// Reading or checking the data set failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Compiling or running a graph failed.
    #[error("graph: {0}")]
    Graph(#[from] AutodiffError),
    /// The model's graph could not be built from its configuration and parameters.
    #[error("model: {0}")]
    Model(#[from] BuildError),
    /// A model or checkpoint file could not be read or is not valid.
    #[error("{}: {source}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: formats::FormatError,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A checkpoint or model file does not fit what it is used for.
    #[error("{}: {reason}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A `.npy` file is missing, malformed or of the wrong shape.
    #[error("{}: {reason}", path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine refused a model or an input.
    #[error("{}: engine: {reason}", path.display())]
    Engine {
        /// The model file.
        path: PathBuf,
        /// The engine's error.
        reason: String,
    },
    /// `trainer export --int8` was given a file whose tensors are int8 already.
    #[error("{}: tensor `{tensor}` is int8 already: export --int8 needs an f32 model", path.display())]
    AlreadyInt8 {
        /// The model file.
        path: PathBuf,
        /// Its first int8 tensor.
        tensor: String,
    },
    /// A tensor could not be quantised (a weight that is not finite).
    #[error("{}: cannot quantise `{tensor}`: {source}", path.display())]
    Quantize {
        /// The model file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Why (boxed: keeps every trainer result small).
        source: Box<formats::FormatError>,
    },
    /// Options that cannot work together.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// Writing the chart of the training curves failed.
    #[error("{}: chart: {reason}", path.display())]
    Chart {
        /// The image file.
        path: PathBuf,
        /// The plotting library's error.
        reason: String,
    },
}

impl TrainerError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainerError::Io {
            path: path.into(),
            source,
        }
    }
}
