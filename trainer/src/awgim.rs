//! AWGIM as luminal graphs, written to be read next to `AWGIM.md` (Guo & Cheung, CVPR 2020,
//! "Attentive Weights Generation for Few Shot Learning via Information Maximization").
//!
//! Two functions build the model for a batch of `B` tasks, each with `N` classes x `K`
//! support rows and `M = N * Q` queries:
//! - [`build_train`]: the training objective. Both paths, the three attention blocks, the
//!   generator with the reparameterisation `w = mu + sigma * eps` (the noise `eps` is an
//!   input drawn by the host), the K-average, the query and support cross-entropies, the two
//!   reconstruction losses with stopped-gradient targets, dropout (masks drawn by the host)
//!   and the `l1`/`l2`/`l3` loss weights;
//! - [`build_eval`]: the deployment path, `W = mu`, no noise, no dropout, no decoders.
//!
//! Beyond the paper, the configuration's [`formats::Classifier`] may centre and normalise the
//! features, make the generated weights a correction to the normalised class prototype, and
//! take cosine logits with a learned scale (`--paper` uses none of them; see
//! `docs/training.md`, "Beyond the paper").
//!
//! Sizes are AWGIM.md's letters ([`formats::Sizes`]): `B` tasks, `N` ways, `K` shots,
//! `NK = N * K` support rows, `M` queries per task, `D` features, `d` latent, `h` heads, `G`
//! generator width.
//!
//! The parameters are typed (an attention block, the generator, the decoders, the encoders)
//! and made from the names `formats::tensors` defines, with the shapes its table gives, the
//! way candle's model files build a layer from a checkpoint: a missing or misshapen parameter
//! is a [`BuildError`] when the graph is built, not a panic at first use. Dense layers are
//! `[in, out]` (`x W`).

// AWGIM.md's size letters: `D` (features) and `d` (latent) are two different sizes, and `B`,
// `N`, `K`, `M` are spelled as there.
#![allow(non_snake_case)]

use autodiff::{AutodiffError, GraphBuilder, Tensor};
use formats::tensors::{
    BlockNames, DecoderNames, LayerNormNames, CA_AP, DEC_Q, DEC_S, ENC_AP, ENC_CP, FEATURE_CENTER,
    GENERATOR, LOGIT_SCALE, SA_AP, SA_CP,
};
use formats::{
    Classifier, ConfigError, EncoderKind, FeatureNorm, FileKind, LayerNormKind, LogitsKind,
    ModelConfig, Sizes, WeightsKind,
};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

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

/// The initial value of the cosine logits' scale ([`LOGIT_SCALE`]): cosines in [-1, 1] times 10 give a softmax neither flat nor saturated.
pub const INITIAL_LOGIT_SCALE: f32 = 10.0;
/// Added under the square root of every L2 norm the variants take.
const NORM_EPSILON: f32 = 1e-12;

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

/// How the training graph is built (see [`build_train`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainOptions {
    /// Dropout rate on every dense input and on the features in the logits (0.3 in the
    /// reference; 0 disables dropout and its mask inputs).
    pub dropout: f32,
    /// Auxiliary loss weights.
    pub loss_weights: LossWeights,
    /// Generator rows (see [`GeneratorRows`]).
    pub rows: GeneratorRows,
}

/// Tasks per batch and queries per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShape {
    /// Tasks `B`.
    pub tasks: usize,
    /// Queries per class `Q` (`M = N * Q` per task).
    pub queries_per_class: usize,
}

/// The loss and its parts.
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

/// A built training graph ([`build_train`]).
pub struct TrainGraph {
    /// The graph (parameters, inputs and ops).
    pub graph: GraphBuilder,
    /// Query logits `(B, M, N)`, from the sampled weights and dropped-out features.
    pub logits: Tensor,
    /// The objective.
    pub losses: Losses,
}

/// A built evaluation graph ([`build_eval`]).
pub struct EvalGraph {
    /// The graph (parameters, the support and query inputs, and ops).
    pub graph: GraphBuilder,
    /// Query logits `(B, M, N)` with `W = mu`.
    pub logits: Tensor,
}

