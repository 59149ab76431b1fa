//! Products of an int8 weight matrix with f32 columns: [`mul_to`] (`C = A_q B`) and
//! [`mul_add_to`] (`C += A_q B`), with integer accumulation.
//!
//! # What is computed
//! `A_q` ([`QuantMat`]) has `rows` rows of `depth` int8 values, each row zero-padded to
//! `stride` (= `depth` rounded up to a multiple of 4) bytes, and one f32 scale per row:
//! `A[r][k] = a[r][k] scale_r`. Each column `x` of `B` (`depth` values) is quantised to i16
//! with a scale of its own ([`quantize_column`]): `s = max_k |x_k| / Q`, `q_k = round(x_k / s)`
//! (half away from zero, clamped to `[-Q, Q]`), where the bound
//! `Q = min(32767, floor((2^31 - 1) / (127 depth)))` ([`activation_bound`]) makes every
//! partial sum of `sum_k a[r][k] q_k` fit an i32: `127 Q depth <= 2^31 - 1`. The sum is
//! accumulated in i32, exactly, in any order; then `C[r][j] = (sum as f32 * scale_r) * s_j`.
//! The integer sums, and so the results, are the same on every target: the device's and the
//! host's logits differ only in the f32 code around these products.
//!
//! # Error against the dequantised f32 product
//! The weights are what they are (the file's int8 values and scales); the only approximation
//! here is the rounding of the activations. With `x_k = s q_k + e_k`,
//! `A x - C = scale_r sum_k a[r][k] e_k + (rounding of the f32 tail)`, and
//! `|e_k| <= s (1/2 + 4 Q eps)`: half a step of rounding, plus the f32 rounding of
//! `x_k Q / max` and of `s` (each a relative `eps = 2^-24` of values up to `Q` steps; 4 covers
//! them). Hence, per entry, with `eps = f32::EPSILON / 2`,
//!
//! `|C[r][j] - sum_k A[r][k] x_kj| <= scale_r s_j (1/2 + 4 Q eps) sum_k |a[r][k]| + 3 eps |C[r][j]|`
//!
//! (the last term: the conversion of the sum to f32 and the two products). The test
//! `matches_the_dequantised_product_within_the_bound` checks it on random and adversarial
//! columns; for the paper's depths (128 to 640) the relative error of a product is about
//! `1 / (2 Q)`, i.e. 2e-5.
//!
//! # Layout of the quantised activations
//! Each group of 4 activations `x0 x1 x2 x3` is stored as `x0 x2 x1 x3`: the halfword pairs
//! `(x0, x2)` and `(x1, x3)` are what the Arm DSP extension's `SXTB16` makes of a word of 4
//! weights (bytes 0 and 2, then, rotated by 8, bytes 1 and 3), so on Cortex-M4/M7 the inner
//! loop is one `SMLAD` per pair. Every target quantises the same way ([`quantize_column`]);
//! the host then swaps each group back to `x0 x1 x2 x3` for its sums (the same products).
//!
//! # Speed
//! On Cortex-M4/M7 the inner loop is assembly (`SXTB16`/`SMLAD`, 1.25 instructions per
//! multiply-add; `docs/arm-kernels.md`). On the host each quantised column is put back in
//! the natural order first and the sums are plain zips, which vectorise but are not tiled:
//! 8 to 13 GMAC/s against the f32 kernels' 13 to 23 on the same shapes (3.4 with the pair
//! layout; `cargo run -p engine --release --example kernels 30`, AMD EPYC Zen 4 shared by
//! other jobs); int8 models are for the device, the host runs them to check them.

use formats::QuantTensor;
use nalgebra::Dim;

use super::{Mat, MatMut};

/// Columns of `B` quantised at once: the scratch holds this many quantised columns (5
/// divides the 25 support examples of the 5-shot models, a 15-query batch and a 5-query call).
pub const QUANT_COLS: usize = 5;

