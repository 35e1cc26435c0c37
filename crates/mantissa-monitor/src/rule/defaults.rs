//! The built-in starting set of rules.

use std::time::Duration;

use super::{Condition, Rule, Selector, Severity, Window};

/// A starting set of rules, one per condition type that needs no budget or
/// expected agents:
///
/// | name | subjects | condition | for | severity |
/// |---|---|---|---|---|
/// | `model_error_rate` | models | error rate > 50 % over 1m, ≥ 10 calls | 30s | critical |
/// | `model_consecutive_failures` | models | ≥ 5 failures in a row | 0s | critical |
/// | `tool_error_rate` | tools | error rate > 25 % over 15m, ≥ 20 calls | 2m | warning |
/// | `model_latency_drift` | models | p95 over 1m > 3× baseline, ≥ 10 calls | 2m | warning |
/// | `agent_health_low` | agents | score < 0.5 | 1m | warning |
/// | `agent_reset_spike` | agents | > 10 error-driven context resets over 15m | 0s | warning |
///
/// Thresholds are deliberately loose (they fire on outages, not on noise);
/// tune them per deployment.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "model_error_rate",
            Selector::models(),
            Condition::error_rate(Window::OneMinute, 0.5, 10),
        )
        .severity(Severity::Critical)
        .for_duration(Duration::from_secs(30)),
        Rule::new(
            "model_consecutive_failures",
            Selector::models(),
            Condition::consecutive_failures(5),
        )
        .severity(Severity::Critical),
        Rule::new(
            "tool_error_rate",
            Selector::tools(),
            Condition::error_rate(Window::FifteenMinutes, 0.25, 20),
        )
        .for_duration(Duration::from_secs(120)),
        Rule::new(
            "model_latency_drift",
            Selector::models(),
            Condition::latency_drift(Window::OneMinute, 3.0).min_calls(10),
        )
        .for_duration(Duration::from_secs(120)),
        Rule::new(
            "agent_health_low",
            Selector::agents(),
            Condition::score_below(0.5),
        )
        .for_duration(Duration::from_secs(60)),
        Rule::new(
            "agent_reset_spike",
            Selector::agents(),
            Condition::reset_spike(Window::FifteenMinutes, 10),
        ),
    ]
}
