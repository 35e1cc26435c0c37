//! Alert rules as data: serde structs that are built in code or loaded from
//! TOML, and validated (a [`ConfigError`] names the field and the reason).
//!
//! ```
//! use std::time::Duration;
//! use mantissa_monitor::rule::{Action, Condition, Rule, RuleSet, Selector, Severity, Window};
//!
//! // In code…
//! let rule = Rule::new("model_errors", Selector::models(), Condition::error_rate(Window::OneMinute, 0.5, 10))
//!     .severity(Severity::Critical)
//!     .for_duration(Duration::from_secs(30))
//!     .label("team", "trading")
//!     .action(Action::cool_down(Duration::from_secs(120)));
//! rule.validate().unwrap();
//!
//! // …or from TOML.
//! let rules = RuleSet::from_toml_str(r#"
//!     [[rule]]
//!     name = "model_errors"
//!     severity = "critical"
//!     for = "30s"
//!     subject = { kind = "model" }
//!     condition = { type = "error_rate", window = "1m", above = 0.5, min_calls = 10 }
//!     labels = { team = "trading" }
//!     action = { type = "cool_down", duration = "2m" }
//! "#).unwrap();
//! assert_eq!(rules.rules[0], rule);
//!
//! let err = RuleSet::from_toml_str(r#"
//!     [[rule]]
//!     name = "bad"
//!     subject = { kind = "agent" }
//!     condition = { type = "error_rate", above = 1.5 }
//! "#).unwrap_err();
//! assert_eq!(err.field, "rule[0].condition.above");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use mantissa_core::ConfigError;
use mantissa_health::{SubjectHealth, WindowStats};
use serde::{Deserialize, Serialize};

use crate::duration;

/// Default hysteresis margin: a firing alert resolves only once the value is
/// 10 % back past its threshold.
pub const DEFAULT_HYSTERESIS: f64 = 0.1;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention soon (the default).
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    /// Parses `info`, `warning` or `critical`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// A rolling window of the health registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Window {
    /// The last minute (12 slots of 5 s).
    #[default]
    #[serde(rename = "1m")]
    OneMinute,
    /// The last 15 minutes (15 slots of 60 s).
    #[serde(rename = "15m")]
    FifteenMinutes,
}

impl Window {
    /// `1m` or `15m`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Window::OneMinute => "1m",
            Window::FifteenMinutes => "15m",
        }
    }

    /// Parses `1m` or `15m`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1m" => Some(Window::OneMinute),
            "15m" => Some(Window::FifteenMinutes),
            _ => None,
        }
    }

    /// The window's statistics in `h`.
    pub fn of<'a>(&self, h: &'a SubjectHealth) -> &'a WindowStats {
        match self {
            Window::OneMinute => &h.last_1m,
            Window::FifteenMinutes => &h.last_15m,
        }
    }
}

fn fifteen_minutes() -> Window {
    Window::FifteenMinutes
}

fn default_min_calls() -> u64 {
    5
}

/// The condition of a rule. Every condition turns a subject's health into one
/// value compared with a threshold; see [`Condition::value`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
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
    /// [`ERROR_DRIVEN_RESET_REASONS`](mantissa_core::catalog::ERROR_DRIVEN_RESET_REASONS)
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

impl Condition {
    /// Error rate over `window` above `above` with at least `min_calls` calls.
    pub fn error_rate(window: Window, above: f64, min_calls: u64) -> Self {
        Condition::ErrorRate {
            window,
            above,
            min_calls,
        }
    }

    /// At least `n` consecutive failures.
    pub fn consecutive_failures(n: u32) -> Self {
        Condition::ConsecutiveFailures { at_least: n }
    }

    /// p95 latency over `window` above `secs`, with at least 5 calls.
    pub fn latency_p95(window: Window, secs: f64) -> Self {
        Condition::LatencyP95 {
            window,
            above_secs: secs,
            min_calls: default_min_calls(),
        }
    }

    /// p95 latency over `window` above `factor` × baseline, with at least 5 calls.
    pub fn latency_drift(window: Window, factor: f64) -> Self {
        Condition::LatencyDrift {
            window,
            factor,
            min_calls: default_min_calls(),
        }
    }

    /// Token burn over `window` above `per_minute` tokens per minute.
    pub fn token_burn(window: Window, per_minute: f64) -> Self {
        Condition::TokenBurn {
            window,
            above_per_minute: per_minute,
        }
    }

