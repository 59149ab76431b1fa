//! Measures one training step (forward, backward, clipped AdamW) of an MLP and of an
//! attention block at AWGIM-like sizes, per CPU backend.
//!
//! `cargo bench -p autodiff --bench step -- [tasks] [rows] [D] [d] [steps] [backends]`
//! e.g. `-- 32 80 640 128 5 cpu,luminal` (defaults: 32 80 640 128 5 cpu).

use std::time::Instant;

use autodiff::{AdamWConfig, Backend, GraphBuilder, Tensor, TrainStep};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn values(rng: &mut Xoshiro256PlusPlus, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn param(
    g: &mut GraphBuilder,
    rng: &mut Xoshiro256PlusPlus,
    name: &str,
    shape: &[usize],
) -> Tensor {
    let n = shape.iter().product();
    let scale = (6.0 / (shape[0] + shape[shape.len() - 1]) as f32).sqrt();
    g.param(name, shape, values(rng, n, scale))
}

/// Encoder + 2-layer generator MLP on every row: [tasks*rows, D] -> d -> 2d -> D.
fn mlp(tasks: usize, rows: usize, big_d: usize, d: usize, backend: Backend) -> TrainStep {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut g = GraphBuilder::new();
    let x = g.input("x", &[tasks * rows, big_d]);
    let target = g.input("target", &[tasks * rows, big_d]);
    let enc = param(&mut g, &mut rng, "enc", &[big_d, d]);
    let g1 = param(&mut g, &mut rng, "g1", &[d, 2 * d]);
    let g2 = param(&mut g, &mut rng, "g2", &[2 * d, big_d]);
    let out = x.matmul(enc).matmul(g1).relu().matmul(g2);
    let loss = out.squared_error(target).mean_all();
    TrainStep::new(g, loss, &[], AdamWConfig::default(), backend).expect("mlp graph")
}

/// One AWGIM attention block (4 heads, per-row layer norm, feed-forward 2d) over
/// [tasks, rows, d], cross-entropy of a linear read-out.
fn attention(tasks: usize, rows: usize, d: usize, backend: Backend) -> TrainStep {
    let heads = 4;
    let dh = d / heads;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let mut g = GraphBuilder::new();
    let x = g.input("x", &[tasks, rows, d]);
    let y = g.input("y", &[tasks, rows, 5]);
    let wq = param(&mut g, &mut rng, "wq", &[d, d]);
    let wk = param(&mut g, &mut rng, "wk", &[d, d]);
    let wv = param(&mut g, &mut rng, "wv", &[d, d]);
    let wo = param(&mut g, &mut rng, "wo", &[d, d]);
    let f1 = param(&mut g, &mut rng, "f1", &[d, 2 * d]);
    let f2 = param(&mut g, &mut rng, "f2", &[2 * d, d]);
    let ro = param(&mut g, &mut rng, "readout", &[d, 5]);
    let split = |t: Tensor| t.reshape(&[tasks, rows, heads, dh]).permute(&[0, 2, 1, 3]);
    let (q, k, v) = (
        split(x.matmul(wq)),
        split(x.matmul(wk)),
        split(x.matmul(wv)),
    );
    let a = (q.matmul(k.t()) * (1.0 / (dh as f32).sqrt()))
        .softmax(3)
        .matmul(v);
    let a = a
        .permute(&[0, 2, 1, 3])
        .reshape(&[tasks, rows, d])
        .matmul(wo);
    let h = (x + a).layer_norm(&[2], 1e-12);
    let h = (h + h.matmul(f1).relu().matmul(f2)).layer_norm(&[2], 1e-12);
    let loss = h.matmul(ro).cross_entropy_with_logits(y).mean_all();
    TrainStep::new(g, loss, &[], AdamWConfig::default(), backend).expect("attention graph")
}

fn time(name: &str, backend: Backend, mut step: TrainStep, feeds: &[(&str, usize)], steps: u64) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    for (input, n) in feeds {
        let data = values(&mut rng, *n, 1.0);
        step.set_input(input, &data).expect("input");
    }
    step.step(0).expect("warm-up step");
    let start = Instant::now();
    for s in 1..=steps {
        step.step(s).expect("step");
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!(
        "{name:<10} {backend:<12?} {ms:>10.1} ms/step  ({} nodes)",
        step.node_count()
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (tasks, rows, big_d, d, steps) = (
        num(0, 32),
        num(1, 80),
        num(2, 640),
        num(3, 128),
        num(4, 5) as u64,
    );
    let backends: Vec<Backend> = args
        .get(5)
        .map(String::as_str)
        .unwrap_or("cpu")
        .split(',')
        .filter_map(|b| match b {
            "cpu" => Some(Backend::Cpu),
            "luminal" => Some(Backend::CpuLuminal),
            "primitive" => Some(Backend::CpuPrimitive),
            _ => None,
        })
        .collect();
    println!("tasks {tasks}, rows/task {rows}, D {big_d}, d {d}, {steps} timed steps");
    for &b in &backends {
        let n = tasks * rows;
        time(
            "mlp",
            b,
            mlp(tasks, rows, big_d, d, b),
            &[("x", n * big_d), ("target", n * big_d)],
            steps,
        );
        time(
            "attention",
            b,
            attention(tasks, rows, d, b),
            &[("x", n * d), ("y", n * 5)],
            steps,
        );
    }
}
