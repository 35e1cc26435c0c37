//! [`TriageLayer`] / [`Triaged`]: decide each request's precision tier.
//!
//! For every request the service decides a [`TierDecision`], in this order:
//!
//! 1. **explicit** — the request already names a tier (`req.tier`) or a
//!    model (`req.model`): it is kept (a model's tier is looked up in the
//!    ladder);
//! 2. **override** — the agent is pinned to a tier through
//!    [`TriageControl`] (the monitor's [`TierControl`]);
//! 3. **strategy** — the configured [`AsyncTriage`] decides (any
//!    [`Triage`](crate::Triage), a closure, or [`LlmTriage`](crate::LlmTriage));
//!
//! It then sets `req.tier` (and the tier of the request's
//! [`CallContext`] when the layer shares the
//! stack's [`Catalog`]: [`TriageLayer::catalog`]), marks who chose the tier
//! ([`TierSource`]), sets the decision on the request (`req.tier_decision()`,
//! so inner layers can read it) and on the response (`resp.tier_decision()`),
//! and emits
//! `mantissa_triage_decisions_total{agent,tier,reason}` and, for strategy
//! decisions only, `mantissa_triage_score{agent}` (the sample that
//! [`calibrate`](crate::calibrate()) works from). Handles are held per agent.
//!
//! **Stickiness** (within a session the tier may rise but not fall) is a
//! property of the session, so it lives in the session state of the reset
//! layer (`mantissa_reset`), which runs inside triage: it raises a strategy
//! decision below the session's earlier tier and says so in the response
//! ([`TierRaised`]); triage then reports the decision that served (reason
//! `sticky`). A strategy decision is therefore counted when its call
//! completes (a failed call counts the decision triage made); explicit and
//! pinned decisions, which stickiness never changes, when they are made.
//!
//! The layer adds no way to fail: errors of the inner service pass through.
//! It needs the inner service to be `Clone` (to drive an asynchronous
//! strategy before calling the service that was made ready).
//!
//! # Example
//!
//! ```
//! use mantissa_core::{LlmRequest, LlmResponse, Message, Tier, TierSet, Usage};
//! use mantissa_core::control::TierControl;
//! use mantissa_triage::{RuleTriage, TierDecision, TriageLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # tokio_test_block_on(async {
//! let tiers = TierSet::default();
//! let model = service_fn(|req: LlmRequest| async move {
//!     // The tier decided by triage reaches the inner service.
//!     let tier = req.tier.clone().unwrap();
//!     Ok::<_, std::convert::Infallible>(LlmResponse::new(tier.as_str(), Message::assistant("ok"), Usage::default()))
//! });
//!
//! // Defaults: rule triage.
//! let layer = TriageLayer::new(&tiers, RuleTriage::new(&tiers));
//! let svc = layer.layer(model);
//! let req = LlmRequest::new("s1", "helper", vec![Message::user("hello!")]);
//! let resp = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(resp.model.as_str(), "low");
//! assert_eq!(resp.tier_decision().unwrap().tier, Tier::low());
//!
//! // Customised: the monitor pins an agent to `high`.
//! let layer = TriageLayer::new(&tiers, RuleTriage::new(&tiers));
//! let control = layer.control();
//! control.set_agent_tier(&"trader".into(), Some(Tier::high()));
//! let req = LlmRequest::new("s2", "trader", vec![Message::user("hello!")]);
//! let resp = layer.layer(svc.into_inner()).oneshot(req).await.unwrap();
//! assert_eq!(resp.model.as_str(), "high");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

mod future;
mod layer;
mod metrics;

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use mantissa_core::control::TierControl;
use mantissa_core::{
    AgentName, BoundedLabels, CallContext, Catalog, LlmRequest, LlmResponse, ModelId, OTHER_LABEL, Tier,
    TierRaised, TierSet, TierSource,
};
use tower_service::Service;

pub use self::future::ResponseFuture;
pub use self::layer::TriageLayer;
use self::metrics::DecisionMetrics;
use crate::decision::{AsyncTriage, TierDecision, TriageReason, tier_names};

