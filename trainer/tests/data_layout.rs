//! Layout detection, the loader entry point (pickle directories read
//! through the `leo` crate end to end), and the checks that refuse a data
//! set before training starts.

mod data_support;

use data_support::{assert_dataset_matches, expected, fixture, leo_fixture};
use leo::LeoError;
use trainer::data::{
    detect_layout, load_path, read_pickle_split, DataError, DataSource, Dataset, Layout, Split,
    SplitKind,
};

#[test]
fn layouts_are_detected() {
    assert_eq!(
        detect_layout(&leo_fixture("leo_py2")).unwrap(),
        Layout::Pickles
    );
    assert_eq!(
        detect_layout(&leo_fixture("awgim_repacked")).unwrap(),
        Layout::Pickles
    );
    assert_eq!(detect_layout(&fixture("npy_dir")).unwrap(), Layout::NpyDir);
    assert_eq!(
        detect_layout(&leo_fixture("leo_py2/expected.npz")).unwrap(),
        Layout::Npz
    );
    assert!(matches!(
        detect_layout(&fixture("no_such_dir")),
        Err(DataError::NotFound { .. })
    ));
    let err = detect_layout(&leo_fixture("leo_py2/train_embeddings.pkl")).unwrap_err();
    assert!(matches!(err, DataError::UnknownLayout { .. }), "{err}");
    assert!(err.to_string().contains("give the directory"), "{err}");
}

#[test]
fn unknown_directory_points_at_leo_subdirectories() {
    let root = tempfile::tempdir().unwrap();
    let err = detect_layout(root.path()).unwrap_err();
    assert!(
        err.to_string().contains("{train,val,test}_embeddings.pkl"),
        "{err}"
    );
    // LEO's download: {root}/miniImageNet/center/*.pkl
    let center = root.path().join("miniImageNet").join("center");
    std::fs::create_dir_all(&center).unwrap();
    for split in ["train", "val", "test"] {
        let name = format!("{split}_embeddings.pkl");
        std::fs::copy(leo_fixture(&format!("leo_py2/{name}")), center.join(&name)).unwrap();
    }
    let err = detect_layout(root.path()).unwrap_err();
    assert!(err.to_string().contains("miniImageNet/center"), "{err}");
    let dataset = DataSource::Path(center.clone()).load().unwrap();
    assert_eq!(dataset.name(), center.display().to_string());
    // A missing split file is named.
    std::fs::remove_file(center.join("val_embeddings.pkl")).unwrap();
    let err = load_path(&center).unwrap_err();
    assert!(
        matches!(&err, DataError::NotFound { path } if path.ends_with("val_embeddings.pkl")),
        "{err}"
    );
}

