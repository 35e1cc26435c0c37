//! Monitor rules, lifecycle, actions, metrics, sinks and the toolkit, on
//! paused time (network sinks on loopback, real time with millisecond backoffs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mantissa_core::catalog;
use mantissa_core::control::{ModelControl, SessionControl, TierControl};
use mantissa_core::{
    AgentName, EventKind, FailureClass, HealthEvent, LlmRequest, Message, ModelId, Outcome, SessionId, Tier,
    TierSet, ToolRequest, Usage,
};
use mantissa_health::{HealthLayer, HealthRegistry};
use mantissa_mock::MockLlm;
use mantissa_mock::metrics::{MetricsCapture, MetricsSnapshot};
use mantissa_monitor::sink::alertmanager_payload;
use mantissa_monitor::{
    Action, Alert, AlertState, ChannelSink, Condition, HealthToolkit, Rule, RuleSet, Selector, Severity,
    SubjectKind, SystemMonitor, WebhookSink, Window,
};
use serde_json::{Value, json};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

// ---------- helpers ----------

fn llm(agent: &str, session: &str, model: &str, outcome: Outcome, ms: u64) -> HealthEvent {
    HealthEvent::now(
        agent.into(),
        session.into(),
        EventKind::Llm,
        model,
        outcome,
        Duration::from_millis(ms),
    )
}

fn ok(registry: &HealthRegistry, model: &str, n: usize, ms: u64) {
    for _ in 0..n {
        registry.record_event(&llm("trader", "s1", model, Outcome::Success, ms));
    }
}

fn fail(registry: &HealthRegistry, model: &str, n: usize) {
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

type Received = Arc<Mutex<Vec<Alert>>>;

fn monitor_with(registry: &HealthRegistry, rules: Vec<Rule>) -> (SystemMonitor, Received) {
    let received: Received = Arc::default();
    let r = received.clone();
    let monitor = SystemMonitor::builder(registry.clone())
        .rules(rules)
        .receiver(move |a: &Alert| r.lock().unwrap().push(a.clone()))
        .build()
        .unwrap();
    (monitor, received)
}

fn states(alerts: &[Alert]) -> Vec<(String, AlertState)> {
    alerts.iter().map(|a| (a.subject.name.clone(), a.state)).collect()
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[derive(Default)]
struct Controls {
    cooled: Mutex<Vec<(String, Duration)>>,
    restored: Mutex<Vec<String>>,
    resets: Mutex<Vec<(String, String)>>,
    tiers: Mutex<Vec<(String, Option<String>)>>,
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

// ---------- rules ----------

#[tokio::test(start_paused = true)]
async fn error_rate_needs_volume_then_goes_pending_firing_resolved() {
    let reg = HealthRegistry::new();
    let rule = Rule::new(
        "errors",
        Selector::models(),
        Condition::error_rate(Window::OneMinute, 0.5, 10),
    )
    .for_duration(S(20));
    let (monitor, received) = monitor_with(&reg, vec![rule]);

    fail(&reg, "m", 6);
    assert!(monitor.tick().is_empty(), "6 calls < min_calls 10");
    ok(&reg, "m", 2, 50);
    fail(&reg, "m", 2);
    let t = monitor.tick();
    assert_eq!(states(&t), [("m".into(), AlertState::Pending)]);
    assert!((t[0].value - 0.8).abs() < 1e-9);
    assert_eq!(t[0].threshold, 0.5);
    assert!(received.lock().unwrap().is_empty(), "pending is not sent");

    advance(S(10)).await;
    assert!(monitor.tick().is_empty(), "still pending");
    advance(S(10)).await;
    let t = monitor.tick();
    assert_eq!(states(&t), [("m".into(), AlertState::Firing)]);
    assert!(t[0].summary.contains("error rate 80.0 %"), "{}", t[0].summary);
    assert_eq!(monitor.firing_alerts().len(), 1);

    // The failures leave the 1-minute window: too few calls, no verdict, resolved.
    advance(S(61)).await;
    let t = monitor.tick();
    assert_eq!(states(&t), [("m".into(), AlertState::Resolved)]);
    assert!(t[0].resolved_at_ms.is_some());
    // The message describes the state at resolution, not the firing value.
    assert_eq!(
        t[0].summary,
        "model `m` recovered: no verdict, fewer than 10 finished calls over 1m (fired at > 50.0 %)"
    );
    let got = received.lock().unwrap();
    assert_eq!(
        got.iter().map(|a| a.state).collect::<Vec<_>>(),
        [AlertState::Firing, AlertState::Resolved]
    );
    assert!(monitor.active_alerts().is_empty());
    let timeline: Vec<_> = monitor.timeline().iter().map(|a| a.state).collect();
    assert_eq!(
        timeline,
        [AlertState::Pending, AlertState::Firing, AlertState::Resolved]
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_of_models_agents_and_tools() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![
            Rule::new("m", Selector::models(), Condition::consecutive_failures(3)),
            Rule::new("a", Selector::agents(), Condition::consecutive_failures(3)),
            Rule::new("t", Selector::tools(), Condition::consecutive_failures(2)),
        ],
    );
    fail(&reg, "m1", 2);
    assert!(monitor.tick().is_empty());
    fail(&reg, "m1", 1);
    let mut t = monitor.tick();
    t.sort_by(|a, b| a.rule.cmp(&b.rule));
    assert_eq!(t.len(), 2, "model and agent: {t:?}");
    assert!(
        t.iter().all(|a| a.state == AlertState::Firing),
        "for = 0 fires at once"
    );
    assert_eq!(t[0].subject.kind, SubjectKind::Agent);
    assert_eq!(t[1].subject.kind, SubjectKind::Model);

    for _ in 0..2 {
        let mut e = llm(
            "trader",
            "s1",
            "get_price",
            Outcome::Failure(FailureClass::ToolError),
            5,
        );
        e.kind = EventKind::Tool;
        reg.record_event(&e);
    }
    let t = monitor.tick();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].subject.kind, SubjectKind::Tool);
    assert_eq!(t[0].subject.name, "get_price");

    ok(&reg, "m1", 1, 10);
    let t = monitor.tick();
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|a| a.state == AlertState::Resolved));
}

