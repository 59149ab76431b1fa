//! The numerical operations the model is made of, on column-major matrices.
//!
//! # Orientation
//! nalgebra is column-major, AWGIM.md writes examples as rows (`x W`). The engine keeps both
//! readable by storing every example (support row, query, activation) as a **column**:
//! `M` rows of width `W` are a `W x M` matrix whose columns are the rows. A dense layer `W`
//! stored `[in][out]` row-major in the model file is, seen column-major, the `out x in` matrix
//! `Wᵀ` whose columns are the rows of `W`, borrowed in place as a [`Weight`]; AWGIM.md's
//! `y = x W` is then `y = Wᵀ x`, computed as `sum_k x[k] Wᵀ[:, k]`: every inner loop runs down
//! contiguous columns.
//!
//! # Sizes: one implementation for static and run-time sizes
//! Every size is a nalgebra dimension type ([`Dim`]): `Const<N>` where the sizes are compiled
//! in (the device, the engine's aliases), `Dyn` where they come from the model file at run
//! time (`trainer infer`). The matrices are [`Mat`] and [`MatMut`]: a contiguous column-major
//! slice with its two dimensions. nalgebra views are made from them where nalgebra computes
//! ([`Mat::view`]); the kernels read the slices. (A nalgebra view with `Dyn` rows cannot give
//! its slice back without `unsafe`, hence the slice is what is kept.) With `Const` sizes every
//! `value()` is a constant after monomorphisation, so the device's code is what it was with
//! const generics.
//!
//! # Modules
//! - [`linear`]: matrix products. The large ones (weights times a batch of columns) use
//!   register-tiled kernels; the module documents why and by how much.
//! - [`layer_norm`]: per-column layer normalisation.
//! - [`softmax`]: the softmax of each column, with a vectorisable `exp`.
//! - [`attention`]: scaled dot-product attention of one head over projected keys and values.
//! - [`int8`]: products of int8 weights with f32 columns, accumulated in i32 (the int8
//!   models' big products); the module states the error against the dequantised product.
//!   On Arm (`thumbv7em-none-eabihf`) its inner loop uses the DSP extension's `SMLALD`,
//!   `SXTB16` and `SMLAD` on rows stored in pairs, in assembly, as do the f32 products of one
//!   column (`VLDM` loads) and the logits' sums: module `dsp`, with `linear`'s AVX-512 module
//!   the engine's only `unsafe` code, each loop behind a safe function that checks the
//!   lengths it relies on. `docs/arm-kernels.md` shows the device's inner loops and what they
//!   cost per multiply-add (measured by `examples/device-kernels` on QEMU).
//!
//! Everything else is nalgebra's own, on views: element-wise maps (`zip_zip_apply`,
//! scaling), the small per-head products (`gemm`), transposes, `imax`, and the analysis-only
//! `W`. Where a reduction is hand-written ([`relu_sum_dot`] here, the statistics of layer norm
//! and softmax) it is because nalgebra's is one sequential chain of additions or builds
//! temporaries, and the difference shows in `examples/measure.rs`; the comparisons are in
//! `examples/kernels.rs`.

pub mod attention;
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
#[allow(unsafe_code)]
mod dsp;
pub mod int8;
pub mod layer_norm;
pub mod linear;
pub mod softmax;

use nalgebra::{Const, Dim, Dyn, MatrixView, MatrixViewMut, SMatrix};

/// A weight borrowed in place from the model file: `R x C`, column-major, contiguous. The
/// file's `[C][R]` row-major dense layer `W` is this view of `Wᵀ`.
pub type Weight<'a, R, C> = Mat<'a, R, C>;

/// An `R x C` column-major matrix over a contiguous slice of exactly `R C` values.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, R: Dim, C: Dim> {
    data: &'a [f32],
    nrows: R,
    ncols: C,
}

/// A mutable [`Mat`].
#[derive(Debug)]
pub struct MatMut<'a, R: Dim, C: Dim> {
    data: &'a mut [f32],
    nrows: R,
    ncols: C,
}

impl<'a, R: Dim, C: Dim> Mat<'a, R, C> {
    /// `data` as an `nrows x ncols` matrix; `None` unless it holds exactly `nrows ncols` values.
    pub fn from_slice(data: &'a [f32], nrows: R, ncols: C) -> Option<Self> {
        (Some(data.len()) == nrows.value().checked_mul(ncols.value())).then_some(Self {
            data,
            nrows,
            ncols,
        })
    }

    /// The entries, column after column.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// The row dimension.
    pub fn nrows(&self) -> R {
        self.nrows
    }

