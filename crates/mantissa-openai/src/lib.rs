//! mantissa-openai (work in progress).
