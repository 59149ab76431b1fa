//! Per-column layer normalisation (AWGIM.md's textbook per-row layer norm, rows being columns
//! here).

use nalgebra::{Const, Dim, Matrix, SVectorView, U1};

use super::{all_finite, contiguous, max_by, sum_by, PackedMut};

/// Gain and bias of one layer norm, borrowed from the model file.
#[derive(Clone, Copy)]
pub struct LayerNorm<'a, const W: usize> {
    /// Per-feature gain.
    pub gain: SVectorView<'a, f32, W>,
    /// Per-feature bias.
    pub bias: SVectorView<'a, f32, W>,
    /// Added to the variance (the model file's `ln_epsilon`).
    pub epsilon: f32,
}

impl<const W: usize> LayerNorm<'_, W> {
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
    pub fn apply<C: Dim, S: PackedMut<W, C>>(&self, x: &mut Matrix<f32, Const<W>, C, S>) -> bool {
        let mut finite = true;
        for mut column in x.column_iter_mut() {
            finite &= self.column(&mut column);
        }
        finite
    }

    /// One column of [`Self::apply`].
    fn column<S: PackedMut<W, U1>>(&self, x: &mut Matrix<f32, Const<W>, U1, S>) -> bool {
        let scale = max_by(contiguous(x), 0.0, f32::abs);
        if !scale.is_finite() {
            return false;
        }
        if scale == 0.0 {
            x.copy_from(&self.bias);
            return all_finite(contiguous(x));
        }
        x.unscale_mut(scale);
        let n = W as f32;
        let mean = sum_by(contiguous(x), |v| v) / n;
        let var = sum_by(contiguous(x), |v| (v - mean) * (v - mean)) / n;
        // eps / s^2 may underflow to 0 (s large) or overflow to inf (s tiny): both are the
        // right limits, and var + eps_s > 0 unless the column is constant to rounding.
        let eps_s = self.epsilon / scale / scale;
        let denom = libm::sqrtf(var + eps_s);
        let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
        x.zip_zip_apply(&self.gain, &self.bias, |v, g, b| {
            *v = (*v - mean) * inv * g + b
        });
        all_finite(contiguous(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{SMatrix, SVector, Vector4};

    fn norm<'a>(
        gain: &'a SVector<f32, 4>,
        bias: &'a SVector<f32, 4>,
        eps: f32,
    ) -> LayerNorm<'a, 4> {
        LayerNorm {
            gain: gain.as_view(),
            bias: bias.as_view(),
            epsilon: eps,
        }
    }

    #[test]
    fn normalises_each_column_and_survives_extremes() {
        let ones = Vector4::from_element(1.0);
        let zeros = Vector4::zeros();
        let ln = norm(&ones, &zeros, 1e-12);
        let mut x = SMatrix::<f32, 4, 2>::new(1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 50.0);
        assert!(ln.apply(&mut x));
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
        assert!(ln.apply(&mut big));
        // Constant and tiny columns.
        let half = Vector4::from_element(0.5);
        let mut constant = Vector4::from_element(5.0);
        assert!(norm(&ones, &half, 1e-12).apply(&mut constant));
        assert_eq!(constant, half);
        let mut tiny = Vector4::new(1e-40, -1e-40, 0.0, 1e-45);
        assert!(ln.apply(&mut tiny));
        let quarter = Vector4::from_element(0.25);
        let mut zero = Vector4::zeros();
        assert!(norm(&ones, &quarter, 1e-5).apply(&mut zero));
        assert_eq!(zero, quarter);
        // Non-finite input or gain is reported, not hidden.
        let mut nan = Vector4::new(f32::NAN, 0.0, 1.0, 2.0);
        assert!(!ln.apply(&mut nan));
        let huge = Vector4::from_element(3e38);
        let mut x = Vector4::new(1.0, 2.0, 3.0, 4.0);
        assert!(!norm(&huge, &zeros, 1e-12).apply(&mut x));
    }
}