    /// The column dimension.
    pub fn ncols(&self) -> C {
        self.ncols
    }

    /// Columns `start..start + n`, cut to the columns there are.
    pub fn columns(&self, start: usize, n: usize) -> Mat<'a, R, Dyn> {
        let (data, n) = column_range(self.data, self.nrows.value(), start, n);
        Mat {
            data,
            nrows: self.nrows,
            ncols: Dyn(n),
        }
    }

    /// Column `j` (empty past the last).
    pub fn column(&self, j: usize) -> &'a [f32] {
        self.columns(j, 1).data
    }

    /// The nalgebra view of this matrix.
    pub fn view(&self) -> MatrixView<'a, f32, R, C> {
        MatrixView::from_slice_generic(self.data, self.nrows, self.ncols)
    }
}

impl<'a, R: Dim, C: Dim> MatMut<'a, R, C> {
    /// `data` as an `nrows x ncols` matrix; `None` unless it holds exactly `nrows ncols` values.
    pub fn from_slice(data: &'a mut [f32], nrows: R, ncols: C) -> Option<Self> {
        (Some(data.len()) == nrows.value().checked_mul(ncols.value())).then_some(Self {
            data,
            nrows,
            ncols,
        })
    }

    /// The entries, column after column.
    pub fn as_slice(&self) -> &[f32] {
        self.data
    }

    /// The values, for as long as the matrix borrowed them.
    pub fn into_slice(self) -> &'a [f32] {
        self.data
    }

    /// The entries, column after column.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        self.data
    }

    /// The row dimension.
    pub fn nrows(&self) -> R {
        self.nrows
    }

    /// The column dimension.
    pub fn ncols(&self) -> C {
        self.ncols
    }

    /// A read-only reborrow.
    pub fn rb(&self) -> Mat<'_, R, C> {
        Mat {
            data: self.data,
            nrows: self.nrows,
            ncols: self.ncols,
        }
    }

    /// A mutable reborrow.
    pub fn rb_mut(&mut self) -> MatMut<'_, R, C> {
        MatMut {
            data: self.data,
            nrows: self.nrows,
            ncols: self.ncols,
        }
    }

    /// Columns `start..start + n`, cut to the columns there are.
    pub fn columns_mut(&mut self, start: usize, n: usize) -> MatMut<'_, R, Dyn> {
        let rows = self.nrows.value();
        let first = start.saturating_mul(rows).min(self.data.len());
        let n = n.min(self.data.len().saturating_sub(first) / rows.max(1));
        let data = &mut self.data[first..];
        let (data, _) = data.split_at_mut((n * rows).min(data.len()));
        MatMut {
            data,
            nrows: self.nrows,
            ncols: Dyn(n),
        }
    }

    /// The columns, each a mutable slice of `R` values.
    pub fn column_slices_mut(&mut self) -> core::slice::ChunksExactMut<'_, f32> {
        self.data.chunks_exact_mut(self.nrows.value().max(1))
    }

    /// The nalgebra view of this matrix.
    pub fn view(&self) -> MatrixView<'_, f32, R, C> {
        MatrixView::from_slice_generic(self.data, self.nrows, self.ncols)
    }

    /// The mutable nalgebra view of this matrix.
    pub fn view_mut(&mut self) -> MatrixViewMut<'_, f32, R, C> {
        MatrixViewMut::from_slice_generic(self.data, self.nrows, self.ncols)
    }
}

impl<'a, const R: usize, const C: usize> From<&'a SMatrix<f32, R, C>>
    for Mat<'a, Const<R>, Const<C>>
{
    fn from(m: &'a SMatrix<f32, R, C>) -> Self {
        Self {
            data: m.as_slice(),
            nrows: Const,
            ncols: Const,
        }
    }
}

impl<'a, const R: usize, const C: usize> From<&'a mut SMatrix<f32, R, C>>
    for MatMut<'a, Const<R>, Const<C>>
{
    fn from(m: &'a mut SMatrix<f32, R, C>) -> Self {
        Self {
            data: m.as_mut_slice(),
            nrows: Const,
            ncols: Const,
        }
    }
}

/// Columns `start..start + n` of a column-major slice with `rows` rows, cut to those there
/// are, and their number.
fn column_range(data: &[f32], rows: usize, start: usize, n: usize) -> (&[f32], usize) {
    let first = start.saturating_mul(rows).min(data.len());
    let rest = &data[first..];
    let n = n.min(rest.len() / rows.max(1));
    (&rest[..(n * rows).min(rest.len())], n)
}

