//! mantissa-mock (work in progress).