/// Why an AWGIM graph cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration describes no model.
    #[error("invalid model configuration: {0}")]
    Config(#[from] ConfigError),
    /// A parameter of the configuration is not among the values given.
    #[error("parameter {0} is missing")]
    MissingParam(&'static str),
    /// A parameter's values do not fill the shape `formats` gives it.
    #[error("parameter {name} has {found} values; its shape {shape:?} holds {expected}")]
    ParamShape {
        /// The parameter.
        name: &'static str,
        /// Its shape for this configuration.
        shape: Vec<usize>,
        /// Values the shape holds.
        expected: usize,
        /// Values given.
        found: usize,
    },
    /// The model asks for a tensor that `formats` does not list for this configuration
    /// (the model and the table disagree).
    #[error("parameter {0} is not a tensor of this configuration in formats' table")]
    NotInTable(&'static str),
    /// Building the graph failed.
    #[error("graph: {0}")]
    Graph(#[from] AutodiffError),
}

/// Input names (see [`draw_random_inputs`] for the noise and the masks).
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
    /// The feature centre `c` `(D)` of [`formats::FeatureNorm::CenteredL2`] (absent
    /// otherwise): the model file's tensor of that name, an input because it is set from the
    /// data, not trained.
    pub const CENTER: &str = formats::tensors::FEATURE_CENTER;
    /// Prefix of dropout masks (values 0 or 1 / keep); see [`super::DropoutSite`].
    pub const MASK_PREFIX: &str = "mask.";
}

/// Where training applies dropout: each site multiplies its tensor by a host-drawn mask
/// input named [`DropoutSite::input_name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropoutSite {
    /// The support features into `enc_ap` (`mask.support_ap`).
    SupportAp,
    /// The query features into `enc_ap` (`mask.query_ap`).
    QueryAp,
    /// The support features into `enc_cp` (`mask.support_cp`).
    SupportCp,
    /// The input of a block's feed-forward sub-block (`mask.<block>.ff`).
    FeedForward(&'static BlockNames),
    /// The generator input `z` (`mask.generator`).
    Generator,
    /// The query features in the logits (`mask.query_logits`).
    QueryLogits,
    /// The support features in the support logits (`mask.support_logits`).
    SupportLogits,
    /// The input of the decoder `r_q` (`mask.dec_q`).
    DecoderQ,
    /// The input of the decoder `r_s` (`mask.dec_s`).
    DecoderS,
}

impl DropoutSite {
    /// The name of the site's mask input: [`input::MASK_PREFIX`] and the site.
    pub fn input_name(self) -> String {
        let site = match self {
            DropoutSite::SupportAp => "support_ap",
            DropoutSite::QueryAp => "query_ap",
            DropoutSite::SupportCp => "support_cp",
            DropoutSite::FeedForward(block) => {
                return format!("{}{}.ff", input::MASK_PREFIX, block.block)
            }
            DropoutSite::Generator => "generator",
            DropoutSite::QueryLogits => "query_logits",
            DropoutSite::SupportLogits => "support_logits",
            DropoutSite::DecoderQ => "dec_q",
            DropoutSite::DecoderS => "dec_s",
        };
        format!("{}{site}", input::MASK_PREFIX)
    }
}

/// Builds the training graph for `config`, `shape` and `options`, with initial parameter
/// values `params` (every training parameter of `config`, by `formats` name; see
/// [`init_params`]).
pub fn build_train(
    config: &ModelConfig,
    shape: BatchShape,
    options: TrainOptions,
    params: &[(String, Vec<f32>)],
) -> Result<TrainGraph, BuildError> {
    let (mut model, p) = Model::new(config, shape, 1.0 - options.dropout, params)?;
    let (logits, losses) = model.train(&p, options);
    model.graph.check()?;
    Ok(TrainGraph {
        graph: model.graph,
        logits,
        losses,
    })
}

/// Builds the evaluation graph (`W = mu`) for `config` and `shape` with the parameter values
/// `params` (every training parameter of `config`, by `formats` name; the training-only ones
/// are in the graph but unused).
pub fn build_eval(
    config: &ModelConfig,
    shape: BatchShape,
    params: &[(String, Vec<f32>)],
) -> Result<EvalGraph, BuildError> {
    let (mut model, p) = Model::new(config, shape, 1.0, params)?;
    let logits = model.eval(&p);
    model.graph.check()?;
    Ok(EvalGraph {
        graph: model.graph,
        logits,
    })
}

/// A layer norm's gain and bias `(d)`.
#[derive(Clone, Copy, Debug)]
struct LayerNorm {
    gain: Tensor,
    bias: Tensor,
}

/// The attention half of a block (absent in the MLP ablation).
#[derive(Clone, Copy, Debug)]
struct Attention {
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ln1: LayerNorm,
}

/// One attention block (AWGIM.md "One attention block").
#[derive(Clone, Copy, Debug)]
struct Block {
    attention: Option<Attention>,
    f1: Tensor,
    f2: Tensor,
    ln2: LayerNorm,
    /// Dropout on the feed-forward input.
    ff_site: DropoutSite,
}

/// The weight generator `G1`, `G2 = [G2mu, G2sigma]`.
#[derive(Clone, Copy, Debug)]
struct Generator {
    g1: Tensor,
    g2_mu: Tensor,
    g2_sigma: Tensor,
}

/// A reconstruction decoder `R2(relu(R1(dropout(w))))`.
#[derive(Clone, Copy, Debug)]
struct Decoder {
    r1: Tensor,
    r2: Tensor,
    site: DropoutSite,
}

/// Every parameter of a training file, typed.
#[derive(Clone, Copy, Debug)]
struct Params {
    enc_ap: Tensor,
    enc_cp: Tensor,
    sa_ap: Block,
    ca_ap: Block,
    sa_cp: Block,
    generator: Generator,
    dec_q: Decoder,
    dec_s: Decoder,
    /// The cosine logits' scale (absent with dot-product logits).
    logit_scale: Option<Tensor>,
}

/// Makes a graph's parameters from given values, each checked against its shape in
/// `formats`' table, in the order they are asked for.
struct Loader<'a> {
    graph: &'a mut GraphBuilder,
    config: &'a ModelConfig,
    values: &'a [(String, Vec<f32>)],
}

impl Loader<'_> {
    fn param(&mut self, name: &'static str) -> Result<Tensor, BuildError> {
        let (_, spec) = formats::required_tensor(self.config, FileKind::Training, name)
            .ok_or(BuildError::NotInTable(name))?;
        let shape: Vec<usize> = spec.shape.iter().map(|&s| s as usize).collect();
        let value = self
            .values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(BuildError::MissingParam(name))?;
        let expected: usize = shape.iter().product();
        if value.len() != expected {
            return Err(BuildError::ParamShape {
                name,
                shape,
                expected,
                found: value.len(),
            });
        }
        Ok(self.graph.param(name, &shape, value.clone()))
    }

    fn layer_norm(&mut self, names: &LayerNormNames) -> Result<LayerNorm, BuildError> {
        Ok(LayerNorm {
            gain: self.param(names.gain)?,
            bias: self.param(names.bias)?,
        })
    }

    fn block(&mut self, names: &'static BlockNames) -> Result<Block, BuildError> {
        let attention = match self.config.encoder {
            EncoderKind::Attention => Some(Attention {
                wq: self.param(names.wq)?,
                wk: self.param(names.wk)?,
                wv: self.param(names.wv)?,
                wo: self.param(names.wo)?,
                ln1: self.layer_norm(&names.ln1)?,
            }),
            EncoderKind::Mlp => None,
        };
        Ok(Block {
            attention,
            f1: self.param(names.f1)?,
            f2: self.param(names.f2)?,
            ln2: self.layer_norm(&names.ln2)?,
            ff_site: DropoutSite::FeedForward(names),
        })
    }

    fn decoder(&mut self, names: &DecoderNames, site: DropoutSite) -> Result<Decoder, BuildError> {
        Ok(Decoder {
            r1: self.param(names.r1)?,
            r2: self.param(names.r2)?,
            site,
        })
    }

    /// Every parameter, in `formats`' canonical order (the graph declares them in it).
    fn params(&mut self) -> Result<Params, BuildError> {
        Ok(Params {
            enc_ap: self.param(ENC_AP)?,
            enc_cp: self.param(ENC_CP)?,
            sa_ap: self.block(&SA_AP)?,
            ca_ap: self.block(&CA_AP)?,
            sa_cp: self.block(&SA_CP)?,
            generator: Generator {
                g1: self.param(GENERATOR.g1)?,
                g2_mu: self.param(GENERATOR.g2_mu)?,
                g2_sigma: self.param(GENERATOR.g2_sigma)?,
            },
            dec_q: self.decoder(&DEC_Q, DropoutSite::DecoderQ)?,
            dec_s: self.decoder(&DEC_S, DropoutSite::DecoderS)?,
            logit_scale: match self.config.classifier.logits {
                LogitsKind::Dot => None,
                LogitsKind::Cosine => Some(self.param(LOGIT_SCALE)?),
            },
        })
    }
}

