//! Products of an int8 weight matrix with f32 columns: [`mul_to`] (`C = A_q B`),
//! [`mul_add_to`] (`C += A_q B`) and [`mul_to_range`] (a range of every row), with integer
//! accumulation.
//!
//! # What is computed
//! `A_q` ([`QuantMat`]) has `rows` rows of `depth` int8 values `w[r][k]` in `[-127, 127]` and
//! one f32 scale per row: `A[r][k] = w[r][k] scale_r`. Each column `x` of `B` (`depth` values)
//! is quantised to i16 with a scale of its own ([`quantize_column`]): `s = max_k |x_k| / Q`,
//! `q_k = round(x_k / s)` (half away from zero, clamped to `[-Q, Q]`), where the bound
//! `Q = min(32767, floor((2^31 - 1) / (127 depth)))` ([`activation_bound`]) makes every
//! partial sum of `sum_k w[r][k] q_k` fit an i32: `127 Q depth <= 2^31 - 1`. The sums are
//! exact integers, whatever their order; then `C[r][j] = (sum as f32 * scale_r) * s_j`. The
//! integer sums, and so the results, are the same on every target: the device's and the
//! host's logits differ only in the f32 code around these products.
//!
//! # Error against the dequantised f32 product
//! The weights are what they are (the file's int8 values and scales); the only approximation
//! here is the rounding of the activations. With `x_k = s q_k + e_k`,
//! `A x - C = scale_r sum_k w[r][k] e_k + (rounding of the f32 tail)`, and
//! `|e_k| <= s (1/2 + 4 Q eps)`: half a step of rounding, plus the f32 rounding of
//! `x_k Q / max` and of `s` (each a relative `eps = 2^-24` of values up to `Q` steps; 4 covers
//! them). Hence, per entry, with `eps = f32::EPSILON / 2`,
//!
//! `|C[r][j] - sum_k A[r][k] x_kj| <= scale_r s_j (1/2 + 4 Q eps) sum_k |w[r][k]| + 3 eps |C[r][j]|`
//!
//! (the last term: the conversion of the sum to f32 and the two products). The test
//! `matches_the_dequantised_product_within_the_bound` checks it on random and adversarial
//! columns; for the paper's depths (128 to 640) the relative error of a product is about
//! `1 / (2 Q)`, i.e. 2e-5.
//!
//! # The row-pair layout, and why
//! A file stores the int8 rows in pairs (`formats::quant`): per column `k`, one i16
//! `v = 256 w[2p][k] + w[2p+1][k]` (`|w| <= 127`, so `v` fits and its low byte, sign-extended,
//! is `w[2p+1][k]`). The quantised column is in the natural order `q_0 q_1 ..`, padded to
//! an even length. For a pair of rows, on the Arm DSP extension, a word of two values
//! `(v_k, v_k+1)` and the word `(q_k, q_k+1)` give, per 4 multiply-adds, 3 instructions:
//! `SMLALD` of the raw words (64-bit sum `S = sum_k v_k q_k = 256 E + O`), `SXTB16` of the
//! weight word (its low bytes, `w[2p+1][k]`, `w[2p+1][k+1]`), `SMLAD` of that (`O`, the odd
//! row's sum, exact in i32). Then `E = (S - O) / 256` exactly: the even row's sum. The usual
//! int8 scheme (CMSIS-NN's) unpacks each word of 4 weights with two `SXTB16`s for two
//! `SMLAD`s: 4 instructions per 4 multiply-adds before any load. The host reads the same
//! layout (both bytes of each value, two plain sums, [`pair_dots`]); the sums are the same.
//!
//! # Speed
//! On Cortex-M4/M7 the loops are assembly (`ops::dsp::pair_sums`: 46 instructions per
//! 48 multiply-adds; `docs/arm-kernels.md` has the disassembly and the counts). On the host
//! the sums are 16-lane loops ([`pair_dots`]) that vectorise but are not tiled (about a third
//! of the f32 kernels' rate); int8 models are for the device, the host runs them to check
//! them.

use formats::QuantTensor;
use nalgebra::Dim;

use super::{Mat, MatMut};

/// Columns of `B` quantised at once: the scratch holds this many quantised columns (5
/// divides the 25 support examples of the 5-shot models, a 15-query batch and a 5-query call).
pub const QUANT_COLS: usize = 5;

/// The i16 values one quantised column of `depth` values takes: `depth` rounded up to even
/// (a whole number of words of two values; `formats::quant::pair_stride`).
pub const fn column_len(depth: usize) -> usize {
    depth.div_ceil(2) * 2
}

/// The i16 scratch [`mul_to`], [`mul_add_to`] and [`mul_to_range`] need for `n` columns of
/// `B` of [`column_len`] `len`: `len` values for each of up to [`QUANT_COLS`] columns, and
/// one more, so that the columns can start 4-byte aligned (the Arm kernels load them a word
/// at a time).
pub const fn scratch_len(len: usize, n: usize) -> usize {
    len * if n < QUANT_COLS { n } else { QUANT_COLS } + 1
}