#[tokio::test(start_paused = true)]
async fn latency_p95_above_an_absolute_bound() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![Rule::new(
            "slow",
            Selector::models(),
            Condition::latency_p95(Window::OneMinute, 2.0),
        )],
    );
    ok(&reg, "m", 10, 500);
    assert!(monitor.tick().is_empty());
    advance(S(61)).await;
    ok(&reg, "m", 10, 3000);
    let t = monitor.tick();
    assert_eq!(states(&t), [("m".into(), AlertState::Firing)]);
    assert!(t[0].value > 2.5 && t[0].value < 3.5, "{}", t[0].value);
    advance(S(61)).await;
    ok(&reg, "m", 10, 100);
    assert_eq!(states(&monitor.tick()), [("m".into(), AlertState::Resolved)]);
}

#[tokio::test(start_paused = true)]
async fn latency_drift_is_relative_to_the_subjects_own_baseline() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![Rule::new(
            "drift",
            Selector::models(),
            Condition::latency_drift(Window::OneMinute, 3.0),
        )],
    );
    // A slow model whose latency is normal for it does not alert.
    ok(&reg, "slow-but-steady", 300, 4000);
    ok(&reg, "fast", 300, 100);
    assert!(monitor.tick().is_empty());
    advance(S(61)).await;
    ok(&reg, "slow-but-steady", 10, 4000);
    ok(&reg, "fast", 10, 1000);
    let t = monitor.tick();
    assert_eq!(states(&t), [("fast".into(), AlertState::Firing)]);
    let base = reg.model("fast").unwrap().latency_baseline_secs.unwrap();
    assert!(t[0].value > 3.0 && (t[0].value - 1.0 / base).abs() / t[0].value < 0.15);
}

#[tokio::test(start_paused = true)]
async fn token_and_cost_burn_rates() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![
            Rule::new(
                "tokens",
                Selector::agents(),
                Condition::token_burn(Window::OneMinute, 10_000.0),
            ),
            Rule::new(
                "cost",
                Selector::agents(),
                Condition::cost_burn(Window::OneMinute, 6.0),
            ),
        ],
    );
    advance(S(60)).await; // a full minute of coverage
    let mut e = llm("trader", "s1", "m", Outcome::Success, 100);
    e.usage = Usage::new(4000, 1000);
    e.cost_usd = 0.05;
    reg.record_event(&e);
    assert!(monitor.tick().is_empty(), "5000 tokens/min, $3/h");
    reg.record_event(&e);
    reg.record_event(&e);
    let mut t = monitor.tick();
    t.sort_by(|a, b| a.rule.cmp(&b.rule));
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].rule, "cost");
    assert!((t[0].value - 9.0).abs() < 1e-6, "{}", t[0].value);
    assert_eq!(t[1].rule, "tokens");
    assert!((t[1].value - 15_000.0).abs() < 1e-6);
}

#[tokio::test(start_paused = true)]
async fn silence_of_expected_and_seen_agents() {
    let reg = HealthRegistry::new();
    let (monitor, received) = monitor_with(
        &reg,
        vec![Rule::new(
            "quiet",
            Selector::agents(),
            Condition::silence(S(300), ["reporter"]),
        )],
    );
    reg.record_event(&llm("trader", "s1", "m", Outcome::Success, 10));
    advance(S(200)).await;
    assert!(monitor.tick().is_empty());
    advance(S(101)).await;
    let mut t = monitor.tick();
    t.sort_by(|a, b| a.subject.cmp(&b.subject));
    assert_eq!(
        states(&t),
        [
            ("reporter".into(), AlertState::Firing),
            ("trader".into(), AlertState::Firing)
        ]
    );
    assert!(t[0].value >= 300.0);
    // The reporter speaks up: its alert resolves; the trader stays silent.
    reg.record_event(&llm("reporter", "s2", "m", Outcome::Success, 10));
    assert_eq!(
        states(&monitor.tick()),
        [("reporter".into(), AlertState::Resolved)]
    );
    assert_eq!(received.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn agent_score_below_threshold() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![
            Rule::new(
                "score",
                Selector::agents().named("tra*"),
                Condition::score_below(0.5),
            )
            .for_duration(S(5)),
        ],
    );
    fail(&reg, "m", 4);
    reg.record_event(&llm(
        "other",
        "s",
        "m",
        Outcome::Failure(FailureClass::Timeout),
        10,
    ));
    reg.record_event(&llm(
        "other",
        "s",
        "m",
        Outcome::Failure(FailureClass::Timeout),
        10,
    ));
    let t = monitor.tick();
    assert_eq!(
        states(&t),
        [("trader".into(), AlertState::Pending)],
        "`other` is filtered out"
    );
    advance(S(5)).await;
    let t = monitor.tick();
    assert_eq!(t[0].state, AlertState::Firing);
    assert!(t[0].value < 0.5);
}

/// A context reset event of `agent` with trigger `reason`.
fn reset_event(agent: &str, reason: &str) -> HealthEvent {
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

#[tokio::test(start_paused = true)]
async fn context_reset_spike_counts_only_error_driven_resets() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![Rule::new(
            "resets",
            Selector::agents(),
            Condition::reset_spike(Window::FifteenMinutes, 3),
        )],
    );
    // A busy agent compacts often for routine reasons: no spike.
    for reason in [
        "turns",
        "context_tokens",
        "context_length_exceeded",
        "latency_drift",
        "requested",
    ] {
        for _ in 0..2 {
            reg.record_event(&reset_event("busy", reason));
        }
    }
    assert_eq!(reg.agent("busy").unwrap().last_15m.context_resets, 10);
    assert_eq!(reg.agent("busy").unwrap().last_15m.error_driven_resets, 0);
    assert!(monitor.tick().is_empty(), "routine resets are no spike");

    for reason in ["consecutive_errors", "error_rate", "consecutive_errors"] {
        reg.record_event(&reset_event("trader", reason));
    }
    assert!(monitor.tick().is_empty(), "3 is not above 3");
    reg.record_event(&reset_event("trader", "turns"));
    assert!(monitor.tick().is_empty(), "a routine reset does not count");
    reg.record_event(&reset_event("trader", "error_rate"));
    let t = monitor.tick();
    assert_eq!(states(&t), [("trader".into(), AlertState::Firing)]);
    assert_eq!(t[0].value, 4.0);
    assert_eq!(
        t[0].summary,
        "agent `trader`: 4 error-driven context resets over 15m (> 3)"
    );
    advance(S(16 * 60)).await;
    assert_eq!(monitor.tick()[0].state, AlertState::Resolved);
}

