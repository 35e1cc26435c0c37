//! When a rule fires: a [`Condition`] is *what is measured* (a [`Signal`]
//! turns a subject's health into one number) × *how it is compared* (a
//! [`Threshold`]: above, below or at least a value).
//!
//! Comparison, hysteresis and the threshold's text are written once, in
//! [`Threshold`]; a new condition is one new [`Signal`] variant (its value,
//! its text and its TOML form).

use std::time::Duration;

use mantissa_core::ConfigError;
use mantissa_health::SubjectHealth;
use serde::{Deserialize, Serialize};

use super::toml::ConditionToml;
use super::window::Window;

/// Fewer calls than this in the window: no verdict (the default of the
/// signals that have a `min_calls`).
pub(crate) const DEFAULT_MIN_CALLS: u64 = 5;

/// What a condition measures: one number per subject, from its health.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Signal {
    /// Failures / (successes + failures) over `window` (cancellations
    /// excluded); no verdict under `min_calls` finished calls.
    ErrorRate {
        /// The window.
        window: Window,
        /// Fewer finished calls than this: no verdict.
        min_calls: u64,
    },
    /// Failures since the last success.
    ConsecutiveFailures,
    /// 95th percentile latency over `window`, in seconds; no verdict under
    /// `min_calls` calls.
    LatencyP95 {
        /// The window.
        window: Window,
        /// Fewer calls than this: no verdict.
        min_calls: u64,
    },
    /// 95th percentile latency over `window` as a multiple of the subject's
    /// own long-term baseline; no verdict under `min_calls` calls or without
    /// a baseline.
    LatencyDrift {
        /// The window.
        window: Window,
        /// Fewer calls than this: no verdict.
        min_calls: u64,
    },
    /// Input + output tokens per minute over `window`.
    TokenBurn {
        /// The window.
        window: Window,
    },
    /// US dollars per hour over `window`.
    CostBurn {
        /// The window.
        window: Window,
    },
    /// Seconds since the subject's last call. Subjects named in `expect` are
    /// watched even before their first call (the silence then counts from the
    /// monitor's start); other subjects only once seen.
    Silence {
        /// Subjects expected to be active (need not have been seen yet).
        expect: Vec<String>,
    },
    /// The health score (see `mantissa-health`), in [0, 1].
    HealthScore,
    /// Error-driven context resets in `window`: only resets whose reason is
    /// in [`ERROR_DRIVEN_RESET_REASONS`](mantissa_core::catalog::ERROR_DRIVEN_RESET_REASONS)
    /// count — routine compactions of a busy agent do not — the same
    /// definition as the Prometheus alert `MantissaContextResetSpike`.
    /// Agents only.
    ErrorDrivenResets {
        /// The window.
        window: Window,
    },
}

impl Signal {
    /// The signal's value for a subject, or `None` when there is no verdict
    /// (too few calls in the window, no latency, no baseline, never called).
    pub fn value(&self, h: &SubjectHealth) -> Option<f64> {
        match self {
            Signal::ErrorRate { window, min_calls } => {
                let w = window.of(h);
                let finished = w.successes + w.failures;
                (finished >= *min_calls && finished > 0).then_some(w.error_rate)
            }
            Signal::ConsecutiveFailures => Some(f64::from(h.consecutive_failures)),
            Signal::LatencyP95 { window, min_calls } => {
                let w = window.of(h);
                if w.calls < *min_calls {
                    return None;
                }
                w.p95_secs
            }
            Signal::LatencyDrift { window, min_calls } => {
                let w = window.of(h);
                if w.calls < *min_calls {
                    return None;
                }
                match (w.p95_secs, h.latency_baseline_secs) {
                    (Some(p95), Some(base)) if base > 0.0 => Some(p95 / base),
                    _ => None,
                }
            }
            Signal::TokenBurn { window } => Some(window.of(h).tokens_per_minute),
            Signal::CostBurn { window } => Some(window.of(h).cost_usd_per_hour),
            Signal::Silence { .. } => h.seconds_since_last_call,
            Signal::HealthScore => Some(h.score),
            Signal::ErrorDrivenResets { window } => Some(window.of(h).error_driven_resets as f64),
        }
    }

