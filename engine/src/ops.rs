//! The few numerical operations the model is made of, on statically sized arrays.
//!
//! Matrices are row-major arrays of rows. A dense layer `W` is stored `[in][out]` as in the
//! model file, so a row vector maps to `x W` (AWGIM.md's convention): [`linear`] sums the rows
//! of `W` scaled by the entries of `x`, an inner loop over contiguous outputs that the
//! compiler vectorizes. Several input rows are processed together (register tiles of
//! [`TILE_ROWS`] rows by a few vector registers of outputs), so each weight is loaded once per
//! tile rather than once per row: a batch streams every matrix once.
//!
//! Tile sizes follow the vector width the compiler is told about (`-C target-cpu`): 4 lanes
//! (SSE2, the x86-64 default, and other targets), 8 (AVX2) or 16 (AVX-512). Building the host
//! with `-C target-cpu=native` (or `x86-64-v3`) makes the kernels 2 to 2.5 times faster.

/// f32 lanes of the target's vector registers, as far as the compiler is told about them
/// (`-C target-cpu=...`): tiles are sized so their accumulators stay in registers.
#[cfg(target_feature = "avx512f")]
const VECTOR: usize = 16;
#[cfg(all(target_feature = "avx", not(target_feature = "avx512f")))]
const VECTOR: usize = 8;
#[cfg(not(any(target_feature = "avx", target_feature = "avx512f")))]
const VECTOR: usize = 4;

/// Input rows per register tile of a batch (Cortex-M has 32 scalar FPU registers, so fewer).
#[cfg(not(target_arch = "arm"))]
pub const TILE_ROWS: usize = 4;
/// Input rows per register tile of a batch (Cortex-M has 32 scalar FPU registers, so fewer).
#[cfg(target_arch = "arm")]
pub const TILE_ROWS: usize = 2;
/// Outputs per register tile of [`linear`] for a tile of [`TILE_ROWS`] rows: the accumulators
/// fill half the vector registers (16 of 32 with AVX-512, 8 of 16 otherwise).
#[cfg(target_feature = "avx512f")]
const TILE_COLS: usize = 4 * VECTOR;
/// Outputs per register tile of [`linear`] for a tile of [`TILE_ROWS`] rows: the accumulators
/// fill half the vector registers (16 of 32 with AVX-512, 8 of 16 otherwise).
#[cfg(not(target_feature = "avx512f"))]
const TILE_COLS: usize = 2 * VECTOR;
/// Outputs per register tile of [`linear`] for a single row: more independent accumulators.
const SINGLE_COLS: usize = 8 * VECTOR;
/// Partial sums of [`dot`] and [`relu_sum_dot`]: one vector (their inputs are short).
const LANES: usize = VECTOR;

/// `y[m] = x[m] W` for every row `m` (`W` stored `[IN][OUT]`).
pub fn linear<const M: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; M],
    w: &[[f32; OUT]; IN],
    y: &mut [[f32; OUT]; M],
) {
    for row in y.iter_mut() {
        *row = [0.0; OUT];
    }
    linear_add(x, w, y);
}

/// `y[m] += x[m] W` for every row `m` (`W` stored `[IN][OUT]`): a residual connection.
pub fn linear_add<const M: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; M],
    w: &[[f32; OUT]; IN],
    y: &mut [[f32; OUT]; M],
) {
    let mut m = 0;
    while m + TILE_ROWS <= M {
        linear_rows::<TILE_ROWS, TILE_COLS, M, IN, OUT>(x, w, y, m);
        m += TILE_ROWS;
    }
    while m < M {
        linear_rows::<1, SINGLE_COLS, M, IN, OUT>(x, w, y, m);
        m += 1;
    }
}

/// Rows `m0..m0 + R` of [`linear_add`]: tiles of `C` outputs, then narrower tiles of 16, 8 and
/// 4 for what is left, then single outputs.
#[inline(always)]
fn linear_rows<
    const R: usize,
    const C: usize,
    const M: usize,
    const IN: usize,
    const OUT: usize,
