//! Floating-point operations of the engine's `prepare` and `classify`, counted from the
//! model's structure: every matrix product and dot product the engine computes, a
//! multiply-add counting 2 FLOPs (the counts of the engine's `model` docs, which this module
//! restates term by term).
//!
//! Not counted: layer norms, softmax, ReLU, residual additions, the `1 / sqrt(d/h)` scale,
//! class means and the per-class pooling of attention probabilities. They are a few
//! operations per latent feature (O(d) per column, against O(d^2 + D d) for the products),
//! under 1% of the per-query count at the paper's sizes.
//!
//! Sizes ([`Sizes`], AWGIM.md's letters): `D` features, `d` latent, `h` heads, `N` ways, `K`
//! shots, `G` generator width; `NK = N K` support examples.

// The sizes are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_snake_case)]

use formats::{ModelConfig, Sizes};

/// The sizes `[D, d, h, N, K, G]`, widened to `u64`.
fn widened(s: &Sizes) -> [u64; 6] {
    [s.D, s.d, s.h, s.N, s.K, s.G].map(|n| n as u64)
}

/// Multiply-adds of one self-attention block over `columns` support examples, as `prepare`
/// runs `sa_ap` and `sa_cp`: `Wq`, `Wk`, `Wv`, `Wo` (`d^2` each per column), the scores and
/// the value mix (`d` per query-key pair, all heads together) and the feed-forward pair `F1`,
/// `F2` (`2 d^2` each per column).
fn self_attention(d: u64, columns: u64) -> u64 {
    8 * columns * d * d + 2 * columns * columns * d
}

/// Multiply-adds of `classify` for one query (`Model::classify_rows` per column):
/// `q = enc_ap x` (`D d`); `G2muᵀ x` (`G D`); in `ca_ap`: `Wq q` (`d^2`), the scores over
/// the `N K` keys (`N K d`), the class values `sum_i P_ji U_j[i]` (`h N d`, the `Wo`
/// product folded into `prepare`), `F1` and `F2` (`4 d^2`); `G1[d..2d] a(x)` (`G d`); the
/// `N` logits `h_i . (G2muᵀ x)` (`N G`).
pub fn query_multiply_adds(s: &Sizes) -> u64 {
    let [D, d, h, N, K, G] = widened(s);
    let encoder = D * d;
    let g2_mu_x = G * D;
    let ca_ap = d * d + N * K * d + h * N * d + 4 * d * d;
    let g1_attentive = G * d;
    let logits = N * G;
    encoder + g2_mu_x + ca_ap + g1_attentive + logits
}

/// Multiply-adds of `prepare` (`Model::prepare`): per support example both encoders
/// (`2 D d`), the `ca_ap` keys `Wk s` (`d^2`), and the two self-attention blocks `sa_ap`
/// and `sa_cp` over the `N K` examples; per class the `ca_ap` value `Wv v_bar` (`d^2`), its
/// projection through every head's part of `Wo` (`d^2` over all heads) and
/// `G1[0..d] c_bar` (`G d`).
pub fn prepare_multiply_adds(s: &Sizes) -> u64 {
    let [D, d, _, N, K, G] = widened(s);
    let NK = N * K;
    let per_example = 2 * D * d + d * d;
    let per_class = 2 * d * d + G * d;
    NK * per_example + 2 * self_attention(d, NK) + N * per_class
}

/// FLOPs of one query (2 per multiply-add).
pub fn query_flops(s: &Sizes) -> u64 {
    2 * query_multiply_adds(s)
}

/// FLOPs of one `prepare` (2 per multiply-add).
pub fn prepare_flops(s: &Sizes) -> u64 {
    2 * prepare_multiply_adds(s)
}

/// Fails unless the counts reproduce the figures the engine's `model` docs state for the
/// paper configuration: 367,488 multiply-adds per query for K = 5 and 364,928 for K = 1;
/// `prepare` 11.7 M multiply-adds for K = 5 and 2.6 M for K = 1 (rounded there to 0.1 M).
pub fn check_against_engine_docs() -> Result<(), String> {
    let five = ModelConfig::paper(5).sizes();
    let one = ModelConfig::paper(1).sizes();
    let exact = [
        (
            "per query, paper K = 5",
            query_multiply_adds(&five),
            367_488,
        ),
        ("per query, paper K = 1", query_multiply_adds(&one), 364_928),
    ];
    for (what, counted, documented) in exact {
        if counted != documented {
            return Err(format!(
                "{what}: counted {counted} multiply-adds, the engine docs state {documented}"
            ));
        }
    }
    let rounded = [
        ("prepare, paper K = 5", prepare_multiply_adds(&five), 117),
        ("prepare, paper K = 1", prepare_multiply_adds(&one), 26),
    ];
    for (what, counted, tenths_of_millions) in rounded {
        if (counted + 50_000) / 100_000 != tenths_of_millions {
            return Err(format!(
                "{what}: counted {counted} multiply-adds, the engine docs state {:.1} M",
                tenths_of_millions as f64 / 10.0
            ));
        }
    }
    Ok(())
}
