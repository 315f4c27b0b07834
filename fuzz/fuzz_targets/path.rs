#![no_main]
//! `cargo fuzz run path`: see purposegate::fuzzing::path for the invariant.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = purposegate::fuzzing::path(data);
});
