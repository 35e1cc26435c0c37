//! mantissa facade (work in progress).
#![forbid(unsafe_code)]
pub use mantissa_core as core;
