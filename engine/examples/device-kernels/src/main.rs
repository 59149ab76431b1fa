//! The engine's big products at the paper's sizes (D = 640, d = 128, G = 256) on the device,
//! one query column at a time as the firmware classifies: checks the int8 kernels (on Arm,
//! the `SMLAD` inner loops of `engine::ops::int8`) against the portable sums bit for bit and
//! the f32 kernels against f64 sums (and, for one column, where the Arm kernels run loops in
//! assembly, against the same sums in Rust bit for bit), and prints the instructions each
//! product takes. Run with `cargo run --release` here (see
//! Cargo.toml); exits 0 when every check passes, 1 otherwise.
//!
//! Instructions are counted with SysTick under `qemu-system-arm -icount shift=0`, where one
//! tick of the MPS2 boards' 25 MHz clock is exactly 40 instructions; each product runs
//! [`REPEAT`] times between two readings, so the resolution is 40 / [`REPEAT`] instructions.
#![no_std]
#![no_main]

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::entry;
use engine::ops::int8::{self, QuantMat};
use engine::ops::layer_norm::LayerNorm;
use engine::ops::softmax::softmax_columns;
use engine::ops::{linear, relu_sum_dot, Mat, MatMut};
use nalgebra::{Const, Dyn};
use semihosting::{println, process};
use static_cell::ConstStaticCell;

/// Instructions per SysTick tick under `-icount shift=0` with the MPS2 boards' 25 MHz clock.
const INSTRUCTIONS_PER_TICK: u64 = 40;
/// Runs of each product per measurement.
const REPEAT: u64 = 4;
/// The largest products: 256 rows of 640.
const MAX: usize = 256 * 640;

/// Memory aligned as a model file's tensors are (to 8 bytes here; files align to 64).
#[repr(C, align(8))]
struct Aligned<T>(T);

/// `MAX` int8 weights, stored in pairs of rows (one i16 per column of a pair: `engine::ops::int8`).
static WEIGHTS_I8: ConstStaticCell<Aligned<[i16; MAX / 2]>> =
    ConstStaticCell::new(Aligned([0; MAX / 2]));
static WEIGHTS_F32: ConstStaticCell<[f32; MAX]> = ConstStaticCell::new([0.0; MAX]);

/// A fixed linear congruential generator.
struct Lcg(u32);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        self.0 >> 8
    }

    /// Uniform in [-0.5, 0.5).
    fn f32(&mut self) -> f32 {
        self.next() as f32 / (1u32 << 24) as f32 - 0.5
    }

    /// Uniform in [-127, 127].
    fn i8(&mut self) -> i16 {
        (self.next() % 255) as i16 - 127
    }

    /// Two uniform int8 values stored as a pair: `256 even + odd`.
    fn pair(&mut self) -> i16 {
        256 * self.i8() + self.i8()
    }
}

/// Instructions `f` takes (the mean of [`REPEAT`] runs).
fn instructions(mut f: impl FnMut()) -> u64 {
    let start = SYST::get_current();
    for _ in 0..REPEAT {
        f();
    }
    let end = SYST::get_current();
    u64::from(start.wrapping_sub(end) & 0x00FF_FFFF) * INSTRUCTIONS_PER_TICK / REPEAT
}

/// Prints one measurement: instructions and instructions per multiply-add (to 0.001).
fn report(what: &str, rows: usize, depth: usize, n: usize, count: u64) {
    let macs = (rows * depth * n) as u64;
    let milli = count * 1000 / macs;
    println!(
        "{what} {rows}x{depth} n {n}: {count} instructions, {}.{:03} per multiply-add",
        milli / 1000,
        milli % 1000
    );
}

/// Whether `c` (`R` rows) is, bit for bit, the portable definition of an int8 product: one
/// quantisation of `x`, `int8::pair_dots` per pair of rows (from position `start`), scaled.
fn portable<const R: usize>(
    c: &[f32; R],
    weights: &[i16],
    stride: usize,
    start: usize,
    x: &[f32],
    scales: &[f32; R],
) -> bool {
    let mut q = [0i16; 640];
    let s = int8::quantize_column(x, &mut q);
    let mut same = true;
    for (p, pair) in weights.chunks_exact(stride).enumerate() {
        let sums = int8::pair_dots(&pair[start..start + x.len()], &q[..x.len()]);
        for (r, sum) in [(2 * p, sums[0]), (2 * p + 1, sums[1])] {
            if let (Some(got), Some(scale)) = (c.get(r), scales.get(r)) {
                same &= got.to_bits() == (sum as f32 * scale * s).to_bits();
            }
        }
    }
    same
}

