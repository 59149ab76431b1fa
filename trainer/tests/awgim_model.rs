//! The AWGIM graphs: shapes, the losses, and the once-per-class generator against the
//! reference's N*K-row generator.

// AWGIM.md's size letters: `D` (features) and `d` (latent) are two different sizes.
#![allow(non_snake_case)]

use autodiff::{backward, Backend, Evaluator, GraphBuilder, Tensor};
use formats::{EncoderKind, FileKind, LayerNormKind, ModelConfig, Sizes};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use trainer::awgim::{
    self, input, BatchShape, BuildError, DropoutSite, GeneratorRows, LossWeights, TrainOptions,
};

fn tiny(shots: u32) -> ModelConfig {
    ModelConfig::new(12, 8, 2, 3, shots, 10)
}

fn features(rng: &mut Xoshiro256PlusPlus, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(0.0..1.0)).collect()
}

fn one_hot(labels: &[usize], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * n];
    for (row, &l) in labels.iter().enumerate() {
        out[row * n + l] = 1.0;
    }
    out
}

/// Random data for every input of a graph (labels consistent with class-major support).
fn feed(
    inputs: &[(String, Vec<usize>)],
    config: &ModelConfig,
    shape: BatchShape,
    seed: u64,
) -> Vec<(String, Vec<f32>)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let Sizes { N, K, .. } = config.sizes();
    let Q = shape.queries_per_class;
    let mut out = Vec::new();
    for (name, dims) in inputs {
        let numel: usize = dims.iter().product();
        let data = match name.as_str() {
            input::SUPPORT_TARGETS => {
                let labels: Vec<usize> = (0..shape.tasks)
                    .flat_map(|_| (0..N).flat_map(move |i| std::iter::repeat_n(i, K)))
                    .collect();
                one_hot(&labels, N)
            }
            input::QUERY_TARGETS => {
                let labels: Vec<usize> = (0..shape.tasks)
                    .flat_map(|_| (0..N).flat_map(move |i| std::iter::repeat_n(i, Q)))
                    .collect();
                one_hot(&labels, N)
            }
            input::NOISE => (0..numel).map(|_| rng.gen_range(-2.0..2.0)).collect(),
            _ => features(&mut rng, numel),
        };
        out.push((name.clone(), data));
    }
    out
}

fn params(config: &ModelConfig, seed: u64) -> Vec<(String, Vec<f32>)> {
    awgim::init_params(config, &mut Xoshiro256PlusPlus::seed_from_u64(seed))
}

/// Runs `graph` with the given inputs; returns the values of `outputs`.
fn run(
    graph: GraphBuilder,
    outputs: &[Tensor],
    feed: &[(String, Vec<f32>)],
    params: &[(String, Vec<f32>)],
) -> Vec<Vec<f32>> {
    let mut eval = Evaluator::new(graph, outputs, Backend::Cpu).unwrap();
    eval.load_params(params).unwrap();
    for (name, data) in feed {
        eval.set_input(name, data).unwrap();
    }
    eval.run().unwrap()
}

#[test]
fn shapes_of_the_training_and_evaluation_graphs() {
    for config in [tiny(1), tiny(3)] {
        let shape = BatchShape {
            tasks: 2,
            queries_per_class: 2,
        };
        let p = params(&config, 1);
        let options = TrainOptions {
            dropout: 0.3,
            loss_weights: LossWeights::default(),
            rows: GeneratorRows::PerClass,
        };
        let train = awgim::build_train(&config, shape, options, &p).unwrap();
        let Sizes { N, K, D, d, .. } = config.sizes();
        assert_eq!(train.logits.shape(), vec![2, N * 2, N]);
        let inputs = train.graph.inputs();
        let find = |name: &str| {
            inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
        };
        assert_eq!(find(input::SUPPORT), Some(vec![2, N * K, D]));
        assert_eq!(find(input::QUERY), Some(vec![2, N * 2, D]));
        assert_eq!(find(input::NOISE), Some(vec![2, N * 2, N, K, D]));
        let mask = |site: DropoutSite| find(&site.input_name());
        assert_eq!(find("mask.generator"), Some(vec![2, N * 2, N, 2 * d]));
        assert_eq!(mask(DropoutSite::Generator), Some(vec![2, N * 2, N, 2 * d]));
        assert_eq!(find("mask.dec_q"), Some(vec![2, N * 2, N, K, D]));
        assert_eq!(mask(DropoutSite::DecoderQ), Some(vec![2, N * 2, N, K, D]));
        assert_eq!(find("mask.sa_cp.ff"), Some(vec![2, N * K, d]));
        let sa_cp = DropoutSite::FeedForward(&formats::tensors::SA_CP);
        assert_eq!(mask(sa_cp), Some(vec![2, N * K, d]));
        let masks = inputs
            .iter()
            .filter(|(n, _)| n.starts_with(input::MASK_PREFIX))
            .count();
        // encoders (3), feed-forward (3), generator, decoders (2), logits (2)
        assert_eq!(masks, 11);
        let losses = train.losses;
        for t in [
            losses.total,
            losses.ce_query,
            losses.ce_support,
            losses.recon_query,
            losses.recon_support,
        ] {
            assert_eq!(t.shape(), Vec::<usize>::new());
        }

        let eval = awgim::build_eval(&config, shape, &p).unwrap();
        assert_eq!(eval.logits.shape(), vec![2, N * 2, N]);
        let names: Vec<String> = eval.graph.inputs().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![input::SUPPORT, input::QUERY]);
    }
}

