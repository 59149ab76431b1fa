//! The AWGIM evaluation path, read top to bottom against AWGIM.md ("Forward pass for one
//! task"), with W = mu (no noise), no dropout and per-row layer norm. Examples are columns
//! (see [`crate::ops`]): AWGIM.md's `x W` is written `W x` here, `W` being the file's matrix
//! seen column-major.
//!
//! Support-side work, once per support set: enrollment ([`Enrollment::push`], one labelled
//! row at a time as it arrives) encodes each row, `s_r = enc_ap x_r` and `enc_cp x_r`; then
//! `prepare` ([`Enrollment::prepare`]):
//! 1. attentive path: `s = enc_ap X_s`, `v = sa_ap(s, s, s)`, every column of `v` replaced by
//!    its class mean `v_bar[i]`; for `ca_ap`, the keys `Wk s` and, per head `j` and class `i`,
//!    the value already through the output projection, `U_j[i] = Wo_j Wv_j v_bar[i]`;
//! 2. contextual path: `c = sa_cp(enc_cp X_s, ..)`, `c_bar[i]` = class mean;
//! 3. the class half of the generator's first layer, `G1[0..d] c_bar[i]`.
//!
//! Per query `x` (`classify`):
//! 1. `q = enc_ap x`; `a(x) = ca_ap(q, s, v)`. The values of a class are equal, so head `j`
//!    contributes `sum_r p_jr Wo_j Wv_j v_r = sum_i P_ji U_j[i]` with `P_ji` the probabilities
//!    of class `i`'s keys summed: `N` columns per head instead of `N K`, and no `Wo` product
//!    per query;
//! 2. generator input `z = [c_bar[i] ; a(x)]`, so `G1 z = G1[0..d] c_bar[i] + G1[d..2d] a(x)`
//!    and `h_i = relu(G1 z)`, once per class (the K support rows of a class are equal inputs);
//! 3. `W[i] = mu = G2mu h_i` and `l[i] = x . W[i] = h_i . (G2muᵀ x)`: `G2muᵀ x` (G x D) is
//!    computed once per query instead of `W` (N x G x D).
//!
//! Cost per query in multiply-adds, paper configuration (D = 640, d = 128, h = 4, N = 5,
//! G = 256, K = 5): `enc_ap x` 81,920; `G2muᵀ x` 163,840; `ca_ap`: `Wq q` 16,384, scores over
//! the N K keys 3,200, class values `sum_i P_ji U_j[i]` 2,560, `F1` 32,768, `F2` 32,768;
//! `G1[d..2d] a(x)` 32,768; logits 1,280. Total 367,488 multiply-adds = 0.735 MFLOP (K = 1:
//! 364,928). The class-value fold saves `Wo` (16,384) and the N K value mix (3,200) per
//! query for N d^2 = 81,920 once in `prepare`. Forming `W` instead of `G2muᵀ x` would add
//! N G D = 819,200 per query. `prepare` costs 11.7 M multiply-adds for K = 5 (2.6 M for
//! K = 1), nearly all in the two encoders and the two self-attention blocks over the N K
//! support examples.
//!
//! Beyond the paper (the file's [`Classifier`], run by [`DynModel`] and [`VariantModel`],
//! whose workspaces hold their buffers past the paper's; a compiled-size [`Model`] has their
//! code compiled out, so its paper classifier runs exactly the paper's code, and
//! [`Model::load`] refuses them with [`EngineError::Classifier`]), as the trainer's
//! evaluation graph computes them, with `n(v) = v / sqrt(|v|^2 + 1e-12)`:
//! - centred features: every support row and query is replaced by `n(x - c)` before
//!   anything else (into workspace scratch), `c` the file's `feat.center`; 3 D operations a
//!   row (D = 640: 1,920 per query);
//! - prototype weights: `prepare` takes `p_i = n(mean of class i's support rows)` (as the model
//!   sees them) once; `W[i] = p_i + G2mu h_i`;
//! - dot logits with prototype weights: `l[i] = x . p_i + h_i . (G2muᵀ x)` without forming
//!   `W`: N D more per query (paper sizes 3,200, +0.9%);
//! - cosine logits: `l[i] = s x . W[i] / sqrt(|W[i]|^2 + 1e-12)` with the file's
//!   `logit_scale` `s`. The norm needs `W`, so it is formed per query (the kernel of
//!   `generated_weights`): N G D for `G2mu [h_0 .. h_N-1]`, N D for the prototypes and 2 N D
//!   for the two dots, in place of `G2muᵀ x` (G D, skipped) and the N G logit dot. Paper sizes:
//!   1,031,168 multiply-adds a query for K = 5 (2.8x the paper's 367,488; with centred
//!   features 1,920 more). Computing `|W[i]|^2` without `W`
//!   (`h_iᵀ (G2muᵀ G2mu) h_i + 2 p_i . G2mu h_i + |p_i|^2`) needs the G x G Gram matrix,
//!   `G^2 D` to form (42 M at paper sizes, once per model) and N G^2 a query (327,680): not
//!   done, a second code path whose Gram matrix a model file does not hold.
//!
//! Streaming enrollment and one arena (issue 11's RAM): the encoders are the only support-side
//! products that need the support rows (`D` values each); everything after them works on the
//! encodings (`d` each). So each row is encoded when it arrives and only its two encodings
//! are kept (`2 d N K` values: 25,600 bytes for paper 5-shot, instead of the rows' 64,000),
//! and the prototype variants keep per-class running means (`D N`, summed as `class_means`
//! sums: `1/K` times each shot in arrival order, so the logits equal `prepare` on the
//! class-major rows bit for bit when each class's shots arrive in shot order). The encoders
//! then run as `N K` one-column products instead of one `N K`-column product: the same
//! multiply-adds, but each weight is read once per row instead of once per tile of columns
//! (paper 5-shot on the M4, `cargo test -p tests --release --test device_qemu paper_5shot`:
//! enrollment + `prepare` 26,847,920 instructions against 25,859,280 before, +3.8%; on the
//! host 401 against 398 us, docs/engine.md). The workspace is then one arena cut two ways
//! (`crate::workspace`): the prepared state (`keys_t`, `U`, `G1[0..d] c_bar`), the shot counts
//! and the int8 scratch live throughout; enrollment and `prepare` use one region for the
//! encodings and the self-attention scratch, which the queries' buffers reuse once `prepare`
//! is done. Within `prepare` the keys `Wk x` go through the values' buffer on their way to
//! `keys_t`, and the feed-forward hidden columns (`2d N K`) take the place of the dead
//! self-attention queries and keys: no arithmetic changes. Paper 5-shot, one query at a time:
//! 110,044 bytes ([`crate::workspace_len`]) against 147,516 + 64,000 of support rows
//! (115,452 bytes of RAM in all on the M4 with the firmware's statics and stack, under the
//! STM32F405's 128 KiB); per query the code is the same (the device's instruction counts
//! per phase are in firmware/README.md).
//!
//! int8 weights (issue 11): a dense layer `formats::tensors::quant_axis` names may be int8 in
//! the file (`trainer export --int8`); each is then a `crate::ops::int8::QuantMat` borrowed
//! in place and multiplied with integer sums (`ops::int8`: each input column rounded to i16,
//! the only approximation; `tests/int8.rs` states and tests the bound against the f32 engine
//! on the dequantised weights). `G2mu` is stored a scale per input (`G` rows of `D`), so
//! `G2muᵀ x` is the same kind of product. Two products use part of a row: `G1`'s halves
//! (`G1[0..d] c_bar[i]`, `G1[d..2d] a(x)`: depth ranges of each of its `G` rows) and the
//! class-value fold `U_j = Wo_j (Wv_j v_bar)` (head `j`'s inputs of `Wo`), both through
//! `ops::int8::mul_to_range`. Cosine logits form `W` from `G2mu`'s dequantised
//! rows in f32 (N G D a query, as for f32).
//!
//! Not done: folding `Wq` into the `ca_ap` keys (`(Wq_j q)ᵀ (Wk_j s) = qᵀ (Wq_jᵀ Wk_j s)`)
//! replaces `Wq q` and the scores (19,584 multiply-adds per query for K = 5) by h N K d =
//! 12,800, but costs N K d^2 = 409,600 more in `prepare`. By these counts it is a loss below
//! 60 queries per support set for K = 5 (the 5-query call would be slower), and for K = 1
//! it saves 14,464 per query for 81,920 in `prepare`, about 2% of a 75-query task: not worth
//! a second code path.

