//! The AWGIM evaluation path, read top to bottom against AWGIM.md ("Forward pass for one
//! task"), with W = mu (no noise), no dropout and per-row layer norm. Examples are columns
//! (see [`crate::ops`]): AWGIM.md's `x W` is written `W x` here, `W` being the file's matrix
//! seen column-major.
//!
//! Support-side work (`prepare`, once per support set):
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
//! Not done: folding `Wq` into the `ca_ap` keys (`(Wq_j q)ᵀ (Wk_j s) = qᵀ (Wq_jᵀ Wk_j s)`)
//! replaces `Wq q` and the scores (19,584 multiply-adds per query for K = 5) by h N K d =
//! 12,800, but costs N K d^2 = 409,600 more in `prepare`. By these counts it is a loss below
//! 60 queries per support set for K = 5 (the 5-query call would be slower), and for K = 1
//! it saves 14,464 per query for 81,920 in `prepare`, about 2% of a 75-query task: not worth
//! a second code path.

mod load;

use core::ops::Range;

use formats::tensors::{CA_AP, GENERATOR, SA_AP, SA_CP};
use formats::{EncoderKind, LayerNormKind, Sizes};
use nalgebra::{Const, Dim, Dyn, Matrix, MatrixView, MatrixViewMut, SMatrix, SMatrixView};

use crate::error::{EngineError, Input, Stage};
use crate::ops::attention;
use crate::ops::linear::{mul_add_to, mul_to, tr_mul_to};
use crate::ops::{all_finite, contiguous, relu_sum_dot, PackedMut};
use crate::workspace::{Prepared, QueryScratch, SupportScratch, Workspace};
use load::{Block, Encoders, Generator};

/// An AWGIM model whose weights are borrowed, without a copy, from a model file in memory, as
/// nalgebra views.
///
/// Sizes are compile-time constants named as in AWGIM.md ([`Sizes`]): `D` features, latent
/// `d`, `h` heads, `N` ways, `K` shots, generator hidden width `G`, and the derived `NK = N * K`
/// and `d2 = 2 * d` (checked at compile time). Use the aliases ([`crate::Paper5Shot`], ...) or
/// [`crate::awgim_model!`].
pub struct Model<
    'a,
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
> {
    encoders: Encoders<'a, D, d>,
    sa_ap: Block<'a, d, d2>,
    ca_ap: Block<'a, d, d2>,
    sa_cp: Block<'a, d, d2>,
    generator: Generator<'a, D, d, G>,
    /// `1 / sqrt(d / h)`.
    scale: f32,
}

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

