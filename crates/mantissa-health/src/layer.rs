use std::fmt;
use std::sync::{Arc, OnceLock};

use mantissa_core::{
    AgentName, BoundedLabels, Catalog, EventSink, ModelCatalog, ModelSpec, Pricing, TierSet,
};
use tower_layer::Layer;

use crate::MetricsMode;
use crate::record::{Scope, Settings, Shared};
use crate::registry::HealthRegistry;
use crate::service::Health;
use crate::trace::TraceSettings;

/// Applies [`Health`] to LLM and tool services. See the [crate docs](crate).
///
/// Every service built by one layer (and its clones) shares one cache of
/// series (cells, and in [`MetricsMode::Recorder`] metric handles) and one
/// [`HealthRegistry`]. Setters apply to the services built after them;
/// services and handles taken before keep working with the settings they
/// were built with (a second series for the same labels is summed with the
/// first, by the registry and by the exporter). Handles are registered with
/// the recorder that is current at the first call of each label tuple, so
/// install the recorder before the first call.
#[derive(Clone)]
pub struct HealthLayer {
    registry: HealthRegistry,
    catalog: ModelCatalog,
    model: Option<ModelSpec>,
    tiers: Option<TierSet>,
    agents: BoundedLabels,
    tools: BoundedLabels,
    sinks: Vec<Arc<dyn EventSink>>,
    journal: bool,
    trace: TraceSettings,
    scope: Scope,
    mode: Option<MetricsMode>,
    call_catalog: Option<Catalog>,
    shared: OnceLock<Arc<Shared>>,
}

impl fmt::Debug for HealthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthLayer")
            .field("registry", &self.registry)
            .field("catalog", &self.catalog)
            .field("model", &self.model)
            .field("tiers", &self.tiers)
            .field("agents", &self.agents)
            .field("tools", &self.tools)
            .field("sinks", &self.sinks.len())
            .field("journal", &self.journal)
            .field("record_content", &self.trace.content)
            .field("scope", &self.scope)
            .field("metrics_mode", &self.mode())
            .finish()
    }
}

impl Default for HealthLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthLayer {
    /// A layer with its own registry, no catalog (every model label is
    /// `other` and costs nothing), no allow-lists, no sinks, and the journal on.
    pub fn new() -> Self {
        Self {
            registry: HealthRegistry::new(),
            catalog: ModelCatalog::new(),
            model: None,
            tiers: None,
            agents: BoundedLabels::default(),
            tools: BoundedLabels::default(),
            sinks: Vec::new(),
            journal: true,
            trace: TraceSettings::default(),
            scope: Scope::Call,
            mode: None,
            call_catalog: None,
            shared: OnceLock::new(),
        }
    }

    /// A layer that feeds `registry` (share one registry between the LLM and
    /// tool layers and with the monitor), otherwise as [`new`](Self::new).
    pub fn with_registry(registry: HealthRegistry) -> Self {
        let mut layer = Self::new();
        layer.registry = registry;
        layer
    }

    /// A layer configured from a tier ladder: models, prices and tiers from
    /// `tiers`, counterfactual cost against its top tier.
    pub fn with_tiers(tiers: TierSet) -> Self {
        Self::new().tiers(tiers)
    }

    fn changed(mut self) -> Self {
        self.shared = OnceLock::new();
        self
    }

    /// Adds the models of `catalog`: they become `model` label values (others
    /// fold into `other`) and price calls. Defaults to no models.
    pub fn catalog(mut self, catalog: ModelCatalog) -> Self {
        for spec in catalog.iter() {
            let tier = catalog.tier_of(spec.id.as_str()).cloned();
            self.catalog.insert_with_tier(spec.clone(), tier);
        }
        self.changed()
    }

    /// Adds the models of `tiers` (with their tiers), bounds the `tier` label
    /// to its tier names (others fold into `other`), and records the
    /// counterfactual cost of every call on the first model of the top tier.
    /// Defaults to none: no counterfactual cost.
    pub fn tiers(mut self, tiers: TierSet) -> Self {
        let catalog = tiers.catalog();
        for spec in catalog.iter() {
            let tier = catalog.tier_of(spec.id.as_str()).cloned();
            self.catalog.insert_with_tier(spec.clone(), tier);
        }
        self.tiers = Some(tiers);
        self.changed()
    }

    /// The model this layer's service calls, for per-model instances under a
    /// router: used when the request names no model (a request's own `model`
    /// wins). The model is added to the catalog unless already there.
    /// Defaults to none: the model comes from the request or else the response.
    pub fn model(mut self, spec: ModelSpec) -> Self {
        if self.catalog.get(spec.id.as_str()).is_none() {
            self.catalog.insert(spec.clone());
        }
        self.model = Some(spec);
        self.changed()
    }

    /// Bounds the agent label: agents not in `agents` are recorded as
    /// `other` (shorthand for [`agent_labels`](Self::agent_labels) with
    /// [`BoundedLabels::new`]).
    pub fn agents<I, A>(self, agents: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<AgentName>,
    {
        let names: Vec<AgentName> = agents.into_iter().map(Into::into).collect();
        self.agent_labels(BoundedLabels::new(names.iter().map(AgentName::as_str)))
    }

    /// The rule that bounds the agent label, shared with the other layers of
    /// a stack so an agent is labelled the same way in every metric family.
    /// Defaults to [`BoundedLabels::default`]: the first 64 distinct agent
    /// names are their own label, later ones are `other`.
    pub fn agent_labels(mut self, labels: BoundedLabels) -> Self {
        self.agents = labels;
        self.changed()
    }

    /// Bounds the tool label: tools not in `tools` are recorded as `other`.
    /// Defaults to [`BoundedLabels::default`]: the first 64 distinct tool
    /// names are their own label, later ones are `other`.
    pub fn tools<I, T>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let names: Vec<String> = tools.into_iter().map(Into::into).collect();
        self.tools = BoundedLabels::new(names);
        self.changed()
    }

