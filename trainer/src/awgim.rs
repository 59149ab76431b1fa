//! AWGIM as luminal graphs, written to be read next to `AWGIM.md` (Guo & Cheung, CVPR 2020,
//! "Attentive Weights Generation for Few Shot Learning via Information Maximization").
//!
//! One function builds the model for a batch of `B` tasks, each with `N` classes x `K`
//! support rows and `M = N * Q` queries, in one of two modes:
//! - [`Mode::Train`]: both paths, the three attention blocks, the generator with the
//!   reparameterisation `w = mu + sigma * eps` (the noise `eps` is an input drawn by the host),
//!   the K-average, the query and support cross-entropies, the two reconstruction losses with
//!   stopped-gradient targets, dropout (masks drawn by the host) and the `l1`/`l2`/`l3` weights;
//! - [`Mode::Eval`]: the deployment path, `W = mu`, no noise, no dropout, no decoders.
//!
//! Shapes in comments: `B` tasks, `N` ways, `K` shots, `NK = N * K` support rows, `M`
//! queries per task, `D` features, `d` latent, `h` heads, `G` generator width.
//!
//! Tensor names and layouts are those of `formats` (dense layers `[in, out]`, `x W`).

use std::collections::HashMap;

use formats::{EncoderKind, FileKind, LayerNormKind, ModelConfig};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::autodiff::{AutodiffError, GraphBuilder, Tensor};

/// Weights of the auxiliary losses: `L = CE(query) + l1 CE(support) + l2 recon_s + l3 recon_q`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossWeights {
    /// Support cross-entropy (information about the support in the weights).
    pub l1: f32,
    /// Support reconstruction `r_s(w) ~ c_bar[i]`.
    pub l2: f32,
    /// Query reconstruction `r_q(w) ~ a(x)`.
    pub l3: f32,
}

impl Default for LossWeights {
    /// The reference values: `l1 = 1`, `l2 = l3 = 0.001`.
    fn default() -> Self {
        LossWeights {
            l1: 1.0,
            l2: 0.001,
            l3: 0.001,
        }
    }
}

/// How the generator meets the `K` support rows of a class during training.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum GeneratorRows {
    /// Once per class and query, then `K` noise samples (the rows' inputs are identical): one
    /// dropout mask per class, `K` times fewer generator products.
    PerClass,
    /// Once per support row, as the reference builds it (`N * K` rows), each row with its own
    /// dropout mask. Without dropout it computes the same as `PerClass`.
    PerSupportRow,
}

/// What graph to build.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// The training objective.
    Train {
        /// Dropout rate on every dense input and on the features in the logits (0.3 in the
        /// reference; 0 disables dropout and its mask inputs).
        dropout: f32,
        /// Auxiliary loss weights.
        weights: LossWeights,
        /// Generator rows (see [`GeneratorRows`]).
        rows: GeneratorRows,
    },
    /// The evaluation and deployment path, `W = mu`.
    Eval,
}

/// Tasks per batch and queries per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    /// Tasks `B`.
    pub tasks: usize,
    /// Queries per class `Q` (`M = N * Q` per task).
    pub queries_per_class: usize,
}

/// The loss and its parts (training graphs).
#[derive(Clone, Copy, Debug)]
pub struct Losses {
    /// The total objective.
    pub total: Tensor,
    /// Mean query cross-entropy.
    pub ce_query: Tensor,
    /// Mean support cross-entropy.
    pub ce_support: Tensor,
    /// Mean squared reconstruction error of `c_bar`.
    pub recon_support: Tensor,
    /// Mean squared reconstruction error of `a(x)`.
    pub recon_query: Tensor,
}

/// A built AWGIM graph.
pub struct AwgimGraph {
    /// The graph (parameters, inputs and ops).
    pub graph: GraphBuilder,
    /// Query logits `(B, M, N)`.
    pub logits: Tensor,
    /// The objective, in training mode.
    pub losses: Option<Losses>,
}

