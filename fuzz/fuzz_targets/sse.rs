//! The SSE decoder and the chunk stream built on it, over an arbitrary body
//! split into reads as its first byte says (see `mantissa_openai::fuzzing::check_sse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = mantissa_openai::fuzzing::check_sse(data) {
        panic!("{broken}");
    }
});