mod enroll;
mod load;

use core::slice::ChunksExact;
use formats::tensors::{CA_AP, FEATURE_CENTER, GENERATOR, LOGIT_SCALE, SA_AP, SA_CP};
use formats::{
    Classifier, EncoderKind, FeatureNorm, LayerNormKind, LogitsKind, ModelFile, Sizes, WeightsKind,
};
use nalgebra::{Const, Dim, Dyn, MatrixViewMut};

use crate::dims::{Dims, Dynamic, Fixed};
use crate::error::{EngineError, Input, Stage};
use crate::ops::attention::{self, head};
use crate::ops::{all_finite, relu, relu_sum_dot, Mat, MatMut};
use crate::workspace::{
    Arena, Encoded, Prepared, QueryScratch, SupportScratch, Variants, Workspace,
};
pub use enroll::{DynEnrollment, Enrollment, FixedEnrollment};
use load::{Block, Dense, Encoders, G2Mu, Generator};

/// An AWGIM model whose weights are borrowed, without a copy, from a model file in memory.
///
/// Sizes are AWGIM.md's ([`Sizes`]), given by `S`: compiled in ([`Fixed`], the type
/// [`Model`] and its aliases [`crate::Paper5Shot`], ...) or read from the file ([`Dynamic`],
/// the type [`DynModel`]). The code is the same for both.
pub struct Awgim<'a, S: Dims> {
    dims: S,
    encoders: Encoders<'a, S>,
    sa_ap: Block<'a, S>,
    ca_ap: Block<'a, S>,
    sa_cp: Block<'a, S>,
    generator: Generator<'a, S>,
    /// `1 / sqrt(d / h)`.
    scale: f32,
    /// The file's classifier ([`Classifier::PAPER`] unless the file says otherwise).
    classifier: Classifier,
    /// The feature centre `c` ([`FeatureNorm::CenteredL2`]).
    center: Option<&'a [f32]>,
    /// The cosine logits' scale `s` ([`LogitsKind::Cosine`]).
    logit_scale: Option<f32>,
}

/// The epsilon of every L2 normalisation, as the trainer's: `x / sqrt(|x|^2 + eps)`.
const NORM_EPSILON: f32 = 1e-12;

/// Each column of `columns` (`width` values each) divided by `sqrt(|column|^2 + eps)`.
fn l2_normalise(columns: &mut [f32], width: usize) {
    for column in columns.chunks_exact_mut(width.max(1)) {
        let norm = libm::sqrtf(column.iter().map(|v| v * v).sum::<f32>() + NORM_EPSILON);
        for v in column {
            *v /= norm;
        }
    }
}

/// The generator hidden columns of one query, `h_i = relu(G1[0..d] c_bar[i] + G1[d..2d] a(x))`,
/// into `hidden` (`g` values a column) from the class halves `contexts` and `ga` (its first
/// `g` values).
fn hidden_columns(hidden: &mut [f32], g: usize, contexts: ChunksExact<'_, f32>, ga: &[f32]) {
    for (h_i, context) in hidden.chunks_exact_mut(g.max(1)).zip(contexts) {
        for ((hidden, &c), &a) in h_i.iter_mut().zip(context).zip(ga) {
            *hidden = relu(c + a);
        }
    }
}

