//! The run-time-sized engine (`DynModel`, `Dyn` dimensions) and the compiled one (`Model`,
//! `Const` dimensions) are one implementation: on the same model file and task they give the
//! same logits, bit for bit, for the four shipped configurations and an odd one (3-way
//! 2-shot, D = 48, d = 16, 2 heads, G = 24: no size a multiple of the kernels' tiles), with
//! the paper's classifier (`Model`) and with the classifiers beyond it (`VariantModel`, in a
//! workspace sized for the file's classifier).
// The size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

mod common;
#[path = "../benches/inference/model_file.rs"]
mod model_file;

use common::sized;

use engine::{Awgim, DynModel, EngineError, Fixed, Prediction, Workspace};
use formats::{AlignedBuf, Classifier, FeatureNorm, LogitsKind, ModelConfig, WeightsKind};
use model_file::{int8_model_file, model_file};

/// Queries per task: not a multiple of the batch, so the last batch is partial.
const QUERIES: usize = 11;
/// Queries per batch.
const B: usize = 4;

/// Compares the compiled model of the given sizes (`V`: the variants compiled in) in
/// `workspace` with `DynModel` on `config`'s random model.
fn same_logits<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const V: bool,
    const LEN: usize,
>(
    config: ModelConfig,
    mut workspace: Box<Workspace<LEN, B>>,
) {
    let bytes = AlignedBuf::from_bytes(&model_file(&config));
    let features = common::features((NK + QUERIES) * D);
    let (support, queries) = features.split_at(NK * D);

    let model = Awgim::<Fixed<D, d, h, N, K, G, NK, d2, V>>::load(&bytes).unwrap();
    let rows = common::rows::<D>;
    let support_rows = rows(support);
    let mut task = model
        .prepare(&mut workspace, support_rows.as_slice().try_into().unwrap())
        .unwrap();
    let mut fixed = vec![Prediction::<N>::zeroed(); QUERIES];
    task.classify_batch(&rows(queries), &mut fixed).unwrap();

    let dyn_model = DynModel::load(&bytes).unwrap();
    assert_eq!(dyn_model.sizes(), config.sizes());
    assert_eq!(dyn_model.workspace_len(B) * 4, Workspace::<LEN, B>::BYTES);
    let mut arena = vec![0.0f32; dyn_model.workspace_len(B)];
    let mut dyn_task = dyn_model.prepare(&mut arena, B, support).unwrap();
    let mut logits = vec![0.0f32; QUERIES * N];
    dyn_task.classify_batch(queries, &mut logits).unwrap();

    for (q, (p, l)) in fixed.iter().zip(logits.chunks_exact(N)).enumerate() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p.logits), bits(l), "{config:?} query {q}");
        assert!(
            p.logits.iter().all(|l| l.is_finite() && *l != 0.0),
            "{config:?}"
        );
    }
}

/// `prepare` encodes the whole support set with one product per encoder (where the rows are
/// used as they are); enrollment encodes each row as it arrives, classes in any order. The logits are
/// the same, bit for bit, f32 and int8, at the paper's and the edge sizes and with the
/// prototype weights (the class means the batched path adds up itself).
#[test]
fn prepare_encodes_the_support_as_streamed_enrollment_does() {
    let prototype = with(
        ModelConfig::edge(5),
        FeatureNorm::Raw,
        WeightsKind::Prototype,
        LogitsKind::Dot,
    );
    for config in [ModelConfig::paper(5), ModelConfig::edge(5), ModelConfig::paper(1), prototype] {
        let files = [model_file(&config), int8_model_file(&config)];
        for (bytes, dtype) in files.iter().zip(["f32", "int8"]) {
            let bytes = AlignedBuf::from_bytes(bytes);
            let model = DynModel::load(&bytes).unwrap();
            let formats::Sizes { D, N, K, .. } = config.sizes();
            let features = common::features((N * K + QUERIES) * D);
            let (support, queries) = features.split_at(N * K * D);
            let mut arena = vec![0.0f32; model.workspace_len(1)];
            let logits = |task: &mut engine::DynTask<'_, '_, '_>| {
                let mut out = vec![0.0f32; QUERIES * N];
                task.classify_batch(queries, &mut out).unwrap();
                out.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
            };
            let want = logits(&mut model.prepare(&mut arena, 1, support).unwrap());
            let mut enrollment = model.enroll(&mut arena, 1).unwrap();
            // Classes in any order; each class's shots in order (a class's shot `k` is its
            // `k`-th row received).
            for k in 0..K {
                for class in (0..N).rev() {
                    let row = &support[(class * K + k) * D..][..D];
                    enrollment.push(class, row).unwrap();
                }
            }
            let got = logits(&mut enrollment.prepare().unwrap());
            assert_eq!(got, want, "{dtype} {config:?}");
        }
    }
}

