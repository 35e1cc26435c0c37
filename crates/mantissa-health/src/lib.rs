//! mantissa-health (work in progress).
