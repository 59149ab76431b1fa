//! Caller-owned memory for `prepare` and `classify`, never the heap: either a [`Workspace`]
//! (fixed size from the compiled sizes, `const`-constructible so it can live in a `static`),
//! or, for sizes read at run time, a caller's `&mut [f32]` of [`workspace_len`] values.
//! Both are cut the same way ([`Arena`], then the phase region as [`Encoded`] and
//! [`SupportScratch`] while enrolling and preparing, as [`QueryScratch`] afterwards), into
//! column-major [`MatMut`]s whose columns are examples (see [`crate::ops`] for the
//! orientation); the model code sees only those.

use formats::{Classifier, Sizes};
use nalgebra::{Dim, Dyn};

use crate::dims::Dims;
use crate::ops::int8::{column_len, scratch_len};
use crate::ops::MatMut;

/// The lengths (f32 values) of the parts of a workspace, in arena order: what lives from
/// enrollment to the last query (`prepared`, `prototypes`, the shot counts), the i16 scratch
/// of the int8 products, and the region each phase cuts its own way (see [`workspace_len`]).
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    /// [`Prepared`]: `keys_t`, `class_values`, `context`.
    pub prepared: [usize; 3],
    /// The variants' class prototypes (`D N`; 0 for the paper's classifier).
    pub prototypes: usize,
    /// Shots received per class (`N` counters).
    pub shots: usize,
    /// The int8 products' scratch, in f32 values (two i16 each).
    pub scratch: usize,
    /// The phase region: the largest of enrollment, support work and queries.
    pub region: usize,
}

/// `max(a, b)` in a `const fn`.
const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

impl Layout {
    /// The layout for the sizes `s`, the classifier variants' buffers when `variants`, and
    /// batch `b`.
    pub const fn new(s: Sizes, variants: bool, b: usize) -> Self {
        let Sizes { D, d, h, N, K, G } = s;
        let (nk, d2, b) = (N * K, 2 * d, if b == 0 { 1 } else { b });
        let v = if variants { 1 } else { 0 };
        // Enrollment: both encodings of every support row (kept through `prepare`), and one
        // feature row as the model sees it.
        let encoded = 2 * d * nk;
        let enroll = encoded + v * D;
        // `prepare`: the encodings, `A` (self-attention queries and transposed keys, then
        // the feed-forward hidden columns, then the class means and values), the values,
        // the heads' outputs and one head's probabilities.
        let support = encoded + 2 * d * nk + d * nk + d * nk + nk * nk;
        // Per query batch: the paper's buffers ([`QueryScratch`]), the hidden columns of
        // `generated_weights`, and the variants' ([`Variants`]).
        let query =
            2 * d * b + nk * b + N * b + d2 * b + 2 * G * b + G * N + v * (D * b + D * N + G * N);
        // The int8 products' i16 scratch: the encoders on one row at enrollment, and on the
        // queries with `G2muᵀ x` (depth D); the rest have depth d or 2 d, over N K support
        // columns, N class columns or B queries.
        let columns = max(max(nk, N), b);
        let deep = scratch_len(column_len(D), b);
        let shallow = scratch_len(column_len(max(d, d2)), columns);
        let scratch = max(max(deep, shallow), scratch_len(column_len(D), 1));
        Self {
            prepared: [nk * d, d * N * h, G * N],
            prototypes: v * D * N,
            shots: N,
            scratch: scratch.div_ceil(2),
            region: max(max(enroll, support), query),
        }
    }

    /// The total, in f32 values.
    pub const fn len(&self) -> usize {
        let [a, b, c] = self.prepared;
        a + b + c + self.prototypes + self.shots + self.scratch + self.region
    }
}

