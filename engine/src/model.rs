//! The AWGIM evaluation path, read top to bottom against AWGIM.md ("Forward pass for one
//! task"), with W = mu (no noise), no dropout and per-row layer norm.
//!
//! Support-side work (`prepare`, once per support set):
//! 1. attentive path: `s = X_s enc_ap`, `v = sa_ap(s, s, s)`, every row of `v` replaced by its
//!    class mean; the `ca_ap` keys `s Wk` and values `v Wv` (one row per class) are kept;
//! 2. contextual path: `c = sa_cp(X_s enc_cp, ..)`, `c_bar[i]` = class mean;
//! 3. the class half of the generator's first layer, `c_bar[i] G1[0..d]`, is kept.
//!
//! Per query `x` (`classify`):
//! 1. `q = x enc_ap`, `a(x) = ca_ap(q, s, v)`;
//! 2. generator input `z = [c_bar[i] ; a(x)]`, so `z G1 = c_bar[i] G1[0..d] + a(x) G1[d..2d]`
//!    and `h_i = relu(z G1)`, once per class (the K support rows of a class are equal inputs);
//! 3. `W[i] = mu = h_i G2mu` and `l[i] = x . W[i] = h_i . (G2mu x)`: `G2mu x` (G x D) is
//!    computed once per query instead of `W` (N x G x D).
//!
//! Cost per query in multiply-adds, paper configuration (D = 640, d = 128, h = 4, N = 5,
//! G = 256, K = 5): `x enc_ap` 81,920; `G2mu x` 163,840; `ca_ap`: `q Wq` 16,384, scores over
//! the N K keys 3,200, class values 640, `Wo` 16,384, `F1` 32,768, `F2` 32,768; `a(x) G1[d..2d]`
//! 32,768; logits 1,280. Total 381,952 multiply-adds = 0.76 MFLOP (K = 1: 0.76 MFLOP too, 2,560
//! fewer). Forming `W` instead would add N G D = 819,200 multiply-adds per query. `prepare`
//! costs 11.6 M multiply-adds for K = 5 (2.5 M for K = 1).

use formats::{EncoderKind, LayerNormKind, ModelFile};

use crate::error::{EngineError, Input};
use crate::ops;
use crate::workspace::{BlockScratch, Prepared, QueryScratch, Workspace};

/// Gain and bias of one layer norm.
struct LayerNorm<'a, const L: usize> {
    gain: &'a [f32; L],
    bias: &'a [f32; L],
}

/// One attention block: projections `wq`, `wk`, `wv` (`[d][d]`, head `j` in columns
/// `j*d/h..(j+1)*d/h`), `wo` (`[d][d]`, head `j` in those rows), `ln1`, feed-forward `f1`, `f2`,
/// `ln2`.
struct Block<'a, const L: usize, const L2: usize> {
    wq: &'a [[f32; L]; L],
    wk: &'a [[f32; L]; L],
    wv: &'a [[f32; L]; L],
    wo: &'a [[f32; L]; L],
    ln1: LayerNorm<'a, L>,
    f1: &'a [[f32; L2]; L],
    f2: &'a [[f32; L]; L2],
    ln2: LayerNorm<'a, L>,
}

/// An AWGIM model whose weights are borrowed, without a copy, from a model file in memory.
///
/// Sizes are compile-time constants: `D` features, latent `L` (AWGIM.md's `d`), `H` heads, `N`
/// ways, `K` shots, generator hidden width `G`, and the derived `NK = N * K`, `L2 = 2 * L`
/// (checked at compile time). Use the aliases ([`crate::Paper5Shot`], ...) or
/// [`crate::awgim_model!`].
pub struct Model<
    'a,
    const D: usize,
    const L: usize,
    const H: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const L2: usize,
