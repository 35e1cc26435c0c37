//! The registry's rolling windows: counts, failure classes and quantiles,
//! context resets, expiry, failure streaks and scores, and agent health as
//! the final outcome judged against the serving tier's baseline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{
    BoxError, EventKind, EventSink, FailureClass, HealthEvent, LlmError, LlmRequest, LlmResponse, Message,
    Outcome, TierSet, Usage,
};
use mantissa_health::{HealthLayer, HealthRegistry, Scope};
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn registry_windows_hold_counts_classes_and_quantiles() {
    let registry = HealthRegistry::new();
    let layer = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    // Latency from the request's metadata; every tenth call fails with a 503.
    let inner = service_fn(|req: LlmRequest| async move {
        let ms: u64 = req.metadata["ms"].parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if ms % 10 == 0 {
            return Err::<LlmResponse, BoxError>(Box::new(
                LlmError::new(FailureClass::UpstreamServer, "unavailable").with_status(503),
            ));
        }
        Ok(LlmResponse::new(
            "mock-small",
            Message::assistant("ok"),
            Usage::new(10, 1),
        ))
    });
    let mut svc = layer.layer(inner);
    for ms in 1..=100u64 {
        let req = chat("s", "trader", Some("mock-small")).with_metadata("ms", ms.to_string());
        let _ = svc.ready().await.unwrap().call(req).await;
    }

    let snapshot = registry.snapshot();
    let m = snapshot.model("mock-small").unwrap();
    let w = &m.last_15m;
    assert_eq!((w.calls, w.successes, w.failures), (100, 90, 10));
    assert_eq!(w.errors_of(FailureClass::UpstreamServer), 10);
    assert!(close(w.error_rate, 0.1));
    assert_eq!(w.input_tokens, 900);
    for (got, want) in [(w.p50_secs, 0.050), (w.p95_secs, 0.095), (w.p99_secs, 0.099)] {
        let got = got.unwrap();
        assert!((got - want).abs() / want <= 0.125, "{got} vs {want}");
    }
    assert_eq!(m.consecutive_failures, 1);
    assert_eq!(m.total_calls, 100);
    // 100 calls over 5.05 s: the burn rate is per covered second.
    assert!(w.tokens_per_minute > 0.0 && w.cost_usd_per_hour > 0.0);
    // The model's score: its median against its own baseline (the agent's
    // latency is judged per call against its tier baseline, and this ramp
    // of latencies is an agent slowing down).
    let score = m.score;
    assert!(close(score, (91.0 / 101.0) * 0.8), "{score}");

    // Snapshots serialize for the toolkit and the monitor.
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(
        json["models"]["mock-small"]["last_15m"]["errors"]["upstream_server_error"],
        10
    );

    // Silence and expiry.
    tokio::time::advance(Duration::from_secs(120)).await;
    let m = registry.model("mock-small").unwrap();
    assert_eq!(m.last_1m.calls, 0);
    assert_eq!(m.last_15m.calls, 100);
    assert!(m.seconds_since_last_call.unwrap() >= 120.0);

    let recent = registry.recent(3);
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[2].outcome, Outcome::Failure(FailureClass::UpstreamServer));
    assert_eq!(recent[2].duration, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn registry_counts_context_resets_per_window() {
    let registry = HealthRegistry::new();
    let event = |kind| {
        HealthEvent::now(
            "trader".into(),
            "s".into(),
            kind,
            "summarize",
            Outcome::Success,
            Duration::ZERO,
        )
    };
    for _ in 0..3 {
        registry.record(&event(EventKind::ContextReset));
    }
    registry.record(&event(EventKind::ContextWarning));
    let w = registry.agent("trader").unwrap();
    assert_eq!((w.last_1m.context_resets, w.last_1m.context_warnings), (3, 1));
    assert_eq!(w.last_1m.calls, 0);
    tokio::time::advance(Duration::from_secs(65)).await;
    let w = registry.agent("trader").unwrap();
    assert_eq!((w.last_1m.context_resets, w.last_15m.context_resets), (0, 3));
    assert_eq!(registry.recent(10).len(), 4);
}

/// A failure streak is as old as its last call: a model that failed five
/// times and then got no traffic (cooled down) for 15 minutes scores 1 again
/// and shows no streak, as the score's documentation says.
#[tokio::test(start_paused = true)]
async fn a_failure_streak_expires_with_the_window() {
    let registry = HealthRegistry::new();
    let layer = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    let mut svc = layer.layer(service_fn(|_req: LlmRequest| async {
        Err::<LlmResponse, BoxError>(Box::new(
            LlmError::new(FailureClass::UpstreamServer, "unavailable").with_status(503),
        ))
    }));
    for _ in 0..5 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(chat("s", "trader", Some("mock-small")))
            .await;
    }
    let m = registry.model("mock-small").unwrap();
    assert_eq!(m.consecutive_failures, 5);
    assert!(m.score < 0.1, "{}", m.score);

    // Still inside the window: the streak holds.
    tokio::time::advance(Duration::from_secs(14 * 60)).await;
    assert_eq!(registry.model("mock-small").unwrap().consecutive_failures, 5);

    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    for h in [
        registry.model("mock-small").unwrap(),
        registry.agent("trader").unwrap(),
    ] {
        assert_eq!(h.consecutive_failures, 0, "{}", h.name);
        assert_eq!(h.score, 1.0, "{}", h.name);
        assert_eq!(h.last_failure, Some(FailureClass::UpstreamServer));
    }
}