/// int8 `C = A_q x` for `R` rows of depth `K`, one column: the kernel's results against the
/// portable sums (bit for bit), then its instructions. Returns whether they matched.
fn int8_product<const R: usize, const K: usize>(what: &str, weights: &[i16], rng: &mut Lcg) -> bool {
    let stride = int8::column_len(K);
    let weights = &weights[..R.div_ceil(2) * stride];
    let scales: [f32; R] = core::array::from_fn(|r| 0.01 + r as f32 * 1e-4);
    let Some(a) = QuantMat::from_parts(R, K, weights, &scales) else {
        println!("{what}: bad sizes");
        return false;
    };
    let x: [f32; K] = core::array::from_fn(|_| rng.f32());
    let mut scratch = [0i16; 641 + 8];
    let mut c = [0.0f32; R];
    let run = |scratch: &mut [i16], c: &mut [f32; R]| {
        if let (Some(b), Some(c)) = (
            Mat::from_slice(&x, Const::<K>, Dyn(1)),
            MatMut::from_slice(c, Const::<R>, Dyn(1)),
        ) {
            int8::mul_to(&a, b, scratch, c);
        }
    };
    run(&mut scratch, &mut c);
    let mut same = portable(&c, weights, stride, 0, &x, &scales);
    // An odd scratch offset gives the same results (the kernel aligns the scratch itself).
    let mut c_odd = [0.0f32; R];
    run(&mut scratch[1..], &mut c_odd);
    same &= c_odd
        .iter()
        .zip(&c)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let count = instructions(|| run(&mut scratch, &mut c));
    report(what, R, K, 1, count);
    if !same {
        println!("{what}: MISMATCH against the portable sums");
    }
    same
}

/// int8 `C = A_q[:, start..start + L] x` for `R` rows of depth `K`, one column: the kernel's
/// results against the portable sums (bit for bit), then its instructions. Returns whether
/// they matched.
fn int8_range<const R: usize, const K: usize, const L: usize>(
    what: &str,
    start: usize,
    weights: &[i16],
    rng: &mut Lcg,
) -> bool {
    let stride = int8::column_len(K);
    let weights = &weights[..R.div_ceil(2) * stride];
    let scales: [f32; R] = core::array::from_fn(|r| 0.02 - r as f32 * 1e-5);
    let Some(a) = QuantMat::from_parts(R, K, weights, &scales) else {
        println!("{what}: bad sizes");
        return false;
    };
    let x: [f32; L] = core::array::from_fn(|_| rng.f32());
    let mut scratch = [0i16; 641 + 8];
    let mut c = [0.0f32; R];
    let run = |scratch: &mut [i16], c: &mut [f32; R]| {
        if let (Some(b), Some(c)) = (
            Mat::from_slice(&x, Const::<L>, Dyn(1)),
            MatMut::from_slice(c, Const::<R>, Dyn(1)),
        ) {
            int8::mul_to_range(&a, start, b, scratch, c);
        }
    };
    run(&mut scratch, &mut c);
    let same = portable(&c, weights, stride, start, &x, &scales);
    let count = instructions(|| run(&mut scratch, &mut c));
    report(what, R, L, 1, count);
    if !same {
        println!("{what}: MISMATCH against the portable sums");
    }
    same
}

/// Whether `c` (`rows x n`, column-major) is `A B` within the rounding of sums of `depth`
/// products, where entry (r, k) of `A` is `a(r, k)` and `B` is `depth x n`.
fn close(c: &[f32], b: &[f32], rows: usize, depth: usize, a: impl Fn(usize, usize) -> f32) -> bool {
    c.chunks_exact(rows)
        .zip(b.chunks_exact(depth))
        .all(|(c, b)| {
            c.iter().enumerate().all(|(r, &got)| {
                let (mut want, mut size) = (0.0f64, 0.0f64);
                for (k, &x) in b.iter().enumerate() {
                    let p = f64::from(a(r, k)) * f64::from(x);
                    want += p;
                    size += p.abs();
                }
                (f64::from(got) - want).abs() <= depth as f64 * f64::from(f32::EPSILON) * size
            })
        })
}

