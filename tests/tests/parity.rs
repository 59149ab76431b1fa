//! Trainer <-> engine parity: what the trainer's evaluation graph (luminal) computes is what
//! the engine (the code a device runs) computes, on the exported inference file.
//!
//! For the paper and the edge configuration, K = 1 and K = 5, a random-init and a briefly
//! trained model: 100 tasks with 15 queries per class. Bound: maximum absolute logit
//! difference 1e-4, and the same predicted class wherever the top two logits differ by more
//! than 1e-3. The observed maximum is printed (`-- --nocapture`).
//!
//! Beyond the paper, the same for the classifier variants the trainer writes, edge sizes
//! K = 1 and 5: the default (centred L2 features, prototype weights, cosine logits), prototype
//! weights with dot logits on raw features, and generated weights with cosine logits. Their
//! feature centre is the training split's mean, and their random-init `G2mu` is drawn (the
//! trainer's init zeroes it for prototype weights, which would leave the generator untested).
// Sizes are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_snake_case)]

use autodiff::{AdamWConfig, Backend, TrainStep};
use formats::{Classifier, FeatureNorm, FileKind, LogitsKind, ModelConfig, Sizes, WeightsKind};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use trainer::awgim::{self, input, BatchShape, GeneratorRows, LossWeights, TrainOptions};
use trainer::data::{Dataset, EpisodeBatch, EpisodeSampler, EpisodeSpec, SplitKind, SyntheticSpec};
use trainer::evaluate::{argmax, CompiledEval};
use trainer::model_file::{provenance, ModelParams};

const TASKS: usize = 100;
const QUERIES: usize = 15;
const TASKS_PER_RUN: usize = 10;

fn dataset(dim: usize) -> Dataset {
    SyntheticSpec {
        dim,
        examples_per_class: 40,
        ..SyntheticSpec::default()
    }
    .generate()
    .unwrap()
}

/// A few AdamW steps of the real training graph (small Q to keep it quick).
fn briefly_trained(
    config: &ModelConfig,
    data: &Dataset,
    params: Vec<(String, Vec<f32>)>,
) -> Vec<(String, Vec<f32>)> {
    let (n, k, q) = (config.sizes().N, config.sizes().K, 3);
    let shape = BatchShape {
        tasks: 2,
        queries_per_class: q,
    };
    let options = TrainOptions {
        dropout: 0.3,
        loss_weights: LossWeights::default(),
        rows: GeneratorRows::PerClass,
    };
    let built = awgim::build_train(config, shape, options, &params).unwrap();
    let inputs = built.graph.inputs();
    let config_adam = AdamWConfig {
        lr: 1e-3,
        ..AdamWConfig::default()
    };
    let mut step = TrainStep::new(
        built.graph,
        built.losses.total,
        &[],
        config_adam,
        Backend::Cpu,
    )
    .unwrap();
    // The feature centre is a graph input, not a trained parameter.
    let center = params
        .iter()
        .find(|(name, _)| name == input::CENTER)
        .cloned();
    if let Some((name, values)) = &center {
        step.set_input(name, values).unwrap();
    }
    let spec = EpisodeSpec {
        n_way: n,
        k_shot: k,
        n_query: q,
        shuffle_queries: true,
    };
    let mut sampler = EpisodeSampler::new(data.split(SplitKind::Train), spec, 9).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    for s in 0..8 {
        let b = sampler.sample(2);
        step.set_input(input::SUPPORT, &b.support).unwrap();
        step.set_input(input::QUERY, &b.query).unwrap();
        step.set_input(
            input::SUPPORT_TARGETS,
            &EpisodeBatch::one_hot(&b.support_labels, n),
        )
        .unwrap();
        step.set_input(
            input::QUERY_TARGETS,
            &EpisodeBatch::one_hot(&b.query_labels, n),
        )
        .unwrap();
        awgim::draw_random_inputs(&inputs, 0.7, &mut rng, |name, v| {
            step.set_input_vec(name, v)
        })
        .unwrap();
        assert!(!step.step(s).unwrap().skipped);
    }
    let mut trained = step.params().unwrap();
    trained.extend(center);
    assert_ne!(trained, params, "training changed nothing");
    trained
}

struct Outcome {
    max_abs: f32,
    max_logit: f32,
    compared: usize,
    decisive: usize,
}