/// The largest magnitude of a quantised activation for sums of `depth` products:
/// `min(32767, floor((2^31 - 1) / (127 depth)))`, at least 1 (sums stay exact up to
/// `depth` = 16,909,320, far beyond any model here).
pub const fn activation_bound(depth: usize) -> i32 {
    let d = if depth == 0 { 1 } else { depth as u64 };
    // In 32 bits where the divisor fits (one `UDIV` on the device, not a library call).
    let q = if d <= u32::MAX as u64 / 127 {
        (i32::MAX as u32 / (127 * d as u32)) as u64
    } else {
        (i32::MAX as u64) / (127 * d)
    };
    if q > 32767 {
        32767
    } else if q == 0 {
        1
    } else {
        q as i32
    }
}

/// An int8 weight matrix borrowed from a model file: `rows` rows of `depth` values stored in
/// pairs of rows (the module documentation), one f32 scale per row. The values are those of
/// `formats` (`[-127, 127]`; other i16 values give other sums, never a panic).
#[derive(Clone, Copy, Debug)]
pub struct QuantMat<'a> {
    rows: usize,
    depth: usize,
    values: &'a [i16],
    scales: &'a [f32],
}

impl<'a> QuantMat<'a> {
    /// The matrix of a model file's int8 tensor (`ModelFile::tensor_i8`): its rows, depth,
    /// values and scales as stored (for `QuantAxis::Out` a dense layer's outputs by its
    /// inputs, for `QuantAxis::In` its inputs by its outputs; the products read either the
    /// same way). A tensor whose parts disagree (formats never returns one) becomes a matrix
    /// of no rows, which every product refuses (it leaves `C` unchanged).
    pub fn new(q: QuantTensor<'a>) -> Self {
        Self::from_parts(q.rows, q.depth, q.values, q.scales).unwrap_or(Self {
            rows: 0,
            depth: q.depth,
            values: &[],
            scales: &[],
        })
    }

    /// The matrix with `rows` rows of `depth` values in the row-pair layout (pair `p` at
    /// `values[p * pair_stride..]`, `pair_stride` = [`column_len`]`(depth)`) and their scales;
    /// `None` unless `values` holds exactly `ceil(rows / 2) * pair_stride` values and `scales`
    /// exactly `rows`.
    pub fn from_parts(
        rows: usize,
        depth: usize,
        values: &'a [i16],
        scales: &'a [f32],
    ) -> Option<Self> {
        let len = rows.div_ceil(2).checked_mul(column_len(depth))?;
        (values.len() == len && scales.len() == rows).then_some(Self {
            rows,
            depth,
            values,
            scales,
        })
    }

    /// Rows (the outputs of a product).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row (the inputs of a product).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Values per stored pair of rows: `depth` rounded up to even.
    pub fn pair_stride(&self) -> usize {
        column_len(self.depth)
    }

    /// The scale of row `r` (0 past the last row).
    pub fn scale(&self, r: usize) -> f32 {
        self.scales.get(r).copied().unwrap_or(0.0)
    }

    /// The int8 value of row `r`, position `k` (`None` outside the matrix).
    pub fn weight(&self, r: usize, k: usize) -> Option<i32> {
        if k >= self.depth {
            return None;
        }
        self.row(r).nth(k)
    }

    /// The `depth` int8 values of row `r` in order (none past the last row).
    pub fn row(&self, r: usize) -> impl Iterator<Item = i32> + 'a {
        let stride = self.pair_stride();
        let pair = match r < self.rows {
            true => self.values.get((r / 2) * stride..(r / 2) * stride + self.depth),
            false => None,
        };
        let odd = r % 2;
        pair.unwrap_or_default().iter().map(move |&v| split(v)[odd])
    }
}

/// The two int8 values of a stored i16 `v = 256 even + odd`: `odd` is the low byte,
/// sign-extended, and `even = (v - odd) / 256`.
#[inline(always)]
fn split(v: i16) -> [i32; 2] {
    let odd = i32::from(v as i8);
    [(i32::from(v) - odd) >> 8, odd]
}

/// `C = A_q B`: `B` is `depth x n`, `C` is `rows x n` (see the module documentation), with
/// `scratch` of at least [`scratch_len`]`(column_len(depth), n)` values. Where `B` does not
/// have `depth` rows, `C` not `rows` rows, or `scratch` cannot hold one quantised column, `C`
/// is left unchanged.
pub fn mul_to<R: Dim, C: Dim, B: Dim>(
    a: &QuantMat<'_>,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    c: MatMut<'_, C, B>,
) {
    product::<R, C, B, false>(a, 0, b, scratch, c, |_, _, _| ());
}

/// `C += A_q B`, as [`mul_to`].
pub fn mul_add_to<R: Dim, C: Dim, B: Dim>(
    a: &QuantMat<'_>,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    c: MatMut<'_, C, B>,
) {
    product::<R, C, B, true>(a, 0, b, scratch, c, |_, _, _| ());
}

/// `C = A_q[:, start..start + depth] B`: the product with the `depth` values of each row from
/// `start` on (`B` is `depth x n`, `C` is `rows x n`; `start + depth <= a.depth()`), as
/// [`mul_to`] (a layer applied to one part of its input, e.g. one half of the generator's
/// first layer). Where `start` is even, the Arm kernels run; otherwise the portable sums,
/// which are the same. Where the range does not fit, `C` is left unchanged.
pub fn mul_to_range<R: Dim, C: Dim, B: Dim>(
    a: &QuantMat<'_>,
    start: usize,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    c: MatMut<'_, C, B>,
) {
    product::<R, C, B, false>(a, start, b, scratch, c, |_, _, _| ());
}

