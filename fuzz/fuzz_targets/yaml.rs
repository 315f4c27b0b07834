#![no_main]
//! `cargo fuzz run yaml`: see purposegate::fuzzing::yaml for the invariant.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = purposegate::fuzzing::yaml(data);
});
