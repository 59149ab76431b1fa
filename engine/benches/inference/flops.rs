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
//! Sizes (AWGIM.md): `D` features, `d` latent, `h` heads, `N` ways, `K` shots, `G`
//! generator width; `NK = N K` support examples.

use formats::ModelConfig;

/// The sizes the counts depend on, widened to `u64`.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// `D`.
    pub features: u64,
    /// `d`.
    pub latent: u64,
    /// `h`.
    pub heads: u64,
    /// `N`.
    pub ways: u64,
    /// `K`.
    pub shots: u64,
    /// `G`.
    pub hidden: u64,
}

impl Sizes {
    /// The sizes of `config`.
    pub fn of(config: &ModelConfig) -> Self {
        Sizes {
            features: config.feature_dim.into(),
            latent: config.latent_dim.into(),
            heads: config.heads.into(),
            ways: config.ways.into(),
            shots: config.shots.into(),
            hidden: config.generator_hidden.into(),
        }
    }

    /// Multiply-adds of one self-attention block over `columns` support examples, as
    /// `prepare` runs `sa_ap` and `sa_cp`: `Wq`, `Wk`, `Wv`, `Wo` (`d^2` each per column), the
    /// scores and the value mix (`d` per query-key pair, all heads together) and the
    /// feed-forward pair `F1`, `F2` (`2 d^2` each per column).
    fn self_attention(&self, columns: u64) -> u64 {
        let d = self.latent;
        8 * columns * d * d + 2 * columns * columns * d
    }

    /// Multiply-adds of `classify` for one query (`Model::classify_rows` per column):
    /// `q = enc_ap x` (`D d`); `G2muᵀ x` (`G D`); in `ca_ap`: `Wq q` (`d^2`), the scores over
    /// the `N K` keys (`N K d`), the class values `sum_i P_ji U_j[i]` (`h N d`, the `Wo`
    /// product folded into `prepare`), `F1` and `F2` (`4 d^2`); `G1[d..2d] a(x)` (`G d`); the
    /// `N` logits `h_i . (G2muᵀ x)` (`N G`).
    pub fn query_multiply_adds(&self) -> u64 {
        let Sizes {
            features: big_d,
            latent: d,
            heads: h,
            ways: n,
            shots: k,
            hidden: g,
        } = *self;
        let encoder = big_d * d;
        let g2_mu_x = g * big_d;
        let ca_ap = d * d + n * k * d + h * n * d + 4 * d * d;
        let g1_attentive = g * d;
        let logits = n * g;
        encoder + g2_mu_x + ca_ap + g1_attentive + logits
    }

    /// Multiply-adds of `prepare` (`Model::prepare`): per support example both encoders
    /// (`2 D d`), the `ca_ap` keys `Wk s` (`d^2`), and the two self-attention blocks `sa_ap`
    /// and `sa_cp` over the `N K` examples; per class the `ca_ap` value `Wv v_bar` (`d^2`), its
    /// projection through every head's part of `Wo` (`d^2` over all heads) and
    /// `G1[0..d] c_bar` (`G d`).
    pub fn prepare_multiply_adds(&self) -> u64 {
        let Sizes {
            features: big_d,
            latent: d,
            ways: n,
            shots: k,
            hidden: g,
            ..
        } = *self;
        let nk = n * k;
        let per_example = 2 * big_d * d + d * d;
        let per_class = 2 * d * d + g * d;
        nk * per_example + 2 * self.self_attention(nk) + n * per_class
    }

    /// FLOPs of one query (2 per multiply-add).
    pub fn query_flops(&self) -> u64 {
        2 * self.query_multiply_adds()
    }

    /// FLOPs of one `prepare` (2 per multiply-add).
    pub fn prepare_flops(&self) -> u64 {
        2 * self.prepare_multiply_adds()
    }
}

/// Fails unless the counts reproduce the figures the engine's `model` docs state for the
/// paper configuration: 367,488 multiply-adds per query for K = 5 and 364,928 for K = 1;
/// `prepare` 11.7 M multiply-adds for K = 5 and 2.6 M for K = 1 (rounded there to 0.1 M).
pub fn check_against_engine_docs() -> Result<(), String> {
    let five = Sizes::of(&ModelConfig::paper(5));
    let one = Sizes::of(&ModelConfig::paper(1));
    let exact = [
        (
            "per query, paper K = 5",
            five.query_multiply_adds(),
            367_488,
        ),
        ("per query, paper K = 1", one.query_multiply_adds(), 364_928),
    ];
    for (what, counted, documented) in exact {
        if counted != documented {
            return Err(format!(
                "{what}: counted {counted} multiply-adds, the engine docs state {documented}"
            ));
        }
    }
    let rounded = [
        ("prepare, paper K = 5", five.prepare_multiply_adds(), 117),
        ("prepare, paper K = 1", one.prepare_multiply_adds(), 26),
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