/// Quantises the column `x` (its [`column_len`]`(x.len())` values are written to `q`, in
/// order, padded with a zero) with the bound [`activation_bound`]`(x.len())`, and returns its
/// scale: `max |x| / Q`, 0 for a zero column, NaN if `x` holds a non-finite value (then `q`
/// is all zeros and the products are NaN). Writes nothing if `q` is shorter than
/// `column_len(x.len())`.
pub fn quantize_column(x: &[f32], q: &mut [i16]) -> f32 {
    let Some(q) = q.get_mut(..column_len(x.len())) else {
        return f32::NAN;
    };
    // max |x| in one integer pass: the bits of |v| order as |v| does, and infinities and NaNs
    // come above every finite value.
    const EXPONENT: u32 = 0x7f80_0000;
    let bits = x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    let max = f32::from_bits(bits);
    if bits >= EXPONENT || max == 0.0 {
        q.fill(0);
        return if max == 0.0 { 0.0 } else { f32::NAN };
    }
    let bound = activation_bound(x.len());
    let inv = bound as f32 / max;
    let twice = 2.0 * inv;
    let (body, pad) = q.split_at_mut(x.len());
    if twice.is_finite() {
        // The same rounding in integers (one float operation per value): with
        // `u = trunc(2t)` (exact: `v * 2 inv` is `2 (v * inv)` in f32), `round(t)` is
        // `floor((u + 1) / 2)` for `u >= 0` and `floor(u / 2)` below; and
        // `|t| <= Q (1 + 3 eps)` keeps the result within the bound without a clamp.
        let round = |v: f32| {
            let u = (v * twice) as i32;
            ((u + 1 + (u >> 31)) >> 1) as i16
        };
        // On Arm the whole groups of 4 in assembly (the same steps), where `q` is 4-byte
        // aligned (the scratch is).
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
        if let Ok(words) = bytemuck::try_cast_slice_mut::<i16, u32>(&mut body[..x.len() / 4 * 4]) {
            done = super::dsp::quantize4(x, twice, words);
        }
        for (q, &v) in body[done..].iter_mut().zip(&x[done..]) {
            *q = round(v);
        }
    } else {
        for (q, &v) in body.iter_mut().zip(x) {
            let t = v * inv;
            // Half away from zero: `t +- 0.5` is exact below 2^23, and `as` truncates toward
            // zero, saturating (an infinite `t`, where `max` is subnormal, to the bound; NaN
            // to 0).
            *q = ((t + 0.5f32.copysign(t)) as i32).clamp(-bound, bound) as i16;
        }
    }
    pad.fill(0);
    max / bound as f32
}

/// The sums `[sum_k w[2p][k] q_k, sum_k w[2p+1][k] q_k]` of a pair of rows (`v`, the stored
/// values of the module documentation) with a quantised column `q` (as many values; the
/// shorter decides), in i32: the definition every target's sums equal. Exact while the sums
/// fit (the bound of [`activation_bound`]); wrapping otherwise (wrapping sums are the same in
/// any order, so the lanes below change nothing).
///
/// On the host the values are taken [`PAIR_LANES`] at a time into as many partial sums, a
/// loop the compiler turns into vector multiply-adds (`examples/kernels`, int8 rows, Zen 3:
/// 1.6 GMAC/s with one running pair of sums, 9.4-10.9 with 16 lanes); on Arm, where the
/// assembly of `ops::dsp` does the work and this only sums leftovers, one lane (the smallest
/// code).
#[inline]
pub fn pair_dots(v: &[i16], q: &[i16]) -> [i32; 2] {
    let n = v.len().min(q.len());
    let (v, q) = (&v[..n], &q[..n]);
    let (mut even, mut odd) = ([0i32; PAIR_LANES], [0i32; PAIR_LANES]);
    let (mut vs, mut qs) = (v.chunks_exact(PAIR_LANES), q.chunks_exact(PAIR_LANES));
    for (v, q) in (&mut vs).zip(&mut qs) {
        for l in 0..PAIR_LANES {
            let [e, o] = split(v[l]);
            let x = i32::from(q[l]);
            // |e| <= 128, |o| <= 128, |x| <= 32768: no overflow in the products.
            even[l] = even[l].wrapping_add(e * x);
            odd[l] = odd[l].wrapping_add(o * x);
        }
    }
    let total = |s: [i32; PAIR_LANES]| s.iter().fold(0i32, |t, &x| t.wrapping_add(x));
    let (mut even, mut odd) = (total(even), total(odd));
    for (&v, &x) in vs.remainder().iter().zip(qs.remainder()) {
        let [e, o] = split(v);
        let x = i32::from(x);
        even = even.wrapping_add(e * x);
        odd = odd.wrapping_add(o * x);
    }
    [even, odd]
}

/// Partial sums [`pair_dots`] keeps: 16 on the host (vector lanes), 1 on Arm.
#[cfg(not(target_arch = "arm"))]
const PAIR_LANES: usize = 16;
/// Partial sums [`pair_dots`] keeps: 16 on the host (vector lanes), 1 on Arm.
#[cfg(target_arch = "arm")]
const PAIR_LANES: usize = 1;

/// Pairs of rows whose sums [`column_sums`] hands over at once.
const PAIRS_AT_ONCE: usize = 32;

