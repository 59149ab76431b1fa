//! The engine flashed into emulated MCUs: the firmware (`firmware/`) built from a model file
//! and a task as `trainer infer` takes it (support and query `.npy` files; the sizes and the
//! classifier come from the model's header), run under `qemu-system-arm` on the MPS2 boards
//! (`mps2-an386`, Cortex-M4F, and `mps2-an500`, Cortex-M7: one binary) and, for the models
//! that fit it (the edge ones, a trained model of an odd configuration with the trainer's
//! default classifier, and the paper-size int8 models), on `netduinoplus2` (an STM32F405
//! with the real part's 1 MiB / 128 KiB), its printed logits compared with the independent
//! f64 reference (paper classifier, f32 weights) and with the host engine's.
//!
//! Agreement bound, as in `engine_reference.rs`: every device logit is within
//! `TOL * scale` of the reference and of the host's logits (`trainer infer`'s engine), `TOL =
//! 1e-5`, `scale = max(1, max |logit of the task|)` (the reference's, or the host's where the
//! reference does not model the file); int8 models: within `INT8_TOL = 1e-4` of the host's
//! (see [`INT8_TOL`]). The device sums in another order than the host (scalar FPU code instead
//! of AVX tiles), so device and host logits differ by a few f32 ulps; the largest difference
//! is printed. Predicted classes must equal the expected (reference, else host) ones wherever
//! the top two logits are more than `1e-3 * scale` apart. Boards running the same binary must
//! print bit-identical logits.
//!
//! Each test prints the measurements: flash (code + embedded files) and static RAM from the
//! ELF section headers, the workspace, the stack high-water mark per phase, and instructions (SysTick ticks under `-icount shift=0`, see
//! `tests::device::Board::instructions`) for load, prepare and per query. Run with
//! `cargo test -p tests --release --test device_qemu -- --nocapture` to see them.
//!
//! Missing `qemu-system-arm` or thumbv7em target: the tests fail and name the install
//! commands (`scripts/test-all.sh` installs both).
// The engine's size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use formats::{AlignedBuf, ModelConfig};
use tests::device::{
    self, build_firmware, run_qemu, write_if_changed, Board, DeviceError, ElfSizes, Embedded,
    QemuRun, Report,
};
use tests::golden::{self, model_and_task, GoldenSet};
use tests::reference::Reference;
use tests::task_file::TaskFile;

const TOL: f64 = 1e-5;
const CLASS_GAP: f64 = 1e-3;
/// Longest a QEMU run may take (the paper 5-shot run takes about a second).
const QEMU_LIMIT: Duration = Duration::from_secs(120);

/// Builds sharing a target dir run one at a time (the ELF is copied from a fixed path).
static BUILDS: Mutex<()> = Mutex::new(());

/// Generated files, the firmware's target dir and ELF copies: under the workspace's target
/// dir, reused across runs so firmware rebuilds are incremental.
fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("awgim-device")
}

/// A model and its task, as files.
struct Files {
    model: PathBuf,
    support: PathBuf,
    queries: PathBuf,
}

impl Files {
    fn embedded(&self) -> Embedded<'_> {
        Embedded {
            model: &self.model,
            support: &self.support,
            queries: &self.queries,
        }
    }
}

/// Writes `rows` as a 2-D f32 `.npy` at `path`, only if its bytes change (see
/// [`write_if_changed`]).
fn write_rows(path: &Path, rows: &[Vec<f32>]) {
    let scratch = path.with_extension("npy.new");
    let width = rows.first().map_or(0, Vec::len);
    trainer::infer::write_npy(&scratch, rows.len(), width, &rows.concat()).unwrap();
    write_if_changed(path, &std::fs::read(&scratch).unwrap()).unwrap();
}

/// Writes the model and the task of `case` under the work dir.
fn write_files(case: &str, model: &[u8], task: &TaskFile) -> Files {
    let dir = work_dir().join(case);
    let files = Files {
        model: dir.join("model.awgim"),
        support: dir.join("support.npy"),
        queries: dir.join("queries.npy"),
    };
    write_if_changed(&files.model, model).unwrap();
    write_rows(&files.support, &task.support);
    write_rows(&files.queries, &task.queries);
    files
}

/// Checks the tools and builds the firmware for `board` with `files`, returning the ELF's
/// path or the build's error.
fn try_build(board: Board, case: &str, files: &Files) -> Result<PathBuf, DeviceError> {
    if let Err(e) = device::check_prerequisites() {
        panic!("{e}");
    }
    let elf = work_dir()
        .join(case)
        .join(format!("firmware-{}.elf", board.feature()));
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    build_firmware(board, files.embedded(), &work_dir().join("target"), &elf)?;
    Ok(elf)
}