/// `a . b`.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The model compiled for fixed sizes: `D` features, latent `d`, `h` heads, `N` ways, `K`
/// shots, generator hidden width `G`, and the derived `NK = N * K` and `d2 = 2 * d` (checked
/// at compile time), with the paper's classifier (the variants' code compiled out). Use the
/// aliases ([`crate::Paper5Shot`], ...) or [`crate::awgim_model!`].
pub type Model<
    'a,
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
> = Awgim<'a, Fixed<D, d, h, N, K, G, NK, d2, false>>;

/// [`Model`] with the classifier variants compiled in: runs every classifier the trainer
/// writes (centred features, prototype weights, cosine logits; see the module doc), in a
/// [`Workspace`] sized for the file's classifier ([`crate::awgim_workspace!`]`(S, C; B)`).
/// [`crate::awgim_model!`]`('a; S, C)` picks it for a classifier `C` other than the paper's.
pub type VariantModel<
    'a,
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
> = Awgim<'a, Fixed<D, d, h, N, K, G, NK, d2, true>>;

/// The model for sizes read from the file: any configuration the trainer writes.
pub type DynModel<'a> = Awgim<'a, Dynamic>;

/// The logits of one query and the class with the largest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction<const N: usize> {
    /// `l[i] = x . W[i]`.
    pub logits: [f32; N],
    /// `argmax_i l[i]` (the first on ties).
    pub class: usize,
}

impl<const N: usize> Prediction<N> {
    /// All-zero logits, class 0: a placeholder for output buffers.
    pub const fn zeroed() -> Self {
        Self {
            logits: [0.0; N],
            class: 0,
        }
    }
}

/// Where the logits of queries go: [`Prediction`]s (with their classes) or the rows of a
/// logits matrix.
trait Outputs {
    /// How many queries it holds.
    fn count(&self) -> usize;
    /// The logits of query `m` (empty past the last).
    fn logits(&mut self, m: usize) -> &mut [f32];
    /// Records the predicted class of query `m`.
    fn set_class(&mut self, m: usize, class: usize);
}

impl<const N: usize> Outputs for [Prediction<N>] {
    fn count(&self) -> usize {
        self.len()
    }
    fn logits(&mut self, m: usize) -> &mut [f32] {
        self.get_mut(m).map_or(&mut [], |p| &mut p.logits)
    }
    fn set_class(&mut self, m: usize, class: usize) {
        if let Some(p) = self.get_mut(m) {
            p.class = class;
        }
    }
}

/// `M` rows of `N` logits, one after the other.
struct LogitRows<'o> {
    data: &'o mut [f32],
    ways: usize,
}

impl Outputs for LogitRows<'_> {
    fn count(&self) -> usize {
        self.data.len() / self.ways.max(1)
    }
    fn logits(&mut self, m: usize) -> &mut [f32] {
        let start = (m * self.ways).min(self.data.len());
        let rest = &mut self.data[start..];
        let len = self.ways.min(rest.len());
        &mut rest[..len]
    }
    fn set_class(&mut self, _: usize, _: usize) {}
}

/// Fails on the first non-finite entry of `rows` (rows of `width` values), numbering rows
/// from `row0`.
#[inline]
fn check_finite(rows: &[f32], width: usize, input: Input, row0: usize) -> Result<(), EngineError> {
    if all_finite(rows) {
        return Ok(());
    }
    for (r, row) in rows.chunks(width.max(1)).enumerate() {
        if let Some(column) = row.iter().position(|v| !v.is_finite()) {
            return Err(EngineError::NonFiniteInput {
                input,
                row: row0 + r,
                column,
            });
        }
    }
    Ok(())
}

/// `means[:, i]` = mean of columns `i K..(i+1) K` (class-major support), summed as nalgebra's
/// `column_mean` does (`1/K` times each column, added in order).
fn class_means<R: Dim, NK: Dim, N: Dim>(
    columns: &Mat<'_, R, NK>,
    means: &mut MatMut<'_, R, N>,
    k: usize,
) {
    let denom = 1.0 / k as f32;
    for (i, mean) in means.column_slices_mut().enumerate() {
        mean.fill(0.0);
        for column in columns
            .as_slice()
            .chunks_exact(mean.len().max(1))
            .skip(i * k)
            .take(k)
        {
            for (m, &c) in mean.iter_mut().zip(column) {
                *m += denom * c;
            }
        }
    }
}

