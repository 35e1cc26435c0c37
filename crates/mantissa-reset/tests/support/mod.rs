//! Helpers shared by the reset layer's test binaries (tower's
//! `tests/support.rs` habit): a recording model, policies, a runtime, and
//! the compaction invariants the property tests check.

#![allow(dead_code)]

use mantissa_core::{
    BoxError, CharEstimator, LlmRequest, LlmResponse, Message, Role, TokenEstimator, ToolCall, Usage,
};
use mantissa_reset::{BrittlenessPolicy, CLEARED_PREFIX, SUMMARY_NAME, Stage, StagePlan, Trigger};
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tower::{Service, ServiceExt, service_fn};

pub(crate) type Seen = Arc<Mutex<Vec<LlmRequest>>>;

/// A model that records each request and reports realistic usage.
pub(crate) fn model(
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

pub(crate) fn summarizer_ok()
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

pub(crate) fn quiet_policy() -> BrittlenessPolicy {
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
pub(crate) fn compact_on_turns(policy: BrittlenessPolicy, turns: u32) -> BrittlenessPolicy {
    policy
        .max_turns(Some(turns))
        .stages(StagePlan::default().with(Trigger::Turns, Stage::Summarize))
}

pub(crate) async fn send<S>(svc: &mut S, req: LlmRequest) -> Result<LlmResponse, BoxError>
where
    S: Service<LlmRequest, Response = LlmResponse, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

pub(crate) fn call(id: &str) -> Message {
    Message::assistant_tool_calls(vec![ToolCall::new(
        id,
        "lookup",
        &serde_json::json!({ "id": id }),
    )])
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Drives an agent that makes `calls_per_turn` LLM calls per user message
/// (the first answers the user message, the others follow tool round trips)
/// for `user_turns` user messages. Returns every response.
pub(crate) async fn tool_loop_agent<S>(
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

pub(crate) fn tool_heavy_history(turns: usize) -> Vec<Message> {
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

/// The estimated tokens of a history, as the layer's default estimator counts.
pub(crate) fn est(h: &[Message]) -> u64 {
    h.iter()
        .map(|m| u64::from(CharEstimator.estimate_message(m)))
        .sum()
}

pub(crate) fn same_modulo_clearing(a: &Message, b: &Message) -> bool {
    a.role == b.role
        && a.tool_call_id == b.tool_call_id
        && a.tool_calls == b.tool_calls
        && (a.content == b.content || (b.role == Role::Tool && b.text().starts_with(CLEARED_PREFIX)))
}

pub(crate) fn pinned(m: &Message) -> bool {
    m.role == Role::System && m.name.as_deref() != Some(SUMMARY_NAME)
}

/// Every invariant of a compaction of `input` into `output`.
pub(crate) fn check_invariants(input: &[Message], output: &[Message]) {
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

pub(crate) fn arb_history() -> impl proptest::strategy::Strategy<Value = Vec<Message>> {
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