/// The number of f32 values a workspace for the sizes `sizes`, the classifier `classifier` and
/// `batch` queries at a time holds: the `LEN` of a [`Workspace`], and the length of the slice
/// [`crate::DynModel::prepare`] takes ([`crate::DynModel::workspace_len`]); `4 workspace_len`
/// is the RAM the engine needs besides the stack (firmware can print it).
///
/// One arena cut two ways: what lives from the first support row to the last query (the
/// prepared support state, the variants' prototypes, the shot counts, the int8 products'
/// scratch), then a region that enrollment and `prepare` use for the support's encodings
/// and their self-attention, and the queries then reuse for theirs, never live together.
/// Paper 5-shot, one query at a time: 110,044 bytes (the support rows themselves are never
/// stored: [`crate::Enrollment`]).
pub const fn workspace_len(sizes: Sizes, classifier: Classifier, batch: usize) -> usize {
    Layout::new(sizes, !crate::is_paper(classifier), batch).len()
}

/// What `prepare` computes once per support set and every query reuses.
pub(crate) struct Prepared<'w, S: Dims> {
    /// `ca_ap` keys `Wk s` of every support column (all heads stacked), transposed: one row
    /// per support example.
    pub keys_t: MatMut<'w, S::NK, S::d>,
    /// Per head `j`, columns `j N..(j+1) N`: the `ca_ap` class values already through the
    /// output projection, `U_j[:, i] = Wo_j (Wv_j v_bar[i])`. Values are equal within a class
    /// (the class-mean replacement), so head `j` adds `U_j pooled_j` with `pooled_j` the
    /// attention probabilities summed per class.
    pub class_values: MatMut<'w, S::d, Dyn>,
    /// The class half of the generator's first layer: `G1[0..d] c_bar[i]` per class.
    pub context: MatMut<'w, S::G, S::N>,
}

/// Takes the first `n` values of `rest` (`None` if it is shorter).
fn take<'w>(rest: &mut &'w mut [f32], n: usize) -> Option<&'w mut [f32]> {
    let (head, tail) = core::mem::take(rest).split_at_mut_checked(n)?;
    *rest = tail;
    Some(head)
}

/// Takes an `r x c` matrix from the front of `rest`.
fn take_mat<'w, R: Dim, C: Dim>(rest: &mut &'w mut [f32], r: R, c: C) -> Option<MatMut<'w, R, C>> {
    MatMut::from_slice(take(rest, r.value().checked_mul(c.value())?)?, r, c)
}

/// A workspace arena cut into its long-lived parts and the phase region.
pub(crate) struct Arena<'w, S: Dims> {
    pub prepared: Prepared<'w, S>,
    /// The variants' normalised class prototypes `p[i] / |p[i]|` (their sums while
    /// enrolling); `None` for the paper's classifier.
    pub prototypes: Option<MatMut<'w, S::D, S::N>>,
    /// Shots received per class.
    pub shots: &'w mut [u32],
    /// The int8 products' scratch.
    pub scratch: &'w mut [i16],
    /// The region of [`Encoded`] and [`SupportScratch`], then of [`QueryScratch`].
    pub region: &'w mut [f32],
}

impl<'w, S: Dims> Arena<'w, S> {
    /// `arena` cut for the sizes `s`, batch `b` and the variants' buffers when `variants`;
    /// `None` if it is shorter than the [`Layout`] (values past it are unused).
    pub fn cut(arena: &'w mut [f32], s: S, b: usize, variants: bool) -> Option<Self> {
        let layout = Layout::new(s.sizes(), variants, b);
        let mut rest = arena.get_mut(..layout.len())?;
        let (d, n, nk, g) = (s.d(), s.N(), s.NK(), s.G());
        let blocks = Dyn(n.value() * s.sizes().h);
        let prepared = Prepared {
            keys_t: take_mat(&mut rest, nk, d)?,
            class_values: take_mat(&mut rest, d, blocks)?,
            context: take_mat(&mut rest, g, n)?,
        };
        let prototypes = match variants {
            true => Some(take_mat(&mut rest, s.D(), n)?),
            false => None,
        };
        let shots = bytemuck::try_cast_slice_mut(take(&mut rest, layout.shots)?).ok()?;
        let scratch = bytemuck::try_cast_slice_mut(take(&mut rest, layout.scratch)?).ok()?;
        Some(Self {
            prepared,
            prototypes,
            shots,
            scratch,
            region: rest,
        })
    }
}

