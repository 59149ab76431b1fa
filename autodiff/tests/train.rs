//! TrainStep: AdamW against hand-computed values, the NaN guard, the learning-rate
//! schedule, both clippings, checkpoints, evaluation graphs, determinism, and a small MLP
//! that learns a synthetic classification task.

use autodiff::{AdamWConfig, AutodiffError, Backend, Evaluator, GraphBuilder, TrainStep};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;

fn no_clip() -> AdamWConfig {
    AdamWConfig {
        lr: 0.1,
        clip_value: None,
        clip_norm: None,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    }
}

/// loss = sum(p * c): the gradient is exactly c.
fn linear_step(config: AdamWConfig, p0: Vec<f32>, c: Vec<f32>) -> TrainStep {
    let n = p0.len();
    let mut g = GraphBuilder::new();
    let p = g.param("p", &[n], p0);
    let cst = g.input("c", &[n]);
    let loss = (p * cst).sum(&[0]);
    let mut step = TrainStep::new(g, loss, &[], config, Backend::Cpu).unwrap();
    step.set_input("c", &c).unwrap();
    step
}

/// TF1 AdamW by hand, in f64: p <- p - wd p - lr_t m / (sqrt(v) + eps).
fn adamw_by_hand(p: &[f64], grads: &[Vec<f64>], lr: f64, wd: f64) -> Vec<f64> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut p = p.to_vec();
    let mut m = vec![0.0; p.len()];
    let mut v = vec![0.0; p.len()];
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as i32;
        let lr_t = lr * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        for i in 0..p.len() {
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] = p[i] - wd * p[i] - lr_t * m[i] / (v[i].sqrt() + eps);
        }
    }
    p
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (*g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn adamw_matches_hand_computation_over_three_steps() {
    let p0 = vec![1.0f32, -2.0, 0.5, 3.0];
    let c = vec![0.3f32, -0.7, 2.0, 0.0];
    let mut step = linear_step(no_clip(), p0.clone(), c.clone());
    for s in 0..3 {
        let out = step.step(s).unwrap();
        assert!(!out.skipped);
    }
    let g: Vec<f64> = c.iter().map(|&x| x as f64).collect();
    let want = adamw_by_hand(
        &p0.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        &[g.clone(), g.clone(), g],
        0.1,
        0.01,
    );
    assert_close(&step.params().unwrap()[0].1, &want, 1e-5);
    assert_eq!(step.updates(), 3);
    // The first step of Adam moves each coordinate by ~lr * sign(g) (plus decay).
    let first = adamw_by_hand(&[1.0], &[vec![0.3]], 0.1, 0.01)[0];
    assert!((first - (1.0 - 0.01 - 0.1)).abs() < 1e-6);
}

#[test]
fn loss_is_reported_before_the_update() {
    let mut step = linear_step(no_clip(), vec![1.0, 2.0], vec![3.0, 4.0]);
    assert_eq!(step.step(0).unwrap().loss, 11.0);
}

#[test]
fn nan_or_inf_gradient_skips_the_update_and_is_counted() {
    let p0 = vec![1.0f32, 2.0];
    let mut step = linear_step(no_clip(), p0.clone(), vec![0.5, 0.5]);
    step.step(0).unwrap();
    let after_one = step.params().unwrap();
    let state_one = step.optimizer_state().unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        step.set_input("c", &[0.5, bad]).unwrap();
        let out = step.step(1).unwrap();
        assert!(out.skipped);
        assert_eq!(step.params().unwrap(), after_one);
        assert_eq!(step.optimizer_state().unwrap(), state_one);
    }
    assert_eq!(step.skipped_steps(), 3);
    assert_eq!(step.updates(), 1);
    // Good data again: the next update is Adam's second one.
    step.set_input("c", &[0.5, 0.5]).unwrap();
    assert!(!step.step(2).unwrap().skipped);
    let want = adamw_by_hand(&[1.0, 2.0], &[vec![0.5, 0.5], vec![0.5, 0.5]], 0.1, 0.01);
    assert_close(&step.params().unwrap()[0].1, &want, 1e-5);
}

