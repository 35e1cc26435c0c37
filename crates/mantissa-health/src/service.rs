use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::record::{Scope, Shared};
use crate::registry::HealthRegistry;
use crate::request::{Classify, ObservedRequest};

/// Observes every call of an LLM service (`Service<LlmRequest, Response =
/// LlmResponse>`) or a tool service (`Service<ToolRequest, Response =
/// ToolResponse>`): metrics, registry windows and health events. Built by
/// [`HealthLayer`](crate::HealthLayer); passes the inner service's errors through unchanged.
#[derive(Clone)]
pub struct Health<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Health<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S> Health<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The registry this service feeds.
    pub fn registry(&self) -> &HealthRegistry {
        &self.shared.registry
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Health<S>
where
    R: ObservedRequest,
    S: Service<R, Response = R::Response>,
    S::Error: Classify + fmt::Display,
{
    type Response = R::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // What the agent experienced starts where the stack began timing
        // the call (one clock read shared with the reset layer); an attempt
        // is timed around its own inner call.
        let start = match (self.shared.scope, req.started()) {
            (Scope::Outcome, Some(started)) => started,
            _ => Instant::now(),
        };
        let call = self.shared.begin(&req, start);
        // The inner service's own `call` (often where a client builds its
        // request) runs inside the span, so its spans and events nest.
        let inner = {
            let _entered = call.span().enter();
            self.inner.call(req)
        };
        ResponseFuture::new(inner, call)
    }
}
