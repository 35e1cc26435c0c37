//! The configuration a [`ResetLayer`](crate::ResetLayer) shares with every
//! [`Reset`](crate::Reset) service it builds: context windows by model and
//! tier, the policy, the stages' hooks. Depends on nothing else of the layer
//! or the service, so neither depends on the other through it.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use mantissa_core::{
    BoundedLabels, BoxError, Catalog, EventSink, LlmRequest, LlmResponse, ModelId, Tier, TokenEstimator,
};
use tower::util::BoxCloneSyncService;

use crate::policy::BrittlenessPolicy;
use crate::stage::{Respawner, SummaryConfig, ToolResultClearer, WarningNote};

/// The summarizer service type: any `Service<LlmRequest, Response =
/// LlmResponse>`, boxed.
pub type Summarizer = BoxCloneSyncService<LlmRequest, LlmResponse, BoxError>;

/// Context windows by model and tier, and the default.
#[derive(Debug, Clone)]
pub(crate) struct Windows {
    pub(crate) by_model: HashMap<ModelId, u32>,
    pub(crate) by_tier: HashMap<Tier, u32>,
    pub(crate) default: Option<u32>,
    /// The stack's catalog: a request it resolved is read by index.
    pub(crate) catalog: Option<Catalog>,
}

/// How long a session idle at its high tier keeps it (stickiness).
pub const DEFAULT_STICKY_IDLE: Duration = Duration::from_secs(30 * 60);

/// The window used when nothing is configured.
pub const FALLBACK_WINDOW: u32 = 128_000;

impl Windows {
    /// The window of the model or tier that will serve `req`: its model's,
    /// else the smallest of its tier's models (triage has decided the tier
    /// by the time reset runs), else the default.
    pub(crate) fn resolve(&self, req: &LlmRequest) -> u32 {
        if let Some(c) = self.catalog.as_ref().filter(|c| c.owns(&req.ctx)) {
            if let Some(m) = req.ctx.model {
                return c.model(m).spec.context_window;
            }
            if let Some(t) = req.ctx.tier {
                return c.tier(t).min_context_window;
            }
        }
        if let Some(w) = req.model.as_ref().and_then(|m| self.by_model.get(m.as_str())) {
            return *w;
        }
        if let Some(w) = req.tier.as_ref().and_then(|t| self.by_tier.get(t.as_str())) {
            return *w;
        }
        self.default_window()
    }

    /// The window of `tier` (the smallest of its models), if known.
    pub(crate) fn resolve_tier(&self, tier: &Tier) -> Option<u32> {
        if let Some(c) = &self.catalog {
            if let Some(t) = c.tier_index(tier.as_str()) {
                return Some(c.tier(t).min_context_window);
            }
        }
        self.by_tier.get(tier.as_str()).copied()
    }

    pub(crate) fn default_window(&self) -> u32 {
        self.default
            .or_else(|| self.by_model.values().copied().min())
            .unwrap_or(FALLBACK_WINDOW)
    }

    pub(crate) fn add(&mut self, model: &ModelId, tier: Option<&Tier>, window: u32) {
        self.by_model.insert(model.clone(), window);
        if let Some(t) = tier {
            let w = self.by_tier.entry(t.clone()).or_insert(window);
            *w = (*w).min(window);
        }
    }
}

/// The configuration shared by every [`Reset`] service a layer builds.
#[derive(Clone)]
pub(crate) struct Config<St> {
    pub(crate) store: St,
    pub(crate) policy: BrittlenessPolicy,
    pub(crate) estimator: Arc<dyn TokenEstimator>,
    pub(crate) windows: Windows,
    pub(crate) sinks: Vec<Arc<dyn EventSink>>,
    pub(crate) note: Arc<dyn WarningNote>,
    pub(crate) clearer: Arc<dyn ToolResultClearer>,
    pub(crate) summarizer: Option<Summarizer>,
    pub(crate) summary: SummaryConfig,
    pub(crate) respawner: Arc<dyn Respawner>,
    pub(crate) fail_over_budget: bool,
    pub(crate) labels: BoundedLabels,
    /// The tier ladder, lowest first (what stickiness compares by).
    pub(crate) ladder: Vec<Tier>,
    /// Stickiness's idle TTL; `None` is off.
    pub(crate) sticky: Option<Duration>,
}

impl<St> Config<St> {
    /// A tier's rank in the ladder.
    pub(crate) fn rank(&self, tier: &Tier) -> Option<usize> {
        self.ladder.iter().position(|t| t == tier)
    }

    /// The window of the tier at `rank` (the smallest of its models).
    pub(crate) fn window_of_rank(&self, rank: usize) -> Option<u32> {
        self.ladder.get(rank).and_then(|t| self.windows.resolve_tier(t))
    }
}
