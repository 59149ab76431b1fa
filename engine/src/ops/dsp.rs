//! Inner loops in assembly for the Arm DSP extension (Armv7E-M: Cortex-M4, M7): the int8
//! kernels of [`super::int8`] ([`pair_sums`], [`quantize4`]), the f32 products of one column in
//! [`super::linear`] ([`gemv16`], [`dots8`]: their `VLDM` loads, which LLVM never forms) and the
//! logits' [`relu_dots4`]. This
//! is the only `unsafe` code in the engine: each loop reads only inside the slices it is
//! given, whose lengths its safe signature checks first, and writes only its own outputs.
//!
//! Why not Rust: `core::arch::arm::__smlald` and `__sxtb16` are unstable (`stdarch_arm_dsp`),
//! LLVM does not form `SXTB16` from plain Rust, and its `ARMParallelDSP` pass forms
//! `SMLAD`/`SMLALD` only from pairs of adjacent 16-bit loads, which a packed weight word is
//! not. `docs/arm-kernels.md` shows the loops as built and counts their instructions.

use core::arch::asm;

/// One step of [`pair_sums`]: 3 weight words (6 columns of a pair of rows), 3 activation
/// words, and per word `SMLALD` (both rows, 64-bit), `SXTB16` (the odd row's bytes) and
/// `SMLAD` (the odd row).
macro_rules! pair_step {
    () => {
        "ldm {pw}!, {{r0, r1, r2}}
        ldm {px}!, {{r3, r4, r5}}
        smlald {lo}, {hi}, r0, r3
        sxtb16 r0, r0
        smlad {odd}, r0, r3, {odd}
        smlald {lo}, {hi}, r1, r4
        sxtb16 r1, r1
        smlad {odd}, r1, r4, {odd}
        smlald {lo}, {hi}, r2, r5
        sxtb16 r2, r2
        smlad {odd}, r2, r5, {odd}"
    };
}

/// What [`pair_sums`]'s loop reads and updates per pair (its registers hold the inner loop).
#[repr(C)]
struct PairLoop {
    /// Iterations of 4 steps of 3 words.
    blocks: u32,
    /// Single steps after the blocks (low byte) and single words after those (above it).
    rest: u32,
    /// The first word of the column.
    x: *const u32,
    /// Bytes from the end of one pair's words to the start of the next pair's.
    skip: u32,
    /// Where the next pair's two sums go.
    out: *mut [i32; 2],
    /// Pairs left.
    pairs: u32,
}