/// The support's encodings, filled row by row as enrollment receives them: column `r` of
/// each is support row `r` (class-major, `i K + k` for shot `k` of class `i`).
pub(crate) struct Encoded<'w, S: Dims> {
    /// `s = enc_ap X_s`; `prepare` runs `sa_ap` on it in place.
    pub ap: MatMut<'w, S::d, S::NK>,
    /// `enc_cp X_s`; `prepare` runs `sa_cp` on it in place.
    pub cp: MatMut<'w, S::d, S::NK>,
}

impl<'w, S: Dims> Encoded<'w, S> {
    /// The encodings at the front of the phase region, and the rest of it.
    pub fn cut(region: &'w mut [f32], s: S) -> Option<(Self, &'w mut [f32])> {
        let mut rest = region;
        let encoded = Self {
            ap: take_mat(&mut rest, s.d(), s.NK())?,
            cp: take_mat(&mut rest, s.d(), s.NK())?,
        };
        Some((encoded, rest))
    }
}

/// Support-side scratch of `prepare`'s self-attention blocks, after the [`Encoded`] support.
pub(crate) struct SupportScratch<'w, S: Dims> {
    /// `A`: the self-attention queries `Wq x` (`d x NK`) then the transposed keys
    /// (`NK x d`); the feed-forward hidden columns (`2d x NK`) once those are dead; the class
    /// means and class values after the block. Cut on use ([`Self::attention`], ...).
    pub a: &'w mut [f32],
    /// Keys `Wk x`, then values `Wv x` (`d x NK`).
    pub values: MatMut<'w, S::d, S::NK>,
    /// The heads' attention outputs stacked, before `Wo` (`d x NK`).
    pub att: MatMut<'w, S::d, S::NK>,
    /// Attention probabilities of one head (one column per query).
    pub p: MatMut<'w, S::NK, S::NK>,
}

impl<'w, S: Dims> SupportScratch<'w, S> {
    /// The buffers from the front of `region`.
    pub fn cut(region: &'w mut [f32], s: S) -> Option<Self> {
        let (d, nk) = (s.d(), s.NK());
        let mut rest = region;
        let a = take(&mut rest, 2 * d.value() * nk.value())?;
        Some(Self {
            a,
            values: take_mat(&mut rest, d, nk)?,
            att: take_mat(&mut rest, d, nk)?,
            p: take_mat(&mut rest, nk, nk)?,
        })
    }

    /// `A` (`a`) as the self-attention queries and transposed keys.
    pub fn attention(
        a: &mut [f32],
        s: S,
    ) -> Option<(MatMut<'_, S::d, S::NK>, MatMut<'_, S::NK, S::d>)> {
        let mut rest = a;
        let q = take_mat(&mut rest, s.d(), s.NK())?;
        Some((q, take_mat(&mut rest, s.NK(), s.d())?))
    }

    /// `A` (`a`) as the feed-forward hidden columns.
    pub fn hidden(a: &mut [f32], s: S) -> Option<MatMut<'_, S::d2, S::NK>> {
        MatMut::from_slice(a, s.d2(), s.NK())
    }

    /// `A` (`a`) as the class means and the class values (`d x N` each).
    pub fn classes(
        a: &mut [f32],
        s: S,
    ) -> Option<(MatMut<'_, S::d, S::N>, MatMut<'_, S::d, S::N>)> {
        let mut rest = a;
        let means = take_mat(&mut rest, s.d(), s.N())?;
        Some((means, take_mat(&mut rest, s.d(), s.N())?))
    }
}