/// Input names (see [`fill_inputs`]).
pub mod input {
    /// Support features `(B, NK, D)`, class-major.
    pub const SUPPORT: &str = "support";
    /// Query features `(B, M, D)`.
    pub const QUERY: &str = "query";
    /// One-hot support labels `(B, NK, N)` (training).
    pub const SUPPORT_TARGETS: &str = "support_targets";
    /// One-hot query labels `(B, M, N)` (training).
    pub const QUERY_TARGETS: &str = "query_targets";
    /// Standard normal noise `eps` `(B, M, N, K, D)` (training).
    pub const NOISE: &str = "noise";
    /// Prefix of dropout masks (values 0 or 1 / keep).
    pub const MASK_PREFIX: &str = "mask.";
}

/// Builds the AWGIM graph for `config`, `shape` and `mode`, with initial parameter values
/// `params` (every training parameter of `config`, by `formats` name; see [`init_params`]).
pub fn build(
    config: &ModelConfig,
    shape: BatchShape,
    mode: Mode,
    params: &[(String, Vec<f32>)],
) -> Result<AwgimGraph, AutodiffError> {
    config
        .validate()
        .map_err(|e| AutodiffError::InvalidArgument {
            op: "awgim::build",
            reason: e.to_string(),
        })?;
    let mut graph = GraphBuilder::new();
    let mut weights = HashMap::new();
    for spec in formats::expected_tensors(config, FileKind::Training) {
        let shape: Vec<usize> = spec.shape.iter().map(|&s| s as usize).collect();
        let value = params
            .iter()
            .find(|(n, _)| n == spec.name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| AutodiffError::MissingInput(spec.name.to_string()))?;
        weights.insert(spec.name, graph.param(spec.name, &shape, value));
    }
    let mut m = Model {
        graph,
        weights,
        cfg: Sizes::new(config, shape),
        config: *config,
        keep: match mode {
            Mode::Train { dropout, .. } => 1.0 - dropout,
            Mode::Eval => 1.0,
        },
    };
    let (logits, losses) = m.forward(mode)?;
    m.graph.check()?;
    Ok(AwgimGraph {
        graph: m.graph,
        logits,
        losses,
    })
}

/// The sizes of one graph.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    b: usize,
    n: usize,
    k: usize,
    m: usize,
    d_feat: usize,
    d: usize,
    h: usize,
}

impl Sizes {
    fn new(c: &ModelConfig, s: BatchShape) -> Self {
        Sizes {
            b: s.tasks,
            n: c.ways as usize,
            k: c.shots as usize,
            m: c.ways as usize * s.queries_per_class,
            d_feat: c.feature_dim as usize,
            d: c.latent_dim as usize,
            h: c.heads as usize,
        }
    }
}

struct Model {
    graph: GraphBuilder,
    weights: HashMap<&'static str, Tensor>,
    cfg: Sizes,
    config: ModelConfig,
    /// Dropout keep probability (1 = no dropout).
    keep: f32,
}

impl Model {
    fn w(&self, name: &str) -> Tensor {
        // Every name used below is in formats' table for a training file.
        self.weights[name]
    }

    /// `x * mask` with a host-drawn mask `mask.<site>` (values 0 or 1/keep), or `x`.
    fn dropout(&mut self, x: Tensor, site: &str) -> Tensor {
        if self.keep >= 1.0 {
            return x;
        }
        let mask = self
            .graph
            .input(&format!("{}{site}", input::MASK_PREFIX), &x.shape());
        x * mask
    }

    /// Layer norm with gain and bias over the last axis of `(B, rows, d)` (per row), or over
    /// rows and features together (the reference's task-wide variant).
    fn layer_norm(&self, x: Tensor, prefix: &str) -> Tensor {
        let axes: &[usize] = match self.config.layer_norm {
            LayerNormKind::PerRow => &[2],
            LayerNormKind::TaskWide => &[1, 2],
        };
        let shape = x.shape();
        let normed = x.layer_norm(axes, self.config.ln_epsilon);
        normed * self.w(&format!("{prefix}.gain")).broadcast_to(&shape)
            + self.w(&format!("{prefix}.bias")).broadcast_to(&shape)
    }

