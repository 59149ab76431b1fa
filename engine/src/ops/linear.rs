//! Matrix products of a static matrix `A` (a weight borrowed from the file, or a prepared
//! matrix) with a run-time number of columns `B`: [`mul_to`] (`C = A B`), [`mul_add_to`]
//! (`C += A B`, a residual connection) and [`tr_mul_to`] (`C = Aᵀ B`).
//!
//! # Why hand-written kernels
//! They compute what nalgebra's `a.mul_to(&b, &mut c)`, `c.gemm(1.0, &a, &b, 1.0)` and
//! `a.tr_mul_to(&b, &mut c)` compute (the tests use those as the oracle), on the same views.
//! Without `std`, nalgebra multiplies statically sized matrices column by column: each column
//! of `C` is a sum of `K` axpys that stream the column of `C` through memory once per term,
//! and `tr_mul` is one dot product at a time. The kernels below instead keep a register tile
//! of `C` in registers over the whole sum and load each entry of `A` once per tile of
//! columns. Measured with `cargo run -p engine --release --example kernels` (AMD EPYC Zen 4,
//! AVX-512, `-C target-cpu=native`, one thread), in GMAC/s, nalgebra / kernel:
//!
//! | product (paper configuration)              | nalgebra | kernel |
//! |--------------------------------------------|---------:|-------:|
//! | see `examples/kernels.rs` for the table     |          |        |
//!
//! Small products (the attention's per-head scores and value mixes, the `N`-column products
//! of `prepare`, the analysis-only `W`) use nalgebra directly.
//!
//! # Tiles
//! [`mul_add_to`] computes `C[i.., j..]` in tiles of [`TILE_ROWS`] rows (a few vector
//! registers of a column) by [`TILE_COLS`] columns: per `k`, a column tile of `A` is loaded
//! once and multiplied by `TILE_COLS` broadcast entries of `B`. A single column uses a taller
//! tile ([`SINGLE_ROWS`]). Sizes follow the vector width the compiler is told about
//! (`-C target-cpu`), so the accumulators fill about half the register file: AVX-512 (32
//! registers of 16 lanes), AVX (16 of 8), and 4 lanes elsewhere (SSE2; on Cortex-M the 32
//! single-precision FPU registers). [`tr_mul_to`] computes [`DOT_A`] x [`DOT_B`] dot products
//! at once, each with a vector of partial sums.

use nalgebra::{Const, Dim, Matrix};

use super::{contiguous, contiguous_mut, Packed, PackedMut, VECTOR};

/// Vectors ([`VECTOR`] rows each) of a register tile of [`mul_add_to`].
#[cfg(not(target_arch = "arm"))]
pub const TILE_VECTORS: usize = if VECTOR == 16 { 4 } else { 2 };
/// Vectors ([`VECTOR`] rows each) of a register tile of [`mul_add_to`].
#[cfg(target_arch = "arm")]
pub const TILE_VECTORS: usize = 2;
/// Columns of a register tile of [`mul_add_to`].
#[cfg(not(target_arch = "arm"))]
pub const TILE_COLS: usize = 4;
/// Columns of a register tile of [`mul_add_to`].
#[cfg(target_arch = "arm")]
pub const TILE_COLS: usize = 2;
/// Vectors of the register tile of [`mul_add_to`] for a lone column: more independent sums.
pub const SINGLE_VECTORS: usize = TILE_VECTORS;
/// Columns of `A` per tile of [`tr_mul_to`].
#[cfg(not(target_arch = "arm"))]
pub const DOT_A: usize = 4;
/// Columns of `A` per tile of [`tr_mul_to`].
#[cfg(target_arch = "arm")]
pub const DOT_A: usize = 2;
/// Columns of `B` per tile of [`tr_mul_to`].
#[cfg(not(target_arch = "arm"))]
pub const DOT_B: usize = 4;
/// Columns of `B` per tile of [`tr_mul_to`].
#[cfg(target_arch = "arm")]
pub const DOT_B: usize = 2;

/// `C = A B` (`A`: `M x K`; `B`, `C`: as many columns as the shorter of the two).
pub fn mul_to<const M: usize, const K: usize, CB: Dim, CC: Dim, SA, SB, SC>(
    a: &Matrix<f32, Const<M>, Const<K>, SA>,
    b: &Matrix<f32, Const<K>, CB, SB>,
    c: &mut Matrix<f32, Const<M>, CC, SC>,
) where
    SA: Packed<M, Const<K>>,
    SB: Packed<K, CB>,
    SC: PackedMut<M, CC>,
{
    product::<M, K, false>(
        columns(contiguous(a)),
        columns(contiguous(b)),
        columns_mut(contiguous_mut(c)),
    );
}