const ONE_TASK: BatchShape = BatchShape {
    tasks: 1,
    queries_per_class: 1,
};

#[test]
fn missing_parameter_is_an_error() {
    let config = tiny(1);
    let mut p = params(&config, 1);
    p.retain(|(n, _)| n != "gen.g1");
    let err = awgim::build_eval(&config, ONE_TASK, &p)
        .err()
        .expect("must fail");
    assert!(matches!(err, BuildError::MissingParam("gen.g1")), "{err}");
    assert!(err.to_string().contains("gen.g1"), "{err}");
}

#[test]
fn misshapen_parameter_is_an_error() {
    let config = tiny(1);
    let mut p = params(&config, 1);
    let sa_ap = formats::tensors::SA_AP;
    if let Some((_, values)) = p.iter_mut().find(|(n, _)| n == sa_ap.wk) {
        values.pop();
    }
    let options = TrainOptions {
        dropout: 0.3,
        loss_weights: LossWeights::default(),
        rows: GeneratorRows::PerClass,
    };
    let err = awgim::build_train(&config, ONE_TASK, options, &p)
        .err()
        .expect("must fail");
    assert!(
        matches!(
            err,
            BuildError::ParamShape {
                name: "sa_ap.wk",
                expected: 64,
                found: 63,
                ..
            }
        ),
        "{err}"
    );
}

/// Both graphs declare every training parameter of the configuration in `formats`'
/// canonical order (the order of the initial values, the optimizer state and the files).
#[test]
fn graphs_declare_the_parameters_in_canonical_order() {
    for config in [
        tiny(2),
        ModelConfig {
            encoder: EncoderKind::Mlp,
            ..tiny(2)
        },
    ] {
        let p = params(&config, 1);
        let canonical: Vec<(String, Vec<usize>)> =
            formats::expected_tensors(&config, FileKind::Training)
                .map(|s| {
                    let shape = s.shape.iter().map(|&x| x as usize).collect();
                    (s.name.to_string(), shape)
                })
                .collect();
        let names: Vec<&String> = p.iter().map(|(n, _)| n).collect();
        let expected: Vec<&String> = canonical.iter().map(|(n, _)| n).collect();
        assert_eq!(names, expected);
        let options = TrainOptions {
            dropout: 0.3,
            loss_weights: LossWeights::default(),
            rows: GeneratorRows::PerSupportRow,
        };
        let train = awgim::build_train(&config, ONE_TASK, options, &p).unwrap();
        assert_eq!(train.graph.params(), canonical);
        let eval = awgim::build_eval(&config, ONE_TASK, &p).unwrap();
        assert_eq!(eval.graph.params(), canonical);
    }
}

/// Without noise and dropout the training logits are the evaluation logits (W = mu), and
/// the query cross-entropy is the mean over queries of -log softmax at the label.
#[test]
fn noiseless_training_logits_equal_evaluation_logits_and_cross_entropy() {
    for layer_norm in [LayerNormKind::PerRow, LayerNormKind::TaskWide] {
        let config = ModelConfig {
            layer_norm,
            ..tiny(2)
        };
        let shape = BatchShape {
            tasks: 2,
            queries_per_class: 3,
        };
        let p = params(&config, 7);
        let options = TrainOptions {
            dropout: 0.0,
            loss_weights: LossWeights::default(),
            rows: GeneratorRows::PerClass,
        };
        let train = awgim::build_train(&config, shape, options, &p).unwrap();
        let mut data = feed(&train.graph.inputs(), &config, shape, 3);
        for (name, values) in &mut data {
            if name == input::NOISE {
                values.iter_mut().for_each(|v| *v = 0.0);
            }
        }
        let outputs = [train.logits, train.losses.ce_query];
        let out = run(train.graph, &outputs, &data, &p);
        let eval = awgim::build_eval(&config, shape, &p).unwrap();
        let eval_data: Vec<_> = data
            .iter()
            .filter(|(n, _)| n == input::SUPPORT || n == input::QUERY)
            .cloned()
            .collect();
        let eval_out = run(eval.graph, &[eval.logits], &eval_data, &p);
        for (a, b) in out[0].iter().zip(&eval_out[0]) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let targets = &data
            .iter()
            .find(|(n, _)| n == input::QUERY_TARGETS)
            .unwrap()
            .1;
        let N = config.sizes().N;
        let mut ce = 0.0f64;
        let rows = out[0].len() / N;
        for r in 0..rows {
            let l = &out[0][r * N..(r + 1) * N];
            let max = l.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let label = targets[r * N..(r + 1) * N]
                .iter()
                .position(|&t| t == 1.0)
                .unwrap();
            ce += lse - l[label] as f64;
        }
        let ce = ce / rows as f64;
        assert!(
            (out[1][0] as f64 - ce).abs() < 1e-5 * (1.0 + ce),
            "{} vs {ce}",
            out[1][0]
        );
    }
}

