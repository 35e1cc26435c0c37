//! mantissa-prometheus (work in progress).
