//! Matrix products of a static matrix `A` (a weight borrowed from the file, or a prepared
//! matrix) with a run-time number of columns `B` (a batch of examples): [`mul_to`]
//! (`C = A B`), [`mul_add_to`] (`C += A B`, a residual connection) and [`tr_mul_to`]
//! (`C = Aᵀ B`). The operands are [`Mat`]s (contiguous columns); the kernels read their
//! slices column by column, with the sizes as nalgebra dimensions (`Const` on the device, so
//! every loop bound is a constant there, `Dyn` on the host).
//!
//! # Why hand-written kernels
//! They compute what nalgebra's `a.mul_to(&b, &mut c)`, `c.gemm(1.0, &a, &b, 1.0)` and
//! `a.tr_mul_to(&b, &mut c)` compute; the tests use those as the oracle. Without `std`,
//! nalgebra multiplies statically sized matrices one column of `C` at a time (a gemv: `K`
//! axpys, each loading the whole weight column again for every column of `C`), and `tr_mul`
//! one dot product at a time. The kernels keep a register tile of `C` in registers over the
//! whole sum, so each entry of `A` is loaded once per tile of columns, not once per column.
//! `cargo run -p engine --release --example kernels` (AMD EPYC Zen 4, AVX-512 through
//! `-C target-cpu=native`, one thread, best of 200), nalgebra / kernel in GMAC/s:
//!
//! | product (paper shapes)                 | 25 support columns | 15-query batch |   5 queries |     1 query |
//! |----------------------------------------|-------------------:|---------------:|------------:|------------:|
//! | `enc x`: 128x640                       |        17.3 / 47.0 |    17.1 / 47.0 | 15.9 / 47.0 | 22.9 / 27.7 |
//! | `Wq x` (d x d): 128x128                |        28.1 / 46.8 |    19.3 / 46.7 | 23.9 / 46.5 | 22.2 / 28.3 |
//! | `F1 x`, `G1` halves: 256x128           |        17.0 / 46.6 |    24.9 / 46.9 | 24.6 / 46.8 | 24.0 / 23.1 |
//! | `F2 h`: 128x256                        |        17.4 / 46.9 |    24.1 / 46.9 | 16.0 / 46.8 | 22.5 / 27.3 |
//! | residual `x += Wo a` (`gemm`): 128x128 |        19.8 / 46.7 |    10.5 / 46.5 | 16.4 / 46.5 | 11.6 / 28.1 |
//! | `G2muᵀ x` (`tr_mul`): (640x256)ᵀ       |                  - |     7.2 / 44.1 |  7.2 / 44.8 |  7.2 / 20.4 |
//!
//! That is 2 to 6 times nalgebra's rate on every product the engine spends its time in. A
//! lone column (`classify` of one query) is bound by streaming the weights from cache, and
//! there both are near 25 GMAC/s. The peak of this machine is about 49 GMAC/s (16 lanes,
//! one multiply and one add per cycle). Small products (the attention's per-head scores and value mixes, the
//! class-value fold of `prepare`, the analysis-only `W`) use nalgebra directly.
//!
//! # Tiles
//! [`mul_add_to`] computes `C` in register tiles of [`TILE_VECTORS`] vectors of rows by
//! [`TILE_COLS`] columns: per `k`, a column tile of `A` is loaded once and multiplied by
//! `TILE_COLS` broadcast entries of `B`; a lone column is a gemv with [`SINGLE_ROWS`] sums.
//! [`tr_mul_to`] computes [`DOT_A`] x [`DOT_B`] dot products at once, each with [`DOT_LANES`]
//! partial sums ([`LONE_DOT_A`] x 1 for a lone column). Each tile is a function of its own
//! (`#[inline(never)]`): inlined into the loops around it, the compiler sometimes left the
//! sums in memory or vectorised across the wrong loop, at a tenth of the speed.
//!
//! ## Host tile sizes (x86-64), and why
//! The sizes count the registers LLVM really uses, which is not always what `VECTOR` says.
//! With `-C target-cpu=native` on an Intel AVX-512 part, `VECTOR` is 16, but LLVM prefers
//! 256-bit vectors there (`prefer-256-bit`, set for every Intel AVX-512 core): a 16-lane sum is
//! two `ymm` registers, of 32. On AMD Zen 4 it uses `zmm` (32 of 16 lanes, executed as two
//! 256-bit halves); with `-C target-cpu=x86-64-v3` (AVX2, the portable build) `VECTOR` is 8
//! and there are 16 `ymm` registers. The sums of a tile must fit all three with room for the
//! operands:
//! - [`mul_add_to`]: [`TILE_VECTORS`] = 2 vectors x [`TILE_COLS`] = 5 columns: 20 `ymm` of 32
//!   on Intel AVX-512 (the 4 x 5 tile used before needed 40 and spilled), 10 `zmm` on Zen 4,
//!   10 `ymm` of 16 with AVX2. Five columns divide the 25 support examples, a 15-query batch
//!   and a 5-query call.
//! - [`tr_mul_to`]: dot products keep [`DOT_LANES`] = 8 partial sums (one 256-bit register) even
//!   where `VECTOR` is 16, in tiles of [`DOT_A`] x [`DOT_B`]: 4 x 5 = 20 `ymm` where 32
//!   registers exist (AVX-512 builds: 9 loads per 20 multiply-adds), 2 x 5 = 10 of 16 with AVX2
//!   (3 x 5 and 4 x 5 would spill). The 4 x 5 tile of 16-lane sums used before was 40 `ymm`
//!   on Intel: spilled, 7 to 9 GMAC/s on `G2muᵀ x`, 69% of a batched query's time.
//! - Every multiply-add is fused (`f32::mul_add`) on FMA hosts: Rust never fuses
//!   `c + a * b` itself, and a separate multiply and add cost Intel cores (two FMA ports, no
//!   separate adders) half their rate; Zen 4 has separate add pipes, which is why the same code
//!   ran near its peak there and at half of it on the Xeon.
//!
//! Measured with `examples/kernels 50` (best of 50, before and after binaries in one run on
//! the shared 2-core Xeon of issue 14), GMAC/s on 15 columns, before (4 x 5 tiles of `VECTOR`
//! lanes, unfused) -> after: native build `enc x` 24.5 -> 44.5, `d x d` 28.1 -> 44.5,
//! `F1`/`G1` halves 24.4 -> 44.5, `F2` 24.4 -> 44.3, `G2muᵀ x` 9.3 -> 36.4; `x86-64-v3`
//! build 29.4 -> 41.7, 32.3 -> 43.9, 29.2 -> 41.0, 29.3 -> 40.9, 22.2 -> 37.8. A lone column
//! (15-18 GMAC/s, streaming the weights from L2) is unchanged.
//! `docs/benchmarks.md` has the whole-model numbers and the commands. On Arm nothing here
//! applies: the sizes below are the Cortex-M4's, and its arithmetic is unfused as before.
//!
//! On Arm with the hard-float ABI (the firmware), the lone-column loops, 16 rows of `A B`
//! (`lone`) and 8 dot products of `Aᵀ B` (`scalar_dots`), are in assembly
//! (`ops::dsp::{gemv16, dots8}`): LLVM never loads several weights with one `VLDM`, and a
//! gemv then costs 2 instructions per multiply-add; with it, 1.2 to 1.4 on the paper's
//! products. The sums and their order are those of the Rust loops (checked bit for bit by
//! `examples/device-kernels` on QEMU); `docs/arm-kernels.md` shows the loops.

