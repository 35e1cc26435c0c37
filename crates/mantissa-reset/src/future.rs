//! The [`ResponseFuture`] of [`Reset`](crate::Reset).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use mantissa_core::{BoxError, LlmRequest, LlmResponse, TierRaised};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::service::{
    Begun, Commit, Plan, Shared, commit_now, commit_outcome, outcome_of, proceed, run, untracked,
};
use crate::store::SessionStore;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// The response future of [`Reset`](crate::Reset).
    ///
    /// A call is the pre-call update of its session, the rare path
    /// (warnings, compaction), the inner call, and the commit of its
    /// outcome. With a store whose updates never wait (the in-memory store
    /// without a shared backend) and no rare path, which is nearly every
    /// call, the two updates run in place and this future only wraps the
    /// inner call's, unboxed. Otherwise the phases run in one boxed state
    /// machine (their types depend on the store and the summarizer).
    pub struct ResponseFuture<S, St>
    where
        S: Service<LlmRequest>,
    {
        #[pin]
        state: State<S, St>,
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateTake]
    enum State<S, St>
    where
        S: Service<LlmRequest>,
    {
        // Not polled yet: nothing has happened (as with an `async fn`).
        Start {
            shared: Arc<Shared<St>>,
            inner: S,
            req: LlmRequest,
        },
        // The common path: the inner call, then the commit in place.
        Calling {
            #[pin]
            fut: S::Future,
            // `None`: the pre-call update failed, the call is untracked.
            commit: Option<(Arc<Shared<St>>, Commit)>,
            raised: Option<TierRaised>,
        },
        // The commit waits (a store that could not update at once).
        Committing {
            commit: BoxFuture<()>,
            result: Option<Result<LlmResponse, BoxError>>,
            raised: Option<TierRaised>,
        },
        // Every other call, in one boxed state machine.
        Boxed {
            fut: BoxFuture<Result<LlmResponse, BoxError>>,
        },
        Done,
    }
}

impl<S: Service<LlmRequest>, St> ResponseFuture<S, St> {
    pub(crate) fn new(shared: Arc<Shared<St>>, inner: S, req: LlmRequest) -> Self {
        Self {
            state: State::Start { shared, inner, req },
        }
    }
}

impl<S: Service<LlmRequest>, St> fmt::Debug for ResponseFuture<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// `raised`, reported in the response.
fn attach(
    mut result: Result<LlmResponse, BoxError>,
    raised: Option<TierRaised>,
) -> Result<LlmResponse, BoxError> {
    // The response is large: it is changed in place, not moved.
    if let (Ok(resp), Some(r)) = (&mut result, raised) {
        resp.extensions.insert(r);
    }
    result
}

impl<S, St> Future for ResponseFuture<S, St>
where
    S: Service<LlmRequest, Response = LlmResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: SessionStore,
{
    type Output = Result<LlmResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Start { .. } => {
                    let StateTake::Start {
                        shared,
                        mut inner,
                        mut req,
                    } = state.as_mut().project_replace(State::Done)
                    else {
                        return Poll::Pending;
                    };
                    let cfg = &shared.cfg;
                    let plan = Plan::new(cfg, &req);
                    let decided =
                        cfg.store
                            .update_now(&req.session, plan.hash(), plan.now(), plan.decide(cfg, &req));
                    let next = match decided {
                        // The store would wait: every phase in the boxed state machine.
                        None => State::Boxed {
                            fut: Box::pin(run(shared, inner, req, plan)),
                        },
                        Some(Err(e)) => {
                            untracked(&e);
                            State::Calling {
                                fut: inner.call(req),
                                commit: None,
                                raised: None,
                            }
                        }
                        Some(Ok(decided)) => {
                            let plan_now = plan.now();
                            let begun = Begun::new(&shared, &mut req, plan, decided);
                            if begun.is_rare() {
                                State::Boxed {
                                    fut: Box::pin(proceed(shared, inner, req, begun)),
                                }
                            } else {
                                let (commit, raised) = begun.into_commit(req.session.clone());
                                // Inner layers that time the whole call start
                                // from this layer's clock read.
                                req.ctx.started = Some(plan_now);
                                State::Calling {
                                    fut: inner.call(req),
                                    commit: Some((shared, commit)),
                                    raised,
                                }
                            }
                        }
                    };
                    state.set(next);
                }
                StateProj::Calling { fut, commit, raised } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    let raised = raised.take();
                    let Some((shared, commit)) = commit.take() else {
                        state.set(State::Done);
                        return Poll::Ready(result);
                    };
                    let outcome = outcome_of(&result);
                    let answered = result.as_ref().ok().and_then(|r| r.answered_at);
                    if commit_now(&shared.cfg, &commit, outcome, answered) {
                        state.set(State::Done);
                        return Poll::Ready(attach(result, raised));
                    }
                    let commit = Box::pin(async move { commit_outcome(&shared.cfg, &commit, outcome).await });
                    state.set(State::Committing {
                        commit,
                        result: Some(result),
                        raised,
                    });
                }
                StateProj::Committing {
                    commit,
                    result,
                    raised,
                } => {
                    ready!(commit.as_mut().poll(cx));
                    let Some(result) = result.take() else {
                        return Poll::Pending;
                    };
                    let raised = raised.take();
                    state.set(State::Done);
                    return Poll::Ready(attach(result, raised));
                }
                StateProj::Boxed { fut } => {
                    let out = ready!(fut.as_mut().poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(out);
                }
                // Polled after completion.
                StateProj::Done => return Poll::Pending,
            }
        }
    }
}