    /// Cost burn over `window` above `usd_per_hour`.
    pub fn cost_burn(window: Window, usd_per_hour: f64) -> Self {
        Condition::CostBurn {
            window,
            above_usd_per_hour: usd_per_hour,
        }
    }

    /// No call for `after`; `expect` lists subjects watched before their first call.
    pub fn silence<I, S>(after: Duration, expect: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Condition::Silence {
            after,
            expect: expect.into_iter().map(Into::into).collect(),
        }
    }

    /// Health score below `below`.
    pub fn score_below(below: f64) -> Self {
        Condition::ScoreBelow { below }
    }

    /// More than `above` error-driven context resets in `window`.
    pub fn reset_spike(window: Window, above: u64) -> Self {
        Condition::ResetSpike { window, above }
    }

    /// The snake_case name of the condition type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Condition::ErrorRate { .. } => "error_rate",
            Condition::ConsecutiveFailures { .. } => "consecutive_failures",
            Condition::LatencyP95 { .. } => "latency_p95",
            Condition::LatencyDrift { .. } => "latency_drift",
            Condition::TokenBurn { .. } => "token_burn",
            Condition::CostBurn { .. } => "cost_burn",
            Condition::Silence { .. } => "silence",
            Condition::ScoreBelow { .. } => "score_below",
            Condition::ResetSpike { .. } => "reset_spike",
        }
    }

    /// The threshold the value is compared with.
    pub fn threshold(&self) -> f64 {
        match self {
            Condition::ErrorRate { above, .. } => *above,
            Condition::ConsecutiveFailures { at_least } => f64::from(*at_least),
            Condition::LatencyP95 { above_secs, .. } => *above_secs,
            Condition::LatencyDrift { factor, .. } => *factor,
            Condition::TokenBurn { above_per_minute, .. } => *above_per_minute,
            Condition::CostBurn {
                above_usd_per_hour, ..
            } => *above_usd_per_hour,
            Condition::Silence { after, .. } => after.as_secs_f64(),
            Condition::ScoreBelow { below } => *below,
            Condition::ResetSpike { above, .. } => *above as f64,
        }
    }

    /// Whether the condition fires on low values (only `score_below`).
    pub fn fires_below(&self) -> bool {
        matches!(self, Condition::ScoreBelow { .. })
    }

    /// The value of the condition for a subject, or `None` when there is no
    /// verdict (too few calls in the window, no latency, no baseline). For
    /// [`Condition::Silence`], `silent_for` is used when the subject has never
    /// made a call.
    pub fn value(&self, h: &SubjectHealth) -> Option<f64> {
        match self {
            Condition::ErrorRate {
                window, min_calls, ..
            } => {
                let w = window.of(h);
                (w.successes + w.failures >= *min_calls && w.successes + w.failures > 0)
                    .then_some(w.error_rate)
            }
            Condition::ConsecutiveFailures { .. } => Some(f64::from(h.consecutive_failures)),
            Condition::LatencyP95 {
                window, min_calls, ..
            } => {
                let w = window.of(h);
                if w.calls < *min_calls {
                    return None;
                }
                w.p95_secs
            }
            Condition::LatencyDrift {
                window, min_calls, ..
            } => {
                let w = window.of(h);
                if w.calls < *min_calls {
                    return None;
                }
                match (w.p95_secs, h.latency_baseline_secs) {
                    (Some(p95), Some(base)) if base > 0.0 => Some(p95 / base),
                    _ => None,
                }
            }
            Condition::TokenBurn { window, .. } => Some(window.of(h).tokens_per_minute),
            Condition::CostBurn { window, .. } => Some(window.of(h).cost_usd_per_hour),
            Condition::Silence { .. } => h.seconds_since_last_call,
            Condition::ScoreBelow { .. } => Some(h.score),
            Condition::ResetSpike { window, .. } => Some(window.of(h).error_driven_resets as f64),
        }
    }

    /// Whether `value` makes the condition true (strictly past the threshold;
    /// `consecutive_failures` fires at the threshold).
    pub fn is_met(&self, value: f64) -> bool {
        let t = self.threshold();
        match self {
            Condition::ScoreBelow { .. } => value < t,
            Condition::ConsecutiveFailures { .. } => value >= t,
            _ => value > t,
        }
    }

    /// Whether `value` is far enough back past the threshold for a firing
    /// alert to clear, with hysteresis `margin` (a fraction of the threshold).
    pub fn is_clear(&self, value: f64, margin: f64) -> bool {
        let t = self.threshold();
        match self {
            Condition::ScoreBelow { .. } => value >= (t * (1.0 + margin)).min(1.0),
            Condition::ConsecutiveFailures { .. } => value < t * (1.0 - margin),
            _ => value <= t * (1.0 - margin),
        }
    }

    /// The unit the value is expressed in, for summaries.
    pub(crate) fn describe(&self, value: f64) -> String {
        match self {
            Condition::ErrorRate { window, .. } => {
                format!("error rate {:.1} % over {}", value * 100.0, window.as_str())
            }
            Condition::ConsecutiveFailures { .. } => format!("{value:.0} consecutive failures"),
            Condition::LatencyP95 { window, .. } => {
                format!("p95 latency {:.0} ms over {}", value * 1000.0, window.as_str())
            }
            Condition::LatencyDrift { window, .. } => {
                format!("p95 latency {value:.1}× its baseline over {}", window.as_str())
            }
            Condition::TokenBurn { window, .. } => {
                format!("{value:.0} tokens/min over {}", window.as_str())
            }
            Condition::CostBurn { window, .. } => format!("${value:.2}/h over {}", window.as_str()),
            Condition::Silence { .. } => format!("silent for {value:.0} s"),
            Condition::ScoreBelow { .. } => format!("health score {value:.2}"),
            Condition::ResetSpike { window, .. } => {
                format!("{value:.0} error-driven context resets over {}", window.as_str())
            }
        }
    }

    /// What no verdict means for the condition, for summaries.
    pub(crate) fn describe_no_verdict(&self) -> String {
        match self {
            Condition::ErrorRate {
                window, min_calls, ..
            } => format!(
                "no verdict, fewer than {min_calls} finished calls over {}",
                window.as_str()
            ),
            Condition::LatencyP95 {
                window, min_calls, ..
            } => format!(
                "no verdict, fewer than {min_calls} calls over {}",
                window.as_str()
            ),
            Condition::LatencyDrift {
                window, min_calls, ..
            } => format!(
                "no verdict, fewer than {min_calls} calls over {} or no baseline",
                window.as_str()
            ),
            _ => "no data".to_owned(),
        }
    }

    pub(crate) fn describe_threshold(&self) -> String {
        let t = self.threshold();
        match self {
            Condition::ErrorRate { .. } => format!("> {:.1} %", t * 100.0),
            Condition::ConsecutiveFailures { .. } => format!(">= {t:.0}"),
            Condition::LatencyP95 { .. } => format!("> {:.0} ms", t * 1000.0),
            Condition::LatencyDrift { .. } => format!("> {t:.1}×"),
            Condition::TokenBurn { .. } => format!("> {t:.0}/min"),
            Condition::CostBurn { .. } => format!("> ${t:.2}/h"),
            Condition::Silence { .. } => format!("> {t:.0} s"),
            Condition::ScoreBelow { .. } => format!("< {t:.2}"),
            Condition::ResetSpike { .. } => format!("> {t:.0}"),
        }
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let at = |name: &str| format!("{field}.{name}");
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::new(
                    at(name),
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        match self {
            Condition::ErrorRate { above, .. } => {
                if !(above.is_finite() && *above > 0.0 && *above <= 1.0) {
                    return Err(ConfigError::new(
                        at("above"),
                        format!("must be in (0, 1], got {above}"),
                    ));
                }
                Ok(())
            }
            Condition::ConsecutiveFailures { at_least } => {
                if *at_least == 0 {
                    return Err(ConfigError::new(at("at_least"), "must be at least 1"));
                }
                Ok(())
            }
            Condition::LatencyP95 { above_secs, .. } => positive("above_secs", *above_secs),
            Condition::LatencyDrift { factor, .. } => {
                if !(factor.is_finite() && *factor > 1.0) {
                    return Err(ConfigError::new(
                        at("factor"),
                        format!("must be above 1, got {factor}"),
                    ));
                }
                Ok(())
            }
            Condition::TokenBurn { above_per_minute, .. } => positive("above_per_minute", *above_per_minute),
            Condition::CostBurn {
                above_usd_per_hour, ..
            } => positive("above_usd_per_hour", *above_usd_per_hour),
            Condition::Silence { after, expect } => {
                if after.is_zero() {
                    return Err(ConfigError::new(at("after"), "must be longer than zero"));
                }
                if let Some(i) = expect.iter().position(|e| e.is_empty()) {
                    return Err(ConfigError::new(
                        format!("{field}.expect[{i}]"),
                        "must not be empty",
                    ));
                }
                Ok(())
            }
            Condition::ScoreBelow { below } => {
                if !(below.is_finite() && *below > 0.0 && *below <= 1.0) {
                    return Err(ConfigError::new(
                        at("below"),
                        format!("must be in (0, 1], got {below}"),
                    ));
                }
                Ok(())
            }
            Condition::ResetSpike { .. } => Ok(()),
        }
    }
}

