//! int8 weight tensors (file version 4): the one definition of their layout, of what a valid
//! one is, and (with `alloc`) of the quantisation the trainer's export applies.
//!
//! A dense layer is stored `[in][out]` as f32. Its int8 form is `rows` rows of `depth` values
//! `w[r][k]` in `[-127, 127]` (never -128, so an i8 x i16 product sum has a symmetric bound
//! the engine's kernels rely on) and one f32 scale per row: real value (row `r`, position `k`)
//! = `w[r][k] as f32 * scales[r]`. Which axis of the f32 layout the rows run along is the
//! tensor's [`QuantAxis`]; which tensors an export quantises, and along which axis, is
//! [`crate::tensors::quant_axis`].
//!
//! # Row pairs
//!
//! The rows are stored two at a time: row pair `p` (rows `2p` and `2p + 1`) is
//! [`pair_stride`]`(depth)` signed 16-bit values (`depth` rounded up to even), value `k` being
//! `256 * w[2p][k] + w[2p + 1][k]`. When `rows` is odd the last pair's second row is a pad row
//! of zeros, and every value at `k >= depth` (the one padding column of an odd `depth`) is 0.
//! The pairs follow each other, [`pairs`]`(rows) * pair_stride(depth)` values in all.
//!
//! Why: on a Cortex-M4 (DSP extension) one 32-bit load of such values holds two rows' weights
//! for columns `k` and `k + 1`. `SMLALD` of that word with the activations `(x[k], x[k + 1])`
//! adds `256 S_even + S_odd` to a 64-bit sum, `SXTB16` of the word extracts the second row's
//! bytes (the low byte of each value, exactly `w[2p + 1][k]` because `|w| <= 127`) and `SMLAD`
//! adds `S_odd`: 3 instructions for 4 multiply-adds instead of the 4 a row-by-row layout needs
//! (`SXTB16` twice, `SMLAD` twice), and `S_even = (S - S_odd) / 256` exactly, so the integer
//! sums (and every logit) are those of the row-by-row form.
//!
//! Version-3 files stored the same values row by row as bytes; this crate no longer reads
//! their int8 tensors ([`FormatError::Int8LayoutRetired`]).

use crate::error::{error_name, FormatError};

/// The element type of a tensor in a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// Little-endian `f32`, in the tensor's row-major shape.
    F32,
    /// int8 rows stored in row pairs with one `f32` scale per row ([`QuantTensor`]).
    I8,
}

/// Which axis of the f32 `[in][out]` layout the stored int8 rows run along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantAxis {
    /// One row per output: rows = the layer's outputs, depth = its inputs (the `[in][out]`
    /// matrix stored transposed, `[out][in]`): a scale per output channel.
    Out,
    /// One row per input: rows = the layer's inputs, depth = its outputs (the f32 layout's
    /// own rows). Used for `gen.g2_mu`, which the engine reduces over its outputs `D` (the
    /// query product `G2mu x`).
    In,
}

impl QuantAxis {
    /// `(rows, depth)` of the int8 form of an `[inputs][outputs]` matrix.
    pub const fn rows_depth(self, inputs: usize, outputs: usize) -> (usize, usize) {
        match self {
            QuantAxis::Out => (outputs, inputs),
            QuantAxis::In => (inputs, outputs),
        }
    }
}

/// i16 values per stored pair of rows for `depth` values: `depth` rounded up to even
/// (saturating at `usize::MAX`, a length no slice has).
pub const fn pair_stride(depth: usize) -> usize {
    depth.div_ceil(2).saturating_mul(2)
}

/// Number of stored row pairs: rows rounded up to even, halved.
pub const fn pairs(rows: usize) -> usize {
    rows.div_ceil(2)
}

/// Number of i16 values of a matrix of `rows` rows of `depth` values in the row-pair layout,
/// `pairs(rows) * pair_stride(depth)`, as a `u64` (exact for any `usize` sizes).
pub(crate) fn pair_values(rows: usize, depth: usize) -> u64 {
    (rows as u64)
        .div_ceil(2)
        .saturating_mul((depth as u64).div_ceil(2).saturating_mul(2))
}

