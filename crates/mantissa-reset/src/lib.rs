//! mantissa-reset (work in progress).
