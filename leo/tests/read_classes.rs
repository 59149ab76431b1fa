//! The `{split}_embeddings.pkl` reader: LEO files from every writer and
//! protocol, AWGIM's repacked arrays, and defective files.

mod support;

use leo::{read_classes, Classes, LeoError, PickleError};
use proptest::prelude::*;
use support::{assert_rows_match, expected, leo_fixture, Expected};

const SPLITS: [&str; 3] = ["train", "val", "test"];

fn bytes_of(rel: &str) -> Vec<u8> {
    std::fs::read(leo_fixture(rel)).unwrap()
}

/// Reads a fixture, panicking with its name on error.
fn classes_of(rel: &str) -> Classes {
    read_classes(&bytes_of(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Asserts that a fixture holds the expected classes; names are compared
/// when `names` is set (AWGIM arrays have none).
fn assert_matches(rel: &str, exp: &Expected, names: bool) {
    let classes = classes_of(rel);
    let names = names.then(|| classes.names.as_deref().expect("class names"));
    assert_rows_match(rel, names, &classes.counts, classes.dim, &classes.data, exp);
}

#[test]
fn python2_fixtures_reproduce_expected() {
    for split in SPLITS {
        let rel = format!("leo_py2/{split}_embeddings.pkl");
        assert_matches(&rel, &expected(split), true);
        assert_eq!(classes_of(&rel).dim, 16);
    }
}

#[test]
fn python3_protocol2_numpy2_files_match() {
    for split in SPLITS {
        assert_matches(
            &format!("leo_py3_p2/{split}_embeddings.pkl"),
            &expected(split),
            true,
        );
    }
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
        assert_matches(rel, &train, true);
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
        assert_matches(&format!("leo_variants/{name}.pkl"), &train, true);
    }
}

#[test]
fn awgim_repacked_arrays_read_the_same() {
    // train: Python 2 protocol 2; val: Python 3 protocol 2; test: protocol 0, Fortran order.
    for split in SPLITS {
        let rel = format!("awgim_repacked/{split}_embeddings.pkl");
        assert_matches(&rel, &expected(split), false);
        assert_eq!(classes_of(&rel).names, None);
    }
}

fn error_of(name: &str) -> LeoError {
    read_classes(&bytes_of(&format!("leo_errors/{name}.pkl"))).expect_err(name)
}

#[test]
fn defective_files_give_named_errors() {
    assert!(matches!(
        error_of("missing_embeddings"),
        LeoError::MissingKey {
            key: "embeddings",
            ..
        }
    ));
    assert!(matches!(
        error_of("missing_keys"),
        LeoError::MissingKey { key: "keys", .. }
    ));
    assert!(matches!(
        error_of("length_mismatch"),
        LeoError::LengthMismatch {
            keys: 119,
            rows: 120,
            ..
        }
    ));
    let err = error_of("bad_key");
    assert!(matches!(err, LeoError::BadKey { row: 3, .. }), "{err}");
    assert!(err.to_string().contains("3-3-n"), "{err}");
    assert!(matches!(
        error_of("class_mismatch"),
        LeoError::ClassMismatch { row: 5, .. }
    ));
    assert!(matches!(
        error_of("duplicate_image"),
        LeoError::DuplicateImage {
            first: 6,
            row: 7,
            ..
        }
    ));
    let err = error_of("int_embeddings");
    assert!(matches!(err, LeoError::UnsupportedDtype { .. }), "{err}");
    assert!(err.to_string().contains("<i4"), "{err}");
    assert!(matches!(
        error_of("embeddings_3d"),
        LeoError::BadShape { .. }
    ));
    assert!(matches!(
        error_of("keys_not_strings"),
        LeoError::BadKey { row: 0, .. }
    ));
    assert!(matches!(error_of("a_list"), LeoError::NotEmbeddings { .. }));
    let err = error_of("ordered_dict");
    assert!(err.to_string().contains("collections.OrderedDict"), "{err}");
}

#[test]
fn values_are_not_checked() {
    // Row 41 of the file, feature 3, is NaN: example 1 of the third class
    // (the trainer refuses it when it builds the split).
    let classes = classes_of("leo_errors/nan_embedding.pkl");
    let row = classes.counts[..2].iter().sum::<usize>() + 1;
    assert!(classes.data[row * classes.dim + 3].is_nan());
    assert_eq!(classes.data.iter().filter(|v| v.is_nan()).count(), 1);
}

#[test]
fn every_truncation_is_a_typed_error() {
    for rel in [
        "leo_py2/train_embeddings.pkl",
        "leo_py3_p0/train_embeddings.pkl",
        "leo_py3_p5/train_embeddings.pkl",
    ] {
        let bytes = bytes_of(rel);
        for len in 0..bytes.len() {
            match read_classes(&bytes[..len]) {
                Err(LeoError::Pickle(PickleError::Truncated { end, offset })) => {
                    assert_eq!(end, len, "{rel}");
                    assert!(offset <= len, "{rel}");
                }
                other => panic!(
                    "{rel} cut at {len}: expected Truncated, got {:?}",
                    other.err()
                ),
            }
        }
        let err = read_classes(&bytes[..100]).unwrap_err();
        assert!(err.to_string().contains("truncated at byte 100"), "{err}");
    }
}

#[test]
fn corrupted_opcodes_are_reported_with_their_offset() {
    let bytes = bytes_of("leo_py2/train_embeddings.pkl");
    // Byte 2 is EMPTY_DICT, byte 14 the GLOBAL of _reconstruct.
    let mut b = bytes.clone();
    b[2] = 0xff;
    let err = read_classes(&b).unwrap_err();
    assert!(
        err.to_string()
            .contains("unsupported opcode 0xff (unknown) at byte 2"),
        "{err}"
    );
    let mut b = bytes.clone();
    b[14] = b'i';
    assert!(matches!(
        read_classes(&b),
        Err(LeoError::Pickle(PickleError::UnsupportedOpcode {
            name: "INST",
            offset: 14,
            ..
        }))
    ));
    // Renaming the dict key "embeddings" hides the embeddings.
    let at = bytes.windows(10).position(|w| w == b"embeddings").unwrap();
    let mut b = bytes.clone();
    b[at + 9] = b'z';
    assert!(matches!(
        read_classes(&b),
        Err(LeoError::MissingKey {
            key: "embeddings",
            ..
        })
    ));
    // Garbage after STOP is ignored, as Python's pickle.load does.
    let mut b = bytes.clone();
    b.extend_from_slice(b"garbage");
    assert!(read_classes(&b).is_ok());
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
        let _ = read_classes(&bytes);
    }
}
