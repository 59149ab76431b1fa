//! The `trainer` binary end to end: a short training run whose accuracy rises above chance,
//! exports, `infer` through the engine, refusals of bad data before training starts, NaN
//! steps, and a run killed with SIGKILL and resumed.

// AWGIM.md's size letters: `D` (features) and `d` (latent) are two different sizes.
#![allow(non_snake_case)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use autodiff::Backend;
use npyz::WriterBuilder;
use trainer::evaluate::CompiledEval;
use trainer::model_file::ModelParams;

const BIN: &str = env!("CARGO_BIN_EXE_trainer");

/// A small, fast run on the synthetic data (edge sizes, few tasks).
fn small_run(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--shots",
        "5",
        "--queries",
        "5",
        "--batch",
        "4",
        "--val-tasks",
        "20",
        "--test-tasks",
        "40",
        "--eval-batch",
        "10",
        "--out",
    ])
    .arg(out)
    .args(extra);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run trainer");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "trainer failed:\n{text}");
    text
}

fn run_err(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("run trainer");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "trainer should have failed:\n{text}");
    (out, text)
}

fn value_after<'a>(text: &'a str, key: &str) -> &'a str {
    let start = text
        .find(key)
        .unwrap_or_else(|| panic!("`{key}` not in output:\n{text}"))
        + key.len();
    text[start..].split_whitespace().next().unwrap_or("")
}

fn percent(s: &str) -> f32 {
    s.trim_end_matches('%').parse::<f32>().unwrap() / 100.0
}