/// The sums of `out.len()` pairs of int8 rows with a quantised column, as [`super::int8`]
/// defines them: pair `p` is the `words` words `w[p stride..p stride + words]`, each two
/// halfwords `v = 256 w_even + w_odd` (columns `k`, `k + 1`), and `x` the column's words (two
/// i16 each); `out[p] = [sum_k w_even_k x_k, sum_k w_odd_k x_k]` (wrapping in i32; exact
/// within the activation bound). `None` unless `out` is not empty, `0 < words <= x.len()`,
/// `words <= stride` and `w` holds `(out.len() - 1) stride + words` words.
///
/// One loop in assembly over the pairs, its inner loop over the words: per word, `SMLALD` of
/// the raw words (both rows' products, `S = 256 even + odd`, in 64 bits), `SXTB16` of the
/// weight word (the odd row's two bytes, sign-extended) and `SMLAD` of that (`odd`); 3 words
/// a step (an `LDM` of each operand), 4 steps an iteration (46 instructions per 48
/// multiply-adds), then single steps, then single words; per pair, `even = (S - odd) / 256`
/// and the two sums stored (about 27 instructions a pair around the inner loop).
#[inline(always)]
pub fn pair_sums(
    w: &[u32],
    stride: usize,
    words: usize,
    x: &[u32],
    out: &mut [[i32; 2]],
) -> Option<()> {
    let pairs = out.len();
    let needed = (pairs.checked_sub(1)?).checked_mul(stride)?.checked_add(words)?;
    if words == 0 || words > x.len() || words > stride || w.len() < needed {
        return None;
    }
    let mut state = PairLoop {
        blocks: (words / 12) as u32,
        rest: (((words % 12) / 3) | ((words % 3) << 8)) as u32,
        x: x.as_ptr(),
        skip: ((stride - words) * 4) as u32,
        out: out.as_mut_ptr(),
        pairs: pairs as u32,
    };
    // SAFETY: the outer loop runs `pairs` >= 1 times (`state.pairs`, counted down in memory,
    // `subs` then `bne`). For each pair it reads `blocks`, `rest` and `x` from `state`, then
    // reads `words` words from `w` and from `x` in order: the first inner loop `blocks` times
    // (skipped when 0), 4 steps of 3 words; the second `(words % 12) / 3` times (the low byte
    // of `rest`; skipped when 0), one step; the third `words % 3` times (`rest >> 8`; skipped
    // when 0), one word; `12 blocks + 3 ((words % 12) / 3) + words % 3 = words` words of each,
    // with `LDM`s and `LDR`s with write-back, word-aligned (`&[u32]`s). The weight pointer then
    // moves `skip` bytes on to the next pair's start: pair `p` reads
    // `w[p stride..p stride + words]`, inside `w` by the check above (and `x[..words]`, inside
    // `x`). It writes `out[p]` (an `STRD` through `state.out`, which then moves on 8 bytes;
    // `pairs = out.len()` of them, inside `out`, borrowed exclusively) and `state` (its own
    // local, through the pointer it pushes). It pushes one word on the stack and pops it
    // before it ends (hence no `nostack`). The registers it writes are its operands (all
    // discarded), the six it loads into (`r0`..`r5`, clobbered; `r0` also brings `state`'s
    // address) and the flags (`SMLAD` may set the sticky Q flag, which nothing reads).
    unsafe {
        asm!(
            "push {{r0}}",
            "1:",
            "ldr r0, [sp]",
            "ldrd {nb}, {rest}, [r0]",
            "ldr {px}, [r0, #8]",
            "mov {lo}, #0",
            "mov {hi}, #0",
            "mov {odd}, #0",
            "cmp {nb}, #0",
            "beq 3f",
            "2:",
            pair_step!(),
            pair_step!(),
            pair_step!(),
            pair_step!(),
            "subs {nb}, {nb}, #1",
            "bne 2b",
            "3:",
            "tst {rest}, #255",
            "beq 5f",
            "4:",
            pair_step!(),
            "sub {rest}, {rest}, #1",
            "tst {rest}, #255",
            "bne 4b",
            "5:",
            "lsrs {rest}, {rest}, #8",
            "beq 7f",
            "6:",
            "ldr r0, [{pw}], #4",
            "ldr r3, [{px}], #4",
            "smlald {lo}, {hi}, r0, r3",
            "sxtb16 r0, r0",
            "smlad {odd}, r0, r3, {odd}",
            "subs {rest}, {rest}, #1",
            "bne 6b",
            "7:",
            // even = (S - odd) >> 8, from the 64-bit S in (lo, hi).
            "subs {lo}, {lo}, {odd}",
            "sbc {hi}, {hi}, {odd}, asr #31",
            "lsrs {lo}, {lo}, #8",
            "orr {lo}, {lo}, {hi}, lsl #24",
            "ldr r0, [sp]",
            "ldrd r1, r2, [r0, #12]",
            "add {pw}, {pw}, r1",
            "strd {lo}, {odd}, [r2], #8",
            "str r2, [r0, #16]",
            "ldr r1, [r0, #20]",
            "subs r1, r1, #1",
            "str r1, [r0, #20]",
            "bne 1b",
            "add sp, sp, #4",
            pw = inout(reg) w.as_ptr() => _,
            px = out(reg) _,
            nb = out(reg) _,
            rest = out(reg) _,
            lo = out(reg) _,
            hi = out(reg) _,
            odd = out(reg) _,
            inout("r0") &mut state as *mut PairLoop => _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
        );
    }
    Some(())
}