    /// A value of the signal in its unit (`50.0 %`, `500 ms`, `$6.00/h`), as
    /// thresholds are written.
    fn quantity(&self, v: f64) -> String {
        match self {
            Signal::ErrorRate { .. } => format!("{:.1} %", v * 100.0),
            Signal::LatencyP95 { .. } => format!("{:.0} ms", v * 1000.0),
            Signal::LatencyDrift { .. } => format!("{v:.1}×"),
            Signal::TokenBurn { .. } => format!("{v:.0}/min"),
            Signal::CostBurn { .. } => format!("${v:.2}/h"),
            Signal::Silence { .. } => format!("{v:.0} s"),
            Signal::HealthScore => format!("{v:.2}"),
            Signal::ConsecutiveFailures | Signal::ErrorDrivenResets { .. } => format!("{v:.0}"),
        }
    }

    /// The signal at `value`, for summaries.
    fn describe(&self, value: f64) -> String {
        match self {
            Signal::ErrorRate { window, .. } => {
                format!("error rate {:.1} % over {}", value * 100.0, window.as_str())
            }
            Signal::ConsecutiveFailures => format!("{value:.0} consecutive failures"),
            Signal::LatencyP95 { window, .. } => {
                format!("p95 latency {:.0} ms over {}", value * 1000.0, window.as_str())
            }
            Signal::LatencyDrift { window, .. } => {
                format!("p95 latency {value:.1}× its baseline over {}", window.as_str())
            }
            Signal::TokenBurn { window } => format!("{value:.0} tokens/min over {}", window.as_str()),
            Signal::CostBurn { window } => format!("${value:.2}/h over {}", window.as_str()),
            Signal::Silence { .. } => format!("silent for {value:.0} s"),
            Signal::HealthScore => format!("health score {value:.2}"),
            Signal::ErrorDrivenResets { window } => {
                format!("{value:.0} error-driven context resets over {}", window.as_str())
            }
        }
    }

    /// What no verdict means for the signal, for summaries.
    fn describe_no_verdict(&self) -> String {
        match self {
            Signal::ErrorRate { window, min_calls } => format!(
                "no verdict, fewer than {min_calls} finished calls over {}",
                window.as_str()
            ),
            Signal::LatencyP95 { window, min_calls } => format!(
                "no verdict, fewer than {min_calls} calls over {}",
                window.as_str()
            ),
            Signal::LatencyDrift { window, min_calls } => format!(
                "no verdict, fewer than {min_calls} calls over {} or no baseline",
                window.as_str()
            ),
            _ => "no data".to_owned(),
        }
    }

    /// The highest value the signal can take, if bounded (a `below`
    /// threshold's clearing bound is capped there).
    fn ceiling(&self) -> Option<f64> {
        match self {
            Signal::ErrorRate { .. } | Signal::HealthScore => Some(1.0),
            _ => None,
        }
    }
}

/// How a signal's value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// Met strictly above the threshold.
    Above,
    /// Met strictly below the threshold.
    Below,
    /// Met at the threshold or above (counts: "3 failures in a row").
    AtLeast,
}

impl Comparison {
    /// `>`, `<` or `>=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::Below => "<",
            Comparison::AtLeast => ">=",
        }
    }
}

/// A comparison with a value: when a condition is met, and when a firing
/// alert is clear again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// How the value is compared.
    pub cmp: Comparison,
    /// The threshold, in the signal's unit.
    pub value: f64,
}

impl Threshold {
    /// Strictly above `value`.
    pub fn above(value: f64) -> Self {
        Self {
            cmp: Comparison::Above,
            value,
        }
    }

    /// Strictly below `value`.
    pub fn below(value: f64) -> Self {
        Self {
            cmp: Comparison::Below,
            value,
        }
    }

    /// At `value` or above.
    pub fn at_least(value: f64) -> Self {
        Self {
            cmp: Comparison::AtLeast,
            value,
        }
    }

    /// Whether `v` meets the threshold.
    pub fn is_met(&self, v: f64) -> bool {
        match self.cmp {
            Comparison::Above => v > self.value,
            Comparison::Below => v < self.value,
            Comparison::AtLeast => v >= self.value,
        }
    }

    /// Whether `v` is back past the threshold by the hysteresis `margin` (a
    /// fraction of the threshold); a `below` bound is capped at `ceiling`.
    pub fn is_clear(&self, v: f64, margin: f64, ceiling: Option<f64>) -> bool {
        let t = self.value;
        match self.cmp {
            Comparison::Above => v <= t * (1.0 - margin),
            Comparison::AtLeast => v < t * (1.0 - margin),
            Comparison::Below => v >= ceiling.map_or(t * (1.0 + margin), |c| (t * (1.0 + margin)).min(c)),
        }
    }
}

