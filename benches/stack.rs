//! Whole-stack overhead: an `AgentStack` LLM call (triage → reset → router →
//! per-model health → mock) against calling the same bare mock directly, in
//! the same run, for 20-message and 1,000-message histories; and throughput in
//! calls per second on a 2-worker runtime.
//!
//! Run: `cargo bench --bench stack -- --warm-up-time 1 --measurement-time 3`
//!
//! The Prometheus recorder is installed (as in production). The mock answers
//! at once and records nothing, so the difference is mantissa's own work.
//! Sessions rotate over 1,000 ids and the reset policy's triggers are not
//! reached, so this is the no-reset path every call takes.

#![allow(missing_docs)] // `criterion_group!` generates an undocumented public function.
#![allow(clippy::unwrap_used)]

#[path = "support/floor.rs"]
mod floor;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mantissa::core::{LlmRequest, Message, SessionId};
use mantissa::mock::MockLlm;
use mantissa::prometheus::PrometheusConfig;
use mantissa::reset::BrittlenessPolicy;
use mantissa::{AgentSpec, AgentStack, Upstream};
use tower::{Layer, ServiceExt};

fn history(n: usize) -> Arc<Vec<Message>> {
    let mut h = vec![Message::system("You are the desk's trader.")];
    while h.len() < n - 1 {
        h.push(Message::user("Should we buy ACME today?"));
        h.push(Message::assistant("Holding; the price is within our band."));
    }
    h.push(Message::user(
        "And what about TSLA? Compare it with ACME and say why.",
    ));
    Arc::new(h)
}

/// A request sharing the history (an `Arc` clone, as callers that keep their
/// history in an `Arc` do), so building it costs the same for any length.
fn request(session: &SessionId, h: &Arc<Vec<Message>>) -> LlmRequest {
    let mut req = LlmRequest::new(session.clone(), "trader", Vec::new());
    req.messages = h.clone();
    req
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mock = MockLlm::builder()
        .default_model("mock-small")
        .record_limit(0)
        .build();
    let stack = rt.block_on(async {
        AgentStack::builder()
            .agent(AgentSpec::new("trader"))
            .upstream(Upstream::Mock(mock.clone()))
            .reset_policy(BrittlenessPolicy::default().max_turns(None))
            .metrics(PrometheusConfig::new().without_upkeep())
            .without_monitor()
            .build()
            .unwrap()
    });
    let llm = stack.llm("trader");
    let sessions: Vec<SessionId> = (0..1000).map(|i| SessionId::new(format!("s{i}"))).collect();

    let mut group = c.benchmark_group("stack");
    for n in [20usize, 1000] {
        let h = history(n);
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("bare_mock", n), &h, |b, h| {
            b.to_async(&rt).iter(|| {
                i += 1;
                let req = request(&sessions[i % 1000], h);
                let svc = mock.clone();
                async move { black_box(svc.oneshot(req).await.unwrap()) }
            })
        });
        let floored = floor::FloorLayer::new().layer(mock.clone());
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("floor", n), &h, |b, h| {
            b.to_async(&rt).iter(|| {
                i += 1;
                let req = request(&sessions[i % 1000], h);
                let svc = floored.clone();
                async move { black_box(svc.oneshot(req).await.unwrap()) }
            })
        });
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("agent_stack", n), &h, |b, h| {
            b.to_async(&rt).iter(|| {
                i += 1;
                let req = request(&sessions[i % 1000], h);
                let svc = llm.clone();
                async move { black_box(svc.oneshot(req).await.unwrap()) }
            })
        });
    }
    group.finish();

    // Throughput: 256 concurrent calls per iteration on two worker threads.
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("stack_throughput");
    const BATCH: usize = 256;
    group.throughput(Throughput::Elements(BATCH as u64));
    let h = history(20);
    for (name, svc) in [("bare_mock", None), ("agent_stack", Some(llm.clone()))] {
        group.bench_function(name, |b| {
            b.to_async(&mt).iter(|| {
                let h = h.clone();
                let svc = svc.clone();
                let mock = mock.clone();
                let sessions = sessions.clone();
                async move {
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..BATCH {
                        let req = request(&sessions[i % 1000], &h);
                        match &svc {
                            Some(s) => {
                                let s = s.clone();
                                set.spawn(async move { s.oneshot(req).await.map(|_| ()) });
                            }
                            None => {
                                let m = mock.clone();
                                set.spawn(async move { m.oneshot(req).await.map(|_| ()) });
                            }
                        }
                    }
                    while let Some(r) = set.join_next().await {
                        r.unwrap().unwrap();
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