    /// Adds a sink that receives a [`HealthEvent`](mantissa_core::HealthEvent)
    /// per call, on the calling task: it must be cheap and never block (see
    /// [`JsonLinesSink`](crate::JsonLinesSink)). Defaults to no sinks.
    pub fn sink(mut self, sink: impl EventSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self.changed()
    }

    /// Whether every call's event goes to the registry's journal
    /// ([`HealthRegistry::recent`]). Defaults to `true`.
    pub fn journal(mut self, on: bool) -> Self {
        self.journal = on;
        self.changed()
    }

    /// Records message content on the call spans (see the [crate docs](crate),
    /// "Traces"): the latest user message as `gen_ai.prompt` and the
    /// completion as `gen_ai.completion`, each truncated to `max_bytes` (on a
    /// char boundary). Content is personal data: opt in only where traces
    /// may hold it. Tool arguments and results are never recorded.
    /// Defaults to off: no message content in any span.
    pub fn record_content(mut self, max_bytes: usize) -> Self {
        self.trace.content = Some(max_bytes);
        self.changed()
    }

    /// What the layer records of each call: [`Scope::Attempt`] for the
    /// per-model layers under a router, [`Scope::Outcome`] for the layer above
    /// it that keeps the agents' windows. Defaults to [`Scope::Call`]: the
    /// layer sees each call once and records everything.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self.changed()
    }

    /// Where the layer's metrics go: through the `metrics` recorder, or
    /// into cells an exporter renders at scrape time (see [`MetricsMode`]).
    /// Decided when the layer builds its first service, never per call.
    /// Defaults to [`MetricsMode::Cells`] if a
    /// [`collector`](HealthRegistry::collector) was taken from the layer's
    /// registry before that, else [`MetricsMode::Recorder`] (so an
    /// application's own recorder gets every health metric).
    pub fn metrics_mode(mut self, mode: MetricsMode) -> Self {
        self.mode = Some(mode);
        self.changed()
    }

    /// The stack's catalog: a request it resolved finds its series by its
    /// [`CallContext`](mantissa_core::CallContext) indices (agent × model ×
    /// tier, a dense table) instead of by name, and the agent label is
    /// bounded by the catalog's rule ([`Catalog::agent_labels`], replacing
    /// [`agent_labels`](Self::agent_labels)). Give the layer the same tiers
    /// ([`tiers`](Self::tiers)). Where a request's context and names
    /// disagree, the context decides which series it counts in. Defaults to
    /// none: every request is resolved by its names (the layer works on its
    /// own).
    pub fn call_context(mut self, catalog: Catalog) -> Self {
        self.agents = catalog.agent_labels().clone();
        self.call_catalog = Some(catalog);
        self.changed()
    }

    /// The mode the layer's services use (set with
    /// [`metrics_mode`](Self::metrics_mode)).
    pub fn mode(&self) -> MetricsMode {
        match (self.shared.get(), self.mode) {
            (Some(shared), _) => shared.mode(),
            (None, Some(mode)) => mode,
            (None, None) if self.registry.rendered_by_exporter() => MetricsMode::Cells,
            (None, None) => MetricsMode::Recorder,
        }
    }

    /// The registry this layer feeds (shared: the layer is built on it with
    /// [`with_registry`](Self::with_registry), or made its own).
    pub fn registry(&self) -> &HealthRegistry {
        &self.registry
    }

    fn shared(&self) -> Arc<Shared> {
        self.shared
            .get_or_init(|| {
                let tiers = self.tiers.as_ref();
                let top_pricing: Option<Pricing> = tiers
                    .and_then(TierSet::top)
                    .and_then(|t| t.models.first())
                    .map(|m| m.pricing);
                // Tier names come from the ladder; without one, from code
                // (bounded like any such label).
                let tier_names = match tiers {
                    Some(t) => BoundedLabels::new(t.iter().map(|c| c.name.as_str())),
                    None => BoundedLabels::default(),
                };
                Arc::new(Shared::new(Settings {
                    registry: self.registry.clone(),
                    catalog: self.catalog.clone(),
                    fixed_model: self.model.as_ref().map(|m| m.id.clone()),
                    tiers: tier_names,
                    top_pricing,
                    agents: self.agents.clone(),
                    tools: self.tools.clone(),
                    sinks: self.sinks.clone(),
                    journal: self.journal,
                    trace: self.trace,
                    scope: self.scope,
                    mode: self.mode(),
                    call_catalog: self.call_catalog.clone(),
                }))
            })
            .clone()
    }
}

impl<S> Health<S> {
    /// Wraps `inner` with a default [`HealthLayer`] (its own registry, no catalog).
    pub fn new(inner: S) -> Self {
        HealthLayer::new().layer(inner)
    }
}

impl<S> Layer<S> for HealthLayer {
    type Service = Health<S>;

    fn layer(&self, inner: S) -> Health<S> {
        Health::from_shared(inner, self.shared())
    }
}
