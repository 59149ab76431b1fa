//! The run-time-sized engine (`DynModel`, `Dyn` dimensions) and the compiled one (`Model`,
//! `Const` dimensions) are one implementation: on the same model file and task they give the
//! same logits, bit for bit, for the four shipped configurations and an odd one (3-way
//! 2-shot, D = 48, d = 16, 2 heads, G = 24: no size a multiple of the kernels' tiles).
// The size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

#[path = "../benches/inference/model_file.rs"]
mod model_file;

use engine::{DynModel, EngineError, Model, Prediction, Workspace};
use formats::{AlignedBuf, ModelConfig};
use model_file::model_file;

/// Queries per task: not a multiple of the batch, so the last batch is partial.
const QUERIES: usize = 11;
/// Queries per batch.
const B: usize = 4;

/// Compares `Model` of the given sizes with `DynModel` on `config`'s random model.
fn same_logits<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
>(
    config: ModelConfig,
) {
    let bytes = AlignedBuf::from_bytes(&model_file(&config));
    let features: Vec<f32> = (0..(NK + QUERIES) * D)
        .map(|i| ((i as f32) * 0.618).fract() - 0.3)
        .collect();
    let (support, queries) = features.split_at(NK * D);

    let model = Model::<D, d, h, N, K, G, NK, d2>::load(&bytes).unwrap();
    let mut workspace = Box::new(Workspace::<D, d, h, N, K, G, NK, d2, B>::new());
    let rows =
        |x: &[f32]| -> Vec<[f32; D]> { x.chunks_exact(D).map(|r| r.try_into().unwrap()).collect() };
    let support_rows = rows(support);
    let mut task = model
        .prepare(&mut workspace, support_rows.as_slice().try_into().unwrap())
        .unwrap();
    let mut fixed = vec![Prediction::<N>::zeroed(); QUERIES];
    task.classify_batch(&rows(queries), &mut fixed).unwrap();

    let dyn_model = DynModel::load(&bytes).unwrap();
    assert_eq!(dyn_model.sizes(), config.sizes());
    assert_eq!(
        dyn_model.workspace_len(B) * 4,
        Workspace::<D, d, h, N, K, G, NK, d2, B>::BYTES
    );
    let mut arena = vec![0.0f32; dyn_model.workspace_len(B)];
    let mut dyn_task = dyn_model.prepare(&mut arena, B, support).unwrap();
    let mut logits = vec![0.0f32; QUERIES * N];
    dyn_task.classify_batch(queries, &mut logits).unwrap();

    for (q, (p, l)) in fixed.iter().zip(logits.chunks_exact(N)).enumerate() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p.logits), bits(l), "{config:?} query {q}");
    }
}

#[test]
fn dyn_equals_const_on_every_shipped_configuration() {
    same_logits::<64, 32, 4, 5, 1, 64, 5, 64>(ModelConfig::edge(1));
    same_logits::<64, 32, 4, 5, 5, 64, 25, 64>(ModelConfig::edge(5));
    same_logits::<640, 128, 4, 5, 1, 256, 5, 256>(ModelConfig::paper(1));
    same_logits::<640, 128, 4, 5, 5, 256, 25, 256>(ModelConfig::paper(5));
}

#[test]
fn dyn_equals_const_on_an_odd_configuration() {
    same_logits::<48, 16, 2, 3, 2, 24, 6, 32>(ModelConfig::new(48, 16, 2, 3, 2, 24));
}

#[test]
fn dyn_refuses_short_buffers() {
    let bytes = AlignedBuf::from_bytes(&model_file(&ModelConfig::new(48, 16, 2, 3, 2, 24)));
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
