//! The one definition of the tensors' names, and of which tensors a file holds for a
//! configuration and kind.
//!
//! Every tensor name is spelled once, in the constants here ([`SA_AP`], [`GENERATOR`], ...),
//! which the trainer and the engine build their typed parameters from; the table of shapes
//! and roles is built from the same constants.

use crate::header::{EncoderKind, FeatureNorm, FileKind, LogitsKind, ModelConfig, Shape};
use crate::quant::QuantAxis;

/// A size of the configuration that a tensor dimension stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    /// `D`.
    Feature,
    /// `d`.
    Latent,
    /// `2d`.
    Latent2,
    /// `G`.
    Hidden,
    /// 1 (a scalar).
    One,
}

/// When a tensor belongs in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// In every file.
    Core,
    /// In every file of a model with the attention encoder.
    Attention,
    /// Only in training files.
    Training,
    /// In every file of a model with [`FeatureNorm::CenteredL2`] features.
    Centered,
    /// In every file of a model with [`LogitsKind::Cosine`] logits.
    Cosine,
}

use Dim::{Feature, Hidden, Latent, Latent2, One};
use Role::{Attention, Centered, Core, Cosine, Training};

/// Names of a layer norm's two tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerNormNames {
    /// The per-feature gain (`d` values).
    pub gain: &'static str,
    /// The per-feature bias (`d` values).
    pub bias: &'static str,
}

/// Names of one attention block's tensors (AWGIM.md, "One attention block"). Every dense
/// layer is stored `[in][out]`; the heads' projections are stacked (head `j` owns outputs
/// `j d/h..(j+1) d/h` of `wq`, `wk`, `wv` and inputs `j d/h..(j+1) d/h` of `wo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockNames {
    /// The block's name, the prefix of its tensors: `sa_ap`, `ca_ap` or `sa_cp`.
    pub block: &'static str,
    /// Query projection, `[d][d]`.
    pub wq: &'static str,
    /// Key projection, `[d][d]`.
    pub wk: &'static str,
    /// Value projection, `[d][d]`.
    pub wv: &'static str,
    /// Output projection, `[d][d]`.
    pub wo: &'static str,
    /// Layer norm after the attention residual.
    pub ln1: LayerNormNames,
    /// First feed-forward layer, `[d][2d]`.
    pub f1: &'static str,
    /// Second feed-forward layer, `[2d][d]`.
    pub f2: &'static str,
    /// Layer norm after the feed-forward residual.
    pub ln2: LayerNormNames,
}

/// The [`BlockNames`] of the block `$b`: `$b.wq`, ..., `$b.ln2.bias`.
macro_rules! block_names {
    ($b:literal) => {
        BlockNames {
            block: $b,
            wq: concat!($b, ".wq"),
            wk: concat!($b, ".wk"),
            wv: concat!($b, ".wv"),
            wo: concat!($b, ".wo"),
            ln1: LayerNormNames {
                gain: concat!($b, ".ln1.gain"),
                bias: concat!($b, ".ln1.bias"),
            },
            f1: concat!($b, ".f1"),
            f2: concat!($b, ".f2"),
            ln2: LayerNormNames {
                gain: concat!($b, ".ln2.gain"),
                bias: concat!($b, ".ln2.bias"),
            },
        }
    };
}

/// Self-attention over the support, attentive path.
pub const SA_AP: BlockNames = block_names!("sa_ap");
/// Cross-attention from the queries to the support, attentive path.
pub const CA_AP: BlockNames = block_names!("ca_ap");
/// Self-attention over the support, contextual path.
pub const SA_CP: BlockNames = block_names!("sa_cp");
/// The attentive path's encoder, `[D][d]`.
pub const ENC_AP: &str = "enc_ap";
/// The contextual path's encoder, `[D][d]`.
pub const ENC_CP: &str = "enc_cp";

/// Names of the weight generator's tensors (AWGIM.md, "Forward pass for one task", step 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneratorNames {
    /// First layer G1, `[2d][G]`.
    pub g1: &'static str,
    /// The mean half of G2, `[G][D]`.
    pub g2_mu: &'static str,
    /// The standard-deviation half of G2, `[G][D]` (training files only).
    pub g2_sigma: &'static str,
}

/// The weight generator.
pub const GENERATOR: GeneratorNames = GeneratorNames {
    g1: "gen.g1",
    g2_mu: "gen.g2_mu",
    g2_sigma: "gen.g2_sigma",
};

/// Names of one reconstruction decoder's tensors (AWGIM.md step 7; training files only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderNames {
    /// First layer R1, `[D][2d]`.
    pub r1: &'static str,
    /// Second layer R2, `[2d][d]`.
    pub r2: &'static str,
}

