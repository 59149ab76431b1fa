//! Helpers shared by the data tests: fixture paths, and the expected arrays
//! of `leo/tests/fixtures/leo_py2/expected.npz` (read by the `leo` crate's
//! test helpers, included here).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use trainer::data::{Dataset, Split, SplitKind};

#[path = "../../../leo/tests/support/mod.rs"]
mod leo_support;
pub use leo_support::{expected, leo_fixture, Expected};

/// Path of a fixture of the trainer's own (`.npy` and `.npz` layouts).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Asserts that a split holds exactly the expected values (bit for bit),
/// grouped the same way; class names are compared when `names` is set.
pub fn assert_matches(split: &Split, exp: &Expected, names: bool) {
    let counts: Vec<usize> = (0..split.num_classes())
        .map(|c| split.class_len(c))
        .collect();
    leo_support::assert_rows_match(
        split.origin(),
        names.then(|| split.class_names()),
        &counts,
        split.dim(),
        split.data(),
        exp,
    );
}

/// Asserts that every split of a data set matches `expected.npz`.
pub fn assert_dataset_matches(dataset: &Dataset, names: bool) {
    for kind in SplitKind::ALL {
        assert_matches(dataset.split(kind), &expected(kind.name()), names);
    }
}
