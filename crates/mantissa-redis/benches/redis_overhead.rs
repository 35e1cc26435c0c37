//! Placeholder; the overhead bench arrives with the session backend.

fn main() {}
