//! Alerts and their lifecycle states.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rule::{Severity, SubjectKind};

/// Where an alert is in its lifecycle (as in Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds but not yet for the rule's `for` duration.
    Pending,
    /// The condition has held for `for`: sinks are notified.
    Firing,
    /// A firing alert whose value came back past the hysteresis bound (and
    /// stayed there for `keep_firing_for`).
    Resolved,
    /// A pending alert whose condition stopped holding before `for` elapsed:
    /// the closing entry of the timeline (receivers never hear of it, as
    /// they never heard of the pending alert).
    Lapsed,
}

impl AlertState {
    /// `pending`, `firing`, `resolved` or `lapsed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
            AlertState::Lapsed => "lapsed",
        }
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubjectRef {
    /// Agent, model or tool.
    pub kind: SubjectKind,
    /// Its label value.
    pub name: String,
}

impl SubjectRef {
    /// A subject.
    pub fn new(kind: SubjectKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for SubjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.kind, self.name)
    }
}

/// An action the monitor executed for an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The action type (`cool_down`, `reset_sessions`, `set_tier`, or
    /// `restore`/`clear_tier` on resolution).
    pub action: String,
    /// What it acted on (a model, a session, an agent).
    pub target: String,
    /// Whether the control accepted it (`false`: unknown target, or no
    /// control configured).
    pub ok: bool,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// One alert: a rule's verdict on one subject. Deduplicated by `(rule,
/// subject)`: at most one active alert per pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The subject.
    pub subject: SubjectRef,
    /// The rule's severity.
    pub severity: Severity,
    /// The lifecycle state at this notification.
    pub state: AlertState,
    /// The latest value of the condition (for a resolved or lapsed alert
    /// whose subject had no verdict any more, the last value seen; its
    /// `summary` says there was no verdict).
    pub value: f64,
    /// The threshold it is compared with.
    pub threshold: f64,
    /// When the condition started holding (entered pending), ms since the Unix epoch.
    pub active_since_ms: u64,
    /// When it started firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_since_ms: Option<u64>,
    /// When it resolved (or, for a lapsed alert, lapsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<u64>,
    /// The rule's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// One line for humans (and the `summary` annotation).
    pub summary: String,
    /// Actions executed for this alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionRecord>,
}

impl Alert {
    /// Whether the alert is firing.
    pub fn is_firing(&self) -> bool {
        self.state == AlertState::Firing
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} {} on {}: {}",
            self.severity, self.rule, self.state, self.subject, self.summary
        )
    }
}