/// `q[k] = round(x[k] t / 2)` for `k < 4 n` (`n = min(x.len() / 4, q.len() / 2)`), the i16
/// values two to a word of `q` (value `2 i` in the low half): with `u = trunc(x[k] t)`, the
/// result is `(u + 1 + (u >> 31)) >> 1`, which rounds `x[k] t / 2` half away from zero (the
/// rounding of [`super::int8::quantize_column`], whose check makes `|u| <= 2 Q + 1` so the
/// result fits). One loop in assembly, 4 values an iteration: a `VLDM` of them, per value
/// `VMUL`, `VCVT` (toward zero) and three integer instructions, a `VMOV` of two to core
/// registers, a `PKHBT` per pair and one `STRD`; 28 instructions per 4 values (LLVM's loop of
/// the same steps took 46: a `VLDR` and an `STRH` per value and their addresses). Returns
/// `4 n`, the values written.
#[inline(always)]
pub fn quantize4(x: &[f32], t: f32, q: &mut [u32]) -> usize {
    let n = (x.len() / 4).min(q.len() / 2);
    if n == 0 {
        return 0;
    }
    // SAFETY: the loop runs `n` >= 1 times (`subs` then `bne`), 4 values an iteration: a
    // `VLDM` of 4 from `x` (write-back, word-aligned: a `&[f32]`) and an `STRD` of 2 words to
    // `q` (post-indexed, word-aligned: a `&mut [u32]`), in order from the slices' starts:
    // `4 n <= x.len()` values read and `2 n <= q.len()` words written, inside the borrowed
    // slices (`q` exclusively). The integer registers it writes are its outputs and
    // temporaries; the FPU registers are not operands (stable Rust does not know the target
    // has them): it saves the five it uses (`s0`..`s4`) first and restores them last. Flags:
    // `subs`.
    unsafe {
        asm!(
            "vpush {{s0-s4}}",
            "vmov s4, {t}",
            "2:",
            "vldmia {px}!, {{s0-s3}}",
            "vmul.f32 s0, s0, s4",
            "vmul.f32 s1, s1, s4",
            "vmul.f32 s2, s2, s4",
            "vmul.f32 s3, s3, s4",
            "vcvt.s32.f32 s0, s0",
            "vcvt.s32.f32 s1, s1",
            "vcvt.s32.f32 s2, s2",
            "vcvt.s32.f32 s3, s3",
            "vmov {a}, {b}, s0, s1",
            "vmov {c}, {d}, s2, s3",
            "add {a}, {a}, {a}, asr #31",
            "add {b}, {b}, {b}, asr #31",
            "add {c}, {c}, {c}, asr #31",
            "add {d}, {d}, {d}, asr #31",
            "add {a}, {a}, #1",
            "add {b}, {b}, #1",
            "add {c}, {c}, #1",
            "add {d}, {d}, #1",
            "asr {a}, {a}, #1",
            "asr {b}, {b}, #1",
            "asr {c}, {c}, #1",
            "asr {d}, {d}, #1",
            "pkhbt {a}, {a}, {b}, lsl #16",
            "pkhbt {c}, {c}, {d}, lsl #16",
            "strd {a}, {c}, [{pq}], #8",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vpop {{s0-s4}}",
            px = inout(reg) x.as_ptr() => _,
            pq = inout(reg) q.as_mut_ptr() => _,
            n = inout(reg) n => _,
            t = in(reg) t.to_bits(),
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            d = out(reg) _,
            options(nostack),
        );
    }
    4 * n
}

