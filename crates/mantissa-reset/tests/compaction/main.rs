//! Compaction through the layer: the invariants over arbitrary histories
//! (property tests), each stage (clear, summarize, trim, the current turn
//! as last resort, respawn), their fallbacks, and compactions that can
//! remove nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::control::SessionControl;
use mantissa_core::{
    BoxError, EventKind, FailureClass, HealthEvent, LlmError, LlmRequest, LlmResponse, Message, Role,
    SessionId, Usage,
};
use mantissa_mock::metrics::MetricsCapture;
use mantissa_reset::{
    BrittlenessPolicy, CLEARED_PREFIX, ContextReset, ContextWarning, PlaceholderClearer, ResetLayer,
    SUMMARY_NAME, Stage, StagePlan, StandardNote, Strategy, SummaryConfig, Trigger,
};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, service_fn};

#[path = "../support/mod.rs"]
mod support;
use support::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every stage, on arbitrary histories with tool calls, keeps the
    /// invariants; re-sending the same history applies the remembered reset
    /// idempotently.
    #[test]
    fn compaction_keeps_invariants_and_is_idempotent(
        history in arb_history(),
        stage in prop::sample::select(vec![Stage::ClearToolResults, Stage::Summarize, Stage::Respawn]),
        with_summarizer in any::<bool>(),
        window in 300u32..6000,
    ) {
        runtime().block_on(async move {
            let seen: Seen = Default::default();
            let plan = StagePlan::default().with(Trigger::Requested, stage);
            let mut layer = ResetLayer::new()
                .policy(quiet_policy().stages(plan))
                .default_window(window)
                .tool_result_clearer(PlaceholderClearer { keep_last: 1, at_least: 1 });
            if with_summarizer {
                layer = layer.summarizer(summarizer_ok());
            }
            let store = layer.store().clone();
            let mut svc = layer.layer(model(seen.clone()));
            let session = SessionId::new("p");
            // Introduce the session, then request a reset.
            send(&mut svc, LlmRequest::new("p", "a", vec![Message::user("hi")])).await.unwrap();
            assert!(store.request_reset(&session, "test"));
            let resp = send(&mut svc, LlmRequest::new("p", "a", history.clone())).await.unwrap();
            let sent = seen.lock().unwrap().last().unwrap().messages().to_vec();
            let notice = ContextReset::of(&resp).cloned();
            if let Some(n) = &notice {
                check_invariants(&history, &n.history);
                prop_assert!(n.fits || n.note.is_some(), "over budget without a reason");
                prop_assert_eq!(&sent, &*n.history);
                if n.strategy == Strategy::Respawn {
                    prop_assert!(n.new_session.is_some());
                }
            } else {
                prop_assert_eq!(&sent, &history);
            }
            // The same history again (on the session the call went out under):
            // the remembered reset applies and gives the same context.
            let again_session = notice.as_ref().and_then(|n| n.new_session.clone()).unwrap_or(session);
            let resp2 = send(&mut svc, LlmRequest::new(again_session, "a", history.clone())).await.unwrap();
            prop_assert!(ContextReset::of(&resp2).is_none());
            let sent2 = seen.lock().unwrap().last().unwrap().messages().to_vec();
            prop_assert_eq!(sent2, sent);
            Ok(())
        })?;
    }

    /// A caller that adopts the compacted history and one that keeps resending
    /// its full history reach the same effective context on every turn.
    #[test]
    fn adopting_and_resending_callers_agree(
        history in arb_history(),
        max_turns in 2u32..6,
        extra in prop::collection::vec(1usize..300, 6..12),
    ) {
        runtime().block_on(async move {
            let seen: Seen = Default::default();
            let layer = ResetLayer::new()
                .policy(compact_on_turns(BrittlenessPolicy::default(), max_turns))
                .default_window(4000)
                .summarizer(summarizer_ok())
                .summary(SummaryConfig::new().keep_turns(1));
            let mut svc = layer.layer(model(seen.clone()));
            let mut adopt = history.clone();
            let mut resend = history.clone();
            let mut resets = 0;
            for (i, len) in extra.into_iter().enumerate() {
                let ra = send(&mut svc, LlmRequest::new("adopt", "a", adopt.clone())).await.unwrap();
                let sa = seen.lock().unwrap().last().unwrap().messages().to_vec();
                let rr = send(&mut svc, LlmRequest::new("resend", "a", resend.clone())).await.unwrap();
                let sr = seen.lock().unwrap().last().unwrap().messages().to_vec();
                prop_assert_eq!(&sa, &sr, "turn {}", i);
                prop_assert_eq!(ContextReset::of(&ra).is_some(), ContextReset::of(&rr).is_some());
                if let Some(n) = ContextReset::of(&ra) {
                    check_invariants(&adopt, &n.history);
                    adopt = n.history.to_vec();
                    resets += 1;
                }
                adopt.push(ra.message);
                resend.push(rr.message);
                let next = Message::user(format!("next {i} {}", "z".repeat(len)));
                adopt.push(next.clone());
                resend.push(next);
            }
            prop_assert!(resets >= 1);
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn context_trigger_warns_then_clears_old_tool_results() {
    let seen: Seen = Default::default();
    let events: Arc<Mutex<Vec<HealthEvent>>> = Default::default();
    let ev = events.clone();
    let layer = ResetLayer::new()
        .policy(quiet_policy().context_thresholds(Some(0.75), Some(0.85)).unwrap())
        .default_window(10_000)
        .warning_note(StandardNote)
        .event_sink(move |e: &HealthEvent| ev.lock().unwrap().push(e.clone()));
    let mut svc = layer.layer(model(seen.clone()));
    // ~ 8 turns x 260 tokens ≈ 2,100 tokens: quiet.
    let h = tool_heavy_history(8);
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    assert!(ContextWarning::of(&resp).is_none());
    // ~ 30 turns ≈ 7,900 tokens: warning (0.75), note injected.
    let h = tool_heavy_history(30);
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let w = ContextWarning::of(&resp).expect("warning");
    assert!(w.triggers.contains(Trigger::ContextWarning));
    assert!(ContextReset::of(&resp).is_none());
    let sent = seen.lock().unwrap().last().unwrap().messages().to_vec();
    assert_eq!(sent.len(), h.len() + 1);
    assert_eq!(sent.last().unwrap().name.as_deref(), Some("mantissa_note"));
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == EventKind::ContextWarning)
    );
    // Warnings fire on the rising edge only.
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    assert!(ContextWarning::of(&resp).is_none());
    // ~ 34 turns ≈ 8,900 tokens: compaction by clearing old tool results.
    let h = tool_heavy_history(34);
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let r = ContextReset::of(&resp).expect("reset");
    assert_eq!(
        (r.reason, r.strategy),
        (Trigger::ContextTokens, Strategy::ClearToolResults)
    );
    assert!(r.fits && r.tokens_after <= r.target_tokens && r.tokens_before > r.tokens_after);
    assert_eq!(r.messages_after, h.len(), "clearing keeps every message");
    let cleared = r
        .history
        .iter()
        .filter(|m| m.text().starts_with(CLEARED_PREFIX))
        .count();
    assert_eq!(cleared, 34 - 3, "the last three results stay");
    check_invariants(&h, &r.history);
    let reset_events: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::ContextReset)
        .cloned()
        .collect();
    assert_eq!(reset_events.len(), 1);
    assert_eq!(&*reset_events[0].subject, "clear_tool_results");
}