use nalgebra::Dim;

use super::{Mat, MatMut, VECTOR};

// `f32::mul_add` is `std`'s (the engine is `no_std`): on an x86-64 host built with FMA
// (`-C target-cpu=native` on any FMA machine, or `x86-64-v3`) the kernels take it from the
// `std` every host binary links anyway; see [`mul_add`].
#[cfg(all(
    target_feature = "fma",
    not(target_arch = "arm"),
    not(target_os = "none")
))]
extern crate std;

/// `c + a b`: one fused multiply-add (one rounding) on hosts with FMA, else a multiply and an
/// add (the Arm path's arithmetic, bit for bit as before). Rust never fuses `c + a * b` by
/// itself, and Intel cores run a separate multiply and add at half the rate of the FMA
/// (two FMA ports; Zen 4 has separate add pipes, so it lost little): the products'
/// kernels were bound by that (`examples/kernels`, module doc).
#[inline(always)]
fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(all(
        target_feature = "fma",
        not(target_arch = "arm"),
        not(target_os = "none")
    ))]
    return a.mul_add(b, c);
    #[cfg(not(all(
        target_feature = "fma",
        not(target_arch = "arm"),
        not(target_os = "none")
    )))]
    return c + a * b;
}

/// Vectors ([`VECTOR`] rows each) of a register tile of [`mul_add_to`].
#[cfg(not(target_arch = "arm"))]
pub const TILE_VECTORS: usize = 2;
/// Columns of a register tile of [`mul_add_to`] (5 divides the 25 support examples of the
/// 5-shot models, a 15-query batch and a 5-query call).
#[cfg(not(target_arch = "arm"))]
pub const TILE_COLS: usize = 5;
/// Rows of the register tile of [`mul_add_to`] for a lone column (a gemv).
#[cfg(not(target_arch = "arm"))]
pub const SINGLE_ROWS: usize = 8 * VECTOR;
/// Columns of `A` per tile of [`tr_mul_to`].
#[cfg(not(target_arch = "arm"))]
pub const DOT_A: usize = if VECTOR == 16 { 4 } else { 2 };
/// Columns of `B` per tile of [`tr_mul_to`].
#[cfg(not(target_arch = "arm"))]
pub const DOT_B: usize = 5;
/// Columns of `A` (dot products) per tile of [`tr_mul_to`] when `B` is one column (a lone
/// query's `G2muᵀ x`): more sums share each load of `B` than in a [`DOT_A`] x [`DOT_B`] tile.
#[cfg(not(target_arch = "arm"))]
pub const LONE_DOT_A: usize = 4;
/// Partial sums per dot product of [`tr_mul_to`]: one 256-bit register, also where
/// [`VECTOR`] is 16 (see "Host tile sizes" in the module doc).
#[cfg(not(target_arch = "arm"))]
pub const DOT_LANES: usize = if VECTOR > 8 { 8 } else { VECTOR };
/// Partial sums per dot product of [`tr_mul_to`] (a vector).
#[cfg(target_arch = "arm")]
pub const DOT_LANES: usize = VECTOR;

