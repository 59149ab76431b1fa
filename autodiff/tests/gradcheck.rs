//! Finite-difference gradient checks, in f64, for every primitive op, every view kind,
//! the high-level ops AWGIM uses, and a small attention block.
//!
//! Method: the reverse pass adds gradient nodes to the graph; the f64 reference evaluator
//! runs both the gradient nodes and the loss (perturbed by +-1e-5 per element, central
//! differences). The loss is `sum(f(x) * r)` with a fixed random `r`, so every output
//! element matters. Tolerance: |analytic - numeric| <= 1e-6 * max(1, |numeric|); a
//! wrong rule is off by O(1).

use autodiff::reference::{check_gradients, evaluate_f64};
use autodiff::{backward, GraphBuilder, Tensor};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const STEP: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn rng(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

fn values(rng: &mut Xoshiro256PlusPlus, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

/// Check d/dx of sum(f(x...) * r) for parameters with the given shapes and value ranges.
fn check(
    seed: u64,
    shapes: &[(&[usize], f32, f32)],
    f: impl Fn(&mut GraphBuilder, &[Tensor]) -> Tensor,
) {
    let mut r = rng(seed);
    let mut g = GraphBuilder::new();
    let params: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, (shape, lo, hi))| {
            let n = shape.iter().product();
            g.param(&format!("p{i}"), shape, values(&mut r, n, *lo, *hi))
        })
        .collect();
    let out = f(&mut g, &params);
    let shape = out.shape();
    let weights = g.constant_data("weights", &shape, values(&mut r, out.numel(), -1.0, 1.0));
    let loss = if shape.is_empty() {
        out * weights
    } else {
        (out * weights).sum(&(0..shape.len()).collect::<Vec<_>>())
    };
    g.check().expect("graph builds");
    let grads = backward(loss, &params).expect("backward");
    for (p, gr) in params.iter().zip(&grads) {
        assert_eq!(p.shape(), gr.shape(), "gradient shape");
    }
    let report = check_gradients(loss, &params, &grads, &[], STEP).expect("gradcheck");
    assert!(report.checked > 0);
    assert!(
        report.max_error <= TOL,
        "max error {} at {:?} ({} elements)",
        report.max_error,
        report.worst,
        report.checked
    );
}

#[test]
fn add_mul_of_two_params() {
    check(1, &[(&[3, 4], -2.0, 2.0), (&[3, 4], -2.0, 2.0)], |_, p| {
        p[0] * p[1] + p[0]
    });
}

#[test]
fn sub_neg_div() {
    check(2, &[(&[5], -2.0, 2.0), (&[5], 0.5, 2.0)], |_, p| {
        (p[0] - p[1]) / p[1] + (-p[0])
    });
}

#[test]
fn rem_both_operands() {
    check(3, &[(&[6], 1.1, 2.9), (&[6], 0.7, 0.95)], |_, p| {
        p[0] % p[1]
    });
}

#[test]
fn less_than_has_zero_gradient() {
    check(4, &[(&[6], -1.0, 1.0), (&[6], -1.0, 1.0)], |_, p| {
        p[0].less_than(p[1]) * p[0]
    });
}

#[test]
fn unary_primitives() {
    check(5, &[(&[7], 0.5, 2.0)], |_, p| {
        p[0].log2() + p[0].exp2() + p[0].sin() + p[0].sqrt() + p[0].recip()
    });
}

#[test]
fn exp_ln() {
    check(6, &[(&[2, 3], 0.3, 2.0)], |_, p| p[0].exp() + p[0].ln());
}

#[test]
fn sum_and_max_reductions() {
    check(7, &[(&[3, 4, 5], -1.0, 1.0)], |_, p| {
        let s = p[0].sum(&[1]);
        let m = p[0].max_axis(2);
        s.sum(&[1]) + m.sum(&[1])
    });
}

#[test]
fn mean_over_several_axes() {
    check(8, &[(&[2, 3, 4], -1.0, 1.0)], |_, p| p[0].mean(&[0, 2]));
}

