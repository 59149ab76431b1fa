//! The episode sampler and the nearest-class-mean baseline.

use std::collections::{HashMap, HashSet};

use trainer::data::{
    ncm_accuracy, DataError, Dataset, EpisodeBatch, EpisodeSampler, EpisodeSpec, Metric, Split,
    SplitKind, SyntheticSpec,
};

fn dataset() -> Dataset {
    SyntheticSpec {
        seed: 3,
        dim: 12,
        train_classes: 9,
        val_classes: 6,
        test_classes: 7,
        examples_per_class: 25,
        superclasses: 3,
    }
    .generate()
    .unwrap()
}

fn spec(n_way: usize, k_shot: usize, n_query: usize, shuffle_queries: bool) -> EpisodeSpec {
    EpisodeSpec {
        n_way,
        k_shot,
        n_query,
        shuffle_queries,
    }
}

/// Every row of the batch is the example its class and index name, rows
/// are class-major, classes are distinct per task and examples distinct per
/// class.
fn check_batch(batch: &EpisodeBatch, split: &Split, shuffled: bool) {
    let (b, n, k, q, d) = (
        batch.batch,
        batch.n_way,
        batch.k_shot,
        batch.n_query,
        batch.dim,
    );
    assert_eq!(d, split.dim());
    assert_eq!(batch.support.len(), b * n * k * d);
    assert_eq!(batch.query.len(), b * n * q * d);
    assert_eq!(batch.support_labels.len(), b * n * k);
    assert_eq!(batch.query_labels.len(), b * n * q);
    assert_eq!(batch.classes.len(), b * n);
    batch.check().unwrap();
    for t in 0..b {
        let classes = &batch.classes[t * n..(t + 1) * n];
        assert_eq!(
            classes.iter().collect::<HashSet<_>>().len(),
            n,
            "task {t}: repeated class"
        );
        let mut used: HashMap<u32, HashSet<usize>> = HashMap::new();
        for i in 0..n * k {
            let row = t * n * k + i;
            let label = batch.support_labels[row];
            assert_eq!(label as usize, i / k, "support is class-major");
            let example = batch.support_examples[row];
            assert!(
                used.entry(label).or_default().insert(example),
                "repeated example"
            );
            let want = split.example(classes[label as usize], example).unwrap();
            assert_eq!(&batch.support[row * d..(row + 1) * d], want);
        }
        for i in 0..n * q {
            let row = t * n * q + i;
            let label = batch.query_labels[row];
            if !shuffled {
                assert_eq!(label as usize, i / q, "query is class-major");
            }
            let example = batch.query_examples[row];
            assert!(
                used.entry(label).or_default().insert(example),
                "repeated example"
            );
            let want = split.example(classes[label as usize], example).unwrap();
            assert_eq!(&batch.query[row * d..(row + 1) * d], want);
        }
        for label in 0..n as u32 {
            assert_eq!(used[&label].len(), k + q);
        }
    }
}

#[test]
fn batches_have_the_documented_layout() {
    let dataset = dataset();
    for kind in SplitKind::ALL {
        let split = dataset.split(kind);
        for (k, q) in [(1, 15), (5, 15), (3, 0)] {
            let mut sampler = EpisodeSampler::new(split, spec(5, k, q, false), 11).unwrap();
            check_batch(&sampler.sample(8), split, false);
        }
    }
}