/// The Prometheus alert counts the same reasons as the monitor's condition.
#[test]
fn the_prometheus_reset_spike_alert_counts_the_same_reasons() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/prometheus/alert_rules.yml"
    );
    let rules = std::fs::read_to_string(path).unwrap();
    let alert = &rules[rules.find("alert: MantissaContextResetSpike").expect("the alert")..];
    let expr = &alert[..alert.find("for:").unwrap()];
    let selector = "agent_reason:mantissa_context_resets:rate5m{reason=~\"";
    let at = expr.find(selector).expect("a reason selector") + selector.len();
    let regex = &expr[at..at + expr[at..].find('"').unwrap()];
    let mut prometheus: Vec<&str> = regex.split('|').collect();
    prometheus.sort_unstable();
    let mut monitor = catalog::ERROR_DRIVEN_RESET_REASONS.to_vec();
    monitor.sort_unstable();
    assert_eq!(prometheus, monitor);
}

// ---------- lifecycle ----------

#[tokio::test(start_paused = true)]
async fn a_pending_alert_that_lapses_closes_in_the_timeline() {
    let reg = HealthRegistry::new();
    let (monitor, received) = monitor_with(
        &reg,
        vec![Rule::new("streak", Selector::models(), Condition::consecutive_failures(2)).for_duration(S(30))],
    );
    fail(&reg, "m", 2);
    assert_eq!(monitor.tick()[0].state, AlertState::Pending);
    advance(S(20)).await;
    ok(&reg, "m", 1, 10);
    let t = monitor.tick();
    assert_eq!(t.len(), 1, "the lapse is a transition");
    assert_eq!(t[0].state.as_str(), "lapsed");
    assert_eq!(
        t[0].summary,
        "model `m` no longer pending: 0 consecutive failures (pending at >= 2)"
    );
    let timeline: Vec<&str> = monitor.timeline().iter().map(|a| a.state.as_str()).collect();
    assert_eq!(timeline, ["pending", "lapsed"]);
    assert!(received.lock().unwrap().is_empty(), "receivers never hear of it");
    assert!(monitor.active_alerts().is_empty());
    // A new streak starts a new pending period: `for` counts from it.
    fail(&reg, "m", 2);
    assert_eq!(monitor.tick()[0].state, AlertState::Pending);
    advance(S(20)).await;
    assert!(monitor.tick().is_empty());
    advance(S(10)).await;
    assert_eq!(monitor.tick()[0].state, AlertState::Firing);
    assert_eq!(received.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn hysteresis_stops_a_hovering_value_from_flapping() {
    let reg = HealthRegistry::new();
    let (monitor, received) = monitor_with(
        &reg,
        vec![
            Rule::new(
                "burn",
                Selector::agents(),
                Condition::reset_spike(Window::OneMinute, 10),
            )
            .hysteresis(0.2),
        ],
    );
    let reset = || reset_event("trader", "consecutive_errors");
    // 11 resets in the minute: fires.
    for _ in 0..11 {
        reg.record_event(&reset());
    }
    assert_eq!(monitor.tick()[0].state, AlertState::Firing);
    // The count hovers around the threshold (9..=11) as slots roll over:
    // never back to 8 (= 10 × (1 − 0.2)), so it keeps firing.
    for step in 0..24 {
        advance(S(5)).await;
        let target = [9u64, 11, 10, 9][step % 4];
        let now = reg.agent("trader").unwrap().last_1m.error_driven_resets;
        for _ in now..target {
            reg.record_event(&reset());
        }
        assert!(monitor.tick().is_empty(), "step {step}: no flapping");
    }
    assert_eq!(received.lock().unwrap().len(), 1);
    assert_eq!(monitor.firing_alerts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn keep_firing_for_requires_the_value_to_stay_clear() {
    let reg = HealthRegistry::new();
    let (monitor, _) = monitor_with(
        &reg,
        vec![
            Rule::new("streak", Selector::models(), Condition::consecutive_failures(2))
                .hysteresis(0.0)
                .keep_firing_for(S(30)),
        ],
    );
    fail(&reg, "m", 2);
    assert_eq!(monitor.tick()[0].state, AlertState::Firing);
    ok(&reg, "m", 1, 10);
    advance(S(20)).await;
    assert!(monitor.tick().is_empty(), "clear for 0 s");
    advance(S(20)).await;
    assert!(monitor.tick().is_empty(), "clear for 20 s < 30 s");
    fail(&reg, "m", 2); // back above: the clear period restarts
    advance(S(5)).await;
    assert!(monitor.tick().is_empty());
    ok(&reg, "m", 1, 10);
    assert!(monitor.tick().is_empty());
    advance(S(30)).await;
    let t = monitor.tick();
    assert_eq!(t[0].state, AlertState::Resolved);
    assert_eq!(
        t[0].summary,
        "model `m` recovered: 0 consecutive failures (fired at >= 2)"
    );
}

#[tokio::test(start_paused = true)]
async fn alerts_are_deduplicated_by_rule_and_subject() {
    let reg = HealthRegistry::new();
    let (monitor, received) = monitor_with(
        &reg,
        vec![
            Rule::new("streak", Selector::models(), Condition::consecutive_failures(2)),
            Rule::new(
                "streak_critical",
                Selector::models(),
                Condition::consecutive_failures(4),
            )
            .severity(Severity::Critical),
        ],
    );
    fail(&reg, "a", 4);
    fail(&reg, "b", 2);
    let t = monitor.tick();
    assert_eq!(t.len(), 3);
    for _ in 0..5 {
        advance(S(15)).await;
        fail(&reg, "a", 1);
        assert!(monitor.tick().is_empty(), "firing alerts are not re-sent");
    }
    assert_eq!(monitor.active_alerts().len(), 3);
    assert_eq!(received.lock().unwrap().len(), 3);
    let crit = monitor.alerts_at_least(Severity::Critical);
    assert_eq!(crit.len(), 1);
    assert_eq!(crit[0].subject.name, "a");
    assert!(crit[0].value >= 9.0, "the value is updated while firing");
}

// ---------- actions ----------

#[tokio::test(start_paused = true)]
async fn actions_run_on_firing_and_undo_on_resolve() {
    let reg = HealthRegistry::new();
    let controls = Arc::new(Controls::default());
    let received: Received = Arc::default();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(
            Rule::new("cool", Selector::models(), Condition::consecutive_failures(2)).action(
                Action::CoolDown {
                    duration: S(90),
                    restore_on_resolve: true,
                },
            ),
        )
        .rule(
            Rule::new("tier", Selector::agents(), Condition::consecutive_failures(2))
                .action(Action::set_tier("high")),
        )
        .rule(
            Rule::new("reset", Selector::agents(), Condition::consecutive_failures(3)).action(
                Action::ResetSessions {
                    sessions: vec!["gone".into()],
                    from_journal: 100,
                },
            ),
        )
        .model_control(controls.clone())
        .session_control(controls.clone())
        .tier_control(controls.clone())
        .receiver({
            let r = received.clone();
            move |a: &Alert| r.lock().unwrap().push(a.clone())
        })
        .build()
        .unwrap();

    reg.record_event(&llm(
        "trader",
        "s7",
        "m",
        Outcome::Failure(FailureClass::Timeout),
        10,
    ));
    reg.record_event(&llm(
        "trader",
        "s8",
        "m",
        Outcome::Failure(FailureClass::Timeout),
        10,
    ));
    reg.record_event(&llm("analyst", "s9", "m2", Outcome::Success, 10));
    reg.record_event(&llm(
        "trader",
        "s7",
        "m",
        Outcome::Failure(FailureClass::Timeout),
        10,
    ));
    let t = monitor.tick();
    assert_eq!(t.len(), 3);
    assert_eq!(
        controls.cooled.lock().unwrap().as_slice(),
        [("m".to_string(), S(90))]
    );
    assert_eq!(
        controls.tiers.lock().unwrap().as_slice(),
        [("trader".to_string(), Some("high".to_string()))]
    );
    let resets = controls.resets.lock().unwrap().clone();
    let sessions: Vec<&str> = resets.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        sessions,
        ["gone", "s7", "s8"],
        "explicit first, then the agent's recent sessions"
    );
    assert_eq!(resets[0].1, "alert reset");

    let reset_alert = t.iter().find(|a| a.rule == "reset").unwrap();
    assert_eq!(reset_alert.actions.len(), 3);
    assert!(!reset_alert.actions[0].ok, "unknown session reported as not ok");
    assert!(reset_alert.actions[1].ok);
    let active = monitor.active_alerts();
    let cool = active.iter().find(|a| a.rule == "cool").unwrap();
    assert_eq!(cool.actions[0].action, "cool_down");
    assert_eq!(
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|a| !a.actions.is_empty())
            .count(),
        3
    );

    ok(&reg, "m", 1, 10);
    let t = monitor.tick();
    assert_eq!(t.len(), 3);
    assert_eq!(controls.restored.lock().unwrap().as_slice(), ["m"]);
    assert_eq!(
        controls.tiers.lock().unwrap().last().unwrap(),
        &("trader".to_string(), None)
    );
    let timeline = monitor.timeline();
    assert!(
        timeline
            .iter()
            .any(|a| a.state == AlertState::Resolved && a.actions.iter().any(|x| x.action == "restore"))
    );
}

#[test]
fn actions_need_their_control_and_a_matching_subject() {
    let reg = HealthRegistry::new();
    let err = SystemMonitor::builder(reg.clone())
        .rule(
            Rule::new("cool", Selector::models(), Condition::consecutive_failures(2))
                .action(Action::cool_down(S(1))),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field, "rule[0].action");
    assert!(err.reason.contains("model_control"));
    let err = SystemMonitor::builder(reg.clone())
        .rule(
            Rule::new("tier", Selector::models(), Condition::consecutive_failures(2))
                .action(Action::set_tier("low")),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field, "rule[0].action.type");
    let err = SystemMonitor::builder(reg)
        .rule(Rule::new(
            "x",
            Selector::models(),
            Condition::consecutive_failures(2),
        ))
        .rule(Rule::new(
            "x",
            Selector::agents(),
            Condition::consecutive_failures(2),
        ))
        .build()
        .unwrap_err();
    assert_eq!(err.field, "rule[1].name");
}

#[test]
fn rules_load_from_a_toml_file() {
    let path = std::env::temp_dir().join(format!("mantissa-monitor-rules-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        r#"
        [[rule]]
        name = "model_down"
        severity = "critical"
        for = "1m"
        subject = { kind = "model", name = "gpt-*" }
        condition = { type = "error_rate", above = 0.3, min_calls = 20 }
        "#,
    )
    .unwrap();
    let set = RuleSet::from_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(set.rules[0].for_duration, S(60));
    assert_eq!(set.rules[0].severity, Severity::Critical);
    assert!(set.rules[0].subject.matches("gpt-4o"));
    let missing = RuleSet::from_file("/nonexistent/rules.toml").unwrap_err();
    assert!(missing.reason.contains("cannot read"));
}

// ---------- metrics ----------

#[test]
fn transitions_and_firing_gauge_are_metrics() {
    let capture = MetricsCapture::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let values = rt.block_on(async {
        let reg = HealthRegistry::new();
        let (monitor, _) = monitor_with(
            &reg,
            vec![
                Rule::new("streak", Selector::models(), Condition::consecutive_failures(2))
                    .severity(Severity::Critical)
                    .for_duration(S(10)),
            ],
        );
        fail(&reg, "m", 2);
        capture.in_scope(|| monitor.tick());
        advance(S(10)).await;
        capture.in_scope(|| monitor.tick());
        let firing = capture.snapshot();
        ok(&reg, "m", 1, 10);
        capture.in_scope(|| monitor.tick());
        (firing, capture.snapshot())
    });
    let find = |m: &MetricsSnapshot, name: &str, state: Option<&str>| -> Option<f64> {
        let mut labels = vec![("rule", "streak"), ("severity", "critical")];
        labels.extend(state.map(|s| ("state", s)));
        m.counter(name, &labels)
            .map(|c| c as f64)
            .or_else(|| m.gauge(name, &labels))
    };
    let (firing, after) = values;
    assert_eq!(find(&firing, catalog::ALERTS_TOTAL, Some("pending")), Some(1.0));
    assert_eq!(find(&firing, catalog::ALERTS_TOTAL, Some("firing")), Some(1.0));
    assert_eq!(find(&firing, catalog::ALERTS_FIRING, None), Some(1.0));
    assert!(
        firing.contains(catalog::AGENT_HEALTH_SCORE),
        "tick publishes scores"
    );
    assert_eq!(find(&after, catalog::ALERTS_TOTAL, Some("resolved")), Some(1.0));
    assert_eq!(find(&after, catalog::ALERTS_FIRING, None), Some(0.0));
}

// ---------- the background task ----------

#[tokio::test(start_paused = true)]
async fn background_task_ticks_on_its_interval_and_stops() {
    let reg = HealthRegistry::new();
    let received: Received = Arc::default();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(Rule::new("streak", Selector::models(), Condition::consecutive_failures(2)).for_duration(S(10)))
        .interval(S(5))
        .receiver({
            let r = received.clone();
            move |a: &Alert| r.lock().unwrap().push(a.clone())
        })
        .build()
        .unwrap();
    let handle = monitor.spawn();
    tokio::task::yield_now().await;
    fail(&reg, "m", 2);
    tokio::time::sleep(S(6)).await; // tick at 5 s: pending
    assert_eq!(monitor.active_alerts()[0].state, AlertState::Pending);
    assert!(received.lock().unwrap().is_empty());
    tokio::time::sleep(S(10)).await; // ticks at 10 s and 15 s: firing at 15 s
    assert_eq!(received.lock().unwrap().len(), 1);
    handle.shutdown().await;
    ok(&reg, "m", 1, 10);
    tokio::time::sleep(S(60)).await;
    assert_eq!(received.lock().unwrap().len(), 1, "no tick after shutdown");

    // Dropping the handle stops the task too.
    let handle = monitor.spawn();
    drop(handle);
    tokio::time::sleep(S(60)).await;
    assert_eq!(monitor.firing_alerts().len(), 1, "no tick after drop");
}

// ---------- through the health layer ----------

#[tokio::test(start_paused = true)]
async fn a_failing_mock_model_behind_a_health_layer_alerts() {
    let layer = HealthLayer::with_tiers(TierSet::default());
    let reg = layer.get_registry().clone();
    let mock = MockLlm::new();
    let control = mock.control();
    let llm = layer.layer(mock);
    let (monitor, received) = monitor_with(
        &reg,
        vec![Rule::new(
            "model_errors",
            Selector::models(),
            Condition::error_rate(Window::OneMinute, 0.5, 5),
        )],
    );
    let call = |llm: &mantissa_health::Health<MockLlm>| {
        let req = LlmRequest::new("s1", "trader", vec![Message::user("hi")]).with_model("mock-small");
        llm.clone().oneshot(req)
    };
    for _ in 0..5 {
        call(&llm).await.unwrap();
    }
    assert!(monitor.tick().is_empty());
    control.fail_model("mock-small", FailureClass::UpstreamServer);
    for _ in 0..10 {
        assert!(call(&llm).await.is_err());
    }
    let t = monitor.tick();
    assert_eq!(states(&t), [("mock-small".into(), AlertState::Firing)]);
    control.recover_model("mock-small");
    advance(S(61)).await;
    for _ in 0..10 {
        call(&llm).await.unwrap();
    }
    assert_eq!(monitor.tick()[0].state, AlertState::Resolved);
    assert_eq!(received.lock().unwrap().len(), 2);
}

// ---------- sinks ----------

#[tokio::test(start_paused = true)]
async fn channel_sink_is_bounded_and_counts_drops() {
    let reg = HealthRegistry::new();
    let (sink, mut rx) = ChannelSink::new(2);
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(Rule::new(
            "streak",
            Selector::models(),
            Condition::consecutive_failures(1),
        ))
        .receiver(sink.clone())
        .build()
        .unwrap();
    for m in ["a", "b", "c", "d"] {
        fail(&reg, m, 1);
    }
    assert_eq!(monitor.tick().len(), 4);
    assert_eq!(sink.dropped(), 2);
    assert_eq!(rx.recv().await.unwrap().state, AlertState::Firing);
    assert_eq!(rx.try_recv().unwrap().state, AlertState::Firing);
    assert!(rx.try_recv().is_err());
}

fn sample_alert(state: AlertState) -> Alert {
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

#[test]
fn alertmanager_payload_shape() {
    let body = alertmanager_payload(
        &[
            sample_alert(AlertState::Firing),
            sample_alert(AlertState::Resolved),
        ],
        Some("http://monitor/alerts"),
    );
    let arr = body.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let a = &arr[0];
    assert_eq!(a["labels"]["alertname"], "model_errors");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["subject_kind"], "model");
    assert_eq!(a["labels"]["subject"], "mock-small");
    assert_eq!(a["labels"]["team"], "trading");
    assert!(a["annotations"]["summary"].as_str().unwrap().contains("80.0 %"));
    assert!(
        a["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("threshold 0.5")
    );
    assert_eq!(a["startsAt"], "2025-11-25T22:35:26.000Z");
    assert!(a.get("endsAt").is_none(), "firing alerts have no end");
    assert_eq!(a["generatorURL"], "http://monitor/alerts");
    assert_eq!(arr[1]["endsAt"], "2025-11-25T22:36:26.000Z");
}

mod webhook {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn sink(server: &MockServer) -> mantissa_monitor::sink::WebhookSinkBuilder {
        WebhookSink::builder(format!("{}/api/v2/alerts", server.uri()))
            .backoff(Duration::from_millis(1), Duration::from_millis(4))
            .timeout(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn posts_alertmanager_json() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v2/alerts"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let sink = sink(&server).build().unwrap();
        use mantissa_monitor::HealthAlertReceiver;
        sink.receive_health_alert(&sample_alert(AlertState::Pending)); // ignored
        sink.receive_health_alert(&sample_alert(AlertState::Firing));
        sink.close().await;
        let reqs = server.received_requests().await.unwrap();
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            reqs[0].headers.get("content-type").unwrap().to_str().unwrap(),
            "application/json"
        );
        let body: Value = serde_json::from_slice(&reqs[0].body).unwrap();
        // A firing alert is valid for 4 × max(re-send 1 min, evaluation 15 s).
        let firing = sample_alert(AlertState::Firing);
        let until = firing.firing_since_ms.unwrap() + 4 * 60_000;
        assert_eq!(
            body,
            json!([mantissa_monitor::sink::alertmanager_alert(
                &firing,
                Some(until),
                None
            )])
        );
        assert_eq!(body[0]["endsAt"], "2025-11-25T22:39:26.000Z");
        assert_eq!(sink.stats().sent, 1);
        assert_eq!(sink.stats().dropped, 0);
    }

    #[tokio::test]
    async fn retries_5xx_then_delivers_but_not_4xx() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let s = sink(&server).build().unwrap();
        use mantissa_monitor::HealthAlertReceiver;
        s.receive_health_alert(&sample_alert(AlertState::Firing));
        s.close().await;
        assert_eq!(server.received_requests().await.unwrap().len(), 3);
        let st = s.stats();
        assert_eq!((st.sent, st.retries, st.dropped), (1, 2, 0));

        let bad = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400))
            .mount(&bad)
            .await;
        let s = sink(&bad).build().unwrap();
        s.receive_health_alert(&sample_alert(AlertState::Firing));
        s.close().await;
        assert_eq!(
            bad.received_requests().await.unwrap().len(),
            1,
            "a 4xx is not retried"
        );
        assert_eq!(s.stats().dropped, 1);
    }

    #[tokio::test]
    async fn retries_transport_errors_with_backoff_then_gives_up() {
        // A port nobody listens on: connection refused, a transport error.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = WebhookSink::builder(format!("http://127.0.0.1:{port}/alerts"))
            .backoff(Duration::from_millis(1), Duration::from_millis(2))
            .max_attempts(3)
            .build()
            .unwrap();
        use mantissa_monitor::HealthAlertReceiver;
        s.receive_health_alert(&sample_alert(AlertState::Resolved));
        s.close().await;
        let st = s.stats();
        assert_eq!((st.queued, st.sent, st.retries, st.dropped), (1, 0, 2, 1));
    }

    #[test]
    fn building_needs_a_valid_url_and_a_runtime() {
        let err = WebhookSink::builder("not a url").build().unwrap_err();
        assert!(
            err.to_string().starts_with("invalid webhook url `not a url`"),
            "{err}"
        );
        let err = WebhookSink::builder("http://127.0.0.1:9/").build().unwrap_err();
        assert_eq!(err.to_string(), "webhook sink needs a tokio runtime");
    }

    #[tokio::test]
    async fn bounded_queue_drops_and_counts_while_the_webhook_is_down() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let capture = MetricsCapture::new();
        let s = sink(&server)
            .queue_capacity(3)
            .max_attempts(3)
            .max_batch(10)
            .build()
            .unwrap();
        use mantissa_monitor::HealthAlertReceiver;
        capture.in_scope(|| {
            for _ in 0..10 {
                s.receive_health_alert(&sample_alert(AlertState::Firing));
            }
        });
        // The worker has not run yet: 3 queued, 7 dropped at once.
        assert_eq!(s.stats().queued, 3);
        assert_eq!(s.stats().dropped, 7);
        let dropped = capture
            .snapshot()
            .counter(catalog::ALERT_SINK_DROPPED_TOTAL, &[("sink", "webhook")]);
        assert_eq!(dropped, Some(7));
        s.close().await;
        // One batch of 3, three attempts, then given up.
        assert_eq!(server.received_requests().await.unwrap().len(), 3);
        let st = s.stats();
        assert_eq!((st.sent, st.dropped, st.retries), (0, 10, 2));
        s.receive_health_alert(&sample_alert(AlertState::Firing));
        assert_eq!(s.stats().dropped, 11, "closed sinks drop");
    }

    /// Milliseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub(super) fn parse_rfc3339(s: &str) -> u64 {
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + d - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
        (secs * 1000 + n(20..23)) as u64
    }

    /// The alerts of every POST the server received, in order.
    async fn posted(server: &MockServer) -> Vec<Value> {
        let mut out = Vec::new();
        for r in server.received_requests().await.unwrap() {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            out.extend(body.as_array().unwrap().iter().cloned());
        }
        out
    }

    #[tokio::test]
    async fn firing_alerts_are_resent_with_ends_at_ahead_and_resolved_at_resolution() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        // No client timeout: on paused time it would fire while the request
        // waits for the (real-time) server.
        let s = sink(&server).client(reqwest::Client::new()).build().unwrap();
        let reg = HealthRegistry::new();
        let monitor = SystemMonitor::builder(reg.clone())
            .rule(Rule::new("streak", Selector::models(), Condition::consecutive_failures(1)).hysteresis(0.0))
            .receiver(s.clone())
            .build()
            .unwrap();
        assert_eq!(monitor.interval(), S(15));
        tokio::time::pause();

        fail(&reg, "m", 1);
        let t = monitor.tick();
        assert_eq!(t[0].state, AlertState::Firing);
        let t0 = t[0].firing_since_ms.unwrap();
        // Evaluations within the re-send interval (1 min) send nothing more.
        for _ in 0..3 {
            advance(S(15)).await;
            assert!(monitor.tick().is_empty());
        }
        // 1 min after it was first sent: re-sent (not a transition).
        advance(S(15)).await;
        assert!(monitor.tick().is_empty());
        ok(&reg, "m", 1, 10);
        advance(S(1)).await;
        let t = monitor.tick();
        assert_eq!(t[0].state, AlertState::Resolved);
        let resolved_at = t[0].resolved_at_ms.unwrap();
        tokio::time::resume();
        s.close().await;

        let alerts = posted(&server).await;
        let summary: Vec<(String, u64)> = alerts
            .iter()
            .map(|a| {
                (
                    a["annotations"]["description"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .nth(1)
                        .unwrap()
                        .to_owned(),
                    parse_rfc3339(a["endsAt"].as_str().expect("every alert has endsAt")),
                )
            })
            .collect();
        // endsAt of a firing alert: 4 × max(1 min re-send, 15 s evaluation) ahead.
        assert_eq!(
            summary,
            [
                ("firing".to_owned(), t0 + 4 * 60_000),
                ("firing".to_owned(), t0 + 60_000 + 4 * 60_000),
                ("resolved".to_owned(), resolved_at),
            ]
        );
        assert_eq!(resolved_at, t0 + 61_000);
        for a in &alerts {
            assert_eq!(parse_rfc3339(a["startsAt"].as_str().unwrap()), t0);
        }
        assert_eq!(s.stats().sent, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_webhook_does_not_block_the_monitor() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
            .mount(&server)
            .await;
        let s = sink(&server)
            .timeout(Duration::from_millis(300))
            .max_attempts(1)
            .queue_capacity(4)
            .build()
            .unwrap();
        let reg = HealthRegistry::new();
        let monitor = SystemMonitor::builder(reg.clone())
            .rule(Rule::new(
                "streak",
                Selector::models(),
                Condition::consecutive_failures(1),
            ))
            .receiver(s.clone())
            .build()
            .unwrap();
        fail(&reg, "a", 1);
        assert_eq!(monitor.tick().len(), 1);
        // Wait until the worker's POST is in flight (the server has it).
        while server.received_requests().await.unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // The webhook hangs; ticks still complete and alerts queue up.
        for m in ["b", "c", "d"] {
            fail(&reg, m, 1);
            assert_eq!(monitor.tick().len(), 1);
        }
        let st = s.stats();
        assert_eq!((st.queued, st.sent), (4, 0));
        s.close().await;
        assert_eq!(s.stats().dropped, 4, "timed out (no retries configured)");
    }
}

