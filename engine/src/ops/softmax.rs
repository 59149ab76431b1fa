//! Softmax over each column, with an `exp` that vectorises.

use nalgebra::Dim;

use super::{max_by, sum_by, MatMut};

/// Softmax in place over each column of `x`, whose entries must be finite: the column's
/// maximum is subtracted first, so every exponential is in (0, 1] and the sum is at least 1
/// (no overflow, no division by zero).
///
/// The exponentials are taken in one pass over the whole matrix with [`exp_nonpositive`], so
/// they vectorise even though the columns are short (25 or 5 scores); maxima and sums use
/// vectorised partial results. The same steps with nalgebra's `max()`, `sum()` and
/// `libm::expf` made the 5-shot paper task about 4% slower (`examples/measure.rs`: a
/// 75-query task 1001 -> 953 us, `prepare` 296 -> 287 us, best of 300) and are the oracle of
/// the tests.
pub fn softmax_columns<R: Dim, C: Dim>(x: &mut MatMut<'_, R, C>) {
    for column in x.column_slices_mut() {
        let max = max_by(column, f32::NEG_INFINITY, |v| v);
        for v in column.iter_mut() {
            *v -= max;
        }
    }
    for v in x.as_mut_slice() {
        *v = exp_nonpositive(*v);
    }
    for column in x.column_slices_mut() {
        let inv = 1.0 / sum_by(column, |v| v);
        for v in column.iter_mut() {
            *v *= inv;
        }
    }
}

/// `e^x` for `x <= 0`, within 2.5e-7 relative of `libm::expf` (the tests' oracle); branch-free,
/// so a loop of it vectorises where a loop of `libm::expf` is a call per element.
///
/// `x = n ln 2 + r` with `n` the nearest integer to `x / ln 2` and `|r| <= ln 2 / 2` (ln 2 split
/// in two parts so `r` is exact to f32 precision); `e^r` by its Taylor series to degree 7
/// (truncation error below `0.347^8 / 8! = 5e-9`), and `2^n` built in the exponent bits.
/// Arguments below -87 are clamped there (`e^-87 = 1.6e-38`, the smallest normal range), so the
/// result is never subnormal, never zero and never NaN for finite or infinite `x <= 0`.
#[inline]
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

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{SMatrix, Vector3, Vector4};

    #[test]
    fn softmax_is_a_distribution_for_extreme_scores() {
        let mut x = Vector4::new(3e38, -3e38, 0.0, 3e38);
        softmax_columns(&mut MatMut::from(&mut x));
        assert_eq!(x[0], 0.5);
        assert_eq!(x[3], 0.5);
        assert!(x[1] < 1e-37 && x[2] < 1e-37);
        let mut y = Vector3::from_element(-1e30);
        softmax_columns(&mut MatMut::from(&mut y));
        assert!(y.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    /// Against nalgebra's reductions and `libm::expf`, on columns longer than a vector.
    #[test]
    fn softmax_matches_nalgebra_and_libm() {
        let mut x = SMatrix::<f32, 37, 3>::from_fn(|r, c| (r as f32 - 20.0) * (c as f32 + 0.5));
        let mut want = x;
        softmax_columns(&mut MatMut::from(&mut x));
        for mut column in want.column_iter_mut() {
            let max = column.max();
            column.apply(|v| *v = libm::expf(*v - max));
            let sum = column.sum();
            column /= sum;
        }
        for (g, w) in x.iter().zip(want.iter()) {
            assert!((g - w).abs() <= 1e-6 * w.max(1e-30) + 1e-12, "{g} vs {w}");
        }
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
