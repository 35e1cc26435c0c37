//! [`ResetLayer`] and its configuration.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mantissa_core::{
    BoundedLabels, BoxError, Catalog, CharEstimator, EventSink, LlmRequest, LlmResponse, ModelCatalog,
    TierSet, TokenEstimator,
};
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{Config, DEFAULT_STICKY_IDLE, Windows};
use crate::policy::BrittlenessPolicy;
use crate::service::{Reset, Shared};
use crate::stage::{
    NoNote, PlaceholderClearer, Respawner, SuffixRespawner, SummaryConfig, ToolResultClearer, WarningNote,
};
use crate::store::{MemorySessionStore, SessionStore};

/// Applies [`Reset`] to a service: brittleness detection and context reset.
/// The outermost layer of an LLM stack. See the [crate docs](crate) for an
/// example and the defaults.
pub struct ResetLayer<St = MemorySessionStore> {
    config: Config<St>,
}

impl<St: fmt::Debug> fmt::Debug for ResetLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResetLayer")
            .field("store", &self.config.store)
            .field("policy", &self.config.policy)
            .field("windows", &self.config.windows)
            .field("sinks", &self.config.sinks.len())
            .field("summarizer", &self.config.summarizer.is_some())
            .field("summary", &self.config.summary)
            .field("fail_over_budget", &self.config.fail_over_budget)
            .finish_non_exhaustive()
    }
}

impl<St: Clone> Clone for ResetLayer<St> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
        }
    }
}

impl Default for ResetLayer<MemorySessionStore> {
    fn default() -> Self {
        Self::new()
    }
}

impl ResetLayer<MemorySessionStore> {
    /// A layer with an in-memory session store and every default: the
    /// [`BrittlenessPolicy`] defaults, [`CharEstimator`], a 128k window, no
    /// event sinks, no warning note, [`PlaceholderClearer`], no summarizer
    /// (summarize falls back to trimming), [`SuffixRespawner`].
    pub fn new() -> Self {
        Self::with_store(MemorySessionStore::new())
    }
}

impl<St: SessionStore + Clone> ResetLayer<St> {
    /// A layer over the given session store (share it with the tool stack's
    /// event sinks and the monitor's `SessionControl`).
    pub fn with_store(store: St) -> Self {
        Self {
            config: Config {
                store,
                policy: BrittlenessPolicy::default(),
                estimator: Arc::new(CharEstimator),
                windows: Windows {
                    by_model: HashMap::new(),
                    by_tier: HashMap::new(),
                    default: None,
                    catalog: None,
                },
                ladder: Vec::new(),
                sticky: Some(DEFAULT_STICKY_IDLE),
                sinks: Vec::new(),
                note: Arc::new(NoNote),
                clearer: Arc::new(PlaceholderClearer::default()),
                summarizer: None,
                summary: SummaryConfig::default(),
                respawner: Arc::new(SuffixRespawner),
                fail_over_budget: false,
                labels: BoundedLabels::default(),
            },
        }
    }

    /// The rule that bounds the `agent` label of the reset metrics and
    /// events, shared with the other layers of a stack. Defaults to
    /// [`BoundedLabels::default`].
    pub fn agent_labels(mut self, labels: BoundedLabels) -> Self {
        self.config.labels = labels;
        self
    }

    /// The session store.
    pub fn store(&self) -> &St {
        &self.config.store
    }

    /// The brittleness policy. Defaults to [`BrittlenessPolicy::default`].
    pub fn policy(mut self, policy: BrittlenessPolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// The token estimator for messages not yet counted by the provider.
    /// Defaults to [`CharEstimator`].
    pub fn estimator(mut self, estimator: impl TokenEstimator + 'static) -> Self {
        self.config.estimator = Arc::new(estimator);
        self
    }

    /// Context windows from a model catalog: a request's `model` if set,
    /// else the smallest window among its `tier`'s models (for models the
    /// catalog tags with a tier). Defaults to none (every call uses the
    /// default window).
    pub fn models(mut self, catalog: &ModelCatalog) -> Self {
        for m in catalog.iter() {
            let tier = catalog.tier_of(m.id.as_str()).cloned();
            self.config.windows.add(&m.id, tier.as_ref(), m.context_window);
        }
        self
    }

    /// Context windows from a tier ladder (models and tiers), and the tier
    /// order session stickiness compares by. Defaults to none.
    pub fn tiers(mut self, tiers: &TierSet) -> Self {
        for t in tiers.iter() {
            for m in &t.models {
                self.config.windows.add(&m.id, Some(&t.name), m.context_window);
            }
        }
        self.config.ladder = tiers.iter().map(|t| t.name.clone()).collect();
        self
    }

    /// The stack's [`Catalog`]: windows, prices and the tier order come from
    /// it ([`tiers`](Self::tiers) of its ladder), and a request whose
    /// [`CallContext`](mantissa_core::CallContext) it resolved is read by
    /// index (the serving tier's window, no name lookups). Defaults to none.
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        for t in catalog.tiers() {
            for &m in t.models.iter() {
                let spec = &catalog.model(m).spec;
                self.config
                    .windows
                    .add(&spec.id, Some(&t.name), spec.context_window);
            }
        }
        self.config.ladder = catalog.tiers().iter().map(|t| t.name.clone()).collect();
        self.config.windows.catalog = Some(catalog);
        self
    }