/// Vectors ([`VECTOR`] rows each) of a register tile of [`mul_add_to`].
#[cfg(target_arch = "arm")]
pub const TILE_VECTORS: usize = 2;
/// Columns of a register tile of [`mul_add_to`].
#[cfg(target_arch = "arm")]
pub const TILE_COLS: usize = 2;
/// Rows of the register tile of [`mul_add_to`] for a lone column (a gemv).
#[cfg(target_arch = "arm")]
pub const SINGLE_ROWS: usize = 16;
/// Columns of `A` per tile of [`tr_mul_to`].
#[cfg(target_arch = "arm")]
pub const DOT_A: usize = 2;
/// Columns of `B` per tile of [`tr_mul_to`].
#[cfg(target_arch = "arm")]
pub const DOT_B: usize = 2;
/// Columns of `A` (dot products) per tile of [`tr_mul_to`] when `B` is one column (a query
/// on the device): 8 sums, one FPU register each, share each load of `B` (2.50 instructions
/// per multiply-add on the paper's `G2muᵀ x`; 2 dot products of 4 lanes each took 2.73, 4
/// single sums 2.61, `examples/device-kernels`).
#[cfg(target_arch = "arm")]
pub const LONE_DOT_A: usize = 8;

/// `C = A B` (`A`: `M x K`; `B`, `C`: as many columns as the shorter of the two).
pub fn mul_to<M: Dim, K: Dim, CB: Dim, CC: Dim>(
    a: &Mat<'_, M, K>,
    b: &Mat<'_, K, CB>,
    c: &mut MatMut<'_, M, CC>,
) {
    let n = b.ncols().value().min(c.ncols().value());
    product::<M, K, false>(
        a.nrows(),
        a.ncols(),
        n,
        a.as_slice(),
        b.as_slice(),
        c.as_mut_slice(),
    );
}

