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
//! The sizes count the registers the code really uses, which is not always what `VECTOR`
//! says. With `-C target-cpu=native` on an Intel AVX-512 part, `VECTOR` is 16, but LLVM
//! prefers 256-bit vectors there (`prefer-256-bit`, set for every Intel AVX-512 core): a
//! 16-lane array of sums becomes two `ymm` registers, and the two 512-bit FMA units of a core
//! do half their work. So where the crate is compiled with AVX-512 (`cfg(target_feature =
//! "avx512f")`: native builds on Intel AVX-512 parts and AMD Zen 4 and 5), the register tiles are
//! written with explicit `__m512` vectors and `core::arch` intrinsics (private module `zmm`;
//! its only `unsafe` is the call into its `#[target_feature(enable = "avx512f")]` functions,
//! sound because the whole crate is compiled with that feature, so every CPU that runs it has
//! it). With `-C target-cpu=x86-64-v3` (AVX2, the portable build) `VECTOR` is 8, there are 16
//! `ymm` registers, and the portable loops below run, with the sizes after "AVX2".
//!
//! AVX-512 (32 `zmm` registers):
//! - `A B` ([`mul_to`], [`mul_add_to`]): tiles of [`TILE_VECTORS`] = 4 vectors (64 rows) x
//!   [`TILE_COLS`] = 5 columns: 20 `zmm` sums, 4 of `A`, 1 broadcast of `B`; per `k`, 4 loads
//!   and 5 broadcasts for 20 multiply-adds. In passes over 64 values of `k`: the 64 x 64 block
//!   of `A` a row tile reads in a pass (16 KB) stays in the L1 cache for every tile of
//!   columns. Over the whole depth at once, `A` (160 KB and more) came from L2 once per tile of
//!   columns, which held 512-bit tiles to about 49 GMAC/s on `enc x`; passes of 128 values
//!   reached about 60 (probably because the columns of `A` lie a power of two apart, so a
//!   pass's rows of `A` share few cache sets), 64 was the fastest of 32, 64, 96 and 128 (up
//!   to 75 GMAC/s, of a measured peak of about 87 on one core). Each pass continues the
//!   sums from `C`, so an entry of `A B` is still one fused chain over `k` in order, from
//!   zero, bit for bit the portable loops' on FMA hosts; `C += A B` is that chain started
//!   from `C` (the portable loops, the lone column and the rows past the last 16 add `C` to
//!   the chain at the end).
//! - A lone column: a gemv of 8 `zmm` sums (128 rows), then 1; the same chain as the portable
//!   loop. Bound by streaming `A` from L2 (about 20-27 GMAC/s), it gained 10-20%.
//! - `Aᵀ B` ([`tr_mul_to`]): [`DOT_LANES`] = 16 partial sums per dot product (one `zmm`), in
//!   tiles of [`DOT_A`] x [`DOT_B`] = 4 x 5 (20 sums, 4 of `A`, 1 of `B`; 9 loads per 20
//!   multiply-adds). The tiles of `A` run inside groups of columns of `B` that fit the L1
//!   cache beside them (`DOT_GROUP_BYTES`: 10 columns at the paper's depth of 640, 25 KB, and
//!   a tile's 4 columns of `A`, 10 KB), each group done for all of `A` before the next. With
//!   `B` outside, `A` (655 KB for `G2muᵀ`) came from L2 once per tile of `B`; with all 15
//!   columns of a batch inside (38 KB), `B` came from L2 once per tile of `A` (54.7 -> 47.5
//!   us for the 15-query `G2muᵀ x` with the groups). The 16 lanes of 4 dot products are
//!   added in one register (shuffles of 128-bit quarters, then within them), in the pairwise
//!   order of the portable loops (lanes `l + 8`, then `l + 4`, `l + 2`, `l + 1`). 6 x 4,
//!   7 x 3, 8 x 2 and 10 x 2 tiles were all slower here.
//! - The test `avx512_sums_are_the_documented_chains` checks these sums bit for bit.
//!
//! AVX2 (`x86-64-v3`, 16 `ymm` registers), the portable loops:
//! - [`mul_add_to`]: [`TILE_VECTORS`] = 2 vectors x [`TILE_COLS`] = 5 columns: 10 `ymm` of 16.
//!   Five columns divide the 25 support examples, a 15-query batch and a 5-query call (the
//!   `zmm` tiles use them too).
//! - [`tr_mul_to`]: dot products keep [`DOT_LANES`] = 8 partial sums (one 256-bit register) in
//!   tiles of [`DOT_A`] x [`DOT_B`] = 2 x 5 = 10 of 16 (3 x 5 and 4 x 5 would spill). A 4 x 5
//!   tile of 16-lane sums, used before the `zmm` module, was 40 `ymm` on Intel: spilled, 7 to
//!   9 GMAC/s on `G2muᵀ x`, 69% of a batched query's time.
//! - Every multiply-add is fused (`f32::mul_add`) on FMA hosts: Rust never fuses
//!   `c + a * b` itself, and a separate multiply and add cost Intel cores (two FMA ports, no
//!   separate adders) half their rate; Zen 4 has separate add pipes, which is why the same code
//!   ran near its peak there and at half of it on the Xeon.
//!
//! Measured with `examples/kernels 50` on the shared 2-core Xeon of issue 14 (the numbers
//! and commands are in `docs/benchmarks.md`, "Explicit 512-bit kernels"). The same sizes hold
//! on a 2-core AMD Zen 5 (512-bit pipes; `docs/benchmarks.md`, "AMD EPYC Zen 5"): the paper's
//! 75-query 5-shot task with its support in 0.60 ms native and 0.84 ms `x86-64-v3`, a batched
//! query 0.34 and 0.48 of a single one. There the AVX2 loops were 2-34% faster than the
//! 512-bit tiles at the edge sizes (D = 64, where a tile's setup weighs more than its width);
//! the tiles stay chosen for the paper's sizes, where they are 1.3-1.65x faster. On a 2-core
//! AMD Zen 4 (512-bit instructions on 256-bit pipes; "AMD EPYC Zen 4 ... third session" in
//! `docs/benchmarks.md`) the `zmm` tiles run every product of a paper query at 46-51 GMAC/s,
//! 80-89% of that core's peak, and the task takes 0.88-0.92 ms undisturbed in both builds
//! (the AVX2 loops reach the same rate there, the FMA pipes being 256 bits wide); the edge
//! sizes again run faster in the AVX2 loops (a single edge 1-shot query 1.16 against 1.92 us).
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
pub const TILE_VECTORS: usize = if ZMM { 4 } else { 2 };
/// Whether the kernels compute in explicit 512-bit vectors: x86-64 built with AVX-512 (see
/// "Host tile sizes" in the module doc).
#[cfg(not(target_arch = "arm"))]
const ZMM: bool = cfg!(all(target_arch = "x86_64", target_feature = "avx512f"));
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
/// Bytes of the columns of `B` and of a tile of `A` that [`tr_mul_to`] keeps in the L1 cache
/// at once where [`ZMM`]: `B` is taken in groups of that many columns (a multiple of
/// [`DOT_B`]), each group done for all of `A` before the next.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
const DOT_GROUP_BYTES: usize = 36 * 1024;
/// Partial sums per dot product of [`tr_mul_to`]: one 256-bit register, also where
/// [`VECTOR`] is 16 (see "Host tile sizes" in the module doc).
#[cfg(not(target_arch = "arm"))]
pub const DOT_LANES: usize = if ZMM {
    VECTOR
} else if VECTOR > 8 {
    8
} else {
    VECTOR
};
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
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
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
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    let j = {
        // The whole vectors of rows in 512-bit tiles (`zmm`), the rows past them here.
        let j = zmm::product::<ADD>(rows, depth, n, a, b, c);
        for (b, c) in b[..j * depth]
            .chunks_exact(depth)
            .zip(c[..j * rows].chunks_exact_mut(rows))
        {
            for i in rows / VECTOR * VECTOR..rows {
                row::<M, K, 1, ADD>(m, k, a, b, c, i);
            }
        }
        j
    };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    let j = {
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
        j
    };
    let (b_rest, c_rest) = (&b[j * depth..n * depth], &mut c[j * rows..n * rows]);
    for (b, c) in b_rest
        .chunks_exact(depth)
        .zip(c_rest.chunks_exact_mut(rows))
    {
        let mut i = 0;
        // With 512-bit vectors, `SINGLE_ROWS` and then 16 rows in explicit `__m512` sums.
        #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
        {
            while i + SINGLE_ROWS <= rows {
                zmm::lone::<{ SINGLE_ROWS / 16 }, ADD>(rows, depth, a, b, c, i);
                i += SINGLE_ROWS;
            }
            while i + 16 <= rows {
                zmm::lone::<1, ADD>(rows, depth, a, b, c, i);
                i += 16;
            }
        }
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
/// column not done (not used where [`ZMM`]). Each is done in row tiles of [`TILE_VECTORS`] vectors, then of one vector,
/// then row by row.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "avx512f"),
    allow(dead_code)
)]
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
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "avx512f"),
    allow(dead_code)
)]
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
    // With 512-bit vectors, the tiles of `A` inside groups of columns of `B`: the [`DOT_A`]
    // columns of `A` (10 KB at the paper's depth of 640) and a group of `B` (10 columns, 25
    // KB) stay in the L1 cache together; with `B` outside, `A` (655 KB for `G2muᵀ`) came from
    // L2 once per tile of `B`, which the 512-bit sums outran.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        let rows = rows.min(a.len() / depth);
        let group = (DOT_GROUP_BYTES / (4 * depth)).saturating_sub(DOT_A) / DOT_B * DOT_B;
        let mut j0 = 0;
        while j0 < n {
            let j1 = n.min(j0 + group.max(DOT_B));
            let mut i = 0;
            while i + DOT_A <= rows {
                dot_columns::<K, M, DOT_A>(k, m, j0..j1, a, b, c, i);
                i += DOT_A;
            }
            while i < rows {
                dot_columns::<K, M, 1>(k, m, j0..j1, a, b, c, i);
                i += 1;
            }
            j0 = j1;
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        let mut j = dot_tiles::<K, M, DOT_B>(k, m, a, b, c, 0, n);
    if DOT_B > 4 {
        j = dot_tiles::<K, M, 4>(k, m, a, b, c, j, n);
    }
        if DOT_B > 2 {
            j = dot_tiles::<K, M, 2>(k, m, a, b, c, j, n);
        }
        dot_tiles::<K, M, 1>(k, m, a, b, c, j, n);
    }
}