/// `config` with the classifier `features`, `weights`, `logits`.
const fn with(
    mut config: ModelConfig,
    features: FeatureNorm,
    weights: WeightsKind,
    logits: LogitsKind,
) -> ModelConfig {
    config.classifier = Classifier {
        features,
        weights,
        logits,
    };
    config
}

/// The odd configuration of issue 10.
const ODD: ModelConfig = ModelConfig::new(48, 16, 2, 3, 2, 24);

#[test]
fn dyn_equals_const_on_every_shipped_configuration() {
    sized!(same_logits, ModelConfig::edge(1), B);
    sized!(same_logits, ModelConfig::edge(5), B);
    sized!(same_logits, ModelConfig::paper(1), B);
    sized!(same_logits, ModelConfig::paper(5), B);
}

#[test]
fn dyn_equals_const_on_an_odd_configuration() {
    sized!(same_logits, ODD, B);
}

/// The trainer's default classifier (centred features, prototype weights, cosine logits) and
/// the two others that change the per-query path, on the compiled path.
#[test]
fn dyn_equals_const_with_the_classifier_variants() {
    use FeatureNorm::{CenteredL2, Raw};
    use LogitsKind::{Cosine, Dot};
    use WeightsKind::{Generated, Prototype};
    sized!(same_logits, with(ODD, CenteredL2, Prototype, Cosine), B);
    sized!(same_logits, with(ODD, Raw, Prototype, Dot), B);
    sized!(same_logits, with(ODD, Raw, Generated, Cosine), B);
    sized!(
        same_logits,
        with(ModelConfig::edge(1), CenteredL2, Prototype, Cosine),
        B
    );
    sized!(
        same_logits,
        with(ModelConfig::edge(5), CenteredL2, Prototype, Cosine),
        B
    );
    sized!(
        same_logits,
        with(ModelConfig::paper(5), CenteredL2, Prototype, Cosine),
        B
    );
}

#[test]
fn variant_workspace_sizes() {
    const C: ModelConfig = with(
        ODD,
        FeatureNorm::CenteredL2,
        WeightsKind::Prototype,
        LogitsKind::Cosine,
    );
    let (paper, variant) = (
        engine::workspace_len(C.sizes(), Classifier::PAPER, B),
        engine::workspace_len(C.sizes(), C.classifier, B),
    );
    assert!(variant > paper);
    // A paper-sized workspace is too short for a variant file: a typed error, not a panic.
    let bytes = AlignedBuf::from_bytes(&model_file(&C));
    let model = engine::VariantModel::<48, 16, 2, 3, 2, 24, 6, 32>::load(&bytes).unwrap();
    let mut short = Box::new(Workspace::<
        { engine::workspace_len(ODD.sizes(), Classifier::PAPER, B) },
        B,
    >::new());
    assert_eq!(
        model.prepare(&mut short, &[[0.5; 48]; 6]).err(),
        Some(EngineError::Workspace {
            needed: variant,
            found: paper
        })
    );
    // A `Model` has the variants compiled out and refuses the file.
    assert_eq!(
        engine::Model::<48, 16, 2, 3, 2, 24, 6, 32>::load(&bytes).err(),
        Some(EngineError::Classifier(C.classifier))
    );
}

#[test]
fn dyn_refuses_short_buffers() {
    let bytes = AlignedBuf::from_bytes(&model_file(&ODD));
    let model = DynModel::load(&bytes).unwrap();
    let needed = model.workspace_len(2);
    let mut arena = vec![0.0f32; needed - 1];
    assert_eq!(
        model.prepare(&mut arena, 2, &[0.0; 6 * 48]).err(),
        Some(EngineError::Workspace {
            needed,
            found: needed - 1
        })
    );
    let mut arena = vec![0.0f32; needed];
    assert!(matches!(
        model.prepare(&mut arena, 2, &[0.0; 5 * 48]).err(),
        Some(EngineError::InputLength {
            expected: 288,
            found: 240,
            ..
        })
    ));
    let mut task = model.prepare(&mut arena, 2, &[0.5; 6 * 48]).unwrap();
    assert!(matches!(
        task.classify_batch(&[0.0; 2 * 48], &mut [0.0; 5]).err(),
        Some(EngineError::BatchLength { .. })
    ));
}

