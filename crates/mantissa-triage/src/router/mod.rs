//! [`TierRouter`]: sends each request to a model of its tier, falls back to
//! other models and neighbouring tiers, and cools failing models down.
//!
//! # Choosing a model
//!
//! The router holds one inner service per model of the [`TierSet`] (each
//! typically wrapped in a health layer by the stack builder). For a request
//! it tries, in order:
//!
//! 1. the model the request names (`req.model`), if any;
//! 2. the models of the request's tier (`req.tier`, or the
//!    [default tier](TierRouterBuilder::default_tier)) in configured order;
//! 3. the models of the neighbouring tiers, in the
//!    [`FallbackOrder`] (default: every tier above, nearest first, then every
//!    tier below, nearest first: falling back *up* keeps the quality the
//!    request was triaged for).
//!
//! Before each attempt it sets `req.model` (and `req.tier` to the model's
//! tier, so inner layers label the real model and tier). A model in cooldown
//! is skipped. After a failure the router moves on only if another model may
//! help ([`FailureClass::is_retryable`]): server errors, timeouts, transport
//! failures, invalid responses, and 429s (on *another* model). Client errors
//! (4xx other than 429), cancellations and unclassified errors are returned
//! as they are. A [`ContextLengthExceeded`](FailureClass::ContextLengthExceeded)
//! failure moves on only to models with a larger context window. When every
//! candidate is cooled down or has failed, the call fails with
//! [`AllModelsFailed`], whose `source()` is the last failure.
//!
//! Each move to another model counts
//! `mantissa_fallbacks_total{from_tier,to_tier,reason}` (from the requested
//! tier; reason `cooled_down` or the failure class). The response carries
//! where it was served from, a [`Routed`] (`resp.routed()`).
//!
//! # Cooldown
//!
//! Per-model state is shared by every request and every clone of the router
//! (see [`CooldownPolicy`] for the defaults and their sources). A model is
//! cooled down after 5 countable failures in a row or a 50 % failure rate
//! over a minute (with at least 10 calls); countable failures are 5xx,
//! timeouts and transport errors only; a streak of failures ends at a
//! success or once its last failure is older than the window. A 429 with
//! Retry-After cools it for that long, capped at the policy's
//! `max_cooldown`. When the cooldown ends, the next request is admitted
//! as a single half-open probe (other requests keep skipping the model); a
//! successful probe makes it healthy with an empty window and no streak, a
//! failed one cools it down again for twice as long (jittered, capped).
//!
//! Each admitted call is tagged with the model's *round*, which changes
//! every time the model is cooled down or put back into rotation; results
//! of calls from an earlier round are ignored. So a call sent before a
//! cooldown that fails during it is neither taken as the probe's verdict nor
//! left in the re-admitted model's window.
//!
//! [`TierRouter::snapshot`] shows the state (for a model out of rotation,
//! the streak and failure rate it had when it was cooled down);
//! `mantissa_model_state{model}` exports it (0 healthy, 1 degraded, 2 cooled
//! down; the gauge follows events: it leaves 2 when the next request probes
//! the model, and the 1 of an expired streak at the model's next result,
//! while `snapshot()` reads the clock). [`ModelControl`] lets the monitor cool a
//! model down (for exactly the given time, then a probe) or restore it.
//!
//! # Several replicas
//!
//! With [`TierRouterBuilder::shared_state`], routers of several replicas
//! share cooldowns, re-admissions and one half-open probe per model through
//! a backend (`mantissa-redis` implements one on Redis); each call is still
//! decided on local state. See [`shared`].
//!
//! # Backpressure
//!
//! `poll_ready` is always ready. Each call polls the chosen model's service
//! for readiness and calls it at once when it is ready; a model that is not
//! ready is driven like [`Oneshot`](tower::util::Oneshot) (`ready()` then
//! `call`). The ready check runs on a per-model instance behind a lock the
//! call only tries to take (and holds for `poll_ready` and `call`, never
//! across an await): a call that finds it taken uses a clone of the
//! service; a call that finds the model not ready keeps the instance that
//! queued for capacity (and leaves a fresh clone in its place), so the
//! capacity a `ConcurrencyLimit` or `Buffer` frees goes to the waiting
//! call. So a slow
//! or saturated model only delays requests that go to that model: unlike tower's `Steer`, which waits until
//! *every* inner service is ready, one stalled tier never blocks the others.
//! Bound the load on a model inside its own stack (a `ConcurrencyLimit` or
//! `Buffer` per model).
//!
//! # Streaming and cancellation
//!
//! A fallback is possible only until an inner service returns a response.
//! A streaming response is passed through as soon as the inner service
//! returns it: failures after that (mid-stream) are reported by the stream,
//! not retried. Dropping the response future cancels the attempt: it is not
//! counted as a failure, and a half-open probe slot it held is released.
//!
//! Cloning a request for each attempt is cheap: its history is an
//! `Arc<Vec<Message>>`, so the cost does not grow with the history.
//!
//! # Traces
//!
//! Each routed request runs in a [`tracing`] span `route` (target
//! `mantissa_triage`, `otel.name = "route {requested tier}"`) with
//! `mantissa.tier.requested`, `mantissa.triage.score` and
//! `mantissa.triage.reason` (from the request's [`TierDecision`](crate::TierDecision),
//! if triage ran), `gen_ai.agent.name`, `gen_ai.conversation.id`, and at the
//! end `mantissa.fallback.attempts`, the serving `mantissa.tier` and
//! `gen_ai.response.model`, or `error.type` (`cancelled` when dropped). Every
//! attempt is polled inside it, so the per-model health spans are its
//! children, and each attempt ends with an `attempt` event
//! (`mantissa.fallback.attempt`, `gen_ai.request.model`, `outcome`,
//! `error.type`); a cooled-down model skipped is a `model skipped` event.
//! With no subscriber, nothing is formatted.
//!
//! # Example
//!
//! ```
//! use mantissa_core::{BoxError, FailureClass, LlmError, LlmRequest, LlmResponse, Message, Tier, TierSet, Usage};
//! use mantissa_triage::{CooldownPolicy, FallbackOrder, Routed, TierRouter};
//! use tower::{ServiceExt, service_fn};
//!
//! fn echo(ok: bool) -> impl tower::Service<LlmRequest, Response = LlmResponse, Error = BoxError,
//!     Future = impl Send> + Clone + Send + Sync + 'static {
//!     service_fn(move |req: LlmRequest| async move {
//!         if !ok {
//!             return Err(LlmError::new(FailureClass::UpstreamServer, "down").with_status(503).into());
//!         }
//!         let model = req.model.clone().unwrap();
//!         Ok::<_, BoxError>(LlmResponse::new(model, Message::assistant("ok"), Usage::default()))
//!     })
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Defaults: default tier = lowest, fall back up then down, default cooldown policy.
//! let router = TierRouter::builder(TierSet::default())
//!     .model("mock-small", echo(false)) // low tier is down
//!     .model("mock-medium", echo(true))
//!     .model("mock-large", echo(true))
//!     .build()
//!     .unwrap();
//! let resp = router.clone().oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")])).await.unwrap();
//! assert_eq!(resp.model.as_str(), "mock-medium");
//! assert_eq!(resp.routed().unwrap().attempts, 2);
//!
//! // Customised: requests without a tier go to `high`, fall back down first,
//! // and cool a model down after 3 failures in a row for 10 s.
//! let router = TierRouter::builder(TierSet::default())
//!     .model("mock-small", echo(true))
//!     .model("mock-medium", echo(true))
//!     .model("mock-large", echo(false))
//!     .default_tier(Tier::high())
//!     .fallback_order(FallbackOrder::DownThenUp)
//!     .cooldown(CooldownPolicy { consecutive_failures: 3, base_cooldown: std::time::Duration::from_secs(10),
//!         ..CooldownPolicy::default() })
//!     .build()
//!     .unwrap();
//! let resp = router.oneshot(LlmRequest::new("s", "a", vec![Message::user("hi")])).await.unwrap();
//! assert_eq!(resp.model.as_str(), "mock-medium");
//! # });
//! ```