>(
    x: &[[f32; IN]; M],
    w: &[[f32; OUT]; IN],
    y: &mut [[f32; OUT]; M],
    m0: usize,
) {
    let xs: [&[f32; IN]; R] = core::array::from_fn(|r| &x[m0 + r]);
    let mut j = linear_tiles::<R, C, M, IN, OUT>(xs, w, y, m0, 0);
    j = linear_tiles::<R, 16, M, IN, OUT>(xs, w, y, m0, j);
    j = linear_tiles::<R, 8, M, IN, OUT>(xs, w, y, m0, j);
    j = linear_tiles::<R, 4, M, IN, OUT>(xs, w, y, m0, j);
    if j < OUT {
        for (r, x_row) in xs.iter().enumerate() {
            let y_row = &mut y[m0 + r][j..];
            for (w_row, &x_k) in w.iter().zip(x_row.iter()) {
                for (y_j, &w_kj) in y_row.iter_mut().zip(&w_row[j..]) {
                    *y_j += x_k * w_kj;
                }
            }
        }
    }
}

/// Register tiles of `R` rows x `C` outputs from output `j` on, while a whole tile fits;
/// returns the first output not done. The accumulators stay in registers over the whole sum.
#[inline(always)]
fn linear_tiles<
    const R: usize,
    const C: usize,
    const M: usize,
    const IN: usize,
    const OUT: usize,
>(
    xs: [&[f32; IN]; R],
    w: &[[f32; OUT]; IN],
    y: &mut [[f32; OUT]; M],
    m0: usize,
    mut j: usize,
) -> usize {
    while j + C <= OUT {
        let mut acc = [[0.0f32; C]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            acc.copy_from_slice(&y[m0 + r][j..j + C]);
        }
        for (k, w_row) in w.iter().enumerate() {
            let w_tile = &w_row[j..j + C];
            for (acc, x_row) in acc.iter_mut().zip(xs) {
                let x_k = x_row[k];
                for (a, &w_kj) in acc.iter_mut().zip(w_tile) {
                    *a += x_k * w_kj;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            y[m0 + r][j..j + C].copy_from_slice(acc);
        }
        j += C;
    }
    j
}

/// `y[m][o] = x[m] . w[o]` for every row `m`: the product with `W^T` for a matrix stored
/// `[OUT][IN]` (used for `G2mu x`, with `gen.g2_mu` stored `[G][D]`).
///
/// One row is a dot product per row of `W`. A batch is transposed into `xt` so that `W` becomes
/// the left operand of [`linear`] (`yt = W xt`, each weight loaded once per batch), and `yt` is
/// transposed back into `y`. (The two orders of summation differ in rounding only.)
pub fn linear_transposed<const M: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; M],
    w: &[[f32; IN]; OUT],
    y: &mut [[f32; OUT]; M],
    xt: &mut [[f32; M]; IN],
    yt: &mut [[f32; M]; OUT],
) {
    if M == 1 {
        for (y_row, x_row) in y.iter_mut().zip(x) {
            let mut y_tiles = y_row.chunks_exact_mut(4);
            let mut w_tiles = w.chunks_exact(4);
            for (y4, w4) in (&mut y_tiles).zip(&mut w_tiles) {
                let d = dot4(x_row, [&w4[0], &w4[1], &w4[2], &w4[3]]);
                y4.copy_from_slice(&d);
            }
            for (y, w_row) in y_tiles.into_remainder().iter_mut().zip(w_tiles.remainder()) {
                *y = dot(x_row, w_row);
            }
        }
        return;
    }
    transpose(x, xt);
    linear(w, xt, yt);
    transpose(yt, y);
}

/// `t = a^T`.
pub fn transpose<const R: usize, const C: usize>(a: &[[f32; C]; R], t: &mut [[f32; R]; C]) {
    for (r, a_row) in a.iter().enumerate() {
        for (t_row, &v) in t.iter_mut().zip(a_row) {
            t_row[r] = v;
        }
    }
}