#[tokio::test(start_paused = true)]
async fn clearing_escalates_to_summarize_when_not_enough() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new()
        .policy(quiet_policy().context_thresholds(None, Some(0.85)).unwrap())
        .default_window(10_000)
        .summarizer(summarizer_ok());
    let mut svc = layer.layer(model(seen.clone()));
    // Large user messages, small tool results: clearing cannot reach 0.6.
    let mut h = vec![Message::system("sys")];
    for t in 0..40 {
        h.push(Message::user("w".repeat(1000) + &t.to_string()));
        h.push(Message::assistant("ok"));
    }
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let r = ContextReset::of(&resp).expect("reset");
    assert_eq!(
        (r.reason, r.strategy),
        (Trigger::ContextTokens, Strategy::Summarize)
    );
    assert!(r.fits);
    assert_eq!(r.history[0], Message::system("sys"));
    assert_eq!(r.history[1].name.as_deref(), Some(SUMMARY_NAME));
    assert!(r.history[1].text().contains("summary of"));
    check_invariants(&h, &r.history);
}

#[tokio::test(start_paused = true)]
async fn summarizer_failure_and_timeout_fall_back_to_trimming() {
    for mode in ["error", "timeout", "ok"] {
        let summarizer = service_fn(move |_req: LlmRequest| async move {
            match mode {
                "error" => Err::<LlmResponse, BoxError>(Box::new(LlmError::new(
                    FailureClass::UpstreamServer,
                    "down",
                ))),
                "timeout" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    unreachable!()
                }
                _ => Ok(LlmResponse::new(
                    "s",
                    Message::assistant("short summary"),
                    Usage::default(),
                )),
            }
        });
        let seen: Seen = Default::default();
        let layer = ResetLayer::new()
            .policy(quiet_policy())
            .summarizer(summarizer)
            .summary(SummaryConfig::new().timeout(Duration::from_secs(5)));
        let store = layer.store().clone();
        let mut svc = layer.layer(model(seen));
        let mut h = vec![Message::system("sys")];
        for t in 0..6 {
            h.push(Message::user(format!("q{t}")));
            h.push(Message::assistant(format!("a{t}")));
        }
        h.push(Message::user("last"));
        send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .unwrap();
        assert!(store.request_reset(&"s".into(), "test"));
        let started = tokio::time::Instant::now();
        let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .unwrap();
        let r = ContextReset::of(&resp).expect("reset");
        check_invariants(&h, &r.history);
        match mode {
            "error" => {
                assert_eq!(r.strategy, Strategy::Trim);
                assert!(
                    r.note
                        .as_deref()
                        .unwrap()
                        .contains("summarizer failed (upstream_server_error)")
                );
            }
            "timeout" => {
                assert_eq!(r.strategy, Strategy::Trim);
                assert!(
                    r.note.as_deref().unwrap().contains("timed out after 5s"),
                    "{:?}",
                    r.note
                );
                assert_eq!(started.elapsed(), Duration::from_secs(5));
            }
            _ => {
                assert_eq!(r.strategy, Strategy::Summarize);
                assert!(r.history.iter().any(|m| m.text().contains("short summary")));
            }
        }
        // Two turns kept (default keep_turns = 2): q5/a5 and last.
        assert_eq!(r.history.iter().filter(|m| m.role == Role::User).count(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn respawn_continues_under_a_new_session() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new()
        .policy(compact_on_turns(quiet_policy(), 3).respawn_after_resets(Some(1)))
        .summarizer(summarizer_ok());
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen.clone()));
    let mut h = vec![Message::system("sys")];
    let mut strategies = Vec::new();
    let mut session = SessionId::new("s");
    for t in 0..7 {
        h.push(Message::user(format!("q{t}")));
        let resp = send(&mut svc, LlmRequest::new(session.clone(), "a", h.clone()))
            .await
            .unwrap();
        if let Some(r) = ContextReset::of(&resp) {
            strategies.push(r.strategy);
            if let Some(new) = &r.new_session {
                assert_eq!(new.as_str(), "s~r2");
                assert_eq!(seen.lock().unwrap().last().unwrap().session, *new);
                // A fresh context: system, handoff summary, latest turn.
                assert_eq!(r.history.len(), 3);
                assert_eq!(r.history[1].name.as_deref(), Some(SUMMARY_NAME));
                session = new.clone();
                h = r.history.to_vec();
            }
        }
        h.push(resp.message);
    }
    assert_eq!(strategies, vec![Strategy::Summarize, Strategy::Respawn]);
    let new = store.snapshot(&"s~r2".into(), 20).unwrap();
    assert_eq!(new.turns, 1, "the new session continued");
}

