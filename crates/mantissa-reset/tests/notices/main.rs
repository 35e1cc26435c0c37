//! What the layer reports: the notices of resets repeated for callers that
//! adopt the compacted history, and the metrics with their catalogue names
//! and labels.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mantissa_core::{LlmRequest, Message};
use mantissa_mock::metrics::{MetricsCapture, Value};
use mantissa_reset::{ContextReset, ContextWarning, ResetLayer};
use tower::Layer;

#[path = "../support/mod.rs"]
mod support;
use support::*;

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
