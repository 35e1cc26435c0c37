//! The TOML form of rules: [`RuleSet::from_toml_str`] / [`RuleSet::from_file`]
//! with errors that point at the field (`rule[2].condition.above`), and the
//! serde form of a [`Condition`] (one table per condition type, each with
//! its own threshold key), converted to and from the signal × threshold
//! shape.

use std::path::Path;
use std::time::Duration;

use mantissa_core::ConfigError;
use serde::{Deserialize, Serialize};

use super::RuleSet;
use super::condition::{Condition, DEFAULT_MIN_CALLS, Signal};
use super::window::Window;
use crate::duration;

fn fifteen_minutes() -> Window {
    Window::FifteenMinutes
}

fn default_min_calls() -> u64 {
    DEFAULT_MIN_CALLS
}

/// The TOML (and serde) form of a [`Condition`], exactly as rule files have
/// always written it: one table per condition type with its own threshold
/// key (`above`, `at_least`, `above_secs`, `factor`, `below`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ConditionToml {
    /// Error rate (failures / (successes + failures), cancellations excluded)
    /// over `window` above `above`, once the window holds `min_calls` calls.
    ErrorRate {
        /// The window. Defaults to `1m`.
        #[serde(default)]
        window: Window,
        /// Threshold in `(0, 1]`.
        above: f64,
        /// Fewer calls than this in the window: no verdict. Defaults to 5.
        #[serde(default = "default_min_calls")]
        min_calls: u64,
    },
    /// Consecutive failures (since the last success) at least `at_least`.
    ConsecutiveFailures {
        /// Threshold, at least 1.
        at_least: u32,
    },
    /// 95th percentile latency over `window` above `above_secs` seconds.
    LatencyP95 {
        /// The window. Defaults to `1m`.
        #[serde(default)]
        window: Window,
        /// Threshold in seconds.
        above_secs: f64,
        /// Fewer calls than this in the window: no verdict. Defaults to 5.
        #[serde(default = "default_min_calls")]
        min_calls: u64,
    },
    /// Latency drift: 95th percentile latency over `window` above `factor` ×
    /// the subject's own long-term baseline (the value is the ratio).
    LatencyDrift {
        /// The window. Defaults to `1m`.
        #[serde(default)]
        window: Window,
        /// Threshold ratio, above 1.
        factor: f64,
        /// Fewer calls than this in the window: no verdict. Defaults to 5.
        #[serde(default = "default_min_calls")]
        min_calls: u64,
    },
    /// Token burn rate (input + output tokens per minute over `window`) above
    /// a budget.
    TokenBurn {
        /// The window. Defaults to `15m`.
        #[serde(default = "fifteen_minutes")]
        window: Window,
        /// Budget in tokens per minute.
        above_per_minute: f64,
    },
    /// Cost burn rate (US dollars per hour over `window`) above a budget.
    CostBurn {
        /// The window. Defaults to `15m`.
        #[serde(default = "fifteen_minutes")]
        window: Window,
        /// Budget in US dollars per hour.
        above_usd_per_hour: f64,
    },
    /// Silence: no call for `after`. Subjects named in `expect` are watched
    /// even before their first call (the silence then counts from the
    /// monitor's start); other subjects only once seen.
    Silence {
        /// How long a subject may stay quiet.
        #[serde(with = "duration")]
        after: Duration,
        /// Subjects expected to be active (need not have been seen yet).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        expect: Vec<String>,
    },
    /// Health score (see `mantissa-health`) below `below`.
    ScoreBelow {
        /// Threshold in `(0, 1]`.
        below: f64,
    },
    /// Error-driven context resets in `window` above `above` (a spike of
    /// them: the agent's sessions are turning brittle). Only resets whose
    /// reason is in
    /// `ERROR_DRIVEN_RESET_REASONS`
    /// count — routine compactions of a busy agent do not — the same
    /// definition as the Prometheus alert `MantissaContextResetSpike`.
    /// Agents only.
    ResetSpike {
        /// The window. Defaults to `15m`.
        #[serde(default = "fifteen_minutes")]
        window: Window,
        /// Threshold: more resets than this fire.
        above: u64,
    },
}

