//! The chat-completions response decoder over an arbitrary body (see
//! `mantissa_openai::fuzzing::check_completion`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = mantissa_openai::fuzzing::check_completion(data) {
        panic!("{broken}");
    }
});