#[test]
fn staircase_schedule() {
    let c = AdamWConfig {
        lr: 1e-3,
        decay_rate: 0.2,
        decay_steps: 15_000,
        ..AdamWConfig::default()
    };
    assert_eq!(c.learning_rate(0), 1e-3);
    assert_eq!(c.learning_rate(14_999), 1e-3);
    let close = |a: f32, b: f64| ((a as f64 - b) / b).abs() < 1e-6;
    assert!(close(c.learning_rate(15_000), 2e-4));
    assert!(close(c.learning_rate(44_999), 4e-5));
    assert!(close(c.learning_rate(45_000), 8e-6));
    // Bias correction folded into the step size.
    // (The betas are f32 settings: use their exact values.)
    let (b1, b2) = (0.9f32 as f64, 0.999f32 as f64);
    assert!(close(
        c.step_size(0, 1),
        1e-3 * (1.0 - b2).sqrt() / (1.0 - b1)
    ));
    assert!(close(
        c.step_size(15_000, 3),
        2e-4 * (1.0 - b2.powi(3)).sqrt() / (1.0 - b1.powi(3))
    ));
    let none = AdamWConfig {
        decay_steps: 0,
        ..c
    };
    assert_eq!(none.learning_rate(1_000_000), 1e-3);
}

#[test]
fn schedule_is_applied_inside_step() {
    // With decay every step by 0.5, the second update uses half the rate.
    let config = AdamWConfig {
        decay_rate: 0.5,
        decay_steps: 1,
        weight_decay: 0.0,
        ..no_clip()
    };
    let mut step = linear_step(config, vec![0.0], vec![1.0]);
    step.step(0).unwrap();
    step.step(1).unwrap();
    // Constant gradient 1; stage 0 uses lr 0.1, stage 1 uses 0.05.
    let p = step.params().unwrap()[0].1[0] as f64;
    let (b1, b2) = (0.9f64, 0.999f64);
    let m1 = 0.1;
    let v1 = 0.001;
    let p1 = -0.1 * (1.0 - b2).sqrt() / (1.0 - b1) * m1 / f64::sqrt(v1);
    let m2 = b1 * m1 + 0.1;
    let v2 = b2 * v1 + 0.001;
    let p2 = p1 - 0.05 * (1.0 - b2 * b2).sqrt() / (1.0 - b1 * b1) * m2 / v2.sqrt();
    assert!((p - p2).abs() < 1e-5, "{p} vs {p2}");
}

#[test]
fn clip_by_value_then_by_norm() {
    // Gradient c = [3, -4, 0.05, 0]: clip to [-1, 1] -> [1, -1, 0.05, 0], norm sqrt(2.0025);
    // clip_by_norm(0.5) scales by 0.5 / norm. With lr huge and eps tiny, Adam's first
    // step only keeps the sign, so check the clipped gradient through m = (1-b1) g.
    let config = AdamWConfig {
        clip_value: Some(1.0),
        clip_norm: Some(0.5),
        weight_decay: 0.0,
        ..no_clip()
    };
    let mut step = linear_step(config, vec![0.0; 4], vec![3.0, -4.0, 0.05, 0.0]);
    step.step(0).unwrap();
    let m = &step.optimizer_state().unwrap().moments[0].1;
    let norm = (1.0f64 + 1.0 + 0.0025).sqrt();
    let g: Vec<f64> = [1.0, -1.0, 0.05, 0.0]
        .iter()
        .map(|x| x * 0.5 / norm)
        .collect();
    let want: Vec<f64> = g.iter().map(|x| 0.1 * x).collect();
    assert_close(m, &want, 1e-6);
    let v = &step.optimizer_state().unwrap().moments[0].2;
    let want_v: Vec<f64> = g.iter().map(|x| 0.001 * x * x).collect();
    assert_close(v, &want_v, 1e-6);
}

#[test]
fn clip_by_norm_leaves_small_gradients_alone() {
    let config = AdamWConfig {
        clip_value: Some(1.0),
        clip_norm: Some(10.0),
        ..no_clip()
    };
    let mut step = linear_step(config, vec![0.0; 2], vec![0.3, -0.4]);
    step.step(0).unwrap();
    let m = &step.optimizer_state().unwrap().moments[0].1;
    assert_close(m, &[0.03, -0.04], 1e-6);
}

