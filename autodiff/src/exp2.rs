//! `2^x` on 8 floats at a time, bit for bit what this process's `f32::exp2` returns.
//!
//! Why hand-written: luminal's `exp` is `exp2(x * log2 e)`, and the training step takes it of
//! every element of the reparameterisation's `u` (`[B, M, N, D]`: 15.4 M values a paper 1-shot
//! step). `f32::exp2` is a call into the C library per element: 45 ms a 1-shot step on both
//! cores of the Zen 3 machine (docs/training-profile.md), about 20 cycles an element, where
//! the vector code below takes a few.
//!
//! What it computes: the algorithm of glibc's `exp2f` (since 2.28, from Arm's optimized
//! routines; musl and others use it too): `x = k/32 + r`, `|r| <= 1/64`, in double precision,
//! `2^(k/32)` from a 32-entry table with `k / 32`'s integer part added to its exponent, and
//! `2^r ~= 1 + C2 r + C1 r^2 + C0 r^3` evaluated as `(C0 r + C1) r^2 + (C2 r + 1)`, the product
//! with the table value rounded once to `f32`. On a CPU with FMA glibc runs the same source
//! compiled with FMA contraction (its `__exp2f_fma`), whose three multiply-adds are fused;
//! so are ours. Inputs with `|x| >= 128`, infinities and NaNs (glibc's special cases: over- and
//! underflow, errno) go to `f32::exp2` itself.
//!
//! Tested against: `f32::exp2` on every one of the 2^32 bit patterns
//! (`exp2_matches_libm_on_every_float`, ignored by default: 30 s in release on the two cores of
//! the Zen 3 machine, glibc 2.36, 2026-12-02: no value differs) and on a stride through them
//! plus the edges in the normal suite. Guarded at run time: [`enabled`]
//! compares the two on 65,536 values spread over the whole range the first time it is asked,
//! and a C library whose `exp2f` is another algorithm (one value different) keeps the scalar
//! calls for the whole process, so training stays bit-identical to what it was on that machine.

use std::sync::OnceLock;

/// `2^(i/32)` as bits, minus `i << 47` (glibc's `__exp2f_data.tab`): adding `k << 47` for
/// `k = 32 q + i` gives the bits of `2^(k/32)`.
const TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// The polynomial's coefficients, `C0 r^3 + C1 r^2 + C2 r + 1`.
const C0: f64 = f64::from_bits(0x3fac6af84b912394); // 0x1.c6af84b912394p-5
const C1: f64 = f64::from_bits(0x3fcebfce50fac4f3); // 0x1.ebfce50fac4f3p-3
const C2: f64 = f64::from_bits(0x3fe62e42ff0c52d6); // 0x1.62e42ff0c52d6p-1
/// `1.5 * 2^52 / 32`: adding it rounds a double to the nearest multiple of 1/32, whose
/// numerator then sits in the low bits of the sum.
const SHIFT: f64 = f64::from_bits(0x42e8000000000000);
/// `|x|`'s bits from which glibc takes its special-case path (`|x| >= 128`, inf, NaN).
const SPECIAL_ABS_BITS: u32 = 0x4300_0000;

/// Whether [`exp2_in_place`] runs the vector code: the CPU has AVX2 and FMA and the vector code
/// agrees with `f32::exp2` on the check values (decided once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| crate::sgemm::has_avx2_fma() && agrees_with_libm(&check_values()))
}

/// `x = 2^x` for every element, each exactly as `f32::exp2` would give it.
pub fn exp2_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if enabled() {
        // SAFETY: `enabled` checked that the CPU has AVX2 and FMA.
        unsafe { exp2_avx2(x) };
        return;
    }
    x.iter_mut().for_each(|v| *v = v.exp2());
}

/// 65,536 inputs: 49,152 bit patterns spread evenly over all 2^32 (both signs, every
/// exponent, NaNs and infinities included), each moved by a different low-bit offset so that
/// the table index and the rounding vary, then 16,384 values evenly over `[-150, 128)`, where
/// the arithmetic runs.
fn check_values() -> Vec<f32> {
    let (spread, even) = (49_152u32, 16_384u32);
    let step = u32::MAX / spread;
    (0..spread)
        .map(|i| f32::from_bits(i * step + (i.wrapping_mul(0x9e37) & 0xff)))
        .chain((0..even).map(|i| -150.0 + 278.0 * i as f32 / even as f32))
        .collect()
}

/// The vector code's results equal `f32::exp2`'s, bit for bit, on `values`.
fn agrees_with_libm(values: &[f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut ours = values.to_vec();
        // SAFETY: only called once the CPU is known to have AVX2 and FMA.
        unsafe { exp2_avx2(&mut ours) };
        ours.iter()
            .zip(values)
            .all(|(o, x)| o.to_bits() == x.exp2().to_bits())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = values;
        false
    }
}