impl<
        'a,
        const D: usize,
        const d: usize,
        const h: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const d2: usize,
        const V: bool,
    > Awgim<'a, Fixed<D, d, h, N, K, G, NK, d2, V>>
{
    /// Compile-time check of the size parameters, evaluated by [`Model::load`] and
    /// [`Model::prepare`], so an inconsistent set of sizes does not compile:
    ///
    /// ```compile_fail
    /// // NK must be N * K = 25.
    /// let _ = engine::Model::<64, 32, 4, 5, 5, 64, 24, 64>::load(&[]);
    /// ```
    /// ```compile_fail
    /// // 3 heads do not divide d = 32.
    /// let _ = engine::Model::<64, 32, 3, 5, 1, 64, 5, 64>::load(&[]);
    /// ```
    pub(crate) const CHECK_SIZES: () = {
        assert!(
            D > 0 && d > 0 && h > 0 && N > 0 && K > 0 && G > 0,
            "sizes must be positive"
        );
        assert!(d % h == 0, "the heads h must divide the latent size d");
        assert!(NK == N * K, "NK must equal N * K");
        assert!(d2 == 2 * d, "d2 must equal 2 * d");
    };

    /// The sizes this type is compiled for.
    pub const SIZES: Sizes = Sizes { D, d, h, N, K, G };

    /// Checks a model file (through [`formats::parse`]) and borrows its weights in place.
    ///
    /// The buffer must be 4-byte aligned on a little-endian target (a file in
    /// [`formats::Aligned`], [`formats::include_model!`] or `formats::read_aligned`); the file's
    /// configuration must match the compiled sizes, use per-row layer norm and the attention
    /// encoder; a [`Model`] takes the paper's classifier only ([`EngineError::Classifier`]
    /// otherwise), a [`VariantModel`] any. Inference and training files are both accepted.
    pub fn load(bytes: &'a [u8]) -> Result<Self, EngineError> {
        const { Self::CHECK_SIZES };
        let file = formats::parse(bytes)?;
        // Each size under the header field's name (the error names the field).
        let (compiled, found) = (Self::SIZES, file.config().sizes());
        let sizes = [
            ("feature_dim", compiled.D, found.D),
            ("latent_dim", compiled.d, found.d),
            ("heads", compiled.h, found.h),
            ("ways", compiled.N, found.N),
            ("shots", compiled.K, found.K),
            ("generator_hidden", compiled.G, found.G),
        ];
        Self::check_variant(&file)?;
        // A `Model` has the variants' code compiled out.
        if !V && file.config().classifier != Classifier::PAPER {
            return Err(EngineError::Classifier(file.config().classifier));
        }
        for (field, expected, found) in sizes {
            if expected != found {
                let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                return Err(EngineError::ConfigMismatch {
                    field,
                    expected: size(expected),
                    found: size(found),
                });
            }
        }
        Self::borrow(&file, Fixed)
    }

    /// Starts enrolling a support set in `workspace` ([`Enrollment::push`] one labelled row
    /// at a time, in any order; [`Enrollment::prepare`] when the last shot is in).
    /// `workspace` must hold [`crate::workspace_len`] of these sizes, the file's classifier
    /// and `B` values (a shorter one does not compile for the paper's classifier, and is
    /// [`EngineError::Workspace`] for the variants).
    pub fn enroll<'m, 'w, const LEN: usize, const B: usize>(
        &'m self,
        workspace: &'w mut Workspace<LEN, B>,
    ) -> Result<FixedEnrollment<'m, 'w, 'a, D, d, h, N, K, G, NK, d2, V, B>, EngineError> {
        const {
            let () = Self::CHECK_SIZES;
            assert!(
                LEN >= crate::workspace_len(Self::SIZES, Classifier::PAPER, B),
                "the workspace is shorter than workspace_len(sizes, Classifier::PAPER, B)"
            );
        };
        self.enroll_in(workspace.as_mut_slice(), Const)
    }

    /// Does all support-side work once and returns a handle that classifies queries: the
    /// rows of `support` enrolled in order ([`Self::enroll`]), then prepared.
    ///
    /// `support` holds the `N x K` support features class-major: rows `i*K..(i+1)*K` are class
    /// `i`. Fails on a non-finite feature, or if a computed value overflows.
    pub fn prepare<'m, 'w, const LEN: usize, const B: usize>(
        &'m self,
        workspace: &'w mut Workspace<LEN, B>,
        support: &[[f32; D]; NK],
    ) -> Result<FixedTask<'m, 'w, 'a, D, d, h, N, K, G, NK, d2, V, B>, EngineError> {
        let mut enrollment = self.enroll(workspace)?;
        enrollment.push_all(support.as_flattened())?;
        enrollment.prepare()
    }
}

impl<'a> DynModel<'a> {
    /// Checks a model file (through [`formats::parse`]) and borrows its weights in place,
    /// with the sizes the file gives: any configuration of per-row layer norm and the
    /// attention encoder, with any classifier. The buffer must be 4-byte aligned (see
    /// [`Model::load`]).
    pub fn load(bytes: &'a [u8]) -> Result<Self, EngineError> {
        let file = formats::parse(bytes)?;
        Self::check_variant(&file)?;
        let sizes = file.config().sizes();
        let dims = Dynamic::new(sizes).ok_or(EngineError::Sizes(sizes))?;
        Self::borrow(&file, dims)
    }

    /// The f32 values of the workspace [`Self::prepare`] needs for `batch` queries at a time.
    /// ([`crate::workspace_len`] of its sizes and classifier: the variants need room for
    /// their normalised features, prototypes and weights as well).
    pub fn workspace_len(&self, batch: usize) -> usize {
        crate::workspace_len(self.dims.sizes(), self.classifier, batch)
    }

    /// [`Model::enroll`] with the workspace in `workspace` (at least
    /// [`Self::workspace_len`]`(batch)` values, from wherever the caller keeps memory).
    pub fn enroll<'m, 'w>(
        &'m self,
        workspace: &'w mut [f32],
        batch: usize,
    ) -> Result<DynEnrollment<'m, 'w, 'a>, EngineError> {
        self.enroll_in(workspace, Dyn(batch.max(1)))
    }

    /// [`Model::prepare`] with the workspace in `workspace` (at least
    /// [`Self::workspace_len`]`(batch)` values, from wherever the caller keeps memory) and the
    /// support as `N K` rows of `D` values, class-major, one after the other.
    pub fn prepare<'m, 'w>(
        &'m self,
        workspace: &'w mut [f32],
        batch: usize,
        support: &[f32],
    ) -> Result<DynTask<'m, 'w, 'a>, EngineError> {
        let mut enrollment = self.enroll(workspace, batch)?;
        let D = self.dims.sizes().D;
        let expected = self.dims.NK().value() * D;
        if support.len() != expected {
            return Err(EngineError::InputLength {
                input: Input::Support,
                expected,
                found: support.len(),
            });
        }
        enrollment.push_all(support)?;
        enrollment.prepare()
    }
}

impl<'a, S: Dims> Awgim<'a, S> {
    /// The sizes of this model.
    pub fn sizes(&self) -> Sizes {
        self.dims.sizes()
    }

    /// Refuses the variants the engine does not implement.
    fn check_variant(file: &ModelFile<'_>) -> Result<(), EngineError> {
        let config = file.config();
        if config.layer_norm == LayerNormKind::TaskWide {
            return Err(EngineError::TaskWideLayerNorm);
        }
        if config.encoder == EncoderKind::Mlp {
            return Err(EngineError::MlpEncoder);
        }
        Ok(())
    }

