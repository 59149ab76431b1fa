//! Helpers shared by the data tests: fixture paths and the expected arrays
//! of `fixtures/leo_py2/expected.npz`, read with `npyz` directly.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use npyz::npz::NpzArchive;
use trainer::data::{Dataset, Split, SplitKind};

/// Path of a committed fixture.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// One split of `expected.npz`.
#[derive(Debug)]
pub struct Expected {
    /// Class names in file order.
    pub classes: Vec<String>,
    /// (classes, samples, dim).
    pub shape: [usize; 3],
    /// Class-major values.
    pub data: Vec<f32>,
}

/// Reads split `name` of `leo_py2/expected.npz`.
pub fn expected(name: &str) -> Expected {
    let mut npz = NpzArchive::open(fixture("leo_py2/expected.npz")).unwrap();
    let array = npz.by_name(name).unwrap().unwrap();
    let shape: Vec<usize> = array.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = array.into_vec().unwrap();
    let classes: Vec<String> = npz
        .by_name(&format!("{name}_classes"))
        .unwrap()
        .unwrap()
        .into_vec()
        .unwrap();
    Expected {
        classes,
        shape: [shape[0], shape[1], shape[2]],
        data,
    }
}

/// Asserts that a split holds exactly the expected values (bit for bit),
/// grouped the same way; class names are compared when `names` is set.
pub fn assert_matches(split: &Split, exp: &Expected, names: bool) {
    let [classes, samples, dim] = exp.shape;
    assert_eq!(split.num_classes(), classes, "{}", split.origin());
    assert_eq!(split.dim(), dim, "{}", split.origin());
    for c in 0..classes {
        assert_eq!(split.class_len(c), samples, "{}: class {c}", split.origin());
    }
    let same = split
        .data()
        .iter()
        .zip(&exp.data)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same && split.data().len() == exp.data.len(),
        "{}: values differ",
        split.origin()
    );
    if names {
        assert_eq!(split.class_names(), &exp.classes[..], "{}", split.origin());
    }
}

/// Asserts that every split of a data set matches `expected.npz`.
pub fn assert_dataset_matches(dataset: &Dataset, names: bool) {
    for kind in SplitKind::ALL {
        assert_matches(dataset.split(kind), &expected(kind.name()), names);
    }
}
