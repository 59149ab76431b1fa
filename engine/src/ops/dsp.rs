//! Single instructions of the Arm DSP extension (Armv7E-M: Cortex-M4, M7; Armv8-M Mainline
//! with DSP), and whole inner loops, for the int8 kernels of [`super::int8`] and the f32
//! products of one column in [`super::linear`] (their `VLDM` loads, which LLVM never forms). This is the
//! only `unsafe` code in the engine: each wrapper is one `asm!` instruction on registers, with
//! no memory access, no stack use and no other side effect than its result (and, for
//! `SMLAD`, the sticky Q flag, which nothing reads), so each is
//! `options(pure, nomem, nostack)`; [`two_rows`], [`gemv16`] and [`dots8`] are inner loops,
//! reading only inside the slices they are given, whose lengths their safe signatures check
//! first.
//!
//! Why not `core::arch::arm::__smlad` and `__sxtb16`: those intrinsics are unstable
//! (`stdarch_arm_dsp`), and LLVM does not form `SXTB16` from plain Rust; its `ARMParallelDSP`
//! pass forms `SMLAD` only from pairs of adjacent 16-bit loads, which a packed int8 operand
//! is not. The wrappers are `#[inline(always)]`: in the kernels they are the instructions
//! themselves, and LLVM schedules and allocates registers around them
//! (`docs/arm-kernels.md` shows the inner loops).
#![allow(unsafe_code)]

use core::arch::asm;

/// `SMLAD`: `acc + lo16(a) lo16(b) + hi16(a) hi16(b)`, the halfwords signed (wrapping in
/// 32 bits; the int8 kernels' sums never overflow, see [`super::int8::activation_bound`]).
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    let out: i32;
    // SAFETY: one SMLAD on four general-purpose registers: it reads `a`, `b`, `acc` and writes
    // `out`; no memory, no stack, no control flow. It may set the APSR's sticky Q flag on
    // overflow, hence no `preserves_flags`.
    unsafe {
        asm!(
            "smlad {out}, {a}, {b}, {acc}",
            out = lateout(reg) out,
            a = in(reg) a,
            b = in(reg) b,
            acc = in(reg) acc,
            options(pure, nomem, nostack),
        );
    }
    out
}

