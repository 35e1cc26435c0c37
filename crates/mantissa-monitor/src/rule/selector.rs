//! Which subjects a rule watches: a [`SubjectKind`] and a [`Selector`] with
//! an optional `*` name pattern.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// Agents.
    Agent,
    /// Models.
    Model,
    /// Tools.
    Tool,
}

impl SubjectKind {
    /// `agent`, `model` or `tool`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SubjectKind::Agent => "agent",
            SubjectKind::Model => "model",
            SubjectKind::Tool => "tool",
        }
    }
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which subjects a rule applies to: a kind and an optional name filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Agents, models or tools.
    pub kind: SubjectKind,
    /// A name, or a pattern where `*` matches any run of characters
    /// (`"mock-*"`). `None` matches every subject of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Selector {
    /// Every subject of `kind`.
    pub fn kind(kind: SubjectKind) -> Self {
        Self { kind, name: None }
    }

    /// Every agent.
    pub fn agents() -> Self {
        Self::kind(SubjectKind::Agent)
    }

    /// Every model.
    pub fn models() -> Self {
        Self::kind(SubjectKind::Model)
    }

    /// Every tool.
    pub fn tools() -> Self {
        Self::kind(SubjectKind::Tool)
    }

    /// Only subjects whose name matches `pattern` (`*` is a wildcard).
    pub fn named(mut self, pattern: impl Into<String>) -> Self {
        self.name = Some(pattern.into());
        self
    }

    /// Whether `name` passes the name filter.
    pub fn matches(&self, name: &str) -> bool {
        match &self.name {
            None => true,
            Some(p) => glob(p, name),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches() {
        assert!(glob("mock-*", "mock-small"));
        assert!(glob("*", "x"));
        assert!(glob("a*c", "abc"));
        assert!(glob("a*c", "ac"));
        assert!(!glob("a*c", "ab"));
        assert!(glob("*-large", "mock-large"));
        assert!(!glob("mock", "mock-large"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXcYb"));
    }
}
