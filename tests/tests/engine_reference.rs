//! The engine against the independent f64 reference, on random weights and random tasks.
//!
//! Agreement bound: per task, `|engine - reference| <= TOL * max(1, max |reference logit|)`
//! for every logit. The engine computes in f32 through about a dozen layers (sums of up to
//! 640 products, softmax, layer norms, the 256 x 640 generator), so each logit carries a
//! relative rounding error of a few f32 ulps (1.2e-7) times a modest growth; the largest
//! error observed over these tests is printed by each test (a few 1e-7 relative), and
//! `TOL = 1e-5` leaves a wide margin while still failing on any real mistake (a missing
//! scale, a swapped gain/bias or head slice changes logits at the 1e-2 level and beyond).
// The engine's size parameters are AWGIM.md's letters, where `D` and `d` are different sizes.
#![allow(non_upper_case_globals)]

use engine::{Prediction, Workspace};
use formats::{AlignedBuf, ModelConfig};
use tests::random::{to_arrays, RandomModel, RandomTask};
use tests::reference::Reference;

const TOL: f64 = 1e-5;

/// Runs `seeds` random models and tasks of `config` through the engine of `workspace`'s sizes
/// and the reference; returns the largest relative error seen.
fn agree<
    const D: usize,
    const d: usize,
    const h: usize,
    const N: usize,
    const K: usize,
    const G: usize,
    const NK: usize,
    const d2: usize,
    const LEN: usize,
    const B: usize,
>(
    config: ModelConfig,
    mut workspace: Box<Workspace<LEN, B>>,
    seeds: &[u64],
    queries_per_class: usize,
) -> f64 {
    let mut worst = 0.0f64;
    for &seed in seeds {
        let file = AlignedBuf::from_bytes(&RandomModel::perturbed(config, seed).build().unwrap());
        let model = engine::Model::<D, d, h, N, K, G, NK, d2>::load(&file).unwrap();
        let reference = Reference::from_file(&file).unwrap();
        let task = RandomTask::new(&config, seed, queries_per_class, 0.5);
        let expected = reference.logits(&task.support, &task.queries);

        let support: Vec<[f32; D]> = to_arrays(&task.support);
        let support: &[[f32; D]; NK] = support.as_slice().try_into().unwrap();
        let queries: Vec<[f32; D]> = to_arrays(&task.queries);
        let mut prepared = model.prepare(&mut workspace, support).unwrap();
        let single: Vec<Prediction<N>> = queries
            .iter()
            .map(|q| prepared.classify(q).unwrap())
            .collect();
        let mut batch = vec![Prediction::zeroed(); queries.len()];
        prepared.classify_batch(&queries, &mut batch).unwrap();
        for (b, want) in batch.iter().zip(&expected) {
            let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (&g, &w) in b.logits.iter().zip(want) {
                assert!(
                    (f64::from(g) - w).abs() <= TOL * scale,
                    "seed {seed} batch: {g} vs {w}"
                );
            }
        }
        // The batch path sums G2mu x in another order: equal up to f32 rounding (both are
        // checked against the reference below; here they agree to the same bound).
        for (s, b) in single.iter().zip(&batch) {
            let top = s.logits.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (x, y) in s.logits.iter().zip(&b.logits) {
                let diff = f64::from((x - y).abs());
                assert!(
                    diff <= TOL * f64::from(top),
                    "seed {seed}: single {s:?} batch {b:?}"
                );
            }
        }

        let scale = expected
            .iter()
            .flatten()
            .fold(1.0f64, |m, v| m.max(v.abs()));
        for (q, (got, want)) in single.iter().zip(&expected).enumerate() {
            for (i, (&g, &w)) in got.logits.iter().zip(want).enumerate() {
                let err = (f64::from(g) - w).abs() / scale;
                worst = worst.max(err);
                assert!(
                    err <= TOL,
                    "seed {seed} query {q} class {i}: engine {g}, reference {w}, scale {scale}"
                );
            }
            // The predicted class agrees wherever the reference's top two are apart.
            let mut sorted = want.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if sorted[0] - sorted[1] > 100.0 * TOL * scale {
                let best = want
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i)
                    .unwrap();
                assert_eq!(got.class, best, "seed {seed} query {q}");
            }
        }

        // W itself, for analysis: agrees with the reference and reproduces the logits.
        let mut weights = Box::new([[0.0f32; D]; N]);
        prepared
            .generated_weights(&queries[0], &mut weights)
            .unwrap();
        let reference_w = &reference.generated_weights(&task.support, &task.queries[..1])[0];
        let w_scale = reference_w.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (i, row) in weights.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let err = (f64::from(w) - reference_w.at(i, j)).abs() / w_scale;
                assert!(
                    err <= TOL,
                    "seed {seed} W[{i}][{j}] {w} vs {}",
                    reference_w.at(i, j)
                );
            }
            let logit: f64 = queries[0]
                .iter()
                .zip(row)
                .map(|(&x, &w)| f64::from(x) * f64::from(w))
                .sum();
            assert!((logit - f64::from(single[0].logits[i])).abs() <= TOL * scale);
        }
    }
    println!("{config:?}: worst relative error {worst:.3e}");
    worst
}