/// A successful probe after a streak ends the streak: the score rises at once.
#[tokio::test(start_paused = true)]
async fn a_successful_probe_shows_in_the_score() {
    let registry = HealthRegistry::new();
    let layer = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    let mut svc = layer.layer(service_fn(move |_req: LlmRequest| {
        let failing = f.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if failing {
                return Err::<LlmResponse, BoxError>(Box::new(LlmError::new(
                    FailureClass::Timeout,
                    "timed out",
                )));
            }
            Ok(LlmResponse::new(
                "mock-small",
                Message::assistant("ok"),
                Usage::new(5, 1),
            ))
        }
    }));
    for _ in 0..5 {
        let _ = svc
            .ready()
            .await
            .unwrap()
            .call(chat("s", "trader", Some("mock-small")))
            .await;
    }
    let before = registry.model("mock-small").unwrap().score;
    tokio::time::advance(Duration::from_secs(60)).await;
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    svc.ready()
        .await
        .unwrap()
        .call(chat("s", "trader", Some("mock-small")))
        .await
        .unwrap();
    let after = registry.model("mock-small").unwrap();
    assert_eq!(after.consecutive_failures, 0);
    // 1 success of 6 calls: (1 + 1) / (6 + 1), no streak factor.
    assert!(close(after.score, 2.0 / 7.0), "{before} -> {}", after.score);
    assert!(after.score > 4.0 * before);
}

/// Agent health is what the agent experienced. Under a router, per-model
/// layers record attempts ([`Scope::Attempt`]) and a layer above the router
/// records each call's final outcome ([`Scope::Outcome`]): a failed attempt
/// the router recovered from is the model's failure, not the agent's; and
/// moving the agent to a slower tier is not the agent getting slower.
#[tokio::test(start_paused = true)]
async fn agent_health_is_the_final_outcome_against_the_tier_baseline() {
    let registry = HealthRegistry::new();
    let base = HealthLayer::with_registry(registry.clone()).tiers(TierSet::default());
    // Upstreams: `mock-small` always fails, `mock-medium` answers in 20 ms,
    // `mock-large` in 800 ms.
    let small = base
        .clone()
        .scope(Scope::Attempt)
        .model(TierSet::default().catalog().get("mock-small").unwrap().clone())
        .layer(service_fn(|_req: LlmRequest| async {
            Err::<LlmResponse, BoxError>(Box::new(
                LlmError::new(FailureClass::UpstreamServer, "down").with_status(503),
            ))
        }));
    let medium = base.clone().scope(Scope::Attempt).layer(llm(
        "mock-medium",
        Usage::new(10, 2),
        Duration::from_millis(20),
    ));
    let large = base.clone().scope(Scope::Attempt).layer(llm(
        "mock-large",
        Usage::new(10, 2),
        Duration::from_millis(800),
    ));
    // A tiny router: `low` tries small then falls back to medium; `high` goes to large.
    let router = service_fn(move |mut req: LlmRequest| {
        let (mut small, mut medium, mut large) = (small.clone(), medium.clone(), large.clone());
        async move {
            if req.tier.as_ref().map(|t| t.as_str()) == Some("high") {
                req.model = Some("mock-large".into());
                return large.ready().await?.call(req).await;
            }
            let mut attempt = req.clone();
            attempt.model = Some("mock-small".into());
            if let Ok(r) = small.ready().await?.call(attempt).await {
                return Ok(r);
            }
            req.model = Some("mock-medium".into());
            req.tier = Some("medium".into());
            medium.ready().await?.call(req).await
        }
    });
    let mut agent = base.clone().scope(Scope::Outcome).layer(router);

    for _ in 0..30 {
        let req = chat("s", "trader", None).with_tier("low");
        agent.ready().await.unwrap().call(req).await.unwrap();
    }
    let trader = registry.agent("trader").unwrap();
    assert_eq!((trader.last_1m.calls, trader.last_1m.failures), (30, 0));
    assert_eq!(trader.consecutive_failures, 0);
    assert_eq!(trader.score, 1.0);
    let small_h = registry.model("mock-small").unwrap();
    assert_eq!(small_h.last_1m.failures, 30);
    assert_eq!(registry.model("mock-medium").unwrap().last_1m.successes, 30);
    // The agent's tokens and cost are those of the calls that served it.
    assert_eq!(trader.last_1m.input_tokens, 300);
    assert!(trader.last_1m.cost_usd > 0.0);

    // Triage moves the agent to the slow top tier: 40 times slower, as expected of that tier.
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..30 {
        let req = chat("s", "trader", None).with_tier("high");
        agent.ready().await.unwrap().call(req).await.unwrap();
    }
    let trader = registry.agent("trader").unwrap();
    assert!(trader.last_1m.p50_secs.unwrap() > 0.7);
    assert_eq!(
        trader.score, 1.0,
        "latency is judged against the serving tier's baseline"
    );

    // The same tier getting slower is the agent getting slower.
    let slow_large = base.clone().scope(Scope::Attempt).layer(llm(
        "mock-large",
        Usage::new(10, 2),
        Duration::from_millis(4_000),
    ));
    let mut slow = base.clone().scope(Scope::Outcome).layer(slow_large);
    tokio::time::advance(Duration::from_secs(61)).await;
    for _ in 0..5 {
        let req = chat("s", "trader", Some("mock-large")).with_tier("high");
        slow.ready().await.unwrap().call(req).await.unwrap();
    }
    let trader = registry.agent("trader").unwrap();
    assert!(trader.score < 0.5, "{}", trader.score);
}
