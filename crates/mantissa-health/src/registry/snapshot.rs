//! Serializable views of the registry.

use std::collections::BTreeMap;

use mantissa_core::FailureClass;
use serde::Serialize;

/// Everything the registry knows, per subject, at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthSnapshot {
    /// When the snapshot was taken, in milliseconds since the Unix epoch (on
    /// the registry's clock: virtual under paused tokio time).
    pub taken_at_ms: u64,
    /// Per agent (label values as the layer recorded them, so allow-listed or `other`).
    pub agents: BTreeMap<String, SubjectHealth>,
    /// Per model label (configured ids or `other`).
    pub models: BTreeMap<String, SubjectHealth>,
    /// Per tool label.
    pub tools: BTreeMap<String, SubjectHealth>,
}

impl HealthSnapshot {
    /// The entry of `agent`.
    pub fn agent(&self, agent: &str) -> Option<&SubjectHealth> {
        self.agents.get(agent)
    }

    /// The entry of `model`.
    pub fn model(&self, model: &str) -> Option<&SubjectHealth> {
        self.models.get(model)
    }

    /// The entry of `tool`.
    pub fn tool(&self, tool: &str) -> Option<&SubjectHealth> {
        self.tools.get(tool)
    }
}

/// The health of one agent, model or tool.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectHealth {
    /// The label value.
    pub name: String,
    /// Health score in `[0, 1]` (see the crate docs for the formula); 1 when
    /// nothing is known yet.
    pub score: f64,
    /// Failures in a row since the last success (cancellations neither count
    /// nor break the streak).
    pub consecutive_failures: u32,
    /// The class of the latest failure.
    pub last_failure: Option<FailureClass>,
    /// End of the latest call, in milliseconds since the Unix epoch.
    pub last_call_ms: Option<u64>,
    /// Seconds since the latest call ended (the "silence" of the subject).
    pub seconds_since_last_call: Option<f64>,
    /// Long-term latency baseline in seconds: an exponentially weighted
    /// moving average over successful calls (α = 0.01 per call, about the
    /// last 100 calls).
    pub latency_baseline_secs: Option<f64>,
    /// Calls since the registry started.
    pub total_calls: u64,
    /// Failed calls (not cancelled) since the registry started.
    pub total_failures: u64,
    /// The last minute.
    pub last_1m: WindowStats,
    /// The last 15 minutes.
    pub last_15m: WindowStats,
}

/// Aggregates over one rolling window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WindowStats {
    /// Nominal window length in seconds (60 or 900).
    pub window_secs: f64,
    /// Seconds of the window the registry has actually been running (rates
    /// are per this span, so a fresh registry does not under-report).
    pub covered_secs: f64,
    /// Calls that ended in the window (all outcomes).
    pub calls: u64,
    /// Successful calls.
    pub successes: u64,
    /// Failed calls, cancellations excluded.
    pub failures: u64,
    /// Calls the caller gave up on.
    pub cancelled: u64,
    /// `failures / (successes + failures)`, 0 with no calls.
    pub error_rate: f64,
    /// Calls by failure class name (cancellations included); only non-zero classes.
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency quantiles in seconds over calls that were not cancelled (relative
    /// error ≤ 12.5 %, see the crate docs); `None` with no such call.
    pub p50_secs: Option<f64>,
    /// 95th percentile latency in seconds.
    pub p95_secs: Option<f64>,
    /// 99th percentile latency in seconds.
    pub p99_secs: Option<f64>,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// What the same calls would have cost on the top tier's model (0 without a tier set).
    pub counterfactual_cost_usd: f64,
    /// `counterfactual_cost_usd - cost_usd`: what triage saved (0 when no
    /// counterfactual is known, that is without a tier ladder).
    pub savings_usd: f64,
    /// Input plus output tokens per minute over the covered span.
    pub tokens_per_minute: f64,
    /// Cost burn rate in US dollars per hour over the covered span.
    pub cost_usd_per_hour: f64,
    /// Brittleness warnings (agents only).
    pub context_warnings: u64,
    /// Context resets (agents only).
    pub context_resets: u64,
    /// Error-driven context resets, a subset of `context_resets`: those whose
    /// reason is in [`ERROR_DRIVEN_RESET_REASONS`](mantissa_core::catalog::ERROR_DRIVEN_RESET_REASONS)
    /// (agents only).
    pub error_driven_resets: u64,
    /// Seconds taken by the successful calls judged against a tier baseline
    /// (agents only), and the seconds expected of them.
    #[serde(skip)]
    pub(crate) compared_secs: f64,
    #[serde(skip)]
    pub(crate) expected_secs: f64,
}

impl WindowStats {
    /// Calls of `class` in the window.
    pub fn errors_of(&self, class: FailureClass) -> u64 {
        self.errors.get(class.as_str()).copied().unwrap_or(0)
    }

    /// Calls per minute over the covered span.
    pub fn calls_per_minute(&self) -> f64 {
        per(self.calls as f64, self.covered_secs) * 60.0
    }
}

pub(crate) fn per(amount: f64, secs: f64) -> f64 {
    if secs > 0.0 { amount / secs } else { 0.0 }
}
