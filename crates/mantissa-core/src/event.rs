//! Health events: one record per LLM call, tool call, brittleness warning,
//! context reset or agent action, shared by the health layer (which writes
//! them), the reset layer (which writes warnings and resets, and reads tool
//! failures), the monitor's toolkit (which writes the actions agents log) and
//! the monitor.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::failure::Outcome;
use crate::ids::{AgentName, SessionId, Tier};
use crate::response::Usage;

/// What an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An LLM call (subject: the model).
    Llm,
    /// A tool call (subject: the tool).
    Tool,
    /// A brittleness warning (subject: the reason).
    ContextWarning,
    /// A context reset (subject: the strategy).
    ContextReset,
    /// An action an agent reports having taken, for example a manager's
    /// remediation logged through the health toolkit (subject: the action;
    /// `detail`: its outcome and details). Not a call: it counts in no
    /// window.
    AgentAction,
}

impl EventKind {
    /// The snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Llm => "llm",
            EventKind::Tool => "tool",
            EventKind::ContextWarning => "context_warning",
            EventKind::ContextReset => "context_reset",
            EventKind::AgentAction => "agent_action",
        }
    }
}

/// One health event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthEvent {
    /// Wall-clock time of the end of the call, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The agent.
    pub agent: AgentName,
    /// The session (events may carry it; metric labels never do).
    pub session: SessionId,
    /// What the event records.
    pub kind: EventKind,
    /// The model, the tool, or the warning/reset reason or strategy.
    pub subject: Arc<str>,
    /// The tier, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// How the call ended.
    pub outcome: Outcome,
    /// How long the call took.
    #[serde(with = "duration_secs")]
    pub duration: Duration,
    /// Tokens used.
    #[serde(default)]
    pub usage: Usage,
    /// Cost in US dollars.
    #[serde(default)]
    pub cost_usd: f64,
    /// Free-form detail (for resets: tokens before/after; for errors: the message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why, for a context reset: its trigger (the `reason` label of
    /// `mantissa_context_resets_total`, for example `consecutive_errors`;
    /// see [`catalog::is_error_driven_reset`](crate::catalog::is_error_driven_reset)).
    /// `None` for other events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Arc<str>>,
}

impl HealthEvent {
    /// An event stamped with the current wall-clock time, with zero usage and
    /// cost and no tier or detail.
    pub fn now(
        agent: AgentName,
        session: SessionId,
        kind: EventKind,
        subject: impl Into<Arc<str>>,
        outcome: Outcome,
        duration: Duration,
    ) -> Self {
        Self {
            timestamp_ms: unix_millis(SystemTime::now()),
            agent,
            session,
            kind,
            subject: subject.into(),
            tier: None,
            outcome,
            duration,
            usage: Usage::default(),
            cost_usd: 0.0,
            detail: None,
            reason: None,
        }
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Receives health events. Must be cheap and must not block: it is called on
/// the hot path of every call.
pub trait EventSink: Send + Sync + 'static {
    /// Records one event.
    fn record(&self, event: &HealthEvent);
}

impl<F> EventSink for F
where
    F: Fn(&HealthEvent) + Send + Sync + 'static,
{
    fn record(&self, event: &HealthEvent) {
        self(event)
    }
}

impl<T: EventSink + ?Sized> EventSink for Arc<T> {
    fn record(&self, event: &HealthEvent) {
        (**self).record(event)
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureClass;

    #[test]
    fn event_round_trips_through_json() {
        let mut e = HealthEvent::now(
            "trader".into(),
            "s1".into(),
            EventKind::Llm,
            "mock-small",
            Outcome::Failure(FailureClass::Timeout),
            Duration::from_millis(1500),
        );
        e.usage = Usage::new(10, 2);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"duration\":1.5"), "{json}");
        let back: HealthEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
