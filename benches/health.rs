//! Overhead of `HealthLayer` per call, with mantissa's Prometheus exporter
//! installed and the health registry's collector registered with it (so the
//! layer is in `MetricsMode::Cells`: each call is recorded once, into cells
//! the exporter renders at scrape time): a no-op inner service called
//! directly vs. wrapped, for an LLM service and a tool service, beside the
//! floor layer (`support/floor.rs`) in the same run. `health_recorder` is the
//! same layer in `MetricsMode::Recorder` (what an application with its own
//! `metrics` recorder pays: the cells plus every handle operation);
//! `health_context` gives the layer the stack's `Catalog` and resolved
//! requests (series found by call-context indices).
//!
//! The cost of the call spans: `health` runs with no `tracing` subscriber at
//! all (the spans are disabled no-ops); `spans_subscriber_off` under a
//! subscriber that wants nothing (`LevelFilter::OFF`); `spans_recorded` under
//! a registry plus a layer that visits (formats into a discarding writer)
//! every span field, as an exporter would.
//!
//! Run: `cargo bench --bench health -- --warm-up-time 1 --measurement-time 3`
//!
//! Instruction counts: `HEALTH_CALLS=CASE:N` runs one case `N` times without
//! criterion and exits (`CASE` = `llm_direct`, `llm_floor`, `llm_health`,
//! `llm_recorder`, `tool_direct`, `tool_floor`, `tool_health`,
//! `tool_recorder`); under `valgrind --tool=callgrind`, the difference of two
//! runs with different `N` divided by the difference of `N` is the count per
//! call (setup cancels out).
//!
//! The inner services answer immediately, so each call is polled once with a
//! no-op waker (no runtime in the loop): what remains is the layer's own work
//! (label lookup, clocks, cells, registry windows, event journal).

#![allow(missing_docs)] // `criterion_group!` generates an undocumented public function.

#[path = "support/floor.rs"]
mod floor;

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mantissa_core::{
    BoxError, Catalog, LlmRequest, LlmResponse, Message, TierSet, ToolRequest, ToolResponse, Usage,
};
use mantissa_health::{HealthLayer, HealthRegistry, MetricsMode};
use mantissa_prometheus::{ExporterHandle, PrometheusConfig};
use tower::{Layer, Service};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Formats every field of every span into a writer that discards the bytes:
/// the work an exporting layer does, without its allocation or I/O.
struct VisitAll;

/// Spans `VisitAll` saw: checked after each `spans_recorded` case, so the
/// case cannot silently measure disabled spans.
static SPANS_SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn assert_spans_recorded(case: &str, ran: bool) {
    let n = SPANS_SEEN.swap(0, std::sync::atomic::Ordering::Relaxed);
    assert!(!ran || n > 0, "{case}: no span reached the recording layer");
}

struct Discard;

impl std::fmt::Write for Discard {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        black_box(s.len());
        Ok(())
    }
}

impl Visit for Discard {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = std::fmt::Write::write_fmt(self, format_args!("{}={value:?}", field.name()));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for VisitAll {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: LayerContext<'_, S>) {
        SPANS_SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        attrs.record(&mut Discard);
    }

    fn on_record(&self, _: &Id, values: &Record<'_>, _: LayerContext<'_, S>) {
        values.record(&mut Discard);
    }
}

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

/// Installs mantissa's exporter (catalogue buckets and descriptions) with
/// upkeep on a plain thread, as the exporter's upkeep task would run it.
fn install_prometheus() -> ExporterHandle {
    let handle = match PrometheusConfig::new().without_upkeep().install() {
        Ok(h) => h,
        Err(e) => panic!("cannot install the Prometheus exporter: {e}"),
    };
    let upkeep = handle.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            upkeep.run_upkeep();
        }
    });
    handle
}

/// A subscriber that wants nothing and one that records every span.
///
/// Created after the spanless cases, and the second while the first is
/// alive: `tracing` caches each callsite's interest when a dispatcher is
/// registered, and with a single live dispatcher it asks the thread's
/// *current* default (not yet the new one), which would leave the callsites
/// disabled under the recording subscriber too.
fn subscribers() -> (tracing::Dispatch, tracing::Dispatch) {
    let off = tracing::Dispatch::new(tracing_subscriber::registry().with(LevelFilter::OFF));
    let recording = tracing::Dispatch::new(tracing_subscriber::registry().with(VisitAll));
    (off, recording)
}

/// Runs `N` calls of one case (`HEALTH_CALLS=CASE:N`, see the module docs).
fn count_calls(
    spec: &str,
    layer: &HealthLayer,
    recorder: &HealthLayer,
    llm: &LlmRequest,
    tool: &ToolRequest,
) {
    let (case, n) = spec.split_once(':').unwrap_or((spec, "100000"));
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("HEALTH_CALLS: bad count in {spec}"));
    fn run<S: Service<R>, R: Clone>(mut svc: S, req: &R, n: u64) {
        for _ in 0..n {
            let _ = black_box(now(svc.call(black_box(req.clone()))));
        }
    }
    match case {
        "llm_direct" => run(NoopLlm, llm, n),
        "llm_floor" => run(floor::FloorLayer::new().layer(NoopLlm), llm, n),
        "llm_health" => run(layer.layer(NoopLlm), llm, n),
        "llm_recorder" => run(recorder.layer(NoopLlm), llm, n),
        "tool_direct" => run(NoopTool, tool, n),
        "tool_floor" => run(floor::FloorLayer::new().layer(NoopTool), tool, n),
        "tool_health" => run(layer.layer(NoopTool), tool, n),
        "tool_recorder" => run(recorder.layer(NoopTool), tool, n),
        other => panic!("HEALTH_CALLS: unknown case {other}"),
    }
}