#[tokio::test(start_paused = true)]
async fn over_budget_with_nothing_to_remove_warns_or_fails_when_configured() {
    let seen: Seen = Default::default();
    let h = vec![Message::system("sys"), Message::user("x".repeat(8000))];
    let layer = ResetLayer::new()
        .policy(compact_on_turns(quiet_policy(), 1))
        .default_window(1000);
    let store = layer.store().clone();
    let mut svc = layer.clone().layer(model(seen.clone()));
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    // Nothing can be removed: not a reset, a warning that says why.
    assert!(ContextReset::of(&resp).is_none());
    let w = ContextWarning::of(&resp).expect("warning instead of a reset");
    assert!(w.triggers.contains(Trigger::Turns));
    let note = w.note.as_deref().unwrap();
    assert!(
        note.contains("nothing could be removed") && note.contains("nothing could be trimmed"),
        "{note}"
    );
    assert_eq!(
        seen.lock().unwrap().last().unwrap().messages(),
        &h[..],
        "the call went out unchanged"
    );
    assert_eq!(store.snapshot(&"s".into(), 20).unwrap().resets, 0);

    let mut failing = layer.fail_when_over_budget(true).layer(model(seen));
    let err = send(&mut failing, LlmRequest::new("t", "a", h))
        .await
        .unwrap_err();
    let e = err
        .downcast_ref::<mantissa_reset::ContextBudgetExceeded>()
        .unwrap();
    assert_eq!(e.target, 600);
}