/// The decoder `r_q`, reconstructing `a(x)`.
pub const DEC_Q: DecoderNames = DecoderNames {
    r1: "dec_q.r1",
    r2: "dec_q.r2",
};
/// The decoder `r_s`, reconstructing `c_bar[i]`.
pub const DEC_S: DecoderNames = DecoderNames {
    r1: "dec_s.r1",
    r2: "dec_s.r2",
};

/// The feature centre `c` `[D]` of [`FeatureNorm::CenteredL2`]: the mean feature vector of
/// the training classes, set from the data (not trained).
pub const FEATURE_CENTER: &str = "feat.center";
/// The learned scale `s` `[1]` of [`LogitsKind::Cosine`].
pub const LOGIT_SCALE: &str = "logit_scale";

/// A row of the table: a tensor's name, its dimensions and when a file holds it.
type Row = (&'static str, &'static [Dim], Role);

/// The rows of a block. `wq`, `wk`, `wv`, `wo` and `ln1` belong to the attention; the MLP
/// ablation keeps the feed-forward half.
const fn block_rows(b: BlockNames) -> [Row; 10] {
    [
        (b.wq, &[Latent, Latent], Attention),
        (b.wk, &[Latent, Latent], Attention),
        (b.wv, &[Latent, Latent], Attention),
        (b.wo, &[Latent, Latent], Attention),
        (b.ln1.gain, &[Latent], Attention),
        (b.ln1.bias, &[Latent], Attention),
        (b.f1, &[Latent, Latent2], Core),
        (b.f2, &[Latent2, Latent], Core),
        (b.ln2.gain, &[Latent], Core),
        (b.ln2.bias, &[Latent], Core),
    ]
}

/// The rows of a decoder.
const fn decoder_rows(r: DecoderNames) -> [Row; 2] {
    [
        (r.r1, &[Feature, Latent2], Training),
        (r.r2, &[Latent2, Latent], Training),
    ]
}

const ENCODER_ROWS: [Row; 2] = [
    (ENC_AP, &[Feature, Latent], Core),
    (ENC_CP, &[Feature, Latent], Core),
];
const SA_AP_ROWS: [Row; 10] = block_rows(SA_AP);
const CA_AP_ROWS: [Row; 10] = block_rows(CA_AP);
const SA_CP_ROWS: [Row; 10] = block_rows(SA_CP);
const GENERATOR_ROWS: [Row; 3] = [
    (GENERATOR.g1, &[Latent2, Hidden], Core),
    (GENERATOR.g2_mu, &[Hidden, Feature], Core),
    (GENERATOR.g2_sigma, &[Hidden, Feature], Training),
];
const DECODER_ROWS: [Row; 4] = {
    let [q1, q2] = decoder_rows(DEC_Q);
    let [s1, s2] = decoder_rows(DEC_S);
    [q1, q2, s1, s2]
};
/// Beyond the paper: the classifier variants' tensors ([`crate::Classifier`]).
const CLASSIFIER_ROWS: [Row; 2] = [
    (FEATURE_CENTER, &[Feature], Centered),
    (LOGIT_SCALE, &[One], Cosine),
];
/// Every tensor in canonical order.
const TABLE: [&[Row]; 7] = [
    &ENCODER_ROWS,
    &SA_AP_ROWS,
    &CA_AP_ROWS,
    &SA_CP_ROWS,
    &GENERATOR_ROWS,
    &DECODER_ROWS,
    &CLASSIFIER_ROWS,
];

/// Prefix of an Adam first-moment tensor (`adam.m.<name>`).
pub const ADAM_M_PREFIX: &str = "adam.m.";
/// Prefix of an Adam second-moment tensor (`adam.v.<name>`).
pub const ADAM_V_PREFIX: &str = "adam.v.";

/// A required tensor: its name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name as in FORMAT.md.
    pub name: &'static str,
    /// Row-major shape.
    pub shape: Shape,
}

impl TensorSpec {
    /// Number of `f32` elements.
    pub fn elements(&self) -> u64 {
        crate::header::shape_elements(&self.shape).unwrap_or(u64::MAX)
    }
}

fn size(config: &ModelConfig, dim: Dim) -> u32 {
    match dim {
        Feature => config.feature_dim,
        Latent => config.latent_dim,
        Latent2 => config.latent_dim.saturating_mul(2),
        Hidden => config.generator_hidden,
        One => 1,
    }
}

