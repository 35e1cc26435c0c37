//! The floor every overhead is reported against: a layer doing the least a
//! measuring middleware can do per call — two clock reads, one counter and
//! one histogram through handles held since the layer was built.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Builds [`Floor`] services sharing one counter and one histogram.
#[derive(Clone)]
pub(crate) struct FloorLayer {
    handles: Arc<Handles>,
}

struct Handles {
    calls: Counter,
    duration: Histogram,
}

impl FloorLayer {
    /// Registers the two handles with the current recorder.
    pub(crate) fn new() -> Self {
        Self {
            handles: Arc::new(Handles {
                calls: metrics::counter!("bench_floor_calls_total"),
                duration: metrics::histogram!("bench_floor_duration_seconds"),
            }),
        }
    }
}

impl<S> Layer<S> for FloorLayer {
    type Service = Floor<S>;

    fn layer(&self, inner: S) -> Floor<S> {
        Floor {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The floor layer's service.
#[derive(Clone)]
pub(crate) struct Floor<S> {
    inner: S,
    handles: Arc<Handles>,
}

impl<S: Service<R>, R> Service<R> for Floor<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        FloorFuture {
            inner: self.inner.call(req),
            start: Instant::now(),
            handles: self.handles.clone(),
        }
    }
}

pin_project! {
    /// Records the call when the inner future completes.
    pub(crate) struct FloorFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        handles: Arc<Handles>,
    }
}

impl<F: Future> Future for FloorFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        this.handles.calls.increment(1);
        this.handles.duration.record(this.start.elapsed().as_secs_f64());
        Poll::Ready(out)
    }
}