/// Enrollment takes the support rows one at a time, labelled, in any order (here shot by
/// shot, as a sensor delivers them): the logits equal `prepare` on the class-major rows, bit
/// for bit, for the compiled and the run-time-sized engine; wrong labels, a full class and an
/// incomplete set are typed errors.
#[test]
fn streamed_enrollment_equals_prepare() {
    const C: ModelConfig = with(
        ODD,
        FeatureNorm::CenteredL2,
        WeightsKind::Prototype,
        LogitsKind::Cosine,
    );
    const S: formats::Sizes = C.sizes();
    let bytes = AlignedBuf::from_bytes(&model_file(&C));
    let rows: Vec<[f32; 48]> = (0..6 + 3)
        .map(|r| core::array::from_fn(|i| ((r * 48 + i) as f32 * 0.377).sin()))
        .collect();
    let (support, queries) = rows.split_at(6);
    let model = <engine::awgim_model!('_; S, C.classifier)>::load(&bytes).unwrap();
    let mut workspace = Box::new(<engine::awgim_workspace!(S, C.classifier; 1)>::new());
    let mut task = model
        .prepare(&mut workspace, support.try_into().unwrap())
        .unwrap();
    let want: Vec<[f32; 3]> = queries
        .iter()
        .map(|q| task.classify(q).unwrap().logits)
        .collect();

    let mut enrollment = model.enroll(&mut workspace).unwrap();
    assert_eq!(
        enrollment.push(3, &support[0]).err(),
        Some(EngineError::Class { class: 3, ways: 3 })
    );
    for k in 0..2 {
        for class in [2, 0, 1] {
            assert!(!enrollment.is_complete());
            let complete = enrollment.push(class, &support[class * 2 + k]).unwrap();
            assert_eq!(complete, k == 1 && class == 1);
        }
    }
    assert_eq!(
        enrollment.push(0, &support[0]).err(),
        Some(EngineError::ClassFull { class: 0, shots: 2 })
    );
    let mut task = enrollment.prepare().unwrap();
    for (q, want) in queries.iter().zip(&want) {
        assert_eq!(
            task.classify(q).unwrap().logits.map(f32::to_bits),
            want.map(f32::to_bits)
        );
    }

    let model = DynModel::load(&bytes).unwrap();
    let mut arena = vec![0.0f32; model.workspace_len(1)];
    let mut enrollment = model.enroll(&mut arena, 1).unwrap();
    enrollment.push(1, &support[2]).unwrap();
    assert_eq!(
        enrollment.push(1, &support[3][..47]).err(),
        Some(EngineError::InputLength {
            input: engine::Input::Support,
            expected: 48,
            found: 47
        })
    );
    let mut bad = support[0];
    bad[5] = f32::NAN;
    assert_eq!(
        enrollment.push(0, &bad).err(),
        Some(EngineError::NonFiniteInput {
            input: engine::Input::Support,
            row: 0,
            column: 5
        })
    );
    assert_eq!(
        model.enroll(&mut arena, 1).unwrap().prepare().err(),
        Some(EngineError::Incomplete {
            class: 0,
            shots: 0,
            needed: 2
        })
    );
    // Classes in reverse order; each class's shots in order (the prototypes' running means
    // add the shots in arrival order, so another shot order rounds differently).
    let mut enrollment = model.enroll(&mut arena, 1).unwrap();
    for class in (0..3).rev() {
        for row in &support[class * 2..class * 2 + 2] {
            enrollment.push(class, row).unwrap();
        }
    }
    let mut task = enrollment.prepare().unwrap();
    for (q, want) in queries.iter().zip(&want) {
        let mut logits = [0.0f32; 3];
        task.classify_batch(q, &mut logits).unwrap();
        assert_eq!(logits.map(f32::to_bits), want.map(f32::to_bits));
    }
}

/// The RAM the engine needs (issue 11): paper 5-shot, one query at a time, in the 128 KiB of
/// an STM32F405 with room for the stack; the shipped workspaces' sizes.
#[test]
fn workspace_bytes() {
    let bytes = |s, b| 4 * engine::workspace_len(s, Classifier::PAPER, b);
    assert_eq!(bytes(engine::PAPER_5SHOT, 1), 110_044);
    assert!(bytes(engine::PAPER_5SHOT, 1) + 8 * 1024 < 128 * 1024);
    let others = [engine::PAPER_1SHOT, engine::EDGE_5SHOT, engine::EDGE_1SHOT].map(|s| bytes(s, 1));
    assert_eq!(others, [35_964, 29_404, 9_084]);
}
