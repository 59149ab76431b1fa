//! int8 weight tensors (file version 3): the one definition of their layout, of what a valid
//! one is, and (with `alloc`) of the quantisation the trainer's export applies.
//!
//! A dense layer is stored `[in][out]` as f32. Its int8 form is `rows` rows of `depth` values,
//! each row zero-padded to `stride` bytes (`depth` rounded up to a multiple of 4), and one f32
//! scale per row: real value (row `r`, position `k`) = `values[r * stride + k] as f32 *
//! scales[r]`. Which axis of the f32 layout the rows run along is the tensor's [`QuantAxis`];
//! which tensors an export quantises, and along which axis, is
//! [`crate::tensors::quant_axis`]. Values lie in `[-127, 127]` (never -128), so an i8 x i16
//! product sum has a symmetric bound the engine's kernels rely on.

use crate::error::{error_name, FormatError};

/// The element type of a tensor in a model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// Little-endian `f32`, in the tensor's row-major shape.
    F32,
    /// `i8` rows with one `f32` scale per row ([`QuantTensor`]).
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

/// The bytes each stored row takes for `depth` values: `depth` rounded up to a multiple of 4.
pub const fn stride(depth: usize) -> usize {
    depth.div_ceil(4) * 4
}

/// An int8 matrix borrowed from a file: `rows` rows of `depth` values, each row contiguous and
/// zero-padded to `stride` (= `depth` rounded up to a multiple of 4) bytes, and one f32 scale
/// per row: real value (row `r`, position `k`) = `values[r * stride + k] as f32 * scales[r]`.
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
    /// Bytes per stored row: `depth` rounded up to a multiple of 4.
    pub stride: usize,
    /// `rows * stride` values, each in `[-127, 127]`, the padding of every row zero.
    pub values: &'a [i8],
    /// `rows` scales, each positive with `127 * scale` finite (so every value is finite).
    pub scales: &'a [f32],
}

impl QuantTensor<'_> {
    /// Checks everything a valid int8 matrix promises: `stride` is `depth` rounded up to a
    /// multiple of 4, there are `rows * stride` values and `rows` scales, every scale is
    /// positive with `127 * scale` finite (every value the matrix stands for is finite), every
    /// value is in `[-127, 127]` and every row's padding is zero.
    /// `name` names the tensor in the error.
    pub fn check(&self, name: &str) -> Result<(), FormatError> {
        check_parts(
            name,
            self.rows,
            self.depth,
            self.stride,
            self.values,
            self.scales.iter().copied(),
            self.scales.len(),
        )
    }

    /// The f32 value of row `r`, position `k` (`r < rows`, `k < depth`; `None` outside).
    pub fn get(&self, r: usize, k: usize) -> Option<f32> {
        if k >= self.depth {
            return None;
        }
        let value = *self
            .values
            .get(r.checked_mul(self.stride)?.checked_add(k)?)?;
        Some(f32::from(value) * *self.scales.get(r)?)
    }
}

/// [`QuantTensor::check`] on its parts, the scales given one at a time (so the reader can
/// check scales stored at any alignment).
pub(crate) fn check_parts(
    name: &str,
    rows: usize,
    depth: usize,
    stride_found: usize,
    values: &[i8],
    scales: impl Iterator<Item = f32>,
    scale_count: usize,
) -> Result<(), FormatError> {
    let expected_stride = stride(depth);
    if stride_found != expected_stride {
        return Err(FormatError::QuantStride {
            name: error_name(name),
            expected: expected_stride as u64,
            found: stride_found as u64,
        });
    }
    let expected = (rows as u64).saturating_mul(expected_stride as u64);
    if values.len() as u64 != expected {
        return Err(FormatError::QuantValuesLength {
            name: error_name(name),
            expected,
            found: values.len() as u64,
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
    if let Some(index) = values.iter().position(|&v| v == i8::MIN) {
        return Err(FormatError::QuantValueOutOfRange {
            name: error_name(name),
            index: index as u64,
        });
    }
    if expected_stride > depth {
        for (row, values) in values.chunks_exact(expected_stride).enumerate() {
            if values[depth..].iter().any(|&v| v != 0) {
                return Err(FormatError::NonzeroQuantPadding {
                    name: error_name(name),
                    row: row as u64,
                });
            }
        }
    }
    Ok(())
}

/// The name [`dequantize`] and [`quantize`] give the matrix in their errors.
const MATRIX: &str = "int8 matrix";

/// Writes the f32 `[in][out]` matrix an int8 matrix stands for into `out` (`rows * depth`
/// values): `out[i * outputs + o]` is the value of input `i`, output `o`. Fails if `q` is not
/// valid ([`QuantTensor::check`]) or `out` has the wrong length.
pub fn dequantize(q: &QuantTensor<'_>, out: &mut [f32]) -> Result<(), FormatError> {
    q.check(MATRIX)?;
    let expected = (q.rows as u64).saturating_mul(q.depth as u64);
    if out.len() as u64 != expected {
        return Err(FormatError::LengthMismatch {
            name: error_name(MATRIX),
            expected,
            found: out.len() as u64,
        });
    }
    if q.depth == 0 {
        return Ok(());
    }
    for (r, (row, &scale)) in q.values.chunks_exact(q.stride).zip(q.scales).enumerate() {
        for (k, &v) in row[..q.depth].iter().enumerate() {
            let at = match q.axis {
                // Row r is output r; position k is input k.
                QuantAxis::Out => k * q.rows + r,
                // Row r is input r; position k is output k.
                QuantAxis::In => r * q.depth + k,
            };
            out[at] = f32::from(v) * scale;
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
/// would be zero) gets scale 1.0 and zeros. Returns `(values, scales)`: `rows * stride`
/// values, every row zero-padded to `stride`, and `rows` scales ([`QuantAxis::rows_depth`]).
/// Fails on a length other than `inputs * outputs` or a non-finite weight.
#[cfg(feature = "alloc")]
pub fn quantize(
    w: &[f32],
    inputs: usize,
    outputs: usize,
    axis: QuantAxis,
) -> Result<(alloc::vec::Vec<i8>, alloc::vec::Vec<f32>), FormatError> {
    let expected = (inputs as u64).saturating_mul(outputs as u64);
    if w.len() as u64 != expected {
        return Err(FormatError::LengthMismatch {
            name: error_name(MATRIX),
            expected,
            found: w.len() as u64,
        });
    }
    if let Some(index) = w.iter().position(|v| !v.is_finite()) {
        return Err(FormatError::NonFiniteWeight {
            index: index as u64,
        });
    }
    let (rows, depth) = axis.rows_depth(inputs, outputs);
    let stride = stride(depth);
    let at = |r: usize, k: usize| match axis {
        QuantAxis::Out => w[k * outputs + r],
        QuantAxis::In => w[r * outputs + k],
    };
    let mut values = alloc::vec![0i8; rows * stride];
    let mut scales = alloc::vec![1.0f32; rows];
    for r in 0..rows {
        let max = (0..depth).fold(0.0f32, |m, k| m.max(at(r, k).abs()));
        let scale = max / 127.0;
        if scale == 0.0 {
            continue;
        }
        scales[r] = scale;
        for k in 0..depth {
            values[r * stride + k] = round_half_away(at(r, k) / scale).clamp(-127, 127) as i8;
        }
    }
    Ok((values, scales))
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
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
