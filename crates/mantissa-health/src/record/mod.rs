//! The per-call bookkeeping: label folding, the cache of metric handles and
//! registry subjects, and [`Call`], the drop guard that records each call
//! exactly once.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mantissa_core::catalog::{self, labels};
use mantissa_core::{
    AgentName, BoundedLabels, Catalog, EventKind, EventSink, ModelCatalog, ModelId, OTHER_LABEL, Pricing,
    Tier,
};
use metrics::Histogram;
use tokio::time::Instant;

use crate::MetricsMode;
use crate::cache::{CowMap, LabelMap};
use crate::registry::HealthRegistry;
use crate::request::ObservedRequest;
use crate::trace::{self, TraceSettings};

mod call;
mod dense;
mod key;
mod recent;
mod series;

pub(crate) use call::Call;
use call::{Target, sample_overhead};
use key::{AsKeyRef, KeyRef, SeriesKey};
pub(crate) use series::{AgentSeries, Series};

/// The label value of `layer` on the overhead histogram.
pub(crate) const LAYER_NAME: &str = "health";
/// The tier label of calls without a tier.
pub(crate) const NO_TIER: &str = "none";

/// What a [`HealthLayer`](crate::HealthLayer) records of each call it sees.
///
/// A layer over one client sees each call once, so it records everything
/// ([`Scope::Call`], the default). Under a router, one call of an agent may
/// be several upstream attempts: the per-model layers record the attempts
/// ([`Scope::Attempt`]: model and tool windows, every metric, events) and a
/// layer above the router records what the agent experienced
/// ([`Scope::Outcome`]: the agent's window only — the final outcome of each
/// call, its whole latency against the agent's baseline at the serving tier,
/// its tokens and cost). `AgentStack` composes it that way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// Each call is one call of the agent and one upstream call: the agent's
    /// and the model's (or tool's) windows, metrics, events, spans.
    #[default]
    Call,
    /// Each call is one upstream attempt: the model's (or tool's) window,
    /// metrics, events and spans; not the agent's window.
    Attempt,
    /// Each call is a whole call of the agent: only the agent's window; no
    /// metrics, events or spans (the attempts below record those).
    Outcome,
}

/// What the catalog says about one model label.
#[derive(Debug, Clone)]
pub(crate) struct ModelInfo {
    pub(crate) label: Arc<str>,
    pub(crate) provider: Arc<str>,
    pub(crate) tier: Option<Tier>,
    pub(crate) pricing: Pricing,
    /// Whether the model has a configured or catalogued price.
    pub(crate) priced: bool,
}

/// The layer's configuration, frozen, plus its caches.
pub(crate) struct Shared {
    pub(crate) registry: HealthRegistry,
    models: LabelMap<ModelId, ModelInfo>,
    other_model: ModelInfo,
    fixed_model: Option<ModelId>,
    tiers: BoundedLabels,
    top_pricing: Option<Pricing>,
    agents: BoundedLabels,
    tools: BoundedLabels,
    sinks: Box<[Arc<dyn EventSink>]>,
    journal: bool,
    pub(crate) trace: TraceSettings,
    pub(crate) scope: Scope,
    mode: MetricsMode,
    other_agent: AgentName,
    series: CowMap<SeriesKey, Arc<Series>>,
    agent_series: CowMap<AgentName, Arc<AgentSeries>>,
    overhead: OnceLock<Histogram>,
    /// Series by call-context indices, when the layer has the stack's catalog.
    dense: Option<dense::Dense>,
    /// The catalog index of the layer's own model.
    fixed_model_idx: Option<usize>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("models", &self.models.len())
            .field("fixed_model", &self.fixed_model)
            .field("agents", &self.agents)
            .field("tools", &self.tools)
            .field("sinks", &self.sinks.len())
            .field("journal", &self.journal)
            .field("series", &self.series.len())
            .finish_non_exhaustive()
    }
}

/// Inputs to [`Shared::new`].
pub(crate) struct Settings {
    pub(crate) registry: HealthRegistry,
    pub(crate) catalog: ModelCatalog,
    pub(crate) fixed_model: Option<ModelId>,
    pub(crate) tiers: BoundedLabels,
    pub(crate) top_pricing: Option<Pricing>,
    pub(crate) agents: BoundedLabels,
    pub(crate) tools: BoundedLabels,
    pub(crate) sinks: Vec<Arc<dyn EventSink>>,
    pub(crate) journal: bool,
    pub(crate) trace: TraceSettings,
    pub(crate) scope: Scope,
    pub(crate) mode: MetricsMode,
    pub(crate) call_catalog: Option<Catalog>,
}