#[test]
fn episode_requirements_are_checked_before_training() {
    // train: 6 classes, val and test: 5 classes; 20 examples each; D = 16.
    let dataset = load_path(&leo_fixture("leo_py2")).unwrap();
    dataset.check_episodes(5, 1, 15).unwrap();
    dataset.check_episodes(5, 5, 15).unwrap();
    let err = dataset.check_episodes(5, 5, 16).unwrap_err();
    assert!(
        matches!(&err, DataError::TooFewExamples { split, have: 20, need: 21, .. } if split == "train"),
        "{err}"
    );
    assert!(err.to_string().contains("train_embeddings.pkl"), "{err}");
    let err = dataset.check_episodes(6, 1, 1).unwrap_err();
    assert!(
        matches!(&err, DataError::TooFewClasses { split, classes: 5, .. } if split == "val"),
        "{err}"
    );
    assert!(matches!(
        dataset.check_episodes(0, 1, 1),
        Err(DataError::InvalidSettings(_))
    ));
    dataset.require_dim(16).unwrap();
    let err = dataset.require_dim(640).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::WrongDim {
                dim: 16,
                required: 640,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn python2_fixtures_reproduce_expected() {
    let dataset = load_path(&leo_fixture("leo_py2")).unwrap();
    assert_dataset_matches(&dataset, true);
    assert_eq!(dataset.dim(), 16);
}

#[test]
fn python3_protocol2_numpy2_dataset_matches() {
    let dataset = load_path(&leo_fixture("leo_py3_p2")).unwrap();
    assert_dataset_matches(&dataset, true);
}

#[test]
fn awgim_repacked_classes_are_numbered() {
    // train: Python 2 protocol 2; val: Python 3 protocol 2; test: protocol 0, Fortran order.
    let dataset = load_path(&leo_fixture("awgim_repacked")).unwrap();
    assert_dataset_matches(&dataset, false);
    assert_eq!(dataset.split(SplitKind::Val).class_names()[2], "val-0002");
}

#[test]
fn defective_pickles_name_the_file_and_keep_the_leo_error() {
    for name in [
        "a_list",
        "bad_key",
        "class_mismatch",
        "duplicate_image",
        "embeddings_3d",
        "int_embeddings",
        "keys_not_strings",
        "length_mismatch",
        "missing_embeddings",
        "missing_keys",
        "ordered_dict",
    ] {
        let path = leo_fixture(&format!("leo_errors/{name}.pkl"));
        let err = read_pickle_split(&path, "train").expect_err(name);
        let message = err.to_string();
        let DataError::Leo { path: at, source } = &err else {
            panic!("{name}: expected DataError::Leo, got {err}");
        };
        assert_eq!(at, &path);
        assert_eq!(message, format!("{}: {source}", path.display()));
        assert!(
            std::error::Error::source(&err).is_some(),
            "{name}: no source"
        );
    }
    let err = read_pickle_split(&leo_fixture("leo_errors/bad_key.pkl"), "train").unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::Leo {
                source: LeoError::BadKey { row: 3, .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("bad_key.pkl: bad key format at row 3"),
        "{err}"
    );
    assert!(err.to_string().contains("3-3-n"), "{err}");
}

#[test]
fn non_finite_values_of_a_pickle_are_refused() {
    let err = read_pickle_split(&leo_fixture("leo_errors/nan_embedding.pkl"), "train").unwrap_err();
    match &err {
        // Row 41 of the file is example 1 of the third class.
        DataError::NonFinite { class, example, .. } => {
            assert_eq!(class, &expected("train").classes[2]);
            assert_eq!(*example, 1);
        }
        _ => panic!("expected NonFinite, got {err}"),
    }
    assert!(err.to_string().contains("nan_embedding.pkl"), "{err}");
}

fn tiny_split(name: &str, classes: &[&str], dim: usize) -> Split {
    let counts = vec![2; classes.len()];
    let data = (0..classes.len() * 2 * dim).map(|i| i as f32).collect();
    Split::new(
        name,
        "test",
        classes.iter().map(|c| c.to_string()).collect(),
        dim,
        &counts,
        data,
    )
    .unwrap()
}

#[test]
fn datasets_refuse_shared_classes_and_mixed_dimensions() {
    let train = tiny_split("train", &["a", "b"], 3);
    let val = tiny_split("val", &["c"], 3);
    let test = tiny_split("test", &["b"], 3);
    let err = Dataset::new("d", train.clone(), val.clone(), test).unwrap_err();
    assert!(
        matches!(&err, DataError::SharedClass { class, .. } if class == "b"),
        "{err}"
    );
    let err = Dataset::new(
        "d",
        train.clone(),
        tiny_split("val", &["c"], 4),
        tiny_split("test", &["d"], 3),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DataError::SplitDimMismatch {
                dim: 4,
                other_dim: 3,
                ..
            }
        ),
        "{err}"
    );
    let dataset = Dataset::new("d", train, val, tiny_split("test", &["d"], 3)).unwrap();
    assert_eq!(dataset.split(SplitKind::Test).class_names(), ["d"]);
}

#[test]
fn splits_validate_their_contents() {
    let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
    let err = Split::new("train", "t", names(2), 2, &[1, 1], vec![0.0; 3]).unwrap_err();
    assert!(err.to_string().contains("3 values for 2 examples"), "{err}");
    let err = Split::new("train", "t", names(2), 2, &[1, 0], vec![0.0; 2]).unwrap_err();
    assert!(err.to_string().contains("has no examples"), "{err}");
    let err = Split::new(
        "train",
        "t",
        vec!["x".into(), "x".into()],
        1,
        &[1, 1],
        vec![0.0; 2],
    )
    .unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    let err = Split::new("train", "t", names(1), 0, &[1], vec![]).unwrap_err();
    assert!(err.to_string().contains("dimension is 0"), "{err}");
    let err = Split::new(
        "train",
        "t",
        names(2),
        1,
        &[1, 2],
        vec![0.0, 1.0, f32::INFINITY],
    )
    .unwrap_err();
    assert!(
        matches!(&err, DataError::NonFinite { class, example: 1, .. } if class == "c1"),
        "{err}"
    );
    let split = Split::new(
        "train",
        "t",
        names(2),
        2,
        &[1, 2],
        (0..6).map(|i| i as f32).collect(),
    )
    .unwrap();
    assert_eq!(split.example(1, 1), Some(&[4.0, 5.0][..]));
    assert_eq!(split.example(1, 2), None);
    assert_eq!(split.example(2, 0), None);
    assert_eq!((split.num_examples(), split.min_class_len()), (3, 1));
}

#[test]
fn default_source_is_synthetic() {
    assert!(matches!(DataSource::default(), DataSource::Synthetic(_)));
}