mod error;
mod future;
mod health;
pub mod shared;

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use mantissa_core::control::ModelControl;
use mantissa_core::{
    BoxError, Catalog, FailureClass, LlmRequest, LlmResponse, ModelId, ModelIdx, ModelSpec, Tier, TierIdx,
    TierSet,
};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

pub use self::error::{AllModelsFailed, RouterBuildError, UnknownModel, UnknownTier};
pub use self::future::ResponseFuture;
use self::health::{Admission, ModelHealth};
pub use self::health::{CooldownPolicy, ModelSnapshot, ModelState};
pub use self::shared::{RemoteModelState, SharedModelState};

/// The boxed per-model service the router holds.
pub type ModelService = BoxCloneSyncService<LlmRequest, LlmResponse, BoxError>;

/// Where the router looks after the requested tier's models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FallbackOrder {
    /// Higher tiers (nearest first), then lower tiers (nearest first). The default.
    #[default]
    UpThenDown,
    /// Lower tiers (nearest first), then higher tiers (nearest first).
    DownThenUp,
    /// Only higher tiers.
    UpOnly,
    /// Only lower tiers.
    DownOnly,
    /// Only the requested tier's other models.
    SameTier,
}

impl FallbackOrder {
    /// The tier rank visited at `step` (0 = the requested tier), if any.
    fn tier_at(self, start: usize, step: usize, tiers: usize) -> Option<usize> {
        let up = tiers.saturating_sub(start);
        let down = start + 1;
        let r = match self {
            FallbackOrder::UpThenDown if step < up => start + step,
            FallbackOrder::UpThenDown => start.checked_sub(step - up + 1)?,
            FallbackOrder::DownThenUp if step < down => start - step,
            FallbackOrder::DownThenUp => start + (step - down + 1),
            FallbackOrder::UpOnly => start + step,
            FallbackOrder::DownOnly => start.checked_sub(step)?,
            FallbackOrder::SameTier if step == 0 => start,
            FallbackOrder::SameTier => return None,
        };
        (r < tiers).then_some(r)
    }
}