#[tokio::test(start_paused = true)]
async fn a_tool_loop_over_the_threshold_clears_older_results_of_the_turn() {
    // One user message, then a long tool loop with ~1,000-token results: the
    // context crosses 0.85 of the window with no older turn to compact.
    let seen: Seen = Default::default();
    let events: Arc<Mutex<Vec<HealthEvent>>> = Default::default();
    let ev = events.clone();
    let layer = ResetLayer::new()
        .default_window(10_000)
        .event_sink(move |e: &HealthEvent| ev.lock().unwrap().push(e.clone()));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen.clone()));
    let mut h = vec![Message::system("sys"), Message::user("research ACME")];
    let mut resets = Vec::new();
    for k in 0..20 {
        let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .unwrap();
        let sent = seen.lock().unwrap().last().unwrap().messages().to_vec();
        if let Some(r) = ContextReset::of(&resp) {
            // A real reduction: the history changed and is smaller.
            assert_ne!(*r.history, h, "call {k}: a reset that changed nothing");
            assert!(est(&r.history) < est(&h), "call {k}: {r}");
            assert!(r.tokens_after < r.tokens_before, "{r}");
            assert_eq!(
                (r.reason, r.strategy),
                (Trigger::ContextTokens, Strategy::ClearToolResults)
            );
            assert_eq!(
                r.messages_after, r.messages_before,
                "clearing keeps every message"
            );
            assert_eq!(sent, *r.history);
            check_invariants(&h, &r.history);
            // The last three results stay.
            let kept: Vec<&Message> = r
                .history
                .iter()
                .filter(|m| m.role == Role::Tool)
                .rev()
                .take(3)
                .collect();
            assert!(kept.iter().all(|m| !m.text().starts_with(CLEARED_PREFIX)));
            resets.push(k);
        }
        // The agent calls another tool (it resends its full history).
        let id = format!("t{k}");
        h.push(call(&id));
        h.push(Message::tool(&id, format!("{k} {}", "data ".repeat(800))));
    }
    assert!(!resets.is_empty(), "the loop crossed the threshold");
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert_eq!(snap.resets as usize, resets.len());
    assert_eq!((snap.turns, snap.llm_calls), (1, 20));
    let reset_events = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::ContextReset)
        .count();
    assert_eq!(reset_events, resets.len());
}