/// Four dot products `x . w[t]` at once: `x` is loaded once for the four rows, each with its
/// own vector of partial sums.
fn dot4<const IN: usize>(x: &[f32; IN], w: [&[f32; IN]; 4]) -> [f32; 4] {
    let mut acc = [[0.0f32; VECTOR]; 4];
    let chunks = x
        .chunks_exact(VECTOR)
        .zip(w[0].chunks_exact(VECTOR))
        .zip(w[1].chunks_exact(VECTOR))
        .zip(w[2].chunks_exact(VECTOR))
        .zip(w[3].chunks_exact(VECTOR));
    for ((((xv, a), b), c), d) in chunks {
        for l in 0..VECTOR {
            acc[0][l] += xv[l] * a[l];
            acc[1][l] += xv[l] * b[l];
            acc[2][l] += xv[l] * c[l];
            acc[3][l] += xv[l] * d[l];
        }
    }
    let full = IN / VECTOR * VECTOR;
    core::array::from_fn(|t| acc[t].iter().sum::<f32>() + dot(&x[full..], &w[t][full..]))
}

/// `a . b` over the shorter length, with one vector of partial sums.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (ca, cb) in (&mut a_chunks).zip(&mut b_chunks) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// `sum_g max(a_g + b_g, 0) * c_g` over the shorter length: a logit from the two halves of the
/// generator's first layer (`a`, `b`) and `G2mu x` (`c`).
pub fn relu_sum_dot(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a
        .chunks_exact(LANES)
        .zip(b.chunks_exact(LANES))
        .zip(c.chunks_exact(LANES));
    for ((ca, cb), cc) in chunks {
        for l in 0..LANES {
            acc[l] += (ca[l] + cb[l]).max(0.0) * cc[l];
        }
    }
    let n = a.len().min(b.len()).min(c.len());
    let full = n / LANES * LANES;
    let tail: f32 = (full..n).map(|g| (a[g] + b[g]).max(0.0) * c[g]).sum();
    acc.iter().sum::<f32>() + tail
}

/// `x = max(x, 0)` elementwise.
pub fn relu<const M: usize, const W: usize>(x: &mut [[f32; W]; M]) {
    for v in x.as_flattened_mut() {
        *v = v.max(0.0);
    }
}

/// Whether every entry is finite (no infinity, no NaN). Branch-free, so it vectorizes.
pub fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    let non_finite = x.iter().fold(0u32, |acc, v| {
        acc | u32::from(v.to_bits() & EXPONENT == EXPONENT)
    });
    non_finite == 0
}

/// `sum_i f(x_i)` with [`VECTOR`] partial sums, so it vectorizes (its rounding differs from a
/// sequential sum's, not its accuracy).
fn sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; VECTOR];
    let mut chunks = x.chunks_exact(VECTOR);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// `max_i f(x_i)` (at least `floor`) with [`VECTOR`] partial maxima; NaNs are ignored.
