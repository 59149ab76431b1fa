//! Single instructions of the Arm DSP extension (Armv7E-M: Cortex-M4, M7; Armv8-M Mainline
//! with DSP), and one whole inner loop, for the int8 kernels of [`super::int8`]. This is the
//! only `unsafe` code in the engine: each wrapper is one `asm!` instruction on registers, with
//! no memory access, no stack use and no other side effect than its result (and, for
//! `SMLAD`, the sticky Q flag, which nothing reads), so each is
//! `options(pure, nomem, nostack)`; [`two_rows`] is the two-row inner loop, reading only
//! inside the slices it is given, whose lengths its safe signature checks first.
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
/// in the pair layout), or `None` unless `w1` has `n` words, `x` has `2 n` and `n` is even
/// and at least 2. One inner loop in assembly, 8 values of both rows a step: an `LDM` of the
/// 4 activation words for both rows, then per weight word an `LDR`, `SXTB16`, `SMLAD`,
/// `SXTB16 ROR 8`, `SMLAD`; 23 instructions per 16 multiply-adds (LLVM's schedule of the same
/// steps from the wrappers above takes 25 to 26, `docs/arm-kernels.md`).
#[inline(always)]
pub fn two_rows(w0: &[u32], w1: &[u32], x: &[u32]) -> Option<[i32; 2]> {
    let n = w0.len();
    if w1.len() != n || x.len() != 2 * n || n % 2 != 0 || n < 2 {
        return None;
    }
    let steps = n / 2;
    let (mut s0, mut s1) = (0i32, 0i32);
    // SAFETY: the loop runs `steps` >= 1 times (`subs` then `bne`: at least once, and `steps`
    // is not 0). Each step reads 4 words from `x` (an `LDM` with write-back, word-aligned:
    // `x` is a `&[u32]`), 2 from `w0` and 2 from `w1` (post-indexed `LDR`s), all at and after
    // the slices' starts: `4 steps = 2 n = x.len()` and `2 steps = n = w0.len() = w1.len()`
    // words in all, so every read is inside the borrowed slices, which nothing writes
    // meanwhile. It writes no memory (`readonly`) and no stack (`nostack`); the registers it
    // writes are its outputs, the four it loads the activations into (declared clobbered,
    // `r0` to `r3`, an `LDM` list needing ascending fixed registers) and the flags (`subs`).
    unsafe {
        asm!(
            "2:",
            "ldm {px}!, {{r0, r1, r2, r3}}",
            "ldr {w}, [{pa}], #4",
            "sxtb16 {t}, {w}",
            "smlad {s0}, {t}, r0, {s0}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s0}, {w}, r1, {s0}",
            "ldr {w}, [{pa}], #4",
            "sxtb16 {t}, {w}",
            "smlad {s0}, {t}, r2, {s0}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s0}, {w}, r3, {s0}",
            "ldr {w}, [{pb}], #4",
            "sxtb16 {t}, {w}",
            "smlad {s1}, {t}, r0, {s1}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s1}, {w}, r1, {s1}",
            "ldr {w}, [{pb}], #4",
            "sxtb16 {t}, {w}",
            "smlad {s1}, {t}, r2, {s1}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {s1}, {w}, r3, {s1}",
            "subs {n}, {n}, #1",
            "bne 2b",
            px = inout(reg) x.as_ptr() => _,
            pa = inout(reg) w0.as_ptr() => _,
            pb = inout(reg) w1.as_ptr() => _,
            n = inout(reg) steps => _,
            s0 = inout(reg) s0,
            s1 = inout(reg) s1,
            w = out(reg) _,
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