#[test]
fn short_run_learns_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.model");
    let text =
        run_ok(small_run(&model, &["--steps", "150", "--val-every", "50"]).args(["--lr", "2e-3"]));
    // Above chance (20% for 5-way) with its interval, on 40 test tasks.
    let line = text
        .lines()
        .find(|l| l.starts_with("test ("))
        .expect("test line");
    let test = percent(value_after(line, "AWGIM "));
    let ci = percent(value_after(line, "± "));
    assert!(
        test - ci > 0.3,
        "test accuracy {test} ± {ci} not clearly above chance:\n{text}"
    );
    // The curves: a CSV row every 10 steps with validation every 50, and an SVG chart.
    let csv = std::fs::read_to_string(dir.path().join("m.model.curves.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("step,loss,train_accuracy"));
    assert_eq!(rows.len(), 1 + 15);
    let validated = rows.iter().filter(|r| !r.ends_with(",,")).count() - 1;
    assert_eq!(validated, 3);
    let svg = std::fs::read_to_string(dir.path().join("m.model.curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("validation"));

    // The model file: a training file with provenance and validation.
    let params = ModelParams::read(&model).unwrap();
    assert_eq!(params.kind, formats::FileKind::Training);
    // The default classifier (which `infer` below runs in the engine).
    let default = formats::ModelConfig {
        classifier: formats::Classifier {
            features: formats::FeatureNorm::CenteredL2,
            weights: formats::WeightsKind::Prototype,
            logits: formats::LogitsKind::Cosine,
        },
        ..formats::ModelConfig::edge(5)
    };
    assert_eq!(params.config, default);
    assert!(params.provenance.validation.is_some());
    assert!(params.provenance.dataset.starts_with("synthetic"));

    // Export: the inference file holds only what a device needs.
    let inference = dir.path().join("m.inference");
    run_ok(
        Command::new(BIN)
            .args(["export", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&inference),
    );
    let inf = ModelParams::read(&inference).unwrap();
    assert_eq!(inf.kind, formats::FileKind::Inference);
    assert!(inf
        .params
        .iter()
        .all(|(n, _)| !n.starts_with("dec_") && n != "gen.g2_sigma"));
    assert_eq!(
        inf.params.len(),
        formats::expected_tensors(&inf.config, formats::FileKind::Inference).count()
    );

    // safetensors: every parameter with the formats name, shape and values.
    let st_path = dir.path().join("m.safetensors");
    run_ok(
        Command::new(BIN)
            .args(["safetensors", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&st_path),
    );
    let bytes = std::fs::read(&st_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), params.params.len());
    for (name, values) in &params.params {
        let t = st.tensor(name).unwrap();
        let spec_shape: Vec<usize> = formats::allowed_tensor(&params.config, params.kind, name)
            .unwrap()
            .1
            .iter()
            .map(|&d| d as usize)
            .collect();
        assert_eq!(t.shape(), spec_shape.as_slice(), "{name}");
        let got: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(&got, values, "{name}");
    }

    // infer: the engine's logits on a task agree with the trainer's evaluation graph.
    let formats::Sizes { N, K, D, .. } = inf.config.sizes();
    let M = 7; // queries
    let support: Vec<f32> = (0..N * K * D)
        .map(|i| ((i * 37 % 101) as f32 / 50.0).max(0.0))
        .collect();
    let queries: Vec<f32> = (0..M * D)
        .map(|i| ((i * 53 % 97) as f32 / 40.0 - 0.3).max(0.0))
        .collect();
    let (s_path, q_path, l_path) = (
        dir.path().join("s.npy"),
        dir.path().join("q.npy"),
        dir.path().join("l.npy"),
    );
    write_npy(&s_path, &[N as u64, K as u64, D as u64], &support);
    write_npy(&q_path, &[M as u64, D as u64], &queries);
    run_ok(
        Command::new(BIN)
            .args(["infer", "--model"])
            .arg(&inference)
            .arg("--support")
            .arg(&s_path)
            .arg("--queries")
            .arg(&q_path)
            .arg("--out")
            .arg(&l_path),
    );
    let (shape, logits) = trainer::infer::read_npy(&l_path).unwrap();
    assert_eq!(shape, vec![M as u64, N as u64]);
    // The graph takes tasks of N*Q queries: put the M queries in a 5 x 2 = 10-query task.
    let mut graph = CompiledEval::new(&inf.config, 1, 2, &params.params, Backend::Cpu).unwrap();
    let mut batch = trainer::data::EpisodeBatch {
        batch: 1,
        n_way: N,
        k_shot: K,
        n_query: 2,
        dim: D,
        support: support.clone(),
        query: queries.clone(),
        ..Default::default()
    };
    batch.query.resize(10 * D, 0.0);
    let graph_logits = graph.logits(&batch).unwrap();
    for (a, b) in logits.iter().zip(&graph_logits[..M * N]) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "engine {a} vs graph {b}"
        );
    }

    // eval on a saved model reproduces the protocol's output line.
    let text = run_ok(
        Command::new(BIN)
            .args(["eval", "--tasks", "20", "--eval-batch", "10", "--model"])
            .arg(&model),
    );
    assert!(
        text.contains("(test, 20 tasks, 5-way 5-shot, 15 queries/class):\nAWGIM"),
        "{text}"
    );
}

fn write_npy(path: &Path, shape: &[u64], data: &[f32]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn bad_data_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.model");
    let missing = dir.path().join("no-such-dir");
    let (_, text) = run_err(
        small_run(&model, &["--steps", "5"])
            .arg("--data")
            .arg(&missing),
    );
    assert!(text.contains("no-such-dir"), "{text}");

    // An npy data set with 8 examples per class cannot give 5 shots + 5 queries.
    let data = dir.path().join("npy");
    std::fs::create_dir(&data).unwrap();
    for split in ["train", "val", "test"] {
        let values: Vec<f32> = (0..6 * 8 * 16).map(|i| (i % 13) as f32).collect();
        write_npy(&data.join(format!("{split}.npy")), &[6, 8, 16], &values);
    }
    let (_, text) = run_err(
        small_run(&model, &["--steps", "5"])
            .arg("--data")
            .arg(&data),
    );
    assert!(
        text.contains("train.npy") && text.contains("examples"),
        "{text}"
    );
    assert!(
        !model.exists(),
        "nothing may be written when the data is refused"
    );

    // Settings that cannot train are refused by name.
    let (_, text) = run_err(&mut small_run(&model, &["--steps", "5", "--heads", "3"]));
    assert!(text.contains("heads"), "{text}");
    let (_, text) = run_err(&mut small_run(
        &model,
        &["--steps", "5", "--dropout", "1.5"],
    ));
    assert!(text.contains("--dropout"), "{text}");
}

#[test]
fn non_finite_steps_are_skipped_counted_and_training_continues() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.model");
    let text = run_ok(&mut small_run(
        &model,
        &[
            "--steps",
            "20",
            "--val-every",
            "20",
            "--inject-nan-at",
            "4,11",
        ],
    ));
    assert!(
        text.contains("step 5: non-finite loss or gradient, update skipped (1 so far)"),
        "{text}"
    );
    assert!(
        text.contains("step 12: non-finite loss or gradient, update skipped (2 so far)"),
        "{text}"
    );
    assert!(text.contains("20 steps, 2 skipped"), "{text}");
    let ckpt = ModelParams::read(&dir.path().join("m.model.ckpt")).unwrap();
    let state = ckpt.training.unwrap();
    assert_eq!((state.step, state.skipped_steps), (20, 2));
    assert_eq!(ckpt.optimizer.unwrap().t, 18);
    assert!(ckpt
        .params
        .iter()
        .all(|(_, v)| v.iter().all(|x| x.is_finite())));
}

/// Parameters and optimizer state of a checkpoint, as raw bits.
fn state_bits(path: &Path) -> Vec<(String, Vec<u32>)> {
    let p = ModelParams::read(path).unwrap();
    let mut out: Vec<(String, Vec<u32>)> = p
        .params
        .iter()
        .map(|(n, v)| (n.clone(), v.iter().map(|x| x.to_bits()).collect()))
        .collect();
    for (n, m, v) in p.optimizer.unwrap().moments {
        out.push((format!("m/{n}"), m.iter().map(|x| x.to_bits()).collect()));
        out.push((format!("v/{n}"), v.iter().map(|x| x.to_bits()).collect()));
    }
    out
}

#[test]
fn killed_run_resumes_to_the_same_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--steps",
        "60",
        "--val-every",
        "20",
        "--checkpoint-every",
        "5",
        "--seed",
        "3",
    ];
    let full = dir.path().join("full.model");
    run_ok(&mut small_run(&full, &args));

    let killed = dir.path().join("killed.model");
    let ckpt = PathBuf::from(format!("{}.ckpt", killed.display()));
    let mut child = small_run(&killed, &args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first checkpoint, then kill at a random moment of the run.
    let start = Instant::now();
    while !ckpt.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let delay = Duration::from_millis(u64::from(nanos % 1500));
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let at = ModelParams::read(&ckpt).unwrap().training.unwrap().step;
    eprintln!("killed {delay:?} after the first checkpoint; resuming from step {at}");

    run_ok(Command::new(BIN).arg("--resume").arg(&ckpt));
    let full_ckpt = PathBuf::from(format!("{}.ckpt", full.display()));
    assert_eq!(
        state_bits(&ckpt),
        state_bits(&full_ckpt),
        "resumed from step {at}"
    );
    let (a, b) = (
        ModelParams::read(&killed).unwrap(),
        ModelParams::read(&full).unwrap(),
    );
    assert_eq!(a.params, b.params, "best-validation models differ");
}