/// Fails on the first non-finite entry of `rows`, numbering rows from `row0`.
fn check_finite<const W: usize>(
    rows: &[[f32; W]],
    input: Input,
    row0: usize,
) -> Result<(), EngineError> {
    if all_finite(rows.as_flattened()) {
        return Ok(());
    }
    for (r, row) in rows.iter().enumerate() {
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

/// `means[:, i]` = mean of columns `i K..(i+1) K` (class-major support).
fn class_means<const d: usize, const N: usize, const K: usize, const NK: usize>(
    columns: &SMatrix<f32, d, NK>,
    means: &mut SMatrix<f32, d, N>,
) {
    for (i, mut mean) in means.column_iter_mut().enumerate() {
        mean.copy_from(&columns.fixed_columns::<K>(i * K).column_mean());
    }
}

/// The rows of head `j` of `h` in a stack of `d` features.
fn head<const d: usize, const h: usize>(j: usize) -> Range<usize> {
    let size = d / h;
    j * size..(j + 1) * size
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
    > Model<'a, D, d, h, N, K, G, NK, d2>
{
    /// Compile-time check of the size parameters, evaluated by [`Model::load`] and
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
    /// encoder. Inference and training files are both accepted.
    pub fn load(bytes: &'a [u8]) -> Result<Self, EngineError> {
        const { Self::CHECK_SIZES };
        let file = formats::parse(bytes)?;
        let config = file.config();
        if config.layer_norm == LayerNormKind::TaskWide {
            return Err(EngineError::TaskWideLayerNorm);
        }
        if config.encoder == EncoderKind::Mlp {
            return Err(EngineError::MlpEncoder);
        }
        // Each size under the header field's name (the error names the field).
        let (compiled, found) = (Self::SIZES, config.sizes());
        let sizes = [
            ("feature_dim", compiled.D, found.D),
            ("latent_dim", compiled.d, found.d),
            ("heads", compiled.h, found.h),
            ("ways", compiled.N, found.N),
            ("shots", compiled.K, found.K),
            ("generator_hidden", compiled.G, found.G),
        ];
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
        let epsilon = config.ln_epsilon;
        Ok(Self {
            encoders: Encoders::load(&file)?,
            sa_ap: Block::load(&file, &SA_AP, epsilon)?,
            ca_ap: Block::load(&file, &CA_AP, epsilon)?,
            sa_cp: Block::load(&file, &SA_CP, epsilon)?,
            generator: Generator::load(&file, &GENERATOR)?,
            scale: 1.0 / libm::sqrtf((d / h) as f32),
        })
    }

    /// Does all support-side work once and returns a handle that classifies queries.
    ///
    /// `support` holds the `N x K` support features class-major: rows `i*K..(i+1)*K` are class
    /// `i`. Fails on a non-finite feature, or if a computed value overflows.
    pub fn prepare<'m, 'w, const B: usize>(
        &'m self,
        workspace: &'w mut Workspace<D, d, h, N, K, G, NK, d2, B>,
        support: &[[f32; D]; NK],
    ) -> Result<Task<'m, 'w, 'a, D, d, h, N, K, G, NK, d2, B>, EngineError> {
        check_finite(support, Input::Support, 0)?;
        let support = SMatrixView::<f32, D, NK>::from_slice(support.as_flattened());
        let p = &mut workspace.prepared;
        let sc = &mut workspace.support;

        // 1. Attentive path: s = enc_ap X_s; the ca_ap keys Wk s; v = sa_ap(s, s, s) and its
        //    class means v_bar; the ca_ap class values through the output projection, per
        //    head: U_j = Wo_j Wv_j v_bar.
        mul_to(&self.encoders.ap, &support, &mut sc.x);
        mul_to(&self.ca_ap.wk, &sc.x, &mut sc.keys);
        sc.keys.transpose_to(&mut p.keys_t);
        self.self_attention(&self.sa_ap, sc, Stage::SaAp)?;
        class_means::<d, N, K, NK>(&sc.x, &mut sc.means);
        mul_to(&self.ca_ap.wv, &sc.means, &mut sc.class_values);
        for (j, u) in p.class_values.iter_mut().enumerate() {
            let head = head::<d, h>(j);
            u.gemm(
                1.0,
                &self.ca_ap.wo.columns(head.start, head.len()),
                &sc.class_values.rows(head.start, head.len()),
                0.0,
            );
        }

        // 2. Contextual path: c = sa_cp(enc_cp X_s, ..); c_bar[i] = mean of class i.
        mul_to(&self.encoders.cp, &support, &mut sc.x);
        self.self_attention(&self.sa_cp, sc, Stage::SaCp)?;
        class_means::<d, N, K, NK>(&sc.x, &mut sc.means);

        // 3. The class half of the generator's first layer: G1[0..d] c_bar[i].
        mul_to(&self.generator.g1_context, &sc.means, &mut p.context);

        let finite = all_finite(p.keys_t.as_slice())
            && p.class_values.iter().all(|u| all_finite(u.as_slice()))
            && all_finite(p.context.as_slice());
        if !finite {
            return Err(EngineError::NonFinite {
                stage: Stage::Support,
            });
        }
        Ok(Task {
            model: self,
            workspace,
        })
    }

    /// `x = block(x, x, x)` over the support columns (AWGIM.md's `block(q, k, v)` with
    /// `q = k = v = x`): per head `a_j = (Wv_j x) softmax((Wk_j x)ᵀ (Wq_j x) / sqrt(d/h))`, then
    /// `x = x + Wo [a_1; ..; a_h]` and [`Self::feed_forward`].
    fn self_attention(
        &self,
        block: &Block<'a, d, d2>,
        sc: &mut SupportScratch<d, d2, N, NK>,
        stage: Stage,
    ) -> Result<(), EngineError> {
        mul_to(&block.wq, &sc.x, &mut sc.q);
        mul_to(&block.wk, &sc.x, &mut sc.keys);
        sc.keys.transpose_to(&mut sc.keys_t);
        mul_to(&block.wv, &sc.x, &mut sc.values);
        for j in 0..h {
            let head = head::<d, h>(j);
            if !attention::probabilities(&sc.q, &sc.keys_t, &head, self.scale, &mut sc.p) {
                return Err(EngineError::NonFinite { stage });
            }
            attention::mix(&sc.values, &sc.p, &head, &mut sc.att);
        }
        mul_add_to(&block.wo, &sc.att, &mut sc.x);
        Self::feed_forward(block, &mut sc.x, &mut sc.hidden, stage)
    }

    /// The rest of a block after the attention residual `x = q + sum_j a_j Wo_j`:
    /// `x = LN1(x)`; `x = LN2(x + F2 relu(F1 x))`, per column.
    fn feed_forward<C: Dim, SX, SH>(
        block: &Block<'a, d, d2>,
        x: &mut Matrix<f32, Const<d>, C, SX>,
        hidden: &mut Matrix<f32, Const<d2>, C, SH>,
        stage: Stage,
    ) -> Result<(), EngineError>
    where
        SX: PackedMut<d, C>,
        SH: PackedMut<d2, C>,
    {
        if !block.ln1.apply(x) {
            return Err(EngineError::NonFinite { stage });
        }
        mul_to(&block.f1, x, hidden);
        hidden.apply(|v| *v = v.max(0.0));
        mul_add_to(&block.f2, hidden, x);
        if !block.ln2.apply(x) {
            return Err(EngineError::NonFinite { stage });
        }
        Ok(())
    }

    /// Per-query steps 1 and 2a for the columns of `x` (at most `B`): `q = enc_ap x`,
    /// `a(x) = ca_ap(q, s, v)` (into `scratch.q`) and the attentive half of the generator's
    /// first layer `G1[d..2d] a(x)` (into `scratch.ga`).
    fn attentive_half<const B: usize>(
        &self,
        prepared: &Prepared<d, h, N, G, NK>,
        scratch: &mut QueryScratch<d, d2, N, G, NK, B>,
        x: &MatrixView<'_, f32, Const<D>, Dyn>,
    ) -> Result<(), EngineError> {
        let n = x.ncols();
        let non_finite = EngineError::NonFinite { stage: Stage::CaAp };
        let mut q = scratch.q.columns_mut(0, n);
        let mut q_proj = scratch.q_proj.columns_mut(0, n);
        let mut p = scratch.p.columns_mut(0, n);
        let mut pooled = scratch.pooled.columns_mut(0, n);
        mul_to(&self.encoders.ap, x, &mut q);
        mul_to(&self.ca_ap.wq, &q, &mut q_proj);
        for (j, class_values) in prepared.class_values.iter().enumerate() {
            let head = head::<d, h>(j);
            if !attention::probabilities(&q_proj, &prepared.keys_t, &head, self.scale, &mut p) {
                return Err(non_finite);
            }
            attention::pool(&p, &mut pooled);
            q.gemm(1.0, class_values, &pooled, 1.0);
        }
        Self::feed_forward(
            &self.ca_ap,
            &mut q,
            &mut scratch.hidden.columns_mut(0, n),
            Stage::CaAp,
        )?;
        mul_to(
            &self.generator.g1_attentive,
            &q,
            &mut scratch.ga.columns_mut(0, n),
        );
        Ok(())
    }

    /// Logits of the queries `rows` (at most `B`) into `out`: `l[i] = h_i . (G2muᵀ x)` with
    /// `h_i = relu(G1[0..d] c_bar[i] + G1[d..2d] a(x))`. Rows are numbered from `row0` in
    /// errors.
    fn classify_rows<const B: usize>(
        &self,
        prepared: &Prepared<d, h, N, G, NK>,
        scratch: &mut QueryScratch<d, d2, N, G, NK, B>,
        rows: &[[f32; D]],
        out: &mut [Prediction<N>],
        row0: usize,
    ) -> Result<(), EngineError> {
        check_finite(rows, Input::Query, row0)?;
        let n = rows.len().min(out.len()).min(B);
        let x = MatrixView::<f32, Const<D>, Dyn>::from_slice(rows[..n].as_flattened(), n);
        self.attentive_half(prepared, scratch, &x)?;
        tr_mul_to(&self.generator.g2_mu, &x, &mut scratch.y.columns_mut(0, n));
        let columns = scratch.ga.column_iter().zip(scratch.y.column_iter());
        for (prediction, (ga, y)) in out.iter_mut().zip(columns).take(n) {
            for (logit, context) in prediction
                .logits
                .iter_mut()
                .zip(prepared.context.column_iter())
            {
                *logit = relu_sum_dot(context.as_slice(), ga.as_slice(), y.as_slice());
            }
            if !all_finite(&prediction.logits) {
                return Err(EngineError::NonFinite {
                    stage: Stage::Logits,
                });
            }
            prediction.class = SMatrixView::<f32, N, 1>::from_slice(&prediction.logits).imax();
        }
        Ok(())
    }
}

/// A prepared support set: classifies queries against it. Holds the model and the workspace
/// that `prepare` filled.
pub struct Task<
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
    const B: usize,
> {
    model: &'m Model<'a, D, d, h, N, K, G, NK, d2>,
    workspace: &'w mut Workspace<D, d, h, N, K, G, NK, d2, B>,
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
    > Task<'_, '_, '_, D, d, h, N, K, G, NK, d2, B>
{
    /// The logits of one query and its predicted class.
    pub fn classify(&mut self, query: &[f32; D]) -> Result<Prediction<N>, EngineError> {
        let mut out = [Prediction::zeroed()];
        let ws = &mut *self.workspace;
        self.model.classify_rows(
            &ws.prepared,
            &mut ws.queries,
            core::slice::from_ref(query),
            &mut out,
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
        let ws = &mut *self.workspace;
        for (c, (chunk, results)) in queries.chunks(B).zip(out.chunks_mut(B)).enumerate() {
            self.model
                .classify_rows(&ws.prepared, &mut ws.queries, chunk, results, c * B)?;
        }
        Ok(())
    }

    /// The generated classifier weights `W[i] = mu = G2mu h_i` for one query, row `i` of
    /// `weights` being `W[i]` (for analysis; `classify` never forms them). `l[i] = x . W[i]`.
    /// `weights` is the storage of the `D x N` nalgebra matrix `[W[0] .. W[N-1]]`.
    pub fn generated_weights(
        &mut self,
        query: &[f32; D],
        weights: &mut [[f32; D]; N],
    ) -> Result<(), EngineError> {
        let ws = &mut *self.workspace;
        check_finite(core::slice::from_ref(query), Input::Query, 0)?;
        let x = MatrixView::<f32, Const<D>, Dyn>::from_slice(query, 1);
        self.model
            .attentive_half(&ws.prepared, &mut ws.queries, &x)?;
        let ga = ws.queries.ga.column(0);
        for (mut h_i, context) in ws
            .hidden
            .column_iter_mut()
            .zip(ws.prepared.context.column_iter())
        {
            h_i.copy_from(&(context + ga).map(|v| v.max(0.0)));
        }
        let mut weights =
            MatrixViewMut::<f32, Const<D>, Const<N>>::from_slice(weights.as_flattened_mut());
        self.model.generator.g2_mu.mul_to(&ws.hidden, &mut weights);
        if !all_finite(contiguous(&weights)) {
            return Err(EngineError::NonFinite {
                stage: Stage::Logits,
            });
        }
        Ok(())
    }
}
