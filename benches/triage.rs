//! Cost of rule triage plus tier routing per call, against calling the model
//! service directly, for a 2 KB latest user turn with 10- and 1,000-message
//! histories.
//!
//! Run: `cargo bench --bench triage -- --warm-up-time 1 --measurement-time 3`
//!
//! The `learned_triage` group scores the same 2 KB turn with
//! [`LearnedTriage`] (built-in model) and [`RuleTriage`] in one run.
//!
//! The model service is a no-op that answers immediately, so the difference
//! between `stack` and `direct` is what triage (rules, stickiness, metrics
//! handles) and the router (candidate choice, cooldown check, request clone,
//! boxed per-model service) add. No metrics recorder is installed.

#![allow(missing_docs, clippy::expect_used)]

use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, TierSet, Usage};
use mantissa_triage::{LearnedTriage, RuleTriage, TierRouter, Triage, TriageLayer};
use tower::{Layer, Service};

/// A model that answers at once.
#[derive(Clone, Debug)]
struct Noop;

impl Service<LlmRequest> for Noop {
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = Ready<Result<LlmResponse, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        let model = req.model.unwrap_or_else(|| "mock-small".into());
        ready(Ok(LlmResponse::new(
            model,
            Message::assistant("ok"),
            Usage::new(1, 1),
        )))
    }
}

/// About 2 KB of a realistic user turn: prose, one question, no code.
fn user_turn() -> String {
    let sentence = "Our quarterly report covers revenue, churn and hiring across the three regions, \
                    and the board wants a short summary with the main risks called out. ";
    let mut text = String::new();
    while text.len() < 2000 {
        text.push_str(sentence);
    }
    text.push_str("Can you summarise it for me?");
    text
}

fn request(history: usize) -> LlmRequest {
    let mut messages = vec![Message::system("You are a helpful analyst.")];
    for i in 0..history.saturating_sub(2) {
        if i % 2 == 0 {
            messages.push(Message::user(format!(
                "earlier question {i}: what about the numbers?"
            )));
        } else {
            messages.push(Message::assistant(format!("earlier answer {i}: they look fine.")));
        }
    }
    messages.push(Message::user(user_turn()));
    LlmRequest::new("session-1", "analyst", messages)
}

fn bench(c: &mut Criterion) {
    let tiers = TierSet::default();
    let router = TierRouter::builder(tiers.clone())
        .model("mock-small", Noop)
        .model("mock-medium", Noop)
        .model("mock-large", Noop)
        .build()
        .expect("router");
    let stack = TriageLayer::new(&tiers, RuleTriage::new(&tiers)).layer(router);
    let rules = RuleTriage::new(&tiers);

    let mut group = c.benchmark_group("triage");
    for history in [10usize, 1000] {
        let req = request(history);
        assert_eq!(
            req.latest_user_message().map(|m| m.text().len() > 2000),
            Some(true)
        );
        group.bench_with_input(BenchmarkId::new("direct", history), &req, |b, req| {
            let mut svc = Noop;
            b.iter(|| {
                let resp = svc.call(black_box(req.clone())).now_or_never();
                black_box(resp)
            })
        });
        group.bench_with_input(BenchmarkId::new("stack", history), &req, |b, req| {
            let mut svc = stack.clone();
            b.iter(|| {
                let resp = svc.call(black_box(req.clone())).now_or_never();
                black_box(resp)
            })
        });
        group.bench_with_input(BenchmarkId::new("rules_only", history), &req, |b, req| {
            b.iter(|| black_box(rules.triage(black_box(req))))
        });
    }
    group.finish();

    // The learned triage beside rule triage on the same 2 KB turn
    // (`cargo bench --bench triage -- learned_triage`).
    let learned = LearnedTriage::builtin(&tiers).expect("built-in model");
    let req = request(10);
    let mut group = c.benchmark_group("learned_triage");
    group.bench_function("rules_2kb", |b| {
        b.iter(|| black_box(rules.triage(black_box(&req))))
    });
    group.bench_function("learned_2kb", |b| {
        b.iter(|| black_box(learned.triage(black_box(&req))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