#[test]
fn a_compaction_that_can_remove_nothing_is_not_a_reset_but_one_warning() {
    let capture = MetricsCapture::new();
    let events: Arc<Mutex<Vec<HealthEvent>>> = Default::default();
    let ev = events.clone();
    let (responses, snap) = capture.in_scope(|| {
        runtime().block_on(async {
            let seen: Seen = Default::default();
            let layer = ResetLayer::new()
                .default_window(10_000)
                .event_sink(move |e: &HealthEvent| ev.lock().unwrap().push(e.clone()));
            let store = layer.store().clone();
            let mut svc = layer.layer(model(seen.clone()));
            // A huge user message, then a tool loop with small results:
            // nothing can be cleared, summarized or trimmed.
            let mut h = vec![Message::system("sys"), Message::user("x".repeat(36_000))];
            let mut responses = Vec::new();
            for k in 0..6 {
                let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
                    .await
                    .unwrap();
                assert_eq!(seen.lock().unwrap().last().unwrap().messages(), &h[..]);
                responses.push(resp);
                let id = format!("t{k}");
                h.push(call(&id));
                h.push(Message::tool(&id, "ok"));
            }
            (responses, store.snapshot(&"s".into(), 20).unwrap())
        })
    });
    assert!(responses.iter().all(|r| ContextReset::of(r).is_none()));
    assert_eq!((snap.resets, snap.turns, snap.llm_calls), (0, 1, 6));
    // One warning, on the first call over the threshold, naming the trigger.
    let stuck: Vec<&ContextWarning> = responses
        .iter()
        .filter_map(ContextWarning::of)
        .filter(|w| w.triggers.contains(Trigger::ContextTokens))
        .collect();
    assert_eq!(stuck.len(), 1);
    assert!(
        stuck[0].note.as_deref().unwrap().contains("no reset"),
        "{:?}",
        stuck[0].note
    );
    let events = events.lock().unwrap();
    assert!(events.iter().all(|e| e.kind != EventKind::ContextReset));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == EventKind::ContextWarning && &*e.subject == "context_tokens")
            .count(),
        1
    );
    let m = capture.snapshot();
    assert!(
        !m.contains(mantissa_core::catalog::CONTEXT_RESETS_TOTAL),
        "no reset metric"
    );
    let warned = m.counter(
        mantissa_core::catalog::CONTEXT_WARNINGS_TOTAL,
        &[("reason", "context_tokens")],
    );
    assert_eq!(warned, Some(1));
}

#[tokio::test(start_paused = true)]
async fn closures_plug_into_stages() {
    let seen: Seen = Default::default();
    let clearer = |msgs: &[Message]| {
        Some(
            msgs.iter()
                .map(|m| {
                    let mut m = m.clone();
                    if m.role == Role::Tool {
                        m.content = Some(format!("{CLEARED_PREFIX} by closure]"));
                    }
                    m
                })
                .collect(),
        )
    };
    let plan = StagePlan::default().with(Trigger::Requested, Stage::ClearToolResults);
    let layer = ResetLayer::new()
        .policy(quiet_policy().stages(plan))
        .tool_result_clearer(clearer)
        .respawner(|s: &SessionId, n: u32| SessionId::new(format!("{s}/{n}")));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen));
    let h = tool_heavy_history(3);
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    store.request_reset(&"s".into(), "x");
    let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    let r = ContextReset::of(&resp).unwrap();
    assert_eq!(r.strategy, Strategy::ClearToolResults);
    assert!(r.history.iter().any(|m| m.text().contains("by closure")));
}