/// State shared by a layer and every service it built.
#[derive(Debug)]
pub(crate) struct Shared {
    tiers: Vec<Tier>,
    model_ranks: HashMap<ModelId, usize>,
    catalog: Catalog,
    overrides: Arc<Overrides>,
    metrics: DecisionMetrics,
}

impl Shared {
    pub(crate) fn new(
        set: &TierSet,
        catalog: Catalog,
        labels: BoundedLabels,
        overrides: Arc<Overrides>,
    ) -> Self {
        let mut model_ranks = HashMap::default();
        for (rank, t) in set.iter().enumerate() {
            for m in &t.models {
                model_ranks.entry(m.id.clone()).or_insert(rank);
            }
        }
        Self {
            tiers: tier_names(set),
            model_ranks,
            catalog: catalog.clone(),
            overrides,
            metrics: DecisionMetrics::new(labels, catalog),
        }
    }

    fn rank(&self, tier: &Tier) -> Option<usize> {
        self.tiers.iter().position(|t| t == tier)
    }

    fn position_score(&self, rank: usize) -> f64 {
        match self.tiers.len() {
            0 | 1 => 0.0,
            n => rank as f64 / (n - 1) as f64,
        }
    }

    /// A decision that needs no strategy: explicit tier or model, or an
    /// agent override. Applies it to `req` and counts it (stickiness never
    /// changes it).
    fn immediate(&self, req: &mut LlmRequest) -> Option<TierDecision> {
        if let Some(tier) = &req.tier {
            let rank = self.rank(tier);
            let d = TierDecision::new(
                tier.clone(),
                rank.map_or(0.0, |r| self.position_score(r)),
                TriageReason::Explicit,
            );
            self.metrics
                .record(&req.agent, &req.ctx, &self.tiers, rank, &d, false);
            self.stamp(req, rank, TierSource::Caller);
            return Some(d);
        }
        if let Some(model) = &req.model {
            let rank = self.model_ranks.get(model).copied();
            let tier = match rank {
                Some(r) => self.tiers[r].clone(),
                None => Tier::new(OTHER_LABEL),
            };
            let d = TierDecision::new(
                tier,
                rank.map_or(0.0, |r| self.position_score(r)),
                TriageReason::Explicit,
            );
            if rank.is_some() {
                req.tier = Some(d.tier.clone());
            }
            self.metrics
                .record(&req.agent, &req.ctx, &self.tiers, rank, &d, false);
            self.stamp(req, rank, TierSource::Caller);
            return Some(d);
        }
        if self.overrides.any.load(Ordering::Acquire) {
            let pinned = self.overrides.get(&req.agent);
            if let Some(tier) = pinned {
                let rank = self.rank(&tier);
                let d = TierDecision::new(
                    tier,
                    rank.map_or(0.0, |r| self.position_score(r)),
                    TriageReason::Override,
                );
                req.tier = Some(d.tier.clone());
                self.metrics
                    .record(&req.agent, &req.ctx, &self.tiers, rank, &d, false);
                self.stamp(req, rank, TierSource::Caller);
                return Some(d);
            }
        }
        None
    }

    /// Applies a strategy decision to `req` (counted when the call completes).
    fn finish(&self, req: &mut LlmRequest, d: TierDecision) -> TierDecision {
        let rank = self.rank(&d.tier);
        req.tier = Some(d.tier.clone());
        self.stamp(req, rank, TierSource::Triage);
        req.decision = Some(d.clone());
        d
    }

    /// Records the decided tier in the request's call context.
    fn stamp(&self, req: &mut LlmRequest, rank: Option<usize>, source: TierSource) {
        req.ctx.tier_source = source;
        if self.catalog.owns(&req.ctx) {
            req.ctx.tier = rank.and_then(|r| self.catalog.tier_at(r));
        }
    }

    /// Counts a strategy decision once its call is over: the tier that
    /// served if the session layer raised it, else the decision itself.
    pub(crate) fn count(
        &self,
        agent: &AgentName,
        ctx: &CallContext,
        mut d: TierDecision,
        raised: Option<&TierRaised>,
    ) -> TierDecision {
        if let Some(r) = raised {
            if r.from == d.tier {
                d.tier = r.to.clone();
                d.reason = TriageReason::Sticky;
            }
        }
        let rank = self.rank(&d.tier);
        self.metrics.record(agent, ctx, &self.tiers, rank, &d, true);
        d
    }
}

