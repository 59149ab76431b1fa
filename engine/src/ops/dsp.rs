//! Single instructions of the Arm DSP extension (Armv7E-M: Cortex-M4, M7; Armv8-M Mainline
//! with DSP), for the int8 kernels of [`super::int8`]. This is the only `unsafe` code in
//! the engine: each wrapper is one `asm!` instruction on registers, with no memory access, no
//! stack use and no other side effect than its result (and, for `SMLAD`, the sticky Q flag,
//! which nothing reads), so each is `options(pure, nomem, nostack)`.
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