/// Rows `i..i + TA` of the first `n` columns of `c = aᵀ b`: tiles of [`DOT_B`] columns of `b`,
/// then of 4, 2 and 1 (the loop order where [`ZMM`], see [`tr_product`]).
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
fn dot_columns<K: Dim, M: Dim, const TA: usize>(
    k: K,
    m: M,
    cols: core::ops::Range<usize>,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    i: usize,
) {
    let a_cols = b_columns::<TA>(&a[i * k.value()..], k.value());
    let n = cols.end;
    let mut j = dot_column_tiles::<K, M, TA, DOT_B>(k, m, n, a_cols, b, c, i, cols.start);
    j = dot_column_tiles::<K, M, TA, 4>(k, m, n, a_cols, b, c, i, j);
    j = dot_column_tiles::<K, M, TA, 2>(k, m, n, a_cols, b, c, i, j);
    dot_column_tiles::<K, M, TA, 1>(k, m, n, a_cols, b, c, i, j);
}

/// Tiles of `TB` columns from column `j` of rows `i..i + TA` of `c = aᵀ b` while a whole
/// tile fits before `n`; returns the first column not done.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dot_column_tiles<K: Dim, M: Dim, const TA: usize, const TB: usize>(
    k: K,
    m: M,
    n: usize,
    a_cols: [&[f32]; TA],
    b: &[f32],
    c: &mut [f32],
    i: usize,
    mut j: usize,
) -> usize {
    let (depth, rows) = (k.value(), m.value());
    let whole = depth - depth % VECTOR;
    while j + TB <= n {
        let b_cols = b_columns::<TB>(&b[j * depth..], depth);
        let sums = zmm::dots(a_cols.map(|a| &a[..whole]), b_cols.map(|b| &b[..whole]));
        let columns = c[j * rows..(j + TB) * rows].chunks_exact_mut(rows);
        for ((c, sums), b) in columns.zip(&sums).zip(&b_cols) {
            for ((c, &sum), a) in c[i..i + TA].iter_mut().zip(sums).zip(&a_cols) {
                let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
                *c = sum + tail;
            }
        }
        j += TB;
    }
    j
}