pub use mantissa_core::Routed;

#[derive(Debug)]
pub(crate) struct ModelSlot {
    pub(crate) spec: ModelSpec,
    pub(crate) tier: usize,
    /// The model's and its tier's indices in the router's catalog, stamped
    /// into each attempt's call context.
    pub(crate) model_idx: Option<ModelIdx>,
    pub(crate) tier_idx: Option<TierIdx>,
    pub(crate) service: ModelService,
    /// A second instance of `service`, checked for readiness and called in
    /// place (no clone of the boxed service per call) when its lock is free.
    pub(crate) ready: std::sync::Mutex<ModelService>,
    pub(crate) health: ModelHealth,
}

#[derive(Debug)]
pub(crate) struct RouterInner {
    pub(crate) set: TierSet,
    pub(crate) tier_names: Vec<Tier>,
    pub(crate) slots: Vec<ModelSlot>,
    pub(crate) tiers: Vec<Vec<usize>>,
    pub(crate) index: HashMap<ModelId, usize>,
    /// The catalog whose indices requests carry: slot of each catalog model.
    pub(crate) catalog: Catalog,
    pub(crate) model_slots: Vec<Option<usize>>,
    pub(crate) default_tier: usize,
    pub(crate) order: FallbackOrder,
}

impl RouterInner {
    pub(crate) fn count_fallback(&self, from: usize, to: usize, reason: &'static str) {
        metrics::counter!(catalog::FALLBACKS_TOTAL,
            labels::FROM_TIER => self.tier_names[from].as_str().to_owned(),
            labels::TO_TIER => self.tier_names[to].as_str().to_owned(),
            labels::REASON => reason)
        .increment(1);
    }