/// The two int8 values a stored value holds, `(w[2p][k], w[2p + 1][k])`, or `None` when it
/// holds none: its low byte (as i8) is -128 or its high part `(v - low) / 256` is outside
/// `[-127, 127]`.
fn unpack(v: i16) -> Option<(i8, i8)> {
    // The low byte, sign-extended: what SXTB16 gives the engine.
    let low = v as i8;
    let high = (i32::from(v) - i32::from(low)) >> 8;
    if low == i8::MIN || !(-127..=127).contains(&high) {
        return None;
    }
    Some((high as i8, low))
}

/// An int8 matrix borrowed from a file, in the row-pair layout of the [module docs](self):
/// `rows` rows of `depth` values `w[r][k]` in `[-127, 127]`, stored two rows at a time as
/// `values[p * pair_stride + k] = 256 * w[2p][k] + w[2p + 1][k]`, and one f32 scale per row:
/// real value (row `r`, position `k`) = `w[r][k] as f32 * scales[r]` ([`Self::get`]).
///
/// [`QuantAxis::Out`]: rows = the layer's outputs, depth = its inputs (a dense `[in][out]`
/// layer stored transposed, `[out][in]`). [`QuantAxis::In`]: rows = the layer's inputs,
/// depth = its outputs (the f32 layout's rows; used for `gen.g2_mu`).
///
/// One read from a file by [`crate::ModelFile::tensor_i8`] is valid ([`Self::check`] passes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantTensor<'a> {
    /// The axis of the f32 layout the rows run along.
    pub axis: QuantAxis,
    /// Number of rows (one scale each).
    pub rows: usize,
    /// Values per row.
    pub depth: usize,
    /// i16 values per stored row pair: [`pair_stride`]`(depth)`, `depth` rounded up to even.
    pub pair_stride: usize,
    /// [`pairs`]`(rows) * pair_stride` values. Value `[p * pair_stride + k]` =
    /// `256 * w[2p][k] + w[2p + 1][k]` where `w[r][k]` in `[-127, 127]` is the int8 value of
    /// row `r`, position `k`; `w[rows][k] = 0` when `rows` is odd (the pad row); every value
    /// at `k >= depth` is 0.
    pub values: &'a [i16],
    /// `rows` scales, each positive with `127 * scale` finite (so every value is finite).
    pub scales: &'a [f32],
}

impl QuantTensor<'_> {
    /// Checks everything a valid int8 matrix promises: `pair_stride` is `depth` rounded up to
    /// even, there are `pairs(rows) * pair_stride` values and `rows` scales, every scale is
    /// positive with `127 * scale` finite (every value the matrix stands for is finite), every
    /// value holds two int8 values in `[-127, 127]` ([`FormatError::QuantValueOutOfRange`]
    /// names the first that does not), and the pad row of an odd `rows` and the padding
    /// column of an odd `depth` are zero ([`FormatError::NonzeroQuantPadding`]).
    /// `name` names the tensor in the error.
    pub fn check(&self, name: &str) -> Result<(), FormatError> {
        check_parts(
            name,
            self.rows,
            self.depth,
            self.pair_stride,
            self.values.iter().copied(),
            Some(self.values),
            self.values.len(),
            self.scales.iter().copied(),
            self.scales.len(),
        )
    }

    /// The int8 value of row `r`, position `k` (`r < rows`, `k < depth`; `None` outside, or
    /// if the stored value holds no pair of int8 values, which a checked matrix never has).
    pub fn weight(&self, r: usize, k: usize) -> Option<i8> {
        if r >= self.rows || k >= self.depth {
            return None;
        }
        let at = (r / 2).checked_mul(self.pair_stride)?.checked_add(k)?;
        let (even, odd) = unpack(*self.values.get(at)?)?;
        Some(if r % 2 == 0 { even } else { odd })
    }

    /// The f32 value of row `r`, position `k`: [`Self::weight`] times the row's scale
    /// (`None` outside the matrix).
    pub fn get(&self, r: usize, k: usize) -> Option<f32> {
        Some(f32::from(self.weight(r, k)?) * *self.scales.get(r)?)
    }
}

