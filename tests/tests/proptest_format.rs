//! Property tests of the model file reader, through the fuzz harnesses of `tests::fuzzing`
//! (which panic when `formats::parse` breaks a promise, and check every accessor and a
//! rewrite of each accepted file):
//!
//! - any byte string is accepted as a valid model or rejected with a typed error, never a
//!   panic: arbitrary bytes, and valid files mutated (bytes set, bits flipped, ranges inserted,
//!   removed or copied, the file cut) with and without a recomputed CRC; without it, any
//!   change is rejected;
//! - every single-bit flip of a valid file is detected, with the error its position implies:
//!   exhaustively over every bit of three small files (f32 inference and training, int8),
//!   and by sampling over edge files;
//! - every single-bit flip of the int8 (version-4, row-pair) seed with its CRC recomputed is
//!   a valid file (every int8 promise kept, the harness's checks) or a typed error, and the
//!   flips reach the int8 content checks (a value holding no int8 pair, nonzero padding, a bad
//!   scale);
//! - the int8 seed mutated, with and without a recomputed CRC, the same way.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use formats::{parse, FileKind, FormatError, ModelConfig, PAIR_VERSION, PAPER_VERSION, VERSION};
use proptest::prelude::*;
use proptest::sample::Index;
use tests::fuzzing::{parse_bytes, parse_with_fixed_crc, parser_seeds};
use tests::random::RandomModel;

/// One change to a file.
#[derive(Clone, Debug)]
enum Mutation {
    Set(Index, u8),
    FlipBit(Index, u8),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
    /// Copies `len` bytes from the first position over the second.
    Copy(Index, Index, usize),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1usize..128)
            .prop_map(|(a, b, n)| Mutation::Copy(a, b, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(file: &mut Vec<u8>, mutation: &Mutation) {
    if file.is_empty() {
        return;
    }
    let len = file.len();
    match mutation {
        Mutation::Set(i, v) => file[i.index(len)] = *v,
        Mutation::FlipBit(i, b) => file[i.index(len)] ^= 1 << b,
        Mutation::Insert(i, bytes) => {
            let at = i.index(len + 1);
            file.splice(at..at, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = i.index(len);
            file.drain(at..(at + n).min(len));
        }
        Mutation::Copy(from, to, n) => {
            let (from, to) = (from.index(len), to.index(len));
            let n = (*n).min(len - from).min(len - to);
            file.copy_within(from..from + n, to);
        }
        Mutation::Truncate(i) => file.truncate(i.index(len)),
    }
}

/// The small valid files of the fuzz seeds (every kind and variant).
fn small_files() -> &'static [(&'static str, Vec<u8>)] {
    static FILES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(parser_seeds)
}

/// The int8 (version-4) seed file.
fn int8_seed() -> &'static Vec<u8> {
    let (_, file) = small_files()
        .iter()
        .find(|(name, _)| *name == "tiny-int8")
        .unwrap();
    file
}

#[test]
fn every_single_bit_flip_of_an_int8_file_is_detected() {
    let file = int8_seed();
    assert_eq!(u16::from_le_bytes([file[8], file[9]]), PAIR_VERSION);
    assert_eq!(parse_bytes(file), "accepted");
    for position in 0..file.len() {
        for bit in 0..8 {
            check_flip(file, position, bit);
        }
    }
}

/// Past the checksum: every single-bit flip of the int8 seed, its CRC recomputed, through the
/// harness (which panics on a broken promise of an accepted file: weights in `[-127, 127]`,
/// pairs that repack to the stored values, finite dequantised values). Flips of the int8
/// values and scales must reach each int8 content check, and some must stay valid files.
#[test]
fn every_single_bit_flip_of_an_int8_file_past_the_crc_is_valid_or_typed() {
    let file = int8_seed();
    let mut paths = BTreeMap::<String, usize>::new();
    // The trailer is recomputed: flips there change nothing.
    for position in 0..file.len() - 4 {
        for bit in 0..8 {
            let mut flipped = file.clone();
            flipped[position] ^= 1 << bit;
            *paths.entry(parse_with_fixed_crc(&flipped)).or_default() += 1;
        }
    }
    println!("{paths:#?}");
    for path in [
        "accepted",
        "format: QuantValueOutOfRange",
        "format: NonzeroQuantPadding",
        "format: InvalidScale",
        "format: NonzeroPadding",
    ] {
        assert!(paths.contains_key(path), "{path} not reached: {paths:#?}");
    }
}