/// Running the generator once per class and drawing K noise samples from it gives the same
/// loss and the same gradients as the reference's N*K identical rows, for the same noise.
#[test]
fn once_per_class_generator_equals_the_reference_rows() {
    for (shots, encoder, heads) in [
        (3, EncoderKind::Attention, 2),
        (1, EncoderKind::Attention, 1),
        (2, EncoderKind::Mlp, 2),
    ] {
        let config = ModelConfig {
            encoder,
            heads,
            ..tiny(shots)
        };
        let shape = BatchShape {
            tasks: 2,
            queries_per_class: 2,
        };
        let p = params(&config, 11);
        let loss_weights = LossWeights {
            l1: 1.0,
            l2: 0.5,
            l3: 0.25,
        };
        let mut results = Vec::new();
        for rows in [GeneratorRows::PerClass, GeneratorRows::PerSupportRow] {
            let options = TrainOptions {
                dropout: 0.0,
                loss_weights,
                rows,
            };
            let built = awgim::build_train(&config, shape, options, &p).unwrap();
            let data = feed(&built.graph.inputs(), &config, shape, 5);
            let names: Vec<String> = built.graph.params().into_iter().map(|(n, _)| n).collect();
            let handles: Vec<_> = names
                .iter()
                .map(|n| built.graph.tensor(n).unwrap())
                .collect();
            let loss = built.losses.total;
            let grads = backward(loss, &handles).unwrap();
            let mut outs = vec![loss];
            outs.extend(grads);
            results.push(run(built.graph, &outs, &data, &p));
        }
        let (a, b) = (&results[0], &results[1]);
        assert!(
            (a[0][0] - b[0][0]).abs() <= 1e-6 * (1.0 + a[0][0].abs()),
            "loss {} vs {}",
            a[0][0],
            b[0][0]
        );
        let mut max_rel = 0.0f32;
        for (ga, gb) in a[1..].iter().zip(&b[1..]) {
            let scale = ga.iter().chain(gb).fold(1e-3f32, |m, x| m.max(x.abs()));
            for (x, y) in ga.iter().zip(gb) {
                max_rel = max_rel.max((x - y).abs() / scale);
            }
        }
        assert!(
            max_rel < 1e-4,
            "gradients differ by {max_rel} (relative to each tensor's largest)"
        );
        // The test is not vacuous: the gradients are not all zero.
        assert!(a[1..].iter().flatten().any(|g| g.abs() > 1e-6));
    }
}