fn build(board: Board, case: &str, files: &Files) -> PathBuf {
    try_build(board, case, files).unwrap_or_else(|e| panic!("{e}"))
}

fn run(board: Board, elf: &Path) -> QemuRun {
    run_qemu(board, elf, QEMU_LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// The host engine's logits for the task, one row per query: what `trainer infer` computes
/// (`trainer::infer::classify`, the engine with the file's sizes).
fn host_logits(model: &[u8], task: &TaskFile) -> Vec<Vec<f32>> {
    let file = AlignedBuf::from_bytes(model);
    let logits = trainer::infer::classify(
        file.as_bytes(),
        &task.support.concat(),
        &task.queries.concat(),
    )
    .unwrap();
    let n = logits.len() / task.queries.len().max(1);
    logits.chunks_exact(n).map(<[f32]>::to_vec).collect()
}

fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    (1..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// A model with its task and expected logits.
struct Case {
    /// Name (the work dir and the table's first column).
    name: &'static str,
    config: ModelConfig,
    model: Vec<u8>,
    task: TaskFile,
    /// Reference logits, one row per query, where the f64 reference models the file (the
    /// paper's classifier, f32 weights).
    reference: Option<Vec<Vec<f64>>>,
    /// The bound on `|device - host| / scale`.
    host_tol: f64,
}

/// A seeded model and task for `config`, with 2 queries per class.
fn generated(name: &'static str, config: ModelConfig, seed: u64) -> Case {
    let (model, task) = model_and_task(config, seed, 2).unwrap();
    let reference = Reference::from_file(&model)
        .unwrap()
        .logits(&task.support, &task.queries);
    Case {
        name,
        config,
        model,
        task,
        reference: Some(reference),
        host_tol: TOL,
    }
}

/// The committed golden set (edge 5-shot) and its reference logits.
fn golden_case() -> Case {
    let set = GoldenSet::read(&GoldenSet::committed_dir()).unwrap();
    Case {
        name: "edge5",
        config: golden::CONFIG,
        task: TaskFile::decode(&set.task).unwrap(),
        reference: Some(set.expected_logits().unwrap()),
        host_tol: TOL,
        model: set.model,
    }
}

/// `max(1, max |reference logit|)`: the scale of the agreement bound.
fn scale(reference: &[Vec<f64>]) -> f64 {
    reference
        .iter()
        .flatten()
        .fold(1.0f64, |m, v| m.max(v.abs()))
}

/// Checks one board's report against the case and the host logits; returns a summary line.
fn check_report(case: &Case, host: &[Vec<f32>], board: Board, report: &Report) -> String {
    let sizes = case.config.sizes();
    assert_eq!(
        (report.board.as_str(), report.sizes),
        (board.feature(), sizes)
    );
    assert_eq!(report.model_bytes, case.model.len() as u64);
    assert_eq!(
        report.workspace_bytes,
        4 * engine::workspace_len(sizes, case.config.classifier, 1) as u64
    );
    assert_eq!(report.queries.len(), case.task.queries.len());

    // The bound's scale: the reference's logits, or the host's where the f64 reference does
    // not model the file (the classifier variants, int8 weights).
    let host_f64: Vec<Vec<f64>> = host
        .iter()
        .map(|row| row.iter().copied().map(f64::from).collect())
        .collect();
    let expected = case.reference.as_ref().unwrap_or(&host_f64);
    let scale = scale(expected);
    let (mut worst_reference, mut worst_host, mut identical, mut class_checked) =
        (0.0f64, 0.0f64, 0, 0);
    for (q, ((result, want), host)) in report.queries.iter().zip(expected).zip(host).enumerate() {
        for (i, ((&got, &want), &host)) in result.logits.iter().zip(want).zip(host).enumerate() {
            let err = (f64::from(got) - want).abs() / scale;
            let host_err = f64::from((got - host).abs()) / scale;
            worst_reference = worst_reference.max(err);
            worst_host = worst_host.max(host_err);
            identical += usize::from(got.to_bits() == host.to_bits());
            assert!(
                (case.reference.is_none() || err <= TOL) && host_err <= case.host_tol,
                "{} on {} query {q} class {i}: device {got}, reference {want}, host {host}, \
                 scale {scale}",
                case.name,
                board.machine()
            );
        }
        let mut sorted = want.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > CLASS_GAP * scale {
            class_checked += 1;
            assert_eq!(result.class, argmax(want), "query {q}: device vs expected");
            assert_eq!(result.class, argmax(host), "query {q}: device vs host");
        }
    }
    let against_reference = if case.reference.is_some() {
        format!("max |device - reference| / scale {worst_reference:.2e}, ")
    } else {
        String::new()
    };
    format!(
        "{} on {} ({}): {against_reference}max |device - host| / scale {worst_host:.2e} (scale \
         {scale:.2}), {identical}/{} logits bit-identical to the host, classes checked on \
         {class_checked}/{} queries",
        case.name,
        board.machine(),
        board.core(),
        report.queries.len() * sizes.N,
        report.queries.len()
    )
}

/// The table's header (README.md's measurement table).
const TABLE_HEADER: &str = "| model | board | flash bytes (code / model) | static RAM bytes \
    (workspace) | stack high-water bytes (load / enroll / prepare / classify) \
    | RAM bytes | instructions: load | enroll | prepare | classify per query |\n\
    | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

/// One markdown table row of measurements.
fn measurements(name: &str, board: Board, sizes: &ElfSizes, report: &Report) -> String {
    let classify_stack = report
        .queries
        .iter()
        .map(|q| q.stack_bytes)
        .max()
        .unwrap_or(0);
    let per_query =
        report.queries.iter().map(|q| q.ticks).sum::<u64>() / report.queries.len().max(1) as u64;
    format!(
        "| {name} | {} ({}) | {} ({} / {}) | {} ({}) | {} ({} / {} / {} / {}) | {} | {} | {} \
         | {} | {} |",
        board.machine(),
        board.core(),
        sizes.flash,
        sizes.code,
        report.model_bytes,
        sizes.static_ram,
        report.workspace_bytes,
        report.stack_high_water_bytes,
        report.load.stack_bytes,
        report.enroll.stack_bytes,
        report.prepare.stack_bytes,
        classify_stack,
        sizes.static_ram + report.stack_high_water_bytes,
        board.instructions(report.load.ticks),
        board.instructions(report.enroll.ticks),
        board.instructions(report.prepare.ticks),
        board.instructions(per_query),
    )
}

/// Builds the firmware for the case and each board's feature, runs it on `boards`, checks
/// its logits against the reference and the host's (`host`), and prints the measurements.
/// Boards of one feature run one binary and must print bit-identical logits.
fn check_on_boards(case: &Case, host: &[Vec<f32>], boards: &[Board]) -> Vec<(ElfSizes, Report)> {
    let files = write_files(case.name, &case.model, &case.task);
    let mut rows = Vec::new();
    let mut reports: Vec<(Board, ElfSizes, Report)> = Vec::new();
    let mut elfs: Vec<(&str, PathBuf)> = Vec::new();
    for &board in boards {
        // Boards of one feature run one binary, built once.
        let elf = match elfs.iter().find(|(feature, _)| *feature == board.feature()) {
            Some((_, elf)) => elf.clone(),
            None => {
                let elf = build(board, case.name, &files);
                elfs.push((board.feature(), elf.clone()));
                elf
            }
        };
        let run = run(board, &elf);
        assert_eq!(
            run.status,
            Some(0),
            "{} on {}: exit status {:?}\nstdout:\n{}\nstderr:\n{}",
            case.name,
            board.machine(),
            run.status,
            run.stdout,
            run.stderr
        );
        let report = Report::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}"));
        let summary = check_report(case, host, board, &report);
        println!("{summary}; QEMU ran {:.2} s", run.elapsed.as_secs_f64());
        let sizes = ElfSizes::read(&elf).unwrap();
        rows.push(measurements(case.name, board, &sizes, &report));
        reports.push((board, sizes, report));
    }
    let bits = |r: &Report| -> Vec<u32> {
        r.queries
            .iter()
            .flat_map(|q| q.logits.iter().map(|l| l.to_bits()))
            .collect()
    };
    for (i, (a, _, first)) in reports.iter().enumerate() {
        for (b, _, second) in &reports[i + 1..] {
            if a.feature() == b.feature() {
                assert_eq!(bits(first), bits(second), "{a:?} and {b:?} disagree");
            }
        }
    }
    println!("{TABLE_HEADER}");
    for row in rows {
        println!("{row}");
    }
    reports
        .into_iter()
        .map(|(_, sizes, report)| (sizes, report))
        .collect()
}

#[test]
fn edge_1shot_on_qemu() {
    let case = generated("edge1", ModelConfig::edge(1), 101);
    let host = host_logits(&case.model, &case.task);
    check_on_boards(&case, &host, &Board::ALL);
}

#[test]
fn edge_5shot_golden_on_qemu() {
    let case = golden_case();
    let host = host_logits(&case.model, &case.task);
    check_on_boards(&case, &host, &Board::ALL);
}

#[test]
fn paper_1shot_on_qemu() {
    let case = generated("paper1", ModelConfig::paper(1), 103);
    let host = host_logits(&case.model, &case.task);
    check_on_boards(&case, &host, &Board::MPS2);
}

#[test]
fn paper_5shot_on_qemu() {
    let case = generated("paper5", ModelConfig::paper(5), 105);
    let host = host_logits(&case.model, &case.task);
    check_on_boards(&case, &host, &Board::MPS2);
}

/// The STM32F405's memory (`memory/netduinoplus2.x`): 1 MiB of flash, 128 KiB of SRAM.
const STM32F405_FLASH: u64 = 1024 * 1024;
const STM32F405_RAM: u64 = 128 * 1024;

/// Bound on `|device - host| / scale` for int8 models. The integer sums are the same code on
/// both, but each product's input column is quantised (to i16) from f32 values that the host
/// and the device compute in a different order, a few ulps apart, so an input near a rounding
/// boundary lands on the neighbouring step (`max |column| / 26,420` at the paper's depths), and
/// that difference travels through the later layers. Measured: 2.8e-5 (paper 1-shot) and
/// 3.0e-5 (5-shot) with no logit bit-identical; the f32 models' bound is 1e-5.
const INT8_TOL: f64 = 1e-4;

/// A paper-size int8 model (`trainer export --int8` of the seeded random paper model with
/// `shots` shots) on the STM32F405 with the real part's limits: it links (flash and static RAM
/// within the memory map), runs within 128 KiB of RAM with its stack, and its logits agree
/// with the host engine's int8 logits (`trainer infer` on the same file), as on the MPS2
/// boards.
fn paper_int8_on_stm32f405(name: &'static str, shots: u32, seed: u64) {
    let config = ModelConfig::paper(shots);
    let (f32_model, task) = model_and_task(config, seed, 1).unwrap();
    let model = trainer::export::int8_bytes(
        AlignedBuf::from_bytes(&f32_model).as_bytes(),
        Path::new(name),
    )
    .unwrap();
    assert!(3 * model.len() <= f32_model.len(), "{} bytes", model.len());
    let host = host_logits(&model, &task);
    let case = Case {
        name,
        config,
        model,
        task,
        reference: None,
        host_tol: INT8_TOL,
    };
    // Board::ALL ends with the STM32F405 (the MPS2 boards measure the same code).
    let reports = check_on_boards(&case, &host, &Board::ALL);
    let (sizes, report) = reports.last().unwrap();
    let ram = sizes.static_ram + report.stack_high_water_bytes;
    assert_eq!(report.board, Board::Netduinoplus2.feature());
    assert!(
        sizes.flash <= STM32F405_FLASH,
        "{name}: flash {}",
        sizes.flash
    );
    assert!(ram <= STM32F405_RAM, "{name}: RAM {ram}");
}

#[test]
fn paper_1shot_int8_on_qemu() {
    paper_int8_on_stm32f405("paper1-int8", 1, 107);
}

#[test]
fn paper_5shot_int8_on_qemu() {
    paper_int8_on_stm32f405("paper5-int8", 5, 109);
}

/// The `trainer` binary of this build (built here if needed: the test may run alone).
fn trainer_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "trainer",
            "--bin",
            "trainer",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "building the trainer failed");
    // This test is target/release/deps/device_qemu-<hash>; the binary is target/release/trainer.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    dir.join(format!("trainer{}", std::env::consts::EXE_SUFFIX))
}