    /// Borrows the typed parameters of `file` for the sizes `dims`.
    fn borrow(file: &ModelFile<'a>, dims: S) -> Result<Self, EngineError> {
        let epsilon = file.config().ln_epsilon;
        let classifier = file.config().classifier;
        let Sizes { D, d, h, .. } = dims.sizes();
        let center = match classifier.features {
            FeatureNorm::Raw => None,
            FeatureNorm::CenteredL2 => Some(load::vector(file, FEATURE_CENTER, D)?),
        };
        let logit_scale = match classifier.logits {
            LogitsKind::Dot => None,
            LogitsKind::Cosine => match load::vector(file, LOGIT_SCALE, 1)? {
                [scale] => Some(*scale),
                _ => None,
            },
        };
        Ok(Self {
            dims,
            encoders: Encoders::load(file, dims)?,
            sa_ap: Block::load(file, dims, &SA_AP, epsilon)?,
            ca_ap: Block::load(file, dims, &CA_AP, epsilon)?,
            sa_cp: Block::load(file, dims, &SA_CP, epsilon)?,
            generator: Generator::load(file, dims, &GENERATOR)?,
            scale: 1.0 / libm::sqrtf((d / h) as f32),
            classifier,
            center,
            logit_scale,
        })
    }

    /// The rows of head `j`.
    fn head(&self, j: usize) -> core::ops::Range<usize> {
        let Sizes { d, h, .. } = self.dims.sizes();
        head(d, h, j)
    }

    /// Whether this model runs a classifier beyond the paper's (never for a [`Model`]).
    fn variants(&self) -> bool {
        S::CLASSIFIERS && self.classifier != Classifier::PAPER
    }

    /// The error for a workspace too short for `batch` queries (`found` values).
    fn short_workspace(&self, batch: usize, found: usize) -> EngineError {
        EngineError::Workspace {
            needed: crate::workspace_len(self.dims.sizes(), self.classifier, batch),
            found,
        }
    }