/// f32 lanes of the target's vector registers, as far as the compiler is told about them
/// (`-C target-cpu=...`): 16 with AVX-512, 8 with AVX, else 4 (SSE2, NEON, and the Cortex-M
/// FPU, whose 32 single-precision registers hold a few such groups). Kernels and reductions
/// keep this many independent partial sums so the compiler can vectorise them.
#[cfg(target_feature = "avx512f")]
pub const VECTOR: usize = 16;
/// f32 lanes of the target's vector registers (see the AVX-512 variant).
#[cfg(all(target_feature = "avx", not(target_feature = "avx512f")))]
pub const VECTOR: usize = 8;
/// f32 lanes of the target's vector registers (see the AVX-512 variant).
#[cfg(not(any(target_feature = "avx", target_feature = "avx512f")))]
pub const VECTOR: usize = 4;

/// Whether every entry is finite (no infinity, no NaN). Branch-free, so it vectorises (a
/// short-circuiting `iter().all(..)` does not).
#[inline]
pub fn all_finite(x: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    let non_finite = x.iter().fold(0u32, |acc, v| {
        acc | u32::from(v.to_bits() & EXPONENT == EXPONENT)
    });
    non_finite == 0
}

/// `max(v, 0)`, NaN to 0: the ReLU. On Arm a compare and a select (`relu_select`): the
/// Cortex-M4's FPU has no maximum instruction (`VMAXNM` is FPv5), so `f32::max` is a call to
/// libm's `fmaxf`, about 16 instructions (21,000 per paper query were spent in `fmaxf`,
/// `firmware/scripts/profile.py`). Elsewhere `f32::max`, as before (the two differ at most in
/// the sign of a zero).
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    #[cfg(target_arch = "arm")]
    return relu_select(v);
    #[cfg(not(target_arch = "arm"))]
    return v.max(0.0);
}

/// `f32::max(a, b)` (a NaN gives the other value), without the `fmaxf` call on Arm
/// (`max_select`; see [`relu`]).
#[inline(always)]
pub(crate) fn max(a: f32, b: f32) -> f32 {
    #[cfg(target_arch = "arm")]
    return max_select(a, b);
    #[cfg(not(target_arch = "arm"))]
    return a.max(b);
}

/// [`relu`] as a compare and a select.
#[cfg_attr(not(any(target_arch = "arm", test)), allow(dead_code))]
#[inline(always)]
fn relu_select(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// [`max`] as a compare and a select.
#[cfg_attr(not(any(target_arch = "arm", test)), allow(dead_code))]
#[inline(always)]
fn max_select(a: f32, b: f32) -> f32 {
    if b > a || a.is_nan() {
        b
    } else {
        a
    }
}

/// `sum_g max(a_g + b_g, 0) c_g` over the shortest length: a logit `h_i . (G2muᵀ x)` from the
/// two halves of the generator's first layer (`a`, `b`) and `G2muᵀ x` (`c`), without forming
/// `h_i`. One fused pass with [`VECTOR`] partial sums: nalgebra's
/// `(a + b).map(relu).dot(&c)` builds two temporary vectors per class and query (5 classes x
/// 15 queries: 20.7 vs 1.7 us, `examples/kernels.rs`; it would add 14% to a batched query).
///
/// On Arm, `max(v, 0) c` is summed as `(v + |v|) c` and the sum halved: two instructions
/// (`VABS`, `VADD`) where the ReLU's compare and select take four; doubling is exact, so the
/// sum is the same but where a product is subnormal or overflows (and a NaN stays NaN).
/// With the loop in assembly (`VLDM` loads): 14,130 -> 6,240 instructions for a query's 5
/// logits (paper sizes, `examples/device-kernels`,
/// which checks it bit for bit against the sums with the ReLU).
#[inline]
pub fn relu_sum_dot(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    #[cfg(target_arch = "arm")]
    {
        let n = a.len().min(b.len()).min(c.len());
        // The whole groups of 8 in assembly (`dsp::relu_dots4`, `VECTOR` = 4 partial sums,
        // the same steps) on the DSP targets, the rest here.
        #[allow(unused_mut)]
        let (mut acc, mut done) = ([0.0f32; VECTOR], 0);
        #[cfg(target_abi = "eabihf")]
        if let Some(sums) = dsp::relu_dots4(a, b, c) {
            (acc, done) = (sums, n / 8 * 8);
        }
        let chunks = a[done..n]
            .chunks_exact(VECTOR)
            .zip(b[done..n].chunks_exact(VECTOR))
            .zip(c[done..n].chunks_exact(VECTOR));
        for ((ca, cb), cc) in chunks {
            for l in 0..VECTOR {
                let v = ca[l] + cb[l];
                acc[l] += (v + v.abs()) * cc[l];
            }
        }
        let full = done + (n - done) / VECTOR * VECTOR;
        let tail: f32 = (full..n).map(|g| relu(a[g] + b[g]) * c[g]).sum();
        #[allow(clippy::needless_return)]
        return 0.5 * acc.iter().sum::<f32>() + tail;
    }
    #[cfg(not(target_arch = "arm"))]
    relu_sum_dot_portable(a, b, c)
}

/// [`relu_sum_dot`] with the ReLU itself (every target but Arm).
#[cfg(not(target_arch = "arm"))]
#[inline(always)]
fn relu_sum_dot_portable(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0.0f32; VECTOR];
    let chunks = a
        .chunks_exact(VECTOR)
        .zip(b.chunks_exact(VECTOR))
        .zip(c.chunks_exact(VECTOR));
    for ((ca, cb), cc) in chunks {
        for l in 0..VECTOR {
            acc[l] += relu(ca[l] + cb[l]) * cc[l];
        }
    }
    let n = a.len().min(b.len()).min(c.len());
    let full = n / VECTOR * VECTOR;
    let tail: f32 = (full..n).map(|g| relu(a[g] + b[g]) * c[g]).sum();
    acc.iter().sum::<f32>() + tail
}