/// `C += A B` (`A`: `M x K`; `B`, `C`: as many columns as the shorter of the two).
pub fn mul_add_to<M: Dim, K: Dim, CB: Dim, CC: Dim>(
    a: &Mat<'_, M, K>,
    b: &Mat<'_, K, CB>,
    c: &mut MatMut<'_, M, CC>,
) {
    let n = b.ncols().value().min(c.ncols().value());
    product::<M, K, true>(
        a.nrows(),
        a.ncols(),
        n,
        a.as_slice(),
        b.as_slice(),
        c.as_mut_slice(),
    );
}

/// `C = Aᵀ B` (`A`: `K x M`; `B`, `C`: as many columns as the shorter of the two): `M x n` dot
/// products of length `K`, for a weight stored with its input index contiguous (`gen.g2_mu`).
pub fn tr_mul_to<K: Dim, M: Dim, CB: Dim, CC: Dim>(
    a: &Mat<'_, K, M>,
    b: &Mat<'_, K, CB>,
    c: &mut MatMut<'_, M, CC>,
) {
    let n = b.ncols().value().min(c.ncols().value());
    tr_product::<K, M>(
        a.nrows(),
        a.ncols(),
        n,
        a.as_slice(),
        b.as_slice(),
        c.as_mut_slice(),
    );
}

/// The whole chunks of `R` values of a slice, as arrays.
fn columns<const R: usize>(data: &[f32]) -> &[[f32; R]] {
    let whole = data.len() - data.len() % R;
    // Cannot fail: `whole` is a multiple of R and [f32; R] has the alignment of f32.
    bytemuck::try_cast_slice(&data[..whole]).unwrap_or_default()
}

/// `c (+)= a b` over the first `n` columns: `a` has `k` columns of `m`, `b` has columns of
/// `k` and `c` of `m`, at least `n` each (the matrices' column counts, so a constant where
/// those are). Column tiles of [`TILE_COLS`], then of 4, 3 and 2 (those narrower than
/// `TILE_COLS`), then lone columns.
fn product<M: Dim, K: Dim, const ADD: bool>(
    m: M,
    k: K,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) {
    let (rows, depth) = (m.value(), k.value());
    if rows == 0 || depth == 0 || a.len() < rows * depth {
        return;
    }
    let mut j = column_tiles::<M, K, TILE_COLS, ADD>(m, k, a, b, c, 0, n);
    if TILE_COLS > 4 {
        j = column_tiles::<M, K, 4, ADD>(m, k, a, b, c, j, n);
    }
    if TILE_COLS > 3 {
        j = column_tiles::<M, K, 3, ADD>(m, k, a, b, c, j, n);
    }
    if TILE_COLS > 2 {
        j = column_tiles::<M, K, 2, ADD>(m, k, a, b, c, j, n);
    }
    let (b_rest, c_rest) = (&b[j * depth..n * depth], &mut c[j * rows..n * rows]);
    for (b, c) in b_rest
        .chunks_exact(depth)
        .zip(c_rest.chunks_exact_mut(rows))
    {
        let mut i = 0;
        while i + SINGLE_ROWS <= rows {
            lone::<M, K, SINGLE_ROWS, ADD>(m, k, a, b, c, i);
            i += SINGLE_ROWS;
        }
        while i + 2 * VECTOR <= rows {
            lone::<M, K, { 2 * VECTOR }, ADD>(m, k, a, b, c, i);
            i += 2 * VECTOR;
        }
        while i < rows {
            lone::<M, K, 1, ADD>(m, k, a, b, c, i);
            i += 1;
        }
    }
}

