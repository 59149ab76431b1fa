//! Caller-owned memory for `prepare` and `classify`: no heap, fixed size, `const`-constructible
//! so it can live in a `static`. Every buffer is a statically sized nalgebra matrix whose
//! columns are examples (see [`crate::ops`] for the orientation).

use nalgebra::{ArrayStorage, SMatrix};

/// A zeroed `R x C` matrix, in a `const` context.
const fn zeros<const R: usize, const C: usize>() -> SMatrix<f32, R, C> {
    SMatrix::from_array_storage(ArrayStorage([[0.0; R]; C]))
}

/// What `prepare` computes once per support set and every query reuses.
pub(crate) struct Prepared<
    const d: usize,
    const h: usize,
    const N: usize,
    const G: usize,
    const NK: usize,
> {
    /// `ca_ap` keys `Wk s` of every support column (all heads stacked), transposed: one row
    /// per support example.
    pub keys_t: SMatrix<f32, NK, d>,
    /// Per head `j`, the `ca_ap` class values already through the output projection:
    /// `U_j[:, i] = Wo_j (Wv_j v_bar[i])`. Values are equal within a class (the class-mean
    /// replacement), so head `j` adds `U_j pooled_j` with `pooled_j` the attention
    /// probabilities summed per class.
    pub class_values: [SMatrix<f32, d, N>; h],
    /// The class half of the generator's first layer: `G1[0..d] c_bar[i]` per class.
    pub context: SMatrix<f32, G, N>,
}

/// Support-side scratch of `prepare`.
pub(crate) struct SupportScratch<const d: usize, const d2: usize, const N: usize, const NK: usize> {
    /// Encoded support (`s`, then `X_s enc_cp`); the block's residual input, then its output.
    pub x: SMatrix<f32, d, NK>,
    /// Self-attention queries `Wq x`.
    pub q: SMatrix<f32, d, NK>,
    /// Keys `Wk x` (self-attention, then `ca_ap`).
    pub keys: SMatrix<f32, d, NK>,
    /// `keys` transposed.
    pub keys_t: SMatrix<f32, NK, d>,
    /// Self-attention values `Wv x`.
    pub values: SMatrix<f32, d, NK>,
    /// Attention probabilities of one head (one column per query).
    pub p: SMatrix<f32, NK, NK>,
    /// The heads' attention outputs stacked, before `Wo`.
    pub att: SMatrix<f32, d, NK>,
    /// `relu(F1 out)`.
    pub hidden: SMatrix<f32, d2, NK>,
    /// Class means of the block output (`v_bar`, then `c_bar`).
    pub means: SMatrix<f32, d, N>,
    /// `ca_ap` class values `Wv v_bar`.
    pub class_values: SMatrix<f32, d, N>,
}

/// Per-query scratch for up to `B` queries classified together (column `m` is query `m`).
pub(crate) struct QueryScratch<
    const d: usize,
    const d2: usize,
    const N: usize,
    const G: usize,
    const NK: usize,
    const B: usize,
> {
    /// `q = enc_ap x`, then the block output `a(x) = ca_ap(q, s, v)` in place.
    pub q: SMatrix<f32, d, B>,
    /// `ca_ap` queries `Wq q`.
    pub q_proj: SMatrix<f32, d, B>,
    /// Attention probabilities of one head over the `N K` support keys.
    pub p: SMatrix<f32, NK, B>,
    /// `p` summed per class.
    pub pooled: SMatrix<f32, N, B>,
    /// `relu(F1 out)`.
    pub hidden: SMatrix<f32, d2, B>,
    /// The attentive half of the generator's first layer, `G1[d..2d] a(x)`.
    pub ga: SMatrix<f32, G, B>,
    /// `G2muᵀ x`.
    pub y: SMatrix<f32, G, B>,
}

/// All memory `prepare`, `classify` and `classify_batch` use, owned by the caller. Its type
/// carries the model sizes (so it only fits a model of the same configuration) and `B`, the
/// number of queries [`crate::Task::classify_batch`] processes together.
///
/// ```
/// // Firmware keeps it in a static (behind whatever lock it uses):
/// static WORKSPACE: std::sync::Mutex<engine::Edge1ShotWorkspace> =
///     std::sync::Mutex::new(engine::Edge1ShotWorkspace::new());
/// let workspace = WORKSPACE.lock().unwrap();
/// ```
pub struct Workspace<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const B: usize,
> {
    pub(crate) prepared: Prepared<d, h, N, G, NK>,
    pub(crate) support: SupportScratch<d, d2, N, NK>,
    pub(crate) queries: QueryScratch<d, d2, N, G, NK, B>,
    /// Generator hidden columns `h_i` for [`crate::Task::generated_weights`].
    pub(crate) hidden: SMatrix<f32, G, N>,
}

impl<
        const D: usize,
        const d: usize,
        const h: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const d2: usize,
        const B: usize,
    > Workspace<D, d, h, N, K, G, NK, d2, B>
{
    /// Size of the workspace in bytes (see the configuration aliases for the shipped values).
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// A zeroed workspace; usable in a `static` initialiser.
    pub const fn new() -> Self {
        const { crate::Model::<D, d, h, N, K, G, NK, d2>::CHECK_SIZES };
        const { assert!(B > 0, "the batch size B must be positive") };
        Self {
            prepared: Prepared {
                keys_t: zeros(),
                class_values: [zeros(); h],
                context: zeros(),
            },
            support: SupportScratch {
                x: zeros(),
                q: zeros(),
                keys: zeros(),
                keys_t: zeros(),
                values: zeros(),
                p: zeros(),
                att: zeros(),
                hidden: zeros(),
                means: zeros(),
                class_values: zeros(),
            },
            queries: QueryScratch {
                q: zeros(),
                q_proj: zeros(),
                p: zeros(),
                pooled: zeros(),
                hidden: zeros(),
                ga: zeros(),
                y: zeros(),
            },
            hidden: zeros(),
        }
    }
}

impl<
        const D: usize,
        const d: usize,
        const h: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const d2: usize,
        const B: usize,
    > Default for Workspace<D, d, h, N, K, G, NK, d2, B>
{
    fn default() -> Self {
        Self::new()
    }
}
