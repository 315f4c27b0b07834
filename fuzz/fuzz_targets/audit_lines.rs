#![no_main]
//! `cargo fuzz run audit_lines`: see purposegate::fuzzing::audit_lines for the invariant.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = purposegate::fuzzing::audit_lines(data);
});