/// Tiles of `TB` columns from column `j` while a whole tile fits before `n`; returns the first
/// column not done.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
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
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
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
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
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
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
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
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
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

/// The register tiles of [`mul_to`], [`mul_add_to`] and [`tr_mul_to`] in explicit 512-bit
/// vectors (`__m512`), for x86-64 builds with AVX-512: LLVM would split 16-lane arrays into two
/// 256-bit halves on Intel (see "Host tile sizes" in the module doc). Every multiply-add is
/// fused. Loads and stores are `bytemuck` casts between `[f32; 16]` and `__m512`; the
/// intrinsics are safe inside the functions that enable `avx512f`, and the only `unsafe` is
/// the call into those two functions.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[allow(unsafe_code)]
mod zmm {
    use core::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_permute_ps, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_shuffle_f32x4,
    };
    use core::ops::Range;

    /// Lanes of a `__m512`.
    const LANES: usize = 16;
    /// Vectors of rows of a register tile of `A B` (see [`super::TILE_VECTORS`]).
    const MV: usize = super::TILE_VECTORS;
    /// Columns of a register tile of `A B` (see [`super::TILE_COLS`]).
    const NR: usize = super::TILE_COLS;
    /// Values of `k` per pass over `C`: the `MV x 16` rows of `A` a row tile reads in a pass
    /// (32 KB) stay in the L1 cache for every tile of columns.
    const KC: usize = 64;

    /// `c (+)= a b` (`a`: `rows x depth`, column-major) for the whole vectors of rows of the
    /// first columns of `b`/`c`: all but the last where `n` leaves one past the tiles of
    /// [`NR`], 4, 3 and 2 columns (that one is a gemv, `super::lone`). Returns the columns
    /// done. In passes over `k` of [`KC`] values: in each, every tile of rows and columns
    /// continues its sums from `c` (from zero in the first pass of `c = a b`), so each entry
    /// of `c = a b` is the one fused chain `a_0 b_0 + a_1 b_1 + ...` in the order of `k`, as in
    /// the portable loops, and each of `c += a b` is that chain started from `c`.
    pub(super) fn product<const ADD: bool>(
        rows: usize,
        depth: usize,
        n: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> usize {
        let tiled = if n % NR == 1 { n - 1 } else { n };
        let whole = rows / LANES * LANES;
        if tiled == 0 || whole == 0 {
            return tiled;
        }
        let mut k0 = 0;
        while k0 < depth {
            let ks = k0..depth.min(k0 + KC);
            let from_c = ADD || k0 > 0;
            let mut i = 0;
            while i + MV * LANES <= whole {
                column_tiles::<MV>(rows, depth, tiled, a, b, c, i, ks.clone(), from_c);
                i += MV * LANES;
            }
            while i < whole {
                column_tiles::<1>(rows, depth, tiled, a, b, c, i, ks.clone(), from_c);
                i += LANES;
            }
            k0 = ks.end;
        }
        tiled
    }

    /// Rows `i..i + V 16` of the first `tiled` columns over `ks`: tiles of [`NR`] columns, then
    /// one of 4, 3 or 2.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn column_tiles<const V: usize>(
        rows: usize,
        depth: usize,
        tiled: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        i: usize,
        ks: Range<usize>,
        from_c: bool,
    ) {
        let mut j = 0;
        while j + NR <= tiled {
            tile::<NR, V>(rows, depth, a, b, c, i, j, ks.clone(), from_c);
            j += NR;
        }
        match tiled - j {
            4 => tile::<4, V>(rows, depth, a, b, c, i, j, ks, from_c),
            3 => tile::<3, V>(rows, depth, a, b, c, i, j, ks, from_c),
            2 => tile::<2, V>(rows, depth, a, b, c, i, j, ks, from_c),
            _ => {}
        }
    }

    /// One register tile: rows `i..i + V 16` of columns `j..j + TN` of `c`, continued (or
    /// started, unless `from_c`) over `ks`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn tile<const TN: usize, const V: usize>(
        rows: usize,
        depth: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        i: usize,
        j: usize,
        ks: Range<usize>,
        from_c: bool,
    ) {
        let a = &a[ks.start * rows..ks.end * rows];
        let b_cols: [&[f32]; TN] = core::array::from_fn(|t| &b[(j + t) * depth..][ks.clone()]);
        let c = &mut c[j * rows..(j + TN) * rows];
        // SAFETY: the one requirement of calling a function that enables `avx512f` is a CPU
        // that has it; this module exists only where the whole crate is compiled with it
        // (`cfg(target_feature = "avx512f")`), so every CPU that runs this code has it.
        unsafe { tile_avx512::<TN, V>(rows, a, b_cols, c, i, from_c) }
    }

    /// [`tile`] with `avx512f` enabled: `a` holds the columns `ks` of `A`, `b_cols` the
    /// values `ks` of each column of `B`, `c` the `TN` columns of `C`.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    fn tile_avx512<const TN: usize, const V: usize>(
        rows: usize,
        a: &[f32],
        b_cols: [&[f32]; TN],
        c: &mut [f32],
        i: usize,
        from_c: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); V]; TN];
        if from_c {
            for (acc, c) in acc.iter_mut().zip(c.chunks_exact(rows)) {
                let (c, _) = c[i..i + V * LANES].as_chunks::<LANES>();
                for (s, &c) in acc.iter_mut().zip(c) {
                    *s = bytemuck::cast(c);
                }
            }
        }
        let depth = a.len() / rows;
        let b_cols = b_cols.map(|b| &b[..depth]);
        for (a_col, k) in a.chunks_exact(rows).zip(0..depth) {
            let (a_tile, _) = a_col[i..i + V * LANES].as_chunks::<LANES>();
            let a_v: [__m512; V] = core::array::from_fn(|v| bytemuck::cast(a_tile[v]));
            for (acc, b_col) in acc.iter_mut().zip(&b_cols) {
                let b_kj = _mm512_set1_ps(b_col[k]);
                for (s, &a_v) in acc.iter_mut().zip(&a_v) {
                    *s = _mm512_fmadd_ps(a_v, b_kj, *s);
                }
            }
        }
        for (acc, c) in acc.iter().zip(c.chunks_exact_mut(rows)) {
            let (c, _) = c[i..i + V * LANES].as_chunks_mut::<LANES>();
            for (&s, c) in acc.iter().zip(c) {
                *c = bytemuck::cast(s);
            }
        }
    }

    /// Rows `i..i + V 16` of a lone column, `c (+)= a b` (`a`: `rows x depth`): a gemv with
    /// `V` vectors of sums, each entry's sum the fused chain over `k` in order from zero,
    /// as in [`super::lone`].
    #[inline(always)]
    pub(super) fn lone<const V: usize, const ADD: bool>(
        rows: usize,
        depth: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        i: usize,
    ) {
        let a = &a[..rows * depth];
        let b = &b[..depth];
        // SAFETY: as in `tile`: `avx512f` is enabled for the whole crate.
        let acc = unsafe { lone_avx512::<V>(rows, a, b, i) };
        let (c, _) = c[i..i + V * LANES].as_chunks_mut::<LANES>();
        for (c, acc) in c.iter_mut().zip(&acc) {
            for (c, &s) in c.iter_mut().zip(acc) {
                *c = if ADD { *c + s } else { s };
            }
        }
    }

    /// [`lone`]'s sums, with `avx512f` enabled.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    fn lone_avx512<const V: usize>(
        rows: usize,
        a: &[f32],
        b: &[f32],
        i: usize,
    ) -> [[f32; LANES]; V] {
        let mut acc = [_mm512_setzero_ps(); V];
        for (a_col, &b_k) in a.chunks_exact(rows).zip(b) {
            let (a_tile, _) = a_col[i..i + V * LANES].as_chunks::<LANES>();
            let b_k = _mm512_set1_ps(b_k);
            for (s, &a) in acc.iter_mut().zip(a_tile) {
                *s = _mm512_fmadd_ps(bytemuck::cast(a), b_k, *s);
            }
        }
        acc.map(bytemuck::cast)
    }

    /// The `TA x TB` dot products `a_cols[s] . b_cols[t]` (all as long as `a_cols[0]`, a
    /// multiple of 16), returned `[t][s]`: 16 partial sums each (lane `l`: the products at
    /// positions `l` mod 16, in order, fused), then added up pairwise as
    /// `super::horizontal_sum` does (lanes `l` and `l + 8`, then `l + 4`, `l + 2`, `l + 1`),
    /// four dot products at a time in one register.
    #[inline(always)]
    pub(super) fn dots<const TA: usize, const TB: usize>(
        a_cols: [&[f32]; TA],
        b_cols: [&[f32]; TB],
    ) -> [[f32; TA]; TB] {
        let len = a_cols.first().map_or(0, |a| a.len());
        let a_chunks = a_cols.map(|a| a[..len].as_chunks::<LANES>().0);
        let b_chunks = b_cols.map(|b| b[..len].as_chunks::<LANES>().0);
        // SAFETY: as in `tile`: `avx512f` is enabled for the whole crate.
        unsafe { dots_avx512::<TA, TB>(a_chunks, b_chunks) }
    }

    /// [`dots`] with `avx512f` enabled.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    fn dots_avx512<const TA: usize, const TB: usize>(
        a_chunks: [&[[f32; LANES]]; TA],
        b_chunks: [&[[f32; LANES]]; TB],
    ) -> [[f32; TA]; TB] {
        let chunks = a_chunks.first().map_or(0, |a| a.len());
        let a_chunks = a_chunks.map(|a| &a[..chunks]);
        let b_chunks = b_chunks.map(|b| &b[..chunks]);
        let mut acc = [[_mm512_setzero_ps(); TA]; TB];
        for c in 0..chunks {
            let a_v: [__m512; TA] = core::array::from_fn(|s| bytemuck::cast(a_chunks[s][c]));
            for (acc, b) in acc.iter_mut().zip(&b_chunks) {
                let b_v: __m512 = bytemuck::cast(b[c]);
                for (s, &a_v) in acc.iter_mut().zip(&a_v) {
                    *s = _mm512_fmadd_ps(a_v, b_v, *s);
                }
            }
        }
        let mut sums = [[0.0; TA]; TB];
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            let (fours, rest) = acc.as_chunks::<4>();
            let (sums4, sums_rest) = sums.split_at_mut(fours.len() * 4);
            for (sums, &[v0, v1, v2, v3]) in sums4.chunks_exact_mut(4).zip(fours) {
                sums.copy_from_slice(&sum4(v0, v1, v2, v3));
            }
            for (sum, &v) in sums_rest.iter_mut().zip(rest) {
                *sum = sum4(v, v, v, v)[0];
            }
        }
        sums
    }

    /// The sums of the lanes of 4 vectors, each in the order of `super::horizontal_sum`:
    /// `u[l] = v[l] + v[l + 8]`, then `u[l] + u[l + 4]`, then `+ [l + 2]`, then `+ [l + 1]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sum4(v0: __m512, v1: __m512, v2: __m512, v3: __m512) -> [f32; 4] {
        // Quarters (128 bits): [v0 q0, v0 q1, v1 q0, v1 q1] + [v0 q2, v0 q3, v1 q2, v1 q3].
        let x01 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(v0, v1),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(v0, v1),
        );
        let x23 = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(v2, v3),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(v2, v3),
        );
        // Quarter s: vector s's lanes l + (l + 4), l < 4.
        let y = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x01, x23),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x01, x23),
        );
        let z = _mm512_add_ps(y, _mm512_permute_ps::<0b01_00_11_10>(y));
        let w = _mm512_add_ps(z, _mm512_permute_ps::<0b10_11_00_01>(z));
        let w: [f32; LANES] = bytemuck::cast(w);
        [w[0], w[4], w[8], w[12]]
    }

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

    /// On AVX-512 builds every entry is exactly the sum the module doc names ("Host tile
    /// sizes"), bit for bit: `a b` one fused chain over `k` from zero; `c += a b` that chain
    /// started from `c` in the tiles, `c` plus the chain in a lone column and in the rows past
    /// the last 16; `aᵀ b` 16 fused lanes added pairwise, plus the products past the last 16.
    /// Sizes with rows and a depth past every tile, pass and group (16 x 8 + 5 rows, depth
    /// 650: 10 passes of `k` and a tail of 10 past the last 16; groups of 10 columns of `B`).
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    #[test]
    fn avx512_sums_are_the_documented_chains() {
        const M: usize = 133;
        const K: usize = 650;
        let a = random::<M, K>(20);
        let at = random::<K, M>(21);
        let b = random::<K, MAX>(22);
        let start = random::<M, MAX>(23);
        let chain = |i: usize, j: usize, from: f32| {
            (0..K).fold(from, |s, k| a[(i, k)].mul_add(b[(k, j)], s))
        };
        let dot = |i: usize, j: usize| {
            let whole = K / 16 * 16;
            let mut lanes = [0.0f32; 16];
            for k in 0..whole {
                lanes[k % 16] = at[(k, i)].mul_add(b[(k, j)], lanes[k % 16]);
            }
            for width in [8, 4, 2, 1] {
                for l in 0..width {
                    lanes[l] += lanes[l + width];
                }
            }
            let tail: f32 = (whole..K).map(|k| at[(k, i)] * b[(k, j)]).sum();
            lanes[0] + tail
        };
        for n in [1, 2, 6, 15, 25, MAX] {
            let bm = Mat::from(&b).columns(0, n);
            let tiled = if n % TILE_COLS == 1 { n - 1 } else { n };
            let (mut prod, mut sum, mut dots) = (start, start, start);
            mul_to(&Mat::from(&a), &bm, &mut MatMut::from(&mut prod).columns_mut(0, n));
            mul_add_to(&Mat::from(&a), &bm, &mut MatMut::from(&mut sum).columns_mut(0, n));
            tr_mul_to(&Mat::from(&at), &bm, &mut MatMut::from(&mut dots).columns_mut(0, n));
            for j in 0..n {
                for i in 0..M {
                    let c = start[(i, j)];
                    let want_sum = if j < tiled && i < M / 16 * 16 {
                        chain(i, j, c)
                    } else {
                        c + chain(i, j, 0.0)
                    };
                    let (p, s, d) = (prod[(i, j)], sum[(i, j)], dots[(i, j)]);
                    assert_eq!(p.to_bits(), chain(i, j, 0.0).to_bits(), "a b ({i}, {j}), {n}");
                    assert_eq!(s.to_bits(), want_sum.to_bits(), "c + a b ({i}, {j}), {n}");
                    assert_eq!(d.to_bits(), dot(i, j).to_bits(), "aT b ({i}, {j}), {n}");
                }
            }
        }
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