impl From<ConditionToml> for Condition {
    fn from(c: ConditionToml) -> Self {
        let (signal, value) = match c {
            ConditionToml::ErrorRate {
                window,
                above,
                min_calls,
            } => (Signal::ErrorRate { window, min_calls }, above),
            ConditionToml::ConsecutiveFailures { at_least } => {
                (Signal::ConsecutiveFailures, f64::from(at_least))
            }
            ConditionToml::LatencyP95 {
                window,
                above_secs,
                min_calls,
            } => (Signal::LatencyP95 { window, min_calls }, above_secs),
            ConditionToml::LatencyDrift {
                window,
                factor,
                min_calls,
            } => (Signal::LatencyDrift { window, min_calls }, factor),
            ConditionToml::TokenBurn {
                window,
                above_per_minute,
            } => (Signal::TokenBurn { window }, above_per_minute),
            ConditionToml::CostBurn {
                window,
                above_usd_per_hour,
            } => (Signal::CostBurn { window }, above_usd_per_hour),
            ConditionToml::Silence { after, expect } => (Signal::Silence { expect }, after.as_secs_f64()),
            ConditionToml::ScoreBelow { below } => (Signal::HealthScore, below),
            ConditionToml::ResetSpike { window, above } => {
                (Signal::ErrorDrivenResets { window }, above as f64)
            }
        };
        Condition::of(signal, value)
    }
}

impl From<Condition> for ConditionToml {
    fn from(c: Condition) -> Self {
        let (signal, value) = c.parts();
        match signal.clone() {
            Signal::ErrorRate { window, min_calls } => ConditionToml::ErrorRate {
                window,
                above: value,
                min_calls,
            },
            Signal::ConsecutiveFailures => ConditionToml::ConsecutiveFailures {
                at_least: u32::try_from(count(value)).unwrap_or(u32::MAX),
            },
            Signal::LatencyP95 { window, min_calls } => ConditionToml::LatencyP95 {
                window,
                above_secs: value,
                min_calls,
            },
            Signal::LatencyDrift { window, min_calls } => ConditionToml::LatencyDrift {
                window,
                factor: value,
                min_calls,
            },
            Signal::TokenBurn { window } => ConditionToml::TokenBurn {
                window,
                above_per_minute: value,
            },
            Signal::CostBurn { window } => ConditionToml::CostBurn {
                window,
                above_usd_per_hour: value,
            },
            Signal::Silence { expect } => ConditionToml::Silence {
                after: seconds(value),
                expect,
            },
            Signal::HealthScore => ConditionToml::ScoreBelow { below: value },
            Signal::ErrorDrivenResets { window } => ConditionToml::ResetSpike {
                window,
                above: count(value),
            },
        }
    }
}

/// A silence threshold back as a duration (saturating).
fn seconds(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(if value > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

/// A count threshold back as an integer (the constructors and the TOML form
/// only ever hold integers there; anything else saturates).
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

impl RuleSet {
    /// Parses and validates TOML.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        let set: RuleSet = toml::from_str(s).map_err(|e| {
            let reason = e.message().to_owned();
            let field = e
                .span()
                .map(|sp| field_at(s, sp.start))
                .unwrap_or_else(|| "rule".to_owned());
            ConfigError::new(field, reason)
        })?;
        set.validate()?;
        Ok(set)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::from_toml_str(&text)
    }
}