/// A graph being built.
struct Model {
    graph: GraphBuilder,
    sizes: Sizes,
    /// Tasks per batch.
    B: usize,
    /// Queries per task.
    M: usize,
    layer_norm: LayerNormKind,
    ln_epsilon: f32,
    /// Dropout keep probability (1 = no dropout).
    keep: f32,
    classifier: Classifier,
}

impl Model {
    /// A graph holding every training parameter of `config` with the values `params`.
    fn new(
        config: &ModelConfig,
        shape: BatchShape,
        keep: f32,
        params: &[(String, Vec<f32>)],
    ) -> Result<(Model, Params), BuildError> {
        config.validate()?;
        let mut graph = GraphBuilder::new();
        let p = Loader {
            graph: &mut graph,
            config,
            values: params,
        }
        .params()?;
        let sizes = config.sizes();
        let model = Model {
            graph,
            sizes,
            B: shape.tasks,
            M: sizes.N * shape.queries_per_class,
            layer_norm: config.layer_norm,
            ln_epsilon: config.ln_epsilon,
            keep,
            classifier: config.classifier,
        };
        Ok((model, p))
    }

    /// `x * mask` with a host-drawn mask `mask.<site>` (values 0 or 1/keep), or `x`.
    fn dropout(&mut self, x: Tensor, site: DropoutSite) -> Tensor {
        if self.keep >= 1.0 {
            return x;
        }
        let mask = self.graph.input(&site.input_name(), &x.shape());
        x * mask
    }

