//! `formats::parse` on bytes whose CRC trailer is recomputed first, so mutations of a valid
//! file reach the header decoder and the table checks (see
//! `tests::fuzzing::parse_with_fixed_crc`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tests::fuzzing::parse_with_fixed_crc(data);
});