// ---------- toolkit ----------

/// A small validator for the JSON Schema subset the toolkit uses: object
/// with typed properties, `enum`, `required`, `additionalProperties: false`.
fn validate(schema: &Value, args: &Value) -> Result<(), String> {
    let obj = args.as_object().ok_or("not an object")?;
    let props = schema["properties"].as_object().unwrap();
    for r in schema["required"].as_array().unwrap() {
        if !obj.contains_key(r.as_str().unwrap()) {
            return Err(format!("missing {r}"));
        }
    }
    for (k, v) in obj {
        let p = props.get(k).ok_or(format!("unknown {k}"))?;
        if p["type"] == "string" && !v.is_string() {
            return Err(format!("{k} not a string"));
        }
        if let Some(e) = p.get("enum")
            && !e.as_array().unwrap().contains(v)
        {
            return Err(format!("{k} not in enum"));
        }
    }
    Ok(())
}

#[test]
fn tool_schemas_are_structurally_valid_json_schema() {
    let specs = HealthToolkit::tool_specs();
    let names: Vec<&str> = specs.iter().map(|s| s.function.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "get_agent_health_summary",
            "list_active_alerts",
            "get_session_health",
            "log_agent_action"
        ]
    );
    let types = [
        "string", "number", "integer", "boolean", "object", "array", "null",
    ];
    for spec in &specs {
        let json = serde_json::to_value(spec).unwrap();
        assert_eq!(json["type"], "function");
        assert!(!json["function"]["description"].as_str().unwrap().is_empty());
        let p = &spec.function.parameters;
        assert_eq!(p["type"], "object");
        assert_eq!(p["additionalProperties"], false);
        let props = p["properties"].as_object().unwrap();
        for (name, prop) in props {
            assert!(types.contains(&prop["type"].as_str().unwrap()), "{name}");
            assert!(prop["description"].is_string(), "{name} is described");
            if let Some(e) = prop.get("enum") {
                assert!(e.as_array().unwrap().iter().all(Value::is_string));
            }
        }
        for r in p["required"].as_array().unwrap() {
            assert!(
                props.contains_key(r.as_str().unwrap()),
                "required {r} is a property"
            );
        }
    }
    let schema = |i: usize| &specs[i].function.parameters;
    assert!(validate(schema(0), &json!({"agent": "trader", "window": "15m"})).is_ok());
    assert!(validate(schema(0), &json!({"window": "1y"})).is_err());
    assert!(validate(schema(1), &json!({"severity": "critical"})).is_ok());
    assert!(validate(schema(2), &json!({})).is_err());
    assert!(
        validate(
            schema(3),
            &json!({"agent": "m", "action": "a", "outcome": "ok", "details": "d"})
        )
        .is_ok()
    );
    assert!(validate(schema(3), &json!({"agent": "m", "action": "a", "outcome": 1})).is_err());
}

