//! The alert lifecycle (pending, firing, resolved, lapsed; hysteresis,
//! `keep_firing_for`, deduplication), actions, the alert metrics, the
//! background task, and a failing model behind a health layer end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::catalog;
use mantissa_core::{FailureClass, LlmRequest, Message, Outcome, TierSet};
use mantissa_health::{HealthLayer, HealthRegistry};
use mantissa_mock::MockLlm;
use mantissa_mock::metrics::{MetricsCapture, MetricsSnapshot};
use mantissa_monitor::{
    Action, Alert, AlertState, Condition, Rule, Selector, Severity, SystemMonitor, Window,
};
use std::sync::Arc;
use tokio::time::advance;
use tower::{Layer, ServiceExt};

#[path = "../support/mod.rs"]
mod support;
use support::*;

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

#[tokio::test(start_paused = true)]
async fn a_failing_mock_model_behind_a_health_layer_alerts() {
    let layer = HealthLayer::with_tiers(TierSet::default());
    let reg = layer.registry().clone();
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
