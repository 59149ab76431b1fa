//! The built-in synthetic data set: determinism, disjoint splits, feature
//! statistics, and the difficulty claim (nearest-class-mean accuracy).

use std::collections::HashSet;

use trainer::data::{
    ncm_accuracy, Dataset, EpisodeSampler, EpisodeSpec, Metric, SplitKind, SyntheticSpec,
};

fn small(seed: u64) -> SyntheticSpec {
    SyntheticSpec {
        seed,
        examples_per_class: 40,
        ..SyntheticSpec::default()
    }
}

#[test]
fn generation_is_deterministic_per_seed() {
    let a = small(7).generate().unwrap();
    let b = small(7).generate().unwrap();
    assert_eq!(a, b);
    let c = small(8).generate().unwrap();
    assert_ne!(
        a.split(SplitKind::Train).data(),
        c.split(SplitKind::Train).data()
    );
}

#[test]
fn splits_have_the_requested_sizes_and_disjoint_classes() {
    let spec = SyntheticSpec {
        dim: 40,
        train_classes: 10,
        val_classes: 4,
        test_classes: 5,
        examples_per_class: 30,
        ..SyntheticSpec::default()
    };
    let dataset = spec.generate().unwrap();
    assert_eq!(dataset.dim(), 40);
    let mut names = HashSet::new();
    for (kind, classes) in SplitKind::ALL.into_iter().zip([10, 4, 5]) {
        let split = dataset.split(kind);
        assert_eq!(split.num_classes(), classes);
        assert_eq!(split.min_class_len(), 30);
        assert_eq!(split.num_examples(), classes * 30);
        for name in split.class_names() {
            assert!(name.starts_with(kind.name()), "{name}");
            assert!(names.insert(name.clone()), "{name} in two splits");
        }
    }
    // No example is shared between splits either.
    let rows = |kind| -> HashSet<Vec<u32>> {
        dataset
            .split(kind)
            .data()
            .chunks_exact(40)
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let (train, val, test) = (
        rows(SplitKind::Train),
        rows(SplitKind::Val),
        rows(SplitKind::Test),
    );
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
}

#[test]
fn features_are_non_negative_and_partly_sparse() {
    let dataset = small(1).generate().unwrap();
    let data = dataset.split(SplitKind::Train).data();
    assert!(data.iter().all(|&v| v >= 0.0 && v.is_finite()));
    let zeros = data.iter().filter(|&&v| v == 0.0).count() as f64 / data.len() as f64;
    assert!((0.2..0.8).contains(&zeros), "fraction of zeros {zeros}");
}

#[test]
fn invalid_specs_are_refused() {
    for spec in [
        SyntheticSpec { dim: 0, ..small(0) },
        SyntheticSpec {
            val_classes: 0,
            ..small(0)
        },
        SyntheticSpec {
            examples_per_class: 0,
            ..small(0)
        },
        SyntheticSpec {
            superclasses: 0,
            ..small(0)
        },
    ] {
        assert!(spec.generate().is_err(), "{spec:?}");
    }
}

/// Mean NCM accuracy over 600 test tasks (5-way, `k_shot`-shot, 15 queries).
fn ncm_mean(dataset: &Dataset, k_shot: usize, metric: Metric) -> f32 {
    let mut sampler = EpisodeSampler::new(
        dataset.split(SplitKind::Test),
        EpisodeSpec::five_way(k_shot),
        99,
    )
    .unwrap();
    let acc = ncm_accuracy(&sampler.sample(600), metric).unwrap();
    acc.iter().sum::<f32>() / acc.len() as f32
}

/// Accuracy of nearest-class-mean with the means of ALL examples of each
/// class (an oracle prototype): a bound a learned model can approach.
fn oracle_mean(dataset: &Dataset) -> f32 {
    let split = dataset.split(SplitKind::Test);
    let dim = split.dim();
    let means: Vec<Vec<f32>> = (0..split.num_classes())
        .map(|c| {
            let rows = split.class_data(c);
            let n = split.class_len(c) as f32;
            (0..dim)
                .map(|j| rows.iter().skip(j).step_by(dim).sum::<f32>() / n)
                .collect()
        })
        .collect();
    let mut sampler = EpisodeSampler::new(split, EpisodeSpec::five_way(1), 99).unwrap();
    let batch = sampler.sample(600);
    let mut correct = 0usize;
    for (t, queries) in batch.query.chunks_exact(5 * 15 * dim).enumerate() {
        let classes = &batch.classes[t * 5..(t + 1) * 5];
        for (q, row) in queries.chunks_exact(dim).enumerate() {
            let dist = |c: usize| -> f32 {
                row.iter()
                    .zip(&means[c])
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum()
            };
            let best = (0..5)
                .min_by(|&a, &b| dist(classes[a]).total_cmp(&dist(classes[b])))
                .unwrap();
            correct += usize::from(best as u32 == batch.query_labels[t * 75 + q]);
        }
    }
    correct as f32 / batch.query_labels.len() as f32
}

#[test]
fn nearest_class_mean_is_above_chance_but_far_from_perfect() {
    for seed in [0, 1] {
        let dataset = SyntheticSpec {
            seed,
            ..SyntheticSpec::default()
        }
        .generate()
        .unwrap();
        let one = ncm_mean(&dataset, 1, Metric::Euclidean);
        let five = ncm_mean(&dataset, 5, Metric::Euclidean);
        let cosine = ncm_mean(&dataset, 1, Metric::Cosine);
        let oracle = oracle_mean(&dataset);
        println!(
            "seed {seed}: NCM 5-way 1-shot {one:.3} (cosine {cosine:.3}), 5-shot {five:.3}, oracle means {oracle:.3}"
        );
        assert!((0.40..0.60).contains(&one), "seed {seed}: 1-shot NCM {one}");
        assert!(
            (0.40..0.65).contains(&cosine),
            "seed {seed}: 1-shot cosine NCM {cosine}"
        );
        assert!(
            five > one + 0.08 && five < 0.85,
            "seed {seed}: 5-shot NCM {five}"
        );
        assert!(
            oracle > one + 0.15,
            "seed {seed}: oracle {oracle} leaves no room over 1-shot NCM {one}"
        );
    }
}