    pub(crate) fn admit(&self, slot: usize) -> Admission {
        self.slots[slot].health.admit()
    }
}

/// The ordered candidates of one request.
#[derive(Debug, Clone)]
pub(crate) struct Candidates {
    start: usize,
    pinned: Option<usize>,
    pinned_done: bool,
    step: usize,
    pos: usize,
}

impl Candidates {
    /// No candidates at all (a request that failed before routing).
    pub(crate) fn none() -> Self {
        Self {
            start: 0,
            pinned: None,
            pinned_done: true,
            step: usize::MAX,
            pos: 0,
        }
    }

    pub(crate) fn next(&mut self, r: &RouterInner) -> Option<usize> {
        if let (Some(p), false) = (self.pinned, self.pinned_done) {
            self.pinned_done = true;
            return Some(p);
        }
        loop {
            let rank = r.order.tier_at(self.start, self.step, r.tiers.len())?;
            let models = &r.tiers[rank];
            if let Some(&idx) = models.get(self.pos) {
                self.pos += 1;
                if Some(idx) == self.pinned {
                    continue;
                }
                return Some(idx);
            }
            self.step += 1;
            self.pos = 0;
        }
    }
}

/// Routes requests to per-model services by tier, with fallback and
/// cooldown. Cheap to clone: clones share models and cooldown state. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct TierRouter {
    inner: Arc<RouterInner>,
}

impl TierRouter {
    /// Starts a router over the models of `set`; give every model a service
    /// with [`TierRouterBuilder::model`].
    pub fn builder(set: TierSet) -> TierRouterBuilder {
        TierRouterBuilder {
            set,
            services: HashMap::new(),
            error: None,
            default_tier: None,
            order: FallbackOrder::default(),
            policy: CooldownPolicy::default(),
            catalog: None,
            shared: None,
        }
    }

    /// The tier ladder.
    pub fn tier_set(&self) -> &TierSet {
        &self.inner.set
    }

    /// The health of every model, in ladder order.
    pub fn snapshot(&self) -> Vec<ModelSnapshot> {
        self.inner
            .slots
            .iter()
            .map(|s| {
                s.health
                    .snapshot(s.spec.id.clone(), self.inner.tier_names[s.tier].clone())
            })
            .collect()
    }

    /// The health of one model.
    pub fn model_snapshot(&self, model: &str) -> Option<ModelSnapshot> {
        let s = &self.inner.slots[*self.inner.index.get(model)?];
        Some(
            s.health
                .snapshot(s.spec.id.clone(), self.inner.tier_names[s.tier].clone()),
        )
    }

    fn resolve(&self, req: &LlmRequest) -> Result<(usize, Option<usize>), BoxError> {
        let inner = &*self.inner;
        if inner.catalog.owns(&req.ctx) {
            // Resolved once at the stack's entry: indices, no name lookups.
            if let Some(slot) = req
                .ctx
                .model
                .and_then(|m| inner.model_slots.get(m.index()).copied().flatten())
            {
                return Ok((inner.slots[slot].tier, Some(slot)));
            }
            if let (None, Some(tier)) = (&req.model, req.ctx.tier) {
                if tier.index() < inner.tier_names.len() {
                    return Ok((tier.index(), None));
                }
            }
        }
        if let Some(model) = &req.model {
            let Some(&idx) = self.inner.index.get(model) else {
                return Err(UnknownModel { model: model.clone() }.into());
            };
            return Ok((self.inner.slots[idx].tier, Some(idx)));
        }
        match &req.tier {
            Some(tier) => match self.inner.tier_names.iter().position(|t| t == tier) {
                Some(rank) => Ok((rank, None)),
                None => Err(UnknownTier { tier: tier.clone() }.into()),
            },
            None => Ok((self.inner.default_tier, None)),
        }
    }
}