    /// An empty enrollment over `arena`.
    fn enroll_in<'m, 'w, B: Dim>(
        &'m self,
        arena: &'w mut [f32],
        batch: B,
    ) -> Result<Enrollment<'m, 'w, 'a, S, B>, EngineError> {
        let found = arena.len();
        let arena = Arena::cut(arena, self.dims, batch.value(), self.variants())
            .ok_or(self.short_workspace(batch.value(), found))?;
        Ok(Enrollment::new(self, arena, batch))
    }

    /// `prepare` on the enrolled support: the support's encodings `encoded`, the rest of the
    /// phase region after them `rest`, filling `p`.
    fn prepare_support(
        &self,
        encoded: &mut Encoded<'_, S>,
        rest: &mut [f32],
        scratch: &mut [i16],
        p: &mut Prepared<'_, S>,
    ) -> Result<(), EngineError> {
        let s = self.dims;
        let Sizes { h, N, K, .. } = s.sizes();
        let mut sc = SupportScratch::cut(rest, s).ok_or(self.short_workspace(1, 0))?;

        // 1. Attentive path: s = enc_ap X_s (enrolled); the ca_ap keys Wk s; v = sa_ap(s, s, s)
        //    and its class means v_bar; the ca_ap class values through the output projection,
        //    per head: U_j = Wo_j Wv_j v_bar.
        self.ca_ap
            .wk
            .mul_to(&encoded.ap.rb(), scratch, &mut sc.values);
        sc.values.view().transpose_to(&mut p.keys_t.view_mut());
        self.self_attention(&self.sa_ap, &mut encoded.ap, &mut sc, scratch, Stage::SaAp)?;
        let (mut means, mut class_values) =
            SupportScratch::classes(sc.a, s).ok_or(self.short_workspace(1, 0))?;
        class_means(&encoded.ap.rb(), &mut means, K);
        self.ca_ap
            .wv
            .mul_to(&means.rb(), scratch, &mut class_values);
        for j in 0..h {
            let head = self.head(j);
            let mut u = p.class_values.columns_mut(j * N, N);
            match &self.ca_ap.wo {
                Dense::F32(wo) => {
                    let mut u = u.view_mut();
                    let mut u = u.columns_generic_mut(0, s.N());
                    u.gemm(
                        1.0,
                        &wo.view().columns(head.start, head.len()),
                        &class_values.view().rows(head.start, head.len()),
                        0.0,
                    );
                }
                // int8: Wo_j is the depth range `head` of every row, applied to head j's rows
                // of the class values (copied together into `means`, which is dead).
                #[cfg(feature = "int8")]
                Dense::I8(wo) => {
                    let rows = head.len();
                    let packed = &mut means.as_mut_slice()[..rows * N];
                    for (m, c) in packed
                        .chunks_exact_mut(rows.max(1))
                        .zip(class_values.column_slices_mut())
                    {
                        m.copy_from_slice(&c[head.clone()]);
                    }
                    if let Some(b) = Mat::from_slice(packed, Dyn(rows), Dyn(N)) {
                        let n = u.ncols().value();
                        crate::ops::int8::mul_to_range(
                            wo,
                            head.start,
                            b,
                            scratch,
                            u.columns_mut(0, n),
                        );
                    }
                }
            }
        }

        // 2. Contextual path: c = sa_cp(enc_cp X_s, ..); c_bar[i] = mean of class i.
        self.self_attention(&self.sa_cp, &mut encoded.cp, &mut sc, scratch, Stage::SaCp)?;
        let (mut means, _) = SupportScratch::classes(sc.a, s).ok_or(self.short_workspace(1, 0))?;
        class_means(&encoded.cp.rb(), &mut means, K);

        // 3. The class half of the generator's first layer: G1[0..d] c_bar[i].
        self.generator
            .g1_context
            .mul_to(&means.rb(), scratch, &mut p.context);

        let finite = all_finite(p.keys_t.as_slice())
            && all_finite(p.class_values.as_slice())
            && all_finite(p.context.as_slice());
        if !finite {
            return Err(EngineError::NonFinite {
                stage: Stage::Support,
            });
        }
        Ok(())
    }

    /// The features `rows` (rows of `D` values) as the model sees them, into `out`: with
    /// [`FeatureNorm::CenteredL2`] `(x - c) / sqrt(|x - c|^2 + eps)`, else copied.
    fn features(&self, rows: &[f32], out: &mut [f32]) {
        let D = self.dims.D().value().max(1);
        for (out, row) in out.chunks_exact_mut(D).zip(rows.chunks_exact(D)) {
            out.copy_from_slice(row);
            if let Some(center) = self.center {
                for (v, &c) in out.iter_mut().zip(center) {
                    *v -= c;
                }
                l2_normalise(out, D);
            }
        }
    }

    /// `x = block(x, x, x)` over the support columns (AWGIM.md's `block(q, k, v)` with
    /// `q = k = v = x`): per head `a_j = (Wv_j x) softmax((Wk_j x)ᵀ (Wq_j x) / sqrt(d/h))`, then
    /// `x = x + Wo [a_1; ..; a_h]` and [`Self::feed_forward`].
    fn self_attention(
        &self,
        block: &Block<'a, S>,
        x: &mut MatMut<'_, S::d, S::NK>,
        sc: &mut SupportScratch<'_, S>,
        scratch: &mut [i16],
        stage: Stage,
    ) -> Result<(), EngineError> {
        let s = self.dims;
        let (mut q, mut keys_t) =
            SupportScratch::attention(sc.a, s).ok_or(self.short_workspace(1, 0))?;
        block.wq.mul_to(&x.rb(), scratch, &mut q);
        block.wk.mul_to(&x.rb(), scratch, &mut sc.values);
        sc.values.view().transpose_to(&mut keys_t.view_mut());
        block.wv.mul_to(&x.rb(), scratch, &mut sc.values);
        for j in 0..s.sizes().h {
            let head = self.head(j);
            if !attention::probabilities(&q.rb(), &keys_t.rb(), &head, self.scale, &mut sc.p) {
                return Err(EngineError::NonFinite { stage });
            }
            attention::mix(&sc.values.rb(), &sc.p.rb(), &head, &mut sc.att);
        }
        block.wo.mul_add_to(&sc.att.rb(), scratch, x);
        let mut hidden = SupportScratch::hidden(sc.a, s).ok_or(self.short_workspace(1, 0))?;
        Self::feed_forward(block, x, &mut hidden, scratch, stage)
    }

    /// The rest of a block after the attention residual `x = q + sum_j a_j Wo_j`:
    /// `x = LN1(x)`; `x = LN2(x + F2 relu(F1 x))`, per column.
    fn feed_forward<C: Dim>(
        block: &Block<'a, S>,
        x: &mut MatMut<'_, S::d, C>,
        hidden: &mut MatMut<'_, S::d2, C>,
        scratch: &mut [i16],
        stage: Stage,
    ) -> Result<(), EngineError> {
        if !block.ln1.apply(x) {
            return Err(EngineError::NonFinite { stage });
        }
        block.f1.mul_to(&x.rb(), scratch, hidden);
        for v in hidden.as_mut_slice() {
            *v = relu(*v);
        }
        block.f2.mul_add_to(&hidden.rb(), scratch, x);
        if !block.ln2.apply(x) {
            return Err(EngineError::NonFinite { stage });
        }
        Ok(())
    }

    /// Per-query steps 1 and 2a for the first `n` columns of `scratch.q`, which hold
    /// `q = enc_ap x`: `a(x) = ca_ap(q, s, v)` (into `scratch.q`) and the attentive half of the
    /// generator's first layer `G1[d..2d] a(x)` (into `scratch.ga`).
    fn attentive_half<B: Dim>(
        &self,
        prepared: &Prepared<'_, S>,
        scratch: &mut QueryScratch<'_, S, B>,
        int8: &mut [i16],
        n: usize,
    ) -> Result<(), EngineError> {
        let N = self.dims.sizes().N;
        let non_finite = EngineError::NonFinite { stage: Stage::CaAp };
        let mut q = scratch.q.columns_mut(0, n);
        let mut q_proj = scratch.q_proj.columns_mut(0, n);
        let mut p = scratch.p.columns_mut(0, n);
        let mut pooled = scratch.pooled.columns_mut(0, n);
        self.ca_ap.wq.mul_to(&q.rb(), int8, &mut q_proj);
        let class_values = prepared.class_values.rb();
        for j in 0..self.dims.sizes().h {
            let head = self.head(j);
            let keys_t = prepared.keys_t.rb();
            if !attention::probabilities(&q_proj.rb(), &keys_t, &head, self.scale, &mut p) {
                return Err(non_finite);
            }
            attention::pool(&p.rb(), &mut pooled);
            // q += U_j pooled_j, through the products' kernel (nalgebra's gemm of these small
            // matrices ran several instructions per multiply-add on the M4).
            let u = class_values.columns(j * N, N);
            if let Some(u) = Mat::from_slice(u.as_slice(), self.dims.d(), self.dims.N()) {
                crate::ops::linear::mul_add_to(&u, &pooled.rb(), &mut q);
            }
        }
        Self::feed_forward(
            &self.ca_ap,
            &mut q,
            &mut scratch.hidden.columns_mut(0, n),
            int8,
            Stage::CaAp,
        )?;
        self.generator
            .g1_attentive
            .mul_to(&q.rb(), int8, &mut scratch.ga.columns_mut(0, n));
        Ok(())
    }

    /// Logits of the queries `rows` (rows of `D` values, at most `B` of them) into `out`:
    /// `l[i] = h_i . (G2muᵀ x)` with `h_i = relu(G1[0..d] c_bar[i] + G1[d..2d] a(x))`. Rows
    /// are numbered from `row0`, in errors and in `out`.
    fn classify_rows<B: Dim, O: Outputs + ?Sized>(
        &self,
        prepared: &Prepared<'_, S>,
        scratch: &mut QueryScratch<'_, S, B>,
        variants: Option<(&mut Variants<'_, S, B>, Option<&MatMut<'_, S::D, S::N>>)>,
        int8: &mut [i16],
        rows: &[f32],
        out: &mut O,
        row0: usize,
    ) -> Result<(), EngineError> {
        let D = self.dims.D();
        check_finite(rows, D.value(), Input::Query, row0)?;
        let n = (rows.len() / D.value().max(1))
            .min(out.count().saturating_sub(row0))
            .min(scratch.q.ncols().value());
        // Beyond the paper: the queries as the model sees them.
        let variants = match S::CLASSIFIERS {
            true => variants,
            false => None,
        };
        let (rows, mut variant) = match variants {
            None => (rows, None),
            Some((v, prototypes)) => {
                let Variants {
                    queries,
                    weights,
                    hidden,
                } = v;
                self.features(rows, queries.as_mut_slice());
                (queries.as_slice(), Some((prototypes, weights, hidden)))
            }
        };
        let x =
            Mat::from_slice(&rows[..n * D.value()], D, Dyn(n)).ok_or(EngineError::InputLength {
                input: Input::Query,
                expected: n * D.value(),
                found: rows.len(),
            })?;
        // q = enc_ap x and, with it, G2muᵀ x (one pass over x); cosine logits form `W`
        // instead of `G2muᵀ x` (see the module doc).
        let mut q = scratch.q.columns_mut(0, n);
        if !S::CLASSIFIERS || self.logit_scale.is_none() {
            let mut y = scratch.y.columns_mut(0, n);
            let enc_ap = &self.encoders.ap;
            self.generator
                .g2_mu
                .tr_mul_to_with(enc_ap, &x, int8, &mut q, &mut y);
        } else {
            self.encoders.ap.mul_to(&x, int8, &mut q);
        }
        self.attentive_half(prepared, scratch, int8, n)?;
        let g = self.dims.G().value().max(1);
        let columns = scratch
            .ga
            .as_slice()
            .chunks_exact(g)
            .zip(scratch.y.as_slice().chunks_exact(g));
        for (m, (ga, y)) in (row0..row0 + n).zip(columns) {
            let logits = out.logits(m);
            match variant.as_mut() {
                None => {
                    for (logit, context) in logits
                        .iter_mut()
                        .zip(prepared.context.as_slice().chunks_exact(g))
                    {
                        *logit = relu_sum_dot(context, ga, y);
                    }
                }
                Some((prototypes, weights, hidden)) => {
                    let x = x.column(m - row0);
                    let query = QueryVectors { x, ga, y };
                    let prototypes = prototypes.map(|p| p.rb());
                    self.variant_logits(prepared, &query, prototypes, weights, hidden, logits);
                }
            }
            if !all_finite(logits) {
                return Err(EngineError::NonFinite {
                    stage: Stage::Logits,
                });
            }
            let class =
                Mat::from_slice(logits, self.dims.N(), Const::<1>).map_or(0, |l| l.view().imax());
            out.set_class(m, class);
        }
        Ok(())
    }
}

