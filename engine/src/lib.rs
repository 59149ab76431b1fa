//! Fixed-size `no_std` AWGIM inference: no heap, no `unsafe`, weights borrowed in place from a
//! model file (see `formats`) as statically sized nalgebra views, workspace buffers as
//! statically sized nalgebra matrices, `libm` for the scalar maths.
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
//! # Ok(()) }
//! ```
//!
//! Modules: [`ops`] (matrix products, layer norm, softmax, attention; the orientation and
//! the hand-written kernels are explained there) and `model` (the AWGIM evaluation path,
//! read against AWGIM.md).
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod model;
pub mod ops;
mod workspace;

pub use error::{EngineError, Input};
pub use model::{Model, Prediction, Task};
pub use workspace::Workspace;

/// Compile-time check of the size parameters; called in `const` blocks by [`Model::load`] and
/// [`Workspace::new`], so an inconsistent set of sizes does not compile:
///
/// ```compile_fail
/// // NK must be N * K = 25.
/// let _ = engine::Model::<64, 32, 4, 5, 5, 64, 24, 64>::load(&[]);
/// ```
/// ```compile_fail
/// // 3 heads do not divide d = 32.
/// let _ = engine::Workspace::<64, 32, 3, 5, 1, 64, 5, 64, 4>::new();
/// ```
#[allow(clippy::too_many_arguments)]
pub(crate) const fn check_sizes(
    d: usize,
    l: usize,
    h: usize,
    n: usize,
    k: usize,
    g: usize,
    nk: usize,
    l2: usize,
) {
    assert!(
        d > 0 && l > 0 && h > 0 && n > 0 && k > 0 && g > 0,
        "sizes must be positive"
    );
    assert!(l % h == 0, "the heads H must divide the latent size L");
    assert!(nk == n * k, "NK must equal N * K");
    assert!(l2 == 2 * l, "L2 must equal 2 * L");
}

/// The [`Model`] type for sizes `D, d, h, N, K, G`, with the derived sizes filled in:
/// `engine::awgim_model!('a; 640, 128, 4, 5, 5, 256)` is [`Paper5Shot<'a>`].
#[macro_export]
macro_rules! awgim_model {
    ($lt:lifetime; $d:expr, $l:expr, $h:expr, $n:expr, $k:expr, $g:expr) => {
        $crate::Model<$lt, { $d }, { $l }, { $h }, { $n }, { $k }, { $g }, { $n * $k }, { 2 * $l }>
    };
}

/// The [`Workspace`] type for sizes `D, d, h, N, K, G` and batch `B`:
/// `engine::awgim_workspace!(640, 128, 4, 5, 5, 256; 15)` is [`Paper5ShotWorkspace`].
#[macro_export]
macro_rules! awgim_workspace {
    ($d:expr, $l:expr, $h:expr, $n:expr, $k:expr, $g:expr; $b:expr) => {
        $crate::Workspace<
            { $d }, { $l }, { $h }, { $n }, { $k }, { $g }, { $n * $k }, { 2 * $l }, { $b }
        >
    };
}

/// Queries per batch in the paper workspaces: AWGIM's 15 queries per class, so a 5-way task's
/// 75 queries are 5 full batches (and 15 is a whole number of the kernels' 5-column tiles).
pub const PAPER_BATCH: usize = 15;
/// Queries per batch in the edge workspaces.
pub const EDGE_BATCH: usize = 4;

/// The paper's 5-way 1-shot model (D = 640, d = 128, 4 heads, G = 256).
pub type Paper1Shot<'a> = awgim_model!('a; 640, 128, 4, 5, 1, 256);
/// The paper's 5-way 5-shot model (D = 640, d = 128, 4 heads, G = 256).
pub type Paper5Shot<'a> = awgim_model!('a; 640, 128, 4, 5, 5, 256);
/// The edge 5-way 1-shot model (D = 64, d = 32, 4 heads, G = 64).
pub type Edge1Shot<'a> = awgim_model!('a; 64, 32, 4, 5, 1, 64);
/// The edge 5-way 5-shot model (D = 64, d = 32, 4 heads, G = 64).
pub type Edge5Shot<'a> = awgim_model!('a; 64, 32, 4, 5, 5, 64);

/// Workspace of [`Paper1Shot`]: 110,780 bytes ([`Workspace::BYTES`]).
pub type Paper1ShotWorkspace = awgim_workspace!(640, 128, 4, 5, 1, 256; PAPER_BATCH);
/// Workspace of [`Paper5Shot`]: 206,540 bytes ([`Workspace::BYTES`]).
pub type Paper5ShotWorkspace = awgim_workspace!(640, 128, 4, 5, 5, 256; PAPER_BATCH);
/// Workspace of [`Edge1Shot`]: 16,516 bytes ([`Workspace::BYTES`]).
pub type Edge1ShotWorkspace = awgim_workspace!(64, 32, 4, 5, 1, 64; EDGE_BATCH);
/// Workspace of [`Edge5Shot`]: 42,276 bytes ([`Workspace::BYTES`]).
pub type Edge5ShotWorkspace = awgim_workspace!(64, 32, 4, 5, 5, 64; EDGE_BATCH);