/// One group of 4 of [`relu_dots4`]: `v = a + b` (`$a`, `$b`), `v + |v|`, times `c` (`$c`)
/// into the 4 sums `s0`..`s3`.
macro_rules! relu_group {
    ($a0:literal, $a1:literal, $a2:literal, $a3:literal,
     $b0:literal, $b1:literal, $b2:literal, $b3:literal,
     $c0:literal, $c1:literal, $c2:literal, $c3:literal) => {
        concat!(
            "vadd.f32 ", $a0, ", ", $a0, ", ", $b0, "\n",
            "vadd.f32 ", $a1, ", ", $a1, ", ", $b1, "\n",
            "vadd.f32 ", $a2, ", ", $a2, ", ", $b2, "\n",
            "vadd.f32 ", $a3, ", ", $a3, ", ", $b3, "\n",
            "vabs.f32 ", $b0, ", ", $a0, "\n",
            "vabs.f32 ", $b1, ", ", $a1, "\n",
            "vabs.f32 ", $b2, ", ", $a2, "\n",
            "vabs.f32 ", $b3, ", ", $a3, "\n",
            "vadd.f32 ", $a0, ", ", $a0, ", ", $b0, "\n",
            "vadd.f32 ", $a1, ", ", $a1, ", ", $b1, "\n",
            "vadd.f32 ", $a2, ", ", $a2, ", ", $b2, "\n",
            "vadd.f32 ", $a3, ", ", $a3, ", ", $b3, "\n",
            "vmla.f32 s0, ", $a0, ", ", $c0, "\n",
            "vmla.f32 s1, ", $a1, ", ", $c1, "\n",
            "vmla.f32 s2, ", $a2, ", ", $c2, "\n",
            "vmla.f32 s3, ", $a3, ", ", $c3,
        )
    };
}

/// The 4 partial sums `acc[l] = sum_i (v + |v|) c[4 i + l]`, `v = a[4 i + l] + b[4 i + l]`,
/// each in the order of `i`, over the first `8 n` values (`n = min(len) / 8`), or `None` if
/// `n` is 0: twice the ReLU logit's partial sums in [`super::relu_sum_dot`] (doubling is
/// exact). One loop in assembly, 8 values an iteration: a `VLDM` of 8 of each of `a`, `b`,
/// `c`, then per value `VADD`, `VABS`, `VADD`, `VMLA`; 37 instructions per 8 values (LLVM's:
/// 60, with a `VLDR` per value).
#[inline(always)]
pub fn relu_dots4(a: &[f32], b: &[f32], c: &[f32]) -> Option<[f32; 4]> {
    let n = a.len().min(b.len()).min(c.len()) / 8;
    if n == 0 {
        return None;
    }
    let mut acc = [0.0f32; 4];
    // SAFETY: the loop runs `n` >= 1 times (`subs` then `bne`), reading the next 8 values of
    // each of `a`, `b`, `c` (`VLDM`s with write-back from the slices' starts; every `f32` is
    // word-aligned): `8 n` of each, at most the shortest length. Nothing writes those slices
    // meanwhile. It reads and writes `acc` (4 values, through its own pointer, a local
    // array). The FPU registers are not operands (stable Rust does not know the target has
    // them): the block saves all 32 on the stack first and restores them last.
    unsafe {
        asm!(
            "vpush {{s0-s31}}",
            "vldmia {pacc}, {{s0-s3}}",
            "2:",
            "vldmia {pa}!, {{s4-s11}}",
            "vldmia {pb}!, {{s12-s19}}",
            "vldmia {pc}!, {{s20-s27}}",
            relu_group!("s4", "s5", "s6", "s7", "s12", "s13", "s14", "s15",
                        "s20", "s21", "s22", "s23"),
            relu_group!("s8", "s9", "s10", "s11", "s16", "s17", "s18", "s19",
                        "s24", "s25", "s26", "s27"),
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstmia {pacc}, {{s0-s3}}",
            "vpop {{s0-s31}}",
            pa = inout(reg) a.as_ptr() => _,
            pb = inout(reg) b.as_ptr() => _,
            pc = inout(reg) c.as_ptr() => _,
            n = inout(reg) n => _,
            pacc = in(reg) acc.as_mut_ptr(),
        );
    }
    Some(acc)
}

