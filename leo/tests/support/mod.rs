//! Helpers shared by the tests of `leo` and the trainer's data tests (which
//! include this file with `#[path]`, so the expected arrays are read in one
//! place): fixture paths, and the expected arrays of
//! `fixtures/leo_py2/expected.npz`, read with `npyz` directly.
#![allow(dead_code)]

use std::path::PathBuf;

use npyz::npz::NpzArchive;

/// Path of a fixture under `leo/tests/fixtures` (from either crate's tests).
pub fn leo_fixture(rel: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../leo/tests/fixtures"
    ))
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
    let mut npz = NpzArchive::open(leo_fixture("leo_py2/expected.npz")).unwrap();
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

/// Asserts that classes read from `origin` (`counts[c]` rows of `dim`
/// values each, class-major in `data`) hold exactly the expected values, bit
/// for bit, grouped the same way; class names are compared when given.
pub fn assert_rows_match(
    origin: &str,
    names: Option<&[String]>,
    counts: &[usize],
    dim: usize,
    data: &[f32],
    exp: &Expected,
) {
    let [classes, samples, exp_dim] = exp.shape;
    assert_eq!(counts.len(), classes, "{origin}");
    assert_eq!(dim, exp_dim, "{origin}");
    for (c, &count) in counts.iter().enumerate() {
        assert_eq!(count, samples, "{origin}: class {c}");
    }
    let same = data
        .iter()
        .zip(&exp.data)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(
        same && data.len() == exp.data.len(),
        "{origin}: values differ"
    );
    if let Some(names) = names {
        assert_eq!(names, &exp.classes[..], "{origin}");
    }
}