fn compare(config: &ModelConfig, data: &Dataset, params: &[(String, Vec<f32>)]) -> Outcome {
    let model = ModelParams {
        kind: FileKind::Training,
        config: *config,
        provenance: provenance("parity", config.shots, 0, 0, None),
        params: params.to_vec(),
        optimizer: None,
        training: None,
    };
    let bytes = formats::AlignedBuf::from_bytes(&model.inference().to_bytes().unwrap());
    let mut graph =
        CompiledEval::new(config, TASKS_PER_RUN, QUERIES, params, Backend::Cpu).unwrap();
    let Sizes { D, N, K, .. } = config.sizes();
    let spec = EpisodeSpec {
        n_way: N,
        k_shot: K,
        n_query: QUERIES,
        shuffle_queries: true,
    };
    let mut sampler = EpisodeSampler::new(data.split(SplitKind::Test), spec, 17).unwrap();
    let mut out = Outcome {
        max_abs: 0.0,
        max_logit: 0.0,
        compared: 0,
        decisive: 0,
    };
    let m = N * QUERIES;
    for _ in 0..TASKS / TASKS_PER_RUN {
        let batch = sampler.sample(TASKS_PER_RUN);
        let graph_logits = graph.logits(&batch).unwrap();
        for t in 0..TASKS_PER_RUN {
            let support = &batch.support[t * N * K * D..(t + 1) * N * K * D];
            let queries = &batch.query[t * m * D..(t + 1) * m * D];
            let engine_logits =
                trainer::infer::classify(bytes.as_bytes(), support, queries).unwrap();
            let expected = &graph_logits[t * m * N..(t + 1) * m * N];
            for (row_e, row_g) in engine_logits.chunks_exact(N).zip(expected.chunks_exact(N)) {
                for (a, b) in row_e.iter().zip(row_g) {
                    out.max_abs = out.max_abs.max((a - b).abs());
                    out.max_logit = out.max_logit.max(b.abs());
                }
                let mut sorted = row_g.to_vec();
                sorted.sort_by(|a, b| b.total_cmp(a));
                if sorted[0] - sorted[1] > 1e-3 {
                    out.decisive += 1;
                    assert_eq!(
                        argmax(row_e),
                        argmax(row_g),
                        "engine {row_e:?} vs graph {row_g:?}"
                    );
                }
                out.compared += 1;
            }
        }
    }
    out
}

fn check(config: ModelConfig, name: &str) {
    let data = dataset(config.sizes().D);
    let mut init = awgim::init_params(&config, &mut Xoshiro256PlusPlus::seed_from_u64(1));
    // The classifier variants: the centre from the data, a drawn G2mu (see the module doc).
    let paper = ModelConfig {
        classifier: Classifier::PAPER,
        ..config
    };
    let drawn = awgim::init_params(&paper, &mut Xoshiro256PlusPlus::seed_from_u64(1));
    for (name, values) in &mut init {
        if name == input::CENTER {
            *values = data.split(SplitKind::Train).mean();
        } else if name == "gen.g2_mu" {
            let (_, g2_mu) = drawn.iter().find(|(n, _)| n == name).unwrap();
            values.clone_from(g2_mu);
        }
    }
    let trained = briefly_trained(&config, &data, init.clone());
    for (label, params) in [("random-init", &init), ("trained", &trained)] {
        let o = compare(&config, &data, params);
        println!(
            "parity {name} {label}: {} queries ({TASKS} tasks), max |engine - graph| = {:.3e} (max |logit| {:.2}), \
             predicted class checked on {} decisive queries",
            o.compared, o.max_abs, o.max_logit, o.decisive
        );
        assert!(
            o.max_abs <= 1e-4,
            "{name} {label}: max abs difference {}",
            o.max_abs
        );
        assert_eq!(o.compared, TASKS * config.sizes().N * QUERIES);
    }
}

#[test]
fn parity_edge_one_shot() {
    check(ModelConfig::edge(1), "edge 1-shot");
}

#[test]
fn parity_edge_five_shot() {
    check(ModelConfig::edge(5), "edge 5-shot");
}

#[test]
fn parity_paper_one_shot() {
    check(ModelConfig::paper(1), "paper 1-shot");
}

#[test]
fn parity_paper_five_shot() {
    check(ModelConfig::paper(5), "paper 5-shot");
}

/// The edge configuration with the classifier `features`, `weights`, `logits`.
fn edge_with(
    shots: u32,
    features: FeatureNorm,
    weights: WeightsKind,
    logits: LogitsKind,
) -> ModelConfig {
    ModelConfig {
        classifier: Classifier {
            features,
            weights,
            logits,
        },
        ..ModelConfig::edge(shots)
    }
}

/// The trainer's default classifier: centred L2 features, prototype weights, cosine logits.
fn edge_default(shots: u32) -> ModelConfig {
    edge_with(
        shots,
        FeatureNorm::CenteredL2,
        WeightsKind::Prototype,
        LogitsKind::Cosine,
    )
}

#[test]
fn parity_default_classifier_one_shot() {
    check(edge_default(1), "edge 1-shot, default classifier");
}

#[test]
fn parity_default_classifier_five_shot() {
    check(edge_default(5), "edge 5-shot, default classifier");
}

#[test]
fn parity_prototype_dot_one_shot() {
    let config = edge_with(1, FeatureNorm::Raw, WeightsKind::Prototype, LogitsKind::Dot);
    check(config, "edge 1-shot, raw + prototype + dot");
}

#[test]
fn parity_prototype_dot_five_shot() {
    let config = edge_with(5, FeatureNorm::Raw, WeightsKind::Prototype, LogitsKind::Dot);
    check(config, "edge 5-shot, raw + prototype + dot");
}

#[test]
fn parity_generated_cosine_one_shot() {
    let config = edge_with(
        1,
        FeatureNorm::Raw,
        WeightsKind::Generated,
        LogitsKind::Cosine,
    );
    check(config, "edge 1-shot, raw + generated + cosine");
}

#[test]
fn parity_generated_cosine_five_shot() {
    let config = edge_with(
        5,
        FeatureNorm::Raw,
        WeightsKind::Generated,
        LogitsKind::Cosine,
    );
    check(config, "edge 5-shot, raw + generated + cosine");
}