    /// Layer norm with gain and bias over the last axis of `(B, rows, d)` (per row), or over
    /// rows and features together (the reference's task-wide variant).
    fn layer_norm(&self, x: Tensor, ln: &LayerNorm) -> Tensor {
        let axes: &[usize] = match self.layer_norm {
            LayerNormKind::PerRow => &[2],
            LayerNormKind::TaskWide => &[1, 2],
        };
        let shape = x.shape();
        let normed = x.layer_norm(axes, self.ln_epsilon);
        normed * ln.gain.broadcast_to(&shape) + ln.bias.broadcast_to(&shape)
    }

    /// `LN2(x + F2(relu(F1(dropout(x)))))`.
    fn feed_forward(&mut self, block: &Block, x: Tensor) -> Tensor {
        let hidden = self.dropout(x, block.ff_site).matmul(block.f1).relu();
        self.layer_norm(x + hidden.matmul(block.f2), &block.ln2)
    }

    /// One attention block `block(q, k, v)` on `(B, R, d)` queries and `(B, S, d)` keys and
    /// values: per head `a_j = softmax((q Wq_j)(k Wk_j)^T / sqrt(d/h)) (v Wv_j)`;
    /// `out = LN1(q + sum_j a_j Wo_j)`; then the feed-forward sub-block.
    /// With the MLP ablation only the feed-forward sub-block runs, on `q`.
    fn block(&mut self, block: &Block, q: Tensor, k: Tensor, v: Tensor) -> Tensor {
        let Some(att) = &block.attention else {
            return self.feed_forward(block, q);
        };
        let Sizes { d, h, .. } = self.sizes;
        let B = self.B;
        let dh = d / h;
        let heads = |x: Tensor, w: Tensor| {
            let rows = x.shape()[1];
            // (B, rows, d) -> (B, h, rows, d/h): head j is columns j*d/h..(j+1)*d/h.
            x.matmul(w)
                .reshape(&[B, rows, h, dh])
                .permute(&[0, 2, 1, 3])
        };
        let qh = heads(q, att.wq);
        let kh = heads(k, att.wk);
        let vh = heads(v, att.wv);
        let scores = qh.matmul(kh.t()) * (1.0 / (dh as f32).sqrt()); // (B, h, R, S)
        let a = scores.softmax(3).matmul(vh); // (B, h, R, d/h)
        let rows = q.shape()[1];
        let a = a.permute(&[0, 2, 1, 3]).reshape(&[B, rows, d]);
        let out = q + a.matmul(att.wo);
        let out = self.layer_norm(out, &att.ln1);
        self.feed_forward(block, out)
    }