/// `SXTB16`: bytes 0 and 2 of `w`, sign-extended to the two halfwords of the result.
#[inline(always)]
pub fn sxtb16(w: u32) -> u32 {
    let out: u32;
    // SAFETY: one SXTB16 on two general-purpose registers: it reads `w` and writes `out`;
    // no memory, no stack, no flags, no control flow.
    unsafe {
        asm!(
            "sxtb16 {out}, {w}",
            out = lateout(reg) out,
            w = in(reg) w,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// `SXTB16` with the operand rotated right by 8: bytes 1 and 3 of `w`, sign-extended to
/// the two halfwords of the result.
#[inline(always)]
pub fn sxtb16_ror8(w: u32) -> u32 {
    let out: u32;
    // SAFETY: one SXTB16 (rotation 8) on two general-purpose registers: it reads `w` and
    // writes `out`; no memory, no stack, no flags, no control flow.
    unsafe {
        asm!(
            "sxtb16 {out}, {w}, ror #8",
            out = lateout(reg) out,
            w = in(reg) w,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// The sums of two rows of int8 weights with a quantised column, as [`super::int8`] defines
/// them (`w0`, `w1`: `n` words of 4 weights each; `x`: the column's `2 n` words of two i16,
/// in the pair layout), or `None` unless `w1` has `n` words, `x` has `2 n` and `n` is a
/// non-zero multiple of 4. One inner loop in assembly, two steps of 8 values of both rows an
/// iteration; a step is an `LDM` of the 4 activation words for both rows, per row an `LDRD`
/// of its 2 weight words, and per weight word `SXTB16`, `SMLAD`, `SXTB16 ROR 8`, `SMLAD`:
/// 40 instructions per 32 multiply-adds (LLVM's schedule of the same steps from the
/// wrappers above takes 25 to 32 per 16, `docs/arm-kernels.md`).
#[inline(always)]
pub fn two_rows(w0: &[u32], w1: &[u32], x: &[u32]) -> Option<[i32; 2]> {
    let n = w0.len();
    if w1.len() != n || x.len() != 2 * n || n % 4 != 0 || n < 4 {
        return None;
    }
    let steps = n / 4;
    let (mut s0, mut s1) = (0i32, 0i32);
    // SAFETY: the loop runs `steps` >= 1 times (`subs` then `bne`: at least once, and `steps`
    // is not 0), two steps of 8 values an iteration. Each step reads 4 words from `x` (an
    // `LDM` with write-back, word-aligned: `x` is a `&[u32]`), 2 from `w0` and 2 from `w1`
    // (post-indexed `LDRD`s, which need word alignment only on the M-profile), all at and
    // after the slices' starts: `8 steps = 2 n = x.len()` and `4 steps = n = w0.len() =
    // w1.len()` words in all, so every read is inside the borrowed slices, which nothing
    // writes meanwhile. It writes no memory (`readonly`) and no stack (`nostack`); the
    // registers it writes are its outputs, the four it loads the activations into (declared
    // clobbered, `r0` to `r3`, an `LDM` list needing ascending fixed registers) and the flags
    // (`subs`).
    unsafe {
        asm!(
            "2:",
            "ldm {px}!, {{r0, r1, r2, r3}}",
            "ldrd {w}, {v}, [{pa}], #8",
            "sxtb16 {t}, {w}",
            "smlad {s0}, {t}, r0, {s0}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s0}, {w}, r1, {s0}",
            "sxtb16 {t}, {v}",
            "smlad {s0}, {t}, r2, {s0}",
            "sxtb16 {v}, {v}, ror #8",
            "smlad {s0}, {v}, r3, {s0}",
            "ldrd {w}, {v}, [{pb}], #8",
            "sxtb16 {t}, {w}",
            "smlad {s1}, {t}, r0, {s1}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s1}, {w}, r1, {s1}",
            "sxtb16 {t}, {v}",
            "smlad {s1}, {t}, r2, {s1}",
            "sxtb16 {v}, {v}, ror #8",
            "smlad {s1}, {v}, r3, {s1}",
            "ldm {px}!, {{r0, r1, r2, r3}}",
            "ldrd {w}, {v}, [{pa}], #8",
            "sxtb16 {t}, {w}",
            "smlad {s0}, {t}, r0, {s0}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s0}, {w}, r1, {s0}",
            "sxtb16 {t}, {v}",
            "smlad {s0}, {t}, r2, {s0}",
            "sxtb16 {v}, {v}, ror #8",
            "smlad {s0}, {v}, r3, {s0}",
            "ldrd {w}, {v}, [{pb}], #8",
            "sxtb16 {t}, {w}",
            "smlad {s1}, {t}, r0, {s1}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s1}, {w}, r1, {s1}",
            "sxtb16 {t}, {v}",
            "smlad {s1}, {t}, r2, {s1}",
            "sxtb16 {v}, {v}, ror #8",
            "smlad {s1}, {v}, r3, {s1}",
            "subs {n}, {n}, #1",
            "bne 2b",
            px = inout(reg) x.as_ptr() => _,
            pa = inout(reg) w0.as_ptr() => _,
            pb = inout(reg) w1.as_ptr() => _,
            n = inout(reg) steps => _,
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            w = out(reg) _,
            v = out(reg) _,
            t = out(reg) _,
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            options(readonly, nostack),
        );
    }
    Some([s0, s1])
}

/// `acc[r] = sum_k a[k m + r] b[k]` for the 16 rows `r < 16` of a column-major matrix `a`
/// (column stride `m`) with a column `b`, the sums taken in the order of `k` with `VMLA.F32`
/// (product rounded, then sum: what Rust's `acc += a * b` computes), or `None` unless `b`
/// has a non-zero even number of values, `m >= 16` and `a` holds `(b.len() - 1) m + 16`
/// values. One inner loop in assembly, two columns an iteration: a `VLDM` of their 2 values of
/// `b`, then per column two `VLDM`s of 8 weights and 16 `VMLA`s; 41 instructions per 32
/// multiply-adds (LLVM's loop of the same sums takes 71 for 32: it loads the weights one
/// `VLDR` at a time, `docs/arm-kernels.md`).
#[inline(always)]
pub fn gemv16(a: &[f32], m: usize, b: &[f32]) -> Option<[f32; 16]> {
    let k = b.len();
    let needed = k.checked_sub(1)?.checked_mul(m)?.checked_add(16)?;
    if k % 2 != 0 || m < 16 || a.len() < needed {
        return None;
    }
    // Bytes from the second half of a column's 16 rows to the next column's first row.
    let step = (m - 8) * 4;
    let mut acc = [0.0f32; 16];
    // SAFETY: the loop runs `k / 2` >= 1 times (`subs` then `bne`), two columns an iteration.
    // Column `j` reads `b[j]` (a `VLDM` of 2 values with write-back from `b`'s start, per
    // iteration; every `f32` is word-aligned) and the 16 values `a[j m..j m + 16]` (a `VLDM`
    // of 8 with write-back, one of the next 8, then the pointer moves by `(m - 8) * 4` bytes
    // to `a[(j + 1) m]`): the last reads are `a[(k - 1) m + 15]`, inside `a` by the check
    // above, and `b[k - 1]`. Nothing writes those slices meanwhile. It reads and writes `acc`
    // (16 values, through its own pointer, a local array). The FPU registers are not operands
    // (stable Rust does not know the target has them): the block saves all 32 on the stack
    // first and restores them last, so it leaves every register but its discarded pointer and
    // count operands and the flags as it found them.
    unsafe {
        asm!(
            "vpush {{s0-s31}}",
            "vldmia {pacc}, {{s0-s15}}",
            "2:",
            "vldmia {pb}!, {{s24-s25}}",
            "vldmia {pa}!, {{s16-s23}}",
            "vmla.f32 s0, s16, s24",
            "vmla.f32 s1, s17, s24",
            "vmla.f32 s2, s18, s24",
            "vmla.f32 s3, s19, s24",
            "vmla.f32 s4, s20, s24",
            "vmla.f32 s5, s21, s24",
            "vmla.f32 s6, s22, s24",
            "vmla.f32 s7, s23, s24",
            "vldmia {pa}, {{s16-s23}}",
            "vmla.f32 s8, s16, s24",
            "vmla.f32 s9, s17, s24",
            "vmla.f32 s10, s18, s24",
            "vmla.f32 s11, s19, s24",
            "vmla.f32 s12, s20, s24",
            "vmla.f32 s13, s21, s24",
            "vmla.f32 s14, s22, s24",
            "vmla.f32 s15, s23, s24",
            "add {pa}, {pa}, {step}",
            "vldmia {pa}!, {{s16-s23}}",
            "vmla.f32 s0, s16, s25",
            "vmla.f32 s1, s17, s25",
            "vmla.f32 s2, s18, s25",
            "vmla.f32 s3, s19, s25",
            "vmla.f32 s4, s20, s25",
            "vmla.f32 s5, s21, s25",
            "vmla.f32 s6, s22, s25",
            "vmla.f32 s7, s23, s25",
            "vldmia {pa}, {{s16-s23}}",
            "vmla.f32 s8, s16, s25",
            "vmla.f32 s9, s17, s25",
            "vmla.f32 s10, s18, s25",
            "vmla.f32 s11, s19, s25",
            "vmla.f32 s12, s20, s25",
            "vmla.f32 s13, s21, s25",
            "vmla.f32 s14, s22, s25",
            "vmla.f32 s15, s23, s25",
            "add {pa}, {pa}, {step}",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstmia {pacc}, {{s0-s15}}",
            "vpop {{s0-s31}}",
            pa = inout(reg) a.as_ptr() => _,
            pb = inout(reg) b.as_ptr() => _,
            n = inout(reg) k / 2 => _,
            step = in(reg) step,
            pacc = in(reg) acc.as_mut_ptr(),
        );
    }
    Some(acc)
}

/// The 8 dot products `acc[r] = sum_k a[r][k] b[k]`, each summed in the order of `k` with
/// `VMLA.F32` (as Rust's `acc += a * b`), or `None` unless every `a[r]` has `b.len()` values
/// and that is a non-zero multiple of 8. One inner loop in assembly: per 8 values of `k`, a
/// `VLDM` of 8 values of `b`, then per row a `VLDM` of its 8 values and 8 `VMLA`s; 75
/// instructions per 64 multiply-adds (LLVM's loop of the same sums takes 159: one `VLDR` per
/// value, and row pointers spilled, `docs/arm-kernels.md`).
#[inline(always)]
pub fn dots8(a: [&[f32]; 8], b: &[f32]) -> Option<[f32; 8]> {
    let k = b.len();
    if k == 0 || k % 8 != 0 || a.iter().any(|row| row.len() != k) {
        return None;
    }
    let mut acc = [0.0f32; 8];
    // SAFETY: the loop runs `k / 8` >= 1 times (`subs` then `bne`). Each iteration reads the
    // next 8 values of `b` and of each of the 8 rows (`VLDM`s with write-back from the slices'
    // starts; every `f32` is word-aligned): `k` values of each in all, their lengths by the
    // check above. Nothing writes those slices meanwhile. It reads and writes `acc` (8
    // values, through its own pointer, a local array). The FPU registers are not operands
    // (stable Rust does not know the target has them): the block saves all 32 on the stack
    // first and restores them last, so it leaves every register but its discarded pointer
    // and count operands and the flags as it found them.
    unsafe {
        asm!(
            "vpush {{s0-s31}}",
            "vldmia {pacc}, {{s0-s7}}",
            "2:",
            "vldmia {pb}!, {{s16-s23}}",
            "vldmia {p0}!, {{s24-s31}}",
            "vmla.f32 s0, s24, s16",
            "vmla.f32 s0, s25, s17",
            "vmla.f32 s0, s26, s18",
            "vmla.f32 s0, s27, s19",
            "vmla.f32 s0, s28, s20",
            "vmla.f32 s0, s29, s21",
            "vmla.f32 s0, s30, s22",
            "vmla.f32 s0, s31, s23",
            "vldmia {p1}!, {{s24-s31}}",
            "vmla.f32 s1, s24, s16",
            "vmla.f32 s1, s25, s17",
            "vmla.f32 s1, s26, s18",
            "vmla.f32 s1, s27, s19",
            "vmla.f32 s1, s28, s20",
            "vmla.f32 s1, s29, s21",
            "vmla.f32 s1, s30, s22",
            "vmla.f32 s1, s31, s23",
            "vldmia {p2}!, {{s24-s31}}",
            "vmla.f32 s2, s24, s16",
            "vmla.f32 s2, s25, s17",
            "vmla.f32 s2, s26, s18",
            "vmla.f32 s2, s27, s19",
            "vmla.f32 s2, s28, s20",
            "vmla.f32 s2, s29, s21",
            "vmla.f32 s2, s30, s22",
            "vmla.f32 s2, s31, s23",
            "vldmia {p3}!, {{s24-s31}}",
            "vmla.f32 s3, s24, s16",
            "vmla.f32 s3, s25, s17",
            "vmla.f32 s3, s26, s18",
            "vmla.f32 s3, s27, s19",
            "vmla.f32 s3, s28, s20",
            "vmla.f32 s3, s29, s21",
            "vmla.f32 s3, s30, s22",
            "vmla.f32 s3, s31, s23",
            "vldmia {p4}!, {{s24-s31}}",
            "vmla.f32 s4, s24, s16",
            "vmla.f32 s4, s25, s17",
            "vmla.f32 s4, s26, s18",
            "vmla.f32 s4, s27, s19",
            "vmla.f32 s4, s28, s20",
            "vmla.f32 s4, s29, s21",
            "vmla.f32 s4, s30, s22",
            "vmla.f32 s4, s31, s23",
            "vldmia {p5}!, {{s24-s31}}",
            "vmla.f32 s5, s24, s16",
            "vmla.f32 s5, s25, s17",
            "vmla.f32 s5, s26, s18",
            "vmla.f32 s5, s27, s19",
            "vmla.f32 s5, s28, s20",
            "vmla.f32 s5, s29, s21",
            "vmla.f32 s5, s30, s22",
            "vmla.f32 s5, s31, s23",
            "vldmia {p6}!, {{s24-s31}}",
            "vmla.f32 s6, s24, s16",
            "vmla.f32 s6, s25, s17",
            "vmla.f32 s6, s26, s18",
            "vmla.f32 s6, s27, s19",
            "vmla.f32 s6, s28, s20",
            "vmla.f32 s6, s29, s21",
            "vmla.f32 s6, s30, s22",
            "vmla.f32 s6, s31, s23",
            "vldmia {p7}!, {{s24-s31}}",
            "vmla.f32 s7, s24, s16",
            "vmla.f32 s7, s25, s17",
            "vmla.f32 s7, s26, s18",
            "vmla.f32 s7, s27, s19",
            "vmla.f32 s7, s28, s20",
            "vmla.f32 s7, s29, s21",
            "vmla.f32 s7, s30, s22",
            "vmla.f32 s7, s31, s23",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstmia {pacc}, {{s0-s7}}",
            "vpop {{s0-s31}}",
            pb = inout(reg) b.as_ptr() => _,
            p0 = inout(reg) a[0].as_ptr() => _,
            p1 = inout(reg) a[1].as_ptr() => _,
            p2 = inout(reg) a[2].as_ptr() => _,
            p3 = inout(reg) a[3].as_ptr() => _,
            p4 = inout(reg) a[4].as_ptr() => _,
            p5 = inout(reg) a[5].as_ptr() => _,
            p6 = inout(reg) a[6].as_ptr() => _,
            p7 = inout(reg) a[7].as_ptr() => _,
            n = inout(reg) k / 8 => _,
            pacc = in(reg) acc.as_mut_ptr(),
        );
    }
    Some(acc)
}