/// What the monitor does when an alert starts firing. Executed once per
/// firing, through the controls given to the monitor's builder; the outcome is
/// recorded in the alert's [`actions`](crate::Alert::actions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Cool the alert's model down (model rules only), through
    /// [`ModelControl`](mantissa_core::control::ModelControl).
    CoolDown {
        /// How long.
        #[serde(with = "duration")]
        duration: Duration,
        /// Also end the cooldown when the alert resolves. Defaults to `false`.
        #[serde(default)]
        restore_on_resolve: bool,
    },
    /// Ask the reset layer to compact sessions' context, through
    /// [`SessionControl`](mantissa_core::control::SessionControl).
    ResetSessions {
        /// These sessions, by id.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sessions: Vec<String>,
        /// Also the sessions of the alert's subject among the registry's
        /// latest `from_journal` events (for an agent: its sessions; for a
        /// model or tool: the sessions that called it). The registry keeps no
        /// per-session windows, so its event journal is where sessions are
        /// found. Defaults to 0: none.
        #[serde(default)]
        from_journal: usize,
    },
    /// Pin the alert's agent to a tier (agent rules only), through
    /// [`TierControl`](mantissa_core::control::TierControl): lower it to
    /// save cost, raise it to regain precision.
    SetTier {
        /// The tier.
        tier: String,
        /// Lift the override when the alert resolves. Defaults to `true`.
        #[serde(default = "yes")]
        restore_on_resolve: bool,
    },
}

