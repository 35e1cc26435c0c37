use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use mantissa_core::{LlmRequest, LlmResponse};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::Shared;
use crate::decision::TierDecision;

pin_project! {
    #[project = StateProj]
    enum State<F, SF, S> {
        Triaging {
            #[pin]
            decision: F,
            pending: Option<(LlmRequest, S, Arc<Shared>)>,
        },
        Calling {
            #[pin]
            fut: SF,
        },
    }
}

pin_project! {
    /// Response future of [`Triaged`](super::Triaged): waits for
    /// the decision (immediate for synchronous strategies), then for the
    /// inner service, and attaches the decision to the response.
    pub struct ResponseFuture<F, S>
    where
        S: Service<LlmRequest>,
    {
        #[pin]
        state: State<F, S::Future, S>,
        decision: Option<TierDecision>,
    }
}

impl<F, S: Service<LlmRequest>> std::fmt::Debug for ResponseFuture<F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

impl<F, S: Service<LlmRequest>> ResponseFuture<F, S> {
    pub(super) fn calling(fut: S::Future, decision: TierDecision) -> Self {
        Self {
            state: State::Calling { fut },
            decision: Some(decision),
        }
    }

    pub(super) fn triaging(decision: F, req: LlmRequest, inner: S, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Triaging {
                decision,
                pending: Some((req, inner, shared)),
            },
            decision: None,
        }
    }
}

impl<F, S> Future for ResponseFuture<F, S>
where
    F: Future<Output = TierDecision>,
    S: Service<LlmRequest, Response = LlmResponse>,
{
    type Output = Result<LlmResponse, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Triaging { decision, pending } => {
                    let d = ready!(decision.poll(cx));
                    // Only `None` if polled again after completion.
                    let Some((mut req, mut inner, shared)) = pending.take() else {
                        return Poll::Pending;
                    };
                    let d = shared.finish(&mut req, d);
                    *this.decision = Some(d);
                    let fut = inner.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let mut resp = ready!(fut.poll(cx))?;
                    if let Some(d) = this.decision.take() {
                        resp.extensions.insert(d);
                    }
                    return Poll::Ready(Ok(resp));
                }
            }
        }
    }
}
