//! The fast CPU kernels against luminal's uncompiled primitive ops (the reference
//! semantics), and luminal's f32 execution against the f64 reference evaluator.
//!
//! Element-wise ops, copies and reductions must agree bit for bit (same arithmetic, same
//! summation order); matmuls (sgemm) to 1e-5 relative.

use autodiff::reference::evaluate_f64;
use autodiff::{backward, Backend, Evaluator, GraphBuilder, Tensor};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

type Build = fn(&mut GraphBuilder) -> Vec<Tensor>;

fn inputs(seed: u64, specs: &[(&str, &[usize])]) -> Vec<(String, Vec<f32>)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    specs
        .iter()
        .map(|(n, s)| {
            (
                n.to_string(),
                (0..s.iter().product::<usize>())
                    .map(|_| rng.gen_range(-2.0f32..2.0))
                    .collect(),
            )
        })
        .collect()
}

fn run(
    build: Build,
    feed: &[(String, Vec<f32>)],
    backend: Backend,
) -> (Vec<Vec<f32>>, Vec<String>) {
    let mut g = GraphBuilder::new();
    let outs = build(&mut g);
    let mut ev = Evaluator::new(g, &outs, backend).unwrap();
    for (n, d) in feed {
        ev.set_input(n, d).unwrap();
    }
    let names = ev.op_names();
    (ev.run().unwrap(), names)
}

fn compare(build: Build, specs: &[(&str, &[usize])], exact: bool) {
    let feed = inputs(11, specs);
    let (reference, _) = run(build, &feed, Backend::CpuPrimitive);
    for backend in [Backend::Cpu, Backend::CpuLuminal] {
        let (fast, ops) = run(build, &feed, backend);
        if backend == Backend::Cpu {
            for interpreted in [
                "Add",
                "Mul",
                "Mod",
                "LessThan",
                "Contiguous",
                "SumReduce(",
                "MaxReduce(",
            ] {
                assert!(
                    !ops.iter().any(|o| o == interpreted
                        || o.starts_with(interpreted) && interpreted.ends_with('(')),
                    "{interpreted} left in the fast graph: {ops:?}"
                );
            }
        }
        for (i, (f, r)) in fast.iter().zip(&reference).enumerate() {
            assert_eq!(f.len(), r.len());
            for (j, (a, b)) in f.iter().zip(r).enumerate() {
                let ok = (a.is_nan() && b.is_nan())
                    || if exact && backend == Backend::Cpu {
                        a.to_bits() == b.to_bits()
                    } else {
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0)
                    };
                assert!(ok, "{backend:?} output {i}[{j}]: {a} vs reference {b}");
            }
        }
    }
}

#[test]
fn elementwise_over_every_view_kind() {
    compare(
        |g| {
            let a = g.input("a", &[3, 4, 5]);
            let b = g.input("b", &[5, 4]);
            let c = g.input("c", &[4]);
            let permuted = a * b.permute(&[1, 0]).expand(0, 3);
            let broadcast = a + c.expand(0, 3).expand(2, 5);
            let sliced = a.slice(2, 1, 5) * a.slice(2, 0, 4);
            let padded = a.pad(1, 2, 1) + a.pad(1, 1, 2);
            let two_sided = a.slice(1, 1, 3) % a.slice(1, 2, 4).add_scalar(2.5);
            let cmp = a.less_than(a.permute(&[0, 2, 1]).contiguous().reshape(&[3, 4, 5]));
            let unary = (a.exp() + a.sin()).recip().sqrt();
            vec![permuted, broadcast, sliced, padded, two_sided, cmp, unary]
        },
        &[("a", &[3, 4, 5]), ("b", &[5, 4]), ("c", &[4])],
        true,
    );
}

#[test]
fn copies_and_reductions_over_every_view_kind() {
    compare(
        |g| {
            let a = g.input("a", &[2, 3, 4, 5]);
            let mut outs = Vec::new();
            for axis in 0..4 {
                outs.push(a.sum(&[axis]));
                outs.push(a.max_axis(axis));
                outs.push(a.permute(&[3, 1, 0, 2]).sum(&[axis]));
                outs.push(a.permute(&[2, 0, 3, 1]).max_axis(axis));
                outs.push(a.pad(3, 1, 2).sum(&[axis]));
                outs.push(a.slice(1, 1, 3).max_axis(axis));
                outs.push(a.slice(3, 2, 5).sum(&[axis]));
            }
            outs.push(a.expand(2, 3).sum(&[2]));
            outs.push(a.pad(0, 1, 0).permute(&[1, 0, 3, 2]).contiguous());
            outs.push(a.softmax(3));
            outs.push(a.layer_norm(&[1, 3], 1e-5));
            outs
        },
        &[("a", &[2, 3, 4, 5])],
        true,
    );
}