#[test]
fn contiguous_of_permuted_view() {
    check(9, &[(&[2, 3, 4], -1.0, 1.0)], |_, p| {
        p[0].permute(&[2, 0, 1]).contiguous().reshape(&[4, 6])
    });
}

#[test]
fn permute_view_into_binary_op() {
    check(10, &[(&[3, 4], -1.0, 1.0), (&[4, 3], -1.0, 1.0)], |_, p| {
        p[0].permute(&[1, 0]) * p[1]
    });
}

#[test]
fn expand_view_sums_over_fake_axis() {
    check(11, &[(&[3], -1.0, 1.0), (&[3, 5], -1.0, 1.0)], |_, p| {
        p[0].expand(1, 5) * p[1]
    });
}

#[test]
fn broadcast_unit_axis() {
    check(
        12,
        &[(&[3, 1], -1.0, 1.0), (&[2, 3, 4], -1.0, 1.0)],
        |_, p| p[0].broadcast_to(&[2, 3, 4]) * p[1],
    );
}

#[test]
fn slice_views_pad_gradient_back() {
    check(13, &[(&[4, 6], -1.0, 1.0)], |_, p| {
        let front = p[0].slice(1, 0, 2);
        let back = p[0].slice(1, 4, 6);
        let middle = p[0].slice(1, 1, 5).slice(0, 1, 3);
        front * back + front.exp() + middle.sum(&[1]).sum(&[0]).expand(0, 4).expand(1, 2)
    });
}

#[test]
fn pad_views_slice_gradient_back() {
    check(14, &[(&[3, 2], -1.0, 1.0), (&[3, 5], -1.0, 1.0)], |_, p| {
        let padded = p[0].pad(1, 1, 2);
        padded * p[1] + padded
    });
}

#[test]
fn concat_along_each_axis() {
    check(
        15,
        &[
            (&[2, 3], -1.0, 1.0),
            (&[2, 2], -1.0, 1.0),
            (&[1, 3], -1.0, 1.0),
        ],
        |_, p| {
            let wide = p[0].concat(&[p[1], p[0]], 1);
            let tall = p[0].concat(&[p[2]], 0);
            wide.sum(&[1]).sum(&[0]) + tall.exp().sum(&[1]).sum(&[0])
        },
    );
}

#[test]
fn reshape_of_views() {
    check(16, &[(&[2, 6], -1.0, 1.0)], |_, p| {
        p[0].reshape(&[3, 4])
            .permute(&[1, 0])
            .reshape(&[2, 2, 3])
            .sin()
    });
}

#[test]
fn matmul_2d() {
    check(17, &[(&[3, 4], -1.0, 1.0), (&[4, 5], -1.0, 1.0)], |_, p| {
        p[0].matmul(p[1])
    });
}

#[test]
fn matmul_batched_with_shared_weight() {
    check(
        18,
        &[(&[2, 3, 4], -1.0, 1.0), (&[4, 5], -1.0, 1.0)],
        |_, p| p[0].matmul(p[1]),
    );
}

#[test]
fn matmul_batched_3d_and_4d() {
    check(
        19,
        &[(&[2, 3, 4], -1.0, 1.0), (&[2, 4, 2], -1.0, 1.0)],
        |_, p| p[0].matmul(p[1]),
    );
    check(
        20,
        &[(&[2, 2, 3, 4], -1.0, 1.0), (&[2, 2, 3, 4], -1.0, 1.0)],
        |_, p| p[0].matmul(p[1].t()),
    );
}

#[test]
fn matmul_of_transposed_and_sliced_operands() {
    check(21, &[(&[4, 3], -1.0, 1.0), (&[5, 8], -1.0, 1.0)], |_, p| {
        p[0].t().matmul(p[1].slice(1, 2, 6).slice(0, 0, 4))
    });
}

#[test]
fn matmul_with_broadcast_weight_in_batch() {
    check(
        22,
        &[(&[3, 2, 4], -1.0, 1.0), (&[4, 2], -1.0, 1.0)],
        |_, p| p[0].matmul(p[1].broadcast_to(&[3, 4, 2])),
    );
}

