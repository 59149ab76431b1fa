//! The postcard-encoded header: kind, configuration, provenance, training state and the
//! tensor table. Every type here uses fixed-capacity `heapless` containers so a header can be
//! decoded without an allocator.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::error::FormatError;
use crate::quant::{pair_values, Dtype, QuantAxis};

/// Most tensors one file may hold: 39 parameters of a training file, plus an Adam first and
/// second moment for each (117), rounded up.
pub const MAX_TENSORS: usize = 128;
/// Longest tensor name in bytes (the longest name of the spec, `adam.m.sa_ap.ln1.gain`, has 21).
pub const MAX_NAME_LEN: usize = 32;
/// Most dimensions of one tensor.
pub const MAX_DIMS: usize = 4;
/// Longest provenance text field (data set name) in bytes.
pub const MAX_TEXT_LEN: usize = 64;
/// Longest opaque trainer option blob in bytes.
pub const MAX_TRAINER_OPTIONS: usize = 1024;

/// A tensor name.
pub type TensorName = String<MAX_NAME_LEN>;
/// A tensor shape (row-major; `[in, out]` for dense layers).
pub type Shape = Vec<u32, MAX_DIMS>;
/// A short provenance text.
pub type Text = String<MAX_TEXT_LEN>;

/// What a file is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// Only what a device needs to classify.
    Inference,
    /// Every parameter, optionally with optimizer and training state to resume a run.
    Training,
}

/// Which layer normalisation the model was trained with (AWGIM.md, "One attention block").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerNormKind {
    /// Mean and variance over the `d` features of one row (the project's default).
    PerRow,
    /// The reference's quirk: mean and variance over all rows of a task and all features.
    TaskWide,
}

/// Which encoder the three blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncoderKind {
    /// Multi-head attention blocks (the paper's model).
    Attention,
    /// The MLP ablation: each block is `LN2(x + F2(relu(F1(x))))` on its query input alone.
    Mlp,
}

/// The model configuration: every size the tensors and an engine depend on.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Feature dimension `D` of the backbone features.
    pub feature_dim: u32,
    /// Latent dimension `d`.
    pub latent_dim: u32,
    /// Attention heads `h`; must divide `d`.
    pub heads: u32,
    /// Ways `N`: classes per task.
    pub ways: u32,
    /// Shots `K`: support examples per class.
    pub shots: u32,
    /// Generator hidden width `G` (`2d` in the paper).
    pub generator_hidden: u32,
    /// Layer-norm epsilon (finite and positive).
    pub ln_epsilon: f32,
    /// Layer-norm variant.
    pub layer_norm: LayerNormKind,
    /// Encoder variant.
    pub encoder: EncoderKind,
    /// How the generated weights become logits ([`Classifier::PAPER`] for the paper's
    /// model). Not part of this struct's own encoding: a version-2 header carries it after
    /// the training state, and a version-1 file is always the paper's classifier.
    #[serde(skip)]
    pub classifier: Classifier,
}

/// Beyond the paper: how the generated weights become logits. [`Classifier::PAPER`] is
/// AWGIM.md's step 6; the other variants start the weights from the class prototype, so that
/// a zero generator output is the nearest-class-mean classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Classifier {
    /// What the model does to a feature vector before anything else.
    pub features: FeatureNorm,
    /// What the generator's output is.
    pub weights: WeightsKind,
    /// How a query's logit for a class is computed from its weights.
    pub logits: LogitsKind,
}

impl Classifier {
    /// AWGIM.md's model: raw features, generated weights, dot-product logits.
    pub const PAPER: Classifier = Classifier {
        features: FeatureNorm::Raw,
        weights: WeightsKind::Generated,
        logits: LogitsKind::Dot,
    };
}

impl Default for Classifier {
    /// [`Classifier::PAPER`].
    fn default() -> Self {
        Classifier::PAPER
    }
}

/// Feature preprocessing inside the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeatureNorm {
    /// The features as given (the paper).
    Raw,
    /// `x <- (x - c) / |x - c|` with `c` the mean feature vector of the training classes
    /// (the tensor [`crate::tensors::FEATURE_CENTER`]). Every use of a feature (both paths,
    /// the prototypes and the logits) sees the normalised vector.
    CenteredL2,
}

/// What the generator's output `mu` (and, in training, its noisy samples) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightsKind {
    /// The class weights themselves, `W[i] = mu` (the paper).
    Generated,
    /// A correction to the class prototype: `W[i] = p[i] / |p[i]| + mu` with `p[i]` the mean
    /// of class `i`'s (preprocessed) support features.
    Prototype,
}

/// How the logit of class `i` is computed from its weights `W[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogitsKind {
    /// `x . W[i]` (the paper).
    Dot,
    /// `s x . W[i] / |W[i]|` with a learned scale `s` (the tensor
    /// [`crate::tensors::LOGIT_SCALE`]): the cosine between `x` and `W[i]`, scaled, when the
    /// features are normalised.
    Cosine,
}

