//! The series of a layer given the stack's [`Catalog`]
//! ([`HealthLayer::call_context`](crate::HealthLayer::call_context)): a dense
//! table indexed by the request's [`CallContext`](mantissa_core::CallContext)
//! — agent × model × tier — so a call resolved by that catalog finds its
//! series with a multiplication, not a string lookup. A slot is filled the
//! first time its indices are seen, through the name path (so labels are the
//! same either way), and only when the request's names agree with its
//! context. Requests the catalog did not resolve, or without a model yet,
//! fall back to the names.

use std::sync::{Arc, OnceLock};

use mantissa_core::{CallContext, Catalog, LabelIdx};

use super::{AgentSeries, Series};

/// Series by (agent, model, tier) indices of one catalog.
pub(super) struct Dense {
    pub(super) catalog: Catalog,
    models: usize,
    /// Tier slots: 0 for a request without a tier, then one per tier.
    tiers: usize,
    slots: Box<[OnceLock<Arc<Series>>]>,
    /// Outcome series by (agent, model), for a [`Scope::Outcome`] layer.
    ///
    /// [`Scope::Outcome`]: crate::Scope::Outcome
    outcomes: Option<Box<[OnceLock<Arc<Series>>]>>,
    /// Agent series by agent index: where a call without a model yet (an
    /// outcome, bound when its response names the model) finds its agent.
    agents: Box<[OnceLock<Arc<AgentSeries>>]>,
}

impl Dense {
    pub(super) fn new(catalog: Catalog, outcomes: bool) -> Self {
        let agents = catalog.agent_labels().capacity();
        let models = catalog.models().len();
        let tiers = catalog.tiers().len() + 1;
        let slots = (0..agents * models * tiers).map(|_| OnceLock::new()).collect();
        let outcomes = outcomes.then(|| (0..agents * models).map(|_| OnceLock::new()).collect());
        Self {
            catalog,
            models,
            tiers,
            slots,
            outcomes,
            agents: (0..agents).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The outcome slot of (`agent`, `model`): where a [`Scope::Outcome`]
    /// layer keeps the series it bound a response's model to (the model is
    /// only known from the response, so the context has none). A slot's
    /// series is used only if its agent series is the call's.
    ///
    /// [`Scope::Outcome`]: crate::Scope::Outcome
    #[inline]
    pub(super) fn outcome_slot(&self, agent: LabelIdx, model: &str) -> Option<&OnceLock<Arc<Series>>> {
        let outcomes = self.outcomes.as_ref()?;
        let model = self.catalog.model_index(model)?.index();
        outcomes.get(agent.index() * self.models + model)
    }

    /// The agent series slot of `ctx`, if the catalog resolved it.
    #[inline]
    pub(super) fn agent_slot(&self, ctx: &CallContext) -> Option<&OnceLock<Arc<AgentSeries>>> {
        if !self.catalog.owns(ctx) {
            return None;
        }
        self.agents.get(ctx.agent.index())
    }

    /// The slot of `ctx` with `model` (the context's, or the layer's own), if
    /// the catalog resolved the context.
    #[inline]
    pub(super) fn slot(
        &self,
        ctx: &CallContext,
        fixed_model: Option<usize>,
    ) -> Option<&OnceLock<Arc<Series>>> {
        if !self.catalog.owns(ctx) {
            return None;
        }
        let model = ctx.model.map(|m| m.index()).or(fixed_model)?;
        let tier = ctx.tier.map_or(0, |t| t.index() + 1);
        let i = (ctx.agent.index() * self.models + model) * self.tiers + tier;
        self.slots.get(i)
    }
}
