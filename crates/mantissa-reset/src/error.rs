//! Errors the reset layer adds to its inner service's.

/// The error of a call whose context could not be compacted to the target
/// budget, when the layer is configured to fail rather than send it anyway
/// ([`ResetLayer::fail_when_over_budget`](crate::ResetLayer::fail_when_over_budget)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("context over budget after compaction: {tokens} tokens, target {target}")]
pub struct ContextBudgetExceeded {
    /// Tokens after compaction.
    pub tokens: u64,
    /// The target budget.
    pub target: u64,
}
