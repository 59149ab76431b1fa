//! Per-column layer normalisation (AWGIM.md's textbook per-row layer norm, rows being columns
//! here).

use nalgebra::{Dim, MatrixView, MatrixViewMut, U1};

use super::{all_finite, max_by, sum_by, MatMut};

/// Gain and bias of one layer norm of width `W`, borrowed from the model file.
#[derive(Clone, Copy)]
pub struct LayerNorm<'a, W: Dim> {
    /// Per-feature gain (`W` values).
    pub gain: &'a [f32],
    /// Per-feature bias (`W` values).
    pub bias: &'a [f32],
    /// The width.
    pub width: W,
    /// Added to the variance (the model file's `ln_epsilon`).
    pub epsilon: f32,
}

impl<W: Dim> LayerNorm<'_, W> {
    /// Normalises every column of `x` in place: `x = gain * (x - mean) / sqrt(var + eps) +
    /// bias`, mean and (biased) variance over the column's features.
    ///
    /// Each column is first divided by its largest magnitude `s` (layer norm is scale
    /// invariant, with `eps` becoming `eps / s^2`), so sums of squares cannot overflow and the
    /// result is finite for every finite input; a constant column maps to `bias`. Returns
    /// whether the output is finite (it is not when the input is not, or when `gain`/`bias`
    /// are extreme).
    ///
    /// The statistics use [`VECTOR`](super::VECTOR) partial sums over the column's slice:
    /// nalgebra's `amax()`, `mean()` and `variance()` are sequential folds (one dependent
    /// operation per feature), 5 times slower here (128 x 15 columns: 7.6 vs 1.5 us,
    /// `examples/kernels.rs`; they would add 9% to a batched query); the element-wise steps
    /// are nalgebra's.
    pub fn apply<C: Dim>(&self, x: &mut MatMut<'_, W, C>) -> bool {
        let mut finite = true;
        for column in x.column_slices_mut() {
            finite &= self.column(column);
        }
        finite
    }

    /// One column of [`Self::apply`].
    fn column(&self, x: &mut [f32]) -> bool {
        // Cut to the width, so its length is a constant where the width is.
        let Some(x) = x.get_mut(..self.width.value()) else {
            return false;
        };
        let scale = max_by(x, 0.0, f32::abs);
        if !scale.is_finite() {
            return false;
        }
        let n = self.width.value() as f32;
        if scale == 0.0 {
            x.copy_from_slice(self.bias);
            return all_finite(x);
        }
        let gain = MatrixView::<f32, W, U1>::from_slice_generic(self.gain, self.width, U1);
        let bias = MatrixView::<f32, W, U1>::from_slice_generic(self.bias, self.width, U1);
        let mut column = MatrixViewMut::<f32, W, U1>::from_slice_generic(x, self.width, U1);
        column.unscale_mut(scale);
        let mean = sum_by(column.as_slice(), |v| v) / n;
        let var = sum_by(column.as_slice(), |v| (v - mean) * (v - mean)) / n;
        // eps / s^2 may underflow to 0 (s large) or overflow to inf (s tiny): both are the
        // right limits, and var + eps_s > 0 unless the column is constant to rounding.
        let eps_s = self.epsilon / scale / scale;
        let denom = libm::sqrtf(var + eps_s);
        let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
        column.zip_zip_apply(&gain, &bias, |v, g, b| *v = (*v - mean) * inv * g + b);
        all_finite(column.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::MatMut;
    use nalgebra::{Const, SMatrix, SVector, Vector4};

    fn norm<'a>(
        gain: &'a SVector<f32, 4>,
        bias: &'a SVector<f32, 4>,
        eps: f32,
    ) -> LayerNorm<'a, Const<4>> {
        LayerNorm {
            gain: gain.as_slice(),
            bias: bias.as_slice(),
            width: Const,
            epsilon: eps,
        }
    }

    #[test]
    fn normalises_each_column_and_survives_extremes() {
        let ones = Vector4::from_element(1.0);
        let zeros = Vector4::zeros();
        let ln = norm(&ones, &zeros, 1e-12);
        let mut x = SMatrix::<f32, 4, 2>::new(1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 50.0);
        assert!(ln.apply(&mut MatMut::from(&mut x)));
        for column in x.column_iter() {
            assert!(column.sum().abs() < 1e-6);
            assert!((column.norm_squared() / 4.0 - 1.0).abs() < 1e-5);
        }
        // Against the definition.
        let c = [10.0f32, 20.0, 30.0, 50.0];
        let mean = c.iter().sum::<f32>() / 4.0;
        let var = c.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 4.0;
        for (got, v) in x.column(1).iter().zip(c) {
            assert!((got - (v - mean) / (var + 1e-12).sqrt()).abs() < 1e-6);
        }
        // Would overflow a plain sum of squares.
        let mut big = Vector4::new(3e38, -3e38, 1e38, 0.0);
        assert!(ln.apply(&mut MatMut::from(&mut big)));
        // Constant and tiny columns.
        let half = Vector4::from_element(0.5);
        let mut constant = Vector4::from_element(5.0);
        assert!(norm(&ones, &half, 1e-12).apply(&mut MatMut::from(&mut constant)));
        assert_eq!(constant, half);
        let mut tiny = Vector4::new(1e-40, -1e-40, 0.0, 1e-45);
        assert!(ln.apply(&mut MatMut::from(&mut tiny)));
        let quarter = Vector4::from_element(0.25);
        let mut zero = Vector4::zeros();
        assert!(norm(&ones, &quarter, 1e-5).apply(&mut MatMut::from(&mut zero)));
        assert_eq!(zero, quarter);
        // Non-finite input or gain is reported, not hidden.
        let mut nan = Vector4::new(f32::NAN, 0.0, 1.0, 2.0);
        assert!(!ln.apply(&mut MatMut::from(&mut nan)));
        let huge = Vector4::from_element(3e38);
        let mut x = Vector4::new(1.0, 2.0, 3.0, 4.0);
        assert!(!norm(&huge, &zeros, 1e-12).apply(&mut MatMut::from(&mut x)));
    }
}