/// Pins agents to tiers: the [`TierControl`] of a [`TriageLayer`].
#[derive(Debug, Clone)]
pub struct TriageControl {
    overrides: Arc<Overrides>,
}

/// The agents pinned to tiers: kept by the layer across its setters, so a
/// [`TriageControl`] taken at any time acts on every service the layer
/// builds.
#[derive(Debug)]
pub(crate) struct Overrides {
    tiers: Vec<Tier>,
    map: RwLock<HashMap<AgentName, Tier>>,
    any: AtomicBool,
}

impl Overrides {
    pub(crate) fn new(set: &TierSet) -> Self {
        Self {
            tiers: tier_names(set),
            map: RwLock::new(HashMap::default()),
            any: AtomicBool::new(false),
        }
    }

    fn get(&self, agent: &AgentName) -> Option<Tier> {
        self.map.read().ok().and_then(|o| o.get(agent).cloned())
    }
}

impl TriageControl {
    /// The tier `agent` is pinned to, if any.
    pub fn agent_tier(&self, agent: &AgentName) -> Option<Tier> {
        self.overrides.get(agent)
    }
}

impl TierControl for TriageControl {
    /// Pins `agent` to `tier`, or lifts the pin with `None`. A tier that is
    /// not in the ladder is ignored (and logged).
    fn set_agent_tier(&self, agent: &AgentName, tier: Option<Tier>) {
        let Ok(mut overrides) = self.overrides.map.write() else {
            return;
        };
        match tier {
            Some(t) if self.overrides.tiers.contains(&t) => {
                overrides.insert(agent.clone(), t);
            }
            Some(t) => {
                tracing::warn!(agent = %agent, tier = %t, "ignoring override to a tier that is not configured");
            }
            None => {
                overrides.remove(agent);
            }
        }
        self.overrides.any.store(!overrides.is_empty(), Ordering::Release);
    }
}

/// A service whose requests are triaged: decides each request's tier, then
/// calls the inner service. Built by [`TriageLayer`]; see the
/// [module docs](self).
///
/// tower names a middleware's service after the middleware (`Timeout`,
/// `RateLimit`); here [`Triage`](crate::Triage) already names the strategy
/// trait that users implement and pass closures for, so the service is the
/// participle: `Triaged<S, T>` is "`S`, triaged by `T`".
#[derive(Debug)]
pub struct Triaged<S, T> {
    inner: S,
    triage: Arc<T>,
    shared: Arc<Shared>,
}

impl<S: Clone, T> Clone for Triaged<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            triage: self.triage.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, T> Triaged<S, T> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the triage service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The handle that pins agents to tiers.
    pub fn control(&self) -> TriageControl {
        TriageControl {
            overrides: self.shared.overrides.clone(),
        }
    }
}

impl<S, T> Service<LlmRequest> for Triaged<S, T>
where
    S: Service<LlmRequest, Response = LlmResponse> + Clone,
    T: AsyncTriage,
{
    type Response = LlmResponse;
    type Error = S::Error;
    type Future = ResponseFuture<T::Future, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: LlmRequest) -> Self::Future {
        if let Some(d) = self.shared.immediate(&mut req) {
            req.decision = Some(d.clone());
            let fut = self.inner.call(req);
            return ResponseFuture::calling(fut, d);
        }
        if let Some(d) = self.triage.decide_now(&req) {
            // A synchronous strategy: no pending state, the ready service is called now.
            let d = self.shared.finish(&mut req, d);
            let who = (req.agent.clone(), req.ctx);
            let fut = self.inner.call(req);
            return ResponseFuture::counting(fut, d, who, self.shared.clone());
        }
        let fut = self.triage.decide(&req);
        // The service made ready by `poll_ready` is the one called once the
        // decision is known; this handle keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::triaging(fut, req, inner, self.shared.clone())
    }
}

#[cfg(test)]
mod tests;
