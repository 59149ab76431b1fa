//! The few numerical operations the model is made of, on statically sized arrays.
//!
//! Matrices are row-major arrays of rows. A dense layer `W` is stored `[in][out]` as in the
//! model file, so a row vector maps to `x W` (AWGIM.md's convention): [`linear`] sums the rows
//! of `W` scaled by the entries of `x`, an inner loop over contiguous outputs that the
//! compiler vectorizes. Several input rows are processed together (register tiles of
//! [`TILE_ROWS`] rows x [`TILE_COLS`] outputs), so each weight is loaded once per tile rather
//! than once per row: a batch streams every matrix once.

/// Input rows per register tile.
pub const TILE_ROWS: usize = 4;
/// Outputs per register tile of [`linear`].
pub const TILE_COLS: usize = 16;
/// Vector lanes of the partial sums in [`linear_transposed`].
const LANES: usize = 8;
/// Weight rows per tile of [`linear_transposed`].
const TILE_DOTS: usize = 4;

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
        linear_tile::<TILE_ROWS, M, IN, OUT>(x, w, y, m);
        m += TILE_ROWS;
    }
    while m < M {
        linear_tile::<1, M, IN, OUT>(x, w, y, m);
        m += 1;
    }
}

/// Rows `m0..m0 + R` of [`linear_add`].
#[inline(always)]
fn linear_tile<const R: usize, const M: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; M],
    w: &[[f32; OUT]; IN],
    y: &mut [[f32; OUT]; M],
    m0: usize,
) {
    let xs: [&[f32; IN]; R] = core::array::from_fn(|r| &x[m0 + r]);
    let mut j = 0;
    while j + TILE_COLS <= OUT {
        let mut acc = [[0.0f32; TILE_COLS]; R];
        for (r, acc) in acc.iter_mut().enumerate() {
            acc.copy_from_slice(&y[m0 + r][j..j + TILE_COLS]);
        }
        for (k, w_row) in w.iter().enumerate() {
            let w_tile = &w_row[j..j + TILE_COLS];
            for (acc, x_row) in acc.iter_mut().zip(xs) {
                let x_k = x_row[k];
                for (a, &w_kj) in acc.iter_mut().zip(w_tile) {
                    *a += x_k * w_kj;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            y[m0 + r][j..j + TILE_COLS].copy_from_slice(acc);
        }
        j += TILE_COLS;
    }
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

/// `y[m][o] = x[m] . w[o]` for every row `m`: the product with `W^T` for a matrix stored
/// `[OUT][IN]` (used for `G2mu x`, with `gen.g2_mu` stored `[G][D]`).
pub fn linear_transposed<const M: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; M],
    w: &[[f32; IN]; OUT],
    y: &mut [[f32; OUT]; M],
) {
    let mut m = 0;
    while m + TILE_ROWS <= M {
        dots_tile::<TILE_ROWS, M, IN, OUT>(x, w, y, m);
        m += TILE_ROWS;
    }
    while m < M {
        dots_tile::<1, M, IN, OUT>(x, w, y, m);
        m += 1;
    }
}

/// Rows `m0..m0 + R` of [`linear_transposed`].
#[inline(always)]
fn dots_tile<const R: usize, const M: usize, const IN: usize, const OUT: usize>(
    x: &[[f32; IN]; M],
    w: &[[f32; IN]; OUT],
    y: &mut [[f32; OUT]; M],
    m0: usize,
) {
    let xs: [&[f32; IN]; R] = core::array::from_fn(|r| &x[m0 + r]);
    let full = IN / LANES * LANES;
    let mut o = 0;
    while o + TILE_DOTS <= OUT {
        let ws: [&[f32; IN]; TILE_DOTS] = core::array::from_fn(|t| &w[o + t]);
        let mut acc = [[[0.0f32; LANES]; TILE_DOTS]; R];
        let mut k = 0;
        while k < full {
            for (acc, x_row) in acc.iter_mut().zip(xs) {
                let x_k = &x_row[k..k + LANES];
                for (acc, w_row) in acc.iter_mut().zip(ws) {
                    let w_k = &w_row[k..k + LANES];
                    for l in 0..LANES {
                        acc[l] += x_k[l] * w_k[l];
                    }
                }
            }
            k += LANES;
        }
        for (r, x_row) in xs.iter().enumerate() {
            for (t, w_row) in ws.iter().enumerate() {
                let tail = dot(&x_row[full..], &w_row[full..]);
                y[m0 + r][o + t] = acc[r][t].iter().sum::<f32>() + tail;
            }
        }
        o += TILE_DOTS;
    }
    for o in o..OUT {
        for (r, x_row) in xs.iter().enumerate() {
            y[m0 + r][o] = dot(*x_row, &w[o]);
        }
    }
}

/// `a . b` over the shorter length, with [`LANES`] partial sums.
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

/// Whether every entry is finite.
pub fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// Per-row layer normalisation in place: `x = gain * (x - mean) / sqrt(var + eps) + bias`,
/// mean and (biased) variance over the features of the row.
///
/// The row is first divided by its largest magnitude `s` (layer norm is scale invariant, with
/// `eps` becoming `eps / s^2`), so sums of squares cannot overflow and the result is finite
/// for every finite input; a constant row maps to `bias`. Returns whether the output is
/// finite (it is not when the input is not, or when `gain`/`bias` are extreme).
pub fn layer_norm<const W: usize>(x: &mut [f32; W], gain: &[f32; W], bias: &[f32; W], eps: f32) -> bool {
    let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
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
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
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

/// Softmax in place over `x`, which must be finite: the maximum is subtracted first, so every
/// exponential is in (0, 1] and the sum is at least 1 (no overflow, no division by zero).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = libm::expf(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// One head of scaled dot-product attention for one query row.
///
/// Over columns `head` of the rows: scores `q . keys[r] * scale` for the `R` keys, softmax,
/// then the probabilities of each group of `R / V` consecutive keys are summed and the `V`
/// value rows are mixed with them into `out[head]`. With `V = R` this is plain attention; with
/// one value row per class (`V = N`, `R = N K`) it is exact attention over keys whose values
/// are equal within a class. Returns `false` (and leaves `out` alone) if a score is not finite.
pub fn attend<const W: usize, const R: usize, const V: usize>(
    q: &[f32; W],
    keys: &[[f32; W]; R],
    values: &[[f32; W]; V],
    head: core::ops::Range<usize>,
    scale: f32,
    out: &mut [f32; W],
) -> bool {
    const { assert!(R > 0 && V > 0 && R % V == 0, "values must split the keys into equal groups") };
    let q = &q[head.clone()];
    let mut p = [0.0f32; R];
    for (p, key) in p.iter_mut().zip(keys) {
        *p = dot(q, &key[head.clone()]) * scale;
    }
    if !all_finite(&p) {
        return false;
    }
    softmax(&mut p);
    let group = R / V;
    let out = &mut out[head.clone()];
    out.fill(0.0);
    for (p, value) in p.chunks_exact(group).zip(values) {
        let weight: f32 = p.iter().sum();
        for (o, v) in out.iter_mut().zip(&value[head.clone()]) {
            *o += weight * v;
        }
    }
    true
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
        expected.as_flattened_mut().iter_mut().for_each(|v| *v += 1.0);
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
        linear_transposed(&x, &w, &mut y);
        close(&y, &naive(&x, &wt));
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
        assert_eq!(x, [0.5, 0.0, 0.0, 0.5]);
        let mut y = [-1e30; 3];
        softmax(&mut y);
        assert!(y.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn grouped_attention_equals_attention_over_repeated_values() {
        let q = [0.3, -0.2, 0.5, 0.1];
        let keys = fill::<6, 4>(5);
        let classes = fill::<3, 4>(6);
        let repeated: [[f32; 4]; 6] = core::array::from_fn(|r| classes[r / 2]);
        let (mut grouped, mut plain) = ([0.0; 4], [0.0; 4]);
        assert!(attend(&q, &keys, &classes, 2..4, 0.7, &mut grouped));
        assert!(attend(&q, &keys, &repeated, 2..4, 0.7, &mut plain));
        for (a, b) in grouped[2..].iter().zip(&plain[2..]) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(grouped[..2], [0.0; 2]);
        assert!(!attend(&[f32::INFINITY; 4], &keys, &classes, 0..4, 1.0, &mut grouped));
    }
}