/// The sums of every pair of rows of `values` (pairs `stride` values apart), over the
/// `q.len()` positions from `start` on, with the quantised column `q`, handed to
/// `emit(p, sums)` a few pairs at a time: `sums[2 i]` and `sums[2 i + 1]` are those of rows
/// `2 (p + i)` and `2 (p + i) + 1`. On the Arm DSP extension, where the pairs and `q` are
/// 4-byte aligned (a file's tensors and the scratch are, for a range that starts at an even
/// position), the loops of `ops::dsp::pair_sums` over the whole words; everywhere else
/// [`pair_dots`]. The same sums. Not inlined: one copy of the loops per closure type (two),
/// not one per product instance (15 KB of flash on the paper int8 model).
#[inline(never)]
fn column_sums(
    values: &[i16],
    stride: usize,
    start: usize,
    q: &[i16],
    mut emit: impl FnMut(usize, &[i32]),
) {
    let len = q.len();
    let pairs = values.len() / stride.max(1);
    let mut sums = [[0i32; 2]; PAIRS_AT_ONCE];
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if start % 2 == 0 && stride % 2 == 0 && len >= 2 {
        let whole = len / 2 * 2;
        if let (Ok(w), Ok(x)) = (
            bytemuck::try_cast_slice::<i16, u32>(values),
            bytemuck::try_cast_slice::<i16, u32>(&q[..whole]),
        ) {
            let (offset, words) = (start / 2, whole / 2);
            let mut p = 0;
            while p < pairs {
                let m = PAIRS_AT_ONCE.min(pairs - p);
                let out = &mut sums[..m];
                let from = p * (stride / 2) + offset;
                if super::dsp::pair_sums(&w[from..], stride / 2, words, x, out).is_none() {
                    return;
                }
                if len % 2 == 1 {
                    for (i, s) in out.iter_mut().enumerate() {
                        let at = (p + i) * stride + start + whole;
                        let [e, o] = pair_dots(&values[at..at + 1], &q[whole..]);
                        *s = [s[0].wrapping_add(e), s[1].wrapping_add(o)];
                    }
                }
                emit(p, out.as_flattened());
                p += m;
            }
            return;
        }
    }
    let mut p = 0;
    while p < pairs {
        let m = PAIRS_AT_ONCE.min(pairs - p);
        for (i, s) in sums[..m].iter_mut().enumerate() {
            let at = (p + i) * stride + start;
            *s = values.get(at..at + len).map_or([0, 0], |part| pair_dots(part, q));
        }
        emit(p, sums[..m].as_flattened());
        p += m;
    }
}

/// `C = A_q B` and `C2 = A2_q B`: two layers reading the same input (a query's `enc_ap x`
/// and `G2muᵀ x`), each column of `B` quantised once for both. The same results as
/// [`mul_to`] for each; where either product's sizes do not fit (as [`mul_to`]), neither
/// `C` nor `C2` is written.
pub fn mul_to_both<R: Dim, C: Dim, C2: Dim, B: Dim>(
    a: &QuantMat<'_>,
    c: MatMut<'_, C, B>,
    a2: &QuantMat<'_>,
    mut c2: MatMut<'_, C2, B>,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
) {
    let rows2 = c2.nrows().value();
    let fits2 = a2.depth == b.nrows().value()
        && a2.rows == rows2
        && c2.ncols().value() == c.ncols().value();
    if fits2 {
        let c2 = c2.as_mut_slice();
        product::<R, C, B, false>(a, 0, b, scratch, c, |j, q, s| {
            if let Some(c2) = c2.get_mut(j * rows2..(j + 1) * rows2) {
                scaled_sums::<false>(a2, 0, q, s, c2);
            }
        });
    }
}

/// `c (+)= (the sums of every row of `a` from position `start` on with the quantised column
/// `q`) scale_r s`: one column of a product, its `rows` results.
#[inline(always)]
fn scaled_sums<const ADD: bool>(a: &QuantMat<'_>, start: usize, q: &[i16], s: f32, c: &mut [f32]) {
    let scales = &a.scales[..a.rows];
    column_sums(a.values, a.pair_stride(), start, q, |p, sums| {
        let from = (2 * p).min(c.len());
        let n = sums.len().min(c.len() - from);
        let (c, scales, sums) = (&mut c[from..from + n], &scales[from..from + n], &sums[..n]);
        let scaled = |c: &mut f32, scale: f32, sum: i32| {
            let v = sum as f32 * scale * s;
            *c = if ADD { *c + v } else { v };
        };
        // Two rows at a time (a pair), then the odd last row.
        let mut c2 = c.chunks_exact_mut(2);
        for ((c, scale), sum) in (&mut c2).zip(scales.chunks_exact(2)).zip(sums.chunks_exact(2)) {
            scaled(&mut c[0], scale[0], sum[0]);
            scaled(&mut c[1], scale[1], sum[1]);
        }
        if let ([c], [.., scale], [.., sum]) = (c2.into_remainder(), scales, sums) {
            scaled(c, *scale, *sum);
        }
    });
}