/// With dropout the reference layout draws one generator mask per support row. Given the
/// per-class mask repeated over a class's K rows it computes what `PerClass` computes; with
/// masks that differ between the rows it does not (so the masks reach the generator).
#[test]
fn per_row_generator_dropout_masks_each_row() {
    let config = tiny(3);
    let Sizes { N, K, d, .. } = config.sizes();
    let shape = BatchShape {
        tasks: 2,
        queries_per_class: 2,
    };
    let M = N * shape.queries_per_class;
    let p = params(&config, 4);
    let build = |rows| {
        let options = TrainOptions {
            dropout: 0.3,
            loss_weights: LossWeights::default(),
            rows,
        };
        awgim::build_train(&config, shape, options, &p).unwrap()
    };
    let mask_name = DropoutSite::Generator.input_name();
    let mask_shape = |built: &awgim::TrainGraph| {
        built
            .graph
            .inputs()
            .into_iter()
            .find(|(name, _)| *name == mask_name)
            .map(|(_, dims)| dims)
    };
    let per_class = build(GeneratorRows::PerClass);
    assert_eq!(mask_shape(&per_class), Some(vec![2, M, N, 2 * d]));
    let row_shape = mask_shape(&build(GeneratorRows::PerSupportRow));
    assert_eq!(row_shape, Some(vec![2, M, N * K, 2 * d]));

    // Noise and dropout masks drawn as training draws them; the per-class generator mask,
    // and its rows repeated K times for the reference layout.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
    let mut data = feed(&per_class.graph.inputs(), &config, shape, 3);
    let draw = |inputs: &[(String, Vec<usize>)], rng: &mut Xoshiro256PlusPlus| {
        let mut drawn = Vec::new();
        awgim::draw_random_inputs(inputs, 0.7, rng, |name, values| {
            drawn.push((name.to_string(), values));
            Ok(())
        })
        .unwrap();
        drawn
    };
    for (name, values) in draw(&per_class.graph.inputs(), &mut rng) {
        data.iter_mut().find(|(n, _)| *n == name).unwrap().1 = values;
    }
    let class_mask = data
        .iter()
        .find(|(name, _)| *name == mask_name)
        .unwrap()
        .1
        .clone();
    let repeated: Vec<f32> = class_mask
        .chunks(2 * d)
        .flat_map(|row| row.iter().copied().cycle().take(K * 2 * d))
        .collect();
    let loss = |rows, generator_mask: &[f32]| {
        let built = build(rows);
        let total = built.losses.total;
        let mut feed = data.clone();
        for (name, values) in feed.iter_mut() {
            if *name == mask_name {
                *values = generator_mask.to_vec();
            }
        }
        run(built.graph, &[total], &feed, &p)[0][0]
    };
    let reference = loss(GeneratorRows::PerClass, &class_mask);
    let same = loss(GeneratorRows::PerSupportRow, &repeated);
    assert!(
        (reference - same).abs() <= 1e-6 * (1.0 + reference.abs()),
        "shared masks: {reference} vs {same}"
    );
    // Another mask for the second and later row of each class.
    let fresh = draw(&[(mask_name.clone(), row_shape.unwrap())], &mut rng)
        .remove(0)
        .1;
    let per_row: Vec<f32> = repeated
        .iter()
        .zip(&fresh)
        .enumerate()
        .map(|(i, (&first, &other))| if (i / (2 * d)) % K == 0 { first } else { other })
        .collect();
    let different = loss(GeneratorRows::PerSupportRow, &per_row);
    assert!(
        (reference - different).abs() > 1e-4,
        "per-row masks changed nothing: {reference} vs {different}"
    );
}

/// Beyond the paper: with the prototype-correction classifier an untrained model (`G2mu` = 0)
/// is nearest class mean with cosine logits on centred, normalised features: its logits are
/// `s cos(x - c, p[i])` with `p[i]` the mean of class `i`'s centred, normalised support rows.
#[test]
fn untrained_prototype_classifier_is_centred_cosine_nearest_class_mean() {
    use formats::{Classifier, FeatureNorm, LogitsKind, WeightsKind};
    use trainer::awgim::INITIAL_LOGIT_SCALE;
    let config = ModelConfig {
        classifier: Classifier {
            features: FeatureNorm::CenteredL2,
            weights: WeightsKind::Prototype,
            logits: LogitsKind::Cosine,
        },
        ..tiny(3)
    };
    let Sizes { N, K, D, .. } = config.sizes();
    let shape = BatchShape {
        tasks: 2,
        queries_per_class: 2,
    };
    let p = params(&config, 3);
    let eval = awgim::build_eval(&config, shape, &p).unwrap();
    let inputs = eval.graph.inputs();
    assert!(inputs
        .iter()
        .any(|(n, s)| n == input::CENTER && *s == vec![D]));
    let data = feed(&inputs, &config, shape, 8);
    let get = |name: &str| &data.iter().find(|(n, _)| n == name).unwrap().1;
    let (support, query, center) = (get(input::SUPPORT), get(input::QUERY), get(input::CENTER));
    let logits = run(eval.graph, &[eval.logits], &data, &p).remove(0);

    let normalised = |row: &[f32]| -> Vec<f64> {
        let c: Vec<f64> = row
            .iter()
            .zip(center)
            .map(|(x, c)| (x - c) as f64)
            .collect();
        let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
        c.iter().map(|v| v / norm).collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let M = N * shape.queries_per_class;
    for t in 0..shape.tasks {
        let rows: Vec<Vec<f64>> = support[t * N * K * D..(t + 1) * N * K * D]
            .chunks(D)
            .map(normalised)
            .collect();
        let prototypes: Vec<Vec<f64>> = rows
            .chunks(K)
            .map(|class| {
                (0..D)
                    .map(|j| class.iter().map(|r| r[j]).sum::<f64>())
                    .collect()
            })
            .collect();
        for m in 0..M {
            let x = normalised(&query[(t * M + m) * D..(t * M + m + 1) * D]);
            for (i, proto) in prototypes.iter().enumerate() {
                let cosine = dot(&x, proto) / dot(proto, proto).sqrt();
                let expected = INITIAL_LOGIT_SCALE as f64 * cosine;
                let got = logits[(t * M + m) * N + i] as f64;
                assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
            }
        }
    }
}