/// [`QuantTensor::check`] on its parts, the values and scales given one at a time (so the
/// reader can check values and scales stored at any alignment), with their counts.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_parts(
    name: &str,
    rows: usize,
    depth: usize,
    pair_stride_found: usize,
    values: impl Iterator<Item = i16>,
    aligned: Option<&[i16]>,
    value_count: usize,
    scales: impl Iterator<Item = f32>,
    scale_count: usize,
) -> Result<(), FormatError> {
    let expected_stride = pair_stride(depth);
    if pair_stride_found != expected_stride {
        return Err(FormatError::QuantStride {
            name: error_name(name),
            expected: expected_stride as u64,
            found: pair_stride_found as u64,
        });
    }
    let expected = pair_values(rows, depth);
    if value_count as u64 != expected {
        return Err(FormatError::QuantValuesLength {
            name: error_name(name),
            expected,
            found: value_count as u64,
        });
    }
    if scale_count != rows {
        return Err(FormatError::ScaleCount {
            name: error_name(name),
            expected: rows as u64,
            found: scale_count as u64,
        });
    }
    for (row, scale) in scales.enumerate() {
        // `127 scale` finite: every value the row stands for is finite.
        if !(scale > 0.0 && (scale * 127.0).is_finite()) {
            return Err(FormatError::InvalidScale {
                name: error_name(name),
                row: row as u64,
                value: scale,
            });
        }
    }
    // The pair whose second row is the pad row, if `rows` is odd.
    let pad_pair = if rows % 2 == 1 { rows / 2 } else { usize::MAX };
    // The common case, values in memory and all valid, in one tight pass (a device checks
    // 393,216 values at boot for the paper's model); the walk below finds the first fault.
    if aligned.is_some_and(|v| values_valid(v, depth, expected_stride, pad_pair)) {
        return Ok(());
    }
    // Position `k` in the pair and the pair `p` of value `index`, counted (no division).
    let (mut k, mut p) = (0usize, 0usize);
    for (index, v) in values.enumerate() {
        let Some((even, odd)) = unpack(v) else {
            return Err(FormatError::QuantValueOutOfRange {
                name: error_name(name),
                index: index as u64,
            });
        };
        // A padding column holds nothing; the pad row's half of its pair is zero.
        let nonzero_padding = if k >= depth {
            (even != 0)
                .then_some(2 * p)
                .or((odd != 0).then_some(2 * p + 1))
        } else if p == pad_pair && odd != 0 {
            Some(rows)
        } else {
            None
        };
        if let Some(row) = nonzero_padding {
            return Err(FormatError::NonzeroQuantPadding {
                name: error_name(name),
                row: row as u64,
            });
        }
        k += 1;
        if k == expected_stride {
            k = 0;
            p += 1;
        }
    }
    Ok(())
}

/// Whether every value of `values` (pairs of `stride` values, `depth` of them real) holds two
/// int8 values in `[-127, 127]`, every padding value is zero and, in the pair `pad_pair`,
/// every odd half (the pad row) is zero: what [`check_parts`]'s walk checks value by value.
fn values_valid(values: &[i16], depth: usize, stride: usize, pad_pair: usize) -> bool {
    // `v = 256 even + odd` with both in [-127, 127] exactly when the low byte is not 0x80
    // (odd = -128) and `|v| <= 256 127 + 127`.
    let bad = |v: i16| u32::from(v.unsigned_abs() > 32639) | u32::from(v as u8 == 0x80);
    let mut faults = 0u32;
    for (p, pair) in values.chunks_exact(stride.max(1)).enumerate() {
        let (real, padding) = pair.split_at(depth.min(pair.len()));
        faults |= real.iter().fold(0, |f, &v| f | bad(v));
        faults |= u32::from(padding.iter().any(|&v| v != 0));
        if p == pad_pair {
            faults |= u32::from(real.iter().any(|&v| v as i8 != 0));
        }
    }
    faults == 0
}

