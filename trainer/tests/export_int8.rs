//! `trainer export --int8`: the file it writes (version 4, int8 tensors in row pairs, at
//! most a third of the f32 inference file, every `quant_axis` tensor int8 and within half a
//! quantisation step of the f32 weights), its typed refusals (a version-3 int8 file included),
//! and that a failed export never touches an existing output.

use std::path::Path;
use std::process::Command;

use formats::quant::dequantize;
use formats::{Dtype, FileKind, ModelConfig};
use trainer::data::{SplitKind, SyntheticSpec};
use trainer::error::TrainerError;
use trainer::evaluate::CompiledEval;
use trainer::export::{compare, f32_inference_bytes, int8_bytes, INT8_TOOL};
use trainer::model_file::{provenance, ModelParams};

const BIN: &str = env!("CARGO_BIN_EXE_trainer");

/// A model file of `kind` with deterministic pseudo-random weights (a few rows and columns
/// larger than the rest, as trained layers have).
fn model(config: ModelConfig, kind: FileKind, seed: u64) -> ModelParams {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let params = formats::expected_tensors(&config, kind)
        .map(|spec| {
            let n = spec.elements() as usize;
            let values = (0..n)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    if i % 97 == 0 {
                        u * 4.0
                    } else {
                        u * 0.2
                    }
                })
                .collect();
            (spec.name.to_string(), values)
        })
        .collect();
    ModelParams {
        kind,
        config,
        provenance: provenance("random", config.shots, 0, seed, None),
        params,
        optimizer: None,
        training: None,
    }
}

fn check_export(config: ModelConfig, kind: FileKind) {
    let source = model(config, kind, 3);
    let bytes = source.to_bytes().unwrap();
    let f32_inference = source.inference().to_bytes().unwrap();
    let int8 = int8_bytes(&bytes, Path::new("m")).unwrap();
    assert!(
        int8.len() * 3 <= f32_inference.len(),
        "{config:?}: {} bytes int8, {} f32",
        int8.len(),
        f32_inference.len()
    );
    assert_eq!(
        u16::from_le_bytes([int8[8], int8[9]]),
        formats::PAIR_VERSION
    );
    let aligned = formats::AlignedBuf::from_bytes(&int8);
    let file = formats::parse(&aligned).unwrap();
    assert_eq!(file.kind(), FileKind::Inference);
    assert_eq!(file.config(), config);
    assert_eq!(file.provenance().tool, INT8_TOOL);
    assert_eq!(file.provenance().validation, None);
    let mut quantised = 0;
    for (name, w) in &source.inference().params {
        match formats::quant_axis(name) {
            None => {
                assert_eq!(file.dtype(name).unwrap(), Dtype::F32);
                assert_eq!(file.tensor(name).unwrap(), &w[..], "{name}");
            }
            Some(axis) => {
                quantised += 1;
                let q = file.tensor_i8(name).unwrap();
                assert_eq!(q.axis, axis);
                // The values `quantize` gives, as the file stores them (row pairs).
                let shape = formats::required_tensor(&config, FileKind::Inference, name)
                    .unwrap()
                    .1
                    .shape;
                let (values, scales) =
                    formats::quant::quantize(w, shape[0] as usize, shape[1] as usize, axis)
                        .unwrap();
                assert_eq!((q.values, q.scales), (&values[..], &scales[..]), "{name}");
                let mut back = vec![0.0; w.len()];
                dequantize(&q, &mut back).unwrap();
                let step = q.scales.iter().fold(0.0f32, |m, &s| m.max(s));
                for (a, b) in w.iter().zip(&back) {
                    assert!(
                        (a - b).abs() <= step * 0.5 * (1.0 + 1e-5),
                        "{name}: {a} vs {b}"
                    );
                }
            }
        }
    }
    assert_eq!(quantised, 3 * 6 + 4);
}

#[test]
fn int8_export_is_at_most_a_third_and_rereads() {
    check_export(ModelConfig::paper(5), FileKind::Inference);
    check_export(ModelConfig::paper(1), FileKind::Training);
    check_export(ModelConfig::edge(5), FileKind::Inference);
    check_export(ModelConfig::edge(1), FileKind::Training);
}

