//! The `{split}_embeddings.pkl` reader: LEO files from every writer and
//! protocol, AWGIM's repacked arrays, and defective files.

mod data_support;

use std::path::Path;

use data_support::{assert_dataset_matches, assert_matches, expected, fixture};
use proptest::prelude::*;
use trainer::data::{
    load_path, read_pickle_split, read_pickle_split_bytes, DataError, PickleError,
};

#[test]
fn python2_fixtures_reproduce_expected() {
    let dataset = load_path(&fixture("leo_py2")).unwrap();
    assert_dataset_matches(&dataset, true);
    assert_eq!(dataset.dim(), 16);
}

#[test]
fn python3_protocol2_numpy2_dataset_matches() {
    let dataset = load_path(&fixture("leo_py3_p2")).unwrap();
    assert_dataset_matches(&dataset, true);
}

#[test]
fn every_writer_and_protocol_reads_the_same_split() {
    let train = expected("train");
    for rel in [
        "leo_py2_p0/train_embeddings.pkl",
        "leo_py2_p1/train_embeddings.pkl",
        "leo_py2_p2/train_embeddings.pkl",
        "leo_py3_p0/train_embeddings.pkl",
        "leo_py3_p1/train_embeddings.pkl",
        "leo_py3_p4/train_embeddings.pkl",
        "leo_py3_p5/train_embeddings.pkl",
        "leo_py3_numpy1_p2/train_embeddings.pkl",
    ] {
        let split =
            read_pickle_split(&fixture(rel), "train").unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_matches(&split, &train, true);
    }
}

#[test]
fn float64_fortran_big_endian_and_string_arrays_read_the_same() {
    let train = expected("train");
    for name in [
        "float64",
        "fortran",
        "fortran_p0",
        "big_endian",
        "big_endian_f64_fortran",
        "keys_unicode_array",
        "keys_bytes_array",
    ] {
        let path = fixture(&format!("leo_variants/{name}.pkl"));
        let split = read_pickle_split(&path, "train").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_matches(&split, &train, true);
    }
}

#[test]
fn awgim_repacked_arrays_read_the_same() {
    // train: Python 2 protocol 2; val: Python 3 protocol 2; test: protocol 0, Fortran order.
    let dataset = load_path(&fixture("awgim_repacked")).unwrap();
    assert_dataset_matches(&dataset, false);
    assert_eq!(
        dataset.split(trainer::data::SplitKind::Val).class_names()[2],
        "val-0002"
    );
}

fn error_of(name: &str) -> DataError {
    let path = fixture(&format!("leo_errors/{name}.pkl"));
    let err = read_pickle_split(&path, "train").expect_err(name);
    let message = err.to_string();
    assert!(
        message.contains(&format!("{name}.pkl")),
        "message does not name the file: {message}"
    );
    err
}

#[test]
fn defective_files_give_named_errors() {
    assert!(matches!(
        error_of("missing_embeddings"),
        DataError::MissingKey {
            key: "embeddings",
            ..
        }
    ));
    assert!(matches!(
        error_of("missing_keys"),
        DataError::MissingKey { key: "keys", .. }
    ));
    assert!(matches!(
        error_of("length_mismatch"),
        DataError::LengthMismatch {
            keys: 119,
            rows: 120,
            ..
        }
    ));
    let err = error_of("bad_key");
    assert!(matches!(err, DataError::BadKey { row: 3, .. }), "{err}");
    assert!(err.to_string().contains("3-3-n"), "{err}");
    assert!(matches!(
        error_of("class_mismatch"),
        DataError::ClassMismatch { row: 5, .. }
    ));
    assert!(matches!(
        error_of("duplicate_image"),
        DataError::DuplicateImage {
            first: 6,
            row: 7,
            ..
        }
    ));
    let err = error_of("int_embeddings");
    assert!(matches!(err, DataError::UnsupportedDtype { .. }), "{err}");
    assert!(err.to_string().contains("<i4"), "{err}");
    assert!(matches!(
        error_of("embeddings_3d"),
        DataError::BadShape { .. }
    ));
    let err = error_of("nan_embedding");
    match &err {
        // Row 41 of the file is example 1 of the third class.
        DataError::NonFinite { class, example, .. } => {
            assert_eq!(class, &expected("train").classes[2]);
            assert_eq!(*example, 1);
        }
        _ => panic!("expected NonFinite, got {err}"),
    }
    assert!(matches!(
        error_of("keys_not_strings"),
        DataError::BadKey { row: 0, .. }
    ));
    assert!(matches!(
        error_of("a_list"),
        DataError::NotEmbeddings { .. }
    ));
    let err = error_of("ordered_dict");
    assert!(err.to_string().contains("collections.OrderedDict"), "{err}");
}