impl ModelControl for TierRouter {
    fn cool_down(&self, model: &ModelId, duration: Duration) -> bool {
        match self.inner.index.get(model) {
            Some(&i) => {
                self.inner.slots[i].health.cool_for(duration);
                true
            }
            None => false,
        }
    }

    fn restore(&self, model: &ModelId) -> bool {
        match self.inner.index.get(model) {
            Some(&i) => {
                self.inner.slots[i].health.restore();
                true
            }
            None => false,
        }
    }
}

impl Service<LlmRequest> for TierRouter {
    type Response = LlmResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is checked per call on the chosen model (see the module docs).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LlmRequest) -> Self::Future {
        match self.resolve(&req) {
            Ok((start, pinned)) => ResponseFuture::new(
                self.inner.clone(),
                route_span(&req, &self.inner.tier_names[start]),
                req,
                start,
                Candidates {
                    start,
                    pinned,
                    pinned_done: false,
                    step: 0,
                    pos: 0,
                },
            ),
            Err(e) => ResponseFuture::failed(self.inner.clone(), e),
        }
    }
}

/// Builds a [`TierRouter`].
#[derive(Debug)]
pub struct TierRouterBuilder {
    set: TierSet,
    services: HashMap<ModelId, ModelService>,
    error: Option<RouterBuildError>,
    default_tier: Option<Tier>,
    order: FallbackOrder,
    policy: CooldownPolicy,
    catalog: Option<Catalog>,
    shared: Option<Arc<dyn SharedModelState>>,
}

impl TierRouterBuilder {
    /// The catalog whose indices requests carry in their
    /// [`CallContext`](mantissa_core::CallContext) (the stack's, built from
    /// the same ladder): the router then reads the requested tier or model
    /// by index and stamps each attempt's model and tier into the context.
    /// Defaults to a catalog of its own (requests resolved elsewhere are
    /// routed by name).
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The service that calls `model` (any `Service<LlmRequest>` whose error
    /// converts into [`BoxError`]; it is boxed).
    pub fn model<S>(mut self, model: impl Into<ModelId>, service: S) -> Self
    where
        S: Service<LlmRequest, Response = LlmResponse> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let model = model.into();
        let service = BoxCloneSyncService::new(service.map_err(|e: S::Error| e.into()));
        if self.set.iter().any(|t| t.models.iter().any(|m| m.id == model)) {
            self.services.insert(model, service);
        } else if self.error.is_none() {
            self.error = Some(RouterBuildError::UnknownModel(model));
        }
        self
    }

    /// The tier of requests that name neither a tier nor a model. Defaults to
    /// the lowest tier (put a [`TriageLayer`](crate::TriageLayer) in front to
    /// decide tiers per request).
    pub fn default_tier(mut self, tier: impl Into<Tier>) -> Self {
        self.default_tier = Some(tier.into());
        self
    }

    /// Where to look after the requested tier. Defaults to
    /// [`FallbackOrder::UpThenDown`].
    pub fn fallback_order(mut self, order: FallbackOrder) -> Self {
        self.order = order;
        self
    }