fn max_by(x: &[f32], floor: f32, f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [floor; VECTOR];
    let mut chunks = x.chunks_exact(VECTOR);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = a.max(f(v));
        }
    }
    let tail = chunks.remainder().iter().fold(floor, |m, &v| m.max(f(v)));
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// Per-row layer normalisation in place: `x = gain * (x - mean) / sqrt(var + eps) + bias`,
/// mean and (biased) variance over the features of the row.
///
/// The row is first divided by its largest magnitude `s` (layer norm is scale invariant, with
/// `eps` becoming `eps / s^2`), so sums of squares cannot overflow and the result is finite
/// for every finite input; a constant row maps to `bias`. Returns whether the output is
/// finite (it is not when the input is not, or when `gain`/`bias` are extreme).
pub fn layer_norm<const W: usize>(
    x: &mut [f32; W],
    gain: &[f32; W],
    bias: &[f32; W],
    eps: f32,
) -> bool {
    let scale = max_by(x, 0.0, f32::abs);
    if !scale.is_finite() {
        return false;
    }
    if scale == 0.0 {
        *x = *bias;
        return all_finite(x);
    }
    for v in x.iter_mut() {
        *v /= scale;
    }
    let n = W as f32;
    let mean = sum_by(x, |v| v) / n;
    let var = sum_by(x, |v| (v - mean) * (v - mean)) / n;
    // eps / s^2 may underflow to 0 (s large) or overflow to inf (s tiny): both are the right
    // limits, and var + eps_s > 0 unless the row is constant to rounding.
    let eps_s = eps / scale / scale;
    let denom = libm::sqrtf(var + eps_s);
    let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
    for ((v, g), b) in x.iter_mut().zip(gain).zip(bias) {
        *v = (*v - mean) * inv * g + b;
    }
    all_finite(x)
}

