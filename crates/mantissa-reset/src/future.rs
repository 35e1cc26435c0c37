//! The [`ResponseFuture`] of [`Reset`](crate::Reset).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use mantissa_core::{BoxError, LlmResponse};

/// The response future of [`Reset`](crate::Reset).
///
/// A call has up to four asynchronous phases whose types depend on the store
/// and the summarizer (read-and-decide in the store, summarize, the inner
/// call, commit in the store); they run in one boxed state machine (one
/// allocation per call, measured in the `reset` bench).
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<LlmResponse, BoxError>> + Send + 'static>>,
}

impl ResponseFuture {
    pub(crate) fn new(inner: impl Future<Output = Result<LlmResponse, BoxError>> + Send + 'static) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<LlmResponse, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
