//! Small text helpers shared by the layers.

/// The longest prefix of `s` of at most `max` bytes that ends on a char
/// boundary (for bounded logging, span attributes and prompts).
///
/// ```
/// use mantissa_core::truncate_str;
/// assert_eq!(truncate_str("héllo", 2), "h"); // never cuts inside "é"
/// ```
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate_str;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate_str("hello", 10), "hello");
        assert_eq!(truncate_str("hello", 3), "hel");
        // "é" is two bytes: a cut inside it backs off to before it.
        assert_eq!(truncate_str("héllo", 2), "h");
        assert_eq!(truncate_str("héllo", 3), "hé");
        assert_eq!(truncate_str("€", 0), "");
    }
}