    /// When models cool down and come back. Defaults to [`CooldownPolicy::default`].
    pub fn cooldown(mut self, policy: CooldownPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Shares cooldowns, re-admissions and the half-open probe with the
    /// routers of other replicas through `backend` (for example
    /// `mantissa_redis::RedisModelState`); see [`shared`]. Calls are still
    /// decided on this router's own state, so sharing adds no round trip
    /// to a call. Defaults to none: the state is this process's alone.
    pub fn shared_state(mut self, backend: Arc<dyn SharedModelState>) -> Self {
        self.shared = Some(backend);
        self
    }

    /// Validates the ladder and the settings and builds the router. Registers
    /// the `mantissa_model_state` gauges (at 0) with the current recorder,
    /// and attaches the [shared state](Self::shared_state), if any.
    pub fn build(mut self) -> Result<TierRouter, RouterBuildError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        crate::config::validate(&self.set)?;
        self.policy.validate()?;
        let tier_names: Vec<Tier> = self.set.iter().map(|t| t.name.clone()).collect();
        let default_tier = match &self.default_tier {
            Some(t) => tier_names
                .iter()
                .position(|n| n == t)
                .ok_or_else(|| RouterBuildError::UnknownTier(t.clone()))?,
            None => 0,
        };
        let catalog = self.catalog.unwrap_or_else(|| Catalog::new(&self.set));
        let mut model_slots = vec![None; catalog.models().len()];
        let mut slots = Vec::new();
        let mut tiers = Vec::new();
        let mut index = HashMap::new();
        for (rank, t) in self.set.iter().enumerate() {
            let mut members = Vec::new();
            for m in &t.models {
                let service = self
                    .services
                    .remove(&m.id)
                    .ok_or_else(|| RouterBuildError::MissingService(m.id.clone()))?;
                let gauge = metrics::gauge!(catalog::MODEL_STATE, labels::MODEL => m.id.as_str().to_owned());
                index.insert(m.id.clone(), slots.len());
                let model_idx = catalog.model_index(m.id.as_str());
                let tier_idx = catalog.tier_index(t.name.as_str());
                if let Some(i) = model_idx {
                    model_slots[i.index()] = Some(slots.len());
                }
                members.push(slots.len());
                slots.push(ModelSlot {
                    spec: m.clone(),
                    tier: rank,
                    model_idx,
                    tier_idx,
                    ready: std::sync::Mutex::new(service.clone()),
                    service,
                    health: ModelHealth::new(
                        self.policy,
                        gauge,
                        self.shared.clone().map(|b| (b, m.id.clone())),
                    ),
                });
            }
            tiers.push(members);
        }
        let inner = Arc::new(RouterInner {
            set: self.set,
            tier_names,
            slots,
            tiers,
            index,
            catalog,
            model_slots,
            default_tier,
            order: self.order,
        });
        if let Some(backend) = &self.shared {
            let models: Vec<ModelId> = inner.slots.iter().map(|s| s.spec.id.clone()).collect();
            backend.attach(
                &models,
                RemoteModelState {
                    router: Arc::downgrade(&inner),
                },
            );
        }
        Ok(TierRouter { inner })
    }
}

/// The `target` of the router's spans and events.
const TRACE_TARGET: &str = "mantissa_triage";

/// Opens the span of one routed request (see the module docs, "Traces").
/// Nothing is formatted when no subscriber wants it.
fn route_span(req: &LlmRequest, requested: &Tier) -> tracing::Span {
    use tracing::field::{Empty, display};
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "route",
        otel.name = Empty,
        otel.status_code = Empty,
        gen_ai.agent.name = Empty,
        gen_ai.conversation.id = Empty,
        mantissa.tier.requested = Empty,
        mantissa.triage.score = Empty,
        mantissa.triage.reason = Empty,
        mantissa.tier = Empty,
        gen_ai.response.model = Empty,
        mantissa.fallback.attempts = Empty,
        error.type = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    span.record("otel.name", display(format_args!("route {requested}")));
    span.record("gen_ai.agent.name", req.agent.as_str());
    span.record("gen_ai.conversation.id", req.session.as_str());
    span.record("mantissa.tier.requested", requested.as_str());
    if let Some(d) = req.tier_decision() {
        span.record("mantissa.triage.score", d.score);
        span.record("mantissa.triage.reason", d.reason.as_str());
    }
    span
}

/// The label for a reason to move on from a model.
pub(crate) fn fallback_reason(class: Option<FailureClass>) -> &'static str {
    match class {
        None => "cooled_down",
        Some(c) => c.as_str(),
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod trace_tests;

#[cfg(test)]
mod shared_tests;
