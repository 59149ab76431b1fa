//! A model file with seeded random weights, for the benchmarks, `examples/measure.rs` and
//! `tests/dyn_sizes.rs` (which include this file by path).

use formats::{expected_tensors, FileBuilder, FileKind, ModelConfig, Provenance};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// An inference model file for `config` with seeded random weights: every matrix
/// Glorot-uniform, layer-norm gains 1 and biases 0; with a classifier beyond the paper's, a
/// feature centre uniform in [-0.1, 0.1) and a logit scale of 10.
pub fn model_file(config: &ModelConfig) -> Vec<u8> {
    build(config, &tensors(config), false)
}

/// [`model_file`] with every tensor `formats::tensors::quant_axis` names stored as int8
/// (`formats::quant::quantize`, in the row pairs of file version 4: what `trainer export
/// --int8` writes).
#[allow(dead_code)]
pub fn int8_model_file(config: &ModelConfig) -> Vec<u8> {
    build(config, &tensors(config), true)
}

/// The f32 file of the int8 file `bytes` dequantised (`formats::quant::dequantize`): the
/// weights the int8 engine multiplies by, in f32.
#[allow(dead_code)]
pub fn dequantized(config: &ModelConfig, bytes: &[u8]) -> Vec<u8> {
    let file = formats::parse(bytes).expect("int8 file");
    let tensors: Vec<(&str, Vec<f32>)> = expected_tensors(config, FileKind::Inference)
        .map(|spec| {
            let values = match formats::tensors::quant_axis(spec.name) {
                Some(_) => {
                    let q = file.tensor_i8(spec.name).expect("int8 tensor");
                    let mut out = vec![0.0; spec.elements() as usize];
                    formats::quant::dequantize(&q, &mut out).expect("dequantised");
                    out
                }
                None => file.tensor(spec.name).expect("f32 tensor").to_vec(),
            };
            (spec.name, values)
        })
        .collect();
    build(config, &tensors, false)
}

/// The tensors of [`model_file`].
fn tensors(config: &ModelConfig) -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(u64::from(config.shots));
    expected_tensors(config, FileKind::Inference)
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
        .collect()
}

/// The inference file of `tensors`, those `quant_axis` names as int8 when `int8`.
fn build(config: &ModelConfig, tensors: &[(&str, Vec<f32>)], int8: bool) -> Vec<u8> {
    let provenance = Provenance {
        dataset: "random".try_into().expect("short name"),
        shots: config.shots,
        steps: 0,
        seed: u64::from(config.shots),
        validation: None,
        tool: "engine/benches/inference".try_into().expect("short name"),
        tool_version: env!("CARGO_PKG_VERSION").try_into().expect("short version"),
    };
    let shapes: Vec<_> = expected_tensors(config, FileKind::Inference)
        .map(|spec| spec.shape)
        .collect();
    let quantized: Vec<Option<(formats::QuantAxis, Vec<i16>, Vec<f32>)>> = tensors
        .iter()
        .zip(&shapes)
        .map(|((name, values), shape)| {
            let axis = formats::tensors::quant_axis(name).filter(|_| int8)?;
            let [inputs, outputs] = shape.as_slice() else {
                return None;
            };
            let (q, scales) =
                formats::quant::quantize(values, *inputs as usize, *outputs as usize, axis)
                    .expect("quantised");
            Some((axis, q, scales))
        })
        .collect();
    let mut builder =
        FileBuilder::new(FileKind::Inference, *config, provenance).expect("valid configuration");
    for ((name, values), quantized) in tensors.iter().zip(&quantized) {
        match quantized {
            Some((axis, q, scales)) => builder.tensor_i8(name, *axis, q, scales),
            None => builder.tensor(name, values),
        }
        .expect("tensor of the configuration");
    }
    builder.build().expect("complete model file")
}