/// One query's vectors for [`Awgim::variant_logits`].
struct QueryVectors<'q> {
    /// The query as the model sees it.
    x: &'q [f32],
    /// `G1[d..2d] a(x)`.
    ga: &'q [f32],
    /// `G2muᵀ x`.
    y: &'q [f32],
}

impl<S: Dims> Awgim<'_, S> {
    /// The logits of one query with a classifier beyond the paper, as the trainer's
    /// evaluation graph: `W[i] = mu + p[i] / |p[i]|` with prototype weights (`mu` alone
    /// otherwise); dot logits `x . W[i] = h_i . (G2muᵀ x) + x . p[i] / |p[i]|` without forming
    /// `W`; cosine logits `s x . W[i] / sqrt(|W[i]|^2 + eps)` with `W[i]` formed from the
    /// hidden columns `h_i` (into `hidden`) as `G2mu [h_0 .. h_N-1]` (into `weights`).
    fn variant_logits(
        &self,
        prepared: &Prepared<'_, S>,
        query: &QueryVectors<'_>,
        prototypes: Option<Mat<'_, S::D, S::N>>,
        weights: &mut MatMut<'_, S::D, S::N>,
        hidden: &mut MatMut<'_, S::G, S::N>,
        logits: &mut [f32],
    ) {
        let QueryVectors { x, ga, y } = *query;
        let (D, g) = (self.dims.D().value().max(1), self.dims.G().value().max(1));
        let prototypes = match self.classifier.weights {
            WeightsKind::Prototype => prototypes.map_or(&[][..], |p| p.as_slice()),
            _ => &[],
        };
        let prototype = !prototypes.is_empty();
        let context = prepared.context.as_slice().chunks_exact(g);
        let Some(scale) = self.logit_scale else {
            for (i, (logit, context)) in logits.iter_mut().zip(context).enumerate() {
                *logit = relu_sum_dot(context, ga, y);
                if prototype {
                    *logit += dot(x, &prototypes[i * D..(i + 1) * D]);
                }
            }
            return;
        };
        hidden_columns(hidden.as_mut_slice(), g, context, ga);
        self.generator.g2_mu.mul_to(&hidden.rb(), weights);
        for (w, &p) in weights.as_mut_slice().iter_mut().zip(prototypes) {
            *w += p;
        }
        for (logit, w) in logits.iter_mut().zip(weights.as_slice().chunks_exact(D)) {
            let norm = libm::sqrtf(dot(w, w) + NORM_EPSILON);
            *logit = scale * dot(x, w) / norm;
        }
    }
}