fn bench(c: &mut Criterion) {
    let exporter = install_prometheus();
    let registry = HealthRegistry::new();
    exporter.register_collector(registry.collector());
    let layer = HealthLayer::with_registry(registry)
        .tiers(TierSet::default())
        .agents(["trader", "analyst", "risk"]);
    assert_eq!(layer.mode(), MetricsMode::Cells);
    let recorder_layer = layer.clone().metrics_mode(MetricsMode::Recorder);
    let tool_req = ToolRequest::new(
        "session-1",
        "trader",
        "call-1",
        "get_price",
        serde_json::json!({"symbol": "XYZ"}),
    );
    let llm_req = LlmRequest::new("session-1", "trader", vec![Message::user("price of XYZ?")])
        .with_model("mock-small")
        .with_tier("low");
    if let Ok(spec) = std::env::var("HEALTH_CALLS") {
        count_calls(&spec, &layer, &recorder_layer, &llm_req, &tool_req);
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("health/llm");
    let mut direct = NoopLlm;
    group.bench_function("direct", |b| {
        b.iter(|| black_box(now(direct.call(black_box(llm_req.clone())))))
    });
    let mut floor = floor::FloorLayer::new().layer(NoopLlm);
    group.bench_function("floor", |b| {
        b.iter(|| black_box(now(floor.call(black_box(llm_req.clone())))))
    });
    let mut wrapped = layer.layer(NoopLlm);
    group.bench_function("health", |b| {
        b.iter(|| black_box(now(wrapped.call(black_box(llm_req.clone())))))
    });
    let mut through_recorder = recorder_layer.layer(NoopLlm);
    group.bench_function("health_recorder", |b| {
        b.iter(|| black_box(now(through_recorder.call(black_box(llm_req.clone())))))
    });
    // The stack's way: the request carries a context its catalog resolved,
    // and the layer finds the series by its indices.
    let catalog = Catalog::builder(&TierSet::default())
        .agents(["trader", "analyst", "risk"])
        .build();
    let mut resolved_req = llm_req.clone();
    catalog.resolve(&mut resolved_req);
    let mut by_context = layer.clone().call_context(catalog).layer(NoopLlm);
    group.bench_function("health_context", |b| {
        b.iter(|| black_box(now(by_context.call(black_box(resolved_req.clone())))))
    });
    // One service shared by three agents: the series of each call is looked
    // up in the layer's cache by its label tuple.
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
    let (off, recording) = subscribers();
    tracing::dispatcher::with_default(&off, || {
        group.bench_function("spans_subscriber_off", |b| {
            b.iter(|| black_box(now(wrapped.call(black_box(llm_req.clone())))))
        });
    });
    tracing::dispatcher::with_default(&recording, || {
        let mut ran = false;
        group.bench_function("spans_recorded", |b| {
            ran = true;
            b.iter(|| black_box(now(wrapped.call(black_box(llm_req.clone())))))
        });
        assert_spans_recorded("health/llm/spans_recorded", ran);
    });
    drop((off, recording));
    group.finish();

    let mut group = c.benchmark_group("health/tool");
    let mut direct = NoopTool;
    group.bench_function("direct", |b| {
        b.iter(|| black_box(now(direct.call(black_box(tool_req.clone())))))
    });
    let mut floor = floor::FloorLayer::new().layer(NoopTool);
    group.bench_function("floor", |b| {
        b.iter(|| black_box(now(floor.call(black_box(tool_req.clone())))))
    });
    let mut wrapped = layer.layer(NoopTool);
    group.bench_function("health", |b| {
        b.iter(|| black_box(now(wrapped.call(black_box(tool_req.clone())))))
    });
    let mut through_recorder = recorder_layer.layer(NoopTool);
    group.bench_function("health_recorder", |b| {
        b.iter(|| black_box(now(through_recorder.call(black_box(tool_req.clone())))))
    });
    let (off, recording) = subscribers();
    tracing::dispatcher::with_default(&off, || {
        group.bench_function("spans_subscriber_off", |b| {
            b.iter(|| black_box(now(wrapped.call(black_box(tool_req.clone())))))
        });
    });
    tracing::dispatcher::with_default(&recording, || {
        let mut ran = false;
        group.bench_function("spans_recorded", |b| {
            ran = true;
            b.iter(|| black_box(now(wrapped.call(black_box(tool_req.clone())))))
        });
        assert_spans_recorded("health/tool/spans_recorded", ran);
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
