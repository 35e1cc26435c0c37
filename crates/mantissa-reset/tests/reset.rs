//! Behaviour of the reset layer, driven request by request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mantissa_core::control::SessionControl;
use mantissa_core::{
    BoxError, CharEstimator, EventKind, EventSink, FailureClass, HealthEvent, LlmError, LlmRequest,
    LlmResponse, Message, Outcome, Role, SessionId, TokenEstimator, ToolCall, Usage,
};
use mantissa_mock::metrics::{MetricsCapture, Value};
use mantissa_reset::{
    BrittlenessPolicy, CLEARED_PREFIX, ContextReset, ContextWarning, ErrorRateRule, MemorySessionStore,
    PlaceholderClearer, ResetLayer, SUMMARY_NAME, SessionStore, Stage, StagePlan, StandardNote, Strategy,
    SummaryConfig, Trigger,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use tower::{Layer, Service, ServiceExt, service_fn};

type Seen = Arc<Mutex<Vec<LlmRequest>>>;

/// A model that records each request and reports realistic usage.
fn model(
    seen: Seen,
) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |req: LlmRequest| {
        let seen = seen.clone();
        async move {
            let input = CharEstimator.estimate_messages(req.messages());
            let last = req
                .latest_user_message()
                .map(|m| m.text().to_owned())
                .unwrap_or_default();
            seen.lock().unwrap().push(req);
            Ok::<_, BoxError>(LlmResponse::new(
                "m",
                Message::assistant(format!("re: {last}")),
                Usage::new(input, 5),
            ))
        }
    })
}

fn summarizer_ok()
-> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone + Send + Sync + 'static
{
    service_fn(|req: LlmRequest| async move {
        let n = req
            .messages()
            .last()
            .map(|m| m.text().lines().count())
            .unwrap_or(0);
        Ok::<_, BoxError>(LlmResponse::new(
            "mock-small",
            Message::assistant(format!("summary of {n} lines")),
            Usage::default(),
        ))
    })
}

fn quiet_policy() -> BrittlenessPolicy {
    BrittlenessPolicy::default()
        .max_turns(None)
        .max_consecutive_errors(None)
        .error_rate(None)
        .unwrap()
        .latency_drift(None, 5)
        .unwrap()
        .context_thresholds(None, None)
        .unwrap()
}

/// A policy that compacts (summarize stage) after `turns` user turns.
fn compact_on_turns(policy: BrittlenessPolicy, turns: u32) -> BrittlenessPolicy {
    policy
        .max_turns(Some(turns))
        .stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize))
}

async fn send<S>(svc: &mut S, req: LlmRequest) -> Result<LlmResponse, BoxError>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn call(id: &str) -> Message {
    Message::assistant_tool_calls(vec![ToolCall::new(
        id,
        "lookup",
        &serde_json::json!({ "id": id }),
    )])
}

// ---------------------------------------------------------------- invariants

fn same_modulo_clearing(a: &Message, b: &Message) -> bool {
    a.role == b.role
        && a.tool_call_id == b.tool_call_id
        && a.tool_calls == b.tool_calls
        && (a.content == b.content || (b.role == Role::Tool && b.text().starts_with(CLEARED_PREFIX)))
}

fn pinned(m: &Message) -> bool {
    m.role == Role::System && m.name.as_deref() != Some(SUMMARY_NAME)
}

