//! What can go wrong when loading a model or classifying.

use core::fmt;

use formats::FormatError;

/// Which input held a non-finite value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The support set given to `prepare`.
    Support,
    /// A query.
    Query,
}

/// An engine error. No operation panics on bad input; each failure has its own variant.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineError {
    /// The model file is invalid, or its weights cannot be borrowed in place (the buffer is not
    /// 4-byte aligned or the target is big-endian: store the file in [`formats::Aligned`]).
    Format(FormatError),
    /// The file's configuration differs from the sizes this engine type was compiled for.
    ConfigMismatch {
        /// Configuration field (as in [`formats::ModelConfig`]).
        field: &'static str,
        /// Size compiled into the engine.
        expected: u32,
        /// Size in the file.
        found: u32,
    },
    /// The model uses the reference's task-wide layer norm, which makes a query's output depend
    /// on the other queries of its task; this engine classifies queries one at a time.
    TaskWideLayerNorm,
    /// The model uses the MLP encoder ablation, which this engine does not implement.
    MlpEncoder,
    /// An input feature is NaN or infinite.
    NonFiniteInput {
        /// Support set or query.
        input: Input,
        /// Row of the support set (class-major), or of the query batch.
        row: usize,
        /// Feature index.
        column: usize,
    },
    /// A value computed from finite inputs overflowed (extreme weights or inputs).
    NonFinite {
        /// Where: `sa_ap`, `ca_ap`, `sa_cp`, `support` (prepared state) or `logits`.
        stage: &'static str,
    },
    /// `classify_batch` was given a different number of queries and outputs.
    BatchLength {
        /// Queries given.
        queries: usize,
        /// Output slots given.
        outputs: usize,
    },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Format(e) => write!(f, "model file: {e}"),
            Self::ConfigMismatch {
                field,
                expected,
                found,
            } => write!(
                f,
                "model configuration `{field}` is {found}, this engine is compiled for {expected}"
            ),
            Self::TaskWideLayerNorm => write!(
                f,
                "model uses the task-wide (transductive) layer norm; the engine supports per-row only"
            ),
            Self::MlpEncoder => write!(
                f,
                "model uses the MLP encoder ablation; the engine supports the attention encoder only"
            ),
            Self::NonFiniteInput { input, row, column } => write!(
                f,
                "{} feature [{row}][{column}] is not finite",
                match input {
                    Input::Support => "support",
                    Input::Query => "query",
                }
            ),
            Self::NonFinite { stage } => write!(f, "non-finite value computed in `{stage}`"),
            Self::BatchLength { queries, outputs } => write!(
                f,
                "{queries} queries but {outputs} output slots"
            ),
        }
    }
}

impl From<FormatError> for EngineError {
    fn from(e: FormatError) -> Self {
        Self::Format(e)
    }
}
