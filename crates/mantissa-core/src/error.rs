//! Error types shared by every crate.

/// The boxed error type layers return when they add ways to fail.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A configuration value is wrong. Names the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{field}`: {reason}")]
pub struct ConfigError {
    /// The dotted path of the field (for example `tiers[1].models[0].context_window`).
    pub field: String,
    /// Why the value is wrong.
    pub reason: String,
}

impl ConfigError {
    /// A configuration error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
