//! `no_std` AWGIM inference: no heap, no `unsafe` (but two kernel modules), weights borrowed in place from a model
//! file (see `formats`), `libm` for the scalar maths. One implementation serves two kinds of
//! sizes ([`Dims`]): compiled in ([`Model`] and its aliases for the paper's classifier,
//! [`VariantModel`] for the others, in a statically sized [`Workspace`] of
//! [`workspace_len`] values that can live in a `static`: what firmware runs) or read from the
//! file ([`DynModel`], a caller's `&mut [f32]` of [`workspace_len`] values: any configuration
//! the trainer writes, what `trainer infer` runs). Both give the same logits, bit for bit.
//! A build script that reads a model file's header writes the compiled types with
//! [`awgim_model!`]`('a; SIZES, CLASSIFIER)` and [`awgim_workspace!`]`(SIZES, CLASSIFIER; B)`.
//!
//! ```no_run
//! # fn run(bytes: &[u8], support: &[[f32; 640]; 25], queries: &[[f32; 640]]) -> Result<(), engine::EngineError> {
//! let model = engine::Paper5Shot::load(bytes)?; // 64-byte aligned file bytes
//! let mut workspace = Box::new(engine::Paper5ShotWorkspace::new());
//! let mut task = model.prepare(&mut workspace, support)?; // rows i*5..i*5+5: class i
//! let prediction = task.classify(&queries[0])?;
//! println!("class {} logits {:?}", prediction.class, prediction.logits);
//! let mut all = vec![engine::Prediction::zeroed(); queries.len()];
//! task.classify_batch(queries, &mut all)?;
//!
//! // Rows as a sensor delivers them, one at a time, labelled (here shot by shot): each is
//! // encoded as it arrives, and the support set is never stored.
//! let mut enrollment = model.enroll(&mut workspace)?;
//! for k in 0..5 {
//!     for class in 0..5 {
//!         enrollment.push(class, &support[class * 5 + k])?;
//!     }
//! }
//! let mut task = enrollment.prepare()?;
//! let prediction = task.classify(&queries[0])?;
//!
//! // Any sizes, from the file: support and queries as rows of D values, logits M x N.
//! let model = engine::DynModel::load(bytes)?;
//! let mut workspace = vec![0.0f32; model.workspace_len(8)];
//! let mut task = model.prepare(&mut workspace, 8, support.as_flattened())?;
//! let mut logits = vec![0.0f32; queries.len() * model.sizes().N];
//! task.classify_batch(queries.as_flattened(), &mut logits)?;
//! # Ok(()) }
//! ```
//!
//! Modules: [`ops`] (matrix products, f32 and int8, layer norm, softmax, attention; the
//! orientation, the sizes as nalgebra dimensions and the hand-written kernels are explained
//! there) and `model` (the AWGIM evaluation path, read against AWGIM.md, with each algebraic
//! rewrite, the streaming enrollment and the int8 weights and their costs).
//!
//! `unsafe`: denied everywhere (`#![deny(unsafe_code)]`) but in two kernel modules, each
//! `unsafe` with its SAFETY comment: `ops::dsp` (Arm only: the inner loops in `asm!`, each
//! behind a safe function that checks the lengths it relies on) and `ops::linear`'s `zmm`
//! (x86-64 builds with AVX-512 only: its one kind of `unsafe` is the call into its
//! `#[target_feature(enable = "avx512f")]` kernels, which rustc requires even where the whole
//! crate is compiled with that feature, as it then is). The rest of the crate has no `unsafe`.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]
// The size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]

mod dims;
mod error;
mod model;
pub mod ops;
mod workspace;

pub use dims::{Dims, Dynamic, Fixed};
pub use error::{EngineError, Input, Stage};
#[doc(hidden)]
pub use formats;
use formats::{Classifier, FeatureNorm, LogitsKind, ModelConfig, Sizes, WeightsKind};
pub use model::{
    Awgim, DynEnrollment, DynModel, DynTask, Enrollment, FixedEnrollment, FixedTask, Model,
    Prediction, Task, VariantModel,
};
pub use workspace::{workspace_len, Workspace};

