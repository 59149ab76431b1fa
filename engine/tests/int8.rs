//! int8 weights (issue 11): a model whose big dense layers are int8 (`trainer export --int8`)
//! runs through the same `prepare`/`classify` API, compiled and run-time sized, bit for bit
//! the same; and its logits stay within a stated bound of the f32 engine on the same model
//! dequantised (`formats::quant::dequantize`: the weights the int8 products multiply by).
//!
//! # The bound
//! The weights are the file's; the int8 path's only approximation is the rounding of each
//! product's input column to i16 (`ops::int8`): with `Q = min(32767, (2^31 - 1) / (127
//! depth))` levels (26,420 at depth 640, 32,767 below 517), each input is perturbed by at most
//! `max |x| / (2 Q)`, a relative `1 / (2 Q) <= 1.9e-5` of the column. A logit is the end of a
//! chain of at most 17 such products (the encoder, a self-attention block's 6, the `ca_ap`
//! keys, values and output, its queries and feed-forward pair, `G1`, `G2mu`), each perturbing
//! its input by that relative amount; layer norms rescale every block's output to unit
//! variance, so a block passes a relative error on at most amplified by its width-normalised
//! condition (about `sqrt(d)` for d = 16 to 128 through the attention softmax and the layer
//! norms). Hence `|l_int8 - l_f32| <= 17 x 1.9e-5 x sqrt(128) x max(1, max |l|) = 3.7e-3 x
//! max(1, max |l|)`, which the test asserts as `TOL`; the measured worst is printed (about a
//! tenth of it).
#![allow(non_upper_case_globals)]
// Without the `int8` feature only the refusal test runs.
#![cfg_attr(not(feature = "int8"), allow(dead_code, unused_macros, unused_imports))]

mod common;
#[path = "../benches/inference/model_file.rs"]
mod model_file;

use common::sized;

use engine::{Awgim, DynModel, Fixed, Prediction, Workspace};
use formats::{AlignedBuf, Classifier, FeatureNorm, LogitsKind, ModelConfig, WeightsKind};
use model_file::{dequantized, int8_model_file};

/// The bound of the module doc, relative to `max(1, max |logit|)` of the f32 engine's logits.
const TOL: f32 = 3.7e-3;
/// Queries per task.
const QUERIES: usize = 7;
/// Queries per batch.
const B: usize = 3;

/// The int8 engine (compiled, `V` the variants, and `Dyn`) against the f32 engine on the
/// dequantised model; returns the worst relative difference.
fn int8_against_f32<
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
) -> f32 {
    let int8 = AlignedBuf::from_bytes(&int8_model_file(&config));
    let f32_file = AlignedBuf::from_bytes(&dequantized(&config, &int8));
    let features = common::features((NK + QUERIES) * D);
    let (support, queries) = features.split_at(NK * D);
    let rows = common::rows::<D>;

    let model = Awgim::<Fixed<D, d, h, N, K, G, NK, d2, V>>::load(&int8).unwrap();
    let mut task = model
        .prepare(&mut workspace, rows(support).as_slice().try_into().unwrap())
        .unwrap();
    let mut fixed = vec![Prediction::<N>::zeroed(); QUERIES];
    task.classify_batch(&rows(queries), &mut fixed).unwrap();
    let fixed: Vec<f32> = fixed.iter().flat_map(|p| p.logits).collect();

    let logits = |bytes: &[u8]| {
        let model = DynModel::load(bytes).unwrap();
        let mut arena = vec![0.0f32; model.workspace_len(B)];
        let mut task = model.prepare(&mut arena, B, support).unwrap();
        let mut logits = vec![0.0f32; QUERIES * N];
        task.classify_batch(queries, &mut logits).unwrap();
        logits
    };
    let dynamic = logits(&int8);
    assert_eq!(
        fixed.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        dynamic.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "{config:?}: Dyn and Const int8 logits differ"
    );
    let reference = logits(&f32_file);
    let mut worst = 0.0f32;
    for (got, want) in fixed.chunks_exact(N).zip(reference.chunks_exact(N)) {
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(want) {
            worst = worst.max((g - w).abs() / scale);
        }
    }
    println!("{config:?}: worst |int8 - f32 dequantised| / scale = {worst:.3e}");
    assert!(worst <= TOL, "{config:?}: {worst} > {TOL}");
    worst
}

const fn default_classifier(mut config: ModelConfig) -> ModelConfig {
    config.classifier = Classifier {
        features: FeatureNorm::CenteredL2,
        weights: WeightsKind::Prototype,
        logits: LogitsKind::Cosine,
    };
    config
}

#[cfg(feature = "int8")]
#[test]
fn int8_paper_and_edge_within_the_bound() {
    sized!(int8_against_f32, ModelConfig::paper(1), B);
    sized!(int8_against_f32, ModelConfig::paper(5), B);
    sized!(int8_against_f32, ModelConfig::edge(1), B);
    sized!(int8_against_f32, ModelConfig::edge(5), B);
}

/// The odd model of issue 10 (no size a multiple of the kernels' tiles), with the paper's and
/// the trainer's default classifier (cosine logits form `W` from the int8 `G2mu`), and sizes
/// whose `d` is not a multiple of 4 (`G1`'s halves start inside a group of the pair layout).
#[cfg(feature = "int8")]
#[test]
fn int8_odd_sizes_and_variants_within_the_bound() {
    const ODD: ModelConfig = ModelConfig::new(48, 16, 2, 3, 2, 24);
    sized!(int8_against_f32, ODD, B);
    sized!(int8_against_f32, default_classifier(ODD), B);
    sized!(
        int8_against_f32,
        default_classifier(ModelConfig::edge(5)),
        B
    );
    sized!(int8_against_f32, ModelConfig::new(37, 18, 3, 3, 2, 21), B);
}

/// The int8 file is what the engine borrows: no f32 copy of a quantised tensor.
#[cfg(feature = "int8")]
#[test]
fn int8_weights_are_borrowed() {
    let config = ModelConfig::paper(5);
    let int8 = AlignedBuf::from_bytes(&int8_model_file(&config));
    let f32_file = model_file::model_file(&config);
    assert!(
        int8.len() * 3 <= f32_file.len(),
        "{} vs {}",
        int8.len(),
        f32_file.len()
    );
    assert!(engine::Paper5Shot::load(&int8).is_ok());
    assert!(core::mem::size_of::<engine::Paper5Shot>() < 2048);
}

/// Built without the `int8` feature, the engine refuses an int8 file with a typed error
/// naming the first int8 tensor it reads (`cargo test -p engine --release
/// --no-default-features --test int8`).
#[cfg(not(feature = "int8"))]
#[test]
fn int8_file_is_a_dtype_error_without_the_feature() {
    let config = ModelConfig::edge(1);
    let int8 = AlignedBuf::from_bytes(&int8_model_file(&config));
    let error = engine::Edge1Shot::load(&int8).err();
    assert!(
        matches!(&error, Some(engine::EngineError::Dtype { name, found: formats::Dtype::I8 }) if name.as_str() == "enc_ap"),
        "{error:?}"
    );
    assert!(DynModel::load(&int8).is_err());
    let f32_file = AlignedBuf::from_bytes(&dequantized(&config, &int8));
    assert!(engine::Edge1Shot::load(&f32_file).is_ok());
}
