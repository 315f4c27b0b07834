#![no_main]
//! `cargo fuzz run claims`: see purposegate::fuzzing::claims for the invariant.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = purposegate::fuzzing::claims(data);
});