/// Every invariant of a compaction of `input` into `output`.
fn check_invariants(input: &[Message], output: &[Message]) {
    // System messages stay, in order.
    let sys_in: Vec<&Message> = input.iter().filter(|m| pinned(m)).collect();
    let sys_out: Vec<&Message> = output.iter().filter(|m| pinned(m)).collect();
    assert_eq!(sys_in, sys_out, "system messages changed");
    // The latest user turn stays: its messages are all kept, only older tool
    // results of it may be cleared (the last resort), never its latest batch.
    if let Some(last) = input.iter().rposition(|m| m.role == Role::User) {
        let tail = &input[last..];
        assert!(output.len() >= tail.len());
        let out_tail = &output[output.len() - tail.len()..];
        assert_eq!(out_tail[0], tail[0], "latest user message changed");
        for (a, b) in tail.iter().zip(out_tail) {
            assert!(same_modulo_clearing(a, b), "latest turn changed: {a:?} vs {b:?}");
        }
        let batch = tail
            .iter()
            .rposition(|m| !m.tool_calls.is_empty())
            .map_or(0, |i| i + 1);
        assert_eq!(out_tail[batch..], tail[batch..], "latest tool results changed");
    }
    // Tool calls and results stay paired.
    let calls_in: HashSet<&str> = input
        .iter()
        .flat_map(|m| m.tool_calls.iter().map(|c| c.id.as_str()))
        .collect();
    let results_in: HashSet<&str> = input.iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
    let mut calls_seen = HashSet::new();
    for m in output {
        for c in &m.tool_calls {
            calls_seen.insert(c.id.as_str());
        }
        if let Some(id) = m.tool_call_id.as_deref() {
            assert!(
                calls_seen.contains(id) || !calls_in.contains(id),
                "orphaned tool result {id}"
            );
        }
    }
    let results_out: HashSet<&str> = output.iter().filter_map(|m| m.tool_call_id.as_deref()).collect();
    for id in &calls_seen {
        if results_in.contains(id) {
            assert!(results_out.contains(id), "tool call {id} lost its result");
        }
    }
    // The kept body is a suffix of the input body starting at a user turn.
    let body_in: Vec<&Message> = input.iter().filter(|m| m.role != Role::System).collect();
    let body_out: Vec<&Message> = output.iter().filter(|m| m.role != Role::System).collect();
    assert!(body_out.len() <= body_in.len());
    let start = body_in.len() - body_out.len();
    for (a, b) in body_in[start..].iter().zip(&body_out) {
        assert!(same_modulo_clearing(a, b), "kept message changed: {a:?} vs {b:?}");
    }
    if start > 0 {
        assert_eq!(
            body_out.first().map(|m| m.role),
            Some(Role::User),
            "cut not on a user turn"
        );
    }
}