    /// Session stickiness: within a session the tier triage chose may rise
    /// but not fall — a triaged call below the session's earlier tier is
    /// raised to it (the response says so with a
    /// [`TierRaised`](mantissa_core::TierRaised)), until the session has been
    /// idle at that tier for `idle_ttl`. Only tiers chosen by triage
    /// ([`TierSource::Triage`](mantissa_core::TierSource)) are raised; the
    /// state lives with the session (so a shared store shares it), and it
    /// needs the tier order ([`tiers`](Self::tiers) or
    /// [`catalog`](Self::catalog)). Defaults to on, 30 minutes.
    pub fn stickiness(mut self, idle_ttl: Duration) -> Self {
        self.config.sticky = Some(idle_ttl);
        self
    }

    /// Turns session stickiness off. Defaults to on.
    pub fn without_stickiness(mut self) -> Self {
        self.config.sticky = None;
        self
    }

    /// The window used when the request names no known model or tier.
    /// Defaults to the smallest window configured, or 128k with none.
    pub fn default_window(mut self, tokens: u32) -> Self {
        self.config.windows.default = Some(tokens.max(1));
        self
    }

    /// Adds a sink for `context_warning` and `context_reset` health events.
    /// Defaults to none.
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.config.sinks.push(Arc::new(sink));
        self
    }

    /// The warn stage's note for the agent. Defaults to [`NoNote`].
    pub fn warning_note(mut self, note: impl WarningNote) -> Self {
        self.config.note = Arc::new(note);
        self
    }

    /// The clear stage. Defaults to [`PlaceholderClearer::default`].
    pub fn tool_result_clearer(mut self, clearer: impl ToolResultClearer) -> Self {
        self.config.clearer = Arc::new(clearer);
        self
    }

    /// The summarizer (typically the low tier of the stack, below this
    /// layer). Defaults to none: the summarize stage trims instead.
    pub fn summarizer<S>(mut self, summarizer: S) -> Self
    where
        S: Service<LlmRequest, Response = LlmResponse> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        use tower::ServiceExt;
        self.config.summarizer = Some(BoxCloneSyncService::new(summarizer.map_err(Into::into)));
        self
    }

    /// Summarize-stage settings. Defaults to [`SummaryConfig::default`].
    pub fn summary(mut self, summary: SummaryConfig) -> Self {
        self.config.summary = summary;
        self
    }

    /// The respawn stage's new session ids. Defaults to [`SuffixRespawner`].
    pub fn respawner(mut self, respawner: impl Respawner) -> Self {
        self.config.respawner = Arc::new(respawner);
        self
    }

    /// Fail the call with [`ContextBudgetExceeded`](crate::ContextBudgetExceeded)
    /// when a compaction cannot reach the target budget, instead of sending it
    /// anyway with a note. Defaults to `false`.
    pub fn fail_when_over_budget(mut self, fail: bool) -> Self {
        self.config.fail_over_budget = fail;
        self
    }
}

impl<S, St: SessionStore + Clone> Layer<S> for ResetLayer<St> {
    type Service = Reset<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Reset::from_shared(inner, Arc::new(Shared::new(self.config.clone())))
    }
}

#[cfg(test)]
mod tests {
    use mantissa_core::{Message, ModelSpec, Tier};

    use crate::config::FALLBACK_WINDOW;

    use super::*;

    fn req() -> LlmRequest {
        LlmRequest::new("s", "a", vec![Message::user("hi")])
    }

    #[test]
    fn window_comes_from_model_then_tier_then_default() {
        // TierSet::default(): low 16,384 / medium 65,536 / high 200,000.
        let layer = ResetLayer::new().tiers(&TierSet::default());
        let w = &layer.config.windows;
        assert_eq!(w.resolve(&req().with_model("mock-large")), 200_000);
        assert_eq!(
            w.resolve(&req().with_model("unknown").with_tier("medium")),
            65_536
        );
        assert_eq!(w.resolve(&req()), 16_384, "smallest configured");
        let layer = layer.default_window(50_000);
        assert_eq!(layer.config.windows.resolve(&req()), 50_000);
        assert_eq!(ResetLayer::new().config.windows.resolve(&req()), FALLBACK_WINDOW);
    }

    #[test]
    fn catalog_tiers_take_their_smallest_model() {
        let mut catalog = ModelCatalog::new();
        catalog.insert_with_tier(ModelSpec::new("a").context_window(8_000), Some(Tier::low()));
        catalog.insert_with_tier(ModelSpec::new("b").context_window(32_000), Some(Tier::low()));
        catalog.insert(ModelSpec::new("c").context_window(4_000));
        let layer = ResetLayer::new().models(&catalog);
        let w = &layer.config.windows;
        assert_eq!(w.resolve(&req().with_tier("low")), 8_000);
        assert_eq!(w.resolve(&req().with_model("b")), 32_000);
        assert_eq!(w.resolve(&req()), 4_000);
    }
}