/// The vector code: 8 values at a time in two 4-lane double halves; a group holding a special
/// input, and the last `len % 8` values, through `f32::exp2`.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp2_avx2(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut groups = x.chunks_exact_mut(8);
    let limit = _mm256_set1_epi32(SPECIAL_ABS_BITS as i32 - 1);
    let abs_mask = _mm256_set1_epi32(0x7fff_ffff);
    for g in &mut groups {
        // SAFETY: `g` holds 8 floats; unaligned loads and stores.
        let v = unsafe { _mm256_loadu_ps(g.as_ptr()) };
        let abs = _mm256_and_si256(_mm256_castps_si256(v), abs_mask);
        if _mm256_movemask_epi8(_mm256_cmpgt_epi32(abs, limit)) != 0 {
            g.iter_mut().for_each(|v| *v = v.exp2());
            continue;
        }
        let lo = half(_mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        let hi = half(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)));
        let out = _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(g.as_mut_ptr(), out) };
    }
    groups
        .into_remainder()
        .iter_mut()
        .for_each(|v| *v = v.exp2());
}

/// `2^x` for 4 doubles holding floats with `|x| < 128`, before the rounding to `f32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn half(xd: std::arch::x86_64::__m256d) -> std::arch::x86_64::__m256d {
    use std::arch::x86_64::*;
    let shift = _mm256_set1_pd(SHIFT);
    // kd = k/32 (rounded to nearest), ki's low bits = k.
    let kd = _mm256_add_pd(xd, shift);
    let ki = _mm256_castpd_si256(kd);
    let r = _mm256_sub_pd(xd, _mm256_sub_pd(kd, shift));
    let index = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    // SAFETY: every index is below 32, the table's length.
    let t = unsafe { _mm256_i64gather_epi64::<8>(TABLE.as_ptr().cast(), index) };
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let z = _mm256_fmadd_pd(_mm256_set1_pd(C0), r, _mm256_set1_pd(C1));
    let r2 = _mm256_mul_pd(r, r);
    let y = _mm256_fmadd_pd(_mm256_set1_pd(C2), r, _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(z, r2, y);
    _mm256_mul_pd(y, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector code against `f32::exp2` on every 61st bit pattern (70 M values), the
    /// edges of the special-case test (`|x|` around 128, -150, the largest and smallest
    /// floats, signed zeros, subnormals, infinities, NaNs) and lengths that leave remainders.
    /// Seen to fail with `C2` off by 2^20 units in the last place and with the special-case
    /// test removed (`-inf` and NaNs through the vector code). Not seen to fail with a
    /// coefficient or a table entry off by one unit in the last place, or a multiply-add
    /// unfused: those move the double result by about 2^-60 of it, which changes its rounding
    /// to `f32` only within that distance of a tie, for none of these values (the exhaustive
    /// test below is the one that would catch them).
    ///
    /// The vector code is glibc's algorithm, so on glibc (2.28 and later) it must agree and be
    /// enabled; with another C library it must agree wherever the run-time check enables it
    /// (where that check refuses it, training runs on `f32::exp2` and nothing is to check).
    #[test]
    fn exp2_matches_libm_on_a_stride_and_the_edges() {
        if !crate::sgemm::has_avx2_fma() || !(cfg!(target_env = "gnu") || enabled()) {
            return;
        }
        let mut values: Vec<f32> = (0..u32::MAX / 61).map(|i| f32::from_bits(i * 61)).collect();
        for b in [128.0f32, -128.0, -150.0, -149.0, -126.0, 127.0] {
            for d in -4i32..=4 {
                values.push(f32::from_bits((b.to_bits() as i32 + d) as u32));
            }
        }
        values.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            1e-30,
            -1e-30,
        ]);
        for len in [values.len(), 7, 9, 1] {
            let mut ours = values[..len].to_vec();
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { exp2_avx2(&mut ours) };
            for (o, x) in ours.iter().zip(&values) {
                assert_eq!(
                    o.to_bits(),
                    x.exp2().to_bits(),
                    "2^{x:e} ({:#x})",
                    x.to_bits()
                );
            }
        }
        assert!(
            enabled(),
            "the run-time check refuses the vector code, which agrees with glibc's exp2f"
        );
    }

    /// Every one of the 2^32 bit patterns, on every core (30 s in release on two cores):
    /// `cargo test --release -p autodiff exp2_matches_libm_on_every_float -- --ignored`.
    #[test]
    #[ignore]
    fn exp2_matches_libm_on_every_float() {
        if !crate::sgemm::has_avx2_fma() {
            return;
        }
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let bad: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..parts)
                .map(|p| {
                    s.spawn(move || {
                        let (lo, hi) = ((1u64 << 32) * p / parts, (1u64 << 32) * (p + 1) / parts);
                        let mut bad = 0u64;
                        let mut buf = vec![0.0f32; 1 << 16];
                        for start in (lo..hi).step_by(1 << 16) {
                            let end = hi.min(start + (1 << 16));
                            let buf = &mut buf[..(end - start) as usize];
                            for (b, i) in buf.iter_mut().zip(start..end) {
                                *b = f32::from_bits(i as u32);
                            }
                            // SAFETY: the CPU has AVX2 and FMA (checked above).
                            unsafe { exp2_avx2(buf) };
                            for (b, i) in buf.iter().zip(start..end) {
                                let want = f32::from_bits(i as u32).exp2();
                                if b.to_bits() != want.to_bits() {
                                    if bad < 10 {
                                        eprintln!("2^({:#x}) = {b:e}, libm {want:e}", i);
                                    }
                                    bad += 1;
                                }
                            }
                        }
                        bad
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or(u64::MAX))
                .sum()
        });
        assert_eq!(bad, 0, "values that differ from f32::exp2");
    }
}
