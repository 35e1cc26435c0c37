use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use mantissa_core::{AgentName, CallContext, LlmRequest, LlmResponse, TierRaised};
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
        // A strategy decision, counted when the call completes.
        count: Option<((AgentName, CallContext), Arc<Shared>)>,
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
    /// Calls with a decision already counted.
    pub(super) fn calling(fut: S::Future, decision: TierDecision) -> Self {
        Self {
            state: State::Calling { fut },
            decision: Some(decision),
            count: None,
        }
    }

    /// Calls with a strategy decision, counted when the call completes.
    pub(super) fn counting(
        fut: S::Future,
        decision: TierDecision,
        who: (AgentName, CallContext),
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Calling { fut },
            decision: Some(decision),
            count: Some((who, shared)),
        }
    }

    pub(super) fn triaging(decision: F, req: LlmRequest, inner: S, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Triaging {
                decision,
                pending: Some((req, inner, shared)),
            },
            decision: None,
            count: None,
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
                    *this.count = Some(((req.agent.clone(), req.ctx), shared));
                    let fut = inner.call(req);
                    this.state.set(State::Calling { fut });
                }
                StateProj::Calling { fut } => {
                    let mut result = ready!(fut.poll(cx));
                    let decision = this.decision.take();
                    // The response is large: it is inspected in place, not moved.
                    match (&mut result, this.count.take(), decision) {
                        (Ok(resp), Some(((agent, ctx), shared)), Some(d)) => {
                            let d = shared.count(&agent, &ctx, d, resp.extensions.get::<TierRaised>());
                            resp.decision = Some(d);
                        }
                        (Ok(resp), _, Some(d)) => {
                            resp.decision = Some(d);
                        }
                        (Ok(_), _, None) => {}
                        (Err(_), Some(((agent, ctx), shared)), Some(d)) => {
                            shared.count(&agent, &ctx, d, None);
                        }
                        (Err(_), _, _) => {}
                    }
                    return Poll::Ready(result);
                }
            }
        }
    }
}
