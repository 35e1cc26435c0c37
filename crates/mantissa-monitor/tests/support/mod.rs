//! Helpers shared by the monitor's test binaries (tower's `tests/support.rs`
//! habit): health events, a monitor with a recording receiver, recording
//! controls, sample alerts and an RFC 3339 reader.

#![allow(dead_code)]

use mantissa_core::control::{ModelControl, SessionControl, TierControl};
use mantissa_core::{AgentName, EventKind, FailureClass, HealthEvent, ModelId, Outcome, SessionId, Tier};
use mantissa_health::HealthRegistry;
use mantissa_monitor::{Alert, AlertState, Rule, Severity, SubjectKind, SystemMonitor};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn llm(agent: &str, session: &str, model: &str, outcome: Outcome, ms: u64) -> HealthEvent {
    HealthEvent::now(
        agent.into(),
        session.into(),
        EventKind::Llm,
        model,
        outcome,
        Duration::from_millis(ms),
    )
}

pub(crate) fn ok(registry: &HealthRegistry, model: &str, n: usize, ms: u64) {
    for _ in 0..n {
        registry.record_event(&llm("trader", "s1", model, Outcome::Success, ms));
    }
}

pub(crate) fn fail(registry: &HealthRegistry, model: &str, n: usize) {
    for _ in 0..n {
        registry.record_event(&llm(
            "trader",
            "s1",
            model,
            Outcome::Failure(FailureClass::UpstreamServer),
            50,
        ));
    }
}

pub(crate) type Received = Arc<Mutex<Vec<Alert>>>;

pub(crate) fn monitor_with(registry: &HealthRegistry, rules: Vec<Rule>) -> (SystemMonitor, Received) {
    let received: Received = Arc::default();
    let r = received.clone();
    let monitor = SystemMonitor::builder(registry.clone())
        .rules(rules)
        .receiver(move |a: &Alert| r.lock().unwrap().push(a.clone()))
        .build()
        .unwrap();
    (monitor, received)
}

pub(crate) fn states(alerts: &[Alert]) -> Vec<(String, AlertState)> {
    alerts.iter().map(|a| (a.subject.name.clone(), a.state)).collect()
}

pub(crate) const S: fn(u64) -> Duration = Duration::from_secs;

#[derive(Default)]
pub(crate) struct Controls {
    pub(crate) cooled: Mutex<Vec<(String, Duration)>>,
    pub(crate) restored: Mutex<Vec<String>>,
    pub(crate) resets: Mutex<Vec<(String, String)>>,
    pub(crate) tiers: Mutex<Vec<(String, Option<String>)>>,
}

impl ModelControl for Controls {
    fn cool_down(&self, model: &ModelId, duration: Duration) -> bool {
        self.cooled.lock().unwrap().push((model.to_string(), duration));
        model.as_str() != "unknown"
    }
    fn restore(&self, model: &ModelId) -> bool {
        self.restored.lock().unwrap().push(model.to_string());
        true
    }
}

impl SessionControl for Controls {
    fn request_reset(&self, session: &SessionId, reason: &str) -> bool {
        self.resets
            .lock()
            .unwrap()
            .push((session.to_string(), reason.to_owned()));
        session.as_str() != "gone"
    }
}

impl TierControl for Controls {
    fn set_agent_tier(&self, agent: &AgentName, tier: Option<Tier>) {
        self.tiers
            .lock()
            .unwrap()
            .push((agent.to_string(), tier.map(|t| t.to_string())));
    }
}

/// A context reset event of `agent` with trigger `reason`.
pub(crate) fn reset_event(agent: &str, reason: &str) -> HealthEvent {
    let mut e = HealthEvent::now(
        agent.into(),
        "s1".into(),
        EventKind::ContextReset,
        "summarize",
        Outcome::Success,
        Duration::ZERO,
    );
    e.reason = Some(reason.into());
    e
}

pub(crate) fn sample_alert(state: AlertState) -> Alert {
    Alert {
        rule: "model_errors".into(),
        subject: mantissa_monitor::SubjectRef::new(SubjectKind::Model, "mock-small"),
        severity: Severity::Critical,
        state,
        value: 0.8,
        threshold: 0.5,
        active_since_ms: 1_764_110_096_000,
        firing_since_ms: Some(1_764_110_126_000),
        resolved_at_ms: (state == AlertState::Resolved).then_some(1_764_110_186_000),
        labels: [("team".to_string(), "trading".to_string())].into(),
        summary: "model `mock-small`: error rate 80.0 % over 1m (> 50.0 %)".into(),
        actions: vec![],
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 time as Alertmanager
/// writes it (`2026-12-03T09:19:56.123Z`, fraction optional, any digits).
pub(crate) fn parse_rfc3339(s: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let frac: String = s[19..]
        .trim_start_matches('.')
        .chars()
        .take_while(char::is_ascii_digit)
        .chain("000".chars())
        .take(3)
        .collect();
    (secs * 1000 + frac.parse::<i64>().unwrap()) as u64
}