/// A prepared support set: classifies queries against it. Holds the model and the workspace
/// buffers that `prepare` filled.
pub struct Task<'m, 'w, 'a, S: Dims, B: Dim> {
    model: &'m Awgim<'a, S>,
    prepared: Prepared<'w, S>,
    queries: QueryScratch<'w, S, B>,
    /// The variants' normalised class prototypes (`None` for the paper's classifier).
    prototypes: Option<MatMut<'w, S::D, S::N>>,
    /// The variants' per-query buffers (`None` for the paper's classifier).
    variants: Option<Variants<'w, S, B>>,
    /// The int8 products' scratch.
    scratch: &'w mut [i16],
    /// Queries classified together.
    batch: B,
}

/// The [`Task`] of a [`Model`] (`V = false`) or a [`VariantModel`] (`V = true`): compiled
/// sizes, `B` queries per batch.
pub type FixedTask<
    'm,
    'w,
    'a,
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const V: bool,
    const B: usize,
> = Task<'m, 'w, 'a, Fixed<D, d, h, N, K, G, NK, d2, V>, Const<B>>;

/// The [`Task`] of a [`DynModel`].
pub type DynTask<'m, 'w, 'a> = Task<'m, 'w, 'a, Dynamic, Dyn>;

impl<S: Dims, B: Dim> Task<'_, '_, '_, S, B> {
    /// Classifies the queries `rows` (rows of `D` values) into `out` (one per query), `B` at a
    /// time.
    fn classify_all<O: Outputs + ?Sized>(
        &mut self,
        rows: &[f32],
        out: &mut O,
    ) -> Result<(), EngineError> {
        let (width, batch) = (
            self.model.dims.D().value().max(1),
            self.batch.value().max(1),
        );
        for (c, chunk) in rows.chunks(width * batch).enumerate() {
            let variants = self
                .variants
                .as_mut()
                .map(|v| (v, self.prototypes.as_ref()));
            self.model.classify_rows(
                &self.prepared,
                &mut self.queries,
                variants,
                self.scratch,
                chunk,
                out,
                c * batch,
            )?;
        }
        Ok(())
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
        const V: bool,
        const B: usize,
    > FixedTask<'_, '_, '_, D, d, h, N, K, G, NK, d2, V, B>
{
    /// The logits of one query and its predicted class.
    pub fn classify(&mut self, query: &[f32; D]) -> Result<Prediction<N>, EngineError> {
        let mut out = [Prediction::zeroed()];
        let variants = self
            .variants
            .as_mut()
            .map(|v| (v, self.prototypes.as_ref()));
        self.model.classify_rows(
            &self.prepared,
            &mut self.queries,
            variants,
            self.scratch,
            query,
            &mut out[..],
            0,
        )?;
        Ok(out[0])
    }

    /// Classifies `queries` into `out` (same length), `B` queries at a time so every weight
    /// matrix is streamed once per `B` queries; the results equal `classify` on each query up
    /// to f32 rounding (sums are grouped differently).
    pub fn classify_batch(
        &mut self,
        queries: &[[f32; D]],
        out: &mut [Prediction<N>],
    ) -> Result<(), EngineError> {
        if queries.len() != out.len() {
            return Err(EngineError::BatchLength {
                queries: queries.len(),
                outputs: out.len(),
            });
        }
        self.classify_all(queries.as_flattened(), out)
    }

    /// The generated classifier weights `W[i] = mu = G2mu h_i` for one query, row `i` of
    /// `weights` being `W[i]` (for analysis; `classify` never forms them). `l[i] = x . W[i]`.
    /// `weights` is the storage of the `D x N` nalgebra matrix `[W[0] .. W[N-1]]`.
    pub fn generated_weights(
        &mut self,
        query: &[f32; D],
        weights: &mut [[f32; D]; N],
    ) -> Result<(), EngineError> {
        check_finite(query, D, Input::Query, 0)?;
        let x = Mat::from_slice(query, Const::<D>, Dyn(1)).ok_or(EngineError::InputLength {
            input: Input::Query,
            expected: D,
            found: D,
        })?;
        let mut q = self.queries.q.columns_mut(0, 1);
        self.model.encoders.ap.mul_to(&x, self.scratch, &mut q);
        self.model
            .attentive_half(&self.prepared, &mut self.queries, self.scratch, 1)?;
        let ga = self.queries.ga.as_slice();
        let context = self.prepared.context.as_slice();
        let hidden = &mut self.queries.g_hidden;
        hidden_columns(hidden.as_mut_slice(), G, context.chunks_exact(G), ga);
        match &self.model.generator.g2_mu {
            G2Mu::F32(g2_mu) => g2_mu.view().mul_to(
                &hidden.view(),
                &mut MatrixViewMut::<f32, Const<D>, Const<N>>::from_slice(
                    weights.as_flattened_mut(),
                ),
            ),
            #[cfg(feature = "int8")]
            g2_mu => {
                let w = weights.as_flattened_mut();
                if let Some(mut w) = MatMut::from_slice(w, Const::<D>, Const::<N>) {
                    g2_mu.mul_to(&hidden.rb(), &mut w);
                }
            }
        }
        if !all_finite(weights.as_flattened()) {
            return Err(EngineError::NonFinite {
                stage: Stage::Logits,
            });
        }
        Ok(())
    }
}

impl DynTask<'_, '_, '_> {
    /// The logits of the queries `queries` (`M` rows of `D` values, one after the other) into
    /// `logits` (`M` rows of `N`), `B` queries at a time, as [`FixedTask::classify_batch`].
    pub fn classify_batch(
        &mut self,
        queries: &[f32],
        logits: &mut [f32],
    ) -> Result<(), EngineError> {
        let Sizes { D, N, .. } = self.model.dims.sizes();
        if queries.len() % D != 0 || queries.len() / D * N != logits.len() {
            return Err(EngineError::BatchLength {
                queries: queries.len() / D,
                outputs: logits.len() / N,
            });
        }
        self.classify_all(
            queries,
            &mut LogitRows {
                data: logits,
                ways: N,
            },
        )
    }
}
