//! The golden vectors of `tests/golden/` (see its README): the regeneration command writes the
//! committed bytes again, the files are consistent, and the host engine reproduces the
//! reference logits within the engine's bound (`1e-5 * max(1, max |logit|)`, as in
//! `engine_reference.rs`). `device_qemu.rs` runs the same files on the emulated boards.

use std::process::Command;

use formats::{AlignedBuf, FileKind};
use tests::golden::{self, GoldenSet};
use tests::random::to_arrays;
use tests::task_file::TaskFile;

const TOL: f64 = 1e-5;

fn committed() -> GoldenSet {
    GoldenSet::read(&GoldenSet::committed_dir()).unwrap()
}

#[test]
fn make_golden_reproduces_the_committed_files() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-regenerated");
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_make-golden"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = GoldenSet::read(&dir).unwrap();
    for ((name, want), (_, got)) in committed().files().into_iter().zip(fresh.files()) {
        assert!(
            want == got,
            "tests/golden/{name} differs from what `cargo run -p tests --release --bin \
             make-golden` writes now; if the change is intended, run it and commit the files"
        );
    }
}

#[test]
fn golden_files_are_consistent() {
    let set = committed();
    let model = formats::parse(&set.model).unwrap();
    assert_eq!(model.kind(), FileKind::Inference);
    assert_eq!(model.config(), golden::CONFIG);
    let task = TaskFile::decode(&set.task).unwrap();
    let c = golden::CONFIG;
    assert_eq!(
        (task.feature_dim, task.ways, task.shots),
        (c.feature_dim, c.ways, c.shots)
    );
    assert_eq!(task.queries.len(), golden::QUERIES_PER_CLASS * c.sizes().N);
    let logits = set.expected_logits().unwrap();
    assert_eq!(logits.len(), task.queries.len());
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn engine_matches_golden_logits() {
    let set = committed();
    let file = AlignedBuf::from_bytes(&set.model);
    let model = engine::Edge5Shot::load(&file).unwrap();
    let task = TaskFile::decode(&set.task).unwrap();
    let expected = set.expected_logits().unwrap();
    let support: Vec<[f32; 64]> = to_arrays(&task.support);
    let queries: Vec<[f32; 64]> = to_arrays(&task.queries);
    let mut workspace = Box::new(engine::Edge5ShotWorkspace::new());
    let mut prepared = model
        .prepare(&mut workspace, support.as_slice().try_into().unwrap())
        .unwrap();
    let mut batch = vec![engine::Prediction::zeroed(); queries.len()];
    prepared.classify_batch(&queries, &mut batch).unwrap();

    let scale = expected
        .iter()
        .flatten()
        .fold(1.0f64, |m, v| m.max(v.abs()));
    let mut worst = 0.0f64;
    for (q, (query, want)) in queries.iter().zip(&expected).enumerate() {
        let single = prepared.classify(query).unwrap();
        for got in [single, batch[q]] {
            for (&g, &w) in got.logits.iter().zip(want) {
                let err = (f64::from(g) - w).abs() / scale;
                worst = worst.max(err);
                assert!(err <= TOL, "query {q}: engine {g}, golden {w}");
            }
            let mut sorted = want.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > 100.0 * TOL * scale {
                let best = (0..want.len()).fold(0, |b, i| if want[i] > want[b] { i } else { b });
                assert_eq!(got.class, best, "query {q}");
            }
        }
    }
    println!("golden: worst |engine - reference| / scale {worst:.2e} (scale {scale:.2})");
}
