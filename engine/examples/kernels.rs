//! The engine's hand-written operations against the nalgebra code they replace, same build,
//! same views, paper-configuration shapes.
//!
//! `cargo run -p engine --release --example kernels [REPS [FILTER]]` (FILTER: only the
//! product rows whose label contains it, e.g. `G2mu`)
//!
//! Each row is one place where the engine does not simply call nalgebra: the matrix products
//! (`ops::linear`), the attention scores (keys stored transposed), the layer-norm statistics,
//! the softmax and the fused logits. It prints the best time of REPS runs of each (other
//! processes on a shared machine only ever add time) and, for products, the rate in GMAC/s
//! (multiply-adds per second). Single thread.

use std::hint::black_box;
use std::time::Instant;

use engine::ops::int8::{self, QuantMat};
use engine::ops::layer_norm::LayerNorm;
use engine::ops::linear::{mul_add_to, mul_to, tr_mul_to};
use engine::ops::softmax::softmax_columns;
use engine::ops::{relu_sum_dot, Mat, MatMut, Weight};
use nalgebra::{Const, Dyn, MatrixViewMut, SMatrix, SVector};

/// Uniform values in [-0.5, 0.5) from a fixed LCG.
fn random(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// Whether the product row `label` is wanted (the command line's FILTER, if any).
fn wanted(label: &str) -> bool {
    std::env::args()
        .nth(2)
        .is_none_or(|filter| label.contains(&filter))
}

/// Fastest of `reps` runs of `f` in seconds, each run repeated until it lasts about 20 us.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut inner = 1;
    loop {
        let t = Instant::now();
        for _ in 0..inner {
            f();
        }
        if t.elapsed().as_secs_f64() > 2e-5 {
            break;
        }
        inner *= 2;
    }
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// One table row; `macs` = 0 leaves the rates out.
fn row(label: &str, macs: usize, nalgebra: f64, engine: f64) {
    let rate = |t: f64| {
        if macs == 0 {
            String::new()
        } else {
            format!("{:.1}", macs as f64 / t / 1e9)
        }
    };
    println!(
        "| {label:<46} | {:>8.2} | {:>8.2} | {:>6} | {:>6} |",
        nalgebra * 1e6,
        engine * 1e6,
        rate(nalgebra),
        rate(engine),
    );
}

/// `C (M x n) = A (M x K) B` against nalgebra's `mul_to`, `C += A B` against its `gemm`.
fn product<const M: usize, const K: usize>(label: &str, n: usize, reps: usize) {
    if !wanted(label) {
        return;
    }
    let a_data = random(M * K, 1);
    let b_data = random(K * n, 2);
    let mut c_data = random(M * n, 3);
    let a = Weight::from_slice(&a_data, Const::<M>, Const::<K>).expect("M K values");
    let b = Mat::from_slice(&b_data, Const::<K>, Dyn(n)).expect("K n values");
    let macs = M * K * n;
    let nalgebra = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        black_box(&a.view()).mul_to(black_box(&b.view()), &mut c);
    });
    let engine = time(reps, || {
        let mut c = MatMut::from_slice(&mut c_data, Const::<M>, Dyn(n)).expect("M n values");
        mul_to(black_box(&a), black_box(&b), &mut c);
    });
    row(
        &format!("{label}: {M}x{K} * {K}x{n}"),
        macs,
        nalgebra,
        engine,
    );
    let nalgebra = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        c.gemm(1.0, black_box(&a.view()), black_box(&b.view()), 1.0);
    });
    let engine = time(reps, || {
        let mut c = MatMut::from_slice(&mut c_data, Const::<M>, Dyn(n)).expect("M n values");
        mul_add_to(black_box(&a), black_box(&b), &mut c);
    });
    row(&format!("{label}, += (residual)"), macs, nalgebra, engine);
}