/// The condition of a rule: a [`Signal`] compared with a [`Threshold`].
/// Built with the constructors (`Condition::error_rate(..)`, …) or from
/// TOML (`condition = { type = "error_rate", window = "1m", above = 0.5 }`;
/// see the [module docs](super) for every type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ConditionToml", into = "ConditionToml")]
pub struct Condition {
    signal: Signal,
    threshold: Threshold,
}

impl Condition {
    /// Error rate over `window` above `above` with at least `min_calls` calls.
    pub fn error_rate(window: Window, above: f64, min_calls: u64) -> Self {
        Self::of(Signal::ErrorRate { window, min_calls }, above)
    }

    /// At least `n` consecutive failures.
    pub fn consecutive_failures(n: u32) -> Self {
        Self::of(Signal::ConsecutiveFailures, f64::from(n))
    }

    /// p95 latency over `window` above `secs`, with at least 5 calls.
    pub fn latency_p95(window: Window, secs: f64) -> Self {
        Self::of(
            Signal::LatencyP95 {
                window,
                min_calls: DEFAULT_MIN_CALLS,
            },
            secs,
        )
    }

    /// p95 latency over `window` above `factor` × baseline, with at least 5 calls.
    pub fn latency_drift(window: Window, factor: f64) -> Self {
        Self::of(
            Signal::LatencyDrift {
                window,
                min_calls: DEFAULT_MIN_CALLS,
            },
            factor,
        )
    }

    /// Token burn over `window` above `per_minute` tokens per minute.
    pub fn token_burn(window: Window, per_minute: f64) -> Self {
        Self::of(Signal::TokenBurn { window }, per_minute)
    }

    /// Cost burn over `window` above `usd_per_hour`.
    pub fn cost_burn(window: Window, usd_per_hour: f64) -> Self {
        Self::of(Signal::CostBurn { window }, usd_per_hour)
    }

    /// No call for `after`; `expect` lists subjects watched before their first call.
    pub fn silence<I, S>(after: Duration, expect: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::of(
            Signal::Silence {
                expect: expect.into_iter().map(Into::into).collect(),
            },
            after.as_secs_f64(),
        )
    }

    /// Health score below `below`.
    pub fn score_below(below: f64) -> Self {
        Self::of(Signal::HealthScore, below)
    }

    /// More than `above` error-driven context resets in `window`.
    pub fn reset_spike(window: Window, above: u64) -> Self {
        Self::of(Signal::ErrorDrivenResets { window }, above as f64)
    }

    /// Sets the fewest calls in the window that give a verdict, for the
    /// signals that have one (`error_rate`, `latency_p95`, `latency_drift`;
    /// ignored by the others). Defaults to 5 (`error_rate`: as given).
    pub fn min_calls(mut self, n: u64) -> Self {
        match &mut self.signal {
            Signal::ErrorRate { min_calls, .. }
            | Signal::LatencyP95 { min_calls, .. }
            | Signal::LatencyDrift { min_calls, .. } => *min_calls = n,
            _ => {}
        }
        self
    }

    /// What is measured.
    pub fn signal(&self) -> &Signal {
        &self.signal
    }

    /// How it is compared.
    pub fn comparison(&self) -> Comparison {
        self.threshold.cmp
    }