/// The name [`dequantize`], [`pack_pairs`] and [`quantize`] give the matrix in their errors.
const MATRIX: &str = "int8 matrix";

/// [`FormatError::LengthMismatch`] for the matrix unless `found` is `a * b` values.
fn matrix_length(found: usize, a: usize, b: usize) -> Result<(), FormatError> {
    let expected = (a as u64).saturating_mul(b as u64);
    if found as u64 != expected {
        return Err(FormatError::LengthMismatch {
            name: error_name(MATRIX),
            expected,
            found: found as u64,
        });
    }
    Ok(())
}

/// Packs the int8 rows `w` (`rows` rows of `depth` values, row-major: `w[r * depth + k]`, each
/// in `[-127, 127]`) into the row-pair layout of [`QuantTensor::values`], writing every one of
/// the `pairs(rows) * pair_stride(depth)` values of `out` (pad row and padding column zero).
/// Fails, leaving `out` unspecified, on a `w` of other than `rows * depth` values
/// ([`FormatError::LengthMismatch`]), an `out` of other than `pairs(rows) *
/// pair_stride(depth)` ([`FormatError::QuantValuesLength`]), or a -128 in `w`
/// ([`FormatError::QuantValueOutOfRange`], its index in `w`).
pub fn pack_pairs(rows: usize, depth: usize, w: &[i8], out: &mut [i16]) -> Result<(), FormatError> {
    matrix_length(w.len(), rows, depth)?;
    let expected = pair_values(rows, depth);
    if out.len() as u64 != expected {
        return Err(FormatError::QuantValuesLength {
            name: error_name(MATRIX),
            expected,
            found: out.len() as u64,
        });
    }
    if let Some(index) = w.iter().position(|&v| v == i8::MIN) {
        return Err(FormatError::QuantValueOutOfRange {
            name: error_name(MATRIX),
            index: index as u64,
        });
    }
    out.fill(0);
    if depth == 0 {
        return Ok(());
    }
    let stride = pair_stride(depth);
    for (pair, two_rows) in out.chunks_exact_mut(stride).zip(w.chunks(2 * depth)) {
        let (even, odd) = two_rows.split_at(depth);
        for (k, (value, &high)) in pair.iter_mut().zip(even).enumerate() {
            // `odd` is empty for the pad row.
            let low = odd.get(k).copied().unwrap_or(0);
            *value = i16::from(high) * 256 + i16::from(low);
        }
    }
    Ok(())
}

/// Writes the f32 `[in][out]` matrix an int8 matrix stands for into `out` (`rows * depth`
/// values): `out[i * outputs + o]` is the value of input `i`, output `o`. Fails if `q` is not
/// valid ([`QuantTensor::check`]) or `out` has the wrong length.
pub fn dequantize(q: &QuantTensor<'_>, out: &mut [f32]) -> Result<(), FormatError> {
    q.check(MATRIX)?;
    matrix_length(out.len(), q.rows, q.depth)?;
    if q.depth == 0 {
        return Ok(());
    }
    for (p, pair) in q.values.chunks_exact(q.pair_stride).enumerate() {
        for (k, &v) in pair[..q.depth].iter().enumerate() {
            // Checked: every value holds two int8 values.
            let (even, odd) = unpack(v).unwrap_or((0, 0));
            for (r, w) in [(2 * p, even), (2 * p + 1, odd)] {
                let Some(&scale) = q.scales.get(r) else {
                    // The pad row.
                    continue;
                };
                let at = match q.axis {
                    // Row r is output r; position k is input k.
                    QuantAxis::Out => k * q.rows + r,
                    // Row r is input r; position k is output k.
                    QuantAxis::In => r * q.depth + k,
                };
                out[at] = f32::from(w) * scale;
            }
        }
    }
    Ok(())
}