/// The i16 scratch [`mul_to`] and [`mul_add_to`] need for `n` columns of `B` against a
/// matrix of row stride `stride`: `stride` values for each of up to [`QUANT_COLS`] columns,
/// and one more, so that the columns can start 4-byte aligned (the Arm kernels load them a
/// word at a time).
pub const fn scratch_len(stride: usize, n: usize) -> usize {
    stride * if n < QUANT_COLS { n } else { QUANT_COLS } + 1
}

/// `depth` rounded up to a multiple of 4: the row stride of an int8 matrix of that depth.
pub const fn stride_of(depth: usize) -> usize {
    depth.div_ceil(4) * 4
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

/// An int8 weight matrix borrowed from a model file: `rows` rows of `depth` values, each row
/// contiguous and zero-padded to `stride` bytes, one f32 scale per row. The values are in
/// `[-127, 127]` (formats refuses -128; with it the sums could wrap, never panic).
#[derive(Clone, Copy, Debug)]
pub struct QuantMat<'a> {
    rows: usize,
    depth: usize,
    values: &'a [i8],
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

    /// The matrix with `rows` rows of `depth` values (row `r` at `values[r * stride..]`,
    /// `stride` = [`stride_of`]`(depth)`) and their scales; `None` unless `values` holds
    /// exactly `rows * stride` values and `scales` exactly `rows`.
    pub fn from_parts(
        rows: usize,
        depth: usize,
        values: &'a [i8],
        scales: &'a [f32],
    ) -> Option<Self> {
        let len = rows.checked_mul(stride_of(depth))?;
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

    /// Bytes per row: `depth` rounded up to a multiple of 4.
    pub fn stride(&self) -> usize {
        stride_of(self.depth)
    }

    /// The scale of row `r` (0 past the last row).
    pub fn scale(&self, r: usize) -> f32 {
        self.scales.get(r).copied().unwrap_or(0.0)
    }

    /// The int8 values, row after row, each `stride` long.
    pub fn values(&self) -> &'a [i8] {
        self.values
    }
}

/// `C = A_q B`: `B` is `depth x n`, `C` is `rows x n` (see the module documentation), with
/// `scratch` of at least [`scratch_len`]`(a.stride(), n)` values. Where `B` does not have
/// `depth` rows, `C` not `rows` rows, or `scratch` cannot hold one quantised column, `C` is
/// left unchanged.
pub fn mul_to<R: Dim, C: Dim, B: Dim>(
    a: &QuantMat<'_>,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    c: MatMut<'_, C, B>,
) {
    product::<R, C, B, false>(a, 0, b, scratch, c);
}

/// `C += A_q B`, as [`mul_to`].
pub fn mul_add_to<R: Dim, C: Dim, B: Dim>(
    a: &QuantMat<'_>,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    c: MatMut<'_, C, B>,
) {
    product::<R, C, B, true>(a, 0, b, scratch, c);
}

/// `C = A_q[:, start..start + depth] B`: the product with the `depth` values of each row from
/// `start` on (`B` is `depth x n`, `C` is `rows x n`; `start + depth <= a.depth()`), as
/// [`mul_to`] (a layer applied to one part of its input, e.g. one half of the generator's
/// first layer). Where `start` is a multiple of 4, the Arm kernels run; otherwise the portable
/// sums, which are the same. Where the range does not fit, `C` is left unchanged.
pub fn mul_to_range<R: Dim, C: Dim, B: Dim>(
    a: &QuantMat<'_>,
    start: usize,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    c: MatMut<'_, C, B>,
) {
    product::<R, C, B, false>(a, start, b, scratch, c);
}

