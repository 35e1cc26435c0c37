//! Cost of one call through the mocks, against a bare `service_fn` baseline
//! that returns a fixed response.
//!
//! Run: `cargo bench -p mantissa-mock --bench mock`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::StreamExt;
use mantissa_core::{BoxError, LlmRequest, LlmResponse, Message, ToolRequest, Usage};
use mantissa_mock::{MockLlm, MockTools};
use tower::ServiceExt;

fn request() -> LlmRequest {
    let mut history = vec![Message::system("You are a careful trader.")];
    for i in 0..10 {
        history.push(Message::user(format!(
            "Question {i}: should we buy ACME at this price?"
        )));
        history.push(Message::assistant(format!(
            "Answer {i}: not yet, the risk is medium."
        )));
    }
    history.push(Message::user("And now?"));
    LlmRequest::new("s1", "trader", history)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = request();
    let mut g = c.benchmark_group("mock_call");

    let baseline = tower::service_fn(|_req: LlmRequest| async {
        Ok::<_, BoxError>(LlmResponse::new(
            "m",
            Message::assistant("fixed"),
            Usage::new(10, 2),
        ))
    });
    g.bench_function("baseline_service_fn", |b| {
        b.to_async(&rt).iter(|| {
            let svc = baseline;
            let r = req.clone();
            async move { black_box(svc.oneshot(r).await.unwrap()) }
        })
    });

    let recording = MockLlm::new();
    g.bench_function("mock_llm_recording", |b| {
        b.to_async(&rt).iter(|| {
            let svc = recording.clone();
            let r = req.clone();
            async move { black_box(svc.oneshot(r).await.unwrap()) }
        })
    });

    let quiet = MockLlm::builder().record_limit(0).build();
    g.bench_function("mock_llm_no_recording", |b| {
        b.to_async(&rt).iter(|| {
            let svc = quiet.clone();
            let r = req.clone();
            async move { black_box(svc.oneshot(r).await.unwrap()) }
        })
    });

    let mut streamed = req.clone();
    streamed.params.stream = true;
    g.bench_function("mock_llm_stream_drained", |b| {
        b.to_async(&rt).iter(|| {
            let svc = quiet.clone();
            let r = streamed.clone();
            async move {
                let resp = svc.oneshot(r).await.unwrap();
                let mut s = resp.stream.unwrap();
                let mut n = 0;
                while let Some(c) = s.next().await {
                    black_box(c.unwrap());
                    n += 1;
                }
                n
            }
        })
    });

    let tools = MockTools::demo();
    let treq = ToolRequest::new(
        "s1",
        "trader",
        "c1",
        "get_market_price",
        serde_json::json!({"symbol": "ACME"}),
    );
    g.bench_function("mock_tools_get_market_price", |b| {
        b.to_async(&rt).iter(|| {
            let svc = tools.clone();
            let r = treq.clone();
            async move { black_box(svc.oneshot(r).await.unwrap()) }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
