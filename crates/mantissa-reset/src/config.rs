//! The configuration a [`ResetLayer`](crate::ResetLayer) shares with every
//! [`Reset`](crate::Reset) service it builds: context windows by model and
//! tier, the policy, the stages' hooks. Depends on nothing else of the layer
//! or the service, so neither depends on the other through it.

use std::collections::HashMap;
use std::sync::Arc;

use mantissa_core::{
    BoundedLabels, BoxError, EventSink, LlmRequest, LlmResponse, ModelId, Tier, TokenEstimator,
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
}

/// The window used when nothing is configured.
pub const FALLBACK_WINDOW: u32 = 128_000;

impl Windows {
    pub(crate) fn resolve(&self, req: &LlmRequest) -> u32 {
        if let Some(w) = req.model.as_ref().and_then(|m| self.by_model.get(m.as_str())) {
            return *w;
        }
        if let Some(w) = req.tier.as_ref().and_then(|t| self.by_tier.get(t.as_str())) {
            return *w;
        }
        self.default_window()
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
}