/// Tiles of `NR` columns from column `j` while a whole tile fits before `n`; returns the first
/// column not done. Each is done in row tiles of [`TILE_VECTORS`] vectors, then of one vector,
/// then row by row.
#[inline(always)]
fn column_tiles<M: Dim, K: Dim, const NR: usize, const ADD: bool>(
    m: M,
    k: K,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    mut j: usize,
    n: usize,
) -> usize {
    let (rows, depth) = (m.value(), k.value());
    while j + NR <= n {
        let b_cols = &b[j * depth..(j + NR) * depth];
        let c_cols = &mut c[j * rows..(j + NR) * rows];
        let mut i = 0;
        while i + TILE_VECTORS * VECTOR <= rows {
            tile::<M, K, NR, TILE_VECTORS, ADD>(m, k, a, b_cols, c_cols, i);
            i += TILE_VECTORS * VECTOR;
        }
        while i + VECTOR <= rows {
            tile::<M, K, NR, 1, ADD>(m, k, a, b_cols, c_cols, i);
            i += VECTOR;
        }
        while i < rows {
            row::<M, K, NR, ADD>(m, k, a, b_cols, c_cols, i);
            i += 1;
        }
        j += NR;
    }
    j
}

/// The `NR` columns of `k` values in `b` (which holds at least `NR k`), each cut to length `k`
/// so the kernels' indices below `k` need no bounds check.
#[inline(always)]
fn b_columns<const NR: usize>(b: &[f32], depth: usize) -> [&[f32]; NR] {
    core::array::from_fn(|t| &b[t * depth..][..depth])
}

/// One register tile: rows `i..i + MV VECTOR` of the `NR` columns `c_cols` (+)= `a b_cols`.
/// The `MV x NR` vectors of sums stay in registers over all `K`.
#[inline(never)]
fn tile<M: Dim, K: Dim, const NR: usize, const MV: usize, const ADD: bool>(
    m: M,
    k: K,
    a: &[f32],
    b_cols: &[f32],
    c_cols: &mut [f32],
    i: usize,
) {
    let (rows_m, depth) = (m.value(), k.value());
    let b_cols = b_columns::<NR>(b_cols, depth);
    let rows = i..i + MV * VECTOR;
    let mut acc = [[[0.0f32; VECTOR]; MV]; NR];
    for (a_col, k) in a.chunks_exact(rows_m).zip(0..depth) {
        let a_tile = &a_col[rows.clone()];
        for (acc, b_col) in acc.iter_mut().zip(&b_cols) {
            let b_kj = b_col[k];
            for (v, acc) in acc.iter_mut().enumerate() {
                for (l, s) in acc.iter_mut().enumerate() {
                    *s = mul_add(a_tile[v * VECTOR + l], b_kj, *s);
                }
            }
        }
    }
    for (acc, c) in acc.iter().zip(c_cols.chunks_exact_mut(rows_m)) {
        for (c, &s) in c[rows.clone()].iter_mut().zip(acc.as_flattened()) {
            *c = if ADD { *c + s } else { s };
        }
    }
}

/// Rows `i..i + MR` of a lone column, `c (+)= a b`: a gemv with `MR` sums in registers.
#[inline(never)]
fn lone<M: Dim, K: Dim, const MR: usize, const ADD: bool>(
    m: M,
    k: K,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    i: usize,
) {
    // On Arm, 16 rows are one loop in assembly with `VLDM` loads (`ops::dsp::gemv16`), the
    // same sums in the same order.
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if MR == 16 {
        if let Some(acc) = super::dsp::gemv16(&a[i..], m.value(), &b[..k.value()]) {
            for (c, &s) in c[i..i + MR].iter_mut().zip(&acc) {
                *c = if ADD { *c + s } else { s };
            }
            return;
        }
    }
    let mut acc = [0.0f32; MR];
    for (a_col, &b_k) in a.chunks_exact(m.value()).zip(&b[..k.value()]) {
        // On Arm, LLVM unrolls this loop by two and addresses the second column at an offset
        // of one column; past VLDR's reach (1020 bytes) it kept a pointer per row and spilled
        // (3.2 instructions per multiply-add for 256 rows instead of 2.4,
        // `examples/device-kernels`). An empty `black_box` counts as a call, and LLVM does not
        // unroll loops with calls for M-profile cores: one here where the offsets would not fit.
        #[cfg(target_arch = "arm")]
        if 4 * (m.value() + MR) > 1020 {
            core::hint::black_box(());
        }
        for (s, &a_ik) in acc.iter_mut().zip(&a_col[i..i + MR]) {
            *s = mul_add(a_ik, b_k, *s);
        }
    }
    for (c, &s) in c[i..i + MR].iter_mut().zip(&acc) {
        *c = if ADD { *c + s } else { s };
    }
}