/// Per-query scratch for up to `B` queries classified together (column `m` is query `m`).
pub(crate) struct QueryScratch<'w, S: Dims, B: Dim> {
    /// `q = enc_ap x`, then the block output `a(x) = ca_ap(q, s, v)` in place.
    pub q: MatMut<'w, S::d, B>,
    /// `ca_ap` queries `Wq q`.
    pub q_proj: MatMut<'w, S::d, B>,
    /// Attention probabilities of one head over the `N K` support keys.
    pub p: MatMut<'w, S::NK, B>,
    /// `p` summed per class.
    pub pooled: MatMut<'w, S::N, B>,
    /// `relu(F1 out)`.
    pub hidden: MatMut<'w, S::d2, B>,
    /// The attentive half of the generator's first layer, `G1[d..2d] a(x)`.
    pub ga: MatMut<'w, S::G, B>,
    /// `G2muᵀ x`.
    pub y: MatMut<'w, S::G, B>,
    /// Generator hidden columns `h_i` for [`crate::Task::generated_weights`].
    pub g_hidden: MatMut<'w, S::G, S::N>,
}

/// Per-query buffers of the classifier variants beyond the paper (`formats::Classifier`).
pub(crate) struct Variants<'w, S: Dims, B: Dim> {
    /// The queries of a batch as the model sees them.
    pub queries: MatMut<'w, S::D, B>,
    /// The weights `W[i]` of one query (cosine logits).
    pub weights: MatMut<'w, S::D, S::N>,
    /// The generator hidden columns `h_i` of one query (cosine logits).
    pub hidden: MatMut<'w, S::G, S::N>,
}

impl<'w, S: Dims, B: Dim> QueryScratch<'w, S, B> {
    /// The query buffers (and the variants' when `variants`) from the front of `region`.
    pub fn cut(
        region: &'w mut [f32],
        s: S,
        b: B,
        variants: bool,
    ) -> Option<(Self, Option<Variants<'w, S, B>>)> {
        let (d, n, nk, g) = (s.d(), s.N(), s.NK(), s.G());
        let mut rest = region;
        let scratch = Self {
            q: take_mat(&mut rest, d, b)?,
            q_proj: take_mat(&mut rest, d, b)?,
            p: take_mat(&mut rest, nk, b)?,
            pooled: take_mat(&mut rest, n, b)?,
            hidden: take_mat(&mut rest, s.d2(), b)?,
            ga: take_mat(&mut rest, g, b)?,
            y: take_mat(&mut rest, g, b)?,
            g_hidden: take_mat(&mut rest, g, n)?,
        };
        let variants = match variants {
            true => Some(Variants {
                queries: take_mat(&mut rest, s.D(), b)?,
                weights: take_mat(&mut rest, s.D(), n)?,
                hidden: take_mat(&mut rest, g, n)?,
            }),
            false => None,
        };
        Some((scratch, variants))
    }
}

/// All memory `prepare`, `classify` and `classify_batch` use for compiled sizes, owned by the
/// caller: `LEN` f32 values ([`workspace_len`] of the model's sizes, classifier and batch,
/// computed where the sizes are constants: the configuration aliases, [`crate::awgim_workspace!`],
/// the firmware's generated types) and `B`, the number of queries
/// [`crate::Task::classify_batch`] processes together. A workspace shorter than its model
/// needs does not compile for the paper's classifier, and is refused by `prepare`
/// ([`crate::EngineError::Workspace`]) for the variants.
///
/// ```
/// // Firmware keeps it in a static (behind whatever lock it uses):
/// static WORKSPACE: std::sync::Mutex<engine::Edge1ShotWorkspace> =
///     std::sync::Mutex::new(engine::Edge1ShotWorkspace::new());
/// let workspace = WORKSPACE.lock().unwrap();
/// ```
pub struct Workspace<const LEN: usize, const B: usize> {
    data: [f32; LEN],
}

impl<const LEN: usize, const B: usize> Workspace<LEN, B> {
    /// Size of the workspace in bytes (see the configuration aliases for the shipped values).
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// A zeroed workspace; usable in a `static` initialiser.
    pub const fn new() -> Self {
        const { assert!(B > 0, "the batch size B must be positive") };
        Self { data: [0.0; LEN] }
    }

    /// The values.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
}

impl<const LEN: usize, const B: usize> Default for Workspace<LEN, B> {
    fn default() -> Self {
        Self::new()
    }
}
