//! What can go wrong when loading a model or classifying.

use formats::{FormatError, Sizes};

/// Which input held a non-finite value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The support set given to `prepare`.
    Support,
    /// A query.
    Query,
}

impl core::fmt::Display for Input {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Support => "support",
            Self::Query => "query",
        })
    }
}

/// Where a non-finite value was computed: the parts of AWGIM.md's "Forward pass for one task"
/// that check their output. Shown as the block's name (`sa_ap`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The attentive path's self-attention over the support (`sa_ap`, step 1).
    SaAp,
    /// The cross-attention from a query to the support (`ca_ap`, step 1).
    CaAp,
    /// The contextual path's self-attention over the support (`sa_cp`, step 2).
    SaCp,
    /// The prepared support state: the `ca_ap` keys and class values, and the class half of
    /// the generator's first layer (end of `prepare`).
    Support,
    /// A query's logits, or the generated weights `W[i]` (steps 4 to 6).
    Logits,
}

impl core::fmt::Display for Stage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::SaAp => "sa_ap",
            Self::CaAp => "ca_ap",
            Self::SaCp => "sa_cp",
            Self::Support => "support",
            Self::Logits => "logits",
        })
    }
}

/// An engine error. No operation panics on bad input; each failure has its own variant.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The model file is invalid, or its weights cannot be borrowed in place (the buffer is not
    /// 4-byte aligned or the target is big-endian: store the file in [`formats::Aligned`]).
    #[error("model file: {0}")]
    Format(FormatError),
    /// A tensor's element type is not one this engine was built for: an int8 tensor and the
    /// engine built without its `int8` feature.
    #[error("tensor `{name}` is {found:?}; this engine was built for f32 only (enable the engine's `int8` feature)")]
    Dtype {
        /// Tensor name.
        name: formats::TensorName,
        /// Its element type in the file.
        found: formats::Dtype,
    },
    /// The file's configuration differs from the sizes this engine type was compiled for.
    #[error("model configuration `{field}` is {found}, this engine is compiled for {expected}")]
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
    #[error(
        "model uses the task-wide (transductive) layer norm; the engine supports per-row only"
    )]
    TaskWideLayerNorm,
    /// The model uses the MLP encoder ablation, which this engine does not implement.
    #[error("model uses the MLP encoder ablation; the engine supports the attention encoder only")]
    MlpEncoder,
    /// The model's classifier is not the paper's (centred features, prototype weights or
    /// cosine logits) and the model is a [`crate::Model`], whose type has their code compiled
    /// out: a [`crate::VariantModel`] or a [`crate::DynModel`] runs every classifier.
    #[error("model uses the classifier {0:?}; engine::Model runs the paper's classifier only (use VariantModel or DynModel)")]
    Classifier(formats::Classifier),
    /// An input feature is NaN or infinite.
    #[error("{input} feature [{row}][{column}] is not finite")]
    NonFiniteInput {
        /// Support set or query.
        input: Input,
        /// Row of the support set (class-major), or of the query batch.
        row: usize,
        /// Feature index.
        column: usize,
    },
    /// A value computed from finite inputs overflowed (extreme weights or inputs).
    #[error("non-finite value computed in `{stage}`")]
    NonFinite {
        /// Where.
        stage: Stage,
    },
    /// The file's sizes cannot run: a zero size, heads that do not divide `d`, or buffers too
    /// large to address.
    #[error("model sizes {0:?} cannot run: a size is zero, the heads do not divide d, or it is too large")]
    Sizes(Sizes),
    /// The workspace given to `prepare` is too short (lengths in f32 values).
    #[error("workspace holds {found} values, {needed} are needed")]
    Workspace {
        /// Values needed.
        needed: usize,
        /// Values given.
        found: usize,
    },
    /// An input of run-time length has the wrong number of values.
    #[error("{input} holds {found} values, {expected} expected")]
    InputLength {
        /// Support set or query.
        input: Input,
        /// Values expected.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// A support row was enrolled with a class label past the last class.
    #[error("class {class} enrolled, the model has {ways} classes")]
    Class {
        /// The label given.
        class: usize,
        /// The model's classes, `N`.
        ways: usize,
    },
    /// A support row was enrolled for a class that already has its `K` shots.
    #[error("class {class} already has its {shots} shots")]
    ClassFull {
        /// The class.
        class: usize,
        /// The model's shots, `K`.
        shots: usize,
    },
    /// `prepare` was called on an enrollment in which a class lacks shots.
    #[error("class {class} has {shots} of its {needed} shots")]
    Incomplete {
        /// The first class that lacks shots.
        class: usize,
        /// Its shots.
        shots: usize,
        /// The model's shots, `K`.
        needed: usize,
    },
    /// `classify_batch` was given a different number of queries and outputs.
    #[error("{queries} queries but {outputs} output slots")]
    BatchLength {
        /// Queries given.
        queries: usize,
        /// Output slots given.
        outputs: usize,
    },
}

impl From<FormatError> for EngineError {
    fn from(e: FormatError) -> Self {
        Self::Format(e)
    }
}