/// Row `i` of the `NR` columns `c_cols` (+)= `a b_cols`: the rows past the last whole vector.
#[inline(never)]
fn row<M: Dim, K: Dim, const NR: usize, const ADD: bool>(
    m: M,
    k: K,
    a: &[f32],
    b_cols: &[f32],
    c_cols: &mut [f32],
    i: usize,
) {
    let (rows, depth) = (m.value(), k.value());
    let b_cols = b_columns::<NR>(b_cols, depth);
    let mut acc = [0.0f32; NR];
    for (a_col, k) in a.chunks_exact(rows).zip(0..depth) {
        for (s, b_col) in acc.iter_mut().zip(&b_cols) {
            *s = mul_add(a_col[i], b_col[k], *s);
        }
    }
    for (&s, c) in acc.iter().zip(c_cols.chunks_exact_mut(rows)) {
        c[i] = if ADD { c[i] + s } else { s };
    }
}

/// `c = aᵀ b` over the first `n` columns: `a` has `m` columns of `k`, `b` columns of `k` and
/// `c` of `m`, at least `n` each. Tiles of [`DOT_B`] columns of `b`, then of 4 and 2 (those
/// narrower than `DOT_B`), then 1.
fn tr_product<K: Dim, M: Dim>(k: K, m: M, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (depth, rows) = (k.value(), m.value());
    if rows == 0 || depth == 0 {
        return;
    }
    let mut j = dot_tiles::<K, M, DOT_B>(k, m, a, b, c, 0, n);
    if DOT_B > 4 {
        j = dot_tiles::<K, M, 4>(k, m, a, b, c, j, n);
    }
    if DOT_B > 2 {
        j = dot_tiles::<K, M, 2>(k, m, a, b, c, j, n);
    }
    dot_tiles::<K, M, 1>(k, m, a, b, c, j, n);
}

/// Tiles of `TB` columns from column `j` while a whole tile fits before `n`; returns the first
/// column not done.
#[inline(always)]
fn dot_tiles<K: Dim, M: Dim, const TB: usize>(
    k: K,
    m: M,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    mut j: usize,
    n: usize,
) -> usize {
    let (depth, rows) = (k.value(), m.value());
    while j + TB <= n {
        dot_rows::<K, M, TB>(
            k,
            m,
            a,
            b_columns::<TB>(&b[j * depth..], depth),
            &mut c[j * rows..(j + TB) * rows],
        );
        j += TB;
    }
    j
}

