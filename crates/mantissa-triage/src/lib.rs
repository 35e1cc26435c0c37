//! mantissa-triage (work in progress).