/// `v` rounded to the nearest integer, halves away from zero (`f32::round`, which `core`
/// lacks), for `|v| < 2^31`.
#[cfg(feature = "alloc")]
fn round_half_away(v: f32) -> i32 {
    let t = v as i32;
    let frac = v - t as f32;
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

/// Quantises the f32 `[inputs][outputs]` row-major matrix `w` along `axis`, per row
/// symmetric: a row's scale is `max |row| / 127` and its values `round(w / scale)` (halves
/// away from zero) clamped to `[-127, 127]`; a row of zeros (or one so small that its scale
/// would be zero) gets scale 1.0 and zeros. Returns `(values, scales)`: the
/// `pairs(rows) * pair_stride(depth)` values of the row-pair layout ([`pack_pairs`] of the
/// rows, see [`QuantTensor::values`]) and `rows` scales ([`QuantAxis::rows_depth`]).
/// Fails on a length other than `inputs * outputs` or a non-finite weight.
#[cfg(feature = "alloc")]
pub fn quantize(
    w: &[f32],
    inputs: usize,
    outputs: usize,
    axis: QuantAxis,
) -> Result<(alloc::vec::Vec<i16>, alloc::vec::Vec<f32>), FormatError> {
    matrix_length(w.len(), inputs, outputs)?;
    if let Some(index) = w.iter().position(|v| !v.is_finite()) {
        return Err(FormatError::NonFiniteWeight {
            index: index as u64,
        });
    }
    let (rows, depth) = axis.rows_depth(inputs, outputs);
    let at = |r: usize, k: usize| match axis {
        QuantAxis::Out => w[k * outputs + r],
        QuantAxis::In => w[r * outputs + k],
    };
    // Row-major int8 rows, then packed.
    let mut values = alloc::vec![0i8; rows * depth];
    let mut scales = alloc::vec![1.0f32; rows];
    for r in 0..rows {
        let max = (0..depth).fold(0.0f32, |m, k| m.max(at(r, k).abs()));
        let scale = max / 127.0;
        if scale == 0.0 {
            continue;
        }
        scales[r] = scale;
        for k in 0..depth {
            values[r * depth + k] = round_half_away(at(r, k) / scale).clamp(-127, 127) as i8;
        }
    }
    let mut packed = alloc::vec![0i16; pairs(rows) * pair_stride(depth)];
    pack_pairs(rows, depth, &values, &mut packed)?;
    Ok((packed, scales))
}

#[cfg(all(test, feature = "alloc"))]
mod tests {

    /// The fast pass over values in memory agrees with the value-by-value walk on every i16,
    /// as a real value, a padding value and a pad row's value.
    #[test]
    fn fast_value_check_agrees_with_the_walk() {
        let walk = |rows: usize, depth: usize, values: &[i16]| {
            let scales = [1.0f32; 2];
            check_parts(
                "t",
                rows,
                depth,
                pair_stride(depth),
                values.iter().copied(),
                None,
                values.len(),
                scales[..rows].iter().copied(),
                rows,
            )
            .is_ok()
        };
        for v in i16::MIN..=i16::MAX {
            // (rows, depth, values, pad pair)
            for (rows, depth, values, pad) in [
                (2, 2, [v, 1], usize::MAX),
                (2, 1, [1, v], usize::MAX),
                (1, 2, [v, 0], 0),
            ] {
                let fast = values_valid(&values, depth, pair_stride(depth), pad);
                assert_eq!(fast, walk(rows, depth, &values), "{v} in {values:?}, {rows} rows");
            }
        }
    }
    use super::*;

    #[test]
    fn rounding_is_half_away_from_zero() {
        for (v, r) in [
            (0.5, 1),
            (-0.5, -1),
            (0.49999997, 0),
            (-0.49999997, 0),
            (1.5, 2),
            (126.5, 127),
            (-2.4, -2),
            (0.0, 0),
        ] {
            assert_eq!(round_half_away(v), r, "{v}");
        }
    }
}