fn yes() -> bool {
    true
}

impl Action {
    /// Cool the model down for `duration`.
    pub fn cool_down(duration: Duration) -> Self {
        Action::CoolDown {
            duration,
            restore_on_resolve: false,
        }
    }

    /// Reset the alert subject's sessions among the latest `events` journal events.
    pub fn reset_recent_sessions(events: usize) -> Self {
        Action::ResetSessions {
            sessions: Vec::new(),
            from_journal: events,
        }
    }

    /// Reset these sessions.
    pub fn reset_sessions<I, S>(sessions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Action::ResetSessions {
            sessions: sessions.into_iter().map(Into::into).collect(),
            from_journal: 0,
        }
    }

    /// Pin the agent to `tier` while the alert fires.
    pub fn set_tier(tier: impl Into<String>) -> Self {
        Action::SetTier {
            tier: tier.into(),
            restore_on_resolve: true,
        }
    }

    /// The snake_case name of the action type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::CoolDown { .. } => "cool_down",
            Action::ResetSessions { .. } => "reset_sessions",
            Action::SetTier { .. } => "set_tier",
        }
    }

    fn validate(&self, field: &str, kind: SubjectKind) -> Result<(), ConfigError> {
        match self {
            Action::CoolDown { duration, .. } => {
                if kind != SubjectKind::Model {
                    return Err(ConfigError::new(
                        format!("{field}.type"),
                        format!("cool_down needs a model rule, this rule watches {kind}s"),
                    ));
                }
                if duration.is_zero() {
                    return Err(ConfigError::new(
                        format!("{field}.duration"),
                        "must be longer than zero",
                    ));
                }
                Ok(())
            }
            Action::ResetSessions {
                sessions,
                from_journal,
            } => {
                if sessions.is_empty() && *from_journal == 0 {
                    return Err(ConfigError::new(
                        field.to_owned(),
                        "reset_sessions needs `sessions` or `from_journal`",
                    ));
                }
                Ok(())
            }
            Action::SetTier { tier, .. } => {
                if kind != SubjectKind::Agent {
                    return Err(ConfigError::new(
                        format!("{field}.type"),
                        format!("set_tier needs an agent rule, this rule watches {kind}s"),
                    ));
                }
                if tier.is_empty() {
                    return Err(ConfigError::new(format!("{field}.tier"), "must not be empty"));
                }
                Ok(())
            }
        }
    }
}

fn default_hysteresis() -> f64 {
    DEFAULT_HYSTERESIS
}

fn is_zero(d: &Duration) -> bool {
    d.is_zero()
}

