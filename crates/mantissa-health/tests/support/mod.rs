//! Helpers shared by the health layer's test binaries (tower's
//! `tests/support.rs` habit): requests, mock LLM services, a paused runtime
//! recording into a [`MetricsCapture`], and exact-label metric readers.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use mantissa_core::{
    BoxError, Chunk, ChunkStream, FailureClass, LlmError, LlmRequest, LlmResponse, Message, ToolRequest,
    Usage,
};
use mantissa_mock::metrics::{MetricsCapture, Series, Value};
use tower::{Service, service_fn};

// ---- metrics ----

/// Runs `test` to completion on a paused current-thread runtime (what
/// `#[tokio::test(start_paused = true)]` builds) with `capture` as the
/// thread's `metrics` recorder. The layer is built inside `test`, so its
/// metric handles bind to `capture`.
pub(crate) fn recorded<F: Future>(capture: &MetricsCapture, test: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    capture.in_scope(|| rt.block_on(test))
}

/// Accumulates the snapshots of a [`MetricsCapture`] (each snapshot resets
/// what it reads), so a test can read several times and see the totals:
/// counters and gauges add up, histograms append. Labels are kept sorted by
/// key, so a series is identified by its name and its set of labels.
pub(crate) struct Metrics {
    capture: MetricsCapture,
    acc: Vec<Series>,
}

impl Metrics {
    pub(crate) fn new(capture: &MetricsCapture) -> Self {
        Self {
            capture: capture.clone(),
            acc: Vec::new(),
        }
    }

    /// Every series recorded so far, with the values accumulated.
    pub(crate) fn read(&mut self) -> &[Series] {
        for series in self.capture.snapshot().all() {
            let mut series = series.clone();
            series.labels.sort();
            match self
                .acc
                .iter_mut()
                .find(|s| s.name == series.name && s.labels == series.labels)
            {
                None => self.acc.push(series),
                Some(old) => match (&mut old.value, series.value) {
                    (Value::Counter(a), Value::Counter(b)) => *a += b,
                    (Value::Gauge(a), Value::Gauge(b)) => *a += b,
                    (Value::Histogram(a), Value::Histogram(b)) => a.extend(b),
                    (old, v) => panic!("{old:?} then {v:?}"),
                },
            }
        }
        &self.acc
    }
}

/// The value of the series of `name` with exactly these labels (no more: a
/// series with an extra label, `error.type` say, is another series).
pub(crate) fn value<'a>(series: &'a [Series], name: &str, want: &[(&str, &str)]) -> &'a Value {
    series
        .iter()
        .find(|s| s.name == name && s.labels.len() == want.len() && s.has_labels(want))
        .map(|s| &s.value)
        .unwrap_or_else(|| {
            let have: Vec<_> = series
                .iter()
                .filter(|s| s.name == name)
                .map(|s| &s.labels)
                .collect();
            panic!("no {name} with {want:?}; have {have:#?}")
        })
}

pub(crate) fn counter(series: &[Series], name: &str, want: &[(&str, &str)]) -> u64 {
    match value(series, name, want) {
        Value::Counter(c) => *c,
        other => panic!("{name} is {other:?}"),
    }
}

pub(crate) fn gauge(series: &[Series], name: &str, want: &[(&str, &str)]) -> f64 {
    match value(series, name, want) {
        Value::Gauge(g) => *g,
        other => panic!("{name} is {other:?}"),
    }
}

pub(crate) fn hist(series: &[Series], name: &str, want: &[(&str, &str)]) -> Vec<f64> {
    match value(series, name, want) {
        Value::Histogram(h) => h.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

// ---- requests and services ----

pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

pub(crate) fn chat(session: &str, agent: &str, model: Option<&str>) -> LlmRequest {
    let req = LlmRequest::new(session, agent, vec![Message::user("hello")]);
    match model {
        Some(m) => req.with_model(m),
        None => req,
    }
}

pub(crate) fn tool_req(session: &str, agent: &str, name: &str) -> ToolRequest {
    ToolRequest::new(
        session,
        agent,
        "call-1",
        name,
        serde_json::json!({"symbol": "XYZ"}),
    )
}

/// An LLM service that answers after `delay` with `usage` from model `model`.
pub(crate) fn llm(
    model: &'static str,
    usage: Usage,
    delay: Duration,
) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: LlmRequest| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(LlmResponse::new(model, Message::assistant("ok"), usage))
    })
}

/// A streaming LLM: the first chunk after 250 ms, then 100 ms per chunk; the
/// last chunk carries usage; optionally an error instead of the last chunk.
pub(crate) fn streaming_llm(
    fail: bool,
) -> impl Service<LlmRequest, Response = LlmResponse, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_req: LlmRequest| async move {
        let chunks = futures_util::stream::unfold(0u32, move |i| async move {
            let item: Result<Chunk, BoxError> = match i {
                0 | 1 => {
                    let wait = if i == 0 { 250 } else { 100 };
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    Ok(Chunk {
                        content: Some(format!("part {i} ")),
                        ..Chunk::default()
                    })
                }
                2 if fail => Err(Box::new(LlmError::new(FailureClass::InvalidResponse, "cut"))),
                2 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Chunk {
                        usage: Some(Usage::new(20, 7)),
                        ..Chunk::default()
                    })
                }
                _ => return None,
            };
            Some((item, i + 1))
        });
        Ok::<_, BoxError>(LlmResponse::streaming("mock-medium", ChunkStream::new(chunks)))
    })
}