/// `C += A B` (`A`: `M x K`; `B`, `C`: as many columns as the shorter of the two).
pub fn mul_add_to<const M: usize, const K: usize, CB: Dim, CC: Dim, SA, SB, SC>(
    a: &Matrix<f32, Const<M>, Const<K>, SA>,
    b: &Matrix<f32, Const<K>, CB, SB>,
    c: &mut Matrix<f32, Const<M>, CC, SC>,
) where
    SA: Packed<M, Const<K>>,
    SB: Packed<K, CB>,
    SC: PackedMut<M, CC>,
{
    product::<M, K, true>(
        columns(contiguous(a)),
        columns(contiguous(b)),
        columns_mut(contiguous_mut(c)),
    );
}

/// `C = Aᵀ B` (`A`: `K x M`; `B`, `C`: as many columns as the shorter of the two): `M x n` dot
/// products of length `K`, for a weight stored with its input index contiguous (`gen.g2_mu`).
pub fn tr_mul_to<const K: usize, const M: usize, CB: Dim, CC: Dim, SA, SB, SC>(
    a: &Matrix<f32, Const<K>, Const<M>, SA>,
    b: &Matrix<f32, Const<K>, CB, SB>,
    c: &mut Matrix<f32, Const<M>, CC, SC>,
) where
    SA: Packed<K, Const<M>>,
    SB: Packed<K, CB>,
    SC: PackedMut<M, CC>,
{
    tr_product::<K, M>(
        columns(contiguous(a)),
        columns(contiguous(b)),
        columns_mut(contiguous_mut(c)),
    );
}

/// The whole columns of a column-major slice with `R` rows.
fn columns<const R: usize>(data: &[f32]) -> &[[f32; R]] {
    let whole = data.len() - data.len() % R;
    // Cannot fail: `whole` is a multiple of R and [f32; R] has the alignment of f32.
    bytemuck::try_cast_slice(&data[..whole]).unwrap_or_default()
}

/// The whole columns of a mutable column-major slice with `R` rows.
fn columns_mut<const R: usize>(data: &mut [f32]) -> &mut [[f32; R]] {
    let whole = data.len() - data.len() % R;
    bytemuck::try_cast_slice_mut(&mut data[..whole]).unwrap_or_default()
}

/// `c (+)= a b` over columns: `a` has `K` columns of `M`, `b` and `c` as many columns as the
/// shorter. Column tiles of [`TILE_COLS`], then 3, 2 and 1 for the rest.
fn product<const M: usize, const K: usize, const ADD: bool>(
    a: &[[f32; M]],
    b: &[[f32; K]],
    c: &mut [[f32; M]],
) {
    let n = b.len().min(c.len());
    let mut j = column_tiles::<M, K, TILE_COLS, TILE_VECTORS, ADD>(a, b, c, 0, n);
    j = column_tiles::<M, K, 3, TILE_VECTORS, ADD>(a, b, c, j, n);
    j = column_tiles::<M, K, 2, TILE_VECTORS, ADD>(a, b, c, j, n);
    column_tiles::<M, K, 1, SINGLE_VECTORS, ADD>(a, b, c, j, n);
}

/// Tiles of `NR` columns from column `j` while a whole tile fits before `n`; returns the first
/// column not done. Each is done in row tiles of `MV` vectors, then of one vector, then row by
/// row.
#[inline(always)]
fn column_tiles<
    const M: usize,
    const K: usize,
    const NR: usize,
    const MV: usize,
    const ADD: bool,
>(
    a: &[[f32; M]],
    b: &[[f32; K]],
    c: &mut [[f32; M]],
    mut j: usize,
    n: usize,
) -> usize {
    while j + NR <= n {
        let b_cols: [&[f32; K]; NR] = core::array::from_fn(|t| &b[j + t]);
        let c_cols = &mut c[j..j + NR];
        let mut i = 0;
        while i + MV * VECTOR <= M {
            tile::<M, K, NR, MV, ADD>(a, b_cols, c_cols, i);
            i += MV * VECTOR;
        }
        while i + VECTOR <= M {
            tile::<M, K, NR, 1, ADD>(a, b_cols, c_cols, i);
            i += VECTOR;
        }
        while i < M {
            row::<M, K, NR, ADD>(a, b_cols, c_cols, i);
            i += 1;
        }
        j += NR;
    }
    j
}

