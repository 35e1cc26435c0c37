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
//!
//! A [`Condition`] is a [`Signal`] (what is measured) compared with a
//! [`Threshold`] (above, below or at least a value). Files: `condition`
//! (signal × threshold), `selector`, `window`, `severity`, `action`, `toml`
//! (the TOML forms and field-pointing errors) and `defaults`.

use std::collections::BTreeMap;
use std::time::Duration;

use mantissa_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::duration;

mod action;
mod condition;
mod defaults;
mod selector;
mod severity;
mod toml;
mod window;

pub use action::Action;
pub use condition::{Comparison, Condition, Signal, Threshold};
pub use defaults::default_rules;
pub use selector::{Selector, SubjectKind};
pub use severity::Severity;
pub use window::Window;

/// Default hysteresis margin: a firing alert resolves only once the value is
/// 10 % back past its threshold.
pub const DEFAULT_HYSTERESIS: f64 = 0.1;

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
        if matches!(self.condition.signal(), Signal::ErrorDrivenResets { .. })
            && self.subject.kind != SubjectKind::Agent
        {
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