/// Names the TOML field where a parse error starts: `rule[i].key` when the
/// error is inside the `i`-th `[[rule]]` table.
fn field_at(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let index = before
        .lines()
        .filter(|l| l.trim_start().starts_with("[[rule]]"))
        .count();
    let line = text[before.rfind('\n').map_or(0, |i| i + 1)..]
        .lines()
        .next()
        .unwrap_or("");
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or("");
    match (index, key) {
        (0, "") => "rule".to_owned(),
        (0, k) => k.to_owned(),
        (i, "") => format!("rule[{}]", i - 1),
        (i, k) => format!("rule[{}].{k}", i - 1),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rule::Action;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let set = RuleSet::defaults();
        set.validate().unwrap();
        let text = toml::to_string(&set).unwrap();
        let back = RuleSet::from_toml_str(&text).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn every_condition_and_action_parses() {
        let set = RuleSet::from_toml_str(
            r#"
            [[rule]]
            name = "a"
            subject = { kind = "model", name = "mock-*" }
            condition = { type = "consecutive_failures", at_least = 3 }
            action = { type = "cool_down", duration = "90s", restore_on_resolve = true }
            [[rule]]
            name = "b"
            subject = { kind = "model" }
            condition = { type = "latency_p95", above_secs = 2.5 }
            [[rule]]
            name = "c"
            subject = { kind = "model" }
            condition = { type = "latency_drift", factor = 2 }
            [[rule]]
            name = "d"
            severity = "info"
            subject = { kind = "agent" }
            condition = { type = "token_burn", above_per_minute = 10000 }
            [[rule]]
            name = "e"
            subject = { kind = "agent" }
            condition = { type = "cost_burn", window = "1m", above_usd_per_hour = 5.0 }
            action = { type = "set_tier", tier = "low" }
            [[rule]]
            name = "f"
            subject = { kind = "agent" }
            condition = { type = "silence", after = "5m", expect = ["trader"] }
            [[rule]]
            name = "g"
            subject = { kind = "agent" }
            condition = { type = "score_below", below = 0.6 }
            keep_firing_for = "1m"
            hysteresis = 0.2
            [[rule]]
            name = "h"
            subject = { kind = "agent" }
            condition = { type = "reset_spike", above = 3 }
            action = { type = "reset_sessions", sessions = ["s1"], from_journal = 100 }
            "#,
        )
        .unwrap();
        assert_eq!(set.rules.len(), 8);
        assert_eq!(
            set.rules[1].condition,
            Condition::latency_p95(Window::OneMinute, 2.5)
        );
        assert_eq!(
            set.rules[5].condition,
            Condition::silence(Duration::from_secs(300), ["trader"])
        );
        assert_eq!(set.rules[6].keep_firing_for, Duration::from_secs(60));
        assert_eq!(
            set.rules[7].action,
            Some(Action::ResetSessions {
                sessions: vec!["s1".into()],
                from_journal: 100
            })
        );
    }

    #[test]
    fn every_condition_type_round_trips_through_toml() {
        let conditions = [
            Condition::error_rate(Window::FifteenMinutes, 0.25, 20),
            Condition::consecutive_failures(3),
            Condition::latency_p95(Window::OneMinute, 2.5),
            Condition::latency_drift(Window::OneMinute, 3.0).min_calls(10),
            Condition::token_burn(Window::FifteenMinutes, 10_000.0),
            Condition::cost_burn(Window::OneMinute, 5.0),
            Condition::silence(Duration::from_secs(300), ["trader"]),
            Condition::score_below(0.6),
            Condition::reset_spike(Window::FifteenMinutes, 3),
        ];
        for c in conditions {
            let text = toml::to_string(&ConditionToml::from(c.clone())).unwrap();
            let back: ConditionToml = toml::from_str(&text).unwrap();
            assert_eq!(Condition::from(back), c, "{text}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 2 }",
                "rule[0].condition.below",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5 }\nhysteresis = 1.5",
                "rule[0].hysteresis",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5 }\naction = { type = \"cool_down\", duration = \"1m\" }",
                "rule[0].action.type",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"model\" }\ncondition = { type = \"reset_spike\", above = 1 }",
                "rule[0].subject.kind",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5 }\n[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5 }",
                "rule[1].name",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"warp_drive\" }",
                "rule[0].condition",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"silence\", after = \"soon\" }",
                "rule[0].condition",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5, abov = 1 }",
                "rule[0].condition",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5 }\naction = { type = \"reset_sessions\", session = [\"s1\"], from_journal = 5 }",
                "rule[0].action",
            ),
            (
                "[[rule]]\nname = \"x\"\nsubject = { kind = \"agent\" }\ncondition = { type = \"score_below\", below = 0.5 }\nfour = \"1m\"",
                "rule[0].four",
            ),
        ];
        for (text, field) in cases {
            let err = RuleSet::from_toml_str(text).unwrap_err();
            assert_eq!(err.field, field, "{text}: {err}");
            assert!(!err.reason.is_empty());
        }
    }
}