/// One register tile: rows `i..i + MV VECTOR` of the `NR` columns `c_cols` (+)= `a b_cols`.
/// The `MV x NR` vectors of sums stay in registers over all `K` (a function of its own so the
/// compiler allocates them there whatever the surrounding code).
#[inline(never)]
fn tile<const M: usize, const K: usize, const NR: usize, const MV: usize, const ADD: bool>(
    a: &[[f32; M]],
    b_cols: [&[f32; K]; NR],
    c_cols: &mut [[f32; M]],
    i: usize,
) {
    let rows = i..i + MV * VECTOR;
    let mut acc = [[[0.0f32; VECTOR]; MV]; NR];
    for (a_col, k) in a.iter().zip(0..K) {
        let a_tile = &a_col[rows.clone()];
        for (acc, b_col) in acc.iter_mut().zip(&b_cols) {
            let b_kj = b_col[k];
            for (v, acc) in acc.iter_mut().enumerate() {
                for (l, s) in acc.iter_mut().enumerate() {
                    *s += a_tile[v * VECTOR + l] * b_kj;
                }
            }
        }
    }
    for (acc, c) in acc.iter().zip(c_cols.iter_mut()) {
        for (c, &s) in c[rows.clone()].iter_mut().zip(acc.as_flattened()) {
            *c = if ADD { *c + s } else { s };
        }
    }
}

/// Row `i` of the `NR` columns `c_cols` (+)= `a b_cols`: the rows past the last whole vector.
#[inline(never)]
fn row<const M: usize, const K: usize, const NR: usize, const ADD: bool>(
    a: &[[f32; M]],
    b_cols: [&[f32; K]; NR],
    c_cols: &mut [[f32; M]],
    i: usize,
) {
    let mut acc = [0.0f32; NR];
    for (a_col, k) in a.iter().zip(0..K) {
        for (s, b_col) in acc.iter_mut().zip(&b_cols) {
            *s += a_col[i] * b_col[k];
        }
    }
    for (&s, c) in acc.iter().zip(c_cols.iter_mut()) {
        c[i] = if ADD { c[i] + s } else { s };
    }
}

/// `c = aᵀ b`: `a` has `M` columns of `K`, `b` and `c` as many columns as the shorter. Tiles of
/// [`DOT_B`] columns of `b` (then 1) by [`DOT_A`] columns of `a` (then 1).
fn tr_product<const K: usize, const M: usize>(a: &[[f32; K]], b: &[[f32; K]], c: &mut [[f32; M]]) {
    let n = b.len().min(c.len());
    let mut j = 0;
    while j + DOT_B <= n {
        dot_rows::<K, M, DOT_B>(a, core::array::from_fn(|t| &b[j + t]), &mut c[j..j + DOT_B]);
        j += DOT_B;
    }
    while j < n {
        dot_rows::<K, M, 1>(a, [&b[j]], &mut c[j..j + 1]);
        j += 1;
    }
}

/// All `M` rows of the `TB` columns `c_cols = aᵀ b_cols`, [`DOT_A`] rows at a time (then 1).
#[inline(always)]
fn dot_rows<const K: usize, const M: usize, const TB: usize>(
    a: &[[f32; K]],
    b_cols: [&[f32; K]; TB],
    c_cols: &mut [[f32; M]],
) {
    let rows = M.min(a.len());
    let mut i = 0;
    while i + DOT_A <= rows {
        let partial = dots::<K, DOT_A, TB>(core::array::from_fn(|s| &a[i + s]), b_cols);
        finish::<K, M, DOT_A, TB>(
            &partial,
            core::array::from_fn(|s| &a[i + s]),
            b_cols,
            c_cols,
            i,
        );
        i += DOT_A;
    }
    while i < rows {
        let partial = dots::<K, 1, TB>([&a[i]], b_cols);
        finish::<K, M, 1, TB>(&partial, [&a[i]], b_cols, c_cols, i);
        i += 1;
    }
}

/// `c_cols[t][i + s]` = the partial sums of `a_cols[s] . b_cols[t]` added up, plus the products
/// past the last whole chunk.
#[inline(always)]
fn finish<const K: usize, const M: usize, const TA: usize, const TB: usize>(
    partial: &[[[f32; VECTOR]; TA]; TB],
    a_cols: [&[f32; K]; TA],
    b_cols: [&[f32; K]; TB],
    c_cols: &mut [[f32; M]],
    i: usize,
) {
    let whole = K - K % VECTOR;
    for ((c, partial), b) in c_cols.iter_mut().zip(partial).zip(&b_cols) {
        for ((c, partial), a) in c[i..i + TA].iter_mut().zip(partial).zip(&a_cols) {
            let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
            *c = horizontal_sum(*partial) + tail;
        }
    }
}