impl ModelConfig {
    /// The paper's sizes: D = 640, d = 128, 4 heads, 5-way, G = 256, per-row layer norm with
    /// the reference epsilon 1e-12, attention encoder; `shots` is K.
    pub const fn paper(shots: u32) -> Self {
        Self::new(640, 128, 4, 5, shots, 256)
    }

    /// The edge configuration: D = 64, d = 32, 4 heads, 5-way, G = 64; `shots` is K.
    pub const fn edge(shots: u32) -> Self {
        Self::new(64, 32, 4, 5, shots, 64)
    }

    /// A configuration with the given sizes, epsilon 1e-12, per-row layer norm, the
    /// attention encoder and the paper's classifier.
    pub const fn new(
        feature_dim: u32,
        latent_dim: u32,
        heads: u32,
        ways: u32,
        shots: u32,
        generator_hidden: u32,
    ) -> Self {
        Self {
            feature_dim,
            latent_dim,
            heads,
            ways,
            shots,
            generator_hidden,
            ln_epsilon: 1e-12,
            layer_norm: LayerNormKind::PerRow,
            encoder: EncoderKind::Attention,
            classifier: Classifier::PAPER,
        }
    }

    /// The six sizes, as AWGIM.md names them. Code works with these; the field names above
    /// are the header's spelled-out names.
    pub const fn sizes(&self) -> Sizes {
        Sizes {
            D: self.feature_dim as usize,
            d: self.latent_dim as usize,
            h: self.heads as usize,
            N: self.ways as usize,
            K: self.shots as usize,
            G: self.generator_hidden as usize,
        }
    }

    /// Checks that the configuration describes a model that can exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let dims = [
            ("feature_dim", self.feature_dim),
            ("latent_dim", self.latent_dim),
            ("heads", self.heads),
            ("ways", self.ways),
            ("shots", self.shots),
            ("generator_hidden", self.generator_hidden),
        ];
        for (field, value) in dims {
            if value == 0 {
                return Err(ConfigError::ZeroDimension { field });
            }
        }
        if self.latent_dim % self.heads != 0 {
            return Err(ConfigError::HeadsDoNotDivideLatent {
                latent_dim: self.latent_dim,
                heads: self.heads,
            });
        }
        if self.latent_dim.checked_mul(2).is_none() || self.ways.checked_mul(self.shots).is_none() {
            return Err(ConfigError::TooLarge);
        }
        if !(self.ln_epsilon.is_finite() && self.ln_epsilon > 0.0) {
            return Err(ConfigError::InvalidEpsilon {
                epsilon: self.ln_epsilon,
            });
        }
        Ok(())
    }
}

/// The six sizes of AWGIM.md, spelled as AWGIM.md spells them ([`ModelConfig::sizes`]). The
/// derived sizes are `N K` (support examples) and `2d` (the feed-forward and generator-input
/// width).
// The letters are AWGIM.md's: `D` and `d` are two different sizes.
#[allow(non_snake_case)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sizes {
    /// Feature dimension of the backbone features.
    pub D: usize,
    /// Latent dimension.
    pub d: usize,
    /// Attention heads; divides `d`.
    pub h: usize,
    /// Ways: classes per task.
    pub N: usize,
    /// Shots: support examples per class.
    pub K: usize,
    /// Generator hidden width (`2d` in the paper).
    pub G: usize,
}

/// Why a [`ModelConfig`] is invalid.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A size is zero.
    #[error("configuration field `{field}` is zero")]
    ZeroDimension {
        /// The field that is zero.
        field: &'static str,
    },
    /// The head count does not divide the latent dimension.
    #[error("{heads} attention heads do not divide the latent dimension {latent_dim}")]
    HeadsDoNotDivideLatent {
        /// `d`.
        latent_dim: u32,
        /// `h`.
        heads: u32,
    },
    /// A derived size (`2d`, `N*K`) overflows `u32`.
    #[error("a derived size (2d or N*K) overflows u32")]
    TooLarge,
    /// The layer-norm epsilon is not finite or not positive.
    #[error("layer-norm epsilon {epsilon} is not finite and positive")]
    InvalidEpsilon {
        /// The epsilon found.
        epsilon: f32,
    },
}

/// Validation accuracy of the checkpoint a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Mean validation accuracy in [0, 1].
    pub accuracy: f32,
    /// Half-width of its 95% confidence interval (1.96 std / sqrt(tasks)).
    pub ci95: f32,
}

/// Where a file came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Data set name (e.g. `miniImageNet/center`, or `random` for generated weights).
    pub dataset: Text,
    /// Shots the model was trained with.
    pub shots: u32,
    /// Training steps taken.
    pub steps: u64,
    /// Seed of the run.
    pub seed: u64,
    /// Validation result of the stored weights, if one was measured.
    pub validation: Option<Validation>,
    /// Name of the tool that wrote the file.
    pub tool: Text,
    /// Version of that tool.
    pub tool_version: Text,
}