fn bytes_of(rel: &str) -> Vec<u8> {
    std::fs::read(fixture(rel)).unwrap()
}

#[test]
fn every_truncation_is_a_typed_error() {
    for rel in [
        "leo_py2/train_embeddings.pkl",
        "leo_py3_p0/train_embeddings.pkl",
        "leo_py3_p5/train_embeddings.pkl",
    ] {
        let bytes = bytes_of(rel);
        let path = Path::new(rel);
        for len in 0..bytes.len() {
            match read_pickle_split_bytes(&bytes[..len], path, "train") {
                Err(DataError::Pickle {
                    source: PickleError::Truncated { end, offset },
                    ..
                }) => {
                    assert_eq!(end, len, "{rel}");
                    assert!(offset <= len, "{rel}");
                }
                other => panic!(
                    "{rel} cut at {len}: expected Truncated, got {:?}",
                    other.err()
                ),
            }
        }
        let err = read_pickle_split_bytes(&bytes[..100], path, "train").unwrap_err();
        assert!(err.to_string().contains("truncated at byte 100"), "{err}");
    }
}

#[test]
fn corrupted_opcodes_are_reported_with_their_offset() {
    let bytes = bytes_of("leo_py2/train_embeddings.pkl");
    let path = Path::new("train_embeddings.pkl");
    // Byte 2 is EMPTY_DICT, byte 14 the GLOBAL of _reconstruct.
    let mut b = bytes.clone();
    b[2] = 0xff;
    let err = read_pickle_split_bytes(&b, path, "train").unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported opcode 0xff (unknown) at byte 2"),
        "{err}"
    );
    let mut b = bytes.clone();
    b[14] = b'i';
    assert!(matches!(
        read_pickle_split_bytes(&b, path, "train"),
        Err(DataError::Pickle {
            source: PickleError::UnsupportedOpcode {
                name: "INST",
                offset: 14,
                ..
            },
            ..
        })
    ));
    // Renaming the dict key "embeddings" hides the embeddings.
    let at = bytes.windows(10).position(|w| w == b"embeddings").unwrap();
    let mut b = bytes.clone();
    b[at + 9] = b'z';
    assert!(matches!(
        read_pickle_split_bytes(&b, path, "train"),
        Err(DataError::MissingKey {
            key: "embeddings",
            ..
        })
    ));
    // Garbage after STOP is ignored, as Python's pickle.load does.
    let mut b = bytes.clone();
    b.extend_from_slice(b"garbage");
    assert!(read_pickle_split_bytes(&b, path, "train").is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random byte changes never panic: the reader returns a split or an error.
    #[test]
    fn random_corruption_never_panics(changes in prop::collection::vec((0usize..13391, any::<u8>()), 1..8)) {
        let mut bytes = bytes_of("leo_py2/train_embeddings.pkl");
        for (at, value) in changes {
            let n = bytes.len();
            bytes[at % n] = value;
        }
        let _ = read_pickle_split_bytes(&bytes, Path::new("fuzz.pkl"), "train");
    }
}
