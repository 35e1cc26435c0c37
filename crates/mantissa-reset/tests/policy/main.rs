//! The brittleness policy through the layer, call by call: what each trigger
//! (turns, context, error streaks, error rate, latency drift, requested
//! resets, provider overflows) does, the warnings, and the token accounting
//! the context trigger reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::control::SessionControl;
use mantissa_core::{
    BoxError, EventKind, EventSink, FailureClass, HealthEvent, LlmError, LlmRequest, LlmResponse, Message,
    Outcome, Usage,
};
use mantissa_mock::metrics::MetricsCapture;
use mantissa_reset::{
    ContextReset, ContextWarning, ErrorRateRule, MemorySessionStore, ResetLayer, SessionStore, Stage,
    StagePlan, Strategy, Trigger,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn turns_trigger_resets_at_the_threshold_when_given_a_compaction_stage() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new().policy(compact_on_turns(quiet_policy(), 5));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen.clone()));
    let mut h = vec![Message::system("sys")];
    for turn in 1..=5 {
        h.push(Message::user(format!("q{turn}")));
        let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .unwrap();
        let reset = ContextReset::of(&resp);
        assert_eq!(reset.is_some(), turn == 5, "turn {turn}");
        if let Some(r) = reset {
            assert_eq!(r.reason, Trigger::Turns);
            assert_eq!(r.turns, 5);
            assert_eq!(
                r.strategy,
                Strategy::Trim,
                "no summarizer: the summarize stage trims"
            );
            assert!(r.note.as_deref().unwrap().contains("no summarizer"));
        }
        h.push(resp.message);
    }
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert_eq!((snap.turns, snap.turns_since_reset, snap.resets), (5, 0, 1));
    assert!(snap.last_reset.is_some());
}

#[tokio::test(start_paused = true)]
async fn turns_are_user_messages_and_llm_calls_are_counted_apart() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new();
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen));
    // 6 LLM calls per user message, 10 user messages: 60 calls, 10 turns.
    let responses = tool_loop_agent(&mut svc, "s", 10, 6).await;
    assert_eq!(responses.len(), 60);
    assert!(
        responses.iter().all(|r| ContextReset::of(r).is_none()),
        "turns alone do not compact, and 10 turns are far from any threshold"
    );
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert_eq!((snap.turns, snap.turns_since_reset, snap.resets), (10, 10, 0));
    assert_eq!(snap.llm_calls, 60);
}

#[test]
fn fifty_user_turns_warn_and_suggest_a_reset() {
    let capture = MetricsCapture::new();
    let events: Arc<Mutex<Vec<HealthEvent>>> = Default::default();
    let ev = events.clone();
    let (responses, snap) = capture.in_scope(|| {
        runtime().block_on(async {
            let seen: Seen = Default::default();
            let layer =
                ResetLayer::new().event_sink(move |e: &HealthEvent| ev.lock().unwrap().push(e.clone()));
            let store = layer.store().clone();
            let mut svc = layer.layer(model(seen));
            // Two LLM calls per user message (one tool round trip each).
            let responses = tool_loop_agent(&mut svc, "s", 52, 2).await;
            (responses, store.snapshot(&"s".into(), 20).unwrap())
        })
    });
    assert_eq!((snap.turns, snap.resets), (52, 0));
    // The warning comes with the 50th user message (call 99), once.
    let warned: Vec<usize> = responses
        .iter()
        .enumerate()
        .filter(|(_, r)| ContextWarning::of(r).is_some_and(|w| w.triggers.contains(Trigger::Turns)))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(warned, vec![99]);
    let w = ContextWarning::of(&responses[98]).unwrap();
    assert_eq!(w.turns, 50);
    assert!(responses.iter().all(|r| ContextReset::of(r).is_none()));

    let events = events.lock().unwrap();
    let turn_events: Vec<&HealthEvent> = events
        .iter()
        .filter(|e| e.kind == EventKind::ContextWarning && &*e.subject == "turns")
        .collect();
    assert_eq!(turn_events.len(), 1);
    let detail = turn_events[0].detail.as_deref().unwrap();
    assert!(
        detail.contains("50 user turns") && detail.contains("reset"),
        "{detail}"
    );
    assert!(events.iter().all(|e| e.kind != EventKind::ContextReset));

    let m = capture.snapshot();
    assert_eq!(
        m.counter(
            mantissa_core::catalog::CONTEXT_WARNINGS_TOTAL,
            &[("reason", "turns")]
        ),
        Some(1)
    );
    assert!(!m.contains(mantissa_core::catalog::CONTEXT_RESETS_TOTAL));
}