#[tokio::test(start_paused = true)]
async fn toolkit_validates_arguments_and_reflects_the_registry() {
    let reg = HealthRegistry::new();
    let monitor = SystemMonitor::builder(reg.clone())
        .rule(
            Rule::new("streak", Selector::models(), Condition::consecutive_failures(2))
                .severity(Severity::Critical),
        )
        .rule(
            Rule::new(
                "agent_streak",
                Selector::agents(),
                Condition::consecutive_failures(2),
            )
            .severity(Severity::Info),
        )
        .build()
        .unwrap();
    let toolkit = HealthToolkit::new(reg.clone())
        .with_monitor(monitor.clone())
        .with_session_health(|s: &SessionId| (s.as_str() == "s1").then(|| json!({"turns": 3})))
        .action_log_capacity(2);
    // Through a HealthLayer: the toolkit's own calls are measured as tools.
    let layer = HealthLayer::new().registry(reg.clone());
    let tools = layer.layer(toolkit.clone());
    let call = |name: &str, args: Value| {
        let req = ToolRequest::new("mon-1", "monitor", "c", name, args);
        let tools = tools.clone();
        async move { tools.oneshot(req).await.unwrap() }
    };

    ok(&reg, "m", 3, 200);
    fail(&reg, "m", 2);
    monitor.tick();

    let r = call(
        "get_agent_health_summary",
        json!({"agent": "trader", "window": "15m"}),
    )
    .await;
    assert!(!r.is_error, "{}", r.content);
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["window"], "15m");
    assert_eq!(v["agent"]["calls"], 5);
    assert_eq!(v["agent"]["failures"], 2);
    assert_eq!(v["agent"]["consecutive_failures"], 2);
    assert_eq!(v["agent"]["errors"]["upstream_server_error"], 2);
    assert_eq!(v["agent"]["active_alerts"][0]["rule"], "agent_streak");

    let r = call("get_agent_health_summary", Value::Null).await;
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["window"], "1m");
    let agents: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        agents.contains(&"trader") && agents.contains(&"monitor"),
        "{agents:?}"
    );
    assert_eq!(v["models"][0]["name"], "m");
    assert_eq!(v["models"][0]["active_alerts"][0]["severity"], "critical");

    let r = call("list_active_alerts", json!({"severity": "critical"})).await;
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["alerts"][0]["subject"]["name"], "m");
    assert_eq!(v["alerts"][0]["state"], "firing");
    let r = call("list_active_alerts", json!("{}")).await;
    assert_eq!(serde_json::from_str::<Value>(&r.content).unwrap()["count"], 2);

    let r = call("get_session_health", json!({"session": "s1"})).await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.content).unwrap()["health"]["turns"],
        3
    );

    for i in 0..3 {
        let r = call(
            "log_agent_action",
            json!({"agent": "manager", "action": format!("a{i}"), "outcome": "success", "details": "x"}),
        )
        .await;
        assert!(!r.is_error);
    }
    let log = toolkit.action_log();
    assert_eq!(
        log.iter().map(|l| l.action.as_str()).collect::<Vec<_>>(),
        ["a1", "a2"],
        "bounded"
    );

    let bad = [
        (
            "get_agent_health_summary",
            json!({"agent": 7}),
            "`agent` must be a string, got a number",
        ),
        (
            "get_agent_health_summary",
            json!({"window": "1y"}),
            "unknown window `1y`",
        ),
        (
            "get_agent_health_summary",
            json!({"agent": "nobody"}),
            "unknown agent `nobody` (known: monitor, trader)",
        ),
        (
            "get_agent_health_summary",
            json!({"agnet": "x"}),
            "unknown argument `agnet`",
        ),
        (
            "get_agent_health_summary",
            json!([1]),
            "arguments must be a JSON object, got an array",
        ),
        (
            "list_active_alerts",
            json!({"severity": "fatal"}),
            "unknown severity `fatal`",
        ),
        (
            "get_session_health",
            json!({}),
            "missing required argument `session`",
        ),
        (
            "get_session_health",
            json!({"session": "s2"}),
            "unknown session `s2`",
        ),
        (
            "log_agent_action",
            json!({"agent": "m", "action": "a"}),
            "missing required argument `outcome`",
        ),
        (
            "log_agent_action",
            json!({"agent": "m", "action": "", "outcome": "ok"}),
            "`action` must not be empty",
        ),
        (
            "log_agent_action",
            json!({"agent": "m", "action": "a", "outcome": "x".repeat(3000)}),
            "too long",
        ),
        ("delete_everything", json!({}), "unknown tool `delete_everything`"),
    ];
    for (tool, args, want) in bad {
        let r = call(tool, args.clone()).await;
        assert!(r.is_error, "{tool} {args}");
        assert!(r.content.contains(want), "{tool} {args}: {}", r.content);
    }
    // Every toolkit call went through the health layer as a tool call.
    let measured = reg.tool("get_agent_health_summary").unwrap();
    assert_eq!(measured.last_1m.calls, 7);
    assert_eq!(measured.last_1m.errors_of(FailureClass::ToolError), 5);

    // Without a monitor or a provider the tools say so.
    let bare = HealthToolkit::new(reg);
    assert!(
        bare.call("list_active_alerts", &json!({}))
            .content
            .contains("no monitor")
    );
    assert!(
        bare.call("get_session_health", &json!({"session": "s1"}))
            .content
            .contains("no session-health provider")
    );
}