/// Whether the first column of `c` is, bit for bit, the sums `acc += a(r, k) b[k]` taken in
/// the order of `k` from 0 (what the one-column kernels compute, in assembly on Arm).
fn in_order(
    c: &[f32],
    b: &[f32],
    rows: usize,
    depth: usize,
    a: impl Fn(usize, usize) -> f32,
) -> bool {
    c[..rows].iter().enumerate().all(|(r, &got)| {
        let mut acc = 0.0f32;
        for (k, &x) in b[..depth].iter().enumerate() {
            acc += core::hint::black_box(a(r, k)) * x;
        }
        got.to_bits() == acc.to_bits()
    })
}

/// f32 `C = A B` (`A`: `R x K`), `n` columns: checked against an f64 sum, then its
/// instructions. Returns whether it matched.
fn f32_product<const R: usize, const K: usize>(what: &str, weights: &[f32], n: usize) -> bool {
    let b: [f32; 640 * 5] = core::array::from_fn(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5);
    let mut c = [0.0f32; 256 * 5];
    let mut run = || {
        if let (Some(a), Some(b), Some(mut c)) = (
            Mat::from_slice(&weights[..R * K], Const::<R>, Const::<K>),
            Mat::from_slice(&b[..K * n], Const::<K>, Dyn(n)),
            MatMut::from_slice(&mut c[..R * n], Const::<R>, Dyn(n)),
        ) {
            linear::mul_to(&a, &b, &mut c);
        }
    };
    run();
    let count = instructions(run);
    report(what, R, K, n, count);
    // Column-major `R x K`: entry (r, k) at k R + r.
    let ok = close(&c[..R * n], &b[..K * n], R, K, |r, k| weights[k * R + r])
        && (n > 1 || in_order(&c, &b, R, K, |r, k| weights[k * R + r]));
    if !ok {
        println!("{what}: WRONG against the f64 sums");
    }
    ok
}

/// f32 `C = Aᵀ B` (`A`: `K x R`), `n` columns: checked against an f64 sum, then its
/// instructions. Returns whether it matched.
fn f32_tr_product<const K: usize, const R: usize>(what: &str, weights: &[f32], n: usize) -> bool {
    let b: [f32; 640 * 5] = core::array::from_fn(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5);
    let mut c = [0.0f32; 256 * 5];
    let mut run = || {
        if let (Some(a), Some(b), Some(mut c)) = (
            Mat::from_slice(&weights[..R * K], Const::<K>, Const::<R>),
            Mat::from_slice(&b[..K * n], Const::<K>, Dyn(n)),
            MatMut::from_slice(&mut c[..R * n], Const::<R>, Dyn(n)),
        ) {
            linear::tr_mul_to(&a, &b, &mut c);
        }
    };
    run();
    let count = instructions(run);
    report(what, R, K, n, count);
    // Column-major `K x R`: entry (r, k) of `Aᵀ` at r K + k.
    let ok = close(&c[..R * n], &b[..K * n], R, K, |r, k| weights[r * K + k])
        && (n > 1 || in_order(&c, &b, R, K, |r, k| weights[r * K + k]));
    if !ok {
        println!("{what}: WRONG against the f64 sums");
    }
    ok
}