#[tokio::test(start_paused = true)]
async fn consecutive_llm_errors_trigger_a_reset_but_outages_do_not() {
    let fail = Arc::new(Mutex::new(Some(FailureClass::InvalidResponse)));
    let f = fail.clone();
    let inner = service_fn(move |_req: LlmRequest| {
        let class = *f.lock().unwrap();
        async move {
            match class {
                Some(c) => Err::<LlmResponse, BoxError>(Box::new(LlmError::new(c, "bad"))),
                None => Ok(LlmResponse::new("m", Message::assistant("ok"), Usage::new(10, 1))),
            }
        }
    });
    let layer = ResetLayer::new().policy(quiet_policy().max_consecutive_errors(Some(3)));
    let store = layer.store().clone();
    let mut svc = layer.layer(inner);
    let h = vec![Message::user("a"), Message::assistant("b"), Message::user("c")];
    for _ in 0..3 {
        assert!(
            send(&mut svc, LlmRequest::new("s", "a", h.clone()))
                .await
                .is_err()
        );
    }
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().consecutive_llm_errors, 3);
    *fail.lock().unwrap() = None;
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let r = ContextReset::of(&resp).expect("reset");
    assert_eq!(r.reason, Trigger::ConsecutiveErrors);
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().consecutive_llm_errors, 0);

    // 5xx errors are the provider's health, not the session's.
    *fail.lock().unwrap() = Some(FailureClass::UpstreamServer);
    for _ in 0..5 {
        assert!(
            send(&mut svc, LlmRequest::new("t", "a", h.clone()))
                .await
                .is_err()
        );
    }
    assert_eq!(store.snapshot(&"t".into(), 20).unwrap().consecutive_llm_errors, 0);
}

#[tokio::test(start_paused = true)]
async fn context_length_exceeded_forces_a_reset_on_the_next_call() {
    let fail = Arc::new(Mutex::new(true));
    let f = fail.clone();
    let inner = service_fn(move |_req: LlmRequest| {
        let failing = std::mem::replace(&mut *f.lock().unwrap(), false);
        async move {
            if failing {
                Err::<LlmResponse, BoxError>(Box::new(LlmError::new(
                    FailureClass::ContextLengthExceeded,
                    "too long",
                )))
            } else {
                Ok(LlmResponse::new("m", Message::assistant("ok"), Usage::new(10, 1)))
            }
        }
    });
    let mut svc = ResetLayer::new().policy(quiet_policy()).layer(inner);
    let h = vec![Message::user("a"), Message::assistant("b"), Message::user("c")];
    assert!(
        send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .is_err()
    );
    let resp = send(&mut svc, LlmRequest::new("s", "a", h)).await.unwrap();
    assert_eq!(
        ContextReset::of(&resp).unwrap().reason,
        Trigger::ContextLengthExceeded
    );
}

#[tokio::test(start_paused = true)]
async fn error_rate_warns_by_default_and_can_summarize() {
    let n = Arc::new(Mutex::new(0u32));
    let c = n.clone();
    let inner = service_fn(move |_req: LlmRequest| {
        let i = {
            let mut g = c.lock().unwrap();
            *g += 1;
            *g
        };
        async move {
            // Alternate failure and success: a 50 % error rate, never 2 in a row.
            if i % 2 == 0 {
                Err::<LlmResponse, BoxError>(Box::new(LlmError::new(FailureClass::InvalidResponse, "bad")))
            } else {
                Ok(LlmResponse::new("m", Message::assistant("ok"), Usage::new(10, 1)))
            }
        }
    });
    let policy = quiet_policy()
        .error_rate(Some(ErrorRateRule {
            threshold: 0.5,
            window: 10,
            min_calls: 6,
        }))
        .unwrap();
    let mut svc = ResetLayer::new().policy(policy.clone()).layer(inner.clone());
    let h = vec![Message::user("a")];
    let mut warned = 0;
    for _ in 0..12 {
        if let Ok(resp) = send(&mut svc, LlmRequest::new("s", "a", h.clone())).await {
            assert!(ContextReset::of(&resp).is_none());
            if let Some(w) = ContextWarning::of(&resp) {
                assert!(w.triggers.contains(Trigger::ErrorRate));
                warned += 1;
            }
        }
    }
    assert_eq!(warned, 1, "one warning on the rising edge");

    let plan = StagePlan::default().with(Trigger::ErrorRate, Stage::Summarize);
    let mut svc = ResetLayer::new().policy(policy.stages(plan)).layer(inner);
    let h = vec![Message::user("a"), Message::assistant("b"), Message::user("c")];
    let mut reset = None;
    for _ in 0..12 {
        if let Ok(resp) = send(&mut svc, LlmRequest::new("s2", "a", h.clone())).await
            && let Some(r) = ContextReset::of(&resp)
        {
            reset = Some(r.reason);
        }
    }
    assert_eq!(reset, Some(Trigger::ErrorRate));
}