/// int8 `C (M x n) = A_q B` (`ops::int8`, the weights quantised per row from the same f32
/// matrix) against the f32 kernel on that matrix: the host's portable int8 path.
fn int8_product<const M: usize, const K: usize>(label: &str, n: usize, reps: usize) {
    if !wanted(label) {
        return;
    }
    let a_data = random(M * K, 1);
    let b_data = random(K * n, 2);
    let mut c_data = random(M * n, 3);
    let a = Weight::from_slice(&a_data, Const::<M>, Const::<K>).expect("M K values");
    let b = Mat::from_slice(&b_data, Const::<K>, Dyn(n)).expect("K n values");
    // The f32 `[in][out]` layout is `a_data` (column-major M x K: K rows of M outputs).
    let (values, scales) =
        formats::quant::quantize(&a_data, K, M, formats::QuantAxis::Out).expect("a valid matrix");
    let q = QuantMat::from_parts(M, K, &values, &scales).expect("M rows of K");
    let mut scratch = vec![0i16; int8::scratch_len(int8::column_len(K), n)];
    let f32_kernel = time(reps, || {
        let mut c = MatMut::from_slice(&mut c_data, Const::<M>, Dyn(n)).expect("M n values");
        mul_to(black_box(&a), black_box(&b), &mut c);
    });
    let int8_kernel = time(reps, || {
        let c = MatMut::from_slice(&mut c_data, Const::<M>, Dyn(n)).expect("M n values");
        int8::mul_to(black_box(&q), black_box(b), &mut scratch, c);
    });
    row(
        &format!("int8 {label}: {M}x{K} * {K}x{n}"),
        M * K * n,
        f32_kernel,
        int8_kernel,
    );
}

/// `C (M x n) = Aᵀ B` with `A`: `K x M`, against nalgebra's `tr_mul_to`.
fn tr_product<const K: usize, const M: usize>(label: &str, n: usize, reps: usize) {
    if !wanted(label) {
        return;
    }
    let a_data = random(M * K, 1);
    let b_data = random(K * n, 2);
    let mut c_data = random(M * n, 3);
    let a = Weight::from_slice(&a_data, Const::<K>, Const::<M>).expect("K M values");
    let b = Mat::from_slice(&b_data, Const::<K>, Dyn(n)).expect("K n values");
    let nalgebra = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        black_box(&a.view()).tr_mul_to(black_box(&b.view()), &mut c);
    });
    let engine = time(reps, || {
        let mut c = MatMut::from_slice(&mut c_data, Const::<M>, Dyn(n)).expect("M n values");
        tr_mul_to(black_box(&a), black_box(&b), &mut c);
    });
    row(
        &format!("{label}: ({K}x{M})ᵀ * {K}x{n}"),
        M * K * n,
        nalgebra,
        engine,
    );
}

/// Layer norm with nalgebra's statistics (`amax`, `mean`, `variance`: sequential folds).
fn layer_norm_nalgebra<const W: usize>(
    x: &mut MatrixViewMut<'_, f32, Const<W>, Dyn>,
    gain: &SVector<f32, W>,
    bias: &SVector<f32, W>,
    eps: f32,
) {
    for mut column in x.column_iter_mut() {
        let scale = column.amax();
        column.unscale_mut(scale);
        let (mean, var) = (column.mean(), column.variance());
        let inv = 1.0 / (var + eps / scale / scale).sqrt();
        column.zip_zip_apply(gain, bias, |v, g, b| *v = (*v - mean) * inv * g + b);
    }
}

/// Softmax with nalgebra's `max`, `sum` and `libm::expf`.
fn softmax_nalgebra<const R: usize>(x: &mut MatrixViewMut<'_, f32, Const<R>, Dyn>) {
    for mut column in x.column_iter_mut() {
        let max = column.max();
        column.apply(|v| *v = libm::expf(*v - max));
        let sum = column.sum();
        column /= sum;
    }
}

fn softmax<const R: usize>(n: usize, reps: usize) {
    let mut data = random(R * n, 7);
    let nalgebra = time(reps, || {
        softmax_nalgebra(&mut MatrixViewMut::<f32, Const<R>, Dyn>::from_slice(
            &mut data, n,
        ))
    });
    let engine = time(reps, || {
        softmax_columns(&mut MatMut::from_slice(&mut data, Const::<R>, Dyn(n)).expect("R n values"))
    });
    row(
        &format!("softmax, {R} keys x {n} columns"),
        0,
        nalgebra,
        engine,
    );
}