/// Quantises the column `x` (its first `stride_of(x.len())` values are written to `q`, padded
/// with zeros, in the pair layout of the module documentation) with the bound
/// [`activation_bound`]`(x.len())`, and returns its scale: `max |x| / Q`, 0 for a zero column,
/// NaN if `x` holds a non-finite value (then `q` is all zeros and the products are NaN).
/// Writes nothing if `q` is shorter than `stride_of(x.len())`.
pub fn quantize_column(x: &[f32], q: &mut [i16]) -> f32 {
    let Some(q) = q.get_mut(..stride_of(x.len())) else {
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
    if twice.is_finite() {
        // The same rounding in integers (one float operation per value): with
        // `u = trunc(2t)` (exact: `v * 2 inv` is `2 (v * inv)` in f32), `round(t)` is
        // `floor((u + 1) / 2)` for `u >= 0` and `floor(u / 2)` below; and
        // `|t| <= Q (1 + 3 eps)` keeps the result within the bound without a clamp.
        pairs(x, q, |v: f32| {
            let u = (v * twice) as i32;
            ((u + 1 + (u >> 31)) >> 1) as i16
        });
    } else {
        pairs(x, q, |v: f32| {
            let t = v * inv;
            // Half away from zero: `t +- 0.5` is exact below 2^23, and `as` truncates toward
            // zero, saturating (an infinite `t`, where `max` is subnormal, to the bound; NaN
            // to 0).
            ((t + 0.5f32.copysign(t)) as i32).clamp(-bound, bound) as i16
        });
    }
    max / bound as f32
}

/// `q` (`stride_of(x.len())` values) = `round` of `x` in the pair layout, zero-padded.
#[inline(always)]
fn pairs(x: &[f32], q: &mut [i16], round: impl Fn(f32) -> i16) {
    let mut groups = x.chunks_exact(4);
    for (x4, q4) in (&mut groups).zip(q.chunks_exact_mut(4)) {
        q4[0] = round(x4[0]);
        q4[1] = round(x4[2]);
        q4[2] = round(x4[1]);
        q4[3] = round(x4[3]);
    }
    let tail = groups.remainder();
    if let Some(q4) = q.chunks_exact_mut(4).last().filter(|_| !tail.is_empty()) {
        let at = |k: usize| tail.get(k).copied().unwrap_or(0.0);
        q4[0] = round(at(0));
        q4[1] = round(at(2));
        q4[2] = round(at(1));
        q4[3] = round(at(3));
    }
}

/// `sum_k a_k x_k` of one int8 row (a multiple of 4 long) and one quantised column in the
/// pair layout, in i32 (exact: see [`activation_bound`]).
#[inline]
pub fn dot(a: &[i8], q: &[i16]) -> i32 {
    let mut acc = 0i32;
    for (a4, q4) in a.chunks_exact(4).zip(q.chunks_exact(4)) {
        let p = |w: i8, x: i16| i32::from(w) * i32::from(x);
        // At most 4 * 127 * 32767 in magnitude: no overflow within the group.
        let group = p(a4[0], q4[0]) + p(a4[2], q4[1]) + p(a4[1], q4[2]) + p(a4[3], q4[3]);
        acc = acc.wrapping_add(group);
    }
    acc
}

/// The common body of [`mul_to`], [`mul_add_to`] and [`mul_to_range`]: the values of each
/// row from `start` on, as many as `B` has rows.
fn product<R: Dim, C: Dim, B: Dim, const ADD: bool>(
    a: &QuantMat<'_>,
    start: usize,
    b: Mat<'_, R, B>,
    scratch: &mut [i16],
    mut c: MatMut<'_, C, B>,
) {
    let (depth, rows) = (b.nrows().value(), c.nrows().value());
    let stride = stride_of(depth);
    let n = b.ncols().value().min(c.ncols().value());
    // From the first 4-byte aligned value on (the address is only looked at, not used).
    let skip = (scratch.as_ptr() as usize / 2) % 2;
    let scratch = scratch.get_mut(skip..).unwrap_or_default();
    let group = (scratch.len() / stride.max(1)).min(QUANT_COLS);
    let fits = start.checked_add(depth).is_some_and(|end| end <= a.depth);
    if !fits || rows != a.rows || group == 0 || depth == 0 {
        return;
    }
    let whole = start == 0 && depth == a.depth;
    let Some(values) = a.values.get(..rows * a.stride()) else {
        return;
    };
    let scales = &a.scales[..rows];
    let c = c.as_mut_slice();
    let mut j = 0;
    while j < n {
        let cols = group.min(n - j);
        let mut col_scale = [0.0f32; QUANT_COLS];
        for (t, s) in col_scale.iter_mut().enumerate().take(cols) {
            let q = &mut scratch[t * stride..(t + 1) * stride];
            *s = quantize_column(b.column(j + t), q);
            if NATURAL {
                // x0 x2 x1 x3 -> x0 x1 x2 x3: the same products, summed in an order the host
                // vectorises.
                for q4 in q.chunks_exact_mut(4) {
                    q4.swap(1, 2);
                }
            }
        }
        let q = &scratch[..cols * stride];
        let c_cols = &mut c[j * rows..(j + cols) * rows];
        for (t, (q, c)) in q
            .chunks_exact(stride)
            .zip(c_cols.chunks_exact_mut(rows))
            .enumerate()
        {
            let s = col_scale[t];
            let emit = |r: usize, sum: i32| {
                if let (Some(c), Some(&scale)) = (c.get_mut(r), scales.get(r)) {
                    let v = sum as f32 * scale * s;
                    *c = if ADD { *c + v } else { v };
                }
            };
            if whole {
                column_sums(b.nrows(), values, q, emit);
            } else {
                range_sums(b.nrows(), values, a.stride(), start, q, emit);
            }
        }
        j += cols;
    }
}

/// `sum_k a_k x_k` of a part of an int8 row (any length) and one quantised column in the
/// pair layout: [`dot`] over the whole groups of 4, then the last part-group.
pub fn dot_part(a: &[i8], q: &[i16]) -> i32 {
    let whole = a.len() / 4 * 4;
    let mut acc = dot(&a[..whole], q);
    let tail = &a[whole..];
    if let Some(q4) = q.get(whole..).filter(|_| !tail.is_empty()) {
        let mut a4 = [0i8; 4];
        a4[..tail.len()].copy_from_slice(tail);
        acc = acc.wrapping_add(dot(&a4, q4));
    }
    acc
}

/// The sums of the `depth` values of every row (rows `row_stride` bytes apart) from `start`
/// on with the quantised column `q`, handed to `emit(r, sum)`: the Arm kernels where the part
/// starts on a word, else [`dot_part`]. Both give the same sums.
fn range_sums<R: Dim>(
    depth: R,
    values: &[i8],
    row_stride: usize,
    start: usize,
    q: &[i16],
    mut emit: impl FnMut(usize, i32),
) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if start % 4 == 0 && row_stride % 4 == 0 {
        if let (Ok(w), Ok(x)) = (
            bytemuck::try_cast_slice::<i8, u32>(values),
            bytemuck::try_cast_slice::<i16, u32>(q),
        ) {
            if arm::range_sums(depth, w, row_stride / 4, start / 4, x, &mut emit) {
                return;
            }
        }
    }
    let len = depth.value();
    for (r, row) in values.chunks_exact(row_stride.max(1)).enumerate() {
        if let Some(part) = row.get(start..start + len) {
            emit(
                r,
                if NATURAL {
                    dot_natural(part, q)
                } else {
                    dot_part(part, q)
                },
            );
        }
    }
}

