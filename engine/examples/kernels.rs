//! The engine's hand-written operations against nalgebra's own, same build, same views.
//!
//! `cargo run -p engine --release --example kernels [REPS]`
//!
//! For every product the engine runs with a kernel (paper configuration shapes: `A` is a
//! weight view, the columns are a batch of examples), prints the best time of nalgebra's
//! product and of the kernel, and the rate in GMAC/s (multiply-adds per second); then the same
//! for the per-column layer norm and softmax (nalgebra's reductions vs the vectorised ones).
//! Single thread.

use std::hint::black_box;
use std::time::Instant;

use engine::ops::layer_norm::LayerNorm;
use engine::ops::linear::{mul_add_to, mul_to, tr_mul_to};
use engine::ops::softmax::softmax_columns;
use engine::ops::Weight;
use nalgebra::{Const, Dyn, MatrixView, MatrixViewMut, SMatrix, SVector, SVectorView};

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

/// Fastest of `reps` runs of `f` in seconds (other processes on a shared machine only ever add
/// time), each run repeated until it lasts about 20 us.
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
    let samples: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    samples.into_iter().fold(f64::INFINITY, f64::min)
}

fn row(label: &str, macs: usize, nalgebra: f64, engine: f64) {
    println!(
        "| {label:<44} | {:>8.2} | {:>8.2} | {:>6.1} | {:>6.1} |",
        nalgebra * 1e6,
        engine * 1e6,
        macs as f64 / nalgebra / 1e9,
        macs as f64 / engine / 1e9,
    );
}

/// `C (M x n) = A (M x K) B`, and `C += A B`.
fn product<const M: usize, const K: usize>(label: &str, n: usize, reps: usize) {
    let a_data = random(M * K, 1);
    let b_data = random(K * n, 2);
    let mut c_data = random(M * n, 3);
    let a = Weight::<M, K>::from_slice(&a_data);
    let b = MatrixView::<f32, Const<K>, Dyn>::from_slice(&b_data, n);
    let macs = M * K * n;
    let nalgebra = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        black_box(&a).mul_to(black_box(&b), &mut c);
    });
    let engine = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
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
        c.gemm(1.0, black_box(&a), black_box(&b), 1.0);
    });
    let engine = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        mul_add_to(black_box(&a), black_box(&b), &mut c);
    });
    row(&format!("{label} (+=)"), macs, nalgebra, engine);
}

/// `C (M x n) = Aᵀ B` with `A`: `K x M`.
fn tr_product<const K: usize, const M: usize>(label: &str, n: usize, reps: usize) {
    let a_data = random(M * K, 1);
    let b_data = random(K * n, 2);
    let mut c_data = random(M * n, 3);
    let a = Weight::<K, M>::from_slice(&a_data);
    let b = MatrixView::<f32, Const<K>, Dyn>::from_slice(&b_data, n);
    let nalgebra = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        black_box(&a).tr_mul_to(black_box(&b), &mut c);
    });
    let engine = time(reps, || {
        let mut c = MatrixViewMut::<f32, Const<M>, Dyn>::from_slice(&mut c_data, n);
        tr_mul_to(black_box(&a), black_box(&b), &mut c);
    });
    row(
        &format!("{label}: ({K}x{M})ᵀ * {K}x{n}"),
        M * K * n,
        nalgebra,
        engine,
    );
}

/// nalgebra's statistics: `amax`, `mean`, `variance` (sequential folds).
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

/// nalgebra's `max`, `sum` and libm's `expf`.
fn softmax_nalgebra<const R: usize>(x: &mut MatrixViewMut<'_, f32, Const<R>, Dyn>) {
    for mut column in x.column_iter_mut() {
        let max = column.max();
        column.apply(|v| *v = libm::expf(*v - max));
        let sum = column.sum();
        column.unscale_mut(sum);
    }
}

