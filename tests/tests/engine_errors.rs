//! Every engine error, and finite-or-typed-error behaviour on extreme weights.

use engine::{EngineError, Input, Prediction, Stage};
use formats::tensors::{CA_AP, ENC_AP, ENC_CP, GENERATOR, SA_AP, SA_CP};
use formats::{AlignedBuf, EncoderKind, FormatError, LayerNormKind, ModelConfig, Sizes};
use tests::random::{to_arrays, RandomModel, RandomTask};

fn edge_file(shots: u32, seed: u64) -> AlignedBuf {
    AlignedBuf::from_bytes(
        &RandomModel::new(ModelConfig::edge(shots), seed)
            .build()
            .unwrap(),
    )
}

fn edge_task(shots: u32) -> (Vec<[f32; 64]>, Vec<[f32; 64]>) {
    let task = RandomTask::new(&ModelConfig::edge(shots), 1, 2, 0.5);
    (to_arrays(&task.support), to_arrays(&task.queries))
}

#[test]
fn config_mismatch_names_the_field() {
    let paper =
        AlignedBuf::from_bytes(&RandomModel::new(ModelConfig::paper(1), 1).build().unwrap());
    assert_eq!(
        engine::Edge1Shot::load(&paper).err(),
        Some(EngineError::ConfigMismatch {
            field: "feature_dim",
            expected: 64,
            found: 640
        })
    );
    let one_shot = edge_file(1, 1);
    assert_eq!(
        engine::Edge5Shot::load(&one_shot).err(),
        Some(EngineError::ConfigMismatch {
            field: "shots",
            expected: 5,
            found: 1
        })
    );
    let mut config = ModelConfig::edge(1);
    config.heads = 2;
    let two_heads = AlignedBuf::from_bytes(&RandomModel::new(config, 1).build().unwrap());
    assert_eq!(
        engine::Edge1Shot::load(&two_heads).err(),
        Some(EngineError::ConfigMismatch {
            field: "heads",
            expected: 4,
            found: 2
        })
    );
}

#[test]
fn task_wide_layer_norm_is_refused() {
    let mut config = ModelConfig::edge(1);
    config.layer_norm = LayerNormKind::TaskWide;
    let file = AlignedBuf::from_bytes(&RandomModel::new(config, 1).build().unwrap());
    assert_eq!(
        engine::Edge1Shot::load(&file).err(),
        Some(EngineError::TaskWideLayerNorm)
    );
}

#[test]
fn mlp_encoder_is_refused() {
    let mut config = ModelConfig::edge(1);
    config.encoder = EncoderKind::Mlp;
    let file = AlignedBuf::from_bytes(&RandomModel::new(config, 1).build().unwrap());
    assert_eq!(
        engine::Edge1Shot::load(&file).err(),
        Some(EngineError::MlpEncoder)
    );
}