#[test]
fn matmuls_of_every_layout() {
    compare(
        |g| {
            let a = g.input("a", &[6, 4]);
            let w = g.input("w", &[4, 3]);
            let x = g.input("x", &[2, 6, 4]);
            let y = g.input("y", &[2, 4, 5]);
            let q = g.input("q", &[2, 3, 6, 4]);
            vec![
                a.matmul(w),
                a.t().t().matmul(w.t().contiguous().t()),
                w.t().matmul(a.t()),
                x.matmul(w),
                x.matmul(y),
                x.t().t().matmul(y.slice(2, 1, 4)),
                q.matmul(q.t()),
                q.permute(&[1, 0, 2, 3]).matmul(q.permute(&[1, 0, 3, 2])),
            ]
        },
        &[
            ("a", &[6, 4]),
            ("w", &[4, 3]),
            ("x", &[2, 6, 4]),
            ("y", &[2, 4, 5]),
            ("q", &[2, 3, 6, 4]),
        ],
        false,
    );
}

#[test]
fn gradients_of_an_attention_block_agree() {
    compare(
        |g| {
            let x = g.input("x", &[2, 5, 8]);
            let wq = g.param(
                "wq",
                &[8, 8],
                (0..64)
                    .map(|i| ((i * 37 % 17) as f32 - 8.0) / 20.0)
                    .collect(),
            );
            let wk = g.param(
                "wk",
                &[8, 8],
                (0..64)
                    .map(|i| ((i * 29 % 13) as f32 - 6.0) / 20.0)
                    .collect(),
            );
            let wf = g.param(
                "wf",
                &[8, 4],
                (0..32)
                    .map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0)
                    .collect(),
            );
            let q = x.matmul(wq).reshape(&[2, 5, 2, 4]).permute(&[0, 2, 1, 3]);
            let k = x.matmul(wk).reshape(&[2, 5, 2, 4]).permute(&[0, 2, 1, 3]);
            let att = (q.matmul(k.t()) * 0.5).softmax(3).matmul(k);
            let h = att
                .permute(&[0, 2, 1, 3])
                .reshape(&[2, 5, 8])
                .layer_norm(&[2], 1e-12);
            let logits = (h + x).relu().matmul(wf);
            let loss = logits.log_softmax(2).mean_all();
            let mut outs = vec![loss];
            outs.extend(backward(loss, &[wq, wk, wf]).unwrap());
            outs
        },
        &[("x", &[2, 5, 8])],
        false,
    );
}

#[test]
fn luminal_f32_matches_the_f64_reference_evaluator() {
    let feed = inputs(5, &[("a", &[3, 4]), ("b", &[4, 3])]);
    let build = |g: &mut GraphBuilder| {
        let a = g.input("a", &[3, 4]);
        let b = g.input("b", &[4, 3]);
        vec![
            a.matmul(b).softmax(1),
            a.pad(0, 1, 1).slice(1, 1, 4).max_axis(0),
            a.exp2().log2() % b.t().add_scalar(3.0),
            a.less_than(b.t()) + a.sin() * b.t().sqrt().recip(),
            a.layer_norm(&[0, 1], 1e-6),
        ]
    };
    let (f32s, _) = run(build, &feed, Backend::CpuPrimitive);
    let mut g = GraphBuilder::new();
    let outs = build(&mut g);
    let (a, b) = (g.tensor("a").unwrap(), g.tensor("b").unwrap());
    let as64 = |v: &Vec<f32>| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let f64s = evaluate_f64(&outs, &[(a, as64(&feed[0].1)), (b, as64(&feed[1].1))]).unwrap();
    for (x, y) in f32s.iter().zip(&f64s) {
        for (p, q) in x.iter().zip(y) {
            let same_nan = p.is_nan() && q.is_nan();
            assert!(
                same_nan || (*p as f64 - q).abs() <= 1e-5 * q.abs().max(1.0),
                "{p} vs {q}"
            );
        }
    }
}