    /// The snake_case name of the condition type (its TOML `type`).
    pub fn type_name(&self) -> &'static str {
        match self.signal {
            Signal::ErrorRate { .. } => "error_rate",
            Signal::ConsecutiveFailures => "consecutive_failures",
            Signal::LatencyP95 { .. } => "latency_p95",
            Signal::LatencyDrift { .. } => "latency_drift",
            Signal::TokenBurn { .. } => "token_burn",
            Signal::CostBurn { .. } => "cost_burn",
            Signal::Silence { .. } => "silence",
            Signal::HealthScore => "score_below",
            Signal::ErrorDrivenResets { .. } => "reset_spike",
        }
    }

    /// The threshold the value is compared with.
    pub fn threshold(&self) -> f64 {
        self.threshold.value
    }

    /// Whether the condition fires on low values (only `score_below`).
    pub fn fires_below(&self) -> bool {
        self.threshold.cmp == Comparison::Below
    }

    /// The value of the condition for a subject, or `None` when there is no
    /// verdict (too few calls in the window, no latency, no baseline). For a
    /// silence, the monitor counts subjects that never made a call itself.
    pub fn value(&self, h: &SubjectHealth) -> Option<f64> {
        self.signal.value(h)
    }

    /// Whether `value` makes the condition true (strictly past the threshold;
    /// `consecutive_failures` fires at the threshold).
    pub fn is_met(&self, value: f64) -> bool {
        self.threshold.is_met(value)
    }

    /// Whether `value` is far enough back past the threshold for a firing
    /// alert to clear, with hysteresis `margin` (a fraction of the threshold).
    pub fn is_clear(&self, value: f64, margin: f64) -> bool {
        self.threshold.is_clear(value, margin, self.signal.ceiling())
    }

    /// The condition's signal at `value`, for summaries.
    pub(crate) fn describe(&self, value: f64) -> String {
        self.signal.describe(value)
    }

    /// What no verdict means for the condition, for summaries.
    pub(crate) fn describe_no_verdict(&self) -> String {
        self.signal.describe_no_verdict()
    }

    /// The threshold as written in summaries (`> 50.0 %`, `>= 3`, `< 0.50`).
    pub(crate) fn describe_threshold(&self) -> String {
        format!(
            "{} {}",
            self.threshold.cmp.symbol(),
            self.signal.quantity(self.threshold.value)
        )
    }

    /// Checks the threshold's range for the signal (`field` is the
    /// condition's path; errors name the TOML key).
    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let v = self.threshold.value;
        let at = |name: &str| format!("{field}.{name}");
        let positive = |name: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::new(
                    at(name),
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        let fraction = |name: &str| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::new(at(name), format!("must be in (0, 1], got {v}")))
            }
        };
        match &self.signal {
            Signal::ErrorRate { .. } => fraction("above"),
            Signal::HealthScore => fraction("below"),
            Signal::ConsecutiveFailures if v < 1.0 => {
                Err(ConfigError::new(at("at_least"), "must be at least 1"))
            }
            Signal::LatencyP95 { .. } => positive("above_secs"),
            Signal::LatencyDrift { .. } if !(v.is_finite() && v > 1.0) => Err(ConfigError::new(
                at("factor"),
                format!("must be above 1, got {v}"),
            )),
            Signal::TokenBurn { .. } => positive("above_per_minute"),
            Signal::CostBurn { .. } => positive("above_usd_per_hour"),
            Signal::Silence { .. } if !(v.is_finite() && v > 0.0) => {
                Err(ConfigError::new(at("after"), "must be longer than zero"))
            }
            Signal::Silence { expect } => match expect.iter().position(|e| e.is_empty()) {
                Some(i) => Err(ConfigError::new(
                    format!("{field}.expect[{i}]"),
                    "must not be empty",
                )),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// The condition's parts, for its TOML form.
    pub(super) fn parts(&self) -> (&Signal, f64) {
        (&self.signal, self.threshold.value)
    }

    /// A condition on `signal` with threshold `value`. The comparison is the
    /// one the signal's TOML type names (`score_below`: below;
    /// `consecutive_failures`: at least; the others: above), decided here
    /// only.
    pub(super) fn of(signal: Signal, value: f64) -> Self {
        let threshold = match signal {
            Signal::HealthScore => Threshold::below(value),
            Signal::ConsecutiveFailures => Threshold::at_least(value),
            _ => Threshold::above(value),
        };
        Self { signal, threshold }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_bounds() {
        let c = Condition::error_rate(Window::OneMinute, 0.5, 1);
        assert!(c.is_met(0.51));
        assert!(!c.is_met(0.5));
        assert!(!c.is_clear(0.49, 0.1));
        assert!(c.is_clear(0.45, 0.1));
        let s = Condition::score_below(0.95);
        assert!(s.is_met(0.9));
        assert!(!s.is_clear(0.99, 0.1));
        assert!(s.is_clear(1.0, 0.1));
        let f = Condition::consecutive_failures(3);
        assert!(f.is_met(3.0));
        assert!(!f.is_clear(3.0, 0.1));
        assert!(f.is_clear(2.0, 0.1));
    }
}
