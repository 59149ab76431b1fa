//! The engine flashed into emulated MCUs: the firmware (`firmware/`) built for each
//! configuration with a seeded model and task, run under `qemu-system-arm` on a Cortex-M4F
//! board (`mps2-an386`) and a Cortex-M7 board (`mps2-an500`), its printed logits compared with
//! the independent f64 reference and with the host engine.
//!
//! Agreement bound, as in `engine_reference.rs`: every device logit is within
//! `TOL * max(1, max |reference logit of the task|)` of the reference, `TOL = 1e-5`. The device
//! sums in another order than the host (scalar FPU code instead of AVX tiles), so device and
//! host logits differ by a few f32 ulps; both are held to the same bound against the
//! reference, and the largest device-host difference is printed. Predicted classes must equal
//! the reference's (and the host's) wherever the reference's top two logits are more than
//! `1e-3 * max(1, max |logit|)` apart. The two boards run the same binary and must print
//! bit-identical logits.
//!
//! Each test prints the measurements: flash (code + embedded files) and static RAM from the
//! ELF section headers, the workspace, the stack high-water mark per phase, and instructions
//! (SysTick ticks x 40 under `-icount shift=0`) for load, prepare and per query. Run with
//! `cargo test -p tests --release --test device_qemu -- --nocapture` to see them.
//!
//! Missing `qemu-system-arm` or thumbv7em target: the tests fail and name the install
//! commands (`scripts/test-all.sh` installs both).
// The engine's size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use engine::Workspace;
use formats::{AlignedBuf, ModelConfig};
use tests::device::{
    self, build_firmware, run_qemu, write_if_changed, Board, ElfSizes, QemuRun, Report,
    INSTRUCTIONS_PER_TICK,
};
use tests::golden::{self, model_and_task, GoldenSet};
use tests::random::to_arrays;
use tests::reference::Reference;
use tests::task_file::TaskFile;

const TOL: f64 = 1e-5;
const CLASS_GAP: f64 = 1e-3;
/// Longest a QEMU run may take (the paper 5-shot run takes about a second).
const QEMU_LIMIT: Duration = Duration::from_secs(120);

/// Builds sharing a target dir run one at a time (the ELF is copied from a fixed path).
static BUILDS: Mutex<()> = Mutex::new(());

/// Generated files, target dirs and ELF copies: under the workspace's target dir, reused
/// across runs so firmware rebuilds are incremental.
fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("awgim-device")
}

/// Checks the tools, writes the model and task files (only if changed) and builds the
/// firmware for `feature` in `target`, returning the ELF's path.
fn build(feature: &str, case: &str, model: &[u8], task: &[u8], target: &str) -> PathBuf {
    if let Err(e) = device::check_prerequisites() {
        panic!("{e}");
    }
    let dir = work_dir().join(case);
    let (model_path, task_path, elf) = (
        dir.join("model.awgim"),
        dir.join("task.bin"),
        dir.join("firmware.elf"),
    );
    write_if_changed(&model_path, model).unwrap();
    write_if_changed(&task_path, task).unwrap();
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = build_firmware(
        feature,
        &model_path,
        &task_path,
        &work_dir().join(target),
        &elf,
    ) {
        panic!("{e}");
    }
    elf
}

fn run(board: Board, elf: &Path) -> QemuRun {
    run_qemu(board, elf, QEMU_LIMIT).unwrap_or_else(|e| panic!("{e}"))
}

/// The logits of the host engine of `workspace`'s sizes (one query at a time, like the
/// firmware).
fn host_logits<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
>(
    model: &[u8],
    task: &TaskFile,
    mut workspace: Box<Workspace<D, d, h, N, K, G, NK, d2, 1>>,
) -> Vec<Vec<f32>> {
    let file = AlignedBuf::from_bytes(model);
    let model = engine::Model::<D, d, h, N, K, G, NK, d2>::load(&file).unwrap();
    let support: Vec<[f32; D]> = to_arrays(&task.support);
    let mut prepared = model
        .prepare(&mut workspace, support.as_slice().try_into().unwrap())
        .unwrap();
    to_arrays::<D>(&task.queries)
        .iter()
        .map(|q| prepared.classify(q).unwrap().logits.to_vec())
        .collect()
}

fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    (1..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// A configuration's inputs and expected logits.
struct Case {
    /// Cargo feature of the configuration.
    feature: &'static str,
    config: ModelConfig,
    model: Vec<u8>,
    task: TaskFile,
    /// Reference logits, one row per query.
    reference: Vec<Vec<f64>>,
}

/// A seeded model and task for `config`, with 2 queries per class.
fn generated(feature: &'static str, config: ModelConfig, seed: u64) -> Case {
    let (model, task) = model_and_task(config, seed, 2).unwrap();
    let reference = Reference::from_file(&model)
        .unwrap()
        .logits(&task.support, &task.queries);
    Case {
        feature,
        config,
        model,
        task,
        reference,
    }
}

/// The committed golden set (edge 5-shot) and its reference logits.
fn golden_case() -> Case {
    let set = GoldenSet::read(&GoldenSet::committed_dir()).unwrap();
    Case {
        feature: "edge5",
        config: golden::CONFIG,
        task: TaskFile::decode(&set.task).unwrap(),
        reference: set.expected_logits().unwrap(),
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
        (report.config.as_str(), report.sizes),
        (case.feature, sizes)
    );
    assert_eq!(report.model_bytes, case.model.len() as u64);
    assert_eq!(report.task_bytes, case.task.encode().unwrap().len() as u64);
    assert_eq!(report.queries.len(), case.task.queries.len());

    let scale = scale(&case.reference);
    let (mut worst_reference, mut worst_host, mut identical, mut class_checked) =
        (0.0f64, 0.0f64, 0, 0);
    for (q, ((result, want), host)) in report
        .queries
        .iter()
        .zip(&case.reference)
        .zip(host)
        .enumerate()
    {
        for (i, ((&got, &want), &host)) in result.logits.iter().zip(want).zip(host).enumerate() {
            let err = (f64::from(got) - want).abs() / scale;
            worst_reference = worst_reference.max(err);
            worst_host = worst_host.max(f64::from((got - host).abs()) / scale);
            identical += usize::from(got.to_bits() == host.to_bits());
            assert!(
                err <= TOL,
                "{} on {} query {q} class {i}: device {got}, reference {want}, host {host}, \
                 scale {scale}",
                case.feature,
                board.machine()
            );
        }
        let mut sorted = want.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > CLASS_GAP * scale {
            class_checked += 1;
            assert_eq!(result.class, argmax(want), "query {q}: device vs reference");
            assert_eq!(result.class, argmax(host), "query {q}: device vs host");
        }
    }
    format!(
        "{} on {} ({}): max |device - reference| / scale {worst_reference:.2e}, \
         max |device - host| / scale {worst_host:.2e} (scale {scale:.2}), {identical}/{} logits \
         bit-identical to the host, classes checked on {class_checked}/{} queries",
        case.feature,
        board.machine(),
        board.core(),
        report.queries.len() * sizes.N,
        report.queries.len()
    )
}

fn instructions(ticks: u64) -> u64 {
    ticks * INSTRUCTIONS_PER_TICK
}

/// One markdown table row of measurements.
fn measurements(feature: &str, board: Board, sizes: &ElfSizes, report: &Report) -> String {
    let classify_stack = report
        .queries
        .iter()
        .map(|q| q.stack_bytes)
        .max()
        .unwrap_or(0);
    let per_query =
        report.queries.iter().map(|q| q.ticks).sum::<u64>() / report.queries.len().max(1) as u64;
    format!(
        "| {feature} | {} ({}) | {} ({} / {}) | {} ({}) | {} ({} / {} / {}) | {} | {} | {} | {} |",
        board.machine(),
        board.core(),
        sizes.flash,
        sizes.code,
        report.model_bytes,
        sizes.static_ram,
        report.workspace_bytes,
        report.stack_high_water_bytes,
        report.load.stack_bytes,
        report.prepare.stack_bytes,
        classify_stack,
        sizes.static_ram + report.stack_high_water_bytes,
        instructions(report.load.ticks),
        instructions(report.prepare.ticks),
        instructions(per_query),
    )
}

/// Builds the firmware for the case, runs it on both boards, checks its logits against the
/// reference and the host engine (`host`), and prints the measurements.
fn check_on_both_boards(case: &Case, host: &[Vec<f32>], workspace_bytes: usize) {
    let elf = build(
        case.feature,
        case.feature,
        &case.model,
        &case.task.encode().unwrap(),
        "target",
    );
    let sizes = ElfSizes::read(&elf).unwrap();
    let mut reports = Vec::new();
    for board in Board::ALL {
        let run = run(board, &elf);
        assert_eq!(
            run.status,
            Some(0),
            "{} on {}: exit status {:?}\nstdout:\n{}\nstderr:\n{}",
            case.feature,
            board.machine(),
            run.status,
            run.stdout,
            run.stderr
        );
        let report = Report::parse(&run.stdout).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.workspace_bytes, workspace_bytes as u64);
        let summary = check_report(case, host, board, &report);
        println!("{summary}; QEMU ran {:.2} s", run.elapsed.as_secs_f64());
        reports.push((board, report));
    }
    // The same binary on both cores: bit-identical logits.
    let bits = |r: &Report| -> Vec<u32> {
        r.queries
            .iter()
            .flat_map(|q| q.logits.iter().map(|l| l.to_bits()))
            .collect()
    };
    assert_eq!(
        bits(&reports[0].1),
        bits(&reports[1].1),
        "the two boards disagree"
    );

    println!(
        "| config | board | flash bytes (code / model) | static RAM bytes (workspace) | \
         stack high-water bytes (load / prepare / classify) | RAM bytes | instructions: load | \
         prepare | classify per query |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (board, report) in &reports {
        println!("{}", measurements(case.feature, *board, &sizes, report));
    }
}

