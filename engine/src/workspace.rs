//! Caller-owned memory for `prepare` and `classify`: no heap, fixed size, `const`-constructible
//! so it can live in a `static`.

/// Scratch rows of one attention block applied to `M` query rows.
pub(crate) struct BlockScratch<const M: usize, const L: usize, const L2: usize> {
    /// `x Wq` (all heads side by side).
    pub q: [[f32; L]; M],
    /// The heads' attention outputs side by side, before `Wo`.
    pub att: [[f32; L]; M],
    /// `relu(F1 out)`.
    pub hidden: [[f32; L2]; M],
}

impl<const M: usize, const L: usize, const L2: usize> BlockScratch<M, L, L2> {
    const fn new() -> Self {
        Self {
            q: [[0.0; L]; M],
            att: [[0.0; L]; M],
            hidden: [[0.0; L2]; M],
        }
    }
}

/// What `prepare` computes once per support set and every query reuses.
pub(crate) struct Prepared<const L: usize, const N: usize, const G: usize, const NK: usize> {
    /// `ca_ap` keys `s Wk` of every support row (all heads side by side), transposed.
    pub keys_t: [[f32; NK]; L],
    /// `ca_ap` values `v Wv`, one row per class (the rows of a class are equal after the
    /// class-mean replacement).
    pub values: [[f32; L]; N],
    /// The class half of the generator's first layer: `c_bar[i] G1[0..d]`.
    pub context: [[f32; G]; N],
}

/// Support-side scratch of `prepare`.
pub(crate) struct SupportScratch<const L: usize, const L2: usize, const N: usize, const NK: usize> {
    /// Encoded support `X_s enc_ap` (attentive path) or `X_s enc_cp` (contextual path).
    pub encoded: [[f32; L]; NK],
    /// `s` kept for the `ca_ap` keys while the contextual path runs.
    pub s: [[f32; L]; NK],
    /// Self-attention keys `x Wk` (and the `ca_ap` keys `s Wk` before transposing).
    pub keys: [[f32; L]; NK],
    /// `keys` transposed.
    pub keys_t: [[f32; NK]; L],
    /// Self-attention values `x Wv`.
    pub values: [[f32; L]; NK],
    /// Block output (`v` of `sa_ap`, `c` of `sa_cp`).
    pub out: [[f32; L]; NK],
    /// Class means of `out`.
    pub means: [[f32; L]; N],
    /// The block's own scratch.
    pub block: BlockScratch<NK, L, L2>,
}

/// Per-query scratch for `M` queries classified together.
pub(crate) struct QueryScratch<
    const M: usize,
    const D: usize,
    const L: usize,
    const L2: usize,
    const G: usize,
> {
    /// `q = x enc_ap`.
    pub q: [[f32; L]; M],
    /// `a(x) = ca_ap(q, s, v)`.
    pub a: [[f32; L]; M],
    /// The attentive half of the generator's first layer, `a(x) G1[d..2d]`.
    pub ga: [[f32; G]; M],
    /// `G2mu x`.
    pub y: [[f32; G]; M],
    /// The queries transposed (for `G2mu x` of a batch).
    pub xt: [[f32; M]; D],
    /// `G2mu x` transposed.
    pub yt: [[f32; M]; G],
    /// The `ca_ap` block's scratch.
    pub block: BlockScratch<M, L, L2>,
}

impl<const M: usize, const D: usize, const L: usize, const L2: usize, const G: usize>
    QueryScratch<M, D, L, L2, G>
{
    const fn new() -> Self {
        Self {
            q: [[0.0; L]; M],
            a: [[0.0; L]; M],
            ga: [[0.0; G]; M],
            y: [[0.0; G]; M],
            xt: [[0.0; M]; D],
            yt: [[0.0; M]; G],
            block: BlockScratch::new(),
        }
    }
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
    const L: usize,
    const H: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const L2: usize,
    const B: usize,
> {
    pub(crate) prepared: Prepared<L, N, G, NK>,
    pub(crate) support: SupportScratch<L, L2, N, NK>,
    pub(crate) single: QueryScratch<1, D, L, L2, G>,
    pub(crate) batch: QueryScratch<B, D, L, L2, G>,
    /// Generator hidden rows `h_i` for [`crate::Task::generated_weights`].
    pub(crate) hidden: [[f32; G]; N],
}

impl<
        const D: usize,
        const L: usize,
        const H: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const L2: usize,
        const B: usize,
    > Workspace<D, L, H, N, K, G, NK, L2, B>
{
    /// Size of the workspace in bytes (see the configuration aliases for the shipped values).
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// A zeroed workspace; usable in a `static` initialiser.
    pub const fn new() -> Self {
        const { crate::check_sizes(D, L, H, N, K, G, NK, L2) };
        const { assert!(B > 0, "the batch size B must be positive") };
        Self {
            prepared: Prepared {
                keys_t: [[0.0; NK]; L],
                values: [[0.0; L]; N],
                context: [[0.0; G]; N],
            },
            support: SupportScratch {
                encoded: [[0.0; L]; NK],
                s: [[0.0; L]; NK],
                keys: [[0.0; L]; NK],
                keys_t: [[0.0; NK]; L],
                values: [[0.0; L]; NK],
                out: [[0.0; L]; NK],
                means: [[0.0; L]; N],
                block: BlockScratch::new(),
            },
            single: QueryScratch::new(),
            batch: QueryScratch::new(),
            hidden: [[0.0; G]; N],
        }
    }
}

impl<
        const D: usize,
        const L: usize,
        const H: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const L2: usize,
        const B: usize,
    > Default for Workspace<D, L, H, N, K, G, NK, L2, B>
{
    fn default() -> Self {
        Self::new()
    }
}
