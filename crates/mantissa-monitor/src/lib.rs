//! mantissa-monitor (work in progress).