/// Runs the trainer binary in `dir` with `args`, failing with its output.
fn trainer(dir: &Path, args: &[&str]) {
    let output = Command::new(trainer_binary())
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "trainer {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The commands as written: train a tiny 3-way 2-shot model (D = 48, d = 16, 2 heads,
/// G = 24, 30 steps, the trainer's default classifier), classify a task with `trainer infer`,
/// build the firmware from the files alone (the sizes and the classifier from the model's
/// header), run it on the STM32F405 and the MPS2 boards, and compare the device's logits with
/// `trainer infer`'s.
#[test]
fn odd_trained_model_on_qemu() {
    // A fresh directory: the trainer does not overwrite an earlier run's files.
    let dir = work_dir().join("odd-train");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The command as written: the trainer's default classifier.
    trainer(
        &dir,
        &[
            "--ways",
            "3",
            "--shots",
            "2",
            "--synthetic-dim",
            "48",
            "--latent",
            "16",
            "--heads",
            "2",
            "--generator",
            "24",
            "--steps",
            "30",
            "--out",
            "odd.awgim",
        ],
    );
    let model = std::fs::read(dir.join("odd.awgim")).unwrap();
    let config = formats::parse(AlignedBuf::from_bytes(&model).as_bytes())
        .unwrap()
        .config();
    assert_eq!(
        config.sizes(),
        ModelConfig::new(48, 16, 2, 3, 2, 24).sizes()
    );
    // A task of seeded random features: 3 x 2 support rows, 7 queries.
    let (_, task) = model_and_task(config, 7, 2).unwrap();
    let task = TaskFile {
        queries: task.queries[..5].to_vec(),
        ..task
    };
    let files = write_files("odd", &model, &task);
    trainer(
        &dir,
        &[
            "infer",
            "--model",
            "odd.awgim",
            "--support",
            files.support.to_str().unwrap(),
            "--queries",
            files.queries.to_str().unwrap(),
            "--out",
            "logits.npy",
        ],
    );
    let (shape, logits) = trainer::infer::read_npy(&dir.join("logits.npy")).unwrap();
    assert_eq!(shape, [task.queries.len() as u64, 3]);
    let host: Vec<Vec<f32>> = logits.chunks_exact(3).map(<[f32]>::to_vec).collect();
    // The f64 reference runs the paper's classifier only: the device is checked against the
    // host engine (`trainer infer`).
    assert_ne!(
        config.classifier,
        formats::Classifier::PAPER,
        "the trainer's default"
    );
    let case = Case {
        name: "odd",
        config,
        reference: None,
        host_tol: TOL,
        model,
        task,
    };
    check_on_boards(&case, &host, &Board::ALL);
}

/// A model too big for the board is a build error that names the file, the limit and the
/// numbers: the paper's 3.15 MB of weights on the STM32F405's 1 MiB of flash.
#[test]
fn a_model_too_big_for_the_board_fails_the_build() {
    let (model, task) = model_and_task(ModelConfig::paper(1), 9, 1).unwrap();
    let files = write_files("too-big", &model, &task);
    let error = try_build(Board::Netduinoplus2, "too-big", &files).unwrap_err();
    let message = error.to_string();
    let model_path = files.model.canonicalize().unwrap();
    let parts = [
        format!(
            "the model {} does not fit the board netduinoplus2",
            model_path.display()
        ),
        "FLASH needs".into(),
        "the limit is 1048576 bytes (FLASH LENGTH in memory/netduinoplus2.x)".into(),
        format!("model {}", model.len()),
    ];
    for part in parts {
        assert!(message.contains(&part), "`{part}` not in:\n{message}");
    }
}

/// Each failure ends the run, or the build, with its own status and a message naming the
/// problem (edge 5-shot, on the Cortex-M4F board).
#[test]
fn failures_exit_with_distinct_codes() {
    let golden = GoldenSet::read(&GoldenSet::committed_dir()).unwrap();
    let task = TaskFile::decode(&golden.task).unwrap();
    let (edge1_model, _) = model_and_task(ModelConfig::edge(1), 7, 1).unwrap();

    // Files that do not match the model fail the build.
    let bad_model = write_files("bad-model", &edge1_model, &task);
    let error = try_build(Board::An386, "bad-model", &bad_model).unwrap_err();
    assert!(
        error.to_string().contains("AWGIM_SUPPORT")
            && error
                .to_string()
                .contains("shape [25, 64], this model needs [[5, 1, 64], [5, 64]]"),
        "{error}"
    );

    let mut nan_support = task.clone();
    nan_support.support[3][7] = f32::NAN;
    let mut inf_query = task.clone();
    inf_query.queries[1][5] = f32::INFINITY;
    let cases = [
        (
            "nan-support",
            nan_support,
            2,
            "error: enroll: support feature [3][7] is not finite",
        ),
        (
            "inf-query",
            inf_query,
            5,
            "error: classify query 1: query feature [0][5] is not finite",
        ),
    ];
    for (name, task, code, message) in cases {
        let files = write_files(name, &golden.model, &task);
        let elf = build(Board::An386, name, &files);
        let run = run(Board::An386, &elf);
        assert_eq!(
            run.status,
            Some(code),
            "{name}: stdout:\n{}\nstderr:\n{}",
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.contains(message),
            "{name}: stderr:\n{}",
            run.stderr
        );
        // Queries before the failing one are still reported.
        assert_eq!(
            run.stdout.contains("query 0 class"),
            name == "inf-query",
            "{name}"
        );
    }
}
