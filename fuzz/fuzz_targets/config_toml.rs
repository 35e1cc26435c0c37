//! The stack's TOML configuration: `AgentStack::from_toml` on arbitrary text
//! gives a builder or a `BuildError` that says what is wrong, never a panic.
//! The same check runs over `fuzz/regressions/config_toml/` in the root
//! package's `tests/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mantissa::{AgentStack, BuildError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = AgentStack::from_toml(text) {
        assert!(!e.to_string().is_empty(), "an error without a message: {e:?}");
        if let BuildError::Config(c) = &e {
            assert!(!c.field.is_empty() && !c.reason.is_empty(), "{c:?}");
        }
    }
});