    /// Mean of each class's `K` rows: `(B, NK, d)` -> `(B, N, d)`.
    fn class_mean(&self, x: Tensor) -> Tensor {
        let Sizes { N, K, .. } = self.sizes;
        let width = x.shape()[2];
        x.reshape(&[self.B, N, K, width]).mean(&[2])
    }

    /// Steps 1-3 of both graphs: the inputs, both paths and the generator input.
    fn paths(&mut self, p: &Params) -> Paths {
        let Sizes { D, d, N, K, .. } = self.sizes;
        let (B, M, NK) = (self.B, self.M, N * K);
        let x_s = self.graph.input(input::SUPPORT, &[B, NK, D]);
        let x_q = self.graph.input(input::QUERY, &[B, M, D]);
        let (x_s, x_q) = match self.classifier.features {
            FeatureNorm::Raw => (x_s, x_q),
            FeatureNorm::CenteredL2 => {
                let center = self.graph.input(input::CENTER, &[D]);
                let centered = |x: Tensor| l2_normalise(x - center.broadcast_to(&x.shape()));
                (centered(x_s), centered(x_q))
            }
        };
        // The normalised class prototypes p[i] / |p[i]| (B, N, D), when the weights correct them.
        let prototypes = match self.classifier.weights {
            WeightsKind::Generated => None,
            WeightsKind::Prototype => Some(l2_normalise(self.class_mean(x_s))),
        };

        // 1. Attentive path: s = X_s enc_ap, q = X_q enc_ap; v = sa_ap(s, s, s) with every
        //    row replaced by its class mean; a = ca_ap(q, s, v).
        let s = self.dropout(x_s, DropoutSite::SupportAp).matmul(p.enc_ap); // (B, NK, d)
        let q = self.dropout(x_q, DropoutSite::QueryAp).matmul(p.enc_ap); // (B, M, d)
        let v = self.block(&p.sa_ap, s, s, s);
        let v_bar = self.class_mean(v); // (B, N, d)
        let v_rows = v_bar.expand(2, K).reshape(&[B, NK, d]);
        let a = self.block(&p.ca_ap, q, s, v_rows); // (B, M, d)

        // 2. Contextual path: c = sa_cp(X_s enc_cp, ...), c_bar[i] = mean of class i's rows.
        let e = self.dropout(x_s, DropoutSite::SupportCp).matmul(p.enc_cp);
        let c = self.block(&p.sa_cp, e, e, e);
        let c_bar = self.class_mean(c); // (B, N, d)

        // 3. Generator input z = [c_bar[i]; a(x)] for query x and class i: (B, M, N, 2d).
        let z = c_bar.expand(1, M).concat(&[a.expand(2, N)], 3);
        Paths {
            x_s,
            x_q,
            a,
            c_bar,
            z,
            prototypes,
        }
    }

    /// The weights `(B, M, N, D)` the logits take, from the generated `w`: the prototype
    /// added ([`WeightsKind::Prototype`]), then normalised and scaled ([`LogitsKind::Cosine`]).
    /// The paper's classifier takes `w` itself.
    fn classifier_weights(&self, p: &Params, paths: &Paths, w: Tensor) -> Tensor {
        let w = self.with_prototypes(paths, w, 1);
        match p.logit_scale {
            None => w,
            Some(scale) => l2_normalise(w) * scale.broadcast_to(&w.shape()),
        }
    }

    /// `w + p[i] / |p[i]|` with the prototypes expanded over the queries (axis 1) and over
    /// any further axes of `w` after the class axis (`extra` = 1 for `(B, M, N, D)`, 2 for the
    /// sampled rows `(B, M, N, K, D)`); `w` itself without prototypes.
    fn with_prototypes(&self, paths: &Paths, w: Tensor, extra: usize) -> Tensor {
        let Some(prototypes) = paths.prototypes else {
            return w;
        };
        let mut expanded = prototypes.expand(1, self.M);
        if extra == 2 {
            expanded = expanded.expand(3, self.sizes.K);
        }
        w + expanded
    }