/// Edge files: an inference file and a training file (about 150 and 250 KB).
fn edge_files() -> &'static [Vec<u8>] {
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| {
        let inference = RandomModel::new(ModelConfig::edge(5), 11).build().unwrap();
        let mut training = RandomModel::new(ModelConfig::edge(1), 12);
        training.kind = FileKind::Training;
        vec![inference, training.build().unwrap()]
    })
}

/// Whether `error` is what flipping a bit at `position` of a valid file must give: the prefix
/// fields each have their own check (a header or payload length that changes the file's
/// length is a length error; one that does not is caught by the CRC); everything after the
/// prefix, the CRC trailer included, is covered by the CRC.
fn expected_flip_error(position: usize, version: u16, error: &FormatError) -> bool {
    use FormatError::*;
    let length_error = matches!(error, Truncated { .. } | TrailingBytes { .. });
    match position {
        0..8 => *error == BadMagic,
        // A flip to another version this reader knows is caught by the CRC.
        8..10 if (PAPER_VERSION..=VERSION).contains(&version) => {
            matches!(error, ChecksumMismatch { .. })
        }
        8..10 => matches!(error, UnsupportedVersion { .. }),
        10..12 => matches!(error, NonzeroReserved { .. }),
        12..16 => length_error || matches!(error, ChecksumMismatch { .. }),
        // Bits 0 and 1 of the payload length make it not a multiple of 4.
        16 => matches!(error, PayloadLengthNotMultipleOf4 { .. }) || length_error,
        17..20 => length_error,
        _ => matches!(error, ChecksumMismatch { .. }),
    }
}

fn check_flip(file: &[u8], position: usize, bit: u8) {
    let mut flipped = file.to_vec();
    flipped[position] ^= 1 << bit;
    match parse(&flipped) {
        Ok(_) => panic!("bit {bit} of byte {position} flipped and the file still parses"),
        Err(e) => assert!(
            expected_flip_error(position, u16::from_le_bytes([flipped[8], flipped[9]]), &e),
            "bit {bit} of byte {position}: {e:?}"
        ),
    }
}

#[test]
fn every_single_bit_flip_of_a_small_file_is_detected() {
    // An inference file and a training file with a training state: header, padding, payload
    // and trailer of both kinds.
    let files = small_files();
    let mut checked = 0;
    for (name, file) in files {
        if *name != "tiny-inference" && *name != "tiny-training-state" {
            continue;
        }
        assert!(parse(file).is_ok(), "{name}");
        for position in 0..file.len() {
            for bit in 0..8 {
                check_flip(file, position, bit);
            }
        }
        checked += file.len() * 8;
    }
    assert!(checked > 60_000, "{checked} bits");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_accepted_or_rejected(
        bytes in prop::collection::vec(any::<u8>(), 0..2048)
    ) {
        parse_bytes(&bytes);
        parse_with_fixed_crc(&bytes);
        // Past the magic and version, so the lengths and the CRC are what fail.
        let mut prefixed = b"AWGIM\0MF\x01\0\0\0".to_vec();
        prefixed.extend_from_slice(&bytes);
        parse_bytes(&prefixed);
        parse_with_fixed_crc(&prefixed);
    }

    #[test]
    fn mutated_files_without_crc_fixup_are_rejected(
        seed in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let (name, original) = &small_files()[seed.index(small_files().len())];
        let mut file = original.clone();
        for m in &mutations {
            apply(&mut file, m);
        }
        let label = parse_bytes(&file);
        if file != *original {
            // A CRC-32 collision would be a 2^-32 event.
            prop_assert_ne!(label, "accepted", "{} mutated by {:?}", name, mutations);
        }
    }

    #[test]
    fn mutated_files_with_crc_fixup_are_accepted_or_rejected(
        seed in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let (_, original) = &small_files()[seed.index(small_files().len())];
        let mut file = original.clone();
        for m in &mutations {
            apply(&mut file, m);
        }
        parse_with_fixed_crc(&file);
    }

    /// The version-4 int8 seed, mutated: without a recomputed CRC always rejected; with it,
    /// accepted with every int8 promise kept (the harness's checks) or rejected with a typed
    /// error.
    #[test]
    fn mutated_int8_files_are_accepted_or_rejected(
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let original = int8_seed();
        let mut file = original.clone();
        for m in &mutations {
            apply(&mut file, m);
        }
        if file != *original {
            prop_assert_ne!(parse_bytes(&file), "accepted", "{:?}", mutations);
        }
        parse_with_fixed_crc(&file);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bit_flips_in_edge_files_are_detected(
        which in any::<Index>(),
        position in any::<Index>(),
        bit in 0u8..8,
    ) {
        let file = &edge_files()[which.index(edge_files().len())];
        check_flip(file, position.index(file.len()), bit);
    }
}