/// Beyond the paper: a model file recording another classifier (format version 2) runs in a
/// DynModel and a VariantModel (whose workspaces then hold the variants' buffers) and is
/// refused by a `Model`, which has the variants' code compiled out.
#[test]
fn classifier_variant_runs_in_dyn_and_variant_models() {
    let mut config = ModelConfig::edge(1);
    config.classifier = formats::Classifier {
        features: formats::FeatureNorm::CenteredL2,
        weights: formats::WeightsKind::Prototype,
        logits: formats::LogitsKind::Cosine,
    };
    let file = AlignedBuf::from_bytes(&RandomModel::new(config, 1).build().unwrap());
    assert_eq!(
        engine::Edge1Shot::load(&file).err(),
        Some(EngineError::Classifier(config.classifier))
    );
    let model = engine::DynModel::load(&file).unwrap();
    let paper_len = engine::workspace_len(config.sizes(), formats::Classifier::PAPER, 4);
    assert!(model.workspace_len(4) > paper_len);
    // The paper's length is too short for the variants' buffers: a typed error.
    let Sizes { D, N, K, .. } = config.sizes();
    let support = vec![0.5f32; N * K * D];
    let mut short = vec![0.0f32; paper_len];
    assert!(matches!(
        model.prepare(&mut short, 4, &support).err(),
        Some(EngineError::Workspace { .. })
    ));
    let mut workspace = vec![0.0f32; model.workspace_len(4)];
    let mut task = model.prepare(&mut workspace, 4, &support).unwrap();
    let queries: Vec<f32> = (0..3 * D).map(|i| (i % 7) as f32).collect();
    let mut logits = vec![0.0f32; 3 * N];
    task.classify_batch(&queries, &mut logits).unwrap();
    assert!(logits.iter().all(|l| l.is_finite()));

    // The compiled-size engine with the variants compiled in, in a workspace sized for the
    // file's classifier, gives the same logits.
    const S: Sizes = engine::EDGE_1SHOT;
    const C: formats::Classifier = formats::Classifier {
        features: formats::FeatureNorm::CenteredL2,
        weights: formats::WeightsKind::Prototype,
        logits: formats::LogitsKind::Cosine,
    };
    let compiled = <engine::awgim_model!('_; S, C)>::load(&file).unwrap();
    let mut workspace = Box::new(<engine::awgim_workspace!(S, C; 4)>::new());
    let rows: Vec<[f32; 64]> = support
        .chunks_exact(D)
        .map(|r| r.try_into().unwrap())
        .collect();
    let mut task = compiled
        .prepare(&mut workspace, rows.as_slice().try_into().unwrap())
        .unwrap();
    let query_rows: Vec<[f32; 64]> = queries
        .chunks_exact(D)
        .map(|r| r.try_into().unwrap())
        .collect();
    let mut predictions = [Prediction::zeroed(); 3];
    task.classify_batch(&query_rows, &mut predictions).unwrap();
    let compiled_logits: Vec<f32> = predictions.iter().flat_map(|p| p.logits).collect();
    assert_eq!(compiled_logits, logits);
}

#[test]
fn invalid_file_is_a_format_error() {
    let mut bytes = edge_file(1, 1).to_vec();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    let file = AlignedBuf::from_bytes(&bytes);
    assert!(matches!(
        engine::Edge1Shot::load(&file).err(),
        Some(EngineError::Format(FormatError::ChecksumMismatch { .. }))
    ));
    assert!(matches!(
        engine::Edge1Shot::load(&[]).err(),
        Some(EngineError::Format(FormatError::Truncated { .. }))
    ));
}

#[test]
fn unaligned_buffer_is_refused_not_copied() {
    let file = edge_file(1, 1);
    let mut shifted = AlignedBuf::zeroed(file.len() + 2);
    shifted.as_mut_bytes()[2..].copy_from_slice(&file);
    assert!(matches!(
        engine::Edge1Shot::load(&shifted[2..]).err(),
        Some(EngineError::Format(FormatError::NotZeroCopy { .. }))
    ));
}

#[test]
fn training_files_load_too() {
    let mut model = RandomModel::new(ModelConfig::edge(1), 3);
    model.kind = formats::FileKind::Training;
    let file = AlignedBuf::from_bytes(&model.build().unwrap());
    assert!(engine::Edge1Shot::load(&file).is_ok());
}

#[test]
fn non_finite_support_is_refused() {
    let file = edge_file(5, 1);
    let model = engine::Edge5Shot::load(&file).unwrap();
    let mut workspace = engine::Edge5ShotWorkspace::new();
    let (mut support, _) = edge_task(5);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        support[13][7] = bad;
        let support: &[[f32; 64]; 25] = support.as_slice().try_into().unwrap();
        assert_eq!(
            model.prepare(&mut workspace, support).err(),
            Some(EngineError::NonFiniteInput {
                input: Input::Support,
                row: 13,
                column: 7
            })
        );
    }
}

#[test]
fn non_finite_query_is_refused() {
    let file = edge_file(1, 1);
    let model = engine::Edge1Shot::load(&file).unwrap();
    let mut workspace = engine::Edge1ShotWorkspace::new();
    let (support, mut queries) = edge_task(1);
    let mut task = model
        .prepare(&mut workspace, support.as_slice().try_into().unwrap())
        .unwrap();
    queries[9][2] = f32::NAN;
    assert_eq!(
        task.classify(&queries[9]).err(),
        Some(EngineError::NonFiniteInput {
            input: Input::Query,
            row: 0,
            column: 2
        })
    );
    let mut out = vec![Prediction::zeroed(); queries.len()];
    // Row 9 of 10 is in the partial last batch (batches of 4): rows are numbered in the call.
    assert_eq!(
        task.classify_batch(&queries, &mut out).err(),
        Some(EngineError::NonFiniteInput {
            input: Input::Query,
            row: 9,
            column: 2
        })
    );
    queries[9][2] = 0.0;
    queries[5][0] = f32::INFINITY;
    assert_eq!(
        task.classify_batch(&queries, &mut out).err(),
        Some(EngineError::NonFiniteInput {
            input: Input::Query,
            row: 5,
            column: 0
        })
    );
    let mut weights = [[0.0; 64]; 5];
    assert!(matches!(
        task.generated_weights(&queries[5], &mut weights).err(),
        Some(EngineError::NonFiniteInput { .. })
    ));
}

#[test]
fn batch_length_mismatch_is_refused() {
    let file = edge_file(1, 1);
    let model = engine::Edge1Shot::load(&file).unwrap();
    let mut workspace = engine::Edge1ShotWorkspace::new();
    let (support, queries) = edge_task(1);
    let mut task = model
        .prepare(&mut workspace, support.as_slice().try_into().unwrap())
        .unwrap();
    let mut out = vec![Prediction::zeroed(); queries.len() - 1];
    assert_eq!(
        task.classify_batch(&queries, &mut out).err(),
        Some(EngineError::BatchLength {
            queries: 10,
            outputs: 9
        })
    );
}

