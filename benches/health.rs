//! Overhead of `HealthLayer` per call, with the Prometheus recorder installed:
//! a no-op inner service called directly vs. wrapped, for an LLM service and a
//! tool service, in the same run.
//!
//! Run: `cargo bench --bench health -- --warm-up-time 1 --measurement-time 3`
//!
//! The inner services answer immediately, so each call is polled once with a
//! no-op waker (no runtime in the loop): what remains is the layer's own work
//! (label lookup, clocks, metric handles, registry windows, event journal).

#![allow(missing_docs)] // `criterion_group!` generates an undocumented public function.

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mantissa_core::catalog;
use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, TierSet, ToolRequest, ToolResponse, Usage};
use mantissa_health::HealthLayer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::{Layer, Service};

/// An LLM service that answers at once.
#[derive(Clone)]
struct NoopLlm;

impl Service<LlmRequest> for NoopLlm {
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = Ready<Result<LlmResponse, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: LlmRequest) -> Self::Future {
        ready(Ok(LlmResponse::new(
            "mock-small",
            Message::assistant("ok"),
            Usage::new(120, 30),
        )))
    }
}

/// A tool service that answers at once.
#[derive(Clone)]
struct NoopTool;

impl Service<ToolRequest> for NoopTool {
    type Response = ToolResponse;
    type Error = BoxError;
    type Future = Ready<Result<ToolResponse, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ToolRequest) -> Self::Future {
        ready(Ok(ToolResponse::ok("42")))
    }
}

/// Polls a future that is ready at once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the no-op services are always ready"),
    }
}

fn install_prometheus() {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in catalog::HISTOGRAMS {
        builder = match builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets) {
            Ok(b) => b,
            Err(e) => panic!("buckets for {name}: {e}"),
        };
    }
    let handle = match builder.install_recorder() {
        Ok(h) => h,
        Err(e) => panic!("cannot install the Prometheus recorder: {e}"),
    };
    catalog::describe_all();
    // Drain histogram samples into buckets, as an exporter's upkeep would.
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            handle.run_upkeep();
        }
    });
}

fn bench(c: &mut Criterion) {
    install_prometheus();
    let layer = HealthLayer::with_tiers(TierSet::default()).agents(["trader", "analyst", "risk"]);

    let llm_req = LlmRequest::new("session-1", "trader", vec![Message::user("price of XYZ?")])
        .with_model("mock-small")
        .with_tier("low");
    let mut group = c.benchmark_group("health/llm");
    let mut direct = NoopLlm;
    group.bench_function("direct", |b| {
        b.iter(|| black_box(now(direct.call(black_box(llm_req.clone())))))
    });
    let mut wrapped = layer.layer(NoopLlm);
    group.bench_function("health", |b| {
        b.iter(|| black_box(now(wrapped.call(black_box(llm_req.clone())))))
    });
    // One service shared by three agents: every call misses the service's
    // memo of its last label tuple and looks the handles up in the cache.
    let rotating: Vec<LlmRequest> = ["trader", "analyst", "risk"]
        .into_iter()
        .map(|agent| {
            LlmRequest::new("session-1", agent, vec![Message::user("price of XYZ?")])
                .with_model("mock-small")
                .with_tier("low")
        })
        .collect();
    let mut shared = layer.layer(NoopLlm);
    let mut i = 0usize;
    group.bench_function("health_agents_rotating", |b| {
        b.iter(|| {
            i = (i + 1) % rotating.len();
            black_box(now(shared.call(black_box(rotating[i].clone()))))
        })
    });
    let mut no_journal = layer.clone().journal(false).layer(NoopLlm);
    group.bench_function("health_no_journal", |b| {
        b.iter(|| black_box(now(no_journal.call(black_box(llm_req.clone())))))
    });
    group.finish();

    let tool_req = ToolRequest::new(
        "session-1",
        "trader",
        "call-1",
        "get_price",
        serde_json::json!({"symbol": "XYZ"}),
    );
    let mut group = c.benchmark_group("health/tool");
    let mut direct = NoopTool;
    group.bench_function("direct", |b| {
        b.iter(|| black_box(now(direct.call(black_box(tool_req.clone())))))
    });
    let mut wrapped = layer.layer(NoopTool);
    group.bench_function("health", |b| {
        b.iter(|| black_box(now(wrapped.call(black_box(tool_req.clone())))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