#[tokio::test(start_paused = true)]
async fn latency_drift_against_the_sessions_own_baseline_warns() {
    let delay = Arc::new(Mutex::new(Duration::from_millis(100)));
    let d = delay.clone();
    let inner = service_fn(move |_req: LlmRequest| {
        let wait = *d.lock().unwrap();
        async move {
            tokio::time::sleep(wait).await;
            Ok::<_, BoxError>(LlmResponse::new("m", Message::assistant("ok"), Usage::new(10, 1)))
        }
    });
    let policy = quiet_policy().latency_drift(Some(2.0), 5).unwrap();
    let store = MemorySessionStore::new();
    let mut svc = ResetLayer::with_store(store.clone()).policy(policy).layer(inner);
    let h = vec![Message::user("a")];
    for _ in 0..6 {
        let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .unwrap();
        assert!(ContextWarning::of(&resp).is_none());
    }
    *delay.lock().unwrap() = Duration::from_millis(400);
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let w = ContextWarning::of(&resp).expect("drift warning");
    assert!(w.triggers.contains(Trigger::LatencyDrift));
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert!(
        (snap.latency_baseline_ms - 100.0).abs() < 1.0,
        "{}",
        snap.latency_baseline_ms
    );
    assert!(snap.brittleness > 0.0);
}

#[tokio::test(start_paused = true)]
async fn requested_reset_applies_on_the_next_call_only_for_known_sessions() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new().policy(quiet_policy());
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen));
    assert!(!store.request_reset(&"s".into(), "monitor says so"));
    let h = vec![
        Message::system("sys"),
        Message::user("a"),
        Message::assistant("b"),
        Message::user("c"),
    ];
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    assert!(store.request_reset(&"s".into(), "monitor says so"));
    assert_eq!(
        store.snapshot(&"s".into(), 20).unwrap().pending_reset.as_deref(),
        Some("monitor says so")
    );
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let r = ContextReset::of(&resp).unwrap();
    assert_eq!(r.reason, Trigger::Requested);
    assert_eq!(r.requested_reason.as_deref(), Some("monitor says so"));
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().pending_reset, None);
}

#[tokio::test(start_paused = true)]
async fn tool_failures_through_the_event_sink_raise_brittleness() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new().policy(quiet_policy().max_consecutive_errors(Some(3)));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen));
    let h = vec![Message::user("a"), Message::assistant("b"), Message::user("c")];
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let sink: Arc<dyn EventSink> = Arc::new(store.clone());
    let tool_event = |outcome| {
        HealthEvent::now(
            "a".into(),
            "s".into(),
            EventKind::Tool,
            "search",
            outcome,
            Duration::from_millis(5),
        )
    };
    for _ in 0..3 {
        sink.record(&tool_event(Outcome::Failure(FailureClass::ToolError)));
    }
    // Events of unknown sessions create nothing.
    sink.record(&HealthEvent::now(
        "a".into(),
        "unknown".into(),
        EventKind::Tool,
        "search",
        Outcome::Failure(FailureClass::ToolError),
        Duration::ZERO,
    ));
    assert!(store.snapshot(&"unknown".into(), 20).is_none());
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert_eq!((snap.consecutive_tool_errors, snap.recent_errors), (3, 3));
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let r = ContextReset::of(&resp).expect("reset");
    assert_eq!(r.reason, Trigger::ConsecutiveErrors);
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().brittleness, 1.0);
    // A success ends the streak.
    for _ in 0..2 {
        sink.record(&tool_event(Outcome::Failure(FailureClass::ToolError)));
    }
    sink.record(&tool_event(Outcome::Success));
    assert_eq!(
        store.snapshot(&"s".into(), 20).unwrap().consecutive_tool_errors,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_come_from_usage_plus_new_messages_only() {
    // The model under-reports nothing: usage = 1000 prompt tokens whatever
    // the history, so the tracker must use it rather than re-estimating.
    let inner = service_fn(|_req: LlmRequest| async move {
        Ok::<_, BoxError>(LlmResponse::new(
            "m",
            Message::assistant("reply"),
            Usage::new(1000, 10),
        ))
    });
    let store = MemorySessionStore::new();
    let mut svc = ResetLayer::with_store(store.clone())
        .policy(quiet_policy())
        .layer(inner);
    let mut h = vec![Message::user("a".repeat(400))];
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    // First call: estimated (400/4 + 4 framing).
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().context_tokens, 104);
    h.push(Message::assistant("reply"));
    h.push(Message::user("b".repeat(40)));
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    // Second: 1000 + 10 reported, plus the new user message (10 + 4).
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().context_tokens, 1024);
    // A retry of the same history: the provider's last count, no rescan.
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().context_tokens, 1010);
    // The caller trimmed its history itself: recounted once from scratch.
    let trimmed = vec![Message::user("c".repeat(80))];
    send(&mut svc, LlmRequest::new("s", "a", trimmed)).await.unwrap();
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().context_tokens, 24);
    assert_eq!(SessionStore::len(&store), 1);
}