#[test]
fn classes_never_cross_splits() {
    let dataset = dataset();
    let rows_of = |kind: SplitKind| -> HashSet<Vec<u32>> {
        dataset
            .split(kind)
            .data()
            .chunks_exact(dataset.dim())
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    for kind in SplitKind::ALL {
        let own = rows_of(kind);
        let others: HashSet<Vec<u32>> = SplitKind::ALL
            .into_iter()
            .filter(|&o| o != kind)
            .flat_map(rows_of)
            .collect();
        let mut sampler = EpisodeSampler::new(dataset.split(kind), spec(5, 2, 4, true), 5).unwrap();
        let batch = sampler.sample(32);
        for row in batch
            .support
            .chunks_exact(dataset.dim())
            .chain(batch.query.chunks_exact(dataset.dim()))
        {
            let bits: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
            assert!(own.contains(&bits), "{kind}: row not from its split");
            assert!(!others.contains(&bits), "{kind}: row from another split");
        }
    }
}

#[test]
fn sampling_is_reproducible_per_seed() {
    let dataset = dataset();
    let split = dataset.split(SplitKind::Train);
    let draw = |seed| {
        EpisodeSampler::new(split, spec(5, 1, 15, true), seed)
            .unwrap()
            .sample(4)
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    // sample_into reuses buffers and continues the same stream.
    let mut a = EpisodeSampler::new(split, spec(5, 1, 15, false), 9).unwrap();
    let mut b = a.clone();
    let mut reused = a.sample(3);
    let first = b.sample(3);
    assert_eq!(reused, first);
    a.sample_into(2, &mut reused);
    assert_eq!(reused, b.sample(2));
}

#[test]
fn shuffled_queries_keep_labels_with_rows() {
    let dataset = dataset();
    let split = dataset.split(SplitKind::Val);
    let mut sampler = EpisodeSampler::new(split, spec(5, 1, 6, true), 4).unwrap();
    let batch = sampler.sample(16);
    check_batch(&batch, split, true);
    let mut any_reordered = false;
    for labels in batch.query_labels.chunks_exact(30) {
        let mut counts = [0; 5];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [6; 5]);
        any_reordered |= labels.windows(2).any(|w| w[0] > w[1]);
    }
    assert!(any_reordered, "queries were not shuffled");
}

#[test]
fn impossible_episodes_are_refused() {
    let dataset = dataset();
    let split = dataset.split(SplitKind::Val);
    let err = EpisodeSampler::new(split, spec(7, 1, 1, false), 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooFewClasses {
                classes: 6,
                n_way: 7,
                ..
            }
        ),
        "{err}"
    );
    let err = EpisodeSampler::new(split, spec(5, 10, 16, false), 0).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooFewExamples {
                have: 25,
                need: 26,
                ..
            }
        ),
        "{err}"
    );
    assert!(EpisodeSampler::new(split, spec(5, 0, 1, false), 0).is_err());
    assert!(EpisodeSampler::new(split, spec(5, 5, 20, false), 0).is_ok());
}

fn hand_batch(support: Vec<f32>, query: Vec<f32>, query_labels: Vec<u32>) -> EpisodeBatch {
    EpisodeBatch {
        batch: 1,
        n_way: 2,
        k_shot: 2,
        n_query: 2,
        dim: 2,
        support,
        support_labels: vec![0, 0, 1, 1],
        query,
        query_labels,
        ..EpisodeBatch::default()
    }
}

#[test]
fn nearest_class_mean_on_known_geometry() {
    // Class 0 support around (1, 0), class 1 around (0, 3); means (1, 0) and (0, 3).
    let support = vec![1.0, -1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 4.0];
    // Queries: (2, 0) -> 0, (0, 2) -> 1, (0.9, 1.4) -> Euclidean 0 (dist² 1.97 vs 3.37),
    // cosine 1 (angle to (0, 3) is smaller).
    let query = vec![2.0, 0.0, 0.0, 2.0, 0.9, 1.4, 0.9, 1.4];
    let batch = hand_batch(support, query.clone(), vec![0, 1, 0, 1]);
    assert_eq!(ncm_accuracy(&batch, Metric::Euclidean).unwrap(), vec![0.75]);
    assert_eq!(ncm_accuracy(&batch, Metric::Cosine).unwrap(), vec![0.75]);
    let batch = hand_batch(batch.support.clone(), query, vec![0, 1, 0, 0]);
    assert_eq!(ncm_accuracy(&batch, Metric::Euclidean).unwrap(), vec![1.0]);
    assert_eq!(ncm_accuracy(&batch, Metric::Cosine).unwrap(), vec![0.5]);
    // Inconsistent batches are refused rather than read out of bounds.
    let mut bad = batch.clone();
    bad.query.pop();
    assert!(ncm_accuracy(&bad, Metric::Euclidean).is_err());
    let mut bad = batch;
    bad.support_labels[0] = 2;
    assert!(ncm_accuracy(&bad, Metric::Euclidean).is_err());
}

#[test]
fn one_hot_labels() {
    assert_eq!(
        EpisodeBatch::one_hot(&[1, 0, 2], 3),
        vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    );
}