fn arb_history() -> impl proptest::strategy::Strategy<Value = Vec<Message>> {
    let turn = (
        1usize..200,
        prop::collection::vec((0u8..4, 1usize..600), 0..4),
        any::<bool>(),
    );
    (0usize..3, prop::collection::vec(turn, 1..25)).prop_map(|(systems, turns)| {
        let mut h: Vec<Message> = (0..systems)
            .map(|i| Message::system(format!("rules {i}")))
            .collect();
        let mut id = 0;
        for (t, (ulen, steps, mid_system)) in turns.into_iter().enumerate() {
            if mid_system && t % 5 == 4 {
                h.push(Message::system(format!("mid-history rule {t}")));
            }
            h.push(Message::user(format!("u{t} {}", "q".repeat(ulen))));
            for (kind, len) in steps {
                match kind {
                    0 | 1 => {
                        let n = usize::from(kind) + 1;
                        let ids: Vec<String> = (0..n).map(|k| format!("c{id}_{k}")).collect();
                        id += 1;
                        h.push(Message::assistant_tool_calls(
                            ids.iter()
                                .map(|i| ToolCall::new(i.clone(), "lookup", &serde_json::json!({"q": i})))
                                .collect(),
                        ));
                        for i in ids {
                            h.push(Message::tool(i, "r".repeat(len)));
                        }
                    }
                    _ => h.push(Message::assistant(format!("a{t} {}", "x".repeat(len)))),
                }
            }
        }
        h
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

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

// ---------------------------------------------------------------- triggers

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

/// Drives an agent that makes `calls_per_turn` LLM calls per user message
/// (the first answers the user message, the others follow tool round trips)
/// for `user_turns` user messages. Returns every response.
async fn tool_loop_agent<S>(
    svc: &mut S,
    session: &str,
    user_turns: usize,
    calls_per_turn: usize,
) -> Vec<LlmResponse>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = BoxError>,
{
    let mut h = vec![Message::system("sys")];
    let mut out = Vec::new();
    for t in 0..user_turns {
        h.push(Message::user(format!("question {t}")));
        for c in 0..calls_per_turn {
            let resp = send(svc, LlmRequest::new(session, "a", h.clone())).await.unwrap();
            if c + 1 < calls_per_turn {
                let id = format!("c{t}_{c}");
                h.push(call(&id));
                h.push(Message::tool(&id, format!("result {t}.{c}")));
            } else {
                h.push(resp.message.clone());
            }
            out.push(resp);
        }
    }
    out
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

fn tool_heavy_history(turns: usize) -> Vec<Message> {
    let mut h = vec![Message::system("sys")];
    for t in 0..turns {
        h.push(Message::user(format!("question {t}")));
        let id = format!("c{t}");
        h.push(call(&id));
        h.push(Message::tool(&id, "data ".repeat(200)));
        h.push(Message::assistant(format!("answer {t}")));
    }
    h.push(Message::user("latest"));
    h
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

// ---------------------------------------------------------------- stages

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

/// The estimated tokens of a history, as the layer's default estimator counts.
fn est(h: &[Message]) -> u64 {
    h.iter()
        .map(|m| u64::from(CharEstimator.estimate_message(m)))
        .sum()
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

// ---------------------------------------------------------------- store

#[tokio::test(start_paused = true)]
async fn idle_sessions_expire_after_the_ttl() {
    let store = MemorySessionStore::builder()
        .idle_ttl(Some(Duration::from_secs(60)))
        .shards(1)
        .build();
    let seen: Seen = Default::default();
    let mut svc = ResetLayer::with_store(store.clone()).layer(model(seen));
    for s in ["a", "b"] {
        send(&mut svc, LlmRequest::new(s, "x", vec![Message::user("hi")]))
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&mut svc, LlmRequest::new("a", "x", vec![Message::user("hi")]))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(store.evict_idle(tokio::time::Instant::now()), 1);
    assert!(store.snapshot(&"a".into(), 20).is_some());
    assert!(store.snapshot(&"b".into(), 20).is_none());
    assert_eq!(store.len(), 1);
    // Lazy eviction: touching the store drops expired sessions of the shard.
    tokio::time::advance(Duration::from_secs(61)).await;
    send(&mut svc, LlmRequest::new("c", "x", vec![Message::user("hi")]))
        .await
        .unwrap();
    assert!(store.snapshot(&"a".into(), 20).is_none());
    assert_eq!(store.evictions().0, 2);
}

#[tokio::test(start_paused = true)]
async fn capacity_evicts_the_least_recently_active() {
    let store = MemorySessionStore::builder().capacity(3).idle_ttl(None).build();
    let seen: Seen = Default::default();
    let mut svc = ResetLayer::with_store(store.clone()).layer(model(seen));
    for s in ["a", "b", "c", "a", "d"] {
        send(&mut svc, LlmRequest::new(s, "x", vec![Message::user("hi")]))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(store.len(), 3);
    assert!(
        store.snapshot(&"b".into(), 20).is_none(),
        "b was least recently active"
    );
    for s in ["a", "c", "d"] {
        assert!(store.snapshot(&s.into(), 20).is_some(), "{s}");
    }
    assert_eq!(store.evictions(), (0, 1));
}

#[test]
fn concurrent_updates_of_one_session_lose_no_count() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = MemorySessionStore::new();
        let seen: Seen = Default::default();
        let svc = ResetLayer::with_store(store.clone())
            .policy(quiet_policy())
            .layer(model(seen));
        let sink = store.clone();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let mut svc = svc.clone();
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    let req = LlmRequest::new("shared", "a", vec![Message::user(format!("{t}-{i}"))]);
                    svc.ready().await.unwrap().call(req).await.unwrap();
                    sink.record(&HealthEvent::now(
                        "a".into(),
                        "shared".into(),
                        EventKind::Tool,
                        "t",
                        Outcome::Success,
                        Duration::ZERO,
                    ));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let snap = store.snapshot(&"shared".into(), 64).unwrap();
        assert_eq!((snap.turns, snap.llm_calls), (2000, 2000));
        assert_eq!(snap.calls_seen, 64);
        assert_eq!(snap.recent_errors, 0);
    });
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_leaves_no_half_written_state() {
    // The summarizer never answers: the call is dropped mid-compaction.
    let summarizer = service_fn(|_req: LlmRequest| async move {
        std::future::pending::<()>().await;
        Ok::<LlmResponse, BoxError>(LlmResponse::new("s", Message::assistant(""), Usage::default()))
    });
    let seen: Seen = Default::default();
    let layer = ResetLayer::new()
        .policy(quiet_policy())
        .summarizer(summarizer)
        .summary(SummaryConfig::new().timeout(Duration::from_secs(3600)));
    let store = layer.store().clone();
    let mut svc = layer.layer(model(seen.clone()));
    let h = vec![
        Message::system("sys"),
        Message::user("a"),
        Message::assistant("b"),
        Message::user("c"),
    ];
    send(&mut svc, LlmRequest::new("s", "a", h.clone()))
        .await
        .unwrap();
    assert!(store.request_reset(&"s".into(), "test"));
    let fut = svc
        .ready()
        .await
        .unwrap()
        .call(LlmRequest::new("s", "a", h.clone()));
    let out = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert!(out.is_err(), "the call was still summarizing");
    // The call was counted (first atomic update); the reset was not half-done.
    let snap = store.snapshot(&"s".into(), 20).unwrap();
    assert_eq!((snap.llm_calls, snap.resets, snap.remembered_reset), (2, 0, None));
    assert_eq!(snap.pending_reset.as_deref(), Some("test"));
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing went out");
    // No lock is held: the store and the session keep working.
    assert!(store.request_reset(&"s".into(), "again"));
    assert!(store.remove(&"s".into()).await.unwrap());
}

// ---------------------------------------------------------------- metrics

#[test]
fn metrics_are_emitted_with_catalogue_names_and_labels() {
    let capture = MetricsCapture::new();
    capture.in_scope(|| {
        runtime().block_on(async {
            let seen: Seen = Default::default();
            let mut svc = ResetLayer::new()
                .policy(compact_on_turns(
                    quiet_policy().context_thresholds(Some(0.5), None).unwrap(),
                    2,
                ))
                .default_window(1000)
                .layer(model(seen));
            let h = vec![
                Message::user("x".repeat(2400)),
                Message::assistant("b"),
                Message::user("c"),
            ];
            // One user turn (a context warning), then the second (a reset).
            send(&mut svc, LlmRequest::new("s", "trader", h[..1].to_vec()))
                .await
                .unwrap();
            send(&mut svc, LlmRequest::new("s", "trader", h.clone()))
                .await
                .unwrap();
        })
    });
    let m = capture.snapshot();
    let resets: Vec<_> = m
        .series(mantissa_core::catalog::CONTEXT_RESETS_TOTAL, &[])
        .collect();
    assert_eq!(resets.len(), 1);
    assert!(resets[0].has_labels(&[("agent", "trader"), ("reason", "turns"), ("strategy", "trim")]));
    assert_eq!(resets[0].value, Value::Counter(1));
    let warnings: Vec<_> = m
        .series(mantissa_core::catalog::CONTEXT_WARNINGS_TOTAL, &[])
        .collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].label("reason"), Some("context_warning"));
    assert_eq!(m.gauge(mantissa_core::catalog::ACTIVE_SESSIONS, &[]), Some(1.0));
    assert_eq!(
        m.histogram(mantissa_core::catalog::SESSION_TURNS_AT_RESET, &[]),
        vec![2.0]
    );
    let tokens = m.histogram(mantissa_core::catalog::SESSION_CONTEXT_TOKENS_AT_RESET, &[]);
    assert!(tokens[0] > 600.0, "{tokens:?}");
    let scores = m.histogram(mantissa_core::catalog::SESSION_BRITTLENESS, &[]);
    assert_eq!(scores.len(), 2);
    assert!(scores.iter().all(|x| (0.0..=1.0).contains(x)));
    assert_eq!(scores[1], 1.0);
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

/// A caller that adopts each compacted history is compacted again every
/// `turns` user turns: every reset after the first removes something too.
#[tokio::test(start_paused = true)]
async fn resets_repeat_for_a_caller_that_adopts_the_compacted_history() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new()
        .policy(compact_on_turns(quiet_policy(), 5))
        .summarizer(summarizer_ok());
    let mut svc = layer.layer(model(seen.clone()));
    let mut h = vec![Message::system("sys")];
    let mut resets = Vec::new();
    let mut warnings = 0;
    for turn in 1..=30 {
        h.push(Message::user(format!("q{turn}")));
        let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
            .await
            .unwrap();
        if ContextWarning::of(&resp).is_some() {
            warnings += 1;
        }
        if let Some(r) = ContextReset::of(&resp) {
            assert!(r.messages_after < r.messages_before, "turn {turn}: {r}");
            resets.push(turn);
            h = r.history.to_vec();
        }
        h.push(resp.message);
    }
    assert_eq!(resets, vec![5, 10, 15, 20, 25, 30], "{warnings} warnings");
}

/// The same with tool round trips in every turn (a trading agent).
#[tokio::test(start_paused = true)]
async fn resets_repeat_for_a_tool_using_caller_that_adopts_the_history() {
    let seen: Seen = Default::default();
    let layer = ResetLayer::new()
        .policy(compact_on_turns(quiet_policy(), 5))
        .summarizer(summarizer_ok());
    let mut svc = layer.layer(model(seen.clone()));
    let mut h = vec![Message::system("sys")];
    let mut resets = Vec::new();
    let mut warnings = Vec::new();
    for turn in 1..=30 {
        h.push(Message::user(format!("q{turn}")));
        for c in 0..3 {
            let resp = send(&mut svc, LlmRequest::new("s", "a", h.clone()))
                .await
                .unwrap();
            if let Some(w) = ContextWarning::of(&resp) {
                warnings.push((turn, w.to_string()));
            }
            if let Some(r) = ContextReset::of(&resp) {
                assert!(r.messages_after < r.messages_before, "turn {turn}: {r}");
                resets.push(turn);
                h = r.history.to_vec();
            }
            if c < 2 {
                let id = format!("c{turn}_{c}");
                h.push(call(&id));
                h.push(Message::tool(&id, format!("result {turn}.{c}")));
            } else {
                h.push(resp.message);
            }
        }
    }
    assert_eq!(resets, vec![5, 10, 15, 20, 25, 30], "{warnings:?}");
}