    /// The evaluation graph's logits.
    fn eval(&mut self, p: &Params) -> Tensor {
        let N = self.sizes.N;
        let paths = self.paths(p);
        let (x_q, z) = (paths.x_q, paths.z);
        // 4-5 at evaluation: W[i] = mu = G2mu(relu(G1 z)).
        let w_eval = z.matmul(p.generator.g1).relu().matmul(p.generator.g2_mu);
        let w_eval = self.classifier_weights(p, &paths, w_eval);
        // 6. l[i] = x . W[i].
        (x_q.expand(2, N) * w_eval).sum(&[3]) // (B, M, N)
    }

    /// The training graph's logits and losses.
    fn train(&mut self, p: &Params, options: TrainOptions) -> (Tensor, Losses) {
        let Sizes { D, d, N, K, .. } = self.sizes;
        let (B, M, NK) = (self.B, self.M, N * K);
        let paths = self.paths(p);
        let Paths {
            x_s,
            x_q,
            a,
            c_bar,
            z,
            ..
        } = paths;
        let generator = &p.generator;

        // 4. (mu, u) = G2(relu(G1(dropout(z)))); sigma = max(exp(u) - 1 + sqrt(2/(N+D)), 1e-10).
        // 5. w = mu + sigma * eps for each of the K rows of a class; W[i] = mean over them.
        let eps = self.graph.input(input::NOISE, &[B, M, N, K, D]);
        let sigma_offset = (2.0 / (N + D) as f32).sqrt() - 1.0;
        let w_rows = match options.rows {
            GeneratorRows::PerClass => {
                let hidden = self
                    .dropout(z, DropoutSite::Generator)
                    .matmul(generator.g1)
                    .relu();
                let mu = hidden.matmul(generator.g2_mu); // (B, M, N, D)
                let u = hidden.matmul(generator.g2_sigma);
                let sigma = sigma_from(u, sigma_offset);
                mu.expand(3, K) + sigma.expand(3, K) * eps // (B, M, N, K, D)
            }
            GeneratorRows::PerSupportRow => {
                // The reference: z for all NK support rows (the K rows of a class are equal).
                let z_rows = z.expand(3, K).reshape(&[B, M, NK, 2 * d]);
                let hidden = self
                    .dropout(z_rows, DropoutSite::Generator)
                    .matmul(generator.g1)
                    .relu();
                let mu = hidden.matmul(generator.g2_mu); // (B, M, NK, D)
                let sigma = sigma_from(hidden.matmul(generator.g2_sigma), sigma_offset);
                let eps_rows = eps.reshape(&[B, M, NK, D]);
                (mu + sigma * eps_rows).reshape(&[B, M, N, K, D])
            }
        };
        let w_avg = w_rows.mean(&[3]); // (B, M, N, D)
        let w_avg = self.classifier_weights(p, &paths, w_avg);

        // 6. Query logits l[i] = dropout(x) . W[i]; support logits: every support example
        //    scored with the same query-specific W.
        let x_q_l = self.dropout(x_q, DropoutSite::QueryLogits);
        let logits = (x_q_l.expand(2, N) * w_avg).sum(&[3]); // (B, M, N)
        let x_s_l = self.dropout(x_s, DropoutSite::SupportLogits);
        let support_logits = x_s_l
            .matmul(w_avg.reshape(&[B, M * N, D]).t()) // (B, NK, M*N)
            .reshape(&[B, NK, M, N]);
        let y_q = self.graph.input(input::QUERY_TARGETS, &[B, M, N]);
        let y_s = self.graph.input(input::SUPPORT_TARGETS, &[B, NK, N]);
        let ce_query = logits.cross_entropy_with_logits(y_q).mean_all();
        let ce_support = support_logits
            .cross_entropy_with_logits(y_s.expand(2, M))
            .mean_all();

        // 7. Reconstruction of the stopped-gradient targets from every sampled row:
        //    r_q(w) ~ a(x), r_s(w) ~ c_bar[i]; r(w) = R2(relu(R1(dropout(w)))).
        let target_q = a.stop_gradient().expand(2, N).expand(3, K); // (B, M, N, K, d)
        let target_s = c_bar.stop_gradient().expand(1, M).expand(3, K);
        // With prototype weights the decoders read the full weight rows, prototype included.
        let w_rows = self.with_prototypes(&paths, w_rows, 2);
        let r_q = self.decoder(&p.dec_q, w_rows);
        let r_s = self.decoder(&p.dec_s, w_rows);
        let recon_query = r_q.squared_error(target_q).mean_all();
        let recon_support = r_s.squared_error(target_s).mean_all();

        let LossWeights { l1, l2, l3 } = options.loss_weights;
        let total = ce_query + ce_support * l1 + recon_support * l2 + recon_query * l3;
        let losses = Losses {
            total,
            ce_query,
            ce_support,
            recon_support,
            recon_query,
        };
        (logits, losses)
    }