impl Shared {
    pub(crate) fn new(s: Settings) -> Self {
        let fixed_model_idx = match (&s.call_catalog, &s.fixed_model) {
            (Some(c), Some(m)) => c.model_index(m.as_str()).map(|i| i.index()),
            _ => None,
        };
        let models = s
            .catalog
            .iter()
            .map(|spec| {
                let info = ModelInfo {
                    label: Arc::from(spec.id.as_str()),
                    provider: Arc::from(spec.provider.as_str()),
                    tier: s.catalog.tier_of(spec.id.as_str()).cloned(),
                    pricing: spec.pricing,
                    priced: spec.is_priced(),
                };
                (spec.id.clone(), info)
            })
            .collect();
        Self {
            registry: s.registry,
            models,
            other_model: ModelInfo {
                label: Arc::from(OTHER_LABEL),
                provider: Arc::from(OTHER_LABEL),
                tier: None,
                pricing: Pricing::default(),
                priced: false,
            },
            fixed_model: s.fixed_model,
            tiers: s.tiers,
            top_pricing: s.top_pricing,
            agents: s.agents,
            tools: s.tools,
            sinks: s.sinks.into_boxed_slice(),
            journal: s.journal,
            trace: s.trace,
            scope: s.scope,
            mode: s.mode,
            other_agent: AgentName::new(OTHER_LABEL),
            series: CowMap::new(),
            agent_series: CowMap::new(),
            overhead: OnceLock::new(),
            fixed_model_idx,
            dense: s
                .call_catalog
                .map(|c| dense::Dense::new(c, s.scope == Scope::Outcome)),
        }
    }

    /// Where the metrics go.
    pub(crate) fn mode(&self) -> MetricsMode {
        self.mode
    }

    #[inline]
    fn agent_label<'a>(&'a self, agent: &'a AgentName) -> &'a AgentName {
        if self.agents.admits(agent.as_str()) {
            agent
        } else {
            &self.other_agent
        }
    }

    #[inline]
    fn model_info(&self, model: &str) -> &ModelInfo {
        self.models.get(model).unwrap_or(&self.other_model)
    }

