//! Caller-owned memory for `prepare` and `classify`, never the heap: either a [`Workspace`]
//! (fixed size from the compiled sizes, `const`-constructible so it can live in a `static`),
//! or, for sizes read at run time, a caller's `&mut [f32]` of [`workspace_len`] values.
//! Both are cut into the same buffers ([`Parts`]), each a column-major [`MatMut`] whose
//! columns are examples (see [`crate::ops`] for the orientation); the model code sees only
//! those.

use formats::{Classifier, Sizes};
use nalgebra::{Dim, Dyn};

use crate::dims::Dims;
use crate::ops::MatMut;

/// Number of buffers in a workspace.
const BUFFERS: usize = 21;

/// The buffers' lengths in f32 values for the sizes `s` and batch `b`, in the order of
/// [`Parts::new`] (and of [`Workspace`]'s fields).
const fn lengths(s: Sizes, b: usize) -> [usize; BUFFERS] {
    let Sizes { d, h, N, K, G, .. } = s;
    let (nk, d2) = (N * K, 2 * d);
    [
        // Prepared: keys_t, class_values (h blocks), context.
        nk * d,
        d * N * h,
        G * N,
        // SupportScratch: x, q, keys, keys_t, values, p, att, hidden, means, class_values.
        d * nk,
        d * nk,
        d * nk,
        nk * d,
        d * nk,
        nk * nk,
        d * nk,
        d2 * nk,
        d * N,
        d * N,
        // QueryScratch: q, q_proj, p, pooled, hidden, ga, y.
        d * b,
        d * b,
        nk * b,
        N * b,
        d2 * b,
        G * b,
        G * b,
        // Generator hidden columns for `generated_weights`.
        G * N,
    ]
}

/// The number of f32 values a workspace for the sizes `sizes`, the classifier `classifier` and
/// `batch` queries at a time holds: the `LEN` of a [`Workspace`], and the length of the slice
/// [`crate::DynModel::prepare`] takes ([`crate::DynModel::workspace_len`]). The classifiers
/// beyond the paper's need [`classifier_len`] more.
pub const fn workspace_len(sizes: Sizes, classifier: Classifier, batch: usize) -> usize {
    let batch = if batch == 0 { 1 } else { batch };
    let extra = match crate::is_paper(classifier) {
        true => 0,
        false => classifier_len(sizes, batch),
    };
    paper_len(sizes, batch) + extra
}

/// [`workspace_len`] for the paper's classifier.
const fn paper_len(sizes: Sizes, batch: usize) -> usize {
    let lengths = lengths(sizes, batch);
    let mut total = 0;
    let mut i = 0;
    while i < BUFFERS {
        total += lengths[i];
        i += 1;
    }
    total
}

/// The f32 values a model whose classifier is not the paper's needs past the paper's
/// ([`ClassifierScratch`]): the paper's workspace does not grow.
const fn classifier_len(s: Sizes, b: usize) -> usize {
    let Sizes { D, N, K, G, .. } = s;
    D * N * K + D * N + D * b + D * N + G * N
}

/// Buffers of the classifier variants beyond the paper (`formats::Classifier`), present only
/// when the model's classifier is not the paper's.
pub(crate) struct ClassifierScratch<'w, S: Dims, B: Dim> {
    /// The support features as the model sees them (centred and normalised, or copied).
    pub support: MatMut<'w, S::D, S::NK>,
    /// The normalised class prototypes `p[i] / |p[i]|` (prototype weights; set by `prepare`).
    pub prototypes: MatMut<'w, S::D, S::N>,
    /// The queries of a batch as the model sees them.
    pub queries: MatMut<'w, S::D, B>,
    /// The weights `W[i]` of one query (cosine logits).
    pub weights: MatMut<'w, S::D, S::N>,
    /// The generator hidden columns `h_i` of one query (cosine logits).
    pub hidden: MatMut<'w, S::G, S::N>,
}

