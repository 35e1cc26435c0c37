//! Whole-stack overhead: an `AgentStack` LLM call (triage → reset → router →
//! per-model health → mock) against calling the same bare mock directly, in
//! the same run, for 20-message and 1,000-message histories; and throughput in
//! calls per second on a 2-worker runtime.
//!
//! Run: `cargo bench --bench stack -- --warm-up-time 1 --measurement-time 3`
//!
//! The Prometheus recorder is installed (as in production). The mock answers
//! at once and records nothing, so the difference is mantissa's own work.
//! Sessions rotate over 1,000 ids (and, in `stack_sessions`, over 1, 1,000
//! and 1,000,000) and the reset policy's triggers are not reached, so this is
//! the no-reset path every call takes.
//!
//! Instruction counts: `STACK_CALLS=CASE:N` runs one case `N` times (20
//! messages, 1,000 sessions) without criterion and exits (`CASE` =
//! `bare_mock`, `floor`, `agent_stack`); under `valgrind --tool=callgrind`,
//! the difference of two runs with different `N` divided by the difference
//! of `N` is the count per call (setup cancels out). `STACK_CALLS=sizes`
//! prints the sizes of the request and of the layers' futures (each is
//! moved, whole, as the layers wrap it).

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
use mantissa::reset::{BrittlenessPolicy, MemorySessionStore};
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
        AgentStack::builder(Upstream::Mock(mock.clone()))
            .agent(AgentSpec::new("trader"))
            .reset_policy(BrittlenessPolicy::default().max_turns(None))
            // Room for the million-session case below: no capacity evictions.
            .session_store(MemorySessionStore::builder().capacity(2_000_000).build())
            .exporter(PrometheusConfig::new().without_upkeep().install().unwrap())
            .without_monitor()
            .build()
            .unwrap()
    });
    let llm = stack.llm("trader");
    let sessions: Vec<SessionId> = (0..1000).map(|i| SessionId::new(format!("s{i}"))).collect();
    if let Ok(spec) = std::env::var("STACK_CALLS") {
        count_calls(&spec, &rt, &mock, &llm, &sessions);
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("stack");
    for n in [10usize, 20, 1000] {
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

    // Sessions: the same 20-message call over 1, 1,000 and 1,000,000
    // distinct sessions (each one created before it is measured, so the
    // store holds them all: the per-call cost against the store's size).
    let mut group = c.benchmark_group("stack_sessions");
    let h = history(20);
    for n in [1usize, 1_000, 1_000_000] {
        let ids: Vec<SessionId> = (0..n).map(|i| SessionId::new(format!("session-{i}"))).collect();
        rt.block_on(async {
            for id in &ids {
                llm.clone().oneshot(request(id, &h)).await.unwrap();
            }
        });
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("agent_stack", n), &h, |b, h| {
            b.to_async(&rt).iter(|| {
                i = (i + 1) % n;
                let req = request(&ids[i], h);
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

/// Runs `N` calls of one case (`STACK_CALLS=CASE:N`, see the module docs).
fn count_calls(
    spec: &str,
    rt: &tokio::runtime::Runtime,
    mock: &MockLlm,
    llm: &mantissa::LlmService,
    sessions: &[SessionId],
) {
    let (case, n) = spec.split_once(':').unwrap_or((spec, "100000"));
    let n: usize = n
        .parse()
        .unwrap_or_else(|_| panic!("STACK_CALLS: bad count in {spec}"));
    let h = history(20);
    let floored = floor::FloorLayer::new().layer(mock.clone());
    rt.block_on(async {
        for i in 0..n {
            let req = request(&sessions[i % sessions.len()], &h);
            match case {
                "bare_mock" => black_box(mock.clone().oneshot(req).await.map(|_| ())).unwrap(),
                "floor" => black_box(floored.clone().oneshot(req).await.map(|_| ())).unwrap(),
                "agent_stack" => black_box(llm.clone().oneshot(req).await.map(|_| ())).unwrap(),
                "sizes" => {
                    use std::mem::size_of;
                    type RF = mantissa::triage::router::ResponseFuture;
                    type HF = mantissa::health::future::ResponseFuture<RF, LlmRequest>;
                    eprintln!("LlmRequest {}", size_of::<LlmRequest>());
                    eprintln!("LlmResponse {}", size_of::<mantissa::core::LlmResponse>());
                    eprintln!("router fut {}", size_of::<RF>());
                    eprintln!("health(router) fut {}", size_of::<HF>());
                    eprintln!(
                        "tower oneshot {}",
                        size_of::<tower::util::Oneshot<mantissa::LlmService, LlmRequest>>()
                    );
                    eprintln!(
                        "triage fut {}",
                        size_of::<
                            mantissa::triage::triage_layer::ResponseFuture<
                                <mantissa::triage::BoxTriage as mantissa::triage::AsyncTriage>::Future,
                                mantissa::reset::Reset<
                                    mantissa::health::Health<mantissa::TierRouter>,
                                    MemorySessionStore,
                                >,
                            >,
                        >()
                    );
                    return;
                }
                _ => panic!("STACK_CALLS: unknown case {case}"),
            }
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
