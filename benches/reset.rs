//! Cost of the reset (brittleness) layer.
//!
//! * `reset_overhead/{sessions}s_{history}m/{bare,reset}`: one call through a
//!   no-op model, bare and behind `ResetLayer`, measured in the same run, with
//!   1, 10,000 and 1,000,000 sessions in the store and 10- and 1,000-message
//!   histories (the caller resends its full history; no reset happens).
//! * `reset_remembered/1000m`: a call whose history is a resend of a history
//!   the layer compacted before (the remembered reset is applied).
//! * `reset_compaction/1000m/{trim,summarize}`: a call that compacts a
//!   1,000-message history (a fresh session each time, so the first-call token
//!   estimate of the whole history is included).
//! * Memory per idle session: printed before the benches (resident-set growth
//!   while inserting 1,000,000 sessions, and the store's own accounting).
//!
//! Run: `cargo bench --bench reset -- --warm-up-time 1 --measurement-time 3`

// criterion_group! generates an undocumented pub fn; a bench may panic on setup failure.
#![allow(missing_docs, clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group};
use futures_util::FutureExt;
use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, SessionId, ToolCall, Usage};
use mantissa_reset::{BrittlenessPolicy, MemorySessionStore, ResetLayer, SessionStore};
use tower::{Layer, Service, service_fn};

fn history(len: usize) -> Arc<Vec<Message>> {
    let mut h = vec![Message::system("You are a trading agent. Be precise.")];
    let mut i = 0;
    while h.len() < len {
        h.push(Message::user(format!(
            "question {i}: what is the price of ACME today?"
        )));
        if i % 3 == 0 && h.len() + 3 <= len {
            let id = format!("call_{i}");
            h.push(Message::assistant_tool_calls(vec![ToolCall::new(
                id.clone(),
                "get_price",
                &serde_json::json!({"symbol": "ACME"}),
            )]));
            h.push(Message::tool(
                id,
                "{\"symbol\":\"ACME\",\"price\":123.45,\"currency\":\"USD\"}",
            ));
        }
        h.push(Message::assistant(format!(
            "answer {i}: ACME trades at 123.45 USD."
        )));
        i += 1;
    }
    h.truncate(len);
    // End on a user message, as a real request does.
    if let Some(last) = h.last_mut()
        && last.role != mantissa_core::Role::User
        && last.tool_calls.is_empty()
    {
        *last = Message::user("and now?");
    }
    Arc::new(h)
}

/// A model that answers immediately (the response is prebuilt and cloned).
fn noop_model()
-> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone + Send {
    let model = mantissa_core::ModelId::new("mock-small");
    let reply = Message::assistant("ok");
    service_fn(move |_req: LlmRequest| {
        let resp = LlmResponse::new(model.clone(), reply.clone(), Usage::new(1000, 2));
        std::future::ready(Ok::<_, BoxError>(resp))
    })
}

fn quiet() -> BrittlenessPolicy {
    // Thresholds far away, so measured calls never reset.
    BrittlenessPolicy::default()
        .max_turns(None)
        .context_thresholds(None, None)
        .expect("valid")
}

fn ids(n: usize) -> Vec<SessionId> {
    (0..n)
        .map(|i| SessionId::new(format!("session-{i:07}")))
        .collect()
}

/// Calls `svc` once and returns the response; every future here is ready at
/// once (no-op model, in-memory store), so no executor is involved.
fn call_now<S>(svc: &mut S, req: LlmRequest) -> LlmResponse
where
    S: Service<LlmRequest, Response = LlmResponse, Error = BoxError>,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx))
        .now_or_never()
        .expect("ready")
        .expect("ok");
    svc.call(req).now_or_never().expect("immediate").expect("ok")
}