#[test]
fn checkpoint_round_trip_continues_identically() {
    let run = |resume: bool| {
        let mut step = linear_step(no_clip(), vec![1.0, -1.0, 0.5], vec![0.2, 0.4, -0.6]);
        step.step(0).unwrap();
        step.step(1).unwrap();
        if resume {
            let params = step.params().unwrap();
            let state = step.optimizer_state().unwrap();
            let mut fresh = linear_step(no_clip(), vec![0.0; 3], vec![0.2, 0.4, -0.6]);
            fresh.load_params(&params).unwrap();
            fresh.load_optimizer_state(&state).unwrap();
            step = fresh;
        }
        step.step(2).unwrap();
        step.params().unwrap()
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn errors_are_typed() {
    let mut step = linear_step(no_clip(), vec![1.0], vec![1.0]);
    assert!(matches!(
        step.set_input("nope", &[1.0]),
        Err(AutodiffError::UnknownName(_))
    ));
    assert!(matches!(
        step.set_input("c", &[1.0, 2.0]),
        Err(AutodiffError::DataLength { .. })
    ));
    assert!(matches!(
        step.set_input("p", &[1.0]),
        Err(AutodiffError::UnknownName(_))
    ));
    assert!(matches!(
        step.set_input_vec("c", vec![1.0, 2.0]),
        Err(AutodiffError::DataLength { .. })
    ));
    assert!(matches!(
        step.load_params(&[("p".into(), vec![1.0, 2.0])]),
        Err(AutodiffError::DataLength { .. })
    ));

    let mut g = GraphBuilder::new();
    let p = g.param("p", &[2], vec![1.0, 2.0]);
    let x = g.input("x", &[2]);
    let loss = (p * x).sum(&[0]);
    let mut step = TrainStep::new(g, loss, &[], no_clip(), Backend::Cpu).unwrap();
    assert!(matches!(step.step(0), Err(AutodiffError::MissingInput(n)) if n == "x"));

    let mut g = GraphBuilder::new();
    let a = g.param("a", &[2, 3], vec![0.0; 6]);
    let b = g.param("b", &[2, 2], vec![0.0; 4]);
    let bad = a.matmul(b).sum(&[0, 1]);
    assert!(matches!(
        TrainStep::new(g, bad, &[], no_clip(), Backend::Cpu),
        Err(AutodiffError::InvalidArgument { op: "matmul", .. })
    ));
}

/// Two-class-per-cluster synthetic problem: 4 Gaussian blobs in 8-D, labels by blob.
fn blobs(rng: &mut Xoshiro256PlusPlus, n: usize) -> (Vec<f32>, Vec<f32>) {
    let centers: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..8).map(|_| rng.gen_range(-2.0..2.0)).collect())
        .collect();
    let noise = Normal::new(0.0f32, 0.7).unwrap();
    let mut x = Vec::with_capacity(n * 8);
    let mut y = Vec::with_capacity(n * 4);
    for i in 0..n {
        let c = i % 4;
        x.extend(centers[c].iter().map(|&m| m + noise.sample(rng)));
        y.extend((0..4).map(|k| if k == c { 1.0 } else { 0.0 }));
    }
    (x, y)
}

fn glorot(rng: &mut Xoshiro256PlusPlus, fan_in: usize, fan_out: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
    (0..fan_in * fan_out)
        .map(|_| rng.gen_range(-limit..limit))
        .collect()
}

/// A 2-layer MLP: loss (mean CE) and accuracy outputs.
fn mlp(seed: u64, batch: usize, backend: Backend) -> TrainStep {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut g = GraphBuilder::new();
    let x = g.input("x", &[batch, 8]);
    let y = g.input("y", &[batch, 4]);
    let w1 = g.param("w1", &[8, 32], glorot(&mut rng, 8, 32));
    let w2 = g.param("w2", &[32, 4], glorot(&mut rng, 32, 4));
    let logits = x.matmul(w1).relu().matmul(w2);
    let loss = logits.cross_entropy_with_logits(y).mean_all();
    let probs = logits.softmax(1);
    let wrong = (probs * y).sum(&[1]).less_than(probs.max_axis(1));
    let accuracy = -wrong.mean_all() + 1.0;
    let config = AdamWConfig {
        lr: 0.01,
        weight_decay: 1e-6,
        clip_value: Some(1.0),
        clip_norm: Some(5.0),
        ..AdamWConfig::default()
    };
    TrainStep::new(g, loss, &[accuracy], config, backend).unwrap()
}