/// The common body of the products: the values of each row of `a` from `start` on, as many as
/// `B` has rows; each group of up to [`QUANT_COLS`] columns of `B` is quantised into `scratch`,
/// then per column `j` of the group its sums go to `C` and `also(j, q, s)` is called with the
/// quantised column and its scale (another product of the same column, or nothing).
fn product<R: Dim, C: Dim, B: Dim, const ADD: bool>(
    a: &QuantMat<'_>,
    start: usize,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    mut c: MatMut<'_, C, B>,
    mut also: impl FnMut(usize, &[i16], f32),
) {
    let (depth, rows) = (b.nrows().value(), c.nrows().value());
    let len = column_len(depth);
    let n = b.ncols().value().min(c.ncols().value());
    // From the first 4-byte aligned value on (the address is only looked at, not used).
    let skip = (scratch.as_ptr() as usize / 2) % 2;
    let scratch = scratch.get_mut(skip..).unwrap_or_default();
    let group = (scratch.len() / len.max(1)).min(QUANT_COLS);
    let fits = start.checked_add(depth).is_some_and(|end| end <= a.depth);
    if !fits || rows != a.rows || group == 0 || depth == 0 {
        return;
    }
    let c = c.as_mut_slice();
    let mut j = 0;
    while j < n {
        let cols = group.min(n - j);
        let mut col_scale = [0.0f32; QUANT_COLS];
        for (t, s) in col_scale.iter_mut().enumerate().take(cols) {
            *s = quantize_column(b.column(j + t), &mut scratch[t * len..(t + 1) * len]);
        }
        let c_cols = &mut c[j * rows..(j + cols) * rows];
        for (t, (q, c)) in scratch[..cols * len]
            .chunks_exact(len)
            .zip(c_cols.chunks_exact_mut(rows))
            .enumerate()
        {
            scaled_sums::<ADD>(a, start, &q[..depth], col_scale[t], c);
            also(j + t, &q[..depth], col_scale[t]);
        }
        j += cols;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use nalgebra::Dyn;
    use std::{vec, vec::Vec};

    /// Uniform values in [-0.5, 0.5) from a fixed LCG.
    fn random(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// A matrix of `rows x depth` from f32 rows (row-major), quantised per row by the one
    /// definition (`formats::quant::quantize`; the rows are the f32 layout's inputs).
    fn quantised(rows: usize, depth: usize, w: &[f32]) -> (Vec<i16>, Vec<f32>) {
        formats::quant::quantize(w, rows, depth, formats::QuantAxis::In).unwrap()
    }

    /// The row-pair layout of the row-major int8 rows `w` (`formats::quant::pack_pairs`).
    fn packed(rows: usize, depth: usize, w: &[i8]) -> Vec<i16> {
        let mut out = vec![0i16; rows.div_ceil(2) * column_len(depth)];
        formats::quant::pack_pairs(rows, depth, w, &mut out).unwrap();
        out
    }

    /// Runs `mul_to` and `mul_add_to` (onto `start`) for B `depth x n`; returns both.
    fn run(a: &QuantMat<'_>, b: &[f32], n: usize, start: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (depth, rows) = (a.depth(), a.rows());
        // One value more than needed, used from the second: the kernel aligns it.
        let mut scratch = vec![0x5555i16; scratch_len(column_len(depth), n) + 1];
        let scratch = &mut scratch[n % 2..];
        let bm = Mat::from_slice(b, Dyn(depth), Dyn(n)).unwrap();
        let mut c = vec![f32::NAN; rows * n];
        mul_to(
            a,
            bm,
            scratch,
            MatMut::from_slice(&mut c, Dyn(rows), Dyn(n)).unwrap(),
        );
        let mut c_add = start.to_vec();
        mul_add_to(
            a,
            bm,
            scratch,
            MatMut::from_slice(&mut c_add, Dyn(rows), Dyn(n)).unwrap(),
        );
        (c, c_add)
    }

    /// The bound of the module documentation for entry (r, j), and the f64 dequantised
    /// product.
    fn oracle(a: &QuantMat<'_>, b: &[f32], r: usize, j: usize) -> (f64, f64) {
        let depth = a.depth();
        let x = &b[j * depth..(j + 1) * depth];
        let row: Vec<i32> = (0..depth).map(|k| a.weight(r, k).unwrap()).collect();
        let exact: f64 = row
            .iter()
            .zip(x)
            .map(|(&w, &v)| f64::from(w) * f64::from(a.scale(r)) * f64::from(v))
            .sum();
        let q = f64::from(activation_bound(depth));
        let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = f64::from(max) / q;
        let eps = f64::from(f32::EPSILON) / 2.0;
        let abs_a: f64 = row.iter().map(|&w| f64::from(w).abs()).sum();
        let bound =
            f64::from(a.scale(r)) * s * (0.5 + 4.0 * q * eps) * abs_a + 3.0 * eps * exact.abs();
        (exact, bound)
    }

    #[test]
    fn matches_the_dequantised_product_within_the_bound() {
        // Depths odd and even (padding), the paper's, tiny ones; odd and even row counts; B
        // columns 1..=7 and more than one scratch group.
        for (rows, depth, seed) in [
            (5, 1, 1),
            (3, 2, 2),
            (7, 3, 3),
            (9, 4, 4),
            (17, 7, 5),
            (33, 13, 6),
            (128, 640, 7),
            (256, 128, 8),
            (6, 255, 9),
            (1, 6, 10),
        ] {
            let w = random(rows * depth, seed);
            let (values, scales) = quantised(rows, depth, &w);
            let a = QuantMat::from_parts(rows, depth, &values, &scales).unwrap();
            for n in (1..=7).chain([11]) {
                let mut b = random(depth * n, seed + 100 + n as u32);
                // An outlier per column: the scale follows it.
                for j in 0..n {
                    b[j * depth + (j * 7) % depth] *= 40.0;
                }
                let start = random(rows * n, seed + 200);
                let (c, c_add) = run(&a, &b, n, &start);
                let mut worst = 0.0f64;
                for j in 0..n {
                    for r in 0..rows {
                        let (exact, bound) = oracle(&a, &b, r, j);
                        let got = f64::from(c[j * rows + r]);
                        assert!(
                            (got - exact).abs() <= bound,
                            "{rows}x{depth} n {n} ({r}, {j}): {got} vs {exact}, bound {bound}"
                        );
                        worst = worst.max((got - exact).abs() / bound.max(1e-30));
                        let added = start[j * rows + r] + c[j * rows + r];
                        assert_eq!(c_add[j * rows + r], added);
                    }
                }
                // The bound is not loose by orders of magnitude on the larger products.
                if depth >= 128 {
                    assert!(worst > 1e-3, "{rows}x{depth}: worst {worst} of the bound");
                }
            }
        }
    }

    #[test]
    fn two_products_of_one_input_are_the_products_apart() {
        for (rows, rows2, depth, n) in [(128, 256, 640, 1), (5, 3, 13, 7), (4, 9, 6, 2)] {
            let (v1, s1) = quantised(rows, depth, &random(rows * depth, 1));
            let (v2, s2) = quantised(rows2, depth, &random(rows2 * depth, 2));
            let a = QuantMat::from_parts(rows, depth, &v1, &s1).unwrap();
            let a2 = QuantMat::from_parts(rows2, depth, &v2, &s2).unwrap();
            let b = random(depth * n, 3);
            let bm = Mat::from_slice(&b, Dyn(depth), Dyn(n)).unwrap();
            let mut scratch = vec![0i16; scratch_len(column_len(depth), n)];
            let (mut c, mut c2) = (vec![f32::NAN; rows * n], vec![f32::NAN; rows2 * n]);
            mul_to_both(
                &a,
                MatMut::from_slice(&mut c, Dyn(rows), Dyn(n)).unwrap(),
                &a2,
                MatMut::from_slice(&mut c2, Dyn(rows2), Dyn(n)).unwrap(),
                bm,
                &mut scratch,
            );
            let zeros = vec![0.0; rows.max(rows2) * n];
            assert_eq!(c, run(&a, &b, n, &zeros[..rows * n]).0);
            assert_eq!(c2, run(&a2, &b, n, &zeros[..rows2 * n]).0);
            // The second product's sizes wrong (one row short): neither is written.
            let (mut c, mut c2) = (vec![7.0; rows * n], vec![7.0; rows2 * n]);
            mul_to_both(
                &a,
                MatMut::from_slice(&mut c, Dyn(rows), Dyn(n)).unwrap(),
                &a2,
                MatMut::from_slice(&mut c2[..(rows2 - 1) * n], Dyn(rows2 - 1), Dyn(n)).unwrap(),
                bm,
                &mut scratch,
            );
            assert!(c.iter().chain(&c2).all(|&v| v == 7.0));
        }
    }

    #[test]
    fn a_range_of_each_row_is_the_product_with_those_columns() {
        // Each part of a row against the product with a matrix of just that part: the same
        // quantised column, so the same sums and results, bit for bit.
        for (rows, depth, seed) in [(5, 256, 1), (6, 13, 2), (3, 40, 3), (256, 256, 4)] {
            let w = random(rows * depth, seed);
            let (values, scales) = quantised(rows, depth, &w);
            let a = QuantMat::from_parts(rows, depth, &values, &scales).unwrap();
            let stride = column_len(depth);
            for (start, len) in [
                (0, depth / 2),
                (depth / 2, depth - depth / 2),
                (4, 5),
                (1, 7),
                (3, depth - 3),
                (0, depth),
            ] {
                // A range of a pair of rows is the pair layout of the range.
                let part: Vec<i16> = (0..rows.div_ceil(2))
                    .flat_map(|p| {
                        let mut pair = values[p * stride + start..][..len].to_vec();
                        pair.resize(column_len(len), 0);
                        pair
                    })
                    .collect();
                let alone = QuantMat::from_parts(rows, len, &part, &scales).unwrap();
                for n in [1, 2, 6] {
                    let b = random(len * n, seed + 7 * len as u32 + n as u32);
                    let bm = Mat::from_slice(&b, Dyn(len), Dyn(n)).unwrap();
                    let mut scratch = vec![0i16; scratch_len(column_len(len), n)];
                    let mut got = vec![f32::NAN; rows * n];
                    let cm = MatMut::from_slice(&mut got, Dyn(rows), Dyn(n)).unwrap();
                    mul_to_range(&a, start, bm, &mut scratch, cm);
                    let (want, _) = run(&alone, &b, n, &vec![0.0; rows * n]);
                    assert_eq!(got, want, "{rows}x{depth} from {start}, {len} long, n {n}");
                }
            }
            // Past the end: C is left alone.
            let b = random(depth, 9);
            let bm = Mat::from_slice(&b[..depth - 1], Dyn(depth - 1), Dyn(1)).unwrap();
            let mut scratch = vec![0i16; scratch_len(stride, 1)];
            let mut c = vec![7.0f32; rows];
            let cm = MatMut::from_slice(&mut c, Dyn(rows), Dyn(1)).unwrap();
            mul_to_range(&a, 2, bm, &mut scratch, cm);
            assert!(c.iter().all(|&v| v == 7.0));
        }
    }

    #[test]
    fn integer_sums_are_exact_at_the_overflow_limit() {
        // Every weight +-127 and every activation at the bound: the largest sums there can be,
        // exact (scale 1 on both sides: max |x| = Q gives s = 1 and q = x).
        for depth in [1, 4, 5, 128, 256, 640, 1000, 70_000] {
            let q = activation_bound(depth);
            assert!(127 * i64::from(q) * depth as i64 <= i64::from(i32::MAX));
            for sign in [1i8, -1] {
                let mut w = vec![0i8; 2 * depth];
                let b = vec![q as f32; depth];
                for k in 0..depth {
                    w[k] = 127 * sign;
                    w[depth + k] = if k % 3 == 0 { -127 } else { 127 };
                }
                let values = packed(2, depth, &w);
                let scales = [1.0f32, 1.0];
                let a = QuantMat::from_parts(2, depth, &values, &scales).unwrap();
                let (c, _) = run(&a, &b, 1, &[0.0; 2]);
                let want0 = i64::from(sign) * 127 * i64::from(q) * depth as i64;
                let thirds = depth.div_ceil(3) as i64;
                let want1 = 127 * i64::from(q) * (depth as i64 - 2 * thirds);
                assert_eq!(c[0], want0 as i32 as f32, "depth {depth}");
                assert_eq!(c[1], want1 as i32 as f32, "depth {depth}");
                let mut scratch = vec![0i16; column_len(depth)];
                quantize_column(&b, &mut scratch);
                let [e, o] = pair_dots(&values, &scratch);
                assert_eq!([i64::from(e), i64::from(o)], [want0, want1]);
            }
        }
    }

    #[test]
    fn integer_sums_match_a_plain_sum() {
        // Integer activations with max |x| = Q quantise to themselves; the pair layout then
        // gives the plain sum of products, for every row of an odd and an even count.
        for depth in [1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 64, 641] {
            let q = activation_bound(depth);
            for rows in [3, 4] {
                let w: Vec<i8> = (0..rows * depth)
                    .map(|i| (((i * 37 + i / depth * 11) % 255) as i32 - 127) as i8)
                    .collect();
                let values = packed(rows, depth, &w);
                let mut b: Vec<f32> = (0..depth)
                    .map(|k| (k as f32 * 977.0) % 2001.0 - 1000.0)
                    .collect();
                b[depth / 2] = -(q as f32);
                let scales = vec![1.0f32; rows];
                let a = QuantMat::from_parts(rows, depth, &values, &scales).unwrap();
                let (c, _) = run(&a, &b, 1, &vec![0.0; rows]);
                for r in 0..rows {
                    let want: i64 = (0..depth)
                        .map(|k| i64::from(w[r * depth + k]) * b[k] as i64)
                        .sum();
                    assert_eq!(c[r], want as f32, "depth {depth} row {r} of {rows}");
                    for k in 0..depth {
                        assert_eq!(a.weight(r, k), Some(i32::from(w[r * depth + k])));
                    }
                }
                assert_eq!(a.weight(rows, 0), None);
                assert_eq!(a.weight(0, depth), None);
            }
        }
        // Every pair of int8 values round-trips through the stored i16.
        for even in -127i32..=127 {
            for odd in -127i32..=127 {
                let v = (256 * even + odd) as i16;
                assert_eq!(split(v), [even, odd]);
            }
        }
    }

    #[test]
    fn zero_and_non_finite_columns() {
        let (rows, depth) = (4, 6);
        let w = random(rows * depth, 3);
        let (values, scales) = quantised(rows, depth, &w);
        let a = QuantMat::from_parts(rows, depth, &values, &scales).unwrap();
        let mut b = random(depth * 3, 4);
        b[..depth].fill(0.0);
        b[2 * depth + 1] = f32::NAN;
        let (c, c_add) = run(&a, &b, 3, &[1.5; 12]);
        assert!(c[..rows].iter().all(|&v| v == 0.0));
        assert!(c_add[..rows].iter().all(|&v| v == 1.5));
        assert!(c[rows..2 * rows].iter().all(|v| v.is_finite() && *v != 0.0));
        assert!(c[2 * rows..].iter().all(|v| v.is_nan()));
        let mut q = [7i16; 8];
        assert_eq!(quantize_column(&[0.0; 7], &mut q), 0.0);
        assert_eq!(q, [0; 8]);
        b[2 * depth + 1] = f32::INFINITY;
        assert!(quantize_column(&b[2 * depth..], &mut q).is_nan());
        // A subnormal maximum: `Q / max` is infinite, the values saturate to the bound.
        let tiny = [1e-40f32, -1e-40, 0.0, 5e-41, -0.0, 1e-45, 2e-40];
        let s = quantize_column(&tiny, &mut q);
        assert!(s.is_finite() && s >= 0.0);
        assert_eq!(q, [32767, -32767, 0, 32767, 0, 32767, 32767, 0]);
    }

    #[test]
    fn quantisation_layout_and_rounding() {
        let bound = activation_bound(5);
        assert_eq!(bound, 32767);
        let mut q = [0x1234i16; 7];
        // max = 4: one step is 4 / 32767.
        let step = 4.0f32 / 32767.0;
        let x = [4.0, -4.0, 1.5 * step, -2.5 * step, 0.49 * step];
        let s = quantize_column(&x, &mut q);
        assert_eq!(s, 4.0 / 32767.0);
        // In order, padded with one zero to an even length; nothing written past it.
        assert_eq!(q, [32767, -32767, 2, -3, 0, 0, 0x1234]);
        assert_eq!(activation_bound(640), 26_420);
        assert_eq!(activation_bound(256), 32767);
        assert_eq!(activation_bound(0), 32767);
        assert_eq!(activation_bound(usize::MAX / 256), 1);
        // Too short a scratch: nothing is written.
        let mut short = [9i16; 5];
        assert!(quantize_column(&x, &mut short).is_nan());
        assert_eq!(short, [9; 5]);
    }

    #[test]
    fn quantisation_rounds_half_away_from_zero() {
        // The integer rounding of `quantize_column` against the definition, on values at and
        // around every half step and on random columns of every scale.
        for (depth, seed) in [(640, 1u32), (37, 2), (256, 3), (5, 4)] {
            // 1e-38 and 1e-41: `2 Q / max` or `Q / max` overflow, the clamping path.
            for scale in [1e-41f32, 1e-38, 1e-30, 1e-3, 1.0, 3.7, 1e6, 1e30] {
                let mut x: Vec<f32> = random(depth, seed).iter().map(|v| v * scale).collect();
                let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let bound = activation_bound(depth);
                let inv = bound as f32 / max;
                // Half steps, exactly representable where the step is a power of two apart.
                for (k, v) in x.iter_mut().enumerate().skip(1).step_by(3) {
                    *v = ((k % 41) as f32 - 20.5) / inv;
                }
                let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let inv = bound as f32 / max;
                let mut q = vec![0i16; column_len(depth)];
                quantize_column(&x, &mut q);
                for (k, &v) in x.iter().enumerate() {
                    let t = f64::from(v * inv);
                    let rounded = (t.abs() + 0.5).floor().min(f64::from(bound)) * t.signum();
                    let want = if t.is_nan() { 0.0 } else { rounded };
                    assert_eq!(f64::from(q[k]), want, "depth {depth} scale {scale} k {k}");
                }
            }
        }
    }

    #[test]
    fn mismatched_sizes_leave_c_unchanged() {
        let values = [1i16; 4];
        let scales = [1.0f32; 2];
        assert!(QuantMat::from_parts(2, 4, &values, &scales[..1]).is_none());
        assert!(QuantMat::from_parts(2, 5, &values, &scales).is_none());
        assert!(QuantMat::from_parts(usize::MAX, 4, &values, &scales).is_none());
        let a = QuantMat::from_parts(2, 4, &values, &scales).unwrap();
        let tensor = QuantTensor {
            axis: formats::QuantAxis::Out,
            rows: 2,
            depth: 4,
            pair_stride: 4,
            values: &values,
            scales: &scales,
        };
        let from_file = QuantMat::new(tensor);
        assert_eq!((from_file.rows(), from_file.weight(1, 3)), (2, Some(1)));
        let bad = QuantMat::new(QuantTensor { rows: 3, ..tensor });
        assert_eq!((bad.rows(), bad.weight(0, 0)), (0, None));
        assert_eq!(
            (a.rows(), a.depth(), a.pair_stride(), a.scale(1), a.scale(2)),
            (2, 4, 4, 1.0, 0.0)
        );
        // v = 1: the even row's values are 0, the odd row's 1.
        assert_eq!((a.weight(0, 0), a.weight(1, 0)), (Some(0), Some(1)));
        let b = [1.0f32; 10];
        let mut c = [3.0f32; 4];
        let mut scratch = [0i16; 8];
        // B with 5 rows against depth 4; C with 1 row; scratch too short for a column.
        let bm = Mat::from_slice(&b, Dyn(5), Dyn(2)).unwrap();
        mul_to(
            &a,
            bm,
            &mut scratch,
            MatMut::from_slice(&mut c, Dyn(2), Dyn(2)).unwrap(),
        );
        let bm = Mat::from_slice(&b[..8], Dyn(4), Dyn(2)).unwrap();
        mul_to(
            &a,
            bm,
            &mut scratch,
            MatMut::from_slice(&mut c[..2], Dyn(1), Dyn(2)).unwrap(),
        );
        mul_to(
            &a,
            bm,
            &mut scratch[..3],
            MatMut::from_slice(&mut c, Dyn(2), Dyn(2)).unwrap(),
        );
        assert_eq!(c, [3.0; 4]);
        // A scratch of one column (and the value for aligning it) does the columns one at a
        // time.
        mul_to(
            &a,
            bm,
            &mut scratch[..5],
            MatMut::from_slice(&mut c, Dyn(2), Dyn(2)).unwrap(),
        );
        let one = (4.0f32 * 32767.0) * (1.0 / 32767.0);
        assert_eq!(c, [0.0, one, 0.0, one]);
    }
}