#[entry]
fn main() -> ! {
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        process::exit(1)
    };
    let mut syst = peripherals.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(0x00FF_FFFF);
    syst.clear_current();
    syst.enable_counter();

    let mut rng = Lcg(1);
    let weights_i8 = &mut WEIGHTS_I8.take().0;
    for w in weights_i8.iter_mut() {
        *w = rng.pair();
    }
    let weights_f32 = WEIGHTS_F32.take();
    for w in weights_f32.iter_mut() {
        *w = rng.f32();
    }

    let mut ok = true;
    // The per-query products of the paper's model (int8 rows x depth).
    ok &= int8_product::<128, 640>("int8 enc x", weights_i8, &mut rng);
    ok &= int8_product::<256, 640>("int8 G2mu x", weights_i8, &mut rng);
    ok &= int8_product::<256, 128>("int8 G1 half, F1", weights_i8, &mut rng);
    ok &= int8_product::<128, 256>("int8 F2", weights_i8, &mut rng);
    ok &= int8_product::<128, 128>("int8 Wq", weights_i8, &mut rng);
    // Odd shapes: words past the last multiple of 3, an odd row count (a pad row), an odd
    // depth (a pad column).
    ok &= int8_product::<7, 20>("int8 odd", weights_i8, &mut rng);
    ok &= int8_product::<6, 24>("int8 odd", weights_i8, &mut rng);
    ok &= int8_product::<5, 13>("int8 odd", weights_i8, &mut rng);
    ok &= int8_product::<3, 1>("int8 odd", weights_i8, &mut rng);

    // Parts of rows: the generator's first layer, one half of its 2d inputs, and odd ones (a
    // part starting at an even position, and one that does not: the portable sums).
    ok &= int8_range::<256, 256, 128>("int8 G1 attentive half (range)", 128, weights_i8, &mut rng);
    ok &= int8_range::<7, 20, 9>("int8 odd range", 4, weights_i8, &mut rng);
    ok &= int8_range::<5, 20, 11>("int8 odd range", 8, weights_i8, &mut rng);
    ok &= int8_range::<5, 20, 9>("int8 odd range", 3, weights_i8, &mut rng);

    // The per-query f32 work around the products: the 5 logits (`relu_sum_dot` over G = 256),
    // one layer norm of d = 128, the softmax of 4 heads' 5 scores.
    let (ga, y): ([f32; 256], [f32; 256]) = (
        core::array::from_fn(|_| rng.f32()),
        core::array::from_fn(|_| rng.f32()),
    );
    let context: [f32; 256 * 5] = core::array::from_fn(|_| rng.f32());
    let mut logits = [0.0f32; 5];
    let count = instructions(|| {
        for (l, c) in logits.iter_mut().zip(context.chunks_exact(256)) {
            *l = core::hint::black_box(relu_sum_dot(c, core::hint::black_box(&ga), &y));
        }
    });
    println!("f32 logits (relu_sum_dot) 5x256: {count} instructions");
    // The same sums with the ReLU itself (4 partial sums, as the engine keeps on Arm): bit
    // for bit.
    for (&l, c) in logits.iter().zip(context.chunks_exact(256)) {
        let mut acc = [0.0f32; 4];
        for g in 0..256 {
            let v = c[g] + ga[g];
            acc[g % 4] += core::hint::black_box(if v > 0.0 { v } else { 0.0 }) * y[g];
        }
        let want = acc.iter().sum::<f32>();
        if l.to_bits() != want.to_bits() {
            println!("relu_sum_dot: MISMATCH {l} against {want}");
            ok = false;
        }
    }
    let (gain, bias): ([f32; 128], [f32; 128]) = (
        core::array::from_fn(|_| 1.0 + rng.f32()),
        core::array::from_fn(|_| rng.f32()),
    );
    let norm = LayerNorm {
        gain: &gain,
        bias: &bias,
        width: Const::<128>,
        epsilon: 1e-12,
    };
    let mut column: [f32; 128] = core::array::from_fn(|_| rng.f32());
    let count = instructions(|| {
        if let Some(mut x) = MatMut::from_slice(&mut column, Const::<128>, Dyn(1)) {
            core::hint::black_box(norm.apply(&mut x));
        }
    });
    println!("f32 layer norm 128: {count} instructions");
    let mut scores: [f32; 20] = core::array::from_fn(|_| rng.f32());
    let count = instructions(|| {
        if let Some(mut x) = MatMut::from_slice(&mut scores, Const::<5>, Dyn(4)) {
            softmax_columns(&mut x);
        }
    });
    println!("f32 softmax 4 x 5: {count} instructions");

    // The quantisation of one column of 640 (part of every int8 product above).
    let x: [f32; 640] = core::array::from_fn(|_| rng.f32());
    let mut q = [0i16; 640];
    let count = instructions(|| {
        core::hint::black_box(int8::quantize_column(core::hint::black_box(&x), &mut q));
    });
    println!("int8 quantize_column 640: {count} instructions");

    ok &= f32_product::<128, 640>("f32 enc x", weights_f32, 1);
    ok &= f32_tr_product::<640, 256>("f32 G2mu^T x", weights_f32, 1);
    ok &= f32_product::<256, 128>("f32 G1 half, F1", weights_f32, 1);
    ok &= f32_product::<128, 256>("f32 F2", weights_f32, 1);
    ok &= f32_product::<128, 128>("f32 Wq", weights_f32, 1);
    ok &= f32_product::<128, 640>("f32 enc x", weights_f32, 5);
    ok &= f32_tr_product::<640, 256>("f32 G2mu^T x", weights_f32, 5);
    // Odd shapes: every remainder of the row tiles and of the steps of 8.
    ok &= f32_tr_product::<21, 13>("f32 odd tr", weights_f32, 1);
    ok &= f32_tr_product::<37, 19>("f32 odd tr", weights_f32, 1);
    ok &= f32_product::<37, 19>("f32 odd", weights_f32, 1);
    ok &= f32_product::<53, 3>("f32 odd", weights_f32, 1);

    println!("{}", if ok { "ok" } else { "FAILED" });
    process::exit(if ok { 0 } else { 1 })
}