/// The model type for the [`Sizes`] `S` (a constant), with the derived sizes filled in:
/// `engine::awgim_model!('a; engine::PAPER_5SHOT)` is [`Paper5Shot<'a>`], a [`Model`] (the
/// paper's classifier). With a [`Classifier`] `C` (a constant) as well,
/// `engine::awgim_model!('a; S, C)` is the [`Model`] for the paper's classifier and the
/// [`VariantModel`] for any other: what a build script writes from a model file's header.
#[macro_export]
macro_rules! awgim_model {
    ($lt:lifetime; $s:expr) => {
        $crate::awgim_model!($lt; $s, $crate::formats::Classifier::PAPER)
    };
    ($lt:lifetime; $s:expr, $c:expr) => {
        $crate::Awgim<
            $lt,
            $crate::Fixed<
                { $s.D },
                { $s.d },
                { $s.h },
                { $s.N },
                { $s.K },
                { $s.G },
                { $s.N * $s.K },
                { 2 * $s.d },
                { !$crate::is_paper($c) },
            >,
        >
    };
}

/// The [`Workspace`] type for the [`Sizes`] `S` (a constant), the paper's classifier and
/// batch `B`: `engine::awgim_workspace!(engine::PAPER_5SHOT; 15)` is [`Paper5ShotWorkspace`].
/// `engine::awgim_workspace!(S, C; B)` sizes it for the [`Classifier`] `C`.
#[macro_export]
macro_rules! awgim_workspace {
    ($s:expr; $b:expr) => {
        $crate::awgim_workspace!($s, $crate::formats::Classifier::PAPER; $b)
    };
    ($s:expr, $c:expr; $b:expr) => {
        $crate::Workspace<{ $crate::workspace_len($s, $c, $b) }, { $b }>
    };
}

/// Whether `classifier` is the paper's ([`Classifier::PAPER`]), in a `const` context (the
/// type of a compiled-size model depends on it: [`awgim_model!`]).
pub const fn is_paper(classifier: Classifier) -> bool {
    matches!(
        classifier,
        Classifier {
            features: FeatureNorm::Raw,
            weights: WeightsKind::Generated,
            logits: LogitsKind::Dot,
        }
    )
}

/// Sizes of [`Paper1Shot`]: the paper's, 5-way 1-shot ([`ModelConfig::paper`]).
pub const PAPER_1SHOT: Sizes = ModelConfig::paper(1).sizes();
/// Sizes of [`Paper5Shot`]: the paper's, 5-way 5-shot ([`ModelConfig::paper`]).
pub const PAPER_5SHOT: Sizes = ModelConfig::paper(5).sizes();
/// Sizes of [`Edge1Shot`]: the edge configuration, 5-way 1-shot ([`ModelConfig::edge`]).
pub const EDGE_1SHOT: Sizes = ModelConfig::edge(1).sizes();
/// Sizes of [`Edge5Shot`]: the edge configuration, 5-way 5-shot ([`ModelConfig::edge`]).
pub const EDGE_5SHOT: Sizes = ModelConfig::edge(5).sizes();

/// Queries per batch in the paper workspaces: AWGIM's 15 queries per class, so a 5-way task's
/// 75 queries are 5 full batches (and 15 is a whole number of the kernels' 5-column tiles).
pub const PAPER_BATCH: usize = 15;
/// Queries per batch in the edge workspaces.
pub const EDGE_BATCH: usize = 4;

/// The paper's 5-way 1-shot model (D = 640, d = 128, 4 heads, G = 256).
pub type Paper1Shot<'a> = awgim_model!('a; PAPER_1SHOT);
/// The paper's 5-way 5-shot model (D = 640, d = 128, 4 heads, G = 256).
pub type Paper5Shot<'a> = awgim_model!('a; PAPER_5SHOT);
/// The edge 5-way 1-shot model (D = 64, d = 32, 4 heads, G = 64).
pub type Edge1Shot<'a> = awgim_model!('a; EDGE_1SHOT);
/// The edge 5-way 5-shot model (D = 64, d = 32, 4 heads, G = 64).
pub type Edge5Shot<'a> = awgim_model!('a; EDGE_5SHOT);

/// Workspace of [`Paper1Shot`]: 91,504 bytes ([`Workspace::BYTES`]).
pub type Paper1ShotWorkspace = awgim_workspace!(PAPER_1SHOT; PAPER_BATCH);
/// Workspace of [`Paper5Shot`]: 113,884 bytes ([`Workspace::BYTES`]).
pub type Paper5ShotWorkspace = awgim_workspace!(PAPER_5SHOT; PAPER_BATCH);
/// Workspace of [`Edge1Shot`]: 10,680 bytes ([`Workspace::BYTES`]).
pub type Edge1ShotWorkspace = awgim_workspace!(EDGE_1SHOT; EDGE_BATCH);
/// Workspace of [`Edge5Shot`]: 29,404 bytes ([`Workspace::BYTES`]).
pub type Edge5ShotWorkspace = awgim_workspace!(EDGE_5SHOT; EDGE_BATCH);