/// All `M` rows of the `TB` columns `c_cols = aᵀ b_cols`, [`DOT_A`] rows at a time (then 1).
#[inline(always)]
fn dot_rows<K: Dim, M: Dim, const TB: usize>(
    k: K,
    m: M,
    a: &[f32],
    b_cols: [&[f32]; TB],
    c_cols: &mut [f32],
) {
    let depth = k.value();
    let rows = m.value().min(a.len() / depth);
    let mut i = 0;
    #[cfg(target_arch = "arm")]
    if TB == 1 {
        let c = &mut c_cols[..m.value()];
        while i + LONE_DOT_A <= rows {
            let a_cols = b_columns::<LONE_DOT_A>(&a[i * depth..], depth);
            let sums = scalar_dots::<K, LONE_DOT_A>(k, a_cols, b_cols[0]);
            c[i..i + LONE_DOT_A].copy_from_slice(&sums);
            i += LONE_DOT_A;
        }
        while i < rows {
            let a_cols = b_columns::<1>(&a[i * depth..], depth);
            let [sum] = scalar_dots::<K, 1>(k, a_cols, b_cols[0]);
            c[i] = sum;
            i += 1;
        }
        return;
    }
    #[cfg(not(target_arch = "arm"))]
    if TB == 1 {
        while i + LONE_DOT_A <= rows {
            let a_cols = b_columns::<LONE_DOT_A>(&a[i * depth..], depth);
            let partial = dots::<K, LONE_DOT_A, TB>(k, a_cols, b_cols);
            finish::<K, M, LONE_DOT_A, TB>(k, m, &partial, a_cols, b_cols, c_cols, i);
            i += LONE_DOT_A;
        }
    }
    while i + DOT_A <= rows {
        let a_cols = b_columns::<DOT_A>(&a[i * depth..], depth);
        let partial = dots::<K, DOT_A, TB>(k, a_cols, b_cols);
        finish::<K, M, DOT_A, TB>(k, m, &partial, a_cols, b_cols, c_cols, i);
        i += DOT_A;
    }
    while i < rows {
        let a_cols = b_columns::<1>(&a[i * depth..], depth);
        let partial = dots::<K, 1, TB>(k, a_cols, b_cols);
        finish::<K, M, 1, TB>(k, m, &partial, a_cols, b_cols, c_cols, i);
        i += 1;
    }
}

/// `c_cols[t][i + s]` = the partial sums of `a_cols[s] . b_cols[t]` added up, plus the products
/// past the last whole chunk.
#[inline(always)]
fn finish<K: Dim, M: Dim, const TA: usize, const TB: usize>(
    k: K,
    m: M,
    partial: &[[[f32; DOT_LANES]; TA]; TB],
    a_cols: [&[f32]; TA],
    b_cols: [&[f32]; TB],
    c_cols: &mut [f32],
    i: usize,
) {
    let depth = k.value();
    let whole = depth - depth % DOT_LANES;
    let columns = c_cols.chunks_exact_mut(m.value());
    for ((c, partial), b) in columns.zip(partial).zip(&b_cols) {
        for ((c, partial), a) in c[i..i + TA].iter_mut().zip(partial).zip(&a_cols) {
            let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
            *c = horizontal_sum(*partial) + tail;
        }
    }
}

/// The `TA` dot products `a_cols[s] . b` over the whole length `K`, one sum each in an FPU
/// register (on the Cortex-M4 there are no vector lanes to fill): one load of `b[k]` serves
/// `TA` multiply-adds, and each column is read in steps of 8 at immediate offsets from its
/// pointer, so each pointer moves once per 8 values (a lone column of [`tr_mul_to`], the
/// query's `G2muᵀ x`).
#[cfg(target_arch = "arm")]
#[inline(never)]
fn scalar_dots<K: Dim, const TA: usize>(k: K, a_cols: [&[f32]; TA], b: &[f32]) -> [f32; TA] {
    let depth = k.value();
    // 8 dot products over the whole steps of 8 are one loop in assembly with `VLDM` loads
    // (`ops::dsp::dots8`), the same sums in the same order; the tail below continues them.
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if TA == 8 && depth >= 8 {
        let whole = depth / 8 * 8;
        let rows: [&[f32]; 8] = core::array::from_fn(|s| &a_cols[s % TA][..whole]);
        if let Some(sums) = super::dsp::dots8(rows, &b[..whole]) {
            let mut acc = [0.0f32; TA];
            for (s, (acc, a)) in acc.iter_mut().zip(&a_cols).enumerate() {
                *acc = sums[s];
                for (&a, &x) in a[whole..depth].iter().zip(&b[whole..depth]) {
                    *acc += a * x;
                }
            }
            return acc;
        }
    }
    let (b_steps, b_tail) = b[..depth].as_chunks::<8>();
    // Each column's steps cut to the length of `b`'s, so `a[c]` needs no bounds check.
    let a: [(&[[f32; 8]], &[f32]); TA] = core::array::from_fn(|s| {
        let (steps, tail) = a_cols[s][..depth].as_chunks::<8>();
        (&steps[..b_steps.len()], tail)
    });
    let mut acc = [0.0f32; TA];
    for (c, x) in b_steps.iter().enumerate() {
        for (acc, (a, _)) in acc.iter_mut().zip(&a) {
            let a = &a[c];
            for l in 0..8 {
                *acc += a[l] * x[l];
            }
        }
    }
    for (acc, (_, a)) in acc.iter_mut().zip(&a) {
        for (&a, &x) in a.iter().zip(b_tail) {
            *acc += a * x;
        }
    }
    acc
}