> {
    enc_ap: &'a [[f32; L]; D],
    enc_cp: &'a [[f32; L]; D],
    sa_ap: Block<'a, L, L2>,
    ca_ap: Block<'a, L, L2>,
    sa_cp: Block<'a, L, L2>,
    /// Rows `0..d` of `gen.g1`: the context half, applied to `c_bar[i]`.
    g1_context: &'a [[f32; G]; L],
    /// Rows `d..2d` of `gen.g1`: the attentive half, applied to `a(x)`.
    g1_attentive: &'a [[f32; G]; L],
    /// `gen.g2_mu`, `[G][D]`.
    g2_mu: &'a [[f32; D]; G],
    epsilon: f32,
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

fn shape_error(name: &str, expected: usize, found: usize) -> EngineError {
    EngineError::Format(formats::FormatError::LengthMismatch {
        name: name.try_into().unwrap_or_default(),
        expected: expected as u64,
        found: found as u64,
    })
}

/// A `[R][C]` weight borrowed in place.
fn matrix<'a, const R: usize, const C: usize>(
    file: &ModelFile<'a>,
    name: &str,
) -> Result<&'a [[f32; C]; R], EngineError> {
    let flat = file.tensor(name)?;
    let rows: &'a [[f32; C]] =
        bytemuck::try_cast_slice(flat).map_err(|_| shape_error(name, R * C, flat.len()))?;
    rows.try_into()
        .map_err(|_| shape_error(name, R * C, flat.len()))
}

/// A `[C]` weight borrowed in place.
fn vector<'a, const C: usize>(
    file: &ModelFile<'a>,
    name: &str,
) -> Result<&'a [f32; C], EngineError> {
    let flat = file.tensor(name)?;
    flat.try_into()
        .map_err(|_| shape_error(name, C, flat.len()))
}

fn block<'a, const L: usize, const L2: usize>(
    file: &ModelFile<'a>,
    names: [&str; 10],
) -> Result<Block<'a, L, L2>, EngineError> {
    let [wq, wk, wv, wo, g1, b1, f1, f2, g2, b2] = names;
    Ok(Block {
        wq: matrix(file, wq)?,
        wk: matrix(file, wk)?,
        wv: matrix(file, wv)?,
        wo: matrix(file, wo)?,
        ln1: LayerNorm {
            gain: vector(file, g1)?,
            bias: vector(file, b1)?,
        },
        f1: matrix(file, f1)?,
        f2: matrix(file, f2)?,
        ln2: LayerNorm {
            gain: vector(file, g2)?,
            bias: vector(file, b2)?,
        },
    })
}

macro_rules! block_names {
    ($b:literal) => {
        [
            concat!($b, ".wq"),
            concat!($b, ".wk"),
            concat!($b, ".wv"),
            concat!($b, ".wo"),
            concat!($b, ".ln1.gain"),
            concat!($b, ".ln1.bias"),
            concat!($b, ".f1"),
            concat!($b, ".f2"),
            concat!($b, ".ln2.gain"),
            concat!($b, ".ln2.bias"),
        ]
    };
}