/// `e^x` for `x <= 0`, to about 2 ulp; branch-free so a loop of it vectorizes.
///
/// `x = n ln 2 + r` with `n` the nearest integer to `x / ln 2` and `|r| <= ln 2 / 2` (ln 2 split
/// in two parts so `r` is exact to f32 precision); `e^r` by its Taylor series to degree 7
/// (truncation error below `0.347^8 / 8! = 5e-9`), and `2^n` built in the exponent bits.
/// Arguments below -87 are clamped there (`e^-87 = 1.6e-38`, the smallest normal range), so the
/// result is never subnormal, never zero and never NaN for finite or infinite `x <= 0`.
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = core::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with few significant bits so n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Softmax in place over `x`, which must be finite: the maximum is subtracted first, so every
/// exponential is in (0, 1] and the sum is at least 1 (no overflow, no division by zero).
pub fn softmax(x: &mut [f32]) {
    let max = max_by(x, f32::NEG_INFINITY, |v| v);
    for v in x.iter_mut() {
        *v = exp_nonpositive(*v - max);
    }
    let sum = sum_by(x, |v| v);
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// One head of scaled dot-product attention for one query row.
///
/// Over columns `head`: scores `q . k_r * scale` for the `R` keys, given transposed
/// (`keys_t[c][r]` is column `c` of key `r`, so the scores accumulate over contiguous rows),
/// softmax, then the probabilities of each group of `R / V` consecutive keys are summed and the
/// `V` value rows are mixed with them into `out[head]`. With `V = R` this is plain attention;
/// with one value row per class (`V = N`, `R = N K`) it is exact attention over keys whose
/// values are equal within a class. Returns `false` (and leaves `out` alone) if a score is not
/// finite.
pub fn attend<const W: usize, const R: usize, const V: usize>(
    q: &[f32; W],
    keys_t: &[[f32; R]; W],
    values: &[[f32; W]; V],
    head: core::ops::Range<usize>,
    scale: f32,
    out: &mut [f32; W],
) -> bool {
    const {
        assert!(
            R > 0 && V > 0 && R % V == 0,
            "values must split the keys into equal groups"
        )
    };
    let mut p = [0.0f32; R];
    for (&q_c, key_c) in q[head.clone()].iter().zip(&keys_t[head.clone()]) {
        for (p, &k) in p.iter_mut().zip(key_c) {
            *p += q_c * k;
        }
    }
    for p in p.iter_mut() {
        *p *= scale;
    }
    if !all_finite(&p) {
        return false;
    }
    softmax(&mut p);
    let mut pooled = [0.0f32; V];
    for (pooled, group) in pooled.iter_mut().zip(p.chunks_exact(R / V)) {
        *pooled = group.iter().sum();
    }
    // out[c] = sum_v pooled[v] values[v][c], a vector of columns at a time so the partial sums
    // stay in registers.
    let mut c = head.start;
    while c + VECTOR <= head.end {
        out[c..c + VECTOR].copy_from_slice(&mix::<VECTOR, W, V>(&pooled, values, c));
        c += VECTOR;
    }
    for (o, c) in out[c..head.end].iter_mut().zip(c..) {
        *o = mix::<1, W, V>(&pooled, values, c)[0];
    }
    true
}

/// `sum_v weights[v] values[v][c..c + C]`.
#[inline(always)]
fn mix<const C: usize, const W: usize, const V: usize>(
    weights: &[f32; V],
    values: &[[f32; W]; V],
    c: usize,
) -> [f32; C] {
    let mut acc = [0.0f32; C];
    for (&weight, value) in weights.iter().zip(values) {
        for (a, &v) in acc.iter_mut().zip(&value[c..c + C]) {
            *a += weight * v;
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive<const M: usize, const IN: usize, const OUT: usize>(
        x: &[[f32; IN]; M],
        w: &[[f32; OUT]; IN],
    ) -> [[f32; OUT]; M] {
        let mut y = [[0.0; OUT]; M];
        for m in 0..M {
            for o in 0..OUT {
                y[m][o] = (0..IN).map(|k| x[m][k] * w[k][o]).sum();
            }
        }
        y
    }

    fn fill<const A: usize, const B: usize>(seed: u32) -> [[f32; B]; A] {
        let mut s = seed;
        core::array::from_fn(|_| {
            core::array::from_fn(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
        })
    }

    fn close<const M: usize, const W: usize>(a: &[[f32; W]; M], b: &[[f32; W]; M]) {
        for (ra, rb) in a.iter().zip(b) {
            for (x, y) in ra.iter().zip(rb) {
                assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn linear_matches_naive_with_remainders() {
        // 7 rows (one tile of 4 and 3 single rows), 37 outputs (two column tiles and 5 more).
        let x = fill::<7, 13>(1);
        let w = fill::<13, 37>(2);
        let mut y = [[0.0; 37]; 7];
        linear(&x, &w, &mut y);
        close(&y, &naive(&x, &w));
        let mut y2 = [[1.0; 37]; 7];
        linear_add(&x, &w, &mut y2);
        let mut expected = naive(&x, &w);
        expected
            .as_flattened_mut()
            .iter_mut()
            .for_each(|v| *v += 1.0);
        close(&y2, &expected);
    }

    #[test]
    fn transposed_matches_naive_with_remainders() {
        let x = fill::<6, 19>(3);
        let w = fill::<11, 19>(4);
        let mut wt = [[0.0; 11]; 19];
        for (o, row) in w.iter().enumerate() {
            for (k, v) in row.iter().enumerate() {
                wt[k][o] = *v;
            }
        }
        let mut y = [[0.0; 11]; 6];
        let (mut xt, mut yt) = ([[0.0; 6]; 19], [[0.0; 6]; 11]);
        linear_transposed(&x, &w, &mut y, &mut xt, &mut yt);
        close(&y, &naive(&x, &wt));
        let mut y1 = [[0.0; 11]; 1];
        let (mut xt1, mut yt1) = ([[0.0; 1]; 19], [[0.0; 1]; 11]);
        linear_transposed(&[x[2]], &w, &mut y1, &mut xt1, &mut yt1);
        close(&y1, &[naive(&x, &wt)[2]]);
    }

    #[test]
    fn layer_norm_normalises_and_survives_extremes() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        let ones = [1.0; 4];
        let zeros = [0.0; 4];
        assert!(layer_norm(&mut x, &ones, &zeros, 1e-12));
        assert!(x.iter().sum::<f32>().abs() < 1e-6);
        let var = x.iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((var - 1.0).abs() < 1e-5);
        // Would overflow a plain sum of squares.
        let mut big = [3e38, -3e38, 1e38, 0.0];
        assert!(layer_norm(&mut big, &ones, &zeros, 1e-12));
        // Constant and tiny rows.
        let mut constant = [5.0; 4];
        assert!(layer_norm(&mut constant, &ones, &[0.5; 4], 1e-12));
        assert_eq!(constant, [0.5; 4]);
        let mut tiny = [1e-40, -1e-40, 0.0, 1e-45];
        assert!(layer_norm(&mut tiny, &ones, &zeros, 1e-12));
        let mut zero = [0.0; 4];
        assert!(layer_norm(&mut zero, &ones, &[0.25; 4], 1e-5));
        assert_eq!(zero, [0.25; 4]);
        // Non-finite input or gain is reported, not hidden.
        let mut nan = [f32::NAN, 0.0, 1.0, 2.0];
        assert!(!layer_norm(&mut nan, &ones, &zeros, 1e-12));
        let mut x = [1.0, 2.0, 3.0, 4.0];
        assert!(!layer_norm(&mut x, &[3e38; 4], &zeros, 1e-12));
    }

    #[test]
    fn softmax_is_a_distribution_for_extreme_scores() {
        let mut x = [3e38, -3e38, 0.0, 3e38];
        softmax(&mut x);
        assert_eq!(x[0], 0.5);
        assert_eq!(x[3], 0.5);
        assert!(x[1] < 1e-37 && x[2] < 1e-37);
        let mut y = [-1e30; 3];
        softmax(&mut y);
        assert!(y.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn grouped_attention_equals_attention_over_repeated_values() {
        let q = [0.3, -0.2, 0.5, 0.1];
        let keys = fill::<6, 4>(5);
        let classes = fill::<3, 4>(6);
        let mut keys_t = [[0.0; 6]; 4];
        transpose(&keys, &mut keys_t);
        let repeated: [[f32; 4]; 6] = core::array::from_fn(|r| classes[r / 2]);
        let (mut grouped, mut plain) = ([0.0; 4], [0.0; 4]);
        assert!(attend(&q, &keys_t, &classes, 2..4, 0.7, &mut grouped));
        assert!(attend(&q, &keys_t, &repeated, 2..4, 0.7, &mut plain));
        for (a, b) in grouped[2..].iter().zip(&plain[2..]) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(grouped[..2], [0.0; 2]);
        // Against the definition, on head columns 2..4.
        let scores: [f32; 6] =
            core::array::from_fn(|r| (q[2] * keys[r][2] + q[3] * keys[r][3]) * 0.7);
        let total: f32 = scores.iter().map(|s| libm::expf(*s)).sum();
        for c in 2..4 {
            let want: f32 = (0..6)
                .map(|r| libm::expf(scores[r]) / total * repeated[r][c])
                .sum();
            assert!((plain[c] - want).abs() < 1e-6, "{} vs {want}", plain[c]);
        }
        assert!(!attend(
            &[f32::INFINITY; 4],
            &keys_t,
            &classes,
            0..4,
            1.0,
            &mut grouped
        ));
    }

    #[test]
    fn reductions() {
        let x: [f32; 37] = core::array::from_fn(|i| i as f32 - 20.0);
        assert_eq!(
            sum_by(&x, |v| v),
            (0..37).map(|i| i as f32 - 20.0).sum::<f32>()
        );
        assert_eq!(max_by(&x, 0.0, f32::abs), 20.0);
        assert_eq!(max_by(&x, f32::NEG_INFINITY, |v| v), 16.0);
        assert!(all_finite(&x));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut y = x;
            y[33] = bad;
            assert!(!all_finite(&y));
        }
        assert!(all_finite(&[f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45]));
    }

    #[test]
    fn exp_matches_libm_to_2_ulp() {
        let mut worst = 0.0f32;
        let mut x = 0.0f32;
        while x > -87.0 {
            let (got, want) = (exp_nonpositive(x), libm::expf(x));
            worst = worst.max(((got - want) / want).abs());
            x -= 0.000_731;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) > 0.0 && exp_nonpositive(-1000.0) < 2e-38);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 2e-38);
    }
}
