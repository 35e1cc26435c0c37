//! Every input kept under `fuzz/regressions/config_toml/` through the same
//! entry point as the `config_toml` fuzz target: `AgentStack::from_toml`
//! gives a builder or a `BuildError` that says what is wrong. Files named
//! `ok_*` must parse and `err_*` must not; others (found by the fuzzer) may
//! do either, but never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;

use mantissa::{AgentStack, BuildError};

#[test]
fn config_toml_regressions_parse_or_fail_with_a_reason() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/config_toml");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue; // the fuzz target skips non-UTF-8 input too
        };
        match AgentStack::from_toml(text) {
            Ok(_) => assert!(!name.starts_with("err_"), "{name} parsed"),
            Err(e) => {
                assert!(!name.starts_with("ok_"), "{name}: {e}");
                assert!(!e.to_string().is_empty(), "{name}: {e:?}");
                if let BuildError::Config(c) = &e {
                    assert!(!c.field.is_empty() && !c.reason.is_empty(), "{name}: {c:?}");
                }
            }
        }
    }
}
