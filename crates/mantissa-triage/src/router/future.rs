use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use mantissa_core::{BoxError, FailureClass, LlmRequest, LlmResponse, ModelId, classify_box};
use tower::util::Oneshot;
use tracing::Span;

use super::health::Admission;
use super::{
    AllModelsFailed, Candidates, ModelService, ModelSlot, Routed, RouterInner, TRACE_TARGET, fallback_reason,
};

/// Holds a model's half-open probe slot; releasing it on drop means a
/// cancelled probe never leaves the model stuck half-open.
struct ProbeGuard {
    router: Arc<RouterInner>,
    slot: usize,
    round: u64,
    armed: bool,
}

impl ProbeGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.armed {
            self.router.slots[self.slot].health.release_probe(self.round);
        }
    }
}

struct InFlight {
    slot: usize,
    /// The model's round when the call was admitted.
    round: u64,
    fut: Attempt,
    probe: Option<ProbeGuard>,
}

/// One attempt: `ready()` then `call` on a clone of the model's service.
/// A service ready at once (the common case) is called then and only its
/// (boxed) call future is kept, so the request does not sit in the router's
/// future; one that is not ready is driven by a boxed [`Oneshot`].
enum Attempt {
    Called(<ModelService as Service<LlmRequest>>::Future),
    Waiting(Box<Oneshot<ModelService, LlmRequest>>),
    /// `poll_ready` failed: the attempt's result, reported at its first poll.
    Failed(Option<BoxError>),
}