fn included(config: &ModelConfig, kind: FileKind, role: Role) -> bool {
    match role {
        Core => true,
        Attention => config.encoder == EncoderKind::Attention,
        Training => kind == FileKind::Training,
        Centered => config.classifier.features == FeatureNorm::CenteredL2,
        Cosine => config.classifier.logits == LogitsKind::Cosine,
    }
}

fn shape_of(config: &ModelConfig, dims: &[Dim]) -> Shape {
    // At most two dimensions per row of the table, within MAX_DIMS.
    dims.iter().map(|&d| size(config, d)).collect()
}

/// The tensors a file of `kind` must hold for `config`, in canonical order (the order the
/// writer lays them out). Optimizer state (`adam.m.*`, `adam.v.*`) is optional and not listed;
/// see [`optional_shape`].
pub fn expected_tensors(
    config: &ModelConfig,
    kind: FileKind,
) -> impl Iterator<Item = TensorSpec> + '_ {
    TABLE
        .into_iter()
        .flatten()
        .filter(move |(_, _, role)| included(config, kind, *role))
        .map(move |(name, dims, _)| TensorSpec {
            name,
            shape: shape_of(config, dims),
        })
}

/// Position of a required tensor in canonical order and its spec, if `name` is required.
pub fn required_tensor(
    config: &ModelConfig,
    kind: FileKind,
    name: &str,
) -> Option<(usize, TensorSpec)> {
    expected_tensors(config, kind)
        .enumerate()
        .find(|(_, spec)| spec.name == name)
}

/// Shape of an optional tensor (`adam.m.<p>` / `adam.v.<p>` of a required parameter `p` of a
/// training file), and its canonical rank after all required tensors; `None` if `name` is not an
/// optional tensor of this kind of file.
pub fn optional_shape(config: &ModelConfig, kind: FileKind, name: &str) -> Option<(usize, Shape)> {
    if kind != FileKind::Training {
        return None;
    }
    let (moment, base) = if let Some(base) = name.strip_prefix(ADAM_M_PREFIX) {
        (0, base)
    } else {
        (1, name.strip_prefix(ADAM_V_PREFIX)?)
    };
    let count = expected_tensors(config, kind).count();
    let (index, spec) = required_tensor(config, kind, base)?;
    Some((count * (1 + moment) + index, spec.shape))
}

/// Shape and canonical rank of any tensor a file of `kind` may hold (required or optional).
pub fn allowed_tensor(config: &ModelConfig, kind: FileKind, name: &str) -> Option<(usize, Shape)> {
    required_tensor(config, kind, name)
        .map(|(rank, spec)| (rank, spec.shape))
        .or_else(|| optional_shape(config, kind, name))
}

/// The int8 tensors of a block: its attention projections and feed-forward layers, a scale
/// per output.
const fn block_quant(b: BlockNames) -> [(&'static str, QuantAxis); 6] {
    [
        (b.wq, QuantAxis::Out),
        (b.wk, QuantAxis::Out),
        (b.wv, QuantAxis::Out),
        (b.wo, QuantAxis::Out),
        (b.f1, QuantAxis::Out),
        (b.f2, QuantAxis::Out),
    ]
}

/// Every tensor an int8 export quantises, with its axis: the big products of an inference
/// file. The encoders, the blocks' projections and feed-forward layers and G1 have a scale
/// per output ([`QuantAxis::Out`]); `gen.g2_mu`, which the engine reduces over its outputs
/// `D` (the query product), a scale per input ([`QuantAxis::In`]).
const QUANT: [&[(&str, QuantAxis)]; 5] = [
    &[(ENC_AP, QuantAxis::Out), (ENC_CP, QuantAxis::Out)],
    &block_quant(SA_AP),
    &block_quant(CA_AP),
    &block_quant(SA_CP),
    &[
        (GENERATOR.g1, QuantAxis::Out),
        (GENERATOR.g2_mu, QuantAxis::In),
    ],
];

/// Whether an int8 export quantises the tensor `name`, and along which axis (the one table of
/// it): `Some` for the encoders `enc_ap`, `enc_cp`, each block's `wq`, `wk`, `wv`, `wo`, `f1`,
/// `f2` and `gen.g1` ([`QuantAxis::Out`]) and `gen.g2_mu` ([`QuantAxis::In`]); `None` for
/// everything that stays f32: layer norms, `feat.center`, `logit_scale`, and the tensors only
/// a training file holds (`gen.g2_sigma`, the decoders, optimizer state). A file may store a
/// tensor as int8 only along the axis this gives.
pub fn quant_axis(name: &str) -> Option<QuantAxis> {
    QUANT
        .into_iter()
        .flatten()
        .find(|(n, _)| *n == name)
        .map(|&(_, axis)| axis)
}