#[tokio::test(start_paused = true)]
async fn log_agent_action_records_a_health_event_in_the_journal_summary_and_sinks() {
    let reg = HealthRegistry::new();
    let seen: Arc<Mutex<Vec<HealthEvent>>> = Arc::default();
    let toolkit = HealthToolkit::new(reg.clone()).event_sink({
        let seen = seen.clone();
        move |e: &HealthEvent| seen.lock().unwrap().push(e.clone())
    });
    ok(&reg, "m", 1, 10);
    let req = ToolRequest::new(
        "mgr-1",
        "manager",
        "c1",
        "log_agent_action",
        json!({"agent": "manager", "action": "cool_down m", "outcome": "success", "details": "error rate 80 %"}),
    );
    let r = toolkit.clone().oneshot(req).await.unwrap();
    assert!(!r.is_error, "{}", r.content);
    let failed = toolkit.call(
        "log_agent_action",
        &json!({"agent": "manager", "action": "reset s1", "outcome": "failed"}),
    );
    assert!(!failed.is_error, "{}", failed.content);

    // The registry's journal holds the action as a health event…
    let journal = reg.recent(10);
    let actions: Vec<&HealthEvent> = journal
        .iter()
        .filter(|e| e.kind.as_str() == "agent_action")
        .collect();
    assert_eq!(actions.len(), 2, "{journal:?}");
    let e = actions[0];
    assert_eq!(
        (e.agent.as_str(), e.session.as_str(), &*e.subject),
        ("manager", "mgr-1", "cool_down m")
    );
    assert_eq!(e.outcome, Outcome::Success);
    assert_eq!(e.detail.as_deref(), Some("outcome: success; error rate 80 %"));
    assert_eq!(
        actions[1].outcome,
        Outcome::Failure(FailureClass::Other),
        "a failed action is not a success"
    );
    // …that counts as no call of any agent.
    assert_eq!(reg.agent_names(), ["trader"]);
    assert_eq!(reg.agent("trader").unwrap().total_calls, 1);

    // get_agent_health_summary shows it, with or without `agent`.
    let v: Value =
        serde_json::from_str(&toolkit.call("get_agent_health_summary", &Value::Null).content).unwrap();
    let listed: Vec<(&str, &str)> = v["recent_actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("cool_down m", "success"), ("reset s1", "error")]);
    let r = toolkit.call("get_agent_health_summary", &json!({"agent": "manager"}));
    assert!(!r.is_error, "{}", r.content);
    let v: Value = serde_json::from_str(&r.content).unwrap();
    assert_eq!(v["agent"], Value::Null, "no calls, no windows");
    assert_eq!(v["recent_actions"][1]["detail"], "outcome: failed");
    let v: Value = serde_json::from_str(
        &toolkit
            .call("get_agent_health_summary", &json!({"agent": "trader"}))
            .content,
    )
    .unwrap();
    assert_eq!(v["recent_actions"], json!([]));

    // The attached sink got the same events.
    let got = seen.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], *actions[0]);
    assert_eq!(got[1], *actions[1]);
}