impl Attempt {
    /// Calls the slot's shared instance in place when its lock is free and
    /// it is ready; otherwise a clone of the service, as [`Oneshot`] would.
    fn start(slot: &ModelSlot, req: LlmRequest, cx: &mut Context<'_>) -> Self {
        if let Ok(mut svc) = slot.ready.try_lock() {
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => return Attempt::Called(svc.call(req)),
                // A failed instance is replaced, and the call decided by a
                // fresh clone (below), as before.
                Poll::Ready(Err(_)) => *svc = slot.service.clone(),
                // Not ready: the instance has now queued for capacity (a
                // `ConcurrencyLimit`'s or `Buffer`'s permit) with this
                // call's waker. This call takes it and waits on it, and the
                // slot gets a fresh clone: an instance left in the slot
                // would take the freed capacity and sit on it, idle, while
                // this call waited on another clone.
                Poll::Pending => {
                    let queued = std::mem::replace(&mut *svc, slot.service.clone());
                    return Attempt::Waiting(Box::new(Oneshot::new(queued, req)));
                }
            }
        }
        let mut svc = slot.service.clone();
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => Attempt::Called(svc.call(req)),
            Poll::Ready(Err(e)) => Attempt::Failed(Some(e)),
            Poll::Pending => Attempt::Waiting(Box::new(Oneshot::new(svc, req))),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<LlmResponse, BoxError>> {
        match self {
            Attempt::Called(fut) => fut.as_mut().poll(cx),
            Attempt::Waiting(oneshot) => Pin::new(&mut **oneshot).poll(cx),
            Attempt::Failed(e) => match e.take() {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

/// Response future of [`TierRouter`](super::TierRouter): tries candidates
/// until one answers or none is left.
///
/// Every poll runs inside the request's `route` span, so each attempt's
/// inner spans (the per-model health spans) are its children.
pub struct ResponseFuture {
    router: Arc<RouterInner>,
    span: Span,
    /// The request each attempt is cloned from, until it moves into the
    /// last possible attempt.
    req: Option<LlmRequest>,
    /// Whether the future has answered (or never had a request).
    done: bool,
    early: Option<BoxError>,
    requested: usize,
    cands: Candidates,
    in_flight: Option<InFlight>,
    tried: Vec<(ModelId, FailureClass)>,
    cooled: Vec<ModelId>,
    last_error: Option<BoxError>,
    /// Why the previous candidate was left: `None` before any.
    moved_because: Option<&'static str>,
    min_window: Option<u32>,
    attempts: u32,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tried", &self.tried)
            .field("cooled", &self.cooled)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl ResponseFuture {
    pub(super) fn new(
        router: Arc<RouterInner>,
        span: Span,
        req: LlmRequest,
        requested: usize,
        cands: Candidates,
    ) -> Self {
        Self {
            router,
            span,
            req: Some(req),
            done: false,
            early: None,
            requested,
            cands,
            in_flight: None,
            tried: Vec::new(),
            cooled: Vec::new(),
            last_error: None,
            moved_because: None,
            min_window: None,
            attempts: 0,
        }
    }

    pub(super) fn failed(router: Arc<RouterInner>, err: BoxError) -> Self {
        Self {
            router,
            span: Span::none(),
            req: None,
            done: true,
            early: Some(err),
            requested: 0,
            cands: Candidates::none(),
            in_flight: None,
            tried: Vec::new(),
            cooled: Vec::new(),
            last_error: None,
            moved_because: None,
            min_window: None,
            attempts: 0,
        }
    }

    /// Starts the next admitted candidate; `false` when none is left.
    ///
    /// The request moves into the attempt when no other candidate is left
    /// to fall back to; until then each attempt gets a clone of the template
    /// (cheap: the history and the tools are shared).
    fn start_next(&mut self, cx: &mut Context<'_>) -> bool {
        if self.req.is_none() {
            return false;
        }
        while let Some(slot) = self.cands.next(&self.router) {
            let s = &self.router.slots[slot];
            if self.min_window.is_some_and(|w| s.spec.context_window <= w)
                || self.tried.iter().any(|(m, _)| *m == s.spec.id)
            {
                continue;
            }
            let (round, probe) = match self.router.admit(slot) {
                Admission::Yes(round) => (round, None),
                Admission::Probe(round) => (
                    round,
                    Some(ProbeGuard {
                        router: self.router.clone(),
                        slot,
                        round,
                        armed: true,
                    }),
                ),
                Admission::No => {
                    tracing::event!(
                        target: TRACE_TARGET,
                        tracing::Level::INFO,
                        gen_ai.request.model = s.spec.id.as_str(),
                        reason = "cooled_down",
                        "model skipped"
                    );
                    self.cooled.push(s.spec.id.clone());
                    self.moved_because = Some(fallback_reason(None));
                    continue;
                }
            };
            if let Some(reason) = self.moved_because {
                self.router.count_fallback(self.requested, s.tier, reason);
            }
            let last = self.cands.clone().next(&self.router).is_none();
            let mut req = match (last, &mut self.req) {
                (true, req) => match req.take() {
                    Some(req) => req,
                    None => return false,
                },
                (false, Some(template)) => template.clone(),
                (false, None) => return false,
            };
            req.model = Some(s.spec.id.clone());
            req.tier = Some(self.router.tier_names[s.tier].clone());
            if self.router.catalog.owns(&req.ctx) {
                req.ctx.model = s.model_idx;
                req.ctx.tier = s.tier_idx;
            }
            self.attempts += 1;
            self.in_flight = Some(InFlight {
                slot,
                round,
                fut: Attempt::start(s, req, cx),
                probe,
            });
            return true;
        }
        false
    }

    fn exhausted(&mut self, span: &Span) -> BoxError {
        self.req = None;
        self.done = true;
        let err: BoxError = Box::new(AllModelsFailed {
            tried: std::mem::take(&mut self.tried),
            cooled_down: std::mem::take(&mut self.cooled),
            last: self.last_error.take(),
        });
        if !span.is_disabled() {
            span.record("mantissa.fallback.attempts", self.attempts);
            span.record("error.type", classify_box(&err).as_str());
            span.record("otel.status_code", "ERROR");
        }
        err
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        // Dropped before an answer: the caller cancelled.
        if !self.done && !self.span.is_disabled() {
            self.span.record("mantissa.fallback.attempts", self.attempts);
            self.span.record("error.type", FailureClass::Cancelled.as_str());
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<LlmResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Entered for this poll only; taken out so `this` stays borrowable.
        let span = std::mem::replace(&mut this.span, Span::none());
        let out = {
            let _entered = span.enter();
            this.poll_attempts(cx, &span)
        };
        this.span = span;
        out
    }
}

impl ResponseFuture {
    fn poll_attempts(&mut self, cx: &mut Context<'_>, span: &Span) -> Poll<Result<LlmResponse, BoxError>> {
        let this = self;
        if let Some(e) = this.early.take() {
            return Poll::Ready(Err(e));
        }
        loop {
            if let Some(flight) = &mut this.in_flight {
                let mut result = match flight.fut.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                let Some(InFlight {
                    slot, round, probe, ..
                }) = this.in_flight.take()
                else {
                    return Poll::Pending;
                };
                let router = &*this.router;
                let s = &router.slots[slot];
                // The response is large: it is finished in place, not moved.
                match &mut result {
                    Ok(resp) => {
                        // The clock read of the layer that saw the answer, if any.
                        match resp.answered_at {
                            Some(at) => s.health.on_success_at(round, at),
                            None => s.health.on_success(round),
                        }
                        if let Some(p) = probe {
                            p.disarm();
                        }
                        tracing::event!(
                            target: TRACE_TARGET,
                            tracing::Level::INFO,
                            mantissa.fallback.attempt = this.attempts,
                            gen_ai.request.model = s.spec.id.as_str(),
                            outcome = "success",
                            "attempt"
                        );
                        if !span.is_disabled() {
                            span.record("mantissa.tier", router.tier_names[s.tier].as_str());
                            span.record("gen_ai.response.model", resp.model.as_str());
                            span.record("mantissa.fallback.attempts", this.attempts);
                        }
                        resp.routed = Some(Routed {
                            model: s.spec.id.clone(),
                            tier: router.tier_names[s.tier].clone(),
                            requested_tier: router.tier_names[this.requested].clone(),
                            attempts: this.attempts,
                        });
                        this.req = None;
                        this.done = true;
                        return Poll::Ready(result);
                    }
                    Err(_) => {
                        let Err(err) = result else {
                            return Poll::Pending;
                        };
                        let class = classify_box(&err);
                        match class {
                            FailureClass::RateLimited { retry_after } => {
                                s.health.on_rate_limited(round, retry_after);
                                if let Some(p) = probe {
                                    p.disarm();
                                }
                            }
                            c if c.counts_toward_cooldown() => {
                                s.health.on_failure(round);
                                if let Some(p) = probe {
                                    p.disarm();
                                }
                            }
                            FailureClass::ContextLengthExceeded => {
                                // The model answered: it is healthy.
                                s.health.on_success(round);
                                if let Some(p) = probe {
                                    p.disarm();
                                }
                                let w = s.spec.context_window;
                                this.min_window = Some(this.min_window.map_or(w, |m| m.max(w)));
                            }
                            // Anything else says nothing about the model's
                            // health; dropping `probe` frees its slot.
                            _ => drop(probe),
                        }
                        let moves_on = class.is_retryable() || class == FailureClass::ContextLengthExceeded;
                        tracing::event!(
                            target: TRACE_TARGET,
                            tracing::Level::INFO,
                            mantissa.fallback.attempt = this.attempts,
                            gen_ai.request.model = s.spec.id.as_str(),
                            outcome = "error",
                            error.type = class.as_str(),
                            moves_on,
                            "attempt"
                        );
                        if !moves_on {
                            this.req = None;
                            this.done = true;
                            if !span.is_disabled() {
                                span.record("mantissa.fallback.attempts", this.attempts);
                                span.record("error.type", class.as_str());
                                span.record("otel.status_code", "ERROR");
                            }
                            return Poll::Ready(Err(err));
                        }
                        this.tried.push((s.spec.id.clone(), class));
                        this.last_error = Some(err);
                        this.moved_because = Some(fallback_reason(Some(class)));
                    }
                }
            }
            if !this.start_next(cx) {
                return Poll::Ready(Err(this.exhausted(span)));
            }
        }
    }
}
