//! What sharing sessions through Redis adds to a call: the reset layer over
//! an instant model, with the in-memory store alone and with the store
//! shared through a real `redis-server` on loopback (started by the bench,
//! as the tests start theirs), in the same run.
//!
//! Prints p50/p99 per call for both and the difference, then the
//! serialized size of a session and what Redis holds for it; criterion then
//! measures both (mean and spread).
//!
//! Run: `cargo bench -p mantissa-redis --bench redis_overhead`
//! (needs `redis-server`: `apt-get install redis-server`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, Usage};
use mantissa_redis::{RedisConfig, RedisSessions};
use mantissa_reset::{MemorySessionStore, ResetLayer};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt, service_fn};

type Svc = BoxCloneSyncService<LlmRequest, LlmResponse, BoxError>;

/// Sessions the calls rotate over.
const SESSIONS: usize = 1000;

fn instant_model() -> Svc {
    BoxCloneSyncService::new(service_fn(|_req: LlmRequest| async {
        Ok::<_, BoxError>(LlmResponse::new("m", Message::assistant("ok"), Usage::new(40, 5)))
    }))
}

fn stack(store: MemorySessionStore) -> Svc {
    BoxCloneSyncService::new(
        ResetLayer::with_store(store)
            .layer(instant_model())
            .map_err(Into::<BoxError>::into),
    )
}

fn history() -> Vec<Message> {
    vec![
        Message::system("You are a helpful agent."),
        Message::user("What is the capital of France?"),
        Message::assistant("Paris."),
        Message::user("And of Italy?"),
    ]
}

async fn one(svc: &Svc, i: usize, h: &[Message]) {
    let req = LlmRequest::new(format!("bench-{}", i % SESSIONS), "agent", h.to_vec());
    svc.clone().oneshot(req).await.unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench(c: &mut Criterion) {
    let server = common::RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (memory, shared) = rt.block_on(async {
        let backend = RedisSessions::new(&RedisConfig::new(server.url()).prefix("bench")).unwrap();
        (
            stack(MemorySessionStore::new()),
            stack(MemorySessionStore::builder().shared(Arc::new(backend)).build()),
        )
    });
    let h = history();

    // Percentiles, the two stores interleaved call by call.
    let (mut mem, mut red) = (Vec::new(), Vec::new());
    rt.block_on(async {
        for i in 0..2 * SESSIONS {
            one(&memory, i, &h).await;
            one(&shared, i, &h).await;
        }
        for i in 0..20_000 {
            let t = Instant::now();
            one(&memory, i, &h).await;
            mem.push(t.elapsed());
            let t = Instant::now();
            one(&shared, i, &h).await;
            red.push(t.elapsed());
        }
    });
    mem.sort();
    red.sort();
    let (m50, m99) = (percentile(&mem, 0.5), percentile(&mem, 0.99));
    let (r50, r99) = (percentile(&red, 0.5), percentile(&red, 0.99));
    println!(
        "reset layer call, {} calls each, {SESSIONS} sessions, loopback redis-server:",
        mem.len()
    );
    println!("  memory store           p50 {m50:>10.2?}  p99 {m99:>10.2?}");
    println!("  memory + redis shared  p50 {r50:>10.2?}  p99 {r99:>10.2?}");
    println!(
        "  added per call         p50 {:>10.2?}  p99 {:>10.2?}",
        r50.saturating_sub(m50),
        r99.saturating_sub(m99)
    );
    let len = server.command(&["HSTRLEN", "bench:session:bench-1", "s"]);
    let mem_usage = server.command(&["MEMORY", "USAGE", "bench:session:bench-1"]);
    println!(
        "  one session: serialized {} bytes; redis MEMORY USAGE {} bytes",
        len.trim().trim_start_matches(':'),
        mem_usage.trim().trim_start_matches(':')
    );

    let mut g = c.benchmark_group("reset_call");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    let mut i = 0usize;
    g.bench_function("memory", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            one(&memory, i, &h)
        })
    });
    let mut j = 0usize;
    g.bench_function("memory_plus_redis", |b| {
        b.to_async(&rt).iter(|| {
            j += 1;
            one(&shared, j, &h)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