/// One alert rule. See the [module docs](self) for the TOML form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name; the `alertname` (and the `rule` metric label).
    pub name: String,
    /// Defaults to `warning`.
    #[serde(default)]
    pub severity: Severity,
    /// Which subjects the rule watches.
    pub subject: Selector,
    /// When it fires.
    pub condition: Condition,
    /// How long the condition must hold before the alert fires (`for` in
    /// TOML). Defaults to 0: fire on the first evaluation that sees it.
    #[serde(rename = "for", default, with = "duration", skip_serializing_if = "is_zero")]
    pub for_duration: Duration,
    /// Hysteresis margin, a fraction of the threshold in `[0, 1)`: a firing
    /// alert clears only once the value is back past `threshold × (1 −
    /// margin)` (`× (1 + margin)`, capped at 1, for `score_below`). Defaults
    /// to 0.1.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// How long the value must stay clear before a firing alert resolves.
    /// Defaults to 0.
    #[serde(default, with = "duration", skip_serializing_if = "is_zero")]
    pub keep_firing_for: Duration,
    /// Extra labels carried by the alert (and sent to Alertmanager).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What to do when the alert starts firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

impl Rule {
    /// A warning rule with no `for`, the default hysteresis, no labels and no action.
    pub fn new(name: impl Into<String>, subject: Selector, condition: Condition) -> Self {
        Self {
            name: name.into(),
            severity: Severity::default(),
            subject,
            condition,
            for_duration: Duration::ZERO,
            hysteresis: DEFAULT_HYSTERESIS,
            keep_firing_for: Duration::ZERO,
            labels: BTreeMap::new(),
            action: None,
        }
    }

    /// Sets the severity. Defaults to `warning`.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Sets how long the condition must hold before firing. Defaults to 0.
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.for_duration = d;
        self
    }

    /// Sets the hysteresis margin. Defaults to 0.1.
    pub fn hysteresis(mut self, margin: f64) -> Self {
        self.hysteresis = margin;
        self
    }

    /// Sets how long the value must stay clear before resolving. Defaults to 0.
    pub fn keep_firing_for(mut self, d: Duration) -> Self {
        self.keep_firing_for = d;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the action. Defaults to none.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// Checks the rule on its own (field names relative to the rule).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("rule")
    }

    pub(crate) fn validate_at(&self, field: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new(format!("{field}.name"), "must not be empty"));
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(ConfigError::new(
                format!("{field}.name"),
                format!(
                    "`{}` may only hold ASCII letters, digits, `_`, `-` and `.`",
                    self.name
                ),
            ));
        }
        if let Some(p) = &self.subject.name
            && p.is_empty()
        {
            return Err(ConfigError::new(
                format!("{field}.subject.name"),
                "must not be empty",
            ));
        }
        if matches!(self.condition, Condition::ResetSpike { .. }) && self.subject.kind != SubjectKind::Agent {
            return Err(ConfigError::new(
                format!("{field}.subject.kind"),
                "reset_spike watches agents (context resets are counted per agent)",
            ));
        }
        self.condition.validate(&format!("{field}.condition"))?;
        if !(self.hysteresis.is_finite() && (0.0..1.0).contains(&self.hysteresis)) {
            return Err(ConfigError::new(
                format!("{field}.hysteresis"),
                format!("must be in [0, 1), got {}", self.hysteresis),
            ));
        }
        for (k, v) in &self.labels {
            let reserved = ["alertname", "severity", "subject", "subject_kind"];
            if k.is_empty() || reserved.contains(&k.as_str()) {
                return Err(ConfigError::new(
                    format!("{field}.labels.{k}"),
                    "label names must be non-empty and not one of alertname, severity, subject, subject_kind",
                ));
            }
            if v.is_empty() {
                return Err(ConfigError::new(
                    format!("{field}.labels.{k}"),
                    "must not be empty",
                ));
            }
        }
        if let Some(a) = &self.action {
            a.validate(&format!("{field}.action"), self.subject.kind)?;
        }
        Ok(())
    }
}

/// A list of rules, as loaded from TOML (`[[rule]]` tables).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The rules, in evaluation order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
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

    /// Checks every rule, and that names are unique.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate_at(&format!("rule[{i}]"))?;
            if let Some(j) = self.rules[..i].iter().position(|r| r.name == rule.name) {
                return Err(ConfigError::new(
                    format!("rule[{i}].name"),
                    format!("`{}` is already the name of rule[{j}]", rule.name),
                ));
            }
        }
        Ok(())
    }

    /// The built-in starting set: see [`default_rules`].
    pub fn defaults() -> Self {
        Self {
            rules: default_rules(),
        }
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
            Condition::LatencyDrift {
                window: Window::OneMinute,
                factor: 3.0,
                min_calls: 10,
            },
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