/// `sum_i f(x_i)` with [`VECTOR`] partial sums, so it vectorises (nalgebra's `sum()` is one
/// sequential chain of additions). Its rounding differs from a sequential sum's, not its
/// accuracy.
pub(crate) fn sum_by(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; VECTOR];
    let mut chunks = x.chunks_exact(VECTOR);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// `max_i f(x_i)` (at least `floor`) with [`VECTOR`] partial maxima; NaNs are ignored.
pub(crate) fn max_by(x: &[f32], floor: f32, f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [floor; VECTOR];
    let mut chunks = x.chunks_exact(VECTOR);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = max(*a, f(v));
        }
    }
    let tail = chunks.remainder().iter().fold(floor, |m, &v| max(m, f(v)));
    acc.iter().fold(tail, |m, &v| max(m, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions() {
        let x: [f32; 37] = core::array::from_fn(|i| i as f32 - 20.0);
        assert_eq!(
            sum_by(&x, |v| v),
            (0..37).map(|i| i as f32 - 20.0).sum::<f32>()
        );
        assert_eq!(max_by(&x, 0.0, f32::abs), 20.0);
        assert_eq!(max_by(&x, f32::NEG_INFINITY, |v| v), 16.0);
        assert!(all_finite(&x));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut y = x;
            y[33] = bad;
            assert!(!all_finite(&y));
        }
        assert!(all_finite(&[f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45]));
    }

    #[test]
    fn relu_and_max_select_are_f32_max() {
        // Equal as numbers (a zero's sign may differ), NaN where f32::max gives NaN.
        let same = |x: f32, y: f32| x == y || (x.is_nan() && y.is_nan());
        let values = [
            -2.5f32,
            -0.0,
            0.0,
            1e-45,
            3.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for v in values {
            assert!(same(relu_select(v), v.max(0.0)), "{v}");
            for w in values {
                assert!(same(max_select(v, w), v.max(w)), "{v} {w}");
            }
        }
        assert_eq!(relu_select(f32::NAN), 0.0);
        assert_eq!(max_select(f32::NAN, 2.0), 2.0);
        assert_eq!(max_select(2.0, f32::NAN), 2.0);
    }

    #[test]
    fn relu_sum_dot_matches_its_definition() {
        let a: [f32; 37] = core::array::from_fn(|i| (i as f32 * 0.37).sin());
        let b: [f32; 37] = core::array::from_fn(|i| (i as f32 * 0.11).cos() - 0.5);
        let c: [f32; 37] = core::array::from_fn(|i| i as f32 * 0.01 - 0.2);
        let want: f32 = (0..37).map(|g| (a[g] + b[g]).max(0.0) * c[g]).sum();
        assert!((relu_sum_dot(&a, &b, &c) - want).abs() < 1e-5);
        assert_eq!(
            relu_sum_dot(&a[..3], &b, &c),
            (0..3).map(|g| (a[g] + b[g]).max(0.0) * c[g]).sum::<f32>()
        );
    }
}
