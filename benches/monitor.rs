//! Cost of one SystemMonitor tick over 1,000 subjects (250 agents, 650
//! models, 100 tools) with the default rules plus silence, latency and burn
//! rules (9 rules), 5 % of the models failing (so alerts are active), against
//! a baseline measured in the same run: the registry snapshot alone, which
//! every tick takes.
//!
//! Run: `cargo bench --bench monitor -- --warm-up-time 1 --measurement-time 3`
//!
//! - `monitor/snapshot_1000`: `HealthRegistry::snapshot()` (baseline);
//! - `monitor/tick_1000`: `SystemMonitor::evaluate_once` — snapshot, every
//!   rule over every subject, lifecycle, metrics (no recorder installed);
//! - `monitor/evaluate_1000`: `SystemMonitor::evaluate` on a snapshot taken
//!   beforehand — the monitor's own work.

#![allow(missing_docs)] // `criterion_group!` generates an undocumented public function.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mantissa_core::{EventKind, FailureClass, HealthEvent, Outcome, Usage};
use mantissa_health::HealthRegistry;
use mantissa_monitor::rule::default_rules;
use mantissa_monitor::{Condition, Rule, Selector, SystemMonitor, Window};
use tokio::time::Instant;

fn registry() -> HealthRegistry {
    let reg = HealthRegistry::new();
    for i in 0..650 {
        let agent = format!("agent-{}", i % 250);
        let model = format!("model-{i}");
        let failing = i % 20 == 0;
        for j in 0..12u64 {
            let outcome = if failing {
                Outcome::Failure(FailureClass::UpstreamServer)
            } else {
                Outcome::Success
            };
            let mut e = HealthEvent::now(
                agent.as_str().into(),
                "s".into(),
                EventKind::Llm,
                model.as_str(),
                outcome,
                Duration::from_millis(100 + 10 * j),
            );
            e.usage = Usage::new(500, 100);
            e.cost_usd = 0.001;
            reg.record_event(&e);
        }
    }
    for i in 0..100 {
        let e = HealthEvent::now(
            format!("agent-{}", i % 250).into(),
            "s".into(),
            EventKind::Tool,
            format!("tool-{i}"),
            Outcome::Success,
            Duration::from_millis(5),
        );
        reg.record_event(&e);
    }
    reg
}

fn bench(c: &mut Criterion) {
    let reg = registry();
    let snap = reg.snapshot();
    assert_eq!(snap.agents.len() + snap.models.len() + snap.tools.len(), 1000);
    let monitor = SystemMonitor::builder(reg.clone())
        .rules(default_rules())
        .rule(Rule::new(
            "agent_silent",
            Selector::agents(),
            Condition::silence(Duration::from_secs(600), ["agent-0", "agent-1", "reporter"]),
        ))
        .rule(Rule::new(
            "model_slow",
            Selector::models(),
            Condition::latency_p95(Window::OneMinute, 5.0),
        ))
        .rule(Rule::new(
            "agent_burn",
            Selector::agents(),
            Condition::cost_burn(Window::FifteenMinutes, 100.0),
        ))
        .publish_scores(false)
        .build()
        .expect("valid rules");
    monitor.evaluate_once(Instant::now());
    assert!(!monitor.active_alerts().is_empty(), "failing models alert");

    let mut g = c.benchmark_group("monitor");
    g.bench_function("snapshot_1000", |b| b.iter(|| black_box(reg.snapshot())));
    g.bench_function("tick_1000", |b| {
        b.iter(|| black_box(monitor.evaluate_once(Instant::now())))
    });
    g.bench_function("evaluate_1000", |b| {
        b.iter(|| black_box(monitor.evaluate(&snap, Instant::now())))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