impl<'w, S: Dims, B: Dim> ClassifierScratch<'w, S, B> {
    /// The buffers over `arena` (at least [`classifier_len`] values; [`Parts`] keeps the
    /// arena as one slice, so that a compiled-size task, which never has it, carries only an
    /// empty `Option` of a slice).
    pub fn cut(arena: &'w mut [f32], s: S, b: B) -> Option<Self> {
        let (D, n, nk) = (s.D(), s.N(), s.NK());
        let (support, rest) = arena.split_at_mut_checked(D.value() * nk.value())?;
        let (prototypes, rest) = rest.split_at_mut_checked(D.value() * n.value())?;
        let (queries, rest) = rest.split_at_mut_checked(D.value() * b.value())?;
        let (weights, rest) = rest.split_at_mut_checked(D.value() * n.value())?;
        let (hidden, _) = rest.split_at_mut_checked(s.G().value() * n.value())?;
        Some(Self {
            support: MatMut::from_slice(support, D, nk)?,
            prototypes: MatMut::from_slice(prototypes, D, n)?,
            queries: MatMut::from_slice(queries, D, b)?,
            weights: MatMut::from_slice(weights, D, n)?,
            hidden: MatMut::from_slice(hidden, s.G(), n)?,
        })
    }
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

/// Support-side scratch of `prepare`.
pub(crate) struct SupportScratch<'w, S: Dims> {
    /// Encoded support (`s`, then `X_s enc_cp`); the block's residual input, then its output.
    pub x: MatMut<'w, S::d, S::NK>,
    /// Self-attention queries `Wq x`.
    pub q: MatMut<'w, S::d, S::NK>,
    /// Keys `Wk x` (self-attention, then `ca_ap`).
    pub keys: MatMut<'w, S::d, S::NK>,
    /// `keys` transposed.
    pub keys_t: MatMut<'w, S::NK, S::d>,
    /// Self-attention values `Wv x`.
    pub values: MatMut<'w, S::d, S::NK>,
    /// Attention probabilities of one head (one column per query).
    pub p: MatMut<'w, S::NK, S::NK>,
    /// The heads' attention outputs stacked, before `Wo`.
    pub att: MatMut<'w, S::d, S::NK>,
    /// `relu(F1 out)`.
    pub hidden: MatMut<'w, S::d2, S::NK>,
    /// Class means of the block output (`v_bar`, then `c_bar`).
    pub means: MatMut<'w, S::d, S::N>,
    /// `ca_ap` class values `Wv v_bar`.
    pub class_values: MatMut<'w, S::d, S::N>,
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
}

/// A workspace cut into its buffers.
pub(crate) struct Parts<'w, S: Dims, B: Dim> {
    pub prepared: Prepared<'w, S>,
    pub support: SupportScratch<'w, S>,
    pub queries: QueryScratch<'w, S, B>,
    /// Generator hidden columns `h_i` for [`crate::Task::generated_weights`].
    pub hidden: MatMut<'w, S::G, S::N>,
    /// The arena of the classifier variants' buffers ([`ClassifierScratch::cut`]; `None` for
    /// the paper's classifier).
    pub classifier: Option<&'w mut [f32]>,
}

impl<'w, S: Dims, B: Dim> Parts<'w, S, B> {
    /// The buffers over `slices` (lengths as [`lengths`]); `None` if one is of another length.
    fn new(slices: [&'w mut [f32]; BUFFERS], s: S, b: B) -> Option<Self> {
        let [keys_t, class_values, context, x, q, keys, s_keys_t, values, p, att, hidden, means, s_class_values, b_q, q_proj, b_p, pooled, b_hidden, ga, y, g_hidden] =
            slices;
        let (d, n, nk, g) = (s.d(), s.N(), s.NK(), s.G());
        let blocks = Dyn(n.value() * s.sizes().h);
        Some(Self {
            prepared: Prepared {
                keys_t: MatMut::from_slice(keys_t, nk, d)?,
                class_values: MatMut::from_slice(class_values, d, blocks)?,
                context: MatMut::from_slice(context, g, n)?,
            },
            support: SupportScratch {
                x: MatMut::from_slice(x, d, nk)?,
                q: MatMut::from_slice(q, d, nk)?,
                keys: MatMut::from_slice(keys, d, nk)?,
                keys_t: MatMut::from_slice(s_keys_t, nk, d)?,
                values: MatMut::from_slice(values, d, nk)?,
                p: MatMut::from_slice(p, nk, nk)?,
                att: MatMut::from_slice(att, d, nk)?,
                hidden: MatMut::from_slice(hidden, s.d2(), nk)?,
                means: MatMut::from_slice(means, d, n)?,
                class_values: MatMut::from_slice(s_class_values, d, n)?,
            },
            queries: QueryScratch {
                q: MatMut::from_slice(b_q, d, b)?,
                q_proj: MatMut::from_slice(q_proj, d, b)?,
                p: MatMut::from_slice(b_p, nk, b)?,
                pooled: MatMut::from_slice(pooled, n, b)?,
                hidden: MatMut::from_slice(b_hidden, s.d2(), b)?,
                ga: MatMut::from_slice(ga, g, b)?,
                y: MatMut::from_slice(y, g, b)?,
            },
            hidden: MatMut::from_slice(g_hidden, g, n)?,
            classifier: None,
        })
    }

    /// `arena` cut into the buffers for the sizes `s` and batch `b`, with the
    /// [`ClassifierScratch`] after them when `classifier` is set; `None` if it is shorter than
    /// [`paper_len`] (plus [`classifier_len`]; values past that are unused).
    pub fn in_arena(arena: &'w mut [f32], s: S, b: B, classifier: bool) -> Option<Self> {
        let (arena, extra) = arena.split_at_mut_checked(paper_len(s.sizes(), b.value()))?;
        let classifier = match classifier {
            true if extra.len() >= classifier_len(s.sizes(), b.value()) => Some(extra),
            true => return None,
            false => None,
        };
        let mut rest = arena;
        let slices = lengths(s.sizes(), b.value()).map(|n| {
            let whole = core::mem::take(&mut rest);
            let (head, tail) = whole.split_at_mut(n.min(whole.len()));
            rest = tail;
            head
        });
        let mut parts = Self::new(slices, s, b)?;
        parts.classifier = classifier;
        Some(parts)
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