/// The sum of a vector's lanes, pairwise (log2 VECTOR dependent steps, not VECTOR).
#[inline(always)]
fn horizontal_sum<const L: usize>(mut v: [f32; L]) -> f32 {
    let mut width = L;
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
fn dots<K: Dim, const TA: usize, const TB: usize>(
    k: K,
    a_cols: [&[f32]; TA],
    b_cols: [&[f32]; TB],
) -> [[[f32; DOT_LANES]; TA]; TB] {
    // Each column cut to `K` first, so the casts fold away where `K` is a constant.
    let (depth, chunks) = (k.value(), k.value() / DOT_LANES);
    let a_chunks: [&[[f32; DOT_LANES]]; TA] =
        core::array::from_fn(|s| &columns(&a_cols[s][..depth])[..chunks]);
    let b_chunks: [&[[f32; DOT_LANES]]; TB] =
        core::array::from_fn(|t| &columns(&b_cols[t][..depth])[..chunks]);
    let mut acc = [[[0.0f32; DOT_LANES]; TA]; TB];
    for c in 0..chunks {
        for (acc, b) in acc.iter_mut().zip(&b_chunks) {
            let b_chunk = &b[c];
            for (acc, a) in acc.iter_mut().zip(&a_chunks) {
                let a_chunk = &a[c];
                for l in 0..DOT_LANES {
                    acc[l] = mul_add(a_chunk[l], b_chunk[l], acc[l]);
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
        let bm_all = random::<K, MAX>(seed + 2);
        let start = random::<M, MAX>(seed + 3);
        for n in (1..=9).chain([16, 25, MAX]) {
            let b = bm_all.columns(0, n);
            let (mut got, mut want) = (SMatrix::<f32, M, MAX>::from_element(f32::NAN), start);

            let bm = Mat::from(&bm_all).columns(0, n);
            mul_to(
                &Mat::from(&a),
                &bm,
                &mut MatMut::from(&mut got).columns_mut(0, n),
            );
            a.mul_to(&b, &mut want.columns_mut(0, n));
            close(&got, &want, n, K);

            got = start;
            want = start;
            mul_add_to(
                &Mat::from(&a),
                &bm,
                &mut MatMut::from(&mut got).columns_mut(0, n),
            );
            want.columns_mut(0, n).gemm(1.0, &a, &b, 1.0);
            close(&got, &want, n, K + 1);

            got.fill(f32::NAN);
            tr_mul_to(
                &Mat::from(&at),
                &bm,
                &mut MatMut::from(&mut got).columns_mut(0, n),
            );
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
        mul_to(
            &Mat::from(&a),
            &Mat::from(&b).columns(0, 4),
            &mut MatMut::from(&mut c).columns_mut(0, 5),
        );
        // Equal up to rounding: a fused multiply-add (FMA hosts) rounds once per term.
        let error = (c.fixed_columns::<4>(0) - a * b).amax();
        assert!(error <= 2.0 * f32::EPSILON, "{error}");
        assert_eq!(c.column(4), nalgebra::Vector3::from_element(7.0));
    }
}