#[test]
fn softmax_and_log_softmax() {
    check(23, &[(&[3, 5], -2.0, 2.0)], |_, p| {
        p[0].softmax(1) + p[0].log_softmax(0)
    });
}

#[test]
fn layer_norm_per_row_and_task_wide() {
    check(24, &[(&[2, 3, 4], -2.0, 2.0)], |_, p| {
        p[0].layer_norm(&[2], 1e-12) + p[0].layer_norm(&[1, 2], 1e-12)
    });
}

#[test]
fn relu_and_maximum_away_from_kinks() {
    check(25, &[(&[8], -1.0, 1.0), (&[8], -1.0, 1.0)], |_, p| {
        // Keep both away from exact ties.
        p[0].relu() + p[0].maximum(p[1] + 0.001)
    });
}

#[test]
fn cross_entropy_with_one_hot_and_index_labels() {
    check(26, &[(&[4, 5], -2.0, 2.0)], |g, p| {
        let one_hot = g.constant_data(
            "onehot",
            &[4, 5],
            (0..20)
                .map(|i| if i % 6 == 0 { 1.0 } else { 0.0 })
                .collect(),
        );
        let labels = g.constant_data("labels", &[4], vec![0.0, 3.0, 4.0, 1.0]);
        p[0].cross_entropy_with_logits(one_hot) + p[0].cross_entropy_with_labels(labels)
    });
}

#[test]
fn squared_error_and_mean() {
    check(27, &[(&[3, 4], -1.0, 1.0), (&[3, 4], -1.0, 1.0)], |_, p| {
        p[0].squared_error(p[1]).mean_all()
    });
}

#[test]
fn stop_gradient_blocks_flow() {
    // d/dx sum(x * stop(x) * r) = stop(x) * r, not 2 x r.
    let mut g = GraphBuilder::new();
    let x = g.param("x", &[4], vec![0.5, -1.0, 2.0, 3.0]);
    let r = g.constant_data("r", &[4], vec![1.0, 2.0, -1.0, 0.5]);
    let loss = (x * x.stop_gradient() * r).sum(&[0]);
    let grads = backward(loss, &[x]).unwrap();
    let got = evaluate_f64(&grads, &[]).unwrap();
    assert_eq!(got[0], vec![0.5, -2.0, -2.0, 1.5]);
}

#[test]
fn tiny_attention_block() {
    // Two tasks, 3 queries over 4 support rows, d = 4, 2 heads, per-row layer norm,
    // residual, feed-forward with relu.
    check(
        29,
        &[
            (&[2, 3, 4], -1.0, 1.0),
            (&[2, 4, 4], -1.0, 1.0),
            (&[4, 4], -0.5, 0.5),
            (&[4, 4], -0.5, 0.5),
            (&[4, 4], -0.5, 0.5),
            (&[4, 4], -0.5, 0.5),
            (&[4], 0.5, 1.5),
            (&[4], -0.5, 0.5),
            (&[4, 8], -0.5, 0.5),
            (&[8, 4], -0.5, 0.5),
        ],
        |_, p| {
            let (q, kv) = (p[0], p[1]);
            let (wq, wk, wv, wo) = (p[2], p[3], p[4], p[5]);
            let heads = 2;
            let dh = 2;
            let split =
                |t: Tensor, rows: usize| t.reshape(&[2, rows, heads, dh]).permute(&[0, 2, 1, 3]);
            let qh = split(q.matmul(wq), 3);
            let kh = split(kv.matmul(wk), 4);
            let vh = split(kv.matmul(wv), 4);
            let scores = qh.matmul(kh.t()) * (1.0 / (dh as f32).sqrt());
            let att = scores.softmax(3).matmul(vh);
            let merged = att.permute(&[0, 2, 1, 3]).reshape(&[2, 3, 4]);
            let h = q + merged.matmul(wo);
            let h = h.layer_norm(&[2], 1e-12) * p[6].broadcast_to(&[2, 3, 4])
                + p[7].broadcast_to(&[2, 3, 4]);
            let ff = (h.matmul(p[8]) + 0.05).relu().matmul(p[9]);
            (h + ff).layer_norm(&[1, 2], 1e-12)
        },
    );
}