#[test]
fn bad_models_are_typed_errors() {
    let config = ModelConfig::edge(1);
    let path = Path::new("m");
    let good = model(config, FileKind::Inference, 4).to_bytes().unwrap();
    let int8 = int8_bytes(&good, path).unwrap();
    assert!(matches!(
        int8_bytes(&int8, path),
        Err(TrainerError::AlreadyInt8 { ref tensor, .. }) if tensor == "enc_ap"
    ));
    let mut nan = model(config, FileKind::Inference, 4);
    nan.params[5].1[7] = f32::NAN;
    let tensor = nan.params[5].0.clone();
    assert!(formats::quant_axis(&tensor).is_some());
    match int8_bytes(&nan.to_bytes().unwrap(), path) {
        Err(TrainerError::Quantize {
            tensor: t, source, ..
        }) => {
            assert_eq!(t, tensor);
            assert_eq!(*source, formats::FormatError::NonFiniteWeight { index: 7 });
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        int8_bytes(&good[..100], path),
        Err(TrainerError::Format { .. })
    ));
}

/// The CRC-32 (ISO HDLC) of `bytes`, bit by bit: what a model file's trailer holds.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Yesterday's version-3 int8 file as far as the reader can tell: today's export with the
/// version field set to 3 (the header is the same; only the int8 layout differs).
fn version_3_int8(bytes: &[u8]) -> Vec<u8> {
    let mut file = int8_bytes(bytes, Path::new("m")).unwrap();
    file[8..10].copy_from_slice(&formats::QUANT_VERSION.to_le_bytes());
    let n = file.len() - 4;
    let crc = crc32(&file[..n]);
    file[n..].copy_from_slice(&crc.to_le_bytes());
    file
}