    /// `R2(relu(R1(dropout(w))))` on every sampled row.
    fn decoder(&mut self, decoder: &Decoder, w: Tensor) -> Tensor {
        let x = self.dropout(w, decoder.site);
        x.matmul(decoder.r1).relu().matmul(decoder.r2)
    }
}

/// What steps 1-3 give the rest of the graph.
struct Paths {
    /// Support features `(B, NK, D)`.
    x_s: Tensor,
    /// Query features `(B, M, D)`.
    x_q: Tensor,
    /// The attentive path's query embeddings `a(x)`, `(B, M, d)`.
    a: Tensor,
    /// The contextual path's class means `c_bar`, `(B, N, d)`.
    c_bar: Tensor,
    /// The generator input `(B, M, N, 2d)`.
    z: Tensor,
    /// The normalised class prototypes `(B, N, D)` ([`WeightsKind::Prototype`]).
    prototypes: Option<Tensor>,
}

/// Each row of `x` (its last axis) divided by its L2 norm.
fn l2_normalise(x: Tensor) -> Tensor {
    let shape = x.shape();
    let last = shape.len().saturating_sub(1);
    let width = shape.last().copied().unwrap_or(1);
    let norm = ((x * x).sum(&[last]) + NORM_EPSILON).sqrt();
    x / norm.expand(last, width)
}

/// `sigma = max(exp(u) + offset, 1e-10)` with `offset = sqrt(2 / (N + D)) - 1`.
fn sigma_from(u: Tensor, offset: f32) -> Tensor {
    let s = u.exp() + offset;
    s.maximum(s.full_like(1e-10))
}