    /// `LN2(x + F2(relu(F1(dropout(x)))))`.
    fn feed_forward(&mut self, block: &str, x: Tensor) -> Tensor {
        let f1 = self.w(&format!("{block}.f1"));
        let f2 = self.w(&format!("{block}.f2"));
        let hidden = self.dropout(x, &format!("{block}.ff")).matmul(f1).relu();
        self.layer_norm(x + hidden.matmul(f2), &format!("{block}.ln2"))
    }

    /// One attention block `block(q, k, v)` on `(B, R, d)` queries and `(B, S, d)` keys and
    /// values: per head `a_j = softmax((q Wq_j)(k Wk_j)^T / sqrt(d/h)) (v Wv_j)`;
    /// `out = LN1(q + sum_j a_j Wo_j)`; then the feed-forward sub-block.
    /// With the MLP ablation only the feed-forward sub-block runs, on `q`.
    fn block(&mut self, name: &str, q: Tensor, k: Tensor, v: Tensor) -> Tensor {
        if self.config.encoder == EncoderKind::Mlp {
            return self.feed_forward(name, q);
        }
        let Sizes { b, d, h, .. } = self.cfg;
        let dh = d / h;
        let heads = |x: Tensor, w: Tensor| {
            let rows = x.shape()[1];
            // (B, rows, d) -> (B, h, rows, d/h): head j is columns j*d/h..(j+1)*d/h.
            x.matmul(w)
                .reshape(&[b, rows, h, dh])
                .permute(&[0, 2, 1, 3])
        };
        let qh = heads(q, self.w(&format!("{name}.wq")));
        let kh = heads(k, self.w(&format!("{name}.wk")));
        let vh = heads(v, self.w(&format!("{name}.wv")));
        let scores = qh.matmul(kh.t()) * (1.0 / (dh as f32).sqrt()); // (B, h, R, S)
        let a = scores.softmax(3).matmul(vh); // (B, h, R, d/h)
        let rows = q.shape()[1];
        let a = a.permute(&[0, 2, 1, 3]).reshape(&[b, rows, d]);
        let out = q + a.matmul(self.w(&format!("{name}.wo")));
        let out = self.layer_norm(out, &format!("{name}.ln1"));
        self.feed_forward(name, out)
    }

    /// Mean of each class's `K` rows: `(B, NK, d)` -> `(B, N, d)`.
    fn class_mean(&self, x: Tensor) -> Tensor {
        let Sizes { b, n, k, .. } = self.cfg;
        let width = x.shape()[2];
        x.reshape(&[b, n, k, width]).mean(&[2])
    }

