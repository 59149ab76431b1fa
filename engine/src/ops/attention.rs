//! Scaled dot-product attention of one head, for a batch of query columns, over keys and
//! values that are already projected (`Wk k`, `Wv v`; all heads stacked, head `j` in features
//! `j d/h..(j+1) d/h`).
//!
//! The head size `d/h` is not a type-level constant (stable Rust cannot name `d / h`), so a
//! head is a run-time range and its products are nalgebra's `gemm` on dynamically sized views.
//! The keys are given transposed (one column per feature, `R` keys long): the scores of a
//! query column are then a sum of contiguous key columns scaled by the query's features,
//! which nalgebra computes 6 times faster than the dot products of `gemm_tr` on the
//! untransposed keys (4 heads, 25 keys, 15 queries: 2.5 vs 15.7 us, `examples/kernels.rs`).

use core::ops::Range;

use nalgebra::Dim;

use super::softmax::softmax_columns;
use super::{all_finite, Mat, MatMut};

/// Attention probabilities of one head: for every query column `m`,
/// `p[:, m] = softmax(scale * keys_t[:, head] q[head, m])` over the `R` keys (the rows of
/// `keys_t`, the keys transposed). Returns `false` if a score is not finite (then `p` holds
/// the raw scores).
pub fn probabilities<d: Dim, R: Dim, C: Dim>(
    q: &Mat<'_, d, C>,
    keys_t: &Mat<'_, R, d>,
    head: &Range<usize>,
    scale: f32,
    p: &mut MatMut<'_, R, C>,
) -> bool {
    p.view_mut().gemm(
        scale,
        &keys_t.view().columns(head.start, head.len()),
        &q.view().rows(head.start, head.len()),
        0.0,
    );
    if !all_finite(p.as_slice()) {
        return false;
    }
    softmax_columns(p);
    true
}

/// The head's rows of the attention output: `out[head, m] = values[head, :] p[:, m]`, one value
/// column per key.
pub fn mix<d: Dim, R: Dim, C: Dim>(
    values: &Mat<'_, d, R>,
    p: &Mat<'_, R, C>,
    head: &Range<usize>,
    out: &mut MatMut<'_, d, C>,
) {
    out.view_mut().rows_mut(head.start, head.len()).gemm(
        1.0,
        &values.view().rows(head.start, head.len()),
        &p.view(),
        0.0,
    );
}

/// Probabilities summed over groups of consecutive keys: `pooled[i, m] = sum_r p[r, m]` over
/// the `R / V` keys `r` of group `i`. When the keys of a group share one value (the class-mean
/// values of `ca_ap`), attention is `values_per_group * pooled`: exact, with `V` value columns
/// instead of `R`. `R` must be a multiple of `V` (the model's `N K` keys in `N` classes).
pub fn pool<R: Dim, V: Dim, C: Dim>(p: &Mat<'_, R, C>, pooled: &mut MatMut<'_, V, C>) {
    let (keys, groups) = (p.nrows().value(), pooled.nrows().value());
    let group = keys / groups.max(1);
    let p_columns = p.as_slice().chunks_exact(keys.max(1));
    for (p, pooled) in p_columns.zip(pooled.column_slices_mut()) {
        for (sum, group) in pooled.iter_mut().zip(p.chunks_exact(group.max(1))) {
            *sum = group.iter().sum();
        }
    }
}

/// The rows of head `j` of `h` heads in a stack of `d` features.
pub fn head(d: usize, h: usize, j: usize) -> Range<usize> {
    let size = d / h.max(1);
    j * size..(j + 1) * size
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::SMatrix;

    fn fill<const R: usize, const C: usize>(seed: u32) -> SMatrix<f32, R, C> {
        let mut s = seed;
        SMatrix::from_fn(|_, _| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    #[test]
    fn attention_matches_the_definition_and_pooling_is_exact() {
        // 4 features, 2 heads of 2; 6 keys in 3 groups of 2; 3 query columns.
        let q = fill::<4, 3>(1);
        let keys = fill::<4, 6>(2);
        let groups = fill::<4, 3>(3);
        let repeated = SMatrix::<f32, 4, 6>::from_fn(|r, c| groups[(r, c / 2)]);
        let head = 2..4;
        let mut p = SMatrix::<f32, 6, 3>::zeros();
        let keys_t = keys.transpose();
        assert!(probabilities(
            &Mat::from(&q),
            &Mat::from(&keys_t),
            &head,
            0.7,
            &mut MatMut::from(&mut p)
        ));
        let mut plain = SMatrix::<f32, 4, 3>::zeros();
        mix(
            &Mat::from(&repeated),
            &Mat::from(&p),
            &head,
            &mut MatMut::from(&mut plain),
        );
        let mut pooled = SMatrix::<f32, 3, 3>::zeros();
        pool(&Mat::from(&p), &mut MatMut::from(&mut pooled));
        let grouped = groups * pooled;
        for m in 0..3 {
            let scores: [f32; 6] = core::array::from_fn(|r| {
                (q[(2, m)] * keys[(2, r)] + q[(3, m)] * keys[(3, r)]) * 0.7
            });
            let total: f32 = scores.iter().map(|s| libm::expf(*s)).sum();
            for c in 0..4 {
                let want: f32 = (0..6)
                    .map(|r| libm::expf(scores[r]) / total * repeated[(c, r)])
                    .sum();
                if head.contains(&c) {
                    assert!((plain[(c, m)] - want).abs() < 1e-6);
                    assert!((grouped[(c, m)] - want).abs() < 1e-6);
                } else {
                    assert_eq!(plain[(c, m)], 0.0, "rows outside the head are left alone");
                }
            }
        }
        let inf = SMatrix::<f32, 4, 3>::from_element(f32::INFINITY);
        assert!(!probabilities(
            &Mat::from(&inf),
            &Mat::from(&keys_t),
            &(0..4),
            1.0,
            &mut MatMut::from(&mut p)
        ));
    }
}
