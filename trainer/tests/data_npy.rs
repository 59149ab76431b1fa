//! The `.npy` directory and `.npz` readers.

mod data_support;

use data_support::{assert_dataset_matches, assert_matches, expected, fixture, leo_fixture};
use trainer::data::{load_path, read_npy_split, read_npz, DataError, SplitKind};

#[test]
fn npy_directory_reads_mixed_dtypes_and_orders() {
    // train: float32 C order with class names; val: big-endian float64;
    // test: float32 Fortran order.
    let dataset = load_path(&fixture("npy_dir")).unwrap();
    assert_dataset_matches(&dataset, false);
    assert_eq!(
        dataset.split(SplitKind::Train).class_names(),
        &expected("train").classes[..]
    );
    assert_eq!(dataset.split(SplitKind::Test).class_names()[0], "test-0000");
}

#[test]
fn npz_with_class_names_and_compressed_float64() {
    // expected.npz itself follows the npz layout (train/val/test + *_classes).
    let dataset = read_npz(&leo_fixture("leo_py2/expected.npz")).unwrap();
    assert_dataset_matches(&dataset, true);
    let dataset = load_path(&fixture("npz/float64_no_names.npz")).unwrap();
    assert_dataset_matches(&dataset, false);
}

#[test]
fn npz_missing_split_is_named() {
    let err = read_npz(&fixture("npz/missing_test.npz")).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingArray { name, .. } if name == "test"),
        "{err}"
    );
    assert!(err.to_string().contains("missing_test.npz"), "{err}");
}

#[test]
fn splits_of_different_dimensions_are_refused() {
    let err = load_path(&fixture("dim_mismatch")).unwrap_err();
    assert!(
        matches!(&err, DataError::SplitDimMismatch { split, dim: 8, other_dim: 16, .. } if split == "val"),
        "{err}"
    );
    assert!(err.to_string().contains("val.npy"), "{err}");
}

#[test]
fn truncated_extended_and_wrong_npy_files_are_refused() {
    let original = std::fs::read(fixture("npy_dir/train.npy")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.npy");
    // Every cut in the header, then every 61st in the data.
    let cuts = (0..200).chain((200..original.len()).step_by(61));
    for len in cuts {
        std::fs::write(&path, &original[..len]).unwrap();
        let err = read_npy_split(&path, "train").expect_err("truncated file accepted");
        assert!(
            matches!(err, DataError::Malformed { .. }),
            "cut at {len}: {err}"
        );
        assert!(err.to_string().contains("train.npy"), "{err}");
    }
    let mut longer = original.clone();
    longer.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &longer).unwrap();
    let err = read_npy_split(&path, "train").unwrap_err();
    assert!(err.to_string().contains("trailing bytes"), "{err}");
    std::fs::write(&path, &original).unwrap();
    assert_matches(
        &read_npy_split(&path, "train").unwrap(),
        &expected("train"),
        false,
    );

    // int32 data and a 2-D array.
    let write = |shape: &[u64], dtype: &str, bytes: usize| {
        let header = format!(
            "{{'descr': '{dtype}', 'fortran_order': False, 'shape': ({}), }}",
            shape.iter().map(|d| format!("{d},")).collect::<String>()
        );
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{header:<width$}\n", width = 117 - 10);
        file.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        file.extend_from_slice(padded.as_bytes());
        file.extend(std::iter::repeat_n(0u8, bytes));
        std::fs::write(&path, file).unwrap();
    };
    write(&[2, 3, 4], "<i4", 96);
    let err = read_npy_split(&path, "train").unwrap_err();
    assert!(matches!(err, DataError::UnsupportedDtype { .. }), "{err}");
    write(&[6, 4], "<f4", 96);
    let err = read_npy_split(&path, "train").unwrap_err();
    assert!(matches!(err, DataError::BadShape { .. }), "{err}");
    write(&[2, 3, 4], "<f4", 96);
    let split = read_npy_split(&path, "train").unwrap();
    assert_eq!(
        (split.num_classes(), split.class_len(1), split.dim()),
        (2, 3, 4)
    );
}

#[test]
fn corrupt_headers_are_refused_without_huge_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.npy");
    // Version 2 header claiming 4 GiB of header text.
    std::fs::write(&path, b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'descr'").unwrap();
    let err = read_npy_split(&path, "train").unwrap_err();
    assert!(
        err.to_string().contains("header of 4294967295 bytes"),
        "{err}"
    );
    // Dimensions whose product overflows 64 bits (zeros do not hide it).
    let header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 4294967296), }\n";
    let mut file = b"\x93NUMPY\x01\x00".to_vec();
    file.extend_from_slice(&(header.len() as u16).to_le_bytes());
    file.extend_from_slice(header);
    std::fs::write(&path, &file).unwrap();
    let err = read_npy_split(&path, "train").unwrap_err();
    assert!(err.to_string().contains("does not fit in 64 bits"), "{err}");
    // Not an npy file at all.
    std::fs::write(&path, b"PK\x03\x04 not npy").unwrap();
    let err = read_npy_split(&path, "train").unwrap_err();
    assert!(err.to_string().contains("no NUMPY magic"), "{err}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Random byte changes to an .npy file never panic.
    #[test]
    fn random_npy_corruption_never_panics(changes in proptest::collection::vec((0usize..7808, proptest::prelude::any::<u8>()), 1..6)) {
        let mut bytes = std::fs::read(fixture("npy_dir/train.npy")).unwrap();
        for (at, value) in changes {
            let n = bytes.len();
            bytes[at % n] = value;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.npy");
        std::fs::write(&path, &bytes).unwrap();
        let _ = read_npy_split(&path, "train");
    }
}