#[test]
fn mlp_learns_blobs_to_95_percent() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let batch = 64;
    let mut step = mlp(1, batch, Backend::Cpu);
    let (xs, ys) = blobs(&mut rng, batch * 20);
    let mut first_loss = None;
    for s in 0..300u64 {
        let b = (s as usize) % 20;
        step.set_input("x", &xs[b * batch * 8..(b + 1) * batch * 8])
            .unwrap();
        step.set_input("y", &ys[b * batch * 4..(b + 1) * batch * 4])
            .unwrap();
        let out = step.step(s).unwrap();
        first_loss.get_or_insert(out.loss);
    }
    // Held-out evaluation through a separate graph sharing the trained parameters.
    let mut g = GraphBuilder::new();
    let n = 256;
    let x = g.input("x", &[n, 8]);
    let w1 = g.param("w1", &[8, 32], vec![0.0; 256]);
    let w2 = g.param("w2", &[32, 4], vec![0.0; 128]);
    let logits = x.matmul(w1).relu().matmul(w2);
    let mut eval = Evaluator::new(g, &[logits], Backend::Cpu).unwrap();
    eval.load_params(&step.params().unwrap()).unwrap();
    // Same blob centres (same seed), fresh noise.
    let (xt, yt) = blobs_with_centres_of(7, n, 99);
    eval.set_input("x", &xt).unwrap();
    let logits = &eval.run().unwrap()[0];
    let correct = (0..n)
        .filter(|&i| {
            let row = &logits[i * 4..(i + 1) * 4];
            let pred = (0..4)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            yt[i * 4 + pred] == 1.0
        })
        .count();
    let acc = correct as f32 / n as f32;
    assert!(acc >= 0.95, "held-out accuracy {acc}");
    let train_acc = step.output(0).unwrap()[0];
    assert!(train_acc >= 0.9, "training-batch accuracy {train_acc}");
    assert!(first_loss.unwrap() > 1.0);
}

/// Fresh samples from the blobs whose centres `blobs` draws with `seed`.
fn blobs_with_centres_of(seed: u64, n: usize, noise_seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut r = Xoshiro256PlusPlus::seed_from_u64(seed);
    let centers: Vec<Vec<f32>> = (0..4)
        .map(|_| (0..8).map(|_| r.gen_range(-2.0..2.0)).collect())
        .collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(noise_seed);
    let noise = Normal::new(0.0f32, 0.7).unwrap();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 4;
        x.extend(centers[c].iter().map(|&m| m + noise.sample(&mut rng)));
        y.extend((0..4).map(|k| if k == c { 1.0 } else { 0.0 }));
    }
    (x, y)
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let run = || {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let (xs, ys) = blobs(&mut rng, 32 * 4);
        let mut step = mlp(5, 32, Backend::Cpu);
        for s in 0..25u64 {
            let b = (s as usize) % 4;
            step.set_input("x", &xs[b * 32 * 8..(b + 1) * 32 * 8])
                .unwrap();
            step.set_input("y", &ys[b * 32 * 4..(b + 1) * 32 * 4])
                .unwrap();
            step.step(s).unwrap();
        }
        step.params().unwrap()
    };
    let (a, b) = (run(), run());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let bits_a: Vec<u32> = va.iter().map(|x| x.to_bits()).collect();
        let bits_b: Vec<u32> = vb.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits_a, bits_b, "parameter {na} differs between runs");
    }
}

#[test]
fn threaded_matmuls_are_bit_identical_across_runs() {
    // Large enough for matrixmultiply to split the products over threads.
    let run = || {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let mut g = GraphBuilder::new();
        let x = g.input("x", &[512, 256]);
        let w1 = g.param("w1", &[256, 256], glorot(&mut rng, 256, 256));
        let w2 = g.param("w2", &[256, 64], glorot(&mut rng, 256, 64));
        let loss = x
            .matmul(w1)
            .relu()
            .matmul(w2)
            .squared_error(x.slice(1, 0, 64))
            .mean_all();
        let mut step = TrainStep::new(g, loss, &[], AdamWConfig::default(), Backend::Cpu).unwrap();
        let data: Vec<f32> = (0..512 * 256).map(|_| rng.gen_range(-1.0..1.0)).collect();
        step.set_input("x", &data).unwrap();
        for s in 0..3 {
            step.step(s).unwrap();
        }
        step.params().unwrap()
    };
    let (a, b) = (run(), run());
    for ((n, va), (_, vb)) in a.iter().zip(&b) {
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{n} differs"
        );
    }
}
