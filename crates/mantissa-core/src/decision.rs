//! The per-call decisions the layers carry in typed fields of the request
//! and the response: triage's [`TierDecision`] and the router's [`Routed`].
//! They live here, beside [`LlmRequest`](crate::LlmRequest) and
//! [`LlmResponse`](crate::LlmResponse), so that carrying them costs no
//! `http::Extensions` map; `mantissa-triage` re-exports them under its own
//! paths.

use std::fmt;

use crate::ids::{ModelId, Tier};

/// Why triage chose a tier. A bounded set: it is the `reason` label of
/// `mantissa_triage_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriageReason {
    /// The request already named a tier or a model; triage kept it.
    Explicit,
    /// The agent is pinned to a tier through [`TierControl`](crate::control::TierControl).
    Override,
    /// Session stickiness raised the tier to the session's earlier maximum.
    Sticky,
    /// `RuleTriage` scored the latest user turn.
    Rules,
    /// An explicit stakes hint (`metadata["stakes"]`) raised the tier.
    Stakes,
    /// `LlmTriage`: the classifier model answered.
    Model,
    /// `LlmTriage`: the classifier was late, failed or
    /// answered garbage, and the fallback triage decided.
    ModelFallback,
    /// Nothing to score (no user turn); the lowest tier was chosen.
    Default,
    /// A custom strategy's own reason. Keep the set of values small: it is a
    /// metric label.
    Custom(&'static str),
}

impl TriageReason {
    /// The label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            TriageReason::Explicit => "explicit",
            TriageReason::Override => "override",
            TriageReason::Sticky => "sticky",
            TriageReason::Rules => "rules",
            TriageReason::Stakes => "stakes",
            TriageReason::Model => "model",
            TriageReason::ModelFallback => "model_fallback",
            TriageReason::Default => "default",
            TriageReason::Custom(s) => s,
        }
    }
}

impl fmt::Display for TriageReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What triage decided for one request. The triage layer
/// (`mantissa_triage::TriageLayer`) sets it on the request
/// ([`LlmRequest::tier_decision`](crate::LlmRequest::tier_decision)) and on
/// the response ([`LlmResponse::tier_decision`](crate::LlmResponse::tier_decision)).
#[derive(Debug, Clone, PartialEq)]
pub struct TierDecision {
    /// The chosen tier.
    pub tier: Tier,
    /// The complexity score in `[0, 1]` (0 = trivial).
    pub score: f64,
    /// Why this tier.
    pub reason: TriageReason,
}

impl TierDecision {
    /// A decision; `score` is clamped to `[0, 1]` (NaN becomes 0).
    pub fn new(tier: impl Into<Tier>, score: f64, reason: TriageReason) -> Self {
        let score = if score.is_nan() {
            0.0
        } else {
            score.clamp(0.0, 1.0)
        };
        Self {
            tier: tier.into(),
            score,
            reason,
        }
    }
}

/// Where a response was served from. The router (`mantissa_triage::TierRouter`)
/// sets it on the response ([`LlmResponse::routed`](crate::LlmResponse::routed)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The model that answered.
    pub model: ModelId,
    /// Its tier.
    pub tier: Tier,
    /// The tier the request asked for (or the default tier).
    pub requested_tier: Tier,
    /// Models called, including the one that answered.
    pub attempts: u32,
}