/// A workspace of `$b` queries for the engine of the sizes of `$config`.
macro_rules! workspace {
    ($config:expr, $b:expr) => {
        Box::new(<engine::awgim_workspace!($config.sizes(); $b)>::new())
    };
}

#[test]
fn paper_1shot_matches_reference() {
    let workspace = workspace!(ModelConfig::paper(1), 8);
    agree::<640, 128, 4, 5, 1, 256, 5, 256, _, _>(ModelConfig::paper(1), workspace, &[1, 2, 3], 3);
}

#[test]
fn paper_5shot_matches_reference() {
    let workspace = workspace!(ModelConfig::paper(5), 8);
    agree::<640, 128, 4, 5, 5, 256, 25, 256, _, _>(ModelConfig::paper(5), workspace, &[4, 5, 6], 3);
}

#[test]
fn edge_1shot_matches_reference() {
    let workspace = workspace!(ModelConfig::edge(1), 4);
    agree::<64, 32, 4, 5, 1, 64, 5, 64, _, _>(
        ModelConfig::edge(1),
        workspace,
        &[7, 8, 9, 10, 11],
        5,
    );
}

#[test]
fn edge_5shot_matches_reference() {
    let workspace = workspace!(ModelConfig::edge(5), 4);
    agree::<64, 32, 4, 5, 5, 64, 25, 64, _, _>(
        ModelConfig::edge(5),
        workspace,
        &[12, 13, 14, 15, 16],
        5,
    );
}

/// Odd sizes exercise every remainder path of the kernels (rows not a multiple of the tile,
/// outputs not a multiple of 16, feature lengths not a multiple of 8, 3 heads, batch 3 with
/// a partial last batch).
#[test]
fn odd_sizes_match_reference() {
    const ODD: ModelConfig = ModelConfig::new(37, 18, 3, 3, 2, 21);
    agree::<37, 18, 3, 3, 2, 21, 6, 36, _, _>(ODD, workspace!(ODD, 3), &[17, 18, 19], 4);
}

/// With AWGIM.md's initialisation (gain 1, bias 0) as well as the perturbed one.
#[test]
fn unperturbed_initialisation_matches_reference() {
    let config = ModelConfig::edge(5);
    let file = AlignedBuf::from_bytes(&RandomModel::new(config, 21).build().unwrap());
    let model = engine::Edge5Shot::load(&file).unwrap();
    let reference = Reference::from_file(&file).unwrap();
    let task = RandomTask::new(&config, 21, 4, 0.5);
    let expected = reference.logits(&task.support, &task.queries);
    let support: Vec<[f32; 64]> = to_arrays(&task.support);
    let mut workspace = Box::new(engine::Edge5ShotWorkspace::new());
    let mut prepared = model
        .prepare(&mut workspace, support.as_slice().try_into().unwrap())
        .unwrap();
    for (query, want) in to_arrays::<64>(&task.queries).iter().zip(&expected) {
        let got = prepared.classify(query).unwrap();
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (&g, &w) in got.logits.iter().zip(want) {
            assert!((f64::from(g) - w).abs() <= TOL * scale, "{g} vs {w}");
        }
    }
}