/// What a training run needs to resume, beyond the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Steps taken so far.
    pub step: u64,
    /// Best validation accuracy so far.
    pub best_val_accuracy: f32,
    /// Step at which it was reached.
    pub best_step: u64,
    /// Steps skipped because the loss or a gradient was not finite.
    pub skipped_steps: u64,
    /// State of the run's random number generator.
    pub rng_state: [u64; 4],
    /// The trainer's own options, opaque to this crate.
    pub trainer_options: Vec<u8, MAX_TRAINER_OPTIONS>,
}

/// One row of the tensor table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorEntry {
    /// Tensor name (see FORMAT.md).
    pub name: TensorName,
    /// Shape, row-major.
    pub shape: Shape,
    /// Byte offset from the payload start (a multiple of 64).
    pub offset: u32,
    /// `None` for an f32 tensor; for an int8 one (version 4), the axis its rows run along.
    /// Not part of this struct's own encoding: a version-3 or -4 table entry adds a dtype and an
    /// axis code after the offset (FORMAT.md).
    #[serde(skip)]
    pub quant: Option<QuantAxis>,
}

impl TensorEntry {
    /// Number of elements of the f32 shape, `None` if it overflows `u64`.
    pub fn elements(&self) -> Option<u64> {
        shape_elements(&self.shape)
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        match self.quant {
            None => Dtype::F32,
            Some(_) => Dtype::I8,
        }
    }

    /// `(rows, depth)` of an int8 tensor: from its `[in, out]` shape and axis; `None` for an
    /// f32 tensor or a shape that is not 2-D.
    pub fn quant_rows_depth(&self) -> Option<(usize, usize)> {
        let axis = self.quant?;
        match self.shape[..] {
            [inputs, outputs] => Some(axis.rows_depth(inputs as usize, outputs as usize)),
            _ => None,
        }
    }

    /// Bytes the tensor takes in the payload: 4 per element for f32; for int8 (version 4),
    /// `pairs(rows) * pair_stride(depth)` little-endian i16 values then `rows` f32 scales
    /// ([`crate::quant`]). `None` on overflow or an int8 shape that is not 2-D.
    pub fn byte_len(&self) -> Option<u64> {
        match self.quant {
            None => self.elements()?.checked_mul(4),
            Some(_) => {
                let (rows, depth) = self.quant_rows_depth()?;
                pair_values(rows, depth)
                    .checked_mul(2)?
                    .checked_add((rows as u64).checked_mul(4)?)
            }
        }
    }
}

/// A version-3 or -4 table entry as encoded: the fields of [`TensorEntry`], then the dtype code
/// (0 = f32, 1 = i8) and the axis code (0 for f32; 1 = [`QuantAxis::Out`], 2 =
/// [`QuantAxis::In`] for i8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EntryRecord {
    pub(crate) name: TensorName,
    pub(crate) shape: Shape,
    pub(crate) offset: u32,
    pub(crate) dtype: u8,
    pub(crate) axis: u8,
}

impl EntryRecord {
    /// The encoding of `entry`.
    #[cfg(feature = "alloc")]
    pub(crate) fn new(entry: &TensorEntry) -> Self {
        let (dtype, axis) = match entry.quant {
            None => (0, 0),
            Some(QuantAxis::Out) => (1, 1),
            Some(QuantAxis::In) => (1, 2),
        };
        Self {
            name: entry.name.clone(),
            shape: entry.shape.clone(),
            offset: entry.offset,
            dtype,
            axis,
        }
    }

    /// The entry, or the typed error for an unknown dtype or axis code.
    pub(crate) fn entry(self) -> Result<TensorEntry, FormatError> {
        let quant = match (self.dtype, self.axis) {
            (0, 0) => None,
            (1, 1) => Some(QuantAxis::Out),
            (1, 2) => Some(QuantAxis::In),
            (0 | 1, code) => {
                return Err(FormatError::UnknownQuantAxis {
                    name: self.name,
                    code,
                })
            }
            (code, _) => {
                return Err(FormatError::UnknownDtype {
                    name: self.name,
                    code,
                })
            }
        };
        Ok(TensorEntry {
            name: self.name,
            shape: self.shape,
            offset: self.offset,
            quant,
        })
    }
}

/// Number of elements of a shape, `None` on overflow.
pub fn shape_elements(shape: &[u32]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(u64::from(dim)))
}

/// The header of a model file. Its serde encoding is the version-1 header; a version-2 header
/// (a model whose [`ModelConfig::classifier`] is not the paper's) also encodes that classifier
/// between `training` and `tensors`, and a version-4 header (a file with int8 tensors; version
/// 3 is the same header) encodes the classifier and, in every table entry, a dtype and an axis
/// code (FORMAT.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Inference or training file.
    pub kind: FileKind,
    /// Model configuration.
    pub config: ModelConfig,
    /// Where the file came from.
    pub provenance: Provenance,
    /// Training state; only in training files.
    pub training: Option<TrainingState>,
    /// The tensor table.
    pub tensors: Vec<TensorEntry, MAX_TENSORS>,
}
