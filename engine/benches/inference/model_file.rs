//! A model file with seeded random weights, for the benchmarks, `examples/measure.rs` and
//! `tests/dyn_sizes.rs` (which include this file by path).

use formats::{expected_tensors, FileBuilder, FileKind, ModelConfig, Provenance};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// An inference model file for `config` with seeded random weights: every matrix
/// Glorot-uniform, layer-norm gains 1 and biases 0; with a classifier beyond the paper's, a
/// feature centre uniform in [-0.1, 0.1) and a logit scale of 10.
pub fn model_file(config: &ModelConfig) -> Vec<u8> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(u64::from(config.shots));
    let tensors: Vec<(&str, Vec<f32>)> = expected_tensors(config, FileKind::Inference)
        .map(|spec| {
            let n = spec.elements() as usize;
            let values = match spec.shape.as_slice() {
                [fan_in, fan_out] => {
                    let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                    (0..n).map(|_| rng.gen_range(-limit..limit)).collect()
                }
                _ if spec.name.ends_with(".gain") => vec![1.0; n],
                _ if spec.name == formats::tensors::FEATURE_CENTER => {
                    (0..n).map(|_| rng.gen_range(-0.1..0.1)).collect()
                }
                _ if spec.name == formats::tensors::LOGIT_SCALE => vec![10.0; n],
                _ => vec![0.0; n],
            };
            (spec.name, values)
        })
        .collect();
    let provenance = Provenance {
        dataset: "random".try_into().expect("short name"),
        shots: config.shots,
        steps: 0,
        seed: u64::from(config.shots),
        validation: None,
        tool: "engine/benches/inference".try_into().expect("short name"),
        tool_version: env!("CARGO_PKG_VERSION").try_into().expect("short version"),
    };
    let mut builder =
        FileBuilder::new(FileKind::Inference, *config, provenance).expect("valid configuration");
    for (name, values) in &tensors {
        builder
            .tensor(name, values)
            .expect("tensor of the configuration");
    }
    builder.build().expect("complete model file")
}