    fn forward(&mut self, mode: Mode) -> Result<(Tensor, Option<Losses>), AutodiffError> {
        let Sizes {
            b, n, k, m, d_feat, ..
        } = self.cfg;
        let nk = n * k;
        let x_s = self.graph.input(input::SUPPORT, &[b, nk, d_feat]);
        let x_q = self.graph.input(input::QUERY, &[b, m, d_feat]);

        // 1. Attentive path: s = X_s enc_ap, q = X_q enc_ap; v = sa_ap(s, s, s) with every
        //    row replaced by its class mean; a = ca_ap(q, s, v).
        let enc_ap = self.w("enc_ap");
        let s = self.dropout(x_s, "support_ap").matmul(enc_ap); // (B, NK, d)
        let q = self.dropout(x_q, "query_ap").matmul(enc_ap); // (B, M, d)
        let v = self.block("sa_ap", s, s, s);
        let v_bar = self.class_mean(v); // (B, N, d)
        let d = self.cfg.d;
        let v_rows = v_bar.expand(2, k).reshape(&[b, nk, d]);
        let a = self.block("ca_ap", q, s, v_rows); // (B, M, d)

        // 2. Contextual path: c = sa_cp(X_s enc_cp, ...), c_bar[i] = mean of class i's rows.
        let e = self.dropout(x_s, "support_cp").matmul(self.w("enc_cp"));
        let c = self.block("sa_cp", e, e, e);
        let c_bar = self.class_mean(c); // (B, N, d)

        // 3. Generator input z = [c_bar[i]; a(x)] for query x and class i: (B, M, N, 2d).
        let z = c_bar.expand(1, m).concat(&[a.expand(2, n)], 3);

        let Mode::Train { weights, rows, .. } = mode else {
            // 4-5 at evaluation: W[i] = mu = G2mu(relu(G1 z)).
            let w_eval = z
                .matmul(self.w("gen.g1"))
                .relu()
                .matmul(self.w("gen.g2_mu"));
            // 6. l[i] = x . W[i].
            let logits = (x_q.expand(2, n) * w_eval).sum(&[3]); // (B, M, N)
            return Ok((logits, None));
        };

        // 4. (mu, u) = G2(relu(G1(dropout(z)))); sigma = max(exp(u) - 1 + sqrt(2/(N+D)), 1e-10).
        // 5. w = mu + sigma * eps for each of the K rows of a class; W[i] = mean over them.
        let eps = self.graph.input(input::NOISE, &[b, m, n, k, d_feat]);
        let sigma_floor = (2.0 / (n + d_feat) as f32).sqrt() - 1.0;
        let w_rows = match rows {
            GeneratorRows::PerClass => {
                let hidden = self.dropout(z, "generator").matmul(self.w("gen.g1")).relu();
                let mu = hidden.matmul(self.w("gen.g2_mu")); // (B, M, N, D)
                let u = hidden.matmul(self.w("gen.g2_sigma"));
                let sigma = self.sigma(u, sigma_floor);
                mu.expand(3, k) + sigma.expand(3, k) * eps // (B, M, N, K, D)
            }
            GeneratorRows::PerSupportRow => {
                // The reference: z for all NK support rows (the K rows of a class are equal).
                let z_rows = z.expand(3, k).reshape(&[b, m, nk, 2 * d]);
                let hidden = self
                    .dropout(z_rows, "generator")
                    .matmul(self.w("gen.g1"))
                    .relu();
                let mu = hidden.matmul(self.w("gen.g2_mu")); // (B, M, NK, D)
                let sigma = self.sigma(hidden.matmul(self.w("gen.g2_sigma")), sigma_floor);
                let eps_rows = eps.reshape(&[b, m, nk, d_feat]);
                (mu + sigma * eps_rows).reshape(&[b, m, n, k, d_feat])
            }
        };
        let w_avg = w_rows.mean(&[3]); // (B, M, N, D)

        // 6. Query logits l[i] = dropout(x) . W[i]; support logits: every support example
        //    scored with the same query-specific W.
        let x_q_l = self.dropout(x_q, "query_logits");
        let logits = (x_q_l.expand(2, n) * w_avg).sum(&[3]); // (B, M, N)
        let x_s_l = self.dropout(x_s, "support_logits");
        let support_logits = x_s_l
            .matmul(w_avg.reshape(&[b, m * n, d_feat]).t()) // (B, NK, M*N)
            .reshape(&[b, nk, m, n]);
        let y_q = self.graph.input(input::QUERY_TARGETS, &[b, m, n]);
        let y_s = self.graph.input(input::SUPPORT_TARGETS, &[b, nk, n]);
        let ce_query = logits.cross_entropy_with_logits(y_q).mean_all();
        let ce_support = support_logits
            .cross_entropy_with_logits(y_s.expand(2, m))
            .mean_all();

        // 7. Reconstruction of the stopped-gradient targets from every sampled row:
        //    r_q(w) ~ a(x), r_s(w) ~ c_bar[i]; r(w) = R2(relu(R1(dropout(w)))).
        let target_q = a.stop_gradient().expand(2, n).expand(3, k); // (B, M, N, K, d)
        let target_s = c_bar.stop_gradient().expand(1, m).expand(3, k);
        let r_q = self.decoder("dec_q", w_rows);
        let r_s = self.decoder("dec_s", w_rows);
        let recon_query = r_q.squared_error(target_q).mean_all();
        let recon_support = r_s.squared_error(target_s).mean_all();

        let total = ce_query
            + ce_support * weights.l1
            + recon_support * weights.l2
            + recon_query * weights.l3;
        Ok((
            logits,
            Some(Losses {
                total,
                ce_query,
                ce_support,
                recon_support,
                recon_query,
            }),
        ))
    }