/// Fails on the first non-finite entry of `rows`, numbering rows from `row0`.
fn check_finite<const W: usize>(
    rows: &[[f32; W]],
    input: Input,
    row0: usize,
) -> Result<(), EngineError> {
    if ops::all_finite(rows.as_flattened()) {
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

/// `means[i]` = mean of rows `i*K..(i+1)*K` (class-major rows).
fn class_means<const L: usize, const N: usize, const K: usize, const NK: usize>(
    rows: &[[f32; L]; NK],
    means: &mut [[f32; L]; N],
) {
    for (mean, class_rows) in means.iter_mut().zip(rows.chunks_exact(K)) {
        *mean = [0.0; L];
        for row in class_rows {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in mean.iter_mut() {
            *m /= K as f32;
        }
    }
}

impl<
        'a,
        const D: usize,
        const L: usize,
        const H: usize,
        const N: usize,
        const K: usize,
        const G: usize,
        const NK: usize,
        const L2: usize,
    > Model<'a, D, L, H, N, K, G, NK, L2>
{
    /// Checks a model file (through [`formats::parse`]) and borrows its weights in place.
    ///
    /// The buffer must be 4-byte aligned on a little-endian target (a file in
    /// [`formats::Aligned`], [`formats::include_model!`] or `formats::read_aligned`); the file's
    /// configuration must match the compiled sizes, use per-row layer norm and the attention
    /// encoder. Inference and training files are both accepted.
    pub fn load(bytes: &'a [u8]) -> Result<Self, EngineError> {
        const { crate::check_sizes(D, L, H, N, K, G, NK, L2) };
        let file = formats::parse(bytes)?;
        let config = file.header().config;
        if config.layer_norm == LayerNormKind::TaskWide {
            return Err(EngineError::TaskWideLayerNorm);
        }
        if config.encoder == EncoderKind::Mlp {
            return Err(EngineError::MlpEncoder);
        }
        let sizes = [
            ("feature_dim", D, config.feature_dim),
            ("latent_dim", L, config.latent_dim),
            ("heads", H, config.heads),
            ("ways", N, config.ways),
            ("shots", K, config.shots),
            ("generator_hidden", G, config.generator_hidden),
        ];
        for (field, expected, found) in sizes {
            if expected as u64 != u64::from(found) {
                return Err(EngineError::ConfigMismatch {
                    field,
                    expected: u32::try_from(expected).unwrap_or(u32::MAX),
                    found,
                });
            }
        }
        let g1: &'a [[f32; G]; L2] = matrix(&file, "gen.g1")?;
        let (context, attentive) = g1.split_at(L);
        Ok(Self {
            enc_ap: matrix(&file, "enc_ap")?,
            enc_cp: matrix(&file, "enc_cp")?,
            sa_ap: block(&file, block_names!("sa_ap"))?,
            ca_ap: block(&file, block_names!("ca_ap"))?,
            sa_cp: block(&file, block_names!("sa_cp"))?,
            g1_context: context
                .try_into()
                .map_err(|_| shape_error("gen.g1", L2 * G, context.len() * G))?,
            g1_attentive: attentive
                .try_into()
                .map_err(|_| shape_error("gen.g1", L2 * G, attentive.len() * G))?,
            g2_mu: matrix(&file, "gen.g2_mu")?,
            epsilon: config.ln_epsilon,
            scale: 1.0 / libm::sqrtf((L / H) as f32),
        })
    }

    /// Does all support-side work once and returns a handle that classifies queries.
    ///
    /// `support` holds the `N x K` support features class-major: rows `i*K..(i+1)*K` are class
    /// `i`. Fails on a non-finite feature, or if a computed value overflows.
    pub fn prepare<'m, 'w, const B: usize>(
        &'m self,
        workspace: &'w mut Workspace<D, L, H, N, K, G, NK, L2, B>,
        support: &[[f32; D]; NK],
    ) -> Result<Task<'m, 'w, 'a, D, L, H, N, K, G, NK, L2, B>, EngineError> {
        check_finite(support, Input::Support, 0)?;
        let p = &mut workspace.prepared;
        let sc = &mut workspace.support;

        // 1. Attentive path: s = X_s enc_ap; v = sa_ap(s, s, s), rows replaced by class means.
        ops::linear(support, self.enc_ap, &mut sc.s);
        ops::linear(&sc.s, self.sa_ap.wk, &mut sc.keys);
        ops::transpose(&sc.keys, &mut sc.keys_t);
        ops::linear(&sc.s, self.sa_ap.wv, &mut sc.values);
        self.block(
            &self.sa_ap,
            &sc.s,
            &sc.keys_t,
            &sc.values,
            &mut sc.block,
            &mut sc.out,
            "sa_ap",
        )?;
        class_means::<L, N, K, NK>(&sc.out, &mut sc.means);
        //    ca_ap keys s Wk for every support row, values v Wv once per class.
        ops::linear(&sc.s, self.ca_ap.wk, &mut sc.keys);
        ops::transpose(&sc.keys, &mut p.keys_t);
        ops::linear(&sc.means, self.ca_ap.wv, &mut p.values);

        // 2. Contextual path: c = sa_cp(X_s enc_cp, ..); c_bar[i] = mean of class i.
        ops::linear(support, self.enc_cp, &mut sc.encoded);
        ops::linear(&sc.encoded, self.sa_cp.wk, &mut sc.keys);
        ops::transpose(&sc.keys, &mut sc.keys_t);
        ops::linear(&sc.encoded, self.sa_cp.wv, &mut sc.values);
        self.block(
            &self.sa_cp,
            &sc.encoded,
            &sc.keys_t,
            &sc.values,
            &mut sc.block,
            &mut sc.out,
            "sa_cp",
        )?;
        class_means::<L, N, K, NK>(&sc.out, &mut sc.means);

        // 3. The class half of the generator's first layer: c_bar[i] G1[0..d].
        ops::linear(&sc.means, self.g1_context, &mut p.context);

        let finite = [
            p.keys_t.as_flattened(),
            p.values.as_flattened(),
            p.context.as_flattened(),
        ]
        .iter()
        .all(|x| ops::all_finite(x));
        if !finite {
            return Err(EngineError::NonFinite { stage: "support" });
        }
        Ok(Task {
            model: self,
            workspace,
        })
    }

    /// `block(x, keys, values)` of AWGIM.md for `M` query rows `x`, into `out`:
    /// `a_j = softmax((x Wq_j)(keys_j)^T / sqrt(d/h)) values_j`; `out = LN1(x + sum_j a_j Wo_j)`;
    /// `out = LN2(out + F2(relu(F1(out))))`. Keys and values are already projected (`k Wk`,
    /// given transposed, and `v Wv`); `values` has one row per group of `R / V` keys (see
    /// [`ops::attend`]).
    #[allow(clippy::too_many_arguments)]
    fn block<const M: usize, const R: usize, const V: usize>(
        &self,
        block: &Block<'a, L, L2>,
        x: &[[f32; L]; M],
        keys_t: &[[f32; R]; L],
        values: &[[f32; L]; V],
        scratch: &mut BlockScratch<M, L, L2>,
        out: &mut [[f32; L]; M],
        stage: &'static str,
    ) -> Result<(), EngineError> {
        let non_finite = EngineError::NonFinite { stage };
        let head_dim = L / H;
        ops::linear(x, block.wq, &mut scratch.q);
        for (q, att) in scratch.q.iter().zip(scratch.att.iter_mut()) {
            for j in 0..H {
                let head = j * head_dim..(j + 1) * head_dim;
                if !ops::attend(q, keys_t, values, head, self.scale, att) {
                    return Err(non_finite);
                }
            }
        }
        out.copy_from_slice(x);
        ops::linear_add(&scratch.att, block.wo, out);
        for row in out.iter_mut() {
            if !ops::layer_norm(row, block.ln1.gain, block.ln1.bias, self.epsilon) {
                return Err(non_finite);
            }
        }
        ops::linear(out, block.f1, &mut scratch.hidden);
        ops::relu(&mut scratch.hidden);
        ops::linear_add(&scratch.hidden, block.f2, out);
        for row in out.iter_mut() {
            if !ops::layer_norm(row, block.ln2.gain, block.ln2.bias, self.epsilon) {
                return Err(non_finite);
            }
        }
        Ok(())
    }

    /// Per-query steps 1 and 2a for `M` queries: `q = x enc_ap`, `a(x) = ca_ap(q, s, v)` and
    /// the attentive half of the generator's first layer `a(x) G1[d..2d]` (into `scratch.ga`).
    fn attentive_half<const M: usize>(
        &self,
        prepared: &Prepared<L, N, G, NK>,
        scratch: &mut QueryScratch<M, D, L, L2, G>,
        queries: &[[f32; D]; M],
        row0: usize,
    ) -> Result<(), EngineError> {
        check_finite(queries, Input::Query, row0)?;
        ops::linear(queries, self.enc_ap, &mut scratch.q);
        self.block(
            &self.ca_ap,
            &scratch.q,
            &prepared.keys_t,
            &prepared.values,
            &mut scratch.block,
            &mut scratch.a,
            "ca_ap",
        )?;
        ops::linear(&scratch.a, self.g1_attentive, &mut scratch.ga);
        Ok(())
    }

    /// Logits of `M` queries: `l[i] = h_i . (G2mu x)` with `h_i = relu(c_bar[i] G1[0..d] + a(x)
    /// G1[d..2d])`.
    fn classify_rows<const M: usize>(
        &self,
        prepared: &Prepared<L, N, G, NK>,
        scratch: &mut QueryScratch<M, D, L, L2, G>,
        queries: &[[f32; D]; M],
        out: &mut [Prediction<N>; M],
        row0: usize,
    ) -> Result<(), EngineError> {
        self.attentive_half(prepared, scratch, queries, row0)?;
        ops::linear_transposed(
            queries,
            self.g2_mu,
            &mut scratch.y,
            &mut scratch.xt,
            &mut scratch.yt,
        );
        for ((prediction, ga), y) in out.iter_mut().zip(&scratch.ga).zip(&scratch.y) {
            for (logit, context) in prediction.logits.iter_mut().zip(&prepared.context) {
                *logit = ops::relu_sum_dot(context, ga, y);
            }
            if !ops::all_finite(&prediction.logits) {
                return Err(EngineError::NonFinite { stage: "logits" });
            }
            prediction.class = argmax(&prediction.logits);
        }
        Ok(())
    }
}

/// Index of the largest value (the first on ties); values are finite.
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// A prepared support set: classifies queries against it. Holds the model and the workspace
/// that `prepare` filled.
pub struct Task<
    'm,
    'w,
    'a,
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
    model: &'m Model<'a, D, L, H, N, K, G, NK, L2>,
    workspace: &'w mut Workspace<D, L, H, N, K, G, NK, L2, B>,
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
    > Task<'_, '_, '_, D, L, H, N, K, G, NK, L2, B>
{
    /// The logits of one query and its predicted class.
    pub fn classify(&mut self, query: &[f32; D]) -> Result<Prediction<N>, EngineError> {
        let mut out = [Prediction::zeroed()];
        let ws = &mut *self.workspace;
        self.model.classify_rows(
            &ws.prepared,
            &mut ws.single,
            core::array::from_ref(query),
            &mut out,
            0,
        )?;
        Ok(out[0])
    }

    /// Classifies `queries` into `out` (same length), `B` queries at a time so every weight
    /// matrix is streamed once per `B` queries; the results equal `classify` on each query up
    /// to f32 rounding (`G2mu x` is summed in another order).
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
        let mut query_chunks = queries.chunks_exact(B);
        let mut result_chunks = out.chunks_exact_mut(B);
        for (c, (chunk, results)) in (&mut query_chunks).zip(&mut result_chunks).enumerate() {
            // Always Ok: chunks_exact yields exactly B rows.
            if let (Ok(chunk), Ok(results)) = (chunk.try_into(), results.try_into()) {
                self.model
                    .classify_rows(&ws.prepared, &mut ws.batch, chunk, results, c * B)?;
            }
        }
        let done = queries.len() - query_chunks.remainder().len();
        let rest = query_chunks
            .remainder()
            .iter()
            .zip(result_chunks.into_remainder());
        for (r, (query, result)) in rest.enumerate() {
            self.model.classify_rows(
                &ws.prepared,
                &mut ws.single,
                core::array::from_ref(query),
                core::array::from_mut(result),
                done + r,
            )?;
        }
        Ok(())
    }

    /// The generated classifier weights `W[i] = mu = h_i G2mu` for one query (`N x D`, for
    /// analysis; `classify` never forms them). `l[i] = x . W[i]`.
    pub fn generated_weights(
        &mut self,
        query: &[f32; D],
        weights: &mut [[f32; D]; N],
    ) -> Result<(), EngineError> {
        let ws = &mut *self.workspace;
        self.model.attentive_half(
            &ws.prepared,
            &mut ws.single,
            core::array::from_ref(query),
            0,
        )?;
        for (h, context) in ws.hidden.iter_mut().zip(&ws.prepared.context) {
            for ((h, c), a) in h.iter_mut().zip(context).zip(&ws.single.ga[0]) {
                *h = (c + a).max(0.0);
            }
        }
        ops::linear(&ws.hidden, self.model.g2_mu, weights);
        if !weights.iter().all(|w| ops::all_finite(w)) {
            return Err(EngineError::NonFinite { stage: "logits" });
        }
        Ok(())
    }
}