/// The sum of a vector's lanes, pairwise (log2 VECTOR dependent steps, not VECTOR).
#[inline(always)]
fn horizontal_sum(mut v: [f32; VECTOR]) -> f32 {
    let mut width = VECTOR;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            v[l] += v[l + width];
        }
    }
    v[0]
}

/// The [`VECTOR`] partial sums of the `TA x TB` dot products `a_cols[s] . b_cols[t]` over the
/// whole chunks of [`VECTOR`], returned `[t][s]` and held in registers meanwhile (a function
/// of its own, like [`tile`]).
#[inline(never)]
fn dots<const K: usize, const TA: usize, const TB: usize>(
    a_cols: [&[f32; K]; TA],
    b_cols: [&[f32; K]; TB],
) -> [[[f32; VECTOR]; TA]; TB] {
    let a_chunks: [&[[f32; VECTOR]]; TA] = core::array::from_fn(|s| columns(a_cols[s]));
    let b_chunks: [&[[f32; VECTOR]]; TB] = core::array::from_fn(|t| columns(b_cols[t]));
    let mut acc = [[[0.0f32; VECTOR]; TA]; TB];
    for c in 0..K / VECTOR {
        for (acc, b) in acc.iter_mut().zip(&b_chunks) {
            let b_chunk = &b[c];
            for (acc, a) in acc.iter_mut().zip(&a_chunks) {
                let a_chunk = &a[c];
                for l in 0..VECTOR {
                    acc[l] += a_chunk[l] * b_chunk[l];
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::SMatrix;

    /// Most columns a test uses.
    const MAX: usize = 31;

    /// A matrix of uniform values in [-0.5, 0.5) from a fixed LCG.
    fn random<const R: usize, const C: usize>(seed: u32) -> SMatrix<f32, R, C> {
        let mut s = seed;
        SMatrix::from_fn(|_, _| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
    }

    /// Equal up to the f32 rounding of sums of `terms` products of magnitude below 1/4.
    fn close<const R: usize>(
        got: &SMatrix<f32, R, MAX>,
        want: &SMatrix<f32, R, MAX>,
        n: usize,
        terms: usize,
    ) {
        let bound = terms as f32 * 0.25 * 4.0 * f32::EPSILON;
        for (g, w) in got.columns(0, n).iter().zip(want.columns(0, n).iter()) {
            assert!((g - w).abs() <= bound, "{g} vs {w} (bound {bound})");
        }
    }

    /// `A (M x K)` against nalgebra's own products on the same views, for every column count
    /// 1..=9 (every remainder of the column tiles) and a few more.
    fn check<const M: usize, const K: usize>(seed: u32) {
        let a = random::<M, K>(seed);
        let at = random::<K, M>(seed + 1);
        let b = random::<K, MAX>(seed + 2);
        let start = random::<M, MAX>(seed + 3);
        for n in (1..=9).chain([16, 25, MAX]) {
            let b = b.columns(0, n);
            let (mut got, mut want) = (SMatrix::<f32, M, MAX>::from_element(f32::NAN), start);

            mul_to(&a, &b, &mut got.columns_mut(0, n));
            a.mul_to(&b, &mut want.columns_mut(0, n));
            close(&got, &want, n, K);

            got = start;
            want = start;
            mul_add_to(&a, &b, &mut got.columns_mut(0, n));
            want.columns_mut(0, n).gemm(1.0, &a, &b, 1.0);
            close(&got, &want, n, K + 1);

            got.fill(f32::NAN);
            tr_mul_to(&at, &b, &mut got.columns_mut(0, n));
            at.tr_mul_to(&b, &mut want.columns_mut(0, n));
            close(&got, &want, n, K);
            // Columns past n are left alone.
            assert!(got.columns(n, MAX - n).iter().all(|v| v.is_nan()));
        }
    }

    #[test]
    fn products_match_nalgebra() {
        // Paper and edge shapes, and odd ones that leave a remainder in every tile loop.
        check::<128, 64>(1);
        check::<256, 128>(2);
        check::<64, 32>(3);
        check::<37, 19>(4);
        check::<18, 36>(5);
        check::<21, 18>(6);
        check::<1, 3>(7);
        check::<133, 7>(8);
        check::<5, 640>(9);
    }

    #[test]
    fn a_column_count_mismatch_uses_the_shorter() {
        let a = random::<3, 2>(10);
        let b = random::<2, 4>(11);
        let mut c = SMatrix::<f32, 3, 5>::from_element(7.0);
        mul_to(&a, &b.columns(0, 4), &mut c.columns_mut(0, 5));
        assert_eq!(c.fixed_columns::<4>(0), a * b);
        assert_eq!(c.column(4), nalgebra::Vector3::from_element(7.0));
    }
}
