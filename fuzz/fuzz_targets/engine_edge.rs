//! The engine's load, prepare and classify on edited edge models and tasks (see
//! `tests::fuzzing::engine_edge` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tests::fuzzing::engine_edge(data);
});