/// How the reference initialises a parameter.
#[derive(Debug)]
enum Init {
    /// All ones (layer-norm gains).
    One,
    /// All zeros (layer-norm biases; the feature centre until the data sets it).
    Zero,
    /// Drawn as the inner initialisation, then set to zero: `G2mu` of prototype weights (the
    /// untrained model is nearest class mean, and every other parameter gets the draws it
    /// gets in the paper's model).
    Drawn(&'static Init),
    /// One value everywhere (the cosine logits' scale).
    Value(f32),
    /// Normal with standard deviation `d^-1/2` (attention projections).
    Normal,
    /// Glorot-uniform for a layer of `fan_out_factor` times the tensor's outputs.
    Glorot {
        /// 2 for the halves of `G2` (one `G x 2D` layer in the reference), else 1.
        fan_out_factor: f32,
    },
}

impl Init {
    /// The initialisation of the parameter `name` of a model with the classifier `classifier`.
    fn of(name: &str, classifier: Classifier) -> Init {
        if name == FEATURE_CENTER {
            return Init::Zero;
        }
        if name == GENERATOR.g2_mu && classifier.weights == WeightsKind::Prototype {
            return Init::Drawn(&Init::Glorot {
                fan_out_factor: 2.0,
            });
        }
        if name == LOGIT_SCALE {
            return Init::Value(INITIAL_LOGIT_SCALE);
        }
        for b in [&SA_AP, &CA_AP, &SA_CP] {
            if name == b.ln1.gain || name == b.ln2.gain {
                return Init::One;
            }
            if name == b.ln1.bias || name == b.ln2.bias {
                return Init::Zero;
            }
            if [b.wq, b.wk, b.wv, b.wo].contains(&name) {
                return Init::Normal;
            }
        }
        let fan_out_factor = if name == GENERATOR.g2_mu || name == GENERATOR.g2_sigma {
            2.0
        } else {
            1.0
        };
        Init::Glorot { fan_out_factor }
    }
}

impl Init {
    /// Values of a parameter of `shape` (`d` the latent size), drawn from `rng`.
    fn values(&self, shape: &[usize], d: f32, rng: &mut impl Rng) -> Vec<f32> {
        let numel: usize = shape.iter().product();
        match self {
            Init::One => vec![1.0; numel],
            Init::Zero => vec![0.0; numel],
            Init::Value(v) => vec![*v; numel],
            Init::Drawn(inner) => {
                let mut values = inner.values(shape, d, rng);
                values.iter_mut().for_each(|v| *v = 0.0);
                values
            }
            Init::Normal => {
                let std = d.powf(-0.5);
                (0..numel)
                    .map(|_| {
                        let x: f32 = StandardNormal.sample(rng);
                        std * x
                    })
                    .collect()
            }
            Init::Glorot { fan_out_factor } => {
                // Dense layers are `[in, out]`.
                let fan_in = shape.first().copied().unwrap_or(1) as f32;
                let fan_out = shape.get(1).copied().unwrap_or(1) as f32 * fan_out_factor;
                let limit = (6.0 / (fan_in + fan_out)).sqrt();
                (0..numel).map(|_| rng.gen_range(-limit..limit)).collect()
            }
        }
    }
}

/// Initial values of every training parameter of `config`, as in the reference:
/// Glorot-uniform dense layers (G2 counted as one `G x 2D` layer), attention projections
/// normal with standard deviation `d^-1/2`, layer-norm gain 1 and bias 0. Drawn in
/// `formats`' canonical order. Beyond the paper: `G2mu` is zero with prototype weights, the
/// cosine logits' scale is [`INITIAL_LOGIT_SCALE`], and the feature centre is zero (the run
/// sets it from the data).
pub fn init_params(config: &ModelConfig, rng: &mut impl Rng) -> Vec<(String, Vec<f32>)> {
    let d = config.sizes().d as f32;
    formats::expected_tensors(config, FileKind::Training)
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|&s| s as usize).collect();
            let values = Init::of(spec.name, config.classifier).values(&shape, d, rng);
            (spec.name.to_string(), values)
        })
        .collect()
}

/// What the host draws for one training step besides the data: the noise and the dropout
/// masks. Fills every input of `graph` whose name is [`input::NOISE`] or starts with
/// [`input::MASK_PREFIX`], in the order of `inputs`, calling `set` with its name and values.
/// The values are handed over in a buffer of their own, so that the caller can make it the
/// input's tensor without copying it ([`autodiff::TrainStep::set_input_vec`]).
pub fn draw_random_inputs<R: Rng + Clone>(
    inputs: &[(String, Vec<usize>)],
    keep: f32,
    rng: &mut R,
    mut set: impl FnMut(&str, Vec<f32>) -> Result<(), AutodiffError>,
) -> Result<(), AutodiffError> {
    for (name, shape) in inputs {
        let numel: usize = shape.iter().product();
        let values = if name == input::NOISE {
            draw_values(rng, numel, |rng| StandardNormal.sample(rng))
        } else if name.starts_with(input::MASK_PREFIX) {
            let scale = 1.0 / keep;
            draw_values(rng, numel, |rng| {
                if rng.gen::<f32>() < keep {
                    scale
                } else {
                    0.0
                }
            })
        } else {
            continue;
        };
        set(name, values)?;
    }
    Ok(())
}

/// `numel` values of `draw` from `rng`, in order, in a buffer of their own. They are drawn
/// from a copy of `rng` written back after: the compiler keeps a local generator's state in
/// registers, whereas behind `&mut` it stored it after every draw. `Vec::extend`, not
/// `collect`: collected, the masks' loop compiled 4 times slower (38.4 M masks, 5-shot paper
/// sizes, AMD EPYC Zen 4: 52-57 ms extended, 207-218 collected).
fn draw_values<R: Rng + Clone>(
    rng: &mut R,
    numel: usize,
    mut draw: impl FnMut(&mut R) -> f32,
) -> Vec<f32> {
    let mut local = rng.clone();
    let mut values = Vec::with_capacity(numel);
    values.extend((0..numel).map(|_| draw(&mut local)));
    *rng = local;
    values
}