/// The sums `dot(row r, q)` of every row of `values` (rows of `stride_of(depth)` values)
/// with the quantised column `q`, handed to `emit(r, sum)`. On Arm with the DSP extension,
/// where `values` and `q` are 4-byte aligned (a file's tensors are; the scratch is where the
/// caller's buffer is), the `SMLAD` kernel of [`arm`]; else [`dot`]. Both give the same sums.
#[inline(always)]
fn column_sums<R: Dim>(depth: R, values: &[i8], q: &[i16], mut emit: impl FnMut(usize, i32)) {
    let stride = stride_of(depth.value());
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if let (Ok(w), Ok(x)) = (
        bytemuck::try_cast_slice::<i8, u32>(values),
        bytemuck::try_cast_slice::<i16, u32>(q),
    ) {
        if arm::column_sums(depth, w, x, &mut emit) {
            return;
        }
    }
    for (r, row) in values.chunks_exact(stride).enumerate() {
        emit(
            r,
            if NATURAL {
                dot_natural(row, q)
            } else {
                dot(row, q)
            },
        );
    }
}

/// Whether [`product`] puts each quantised column back in the natural order before the sums
/// ([`dot_natural`]): everywhere but on the Arm DSP path, which reads the pair layout.
const NATURAL: bool = !cfg!(all(target_arch = "arm", target_abi = "eabihf"));