fn request(session: &SessionId, messages: &Arc<Vec<Message>>) -> LlmRequest {
    let mut req = LlmRequest::new(session.clone(), "trader", Vec::new());
    req.messages = messages.clone();
    req
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut group = c.benchmark_group("reset_overhead");
    for sessions in [1usize, 10_000, 1_000_000] {
        let store = MemorySessionStore::builder()
            .capacity(2 * sessions)
            .idle_ttl(None)
            .build();
        let ids = ids(sessions);
        let mut svc = ResetLayer::with_store(store.clone())
            .policy(quiet())
            .layer(noop_model());
        let mut bare = noop_model();
        for len in [10usize, 1000] {
            let h = history(len);
            // Warm every session with this history (the first call of a
            // session estimates its whole history once).
            for id in &ids {
                call_now(&mut svc, request(id, &h));
            }
            assert_eq!(store.len(), sessions);
            let name = format!("{sessions}s_{len}m");
            // A multiplicative walk over the sessions, the same in both arms.
            let step = (2_654_435_761usize % sessions.max(1)) | 1;
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new(&name, "bare"), |b| {
                b.iter(|| {
                    i = (i + step) % sessions;
                    black_box(call_now(&mut bare, request(&ids[i], &h)))
                })
            });
            group.bench_function(BenchmarkId::new(&name, "reset"), |b| {
                b.iter(|| {
                    i = (i + step) % sessions;
                    black_box(call_now(&mut svc, request(&ids[i], &h)))
                })
            });
        }
    }
    group.finish();
}

fn remembered(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let layer = ResetLayer::new().policy(quiet());
    let store = layer.store().clone();
    let mut svc = layer.layer(noop_model());
    let h = history(1000);
    let id = SessionId::new("remembered");
    call_now(&mut svc, request(&id, &h));
    mantissa_core::control::SessionControl::request_reset(&store, &id, "bench");
    let resp = call_now(&mut svc, request(&id, &h));
    let reset = mantissa_reset::ContextReset::of(&resp).expect("a reset");
    eprintln!("remembered reset: {reset}");
    c.bench_function("reset_remembered/1000m", |b| {
        b.iter(|| black_box(call_now(&mut svc, request(&id, &h))))
    });
}

fn compaction(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let h = history(1000);
    let summarizer = service_fn(|_req: LlmRequest| {
        std::future::ready(Ok::<_, BoxError>(LlmResponse::new(
            "mock-small",
            Message::assistant("The user asked about ACME's price many times; it is 123.45 USD."),
            Usage::default(),
        )))
    });
    let policy = BrittlenessPolicy::default().max_turns(Some(1));
    let mut trim = ResetLayer::new().policy(policy.clone()).layer(noop_model());
    let mut summarize = ResetLayer::new()
        .policy(policy)
        .summarizer(summarizer)
        .layer(noop_model());
    let mut group = c.benchmark_group("reset_compaction");
    let mut n = 0u64;
    for (name, svc) in [("trim", &mut trim), ("summarize", &mut summarize)] {
        group.bench_function(BenchmarkId::new("1000m", name), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    request(&SessionId::new(format!("c{n}")), &h)
                },
                |req| {
                    let resp = call_now(svc, req);
                    debug_assert!(mantissa_reset::ContextReset::of(&resp).is_some());
                    black_box(resp)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Resident memory per idle session, measured while inserting 1,000,000.
fn memory_report() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    const N: usize = 1_000_000;
    let store = MemorySessionStore::builder().capacity(N).idle_ttl(None).build();
    let now = tokio::time::Instant::now();
    let before = rss_bytes();
    for i in 0..N {
        let id = SessionId::new(format!("session-{i:07}"));
        store
            .update(&id, now, |_| ())
            .now_or_never()
            .expect("immediate")
            .expect("ok");
    }
    let after = rss_bytes();
    let own = store.approximate_bytes();
    eprintln!(
        "memory per idle session ({N} sessions): resident growth {} bytes (incl. 15-char id strings); store \
         structures {} bytes; size_of lower bound {} bytes; SessionState {} bytes",
        match (before, after) {
            (Some(b), Some(a)) => (a.saturating_sub(b) / N).to_string(),
            _ => "n/a".to_owned(),
        },
        own / N,
        mantissa_reset::MemorySessionStore::bytes_per_session_lower_bound(),
        std::mem::size_of::<mantissa_reset::SessionState>(),
    );
    drop(store);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = overhead, remembered, compaction
}

fn main() {
    memory_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