/// One column of [`gemv16`]: a `VLDM` of 8 weights, 8 `VMLA`s into `s0`..`s7` with the
/// column's value of `b` (in `$b`), the next 8 into `s8`..`s15`, then the pointer to the next
/// column.
macro_rules! gemv16_column {
    ($b:literal) => {
        concat!(
            "vldmia {pa}!, {{s16-s23}}\n",
            "vmla.f32 s0, s16, ", $b, "\n",
            "vmla.f32 s1, s17, ", $b, "\n",
            "vmla.f32 s2, s18, ", $b, "\n",
            "vmla.f32 s3, s19, ", $b, "\n",
            "vmla.f32 s4, s20, ", $b, "\n",
            "vmla.f32 s5, s21, ", $b, "\n",
            "vmla.f32 s6, s22, ", $b, "\n",
            "vmla.f32 s7, s23, ", $b, "\n",
            "vldmia {pa}, {{s16-s23}}\n",
            "vmla.f32 s8, s16, ", $b, "\n",
            "vmla.f32 s9, s17, ", $b, "\n",
            "vmla.f32 s10, s18, ", $b, "\n",
            "vmla.f32 s11, s19, ", $b, "\n",
            "vmla.f32 s12, s20, ", $b, "\n",
            "vmla.f32 s13, s21, ", $b, "\n",
            "vmla.f32 s14, s22, ", $b, "\n",
            "vmla.f32 s15, s23, ", $b, "\n",
            "add {pa}, {pa}, {step}",
        )
    };
}

/// `acc[r] = sum_k a[k m + r] b[k]` for the 16 rows `r < 16` of a column-major matrix `a`
/// (column stride `m`) with a column `b`, the sums taken in the order of `k` with `VMLA.F32`
/// (product rounded, then sum: what Rust's `acc += a * b` computes), or `None` unless `b`
/// is not empty, `m >= 16` and `a` holds `(b.len() - 1) m + 16` values. One loop in
/// assembly, two columns an iteration: a `VLDM` of their 2 values of `b`, then per column two
/// `VLDM`s of 8 weights and 16 `VMLA`s; 41 instructions per 32 multiply-adds (LLVM's loop of
/// the same sums takes 71 for 32: it loads the weights one `VLDR` at a time,
/// `docs/arm-kernels.md`); an odd last column after the loop.
#[inline(always)]
pub fn gemv16(a: &[f32], m: usize, b: &[f32]) -> Option<[f32; 16]> {
    let k = b.len();
    let needed = k.checked_sub(1)?.checked_mul(m)?.checked_add(16)?;
    if m < 16 || a.len() < needed {
        return None;
    }
    // Bytes from the second half of a column's 16 rows to the next column's first row.
    let step = (m - 8) * 4;
    let mut acc = [0.0f32; 16];
    // SAFETY: the loop runs `k / 2` times (skipped when 0: `cmp`, `beq`), two columns an
    // iteration, then one more column if `k` is odd (`k % 2`, tested the same way). Column `j`
    // reads `b[j]` (a `VLDM` of 2 values with write-back from `b`'s start, per iteration, or
    // a `VLDR` of the last one; every `f32` is word-aligned) and the 16 values
    // `a[j m..j m + 16]` (a `VLDM` of 8 with write-back, one of the next 8, then the pointer
    // moves by `(m - 8) * 4` bytes to `a[(j + 1) m]`): the last reads are
    // `a[(k - 1) m + 15]`, inside `a` by the check above, and `b[k - 1]`. Nothing writes
    // those slices meanwhile. It reads and writes `acc` (16 values, through its own pointer,
    // a local array). The FPU registers are not operands (stable Rust does not know the
    // target has them): the block saves all 32 on the stack first and restores them last, so
    // it leaves every register but its discarded pointer and count operands and the flags as
    // it found them.
    unsafe {
        asm!(
            "vpush {{s0-s31}}",
            "vldmia {pacc}, {{s0-s15}}",
            "cmp {n}, #0",
            "beq 3f",
            "2:",
            "vldmia {pb}!, {{s24-s25}}",
            gemv16_column!("s24"),
            gemv16_column!("s25"),
            "subs {n}, {n}, #1",
            "bne 2b",
            "3:",
            "cmp {odd}, #0",
            "beq 4f",
            "vldr s24, [{pb}]",
            gemv16_column!("s24"),
            "4:",
            "vstmia {pacc}, {{s0-s15}}",
            "vpop {{s0-s31}}",
            pa = inout(reg) a.as_ptr() => _,
            pb = inout(reg) b.as_ptr() => _,
            n = inout(reg) k / 2 => _,
            odd = in(reg) k % 2,
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
