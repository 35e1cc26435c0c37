//! The response future of [`Health`](crate::Health) and the wrapper of
//! streamed bodies.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use mantissa_core::{BoxError, Chunk, ChunkStream, Usage, classify_box};
use pin_project_lite::pin_project;

use crate::record::{Call, Scope};
use crate::request::{Classify, ObservedRequest, class_for};
use crate::trace::{self, StreamTrace};
use tokio::time::Instant;

pin_project! {
    /// Response future of [`Health`](crate::Health).
    ///
    /// Records the call when the inner future completes. Dropped before that,
    /// it records the call as cancelled and lowers the in-flight gauge. A
    /// streamed response hands the bookkeeping to its body, which records the
    /// call when the stream ends or is dropped.
    ///
    /// The inner future is polled inside the call's span (entered for each
    /// poll only, never across a suspension), and the span closes when the
    /// call is recorded.
    pub struct ResponseFuture<F, R> {
        #[pin]
        inner: F,
        call: Option<Call>,
        _request: PhantomData<fn() -> R>,
    }
}

impl<F, R> ResponseFuture<F, R> {
    pub(crate) fn new(inner: F, call: Call) -> Self {
        Self {
            inner,
            call: Some(call),
            _request: PhantomData,
        }
    }
}

impl<F, R> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<R::Response, E>>,
    R: ObservedRequest,
    E: Classify + fmt::Display,
{
    type Output = Result<R::Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut result = {
            let _entered = this.call.as_ref().map(|c| c.span().enter());
            ready!(this.inner.poll(cx))
        };
        let Some(mut call) = this.call.take() else {
            return Poll::Ready(result);
        };
        // Inspect the response in place: it can be large, so it is not moved.
        match &mut result {
            Ok(resp) => {
                call.bind_model(R::response_model(resp));
                trace::record_response(call.span(), resp, call.trace_settings());
                match R::take_stream(resp) {
                    Some(stream) => {
                        // The call ends with its stream: nothing answered yet.
                        R::set_answered_at(resp, None);
                        R::put_stream(resp, ChunkStream::new(ObservedStream::new(stream, call)));
                    }
                    None => {
                        // One clock read for the answer, shared outwards: an
                        // outcome ends when the attempt that served it did.
                        let end = match (call.scope(), R::answered_at(resp)) {
                            (Scope::Outcome, Some(at)) => at,
                            _ => Instant::now(),
                        };
                        R::set_answered_at(resp, Some(end));
                        call.finish(R::response_failure(resp), R::usage(resp), None, end);
                    }
                }
            }
            Err(e) => {
                let class = class_for(R::KIND, e.failure_class());
                call.finish(Some(class), Usage::default(), Some(e.to_string()), Instant::now());
            }
        }
        Poll::Ready(result)
    }
}

/// A streamed body under observation: time to first chunk at the first
/// chunk; duration, usage (from the chunk that carries it, usually the last)
/// and outcome when the stream ends, fails, or is dropped early (cancelled).
/// The call's span stays open until then and is entered while the inner
/// stream is polled.
struct ObservedStream {
    inner: ChunkStream,
    call: Option<Call>,
    seen_chunk: bool,
    usage: Usage,
    trace: StreamTrace,
}

impl ObservedStream {
    fn new(inner: ChunkStream, call: Call) -> Self {
        let trace = StreamTrace::new(call.span(), call.trace_settings());
        Self {
            inner,
            call: Some(call),
            seen_chunk: false,
            usage: Usage::default(),
            trace,
        }
    }
}

impl Stream for ObservedStream {
    type Item = Result<Chunk, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let item = {
            let _entered = this.call.as_ref().map(|c| c.span().enter());
            ready!(Pin::new(&mut this.inner).poll_next(cx))
        };
        let Some(call) = this.call.as_mut() else {
            return Poll::Ready(item);
        };
        match &item {
            Some(Ok(chunk)) => {
                if !this.seen_chunk {
                    this.seen_chunk = true;
                    call.first_chunk();
                }
                if let Some(u) = chunk.usage {
                    this.usage = u;
                }
                this.trace.chunk(call.span(), chunk);
            }
            Some(Err(e)) => {
                this.trace.end(call.span());
                call.finish(
                    Some(classify_box(e)),
                    this.usage,
                    Some(e.to_string()),
                    Instant::now(),
                );
                this.call = None;
            }
            None => {
                this.trace.end(call.span());
                call.finish(None, this.usage, None, Instant::now());
                this.call = None;
            }
        }
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