#[test]
fn version_3_int8_files_ask_for_a_re_export() {
    let config = ModelConfig::edge(1);
    let good = model(config, FileKind::Inference, 4).to_bytes().unwrap();
    let old = version_3_int8(&good);
    match int8_bytes(&old, Path::new("old")) {
        Err(TrainerError::Format {
            source: formats::FormatError::Int8LayoutRetired { name },
            ..
        }) => assert_eq!(name, "enc_ap"),
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("old.awgim");
    std::fs::write(&input, &old).unwrap();
    let (ok, text) = export(&input, &dir.path().join("out.awgim"));
    assert!(
        !ok && text.contains("row by row") && text.contains("trainer export --int8"),
        "{text}"
    );
}

fn export(model: &Path, out: &Path) -> (bool, String) {
    let output = Command::new(BIN)
        .args(["export", "--int8", "--tasks", "0", "--model"])
        .arg(model)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn failed_exports_leave_the_output_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::edge(5);
    let good = dir.path().join("good.awgim");
    model(config, FileKind::Training, 5).write(&good).unwrap();
    let mut nan = model(config, FileKind::Inference, 5);
    nan.params[0].1[0] = f32::INFINITY;
    let nan_path = dir.path().join("nan.awgim");
    nan.write(&nan_path).unwrap();
    let out = dir.path().join("out.awgim");
    std::fs::write(&out, b"an earlier export").unwrap();

    let missing = dir.path().join("absent.awgim");
    for (input, expect) in [
        (&missing, "absent.awgim"),
        (&nan_path, "cannot quantise `enc_ap`"),
    ] {
        let (ok, text) = export(input, &out);
        assert!(!ok && text.contains(expect), "{text}");
        assert_eq!(std::fs::read(&out).unwrap(), b"an earlier export");
    }

    let (ok, text) = export(&good, &out);
    assert!(ok, "{text}");
    assert!(text.contains("int8 inference file"), "{text}");
    let written = formats::read_aligned(&out).unwrap();
    let file = formats::parse(&written).unwrap();
    assert_eq!(file.dtype("gen.g2_mu").unwrap(), Dtype::I8);

    // An int8 file is refused as input, and the output stays the earlier export.
    let again = dir.path().join("again.awgim");
    std::fs::write(&again, b"keep").unwrap();
    let (ok, text) = export(&out, &again);
    assert!(!ok && text.contains("int8 already"), "{text}");
    assert_eq!(std::fs::read(&again).unwrap(), b"keep");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

/// The engine comparison draws the tasks `trainer eval` draws (same seed, 20 tasks a draw):
/// on an f32 model the engine's per-task accuracies are the graph's (their logits differ by
/// about 1e-5, so only a near-tie could flip a query).
#[test]
fn comparison_runs_the_tasks_of_trainer_eval() {
    let config = ModelConfig::edge(1);
    let source = model(config, FileKind::Training, 6);
    let bytes = source.to_bytes().unwrap();
    let reference = f32_inference_bytes(&bytes, Path::new("m")).unwrap();
    let data = SyntheticSpec::default().generate().unwrap();
    let split = data.split(SplitKind::Test);
    let tasks = 40;
    let engine = compare(
        &[(Path::new("a"), &reference), (Path::new("b"), &reference)],
        split,
        tasks,
        15,
        9,
    )
    .unwrap();
    assert_eq!(engine.per_model[0], engine.per_model[1]);
    assert_eq!(engine.per_model[0].len(), tasks);
    assert_eq!(engine.paired_difference(1, 0).mean, 0.0);
    let mut graph =
        CompiledEval::new(&config, 20, 15, &source.params, autodiff::Backend::Cpu).unwrap();
    let center = split.mean();
    let graph = graph.evaluate(split, tasks, 9, &center).unwrap();
    let same = graph
        .model
        .iter()
        .zip(&engine.per_model[0])
        .filter(|(a, b)| a == b)
        .count();
    assert!(same + 2 >= tasks, "{same} of {tasks} tasks agree");
    assert!((graph.accuracy().mean - engine.accuracy(0).mean).abs() < 0.005);
}

/// The int8 model, run by the engine's int8 path, classifies like the f32 one on the same
/// tasks (the CLI prints both and their paired difference).
#[test]
fn int8_accuracy_follows_f32() {
    let dir = tempfile::tempdir().unwrap();
    let config = ModelConfig::edge(5);
    let source = model(config, FileKind::Training, 7);
    let path = dir.path().join("m.awgim");
    source.write(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let reference = f32_inference_bytes(&bytes, &path).unwrap();
    let int8 = int8_bytes(&bytes, &path).unwrap();
    let data = SyntheticSpec::default().generate().unwrap();
    let comparison = compare(
        &[(Path::new("f32"), &reference), (Path::new("int8"), &int8)],
        data.split(SplitKind::Test),
        100,
        15,
        0,
    )
    .unwrap();
    let diff = comparison.paired_difference(1, 0);
    assert!(diff.mean.abs() <= 0.01, "{diff:?}");

    let out = dir.path().join("m.int8");
    let output = Command::new(BIN)
        .args(["export", "--int8", "--tasks", "10", "--model"])
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for expected in [
        "10 tasks",
        "\nf32 ",
        " | int8 ",
        "\npaired difference int8 - f32: ",
    ] {
        assert!(text.contains(expected), "`{expected}` not in:\n{text}");
    }
    assert!(out.exists());
}

/// `trainer infer`'s engine call runs an int8 file: its logits follow the f32 file's.
#[test]
fn infer_runs_int8_files() {
    let config = ModelConfig::edge(1);
    let bytes = model(config, FileKind::Inference, 8).to_bytes().unwrap();
    let int8 = int8_bytes(&bytes, Path::new("m")).unwrap();
    let s = config.sizes();
    let features = |n: usize, salt: usize| -> Vec<f32> {
        (0..n * s.D)
            .map(|i| (((i * 37 + salt) % 101) as f32 / 101.0 - 0.3).max(0.0))
            .collect()
    };
    let (support, queries) = (features(s.N * s.K, 1), features(7, 2));
    let run = |b: &[u8]| {
        let aligned = formats::AlignedBuf::from_bytes(b);
        trainer::infer::classify(&aligned, &support, &queries).unwrap()
    };
    let (f32_logits, int8_logits) = (run(&bytes), run(&int8));
    assert_eq!(int8_logits.len(), 7 * s.N);
    let scale = f32_logits.iter().fold(1.0f32, |m, l| m.max(l.abs()));
    for (a, b) in f32_logits.iter().zip(&int8_logits) {
        assert!((a - b).abs() <= 0.05 * scale, "{a} vs {b}");
    }
    assert_ne!(f32_logits, int8_logits);
}
