//! The paired evaluation and the data the paper's final protocol trains on.

use trainer::data::{Split, SplitKind, SyntheticSpec};
use trainer::evaluate::{Baseline, Evaluation};

/// The paired difference is taken task by task: a model exactly one point above a baseline
/// on every task has a difference of one point and an interval of zero, whatever the
/// spread of the tasks' accuracies.
#[test]
fn paired_difference_is_per_task() {
    let baseline: Vec<f32> = (0..50).map(|i| 0.3 + 0.01 * i as f32).collect();
    let model: Vec<f32> = baseline.iter().map(|b| b + 0.01).collect();
    let low = baseline.iter().map(|b| b - 0.2).collect();
    let evaluation = Evaluation {
        model,
        baselines: [low, baseline.clone(), baseline],
    };
    assert_eq!(evaluation.best_baseline(), Baseline::Cosine);
    let diff = evaluation.paired_difference(Baseline::Cosine);
    assert!((diff.mean - 0.01).abs() < 1e-6, "{diff:?}");
    assert!(diff.ci95 < 1e-6, "{diff:?}");
    // Unpaired, the intervals of the two accuracies overlap widely.
    assert!(evaluation.accuracy().ci95 > 0.03);
    let report = evaluation.report();
    assert!(
        report.contains("paired difference AWGIM - NCM cosine"),
        "{report}"
    );
    assert!(report.contains("+1.00 points"), "{report}");
}

#[test]
fn train_and_val_hold_both_splits_classes_and_their_mean() {
    let dataset = SyntheticSpec {
        dim: 6,
        train_classes: 4,
        val_classes: 3,
        test_classes: 2,
        examples_per_class: 5,
        ..SyntheticSpec::default()
    }
    .generate()
    .unwrap();
    let (train, val) = (
        dataset.split(SplitKind::Train),
        dataset.split(SplitKind::Val),
    );
    let both: Split = dataset.train_and_val().unwrap();
    assert_eq!(both.num_classes(), 7);
    assert_eq!(both.class_data(5), val.class_data(1));
    assert_eq!(both.class_data(2), train.class_data(2));
    let mean = both.mean();
    for (j, m) in mean.iter().enumerate() {
        let direct: f64 = both
            .data()
            .iter()
            .skip(j)
            .step_by(6)
            .map(|&x| x as f64)
            .sum();
        assert!((direct / 35.0 - *m as f64).abs() < 1e-6);
    }
}