fn main() {
    let reps = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("best of {reps} repetitions, single thread; time in us, rate in GMAC/s");
    println!(
        "| {:<44} | {:>8} | {:>8} | {:>6} | {:>6} |",
        "operation", "nalgebra", "engine", "nalg.", "engine"
    );
    println!(
        "|{:-<46}|{:->10}|{:->10}|{:->8}|{:->8}|",
        "", "", "", "", ""
    );
    for (label, n) in [
        ("support (NK = 25)", 25),
        ("batch (B = 16)", 16),
        ("one query", 1),
    ] {
        product::<128, 640>(&format!("enc, {label}"), n, reps);
        product::<128, 128>(&format!("d x d, {label}"), n, reps);
        product::<256, 128>(&format!("F1 / G1 half, {label}"), n, reps);
        product::<128, 256>(&format!("F2, {label}"), n, reps);
    }
    for (label, n) in [
        ("support (NK = 25)", 25),
        ("batch (B = 4)", 4),
        ("one query", 1),
    ] {
        product::<32, 64>(&format!("edge enc, {label}"), n, reps);
        product::<32, 32>(&format!("edge d x d, {label}"), n, reps);
        product::<64, 32>(&format!("edge F1, {label}"), n, reps);
    }
    for n in [16, 5, 1] {
        tr_product::<640, 256>(&format!("G2mu x, {n} queries"), n, reps);
    }

    // One head (32 of 128 features) of the support self-attention and of a query batch.
    for n in [25, 16] {
        let q = SMatrix::<f32, 128, 25>::from_iterator(random(128 * 25, 8));
        let keys = SMatrix::<f32, 128, 25>::from_iterator(random(128 * 25, 9));
        let mut p = SMatrix::<f32, 25, 25>::zeros();
        let mut att = SMatrix::<f32, 128, 25>::zeros();
        let keys_t = keys.transpose();
        let scores = time(reps, || {
            for j in 0..4 {
                let head = j * 32..(j + 1) * 32;
                engine::ops::attention::probabilities(
                    black_box(&q.columns(0, n)),
                    black_box(&keys_t),
                    &head,
                    0.18,
                    &mut p.columns_mut(0, n),
                );
            }
        });
        let mix = time(reps, || {
            for j in 0..4 {
                let head = j * 32..(j + 1) * 32;
                engine::ops::attention::mix(
                    black_box(&keys),
                    black_box(&p.columns(0, n)),
                    &head,
                    &mut att.columns_mut(0, n),
                );
            }
        });
        let scores_t = time(reps, || {
            for j in 0..4 {
                let head = j * 32..(j + 1) * 32;
                p.columns_mut(0, n).gemm(
                    0.18,
                    &black_box(&keys_t).columns(head.start, 32),
                    &black_box(&q)
                        .fixed_columns::<25>(0)
                        .columns(0, n)
                        .rows(head.start, 32),
                    0.0,
                );
            }
        });
        row(
            &format!("4 heads: scores + softmax, 25 keys x {n}"),
            128 * 25 * n,
            scores,
            scores,
        );
        row(
            &format!("4 heads: scores (keys transposed, gemm), x {n}"),
            128 * 25 * n,
            scores_t,
            scores_t,
        );
        row(
            &format!("4 heads: values, 25 keys x {n}"),
            128 * 25 * n,
            mix,
            mix,
        );
    }

    let gain = SVector::<f32, 128>::from_iterator(random(128, 4).into_iter().map(|v| v + 1.0));
    let bias = SVector::<f32, 128>::from_iterator(random(128, 5));
    let norm = LayerNorm {
        gain: SVectorView::from_slice(gain.as_slice()),
        bias: SVectorView::from_slice(bias.as_slice()),
        epsilon: 1e-12,
    };
    for n in [25, 16, 1] {
        let mut data = random(128 * n, 6);
        let nalgebra = time(reps, || {
            let mut x = MatrixViewMut::<f32, Const<128>, Dyn>::from_slice(&mut data, n);
            layer_norm_nalgebra(&mut x, &gain, &bias, 1e-12);
        });
        let engine = time(reps, || {
            let mut x = MatrixViewMut::<f32, Const<128>, Dyn>::from_slice(&mut data, n);
            black_box(norm.apply(&mut x));
        });
        row(&format!("layer norm, 128 x {n}"), 0, nalgebra, engine);
    }
    for (r, n) in [(25, 25), (25, 16), (5, 16)] {
        let mut data = random(r * n, 7);
        let (nalgebra, engine) = match r {
            25 => (
                time(reps, || {
                    softmax_nalgebra(&mut MatrixViewMut::<f32, Const<25>, Dyn>::from_slice(
                        &mut data, n,
                    ))
                }),
                time(reps, || {
                    softmax_columns(&mut MatrixViewMut::<f32, Const<25>, Dyn>::from_slice(
                        &mut data, n,
                    ))
                }),
            ),
            _ => (
                time(reps, || {
                    softmax_nalgebra(&mut MatrixViewMut::<f32, Const<5>, Dyn>::from_slice(
                        &mut data, n,
                    ))
                }),
                time(reps, || {
                    softmax_columns(&mut MatrixViewMut::<f32, Const<5>, Dyn>::from_slice(
                        &mut data, n,
                    ))
                }),
            ),
        };
        row(&format!("softmax, {r} x {n}"), 0, nalgebra, engine);
    }
}
