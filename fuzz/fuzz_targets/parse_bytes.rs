//! `formats::parse` on arbitrary bytes (see `tests::fuzzing::parse_bytes`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tests::fuzzing::parse_bytes(data);
});