    /// `sigma = max(exp(u) + floor, 1e-10)` with `floor = sqrt(2 / (N + D)) - 1`.
    fn sigma(&self, u: Tensor, floor: f32) -> Tensor {
        let s = u.exp() + floor;
        s.maximum(s.full_like(1e-10))
    }

    /// `R2(relu(R1(dropout(w))))` on every sampled row.
    fn decoder(&mut self, name: &str, w: Tensor) -> Tensor {
        let x = self.dropout(w, name);
        x.matmul(self.w(&format!("{name}.r1")))
            .relu()
            .matmul(self.w(&format!("{name}.r2")))
    }
}

/// Initial values of every training parameter of `config`, as in the reference:
/// Glorot-uniform dense layers (G2 counted as one `G x 2D` layer), attention projections
/// normal with standard deviation `d^-1/2`, layer-norm gain 1 and bias 0.
pub fn init_params(config: &ModelConfig, rng: &mut impl Rng) -> Vec<(String, Vec<f32>)> {
    let d = config.latent_dim as f32;
    formats::expected_tensors(config, FileKind::Training)
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|&s| s as usize).collect();
            let numel: usize = shape.iter().product();
            let name = spec.name;
            let values: Vec<f32> = if name.ends_with(".gain") {
                vec![1.0; numel]
            } else if name.ends_with(".bias") {
                vec![0.0; numel]
            } else if [".wq", ".wk", ".wv", ".wo"]
                .iter()
                .any(|p| name.ends_with(p))
            {
                let std = d.powf(-0.5);
                (0..numel)
                    .map(|_| {
                        let x: f32 = StandardNormal.sample(rng);
                        std * x
                    })
                    .collect()
            } else {
                let fan_in = shape[0] as f32;
                let mut fan_out = shape[1] as f32;
                if name.starts_with("gen.g2") {
                    fan_out *= 2.0; // one G x 2D layer in the reference
                }
                let limit = (6.0 / (fan_in + fan_out)).sqrt();
                (0..numel).map(|_| rng.gen_range(-limit..limit)).collect()
            };
            (name.to_string(), values)
        })
        .collect()
}

/// What the host draws for one training step besides the data: the noise and the dropout
/// masks. Fills every input of `graph` whose name is [`input::NOISE`] or starts with
/// [`input::MASK_PREFIX`], calling `set` with its name and values.
pub fn draw_random_inputs(
    inputs: &[(String, Vec<usize>)],
    keep: f32,
    rng: &mut impl Rng,
    mut set: impl FnMut(&str, &[f32]) -> Result<(), AutodiffError>,
) -> Result<(), AutodiffError> {
    let mut buf = Vec::new();
    for (name, shape) in inputs {
        let numel: usize = shape.iter().product();
        buf.clear();
        if name == input::NOISE {
            buf.extend((0..numel).map(|_| -> f32 { StandardNormal.sample(rng) }));
        } else if name.starts_with(input::MASK_PREFIX) {
            let scale = 1.0 / keep;
            buf.extend((0..numel).map(|_| if rng.gen::<f32>() < keep { scale } else { 0.0 }));
        } else {
            continue;
        }
        set(name, &buf)?;
    }
    Ok(())
}
