//! Each condition type through the monitor (error rate, streaks, latency,
//! drift, burn rates, silence, score, reset spikes), and rules loaded from a
//! TOML file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::catalog;
use mantissa_core::{EventKind, FailureClass, Outcome, Usage};
use mantissa_health::HealthRegistry;
use mantissa_monitor::{AlertState, Condition, Rule, RuleSet, Selector, Severity, SubjectKind, Window};
use tokio::time::advance;

#[path = "../support/mod.rs"]
mod support;
use support::*;

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
