//! CPU vs CUDA: the same small network trained from the same seed on both backends must
//! follow the same loss curve. Needs `--features cuda` and an NVIDIA GPU; run by
//! `scripts/gpu-check.sh`.
#![cfg(feature = "cuda")]

use autodiff::{AdamWConfig, Backend, GraphBuilder, TrainStep};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const STEPS: u64 = 300;
/// Largest allowed |cpu - gpu| / max(|cpu|, 1e-3) of the loss at any step.
const TOLERANCE: f64 = 1e-2;

fn network(backend: Backend) -> TrainStep {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(42);
    let mut init = |n: usize, fan: usize| -> Vec<f32> {
        let s = (3.0 / fan as f32).sqrt();
        (0..n).map(|_| rng.gen_range(-s..s)).collect()
    };
    let (batch, rows, d, classes) = (8, 6, 16, 4);
    let mut g = GraphBuilder::new();
    let x = g.input("x", &[batch, rows, d]);
    let y = g.input("y", &[batch, rows, classes]);
    let wq = g.param("wq", &[d, d], init(d * d, d));
    let wk = g.param("wk", &[d, d], init(d * d, d));
    let w1 = g.param("w1", &[d, 32], init(d * 32, d));
    let w2 = g.param("w2", &[32, classes], init(32 * classes, 32));
    let att = (x.matmul(wq).matmul(x.matmul(wk).t()) * 0.25)
        .softmax(2)
        .matmul(x);
    let h = (x + att).layer_norm(&[2], 1e-12);
    let logits = h.matmul(w1).relu().matmul(w2);
    let loss = logits.cross_entropy_with_logits(y).mean_all();
    let config = AdamWConfig {
        lr: 3e-3,
        ..AdamWConfig::default()
    };
    TrainStep::new(g, loss, &[], config, backend).expect("graph compiles")
}

fn curve(backend: Backend) -> Vec<f32> {
    let mut step = network(backend);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let (batch, rows, d, classes) = (8, 6, 16, 4);
    let mut losses = Vec::new();
    for s in 0..STEPS {
        let x: Vec<f32> = (0..batch * rows * d)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let mut y = vec![0.0f32; batch * rows * classes];
        for r in 0..batch * rows {
            // Label: which quarter of the row's first feature's range it falls in.
            let c = (((x[r * d] + 1.0) * 2.0) as usize).min(classes - 1);
            y[r * classes + c] = 1.0;
        }
        step.set_input("x", &x).unwrap();
        step.set_input("y", &y).unwrap();
        losses.push(step.step(s).unwrap().loss);
    }
    losses
}

#[test]
fn cpu_and_cuda_loss_curves_agree() {
    let cpu = curve(Backend::Cpu);
    let gpu = curve(Backend::Cuda);
    let mut worst = 0.0f64;
    println!("step        cpu loss        gpu loss");
    for (s, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
        let rel = (*a as f64 - *b as f64).abs() / (*a as f64).abs().max(1e-3);
        worst = worst.max(if rel.is_nan() { f64::INFINITY } else { rel });
        if s % 10 == 0 || s + 1 == cpu.len() {
            println!("{s:>4} {a:>15.7} {b:>15.7}");
        }
    }
    println!("max relative difference: {worst:.3e} (tolerance {TOLERANCE:.0e})");
    assert!(
        cpu.last() < cpu.first(),
        "the network did not learn on the CPU"
    );
    assert!(
        worst <= TOLERANCE,
        "CPU and CUDA loss curves diverge: {worst:.3e}"
    );
}
