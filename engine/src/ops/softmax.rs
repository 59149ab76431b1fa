//! Softmax over each column.

use nalgebra::{Const, Dim, Matrix};

use super::PackedMut;

/// Softmax in place over each column of `x`, whose entries must be finite: the column's
/// maximum is subtracted first, so every exponential is in (0, 1] and the sum is at least 1
/// (no overflow, no division by zero). nalgebra's reductions and `libm::expf`: a vectorised
/// `exp` and vectorised reductions were measured no faster on the engine's 25-score columns
/// (`examples/kernels.rs`).
pub fn softmax_columns<const R: usize, C: Dim, S: PackedMut<R, C>>(
    x: &mut Matrix<f32, Const<R>, C, S>,
) {
    for mut column in x.column_iter_mut() {
        let max = column.max();
        column.apply(|v| *v = libm::expf(*v - max));
        let sum = column.sum();
        column /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{SMatrix, Vector3, Vector4};

    #[test]
    fn softmax_is_a_distribution_for_extreme_scores() {
        let mut x = Vector4::new(3e38, -3e38, 0.0, 3e38);
        softmax_columns(&mut x);
        assert_eq!(x[0], 0.5);
        assert_eq!(x[3], 0.5);
        assert!(x[1] < 1e-37 && x[2] < 1e-37);
        let mut y = Vector3::from_element(-1e30);
        softmax_columns(&mut y);
        assert!(y.iter().all(|v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn softmax_matches_the_definition_per_column() {
        let mut x = SMatrix::<f32, 5, 3>::from_fn(|r, c| (r as f32 - 2.0) * (c as f32 + 0.5));
        let original = x;
        softmax_columns(&mut x);
        for (got, column) in x.column_iter().zip(original.column_iter()) {
            let total: f32 = column.iter().map(|v| (*v as f64).exp() as f32).sum();
            for (g, v) in got.iter().zip(column.iter()) {
                let want = ((*v as f64).exp() / total as f64) as f32;
                assert!((g - want).abs() < 1e-6, "{g} vs {want}");
            }
        }
    }
}