#[test]
fn corrupted_or_mismatched_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.model");
    run_ok(&mut small_run(
        &model,
        &["--steps", "10", "--val-every", "10"],
    ));
    let ckpt = dir.path().join("m.model.ckpt");
    let original = std::fs::read(&ckpt).unwrap();

    // One flipped bit: the checksum catches it, nothing is loaded or overwritten.
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let corrupted = dir.path().join("corrupted.ckpt");
    std::fs::write(&corrupted, &bytes).unwrap();
    let (_, text) = run_err(Command::new(BIN).arg("--resume").arg(&corrupted));
    assert!(
        text.contains("corrupted.ckpt") && text.to_lowercase().contains("checksum"),
        "{text}"
    );
    assert_eq!(std::fs::read(&ckpt).unwrap(), original);

    // A truncated checkpoint.
    let truncated = dir.path().join("truncated.ckpt");
    std::fs::write(&truncated, &original[..original.len() - 100]).unwrap();
    let (_, text) = run_err(Command::new(BIN).arg("--resume").arg(&truncated));
    assert!(text.contains("truncated.ckpt"), "{text}");

    // The model file is not a checkpoint.
    let (_, text) = run_err(Command::new(BIN).arg("--resume").arg(&model));
    assert!(text.contains("not a resumable checkpoint"), "{text}");
}