/// Runs a whole task on a model whose tensors `edit` made extreme; every logit must be finite
/// or the call must fail with `NonFinite`. Returns the outcome.
fn run_extreme(edit: impl FnMut(&str, &mut Vec<f32>)) -> Result<Vec<Prediction<5>>, EngineError> {
    let bytes = RandomModel::new(ModelConfig::edge(5), 2)
        .build_with(edit)
        .unwrap();
    let file = AlignedBuf::from_bytes(&bytes);
    let model = engine::Edge5Shot::load(&file).unwrap();
    let mut workspace = engine::Edge5ShotWorkspace::new();
    let (support, queries) = edge_task(5);
    let mut task = model.prepare(&mut workspace, support.as_slice().try_into().unwrap())?;
    let mut out = vec![Prediction::zeroed(); queries.len()];
    task.classify_batch(&queries, &mut out)?;
    for p in &out {
        assert!(p.logits.iter().all(|l| l.is_finite()), "{p:?}");
        assert!(p.class < 5);
    }
    Ok(out)
}

#[test]
fn extreme_weights_give_finite_logits_or_a_typed_error() {
    let scale = |targets: Vec<&'static str>, by: f32| {
        move |name: &str, values: &mut Vec<f32>| {
            if targets.contains(&name) {
                values.iter_mut().for_each(|v| *v *= by);
            }
        }
    };
    // Layer norm is scale invariant: huge encoders or feed-forward weights stay finite.
    for (target, by) in [
        (ENC_AP, 1e15),
        (ENC_CP, 1e15),
        (SA_AP.f2, 1e30),
        (CA_AP.f1, 1e-30),
    ] {
        let out = run_extreme(scale(vec![target], by));
        assert!(out.is_ok(), "{target} x {by}: {out:?}");
    }
    // One huge projection only sharpens the softmax.
    assert!(run_extreme(scale(vec![SA_AP.wq], 1e30)).is_ok());
    // Attention scores overflow: a typed error names the block.
    assert_eq!(
        run_extreme(scale(vec![SA_AP.wq, SA_AP.wk], 1e30)).err(),
        Some(EngineError::NonFinite { stage: Stage::SaAp })
    );
    assert_eq!(
        run_extreme(scale(vec![CA_AP.wq, CA_AP.wk], 1e30)).err(),
        Some(EngineError::NonFinite { stage: Stage::CaAp })
    );
    // Overflowing layer-norm gains, generator and logits.
    assert_eq!(
        run_extreme(scale(vec![SA_CP.ln2.gain], 3e38)).err(),
        Some(EngineError::NonFinite { stage: Stage::SaCp })
    );
    assert_eq!(
        run_extreme(scale(vec![GENERATOR.g2_mu], 3e38)).err(),
        Some(EngineError::NonFinite {
            stage: Stage::Logits
        })
    );
    assert_eq!(
        run_extreme(scale(vec![GENERATOR.g1], 3e38)).err(),
        Some(EngineError::NonFinite {
            stage: Stage::Support
        })
    );
    // Extreme but finite everywhere: huge and tiny values in every tensor never yield NaN.
    for (i, by) in [1e10f32, 1e20, 1e-20, -1e10].into_iter().enumerate() {
        let out = run_extreme(move |name, values| {
            if name.len() % 4 == i {
                values.iter_mut().for_each(|v| *v *= by);
            }
        });
        assert!(
            matches!(out, Ok(_) | Err(EngineError::NonFinite { .. })),
            "{out:?}"
        );
    }
}

#[test]
fn errors_have_messages() {
    let e = EngineError::ConfigMismatch {
        field: "shots",
        expected: 5,
        found: 1,
    };
    assert!(e.to_string().contains("shots"));
    let e = EngineError::NonFiniteInput {
        input: Input::Query,
        row: 3,
        column: 4,
    };
    assert!(e.to_string().contains("query") && e.to_string().contains("[3][4]"));
}

#[test]
fn weights_are_borrowed_not_copied() {
    // The model is a set of references (a slice each: pointer and length, and for an int8
    // layer its scales): far smaller than its 148 KiB of edge weights.
    assert!(core::mem::size_of::<engine::Edge5Shot>() < 2048);
    assert!(core::mem::size_of::<engine::Paper5Shot>() < 2048);
}

#[test]
fn workspace_sizes_are_as_documented() {
    let sizes = [
        engine::Paper1ShotWorkspace::BYTES,
        engine::Paper5ShotWorkspace::BYTES,
        engine::Edge1ShotWorkspace::BYTES,
        engine::Edge5ShotWorkspace::BYTES,
    ];
    assert_eq!(sizes, [91_504, 113_884, 10_680, 29_404]);
}