fn main() {
    let reps = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("best of {reps} runs, single thread; time in us, rate in GMAC/s");
    println!(
        "| {:<46} | {:>8} | {:>8} | {:>6} | {:>6} |",
        "operation", "nalgebra", "engine", "nalg.", "engine"
    );
    println!(
        "|{:-<48}|{:->10}|{:->10}|{:->8}|{:->8}|",
        "", "", "", "", ""
    );
    for (label, n) in [
        ("support", 25),
        ("batch", 15),
        ("5 queries", 5),
        ("1 query", 1),
    ] {
        product::<128, 640>(&format!("enc, {label}"), n, reps);
        product::<128, 128>(&format!("d x d, {label}"), n, reps);
        product::<256, 128>(&format!("F1, G1 half, {label}"), n, reps);
        product::<128, 256>(&format!("F2, {label}"), n, reps);
    }
    for n in [15, 5, 1] {
        tr_product::<640, 256>(&format!("G2muᵀ x, {n} queries"), n, reps);
    }
    // The int8 products on the host (portable code): the f32 kernel in the first column.
    println!("| int8 rows: f32 kernel / int8 kernel (`ops::int8`, portable) | | | | |");
    for (label, n) in [("batch", 15), ("1 query", 1)] {
        int8_product::<128, 640>(&format!("enc, {label}"), n, reps);
        int8_product::<256, 640>(&format!("G2mu, {label}"), n, reps);
        int8_product::<256, 128>(&format!("F1, {label}"), n, reps);
    }

    if std::env::args().nth(2).is_some() {
        return;
    }
    // Attention scores of 4 heads of 32 features over 25 keys: dot products against the keys
    // (`gemm_tr`) or sums of the transposed keys' columns (`gemm`, the engine's layout).
    for n in [25, 15] {
        let q = SMatrix::<f32, 128, 25>::from_iterator(random(128 * 25, 8));
        let keys = SMatrix::<f32, 128, 25>::from_iterator(random(128 * 25, 9));
        let keys_t = keys.transpose();
        let mut p = SMatrix::<f32, 25, 25>::zeros();
        let heads = |j: usize| j * 32;
        let nalgebra = time(reps, || {
            for j in 0..4 {
                p.columns_mut(0, n).gemm_tr(
                    0.18,
                    &black_box(&keys).rows(heads(j), 32),
                    &black_box(&q).columns(0, n).rows(heads(j), 32),
                    0.0,
                );
            }
        });
        let engine = time(reps, || {
            for j in 0..4 {
                p.columns_mut(0, n).gemm(
                    0.18,
                    &black_box(&keys_t).columns(heads(j), 32),
                    &black_box(&q).columns(0, n).rows(heads(j), 32),
                    0.0,
                );
            }
        });
        row(
            &format!("attention scores, 4 heads, 25 keys x {n}"),
            128 * 25 * n,
            nalgebra,
            engine,
        );
    }

    let gain = SVector::<f32, 128>::from_iterator(random(128, 4).into_iter().map(|v| v + 1.0));
    let bias = SVector::<f32, 128>::from_iterator(random(128, 5));
    let norm = LayerNorm {
        gain: gain.as_slice(),
        bias: bias.as_slice(),
        width: Const::<128>,
        epsilon: 1e-12,
    };
    for n in [25, 15, 1] {
        let mut data = random(128 * n, 6);
        let nalgebra = time(reps, || {
            let mut x = MatrixViewMut::<f32, Const<128>, Dyn>::from_slice(&mut data, n);
            layer_norm_nalgebra(&mut x, &gain, &bias, 1e-12);
        });
        let engine = time(reps, || {
            let mut x = MatMut::from_slice(&mut data, Const::<128>, Dyn(n)).expect("128 n values");
            black_box(norm.apply(&mut x));
        });
        row(&format!("layer norm, 128 x {n}"), 0, nalgebra, engine);
    }

    softmax::<25>(25, reps);
    softmax::<25>(15, reps);
    softmax::<5>(15, reps);

    // The 5 logits of 15 queries from G = 256 generator features.
    let context = SMatrix::<f32, 256, 5>::from_iterator(random(256 * 5, 10));
    let ga = SMatrix::<f32, 256, 15>::from_iterator(random(256 * 15, 11));
    let y = SMatrix::<f32, 256, 15>::from_iterator(random(256 * 15, 12));
    let mut logits = [[0.0f32; 5]; 15];
    let nalgebra = time(reps, || {
        for (out, (ga, y)) in logits.iter_mut().zip(ga.column_iter().zip(y.column_iter())) {
            for (l, c) in out.iter_mut().zip(black_box(&context).column_iter()) {
                *l = (c + ga).map(|h| h.max(0.0)).dot(&y);
            }
        }
    });
    let engine = time(reps, || {
        for (out, (ga, y)) in logits.iter_mut().zip(ga.column_iter().zip(y.column_iter())) {
            for (l, c) in out.iter_mut().zip(black_box(&context).column_iter()) {
                *l = relu_sum_dot(c.as_slice(), ga.as_slice(), y.as_slice());
            }
        }
    });
    row(
        "logits relu(ctx + ga) . y, 5 classes x 15",
        0,
        nalgebra,
        engine,
    );
    black_box(logits);
}