#[test]
fn an_earlier_run_is_not_overwritten_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.model");
    run_ok(&mut small_run(
        &model,
        &["--steps", "10", "--val-every", "10"],
    ));
    let before = std::fs::read(&model).unwrap();
    let (_, text) = run_err(&mut small_run(&model, &["--steps", "10", "--seed", "1"]));
    assert!(
        text.contains("m.model exists") && text.contains("--overwrite"),
        "{text}"
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    run_ok(&mut small_run(
        &model,
        &[
            "--steps",
            "10",
            "--val-every",
            "10",
            "--seed",
            "1",
            "--overwrite",
        ],
    ));
    assert_ne!(std::fs::read(&model).unwrap(), before);
}

/// Beyond the paper: the default classifier is recorded in the model file with its feature
/// centre, and `--train-on-val` trains on train + val without validating, keeping the last
/// step; `trainer eval` reads the file back and reports the paired difference.
#[test]
fn default_classifier_with_train_on_val() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("v.model");
    let text = run_ok(&mut small_run(
        &model,
        &["--steps", "20", "--val-every", "10", "--train-on-val"],
    ));
    assert!(
        text.contains("saved (--train-on-val: no validation)"),
        "{text}"
    );
    assert!(!text.contains(": validation "), "{text}");
    assert!(text.contains("paired difference AWGIM - NCM"), "{text}");
    let params = ModelParams::read(&model).unwrap();
    assert_eq!(
        params.config.classifier,
        formats::Classifier {
            features: formats::FeatureNorm::CenteredL2,
            weights: formats::WeightsKind::Prototype,
            logits: formats::LogitsKind::Cosine,
        }
    );
    assert!(params.provenance.validation.is_none());
    assert_eq!(params.provenance.steps, 20);
    // The centre is the mean of the train and val classes.
    let data = trainer::data::SyntheticSpec::default().generate().unwrap();
    let center = data.train_and_val().unwrap().mean();
    let stored = &params
        .params
        .iter()
        .find(|(n, _)| n == "feat.center")
        .unwrap()
        .1;
    assert_eq!(stored, &center);
    let eval = run_ok(
        Command::new(BIN)
            .args(["eval", "--tasks", "20", "--model"])
            .arg(&model),
    );
    assert!(eval.contains("paired difference AWGIM - NCM"), "{eval}");
}

/// `trainer synthetic` writes the built-in data set as an npy directory that `--data` reads
/// back to the same values.
#[test]
fn synthetic_data_round_trips_through_npy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("npy");
    let text = run_ok(
        Command::new(BIN)
            .args(["synthetic", "--synthetic-dim", "12", "--out"])
            .arg(&out),
    );
    assert!(text.contains("dim=12"), "{text}");
    let read = trainer::data::load_path(&out).unwrap();
    let spec = trainer::options::SyntheticPreset::Mini.spec(Some(12));
    let generated = spec.generate().unwrap();
    for kind in trainer::data::SplitKind::ALL {
        let (a, b) = (read.split(kind), generated.split(kind));
        assert_eq!(a.num_classes(), b.num_classes());
        assert_eq!(a.dim(), 12);
        assert_eq!(a.data(), b.data());
    }
}
