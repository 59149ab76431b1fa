//! The one definition of which tensors a file holds for a configuration and kind.
//!
//! The trainer, the engine, exports and tests all take names and shapes from here.

use crate::header::{EncoderKind, FileKind, ModelConfig, Shape};

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
}

use Dim::{Feature, Hidden, Latent, Latent2};
use Role::{Attention, Core, Training};

macro_rules! block {
    ($b:literal) => {
        [
            (concat!($b, ".wq"), &[Latent, Latent], Attention),
            (concat!($b, ".wk"), &[Latent, Latent], Attention),
            (concat!($b, ".wv"), &[Latent, Latent], Attention),
            (concat!($b, ".wo"), &[Latent, Latent], Attention),
            (concat!($b, ".ln1.gain"), &[Latent], Attention),
            (concat!($b, ".ln1.bias"), &[Latent], Attention),
            (concat!($b, ".f1"), &[Latent, Latent2], Core),
            (concat!($b, ".f2"), &[Latent2, Latent], Core),
            (concat!($b, ".ln2.gain"), &[Latent], Core),
            (concat!($b, ".ln2.bias"), &[Latent], Core),
        ]
    };
}

type Row = (&'static str, &'static [Dim], Role);

const ENCODERS: [Row; 2] = [
    ("enc_ap", &[Feature, Latent], Core),
    ("enc_cp", &[Feature, Latent], Core),
];
const SA_AP: [Row; 10] = block!("sa_ap");
const CA_AP: [Row; 10] = block!("ca_ap");
const SA_CP: [Row; 10] = block!("sa_cp");
const GENERATOR: [Row; 3] = [
    ("gen.g1", &[Latent2, Hidden], Core),
    ("gen.g2_mu", &[Hidden, Feature], Core),
    ("gen.g2_sigma", &[Hidden, Feature], Training),
];
const DECODERS: [Row; 4] = [
    ("dec_q.r1", &[Feature, Latent2], Training),
    ("dec_q.r2", &[Latent2, Latent], Training),
    ("dec_s.r1", &[Feature, Latent2], Training),
    ("dec_s.r2", &[Latent2, Latent], Training),
];
const TABLE: [&[Row]; 6] = [&ENCODERS, &SA_AP, &CA_AP, &SA_CP, &GENERATOR, &DECODERS];

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
    }
}

fn included(config: &ModelConfig, kind: FileKind, role: Role) -> bool {
    match role {
        Core => true,
        Attention => config.encoder == EncoderKind::Attention,
        Training => kind == FileKind::Training,
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