/// A workspace of one query for the host engine of the sizes `$s`.
macro_rules! host_workspace {
    ($s:expr) => {
        Box::new(<engine::awgim_workspace!($s; 1)>::new())
    };
}

#[test]
fn edge_1shot_on_qemu() {
    let case = generated("edge1", ModelConfig::edge(1), 101);
    let host = host_logits(&case.model, &case.task, host_workspace!(engine::EDGE_1SHOT));
    check_on_both_boards(&case, &host, engine::Edge1ShotWorkspace::BYTES);
}

#[test]
fn edge_5shot_golden_on_qemu() {
    let case = golden_case();
    let host = host_logits(&case.model, &case.task, host_workspace!(engine::EDGE_5SHOT));
    check_on_both_boards(&case, &host, engine::Edge5ShotWorkspace::BYTES);
}

#[test]
fn paper_1shot_on_qemu() {
    let case = generated("paper1", ModelConfig::paper(1), 103);
    let host = host_logits(
        &case.model,
        &case.task,
        host_workspace!(engine::PAPER_1SHOT),
    );
    check_on_both_boards(&case, &host, engine::Paper1ShotWorkspace::BYTES);
}

#[test]
fn paper_5shot_on_qemu() {
    let case = generated("paper5", ModelConfig::paper(5), 105);
    let host = host_logits(
        &case.model,
        &case.task,
        host_workspace!(engine::PAPER_5SHOT),
    );
    check_on_both_boards(&case, &host, engine::Paper5ShotWorkspace::BYTES);
}

/// Each failure ends the run with its own exit status and a message naming the problem
/// (edge 5-shot firmware built with bad inputs, on the Cortex-M4F board).
#[test]
fn failures_exit_with_distinct_codes() {
    let golden = GoldenSet::read(&GoldenSet::committed_dir()).unwrap();
    let task = TaskFile::decode(&golden.task).unwrap();
    let (edge1_model, edge1_task) = model_and_task(ModelConfig::edge(1), 7, 1).unwrap();
    let mut nan_support = task.clone();
    nan_support.support[3][7] = f32::NAN;
    let mut inf_query = task.clone();
    inf_query.queries[1][5] = f32::INFINITY;

    let cases: [(&str, &[u8], TaskFile, i32, &str); 4] = [
        (
            "bad-task",
            &golden.model,
            edge1_task,
            2,
            "error: task file: `K` is 1, this firmware is compiled for 5",
        ),
        (
            "bad-model",
            &edge1_model,
            task.clone(),
            3,
            "error: load: model configuration `shots` is 1, this engine is compiled for 5",
        ),
        (
            "nan-support",
            &golden.model,
            nan_support,
            4,
            "error: prepare: support feature [3][7] is not finite",
        ),
        (
            "inf-query",
            &golden.model,
            inf_query,
            5,
            "error: classify query 1: query feature [0][5] is not finite",
        ),
    ];
    for (name, model, task, code, message) in cases {
        let elf = build(
            "edge5",
            name,
            model,
            &task.encode().unwrap(),
            "target-failures",
        );
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