    #[inline]
    fn tier_label<'a>(&'a self, requested: Option<&'a Tier>, info: &'a ModelInfo) -> &'a str {
        match requested {
            Some(t) => self.tiers.fold_str(t.as_str()),
            None => info.tier.as_ref().map_or(NO_TIER, Tier::as_str),
        }
    }

    fn agent_series(&self, agent: &AgentName) -> Arc<AgentSeries> {
        self.agent_series.get_or_insert_with(agent.as_str(), || {
            (agent.clone(), Arc::new(AgentSeries::new(self, agent)))
        })
    }

    /// Starts observing a call.
    pub(crate) fn begin<R: ObservedRequest>(self: &Arc<Self>, req: &R, start: Instant) -> Call {
        let target = match self.dense_slot(req) {
            Some(slot) => match slot.get() {
                Some(series) => Target::Bound(series.clone()),
                None => {
                    let target = self.target(req);
                    if let (Target::Bound(series), true) = (&target, self.agrees(req)) {
                        let _ = slot.set(series.clone());
                    }
                    target
                }
            },
            // An LLM call without a model (the layer's own or the request's)
            // is bound when its response names one: nothing to remember.
            None if R::KIND == EventKind::Llm && req.subject().is_none() && self.fixed_model.is_none() => {
                self.unbound(req)
            }
            None => match recent::get(self, req) {
                Some(series) => Target::Bound(series),
                None => {
                    let target = self.target(req);
                    if let Target::Bound(series) = &target {
                        recent::put(self, req, series);
                    }
                    target
                }
            },
        };
        let (span, sampled) = if self.scope == Scope::Outcome {
            (tracing::Span::none(), false)
        } else {
            let agent = target.agent();
            match self.mode {
                MetricsMode::Cells => agent.cells.start(R::KIND),
                MetricsMode::Recorder => agent.in_flight(R::KIND).increment(1.0),
            }
            (self.open_span(req, &target), sample_overhead())
        };
        let pre_overhead = if sampled { start.elapsed() } else { Duration::ZERO };
        // Where an unbound outcome finds its series by index (see `Call::bind_model`).
        let agent_idx = match (&target, &self.dense, req.context()) {
            (Target::Unbound { .. }, Some(d), Some(ctx)) if d.catalog.owns(ctx) => Some(ctx.agent),
            _ => None,
        };
        Call {
            shared: self.clone(),
            target,
            agent_idx,
            kind: R::KIND,
            // The session id is kept only for the events that carry it.
            session: (self.scope != Scope::Outcome && (self.journal || !self.sinks.is_empty()))
                .then(|| req.session().clone()),
            start,
            sampled,
            pre_overhead,
            done: false,
            span,
        }
    }

    /// The target of an LLM call without a model yet (bound when its
    /// response names one): its agent series, by the context's agent index
    /// when the layer's catalog resolved it (a slot filled through the name
    /// path, from a request whose agent name agrees with its context).
    fn unbound<R: ObservedRequest>(&self, req: &R) -> Target {
        let slot = match (&self.dense, req.context()) {
            (Some(d), Some(ctx)) => d.agent_slot(ctx),
            _ => None,
        };
        let agent = match slot.map(|s| (s, s.get())) {
            Some((_, Some(agent))) => agent.clone(),
            Some((slot, None)) => {
                let agent = self.agent_series(self.agent_label(req.agent()));
                if self.agent_agrees(req) {
                    let _ = slot.set(agent.clone());
                }
                agent
            }
            None => self.agent_series(self.agent_label(req.agent())),
        };
        Target::Unbound {
            agent,
            tier: req.tier().cloned(),
        }
    }

    /// Whether the request's agent name is its context's agent.
    fn agent_agrees<R: ObservedRequest>(&self, req: &R) -> bool {
        match (&self.dense, req.context()) {
            (Some(dense), Some(ctx)) => dense.catalog.agent_index(req.agent().as_str()) == ctx.agent,
            _ => false,
        }
    }

    /// The dense slot of a request the layer's catalog resolved.
    #[inline]
    fn dense_slot<R: ObservedRequest>(&self, req: &R) -> Option<&OnceLock<Arc<Series>>> {
        self.dense.as_ref()?.slot(req.context()?, self.fixed_model_idx)
    }

    /// Whether the request's names say what its context says (a slot is
    /// filled only from such a request, so it holds the names' series).
    fn agrees<R: ObservedRequest>(&self, req: &R) -> bool {
        let (Some(dense), Some(ctx)) = (&self.dense, req.context()) else {
            return false;
        };
        let c = &dense.catalog;
        let model = req.subject().or(self.fixed_model.as_ref().map(ModelId::as_str));
        c.agent_index(req.agent().as_str()) == ctx.agent
            && model.and_then(|m| c.model_index(m)).map(|m| m.index())
                == ctx.model.map(|m| m.index()).or(self.fixed_model_idx)
            && req.tier().map(|t| c.tier_index(t.as_str())) == ctx.tier.map(Some)
    }

    /// Opens the call's span (a no-op span when no subscriber wants it).
    #[inline]
    fn open_span<R: ObservedRequest>(&self, req: &R, target: &Target) -> tracing::Span {
        let model = match R::KIND {
            EventKind::Tool => None,
            _ => req.subject().or(self.fixed_model.as_ref().map(ModelId::as_str)),
        };
        let provider = match target {
            Target::Bound(s) => &*s.provider,
            Target::Unbound { .. } => OTHER_LABEL,
        };
        trace::open(req, model, provider, self.trace)
    }

    /// Folds the request's labels and finds (or creates) their series.
    fn target<R: ObservedRequest>(&self, req: &R) -> Target {
        let agent = self.agent_label(req.agent());
        match R::KIND {
            EventKind::Tool => {
                let name = req.subject().unwrap_or(OTHER_LABEL);
                let name = self.tools.fold_str(name);
                Target::Bound(self.series(EventKind::Tool, agent, name, "", None))
            }
            _ => match req.subject().or(self.fixed_model.as_ref().map(ModelId::as_str)) {
                Some(model) => {
                    let info = self.model_info(model);
                    let tier = self.tier_label(req.tier(), info);
                    Target::Bound(self.series(EventKind::Llm, agent, &info.label, tier, Some(info)))
                }
                // The model is only known from the response.
                None => Target::Unbound {
                    agent: self.agent_series(agent),
                    tier: req.tier().cloned(),
                },
            },
        }
    }

    fn series(
        &self,
        kind: EventKind,
        agent: &AgentName,
        subject: &str,
        tier: &str,
        info: Option<&ModelInfo>,
    ) -> Arc<Series> {
        let key = KeyRef {
            kind,
            agent: agent.as_str(),
            subject,
            tier,
        };
        self.series.get_or_insert_with(&key as &dyn AsKeyRef, || {
            let agent_series = self.agent_series(agent);
            let series = Series::new(self, agent_series, kind, subject, tier, info);
            let key = SeriesKey {
                kind,
                agent: agent.clone(),
                subject: Arc::from(subject),
                tier: Arc::from(tier),
            };
            (key, Arc::new(series))
        })
    }

    fn overhead(&self) -> &Histogram {
        self.overhead
            .get_or_init(|| metrics::histogram!(catalog::MIDDLEWARE_OVERHEAD, labels::LAYER => LAYER_NAME))
    }
}