/// `sum_k a_k x_k` of an int8 row and a quantised column in the natural order (`x0 x1 x2
/// ..`), in i32: the same products as [`dot`] of the pair layout, the same exact sum; a
/// plain zip that the host vectorises (2.5 to 4 times [`dot`]'s rate on the paper's shapes).
#[inline]
fn dot_natural(a: &[i8], x: &[i16]) -> i32 {
    a.iter().zip(x).fold(0i32, |s, (&a, &x)| {
        s.wrapping_add(i32::from(a) * i32::from(x))
    })
}

/// The int8 inner loops on the Arm DSP extension (Cortex-M4/M7, `thumbv7em-none-eabihf`):
/// per word of 4 weights, `SXTB16` and `SXTB16 ROR 8` sign-extend bytes (0, 2) and (1, 3)
/// to halfword pairs and two `SMLAD`s multiply-accumulate them with the activation pairs
/// `(x0, x2)`, `(x1, x3)` the quantisation stored in that order. Two rows share each load of
/// the activations (8 per step): the loop is in assembly (`dsp::two_rows`: LLVM's schedule
/// of the same steps took 25 to 32 instructions per 16 multiply-adds, the assembly 21).
/// Used where the rows and the scratch are 4-byte aligned (a file's tensors are 64-byte
/// aligned; [`product`] aligns the scratch); else [`dot`]. `docs/arm-kernels.md` has the
/// disassembly and the instructions per multiply-add.
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm {
    use nalgebra::Dim;

    use super::super::dsp::{smlad, sxtb16, sxtb16_ror8, two_rows as two_rows_asm};
    use super::stride_of;

    /// [`super::column_sums`] on the DSP extension: `w` holds the rows (`stride_of(depth) / 4`
    /// words of 4 int8 values per row), `x` the quantised column (words of 2 i16). Returns
    /// false (and emits nothing) if `x` is short.
    #[inline(always)]
    pub(super) fn column_sums<R: Dim>(
        depth: R,
        w: &[u32],
        x: &[u32],
        mut emit: impl FnMut(usize, i32),
    ) -> bool {
        let words = stride_of(depth.value()) / 4;
        if words == 0 || x.len() < 2 * words {
            return false;
        }
        let rows = w.len() / words;
        let mut r = 0;
        while r + 2 <= rows {
            let [s0, s1] = two_rows(depth, &w[r * words..(r + 2) * words], x);
            emit(r, s0);
            emit(r + 1, s1);
            r += 2;
        }
        if r < rows {
            emit(r, one_row(depth, &w[r * words..(r + 1) * words], x));
        }
        true
    }

    /// [`super::range_sums`] on the DSP extension: the `stride_of(depth) / 4` words of each
    /// row from word `offset` on (rows `row_words` words apart in `w`) with the quantised
    /// column `x`. Returns false (and emits nothing) if they do not fit.
    #[inline(always)]
    pub(super) fn range_sums<R: Dim>(
        depth: R,
        w: &[u32],
        row_words: usize,
        offset: usize,
        x: &[u32],
        mut emit: impl FnMut(usize, i32),
    ) -> bool {
        let n = stride_of(depth.value()) / 4;
        if n == 0 || x.len() < 2 * n || row_words < offset + n {
            return false;
        }
        let rows = w.len() / row_words;
        let part = |r: usize| &w[r * row_words + offset..][..n];
        let mut r = 0;
        while r + 2 <= rows {
            let [s0, s1] = two_parts(depth, part(r), part(r + 1), x);
            emit(r, s0);
            emit(r + 1, s1);
            r += 2;
        }
        if r < rows {
            emit(r, one_row(depth, part(r), x));
        }
        true
    }

    /// `acc + (the products of the weight words w, 4 values each, and the activation words
    /// x, 2 per weight word)`.
    #[inline(always)]
    fn words(acc: i32, w: &[u32], x: &[u32]) -> i32 {
        let mut acc = acc;
        for (&w, x) in w.iter().zip(x.as_chunks::<2>().0) {
            acc = smlad(sxtb16(w), x[0], acc);
            acc = smlad(sxtb16_ror8(w), x[1], acc);
        }
        acc
    }

    /// The sums of the two rows in `w` (one after the other) with `x`: [`two_parts`].
    #[inline(always)]
    fn two_rows<R: Dim>(depth: R, w: &[u32], x: &[u32]) -> [i32; 2] {
        let n = stride_of(depth.value()) / 4;
        let (w0, w1) = w[..2 * n].split_at(n);
        two_parts(depth, w0, w1, x)
    }

    /// The sums of the rows `w0` and `w1` (anywhere) with `x`, both in registers over the
    /// whole depth, each step of 8 values loading the 4 activation words once for both:
    /// [`dsp::two_rows`](super::super::dsp::two_rows), the inner loop in assembly, over the
    /// words up to the last multiple of 4, then the rest (up to 3 words).
    #[inline(never)]
    fn two_parts<R: Dim>(depth: R, w0: &[u32], w1: &[u32], x: &[u32]) -> [i32; 2] {
        let n = stride_of(depth.value()) / 4;
        let even = n / 4 * 4;
        let (x, xt) = x[..2 * n].split_at(2 * even);
        let ((w0, t0), (w1, t1)) = (w0[..n].split_at(even), w1[..n].split_at(even));
        let [s0, s1] = two_rows_asm(w0, w1, x).unwrap_or_else(|| {
            // Fewer than 4 words: the same steps from the one-instruction wrappers.
            let (xs, _) = x.as_chunks::<4>();
            let (p0, p1) = (w0.as_chunks::<2>().0, w1.as_chunks::<2>().0);
            xs.iter()
                .zip(p0)
                .zip(p1)
                .fold([0, 0], |[s0, s1], ((xv, a), b)| {
                    [words(s0, a, xv), words(s1, b, xv)]
                })
        });
        [words(s0, t0, xt), words(s1, t1, xt)]
    }

    /// The sum of the row `w` with `x` (the last row of an odd count).
    #[inline(never)]
    fn one_row<R: Dim>(depth: R, w: &[u32], x: &[u32]) -> i32 {
        let n = stride_of(depth.value()) / 4;
        let (xs, xt) = x[..2 * n].as_chunks::<4>();
        let (p, t) = w[..n].as_chunks::<2>();
        let s = xs.iter().zip(p).fold(0i32, |s, (xv, a)| words(s, a, xv));
        words(s, t, xt)
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
    fn quantised(rows: usize, depth: usize, w: &[f32]) -> (Vec<i8>, Vec<f32>) {
        formats::quant::quantize(w, rows, depth, formats::QuantAxis::In).unwrap()
    }

    /// Runs `mul_to` and `mul_add_to` (onto `start`) for B `depth x n`; returns both.
    fn run(a: &QuantMat<'_>, b: &[f32], n: usize, start: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (depth, rows) = (a.depth(), a.rows());
        // One value more than needed, used from the second: the kernel aligns it.
        let mut scratch = vec![0x5555i16; scratch_len(a.stride(), n) + 1];
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
        let (depth, stride) = (a.depth(), a.stride());
        let x = &b[j * depth..(j + 1) * depth];
        let row = &a.values()[r * stride..r * stride + depth];
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
        // Depths: multiples of 4 and not (padding), the paper's, tiny ones; B columns 1..=7
        // and more than one scratch group.
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
    fn a_range_of_each_row_is_the_product_with_those_columns() {
        // Each part of a row against the product with a matrix of just that part: the same
        // quantised column, so the same sums and results, bit for bit.
        for (rows, depth, seed) in [(5, 256, 1), (6, 13, 2), (3, 40, 3), (256, 256, 4)] {
            let w = random(rows * depth, seed);
            let (values, scales) = quantised(rows, depth, &w);
            let a = QuantMat::from_parts(rows, depth, &values, &scales).unwrap();
            let stride = stride_of(depth);
            for (start, len) in [
                (0, depth / 2),
                (depth / 2, depth - depth / 2),
                (4, 5),
                (1, 7),
                (3, depth - 3),
                (0, depth),
            ] {
                let part: Vec<i8> = (0..rows)
                    .flat_map(|r| {
                        let mut row = values[r * stride + start..r * stride + start + len].to_vec();
                        row.resize(stride_of(len), 0);
                        row
                    })
                    .collect();
                let alone = QuantMat::from_parts(rows, len, &part, &scales).unwrap();
                for n in [1, 2, 6] {
                    let b = random(len * n, seed + 7 * len as u32 + n as u32);
                    let bm = Mat::from_slice(&b, Dyn(len), Dyn(n)).unwrap();
                    let mut scratch = vec![0i16; scratch_len(stride_of(len), n)];
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
        assert_eq!(
            dot_part(&[1, 2, 3], &[10, 30, 20, 99]),
            10 + 2 * 20 + 3 * 30
        );
    }

    #[test]
    fn integer_sums_are_exact_at_the_overflow_limit() {
        // Every weight +-127 and every activation at the bound: the largest sums there can be,
        // exact (scale 1 on both sides: max |x| = Q gives s = 1 and q = x).
        for depth in [1, 4, 5, 128, 256, 640, 1000, 70_000] {
            let q = activation_bound(depth);
            assert!(127 * i64::from(q) * depth as i64 <= i64::from(i32::MAX));
            let stride = stride_of(depth);
            for sign in [1i8, -1] {
                let mut values = vec![0i8; 2 * stride];
                let mut b = vec![0.0f32; depth];
                for k in 0..depth {
                    values[k] = 127 * sign;
                    values[stride + k] = if k % 3 == 0 { -127 } else { 127 };
                    b[k] = q as f32;
                }
                let scales = [1.0f32, 1.0];
                let a = QuantMat::from_parts(2, depth, &values, &scales).unwrap();
                let (c, _) = run(&a, &b, 1, &[0.0; 2]);
                let want0 = i64::from(sign) * 127 * i64::from(q) * depth as i64;
                let thirds = depth.div_ceil(3) as i64;
                let want1 = 127 * i64::from(q) * (depth as i64 - 2 * thirds);
                assert_eq!(c[0], want0 as i32 as f32, "depth {depth}");
                assert_eq!(c[1], want1 as i32 as f32, "depth {depth}");
                let mut scratch = vec![0i16; stride];
                quantize_column(&b, &mut scratch);
                assert_eq!(i64::from(dot(&values[..stride], &scratch)), want0);
            }
        }
    }

    #[test]
    fn integer_sums_match_a_plain_sum_in_any_layout() {
        // Integer activations with max |x| = Q quantise to themselves; the pair layout then
        // gives the plain sum of products.
        for depth in [1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 64] {
            let q = activation_bound(depth);
            let stride = stride_of(depth);
            let rows = 3;
            let mut values = vec![0i8; rows * stride];
            for r in 0..rows {
                for k in 0..depth {
                    values[r * stride + k] = (((r * 37 + k * 11) % 255) as i32 - 127) as i8;
                }
            }
            let mut b: Vec<f32> = (0..depth)
                .map(|k| (k as f32 * 977.0) % 2001.0 - 1000.0)
                .collect();
            b[depth / 2] = -(q as f32);
            let scales = [1.0f32; 3];
            let a = QuantMat::from_parts(rows, depth, &values, &scales).unwrap();
            let (c, _) = run(&a, &b, 1, &[0.0; 3]);
            for r in 0..rows {
                let want: i64 = (0..depth)
                    .map(|k| i64::from(values[r * stride + k]) * b[k] as i64)
                    .sum();
                assert_eq!(c[r], want as f32, "depth {depth} row {r}");
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
        assert_eq!(quantize_column(&[0.0; 6], &mut q), 0.0);
        assert_eq!(q, [0; 8]);
        b[2 * depth + 1] = f32::INFINITY;
        assert!(quantize_column(&b[2 * depth..], &mut q).is_nan());
        // A subnormal maximum: `Q / max` is infinite, the values saturate to the bound.
        let tiny = [1e-40f32, -1e-40, 0.0, 5e-41, -0.0, 1e-45];
        let s = quantize_column(&tiny, &mut q);
        assert!(s.is_finite() && s >= 0.0);
        assert_eq!(q, [32767, 0, -32767, 32767, 0, 0, 32767, 0]);
    }

    #[test]
    fn quantisation_layout_and_rounding() {
        let bound = activation_bound(6);
        assert_eq!(bound, 32767);
        let mut q = [0x1234i16; 8];
        // max = 4: one step is 4 / 32767.
        let step = 4.0f32 / 32767.0;
        let x = [4.0, -4.0, 1.5 * step, -2.5 * step, 0.49 * step, 0.0];
        let s = quantize_column(&x, &mut q);
        assert_eq!(s, 4.0 / 32767.0);
        // x0 x2 x1 x3 | x4 (x6=0) x5 (x7=0)
        assert_eq!(q, [32767, 2, -32767, -3, 0, 0, 0, 0]);
        assert_eq!(activation_bound(640), 26_420);
        assert_eq!(activation_bound(256), 32767);
        assert_eq!(activation_bound(0), 32767);
        assert_eq!(activation_bound(usize::MAX / 256), 1);
        // Too short a scratch: nothing is written.
        let mut short = [9i16; 7];
        assert!(quantize_column(&x[..5], &mut short).is_nan());
        assert_eq!(short, [9; 7]);
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
                let mut q = vec![0i16; stride_of(depth)];
                quantize_column(&x, &mut q);
                for (k, &v) in x.iter().enumerate() {
                    let t = f64::from(v * inv);
                    let rounded = (t.abs() + 0.5).floor().min(f64::from(bound)) * t.signum();
                    let want = if t.is_nan() { 0.0 } else { rounded };
                    let at = 4 * (k / 4) + [0, 2, 1, 3][k % 4];
                    assert_eq!(f64::from(q[at]), want, "depth {depth} scale {scale} k {k}");
                }
            }
        }
    }

    #[test]
    fn mismatched_sizes_leave_c_unchanged() {
        let values = [1i8; 8];
        let scales = [1.0f32; 2];
        assert!(QuantMat::from_parts(2, 4, &values, &scales[..1]).is_none());
        assert!(QuantMat::from_parts(2, 5, &values, &scales).is_none());
        assert!(QuantMat::from_parts(usize::MAX, 4, &values, &scales).is_none());
        let a = QuantMat::from_parts(2, 4, &values, &scales).unwrap();
        let tensor = QuantTensor {
            axis: formats::QuantAxis::Out,
            rows: 2,
            depth: 4,
            stride: 4,
            values: &values,
            scales: &scales,
        };
        let from_file = QuantMat::new(tensor);
        assert_eq!((from_file.rows(), from_file.values().len()), (2, 8));
        let bad = QuantMat::new(QuantTensor { rows: 3, ..tensor });
        assert_eq!((bad.rows(), bad.values().len()), (0, 0));
        assert_eq!(
            (a.rows(), a.depth(), a.stride(), a.scale(1), a.scale(2)),
            (2, 4, 4, 1.0, 0.0)
        );
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
        assert_eq!(c, [(4.0f32 * 32767.0) * (1.0 / 32767.0); 4]);
    }
}
